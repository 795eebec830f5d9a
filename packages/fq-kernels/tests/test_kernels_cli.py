"""`fq kernels info`: registered through the entry point, and it reports the environment truthfully.

(Named test_kernels_cli.py, not test_cli.py, so it cannot collide with fq-core's test_cli.py when
pytest runs several packages' tests in one session.)
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton  # a dependency of fq-kernels on Linux, where these tests run

from fq_core.cli import main


def kernels_info(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["kernels", "info", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def kernels_info_json(capsys: pytest.CaptureFixture[str]) -> dict:
    code, out, err = kernels_info(capsys, "--json")
    assert code == 0, err
    return json.loads(out)


def test_kernels_plugin_is_loaded_from_fq_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["info", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    (plugin,) = [p for p in report["plugins"] if p["name"] == "kernels"]
    assert plugin["available"], plugin["error"]
    assert plugin["distribution"] == "fq-kernels"
    assert plugin["version"] == importlib.metadata.version("fq-kernels")
    assert report["packages"]["fq-kernels"]["version"] == importlib.metadata.version("fq-kernels")


def test_reports_the_installed_triton_and_torch(capsys: pytest.CaptureFixture[str]) -> None:
    report = kernels_info_json(capsys)
    assert report["triton"] == {"importable": True, "version": triton.__version__, "error": None}
    assert report["torch"] == torch.__version__


def test_reports_the_cuda_device_like_torch(capsys: pytest.CaptureFixture[str]) -> None:
    report = kernels_info_json(capsys)
    assert report["cuda_available"] == torch.cuda.is_available()
    if torch.cuda.is_available():
        assert report["device"]["name"] == torch.cuda.get_device_name(0)
        assert tuple(report["device"]["capability"]) == torch.cuda.get_device_capability(0)
    else:
        assert report["device"] is None


@pytest.mark.parametrize(("value", "enabled"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_reports_triton_interpret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", value)
    report = kernels_info_json(capsys)
    assert report["triton_interpret"] == {"value": value, "enabled": enabled}
    if enabled:
        assert report["triton_runs_on"] == "interpreter"
    else:
        assert report["triton_runs_on"] == ("cuda" if torch.cuda.is_available() else None)


def test_unset_triton_interpret_is_reported_as_not_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    report = kernels_info_json(capsys)
    assert report["triton_interpret"] == {"value": None, "enabled": False}
    code, out, _ = kernels_info(capsys)
    assert code == 0
    assert any(line.split() == ["TRITON_INTERPRET", "not", "set"] for line in out.splitlines()), out


def test_triton_that_does_not_import_is_reported_not_fatal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    report = kernels_info_json(capsys)
    assert report["triton"]["importable"] is False
    assert report["triton"]["error"].startswith(("ImportError", "ModuleNotFoundError"))
    assert report["triton_runs_on"] is None
    if not torch.cuda.is_available():
        assert report["cuda_decode_tiles"] is False
        assert report["cuda_transform_quant"] is False
    code, out, _ = kernels_info(capsys)
    assert code == 0
    assert "does not import" in out and "cannot run" in out


def test_importing_the_plugin_imports_neither_torch_nor_triton() -> None:
    """Every `fq` call imports the plugin, so it must stay light."""
    code = "import sys, fq_kernels.cli; print(sorted({'torch', 'triton'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.gpu
def test_gpu_device_is_reported_and_usable_by_triton(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert torch.cuda.is_available(), "a gpu test ran without CUDA: run it through `nox -s kernels_gpu`"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    report = kernels_info_json(capsys)
    assert report["triton_runs_on"] == "cuda"
    assert report["device"]["name"] == torch.cuda.get_device_name(0)
    assert report["cuda_decode_tiles"] is True, "the CUDA decode kernel did not compile or run"
    assert report["cuda_transform_quant"] is True, "the CUDA transform_quant did not compile or run"


def test_docs_cover_the_kernels_commands() -> None:
    """docs/cli.md has a section for every `fq kernels` command, naming each of its options."""
    import typer

    from fq_kernels.cli import register

    docs = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text(encoding="utf-8")
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    kernels = typer.main.get_command(app).commands["kernels"]
    assert kernels.commands, "fq kernels has no commands"
    for name, command in kernels.commands.items():
        heading = f"### `fq kernels {name}`"
        assert heading in docs, f"docs/cli.md has no {heading!r} section"
        section = docs.split(heading, 1)[1].split("\n#", 1)[0]
        for param in command.params:
            for opt in param.opts:
                if param.param_type_name == "option" and opt.startswith("--"):
                    assert f"`{opt}`" in section, f"docs/cli.md does not document {opt} of fq kernels {name}"
