"""`fq generate`: the real-int4 model of a checkpoint continues a prompt; bad input is one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fq_core.cli import main
from fq_core.flat import FlatConfig, load_quantized, quantize_, save_quantized
from fq_core.models import load_model, load_tokenizer
from fq_core.models.testing import save_tiny_model_dir
from fq_core.quant import QuantSpec

KV4 = QuantSpec(4, False, "group", 12)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def checkpoint(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hadamard W4A4KV4 checkpoint (fixed transforms: frozen at once) recording its source model."""
    model, _ = load_model(tiny_dir)
    path = tmp_path_factory.mktemp("ckpt") / "hadamard-w4a4kv4"
    save_quantized(
        quantize_(model, FlatConfig(method="hadamard", key=KV4, value=KV4)), path, {"source": str(tiny_dir)}
    )
    return path


def fq(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("engine", ["static", "transformers"])
def test_generate_streams_the_fake_quant_models_greedy_continuation(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, tiny_dir: Path, engine: str
) -> None:
    prompt = "the value of the"
    code, out, err = fq(
        capsys,
        "generate",
        prompt,
        "--checkpoint",
        str(checkpoint),
        "--max-new-tokens",
        "6",
        "--engine",
        engine,
    )
    assert code == 0, err
    tokenizer = load_tokenizer(tiny_dir)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = load_quantized(checkpoint).generate(ids, max_new_tokens=6, do_sample=False)
    assert out.strip() == tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert out.strip(), "nothing was generated"


def test_load_tokenizer_is_load_models_tokenizer(tiny_dir: Path) -> None:
    text = "the value of a list is an object"
    assert load_tokenizer(tiny_dir)(text).input_ids == load_model(tiny_dir)[1](text).input_ids


def test_bad_input_is_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "not-a-checkpoint").mkdir()
    no_source = tmp_path / "no-source"
    rtn = quantize_(load_model(save_tiny_model_dir(tmp_path / "m"))[0], FlatConfig("rtn"))
    save_quantized(rtn, no_source)  # no options: the source model is not recorded
    cases = [
        (["the", "--checkpoint", str(tmp_path / "missing")], "missing"),
        (["the", "--checkpoint", str(tmp_path / "not-a-checkpoint")], "fq_config.json"),
        (["  ", "--checkpoint", str(checkpoint)], "prompt is empty"),
        (["the", "--checkpoint", str(no_source)], "--tokenizer"),
        (["the", "--checkpoint", str(checkpoint), "--device", "nonsense"], "--device"),
        (["the", "--checkpoint", str(checkpoint), "--engine", "vllm"], "--engine"),
    ]
    for args, words in cases:
        code, out, err = fq(capsys, "generate", *args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
        assert out == ""


def test_docs_cover_generate_and_export() -> None:
    """docs/cli.md has a section for `fq generate` and `fq export`, naming each of their options."""
    import typer

    from fq_kernels.cli import register

    docs = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text(encoding="utf-8")
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    commands = typer.main.get_command(app).commands
    for name in ("generate", "export"):
        heading = f"### `fq {name}`"
        assert heading in docs, f"docs/cli.md has no {heading!r} section"
        section = docs.split(heading, 1)[1].split("\n#", 1)[0]
        for param in commands[name].params:
            for opt in param.opts:
                if param.param_type_name == "option" and opt.startswith("--"):
                    assert f"`{opt}`" in section, f"docs/cli.md does not document {opt} of fq {name}"
