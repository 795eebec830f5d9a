"""`fq inspect` through the real `fq` entry point: PNGs and JSON written, bad input as one line, exit 2."""

import json

import pytest
import torch

from fq_core.cli import main
from fq_core.flat import FlatConfig, freeze_layer, quantize_, save_quantized
from fq_core.models import load_model
from fq_eval.inspect.capture import SITES
from fq_eval.inspect.transforms import TRANSFORMS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _checkpoint(model_dir, path, method):
    model, _ = load_model(model_dir)
    quantize_(model, FlatConfig(method=method))
    if method == "flatquant":  # as if calibrated: factors and scales off their init, then merged
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("skew"):
                    param.copy_(0.2 * torch.randn(param.shape, generator=g))
                elif name.endswith(("transform.scale", "singular")):
                    param.copy_(torch.rand(param.shape, generator=g) + 0.5)
        for layer in model.model.layers:
            freeze_layer(layer, model)
    save_quantized(model, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    return _checkpoint(tiny_model_dir, tmp_path_factory.mktemp("inspect-cli") / "ckpt", "flatquant")


def _run(tiny_model_dir, *args):
    return main(["inspect", "--model", str(tiny_model_dir), "--samples", "2", "--seqlen", "32", *args])


def test_one_layer_writes_its_png_and_the_numbers(tiny_model_dir, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--checkpoint", str(checkpoint), "--layer", "1", "-o", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["inspect_layer_01.json", "inspect_layer_01.png"]
    assert (out / "inspect_layer_01.png").read_bytes().startswith(PNG_MAGIC)

    record = json.loads((out / "inspect_layer_01.json").read_text())
    (layer,) = record["results"]
    assert layer["layer"] == 1 and list(layer["sites"]) == list(SITES)
    for by_transform in layer["sites"].values():
        assert list(by_transform) == list(TRANSFORMS)
        for numbers in by_transform.values():
            assert numbers["act_flatness"] >= 1 and numbers["weight_flatness"] >= 1
            assert 0 < numbers["output_error"] < 1
    assert record["settings"]["act"]["bits"] == 4
    assert record["command"].startswith(f"fq inspect --checkpoint {checkpoint} --layer 1 --model ")

    stdout = capsys.readouterr().out
    assert "activation flatness" in stdout and "relative output error" in stdout and "down_in" in stdout


def test_all_layers_add_a_summary_plot(tiny_model_dir, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--checkpoint", str(checkpoint), "--all-layers", "-o", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())  # no temporary files left behind
    assert names == [
        "inspect_layer_00.png",
        "inspect_layer_01.png",
        "inspect_layers.json",
        "inspect_layers.png",
    ]
    record = json.loads((out / "inspect_layers.json").read_text())
    assert [r["layer"] for r in record["results"]] == [0, 1]
    assert f"--checkpoint {checkpoint} --all-layers --model" in record["command"]  # a runnable command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "2"], "--layer 2 is out of range: {ckpt} has 2 layers, pass 0..1"),
        (["--layer", "-1"], "--layer -1 is out of range"),
        ([], "pass either --layer L or --all-layers"),
        (["--layer", "0", "--all-layers"], "pass either --layer L or --all-layers"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(
    tiny_model_dir, checkpoint, tmp_path, capsys, args, message
):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--checkpoint", str(checkpoint), *args, "-o", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message.format(ckpt=checkpoint) in err
    assert not out.exists()


def test_missing_and_unsuitable_checkpoints_are_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tiny_model_dir, "--checkpoint", str(tmp_path / "nope"), "--layer", "0", "-o", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nope" in err

    rtn = _checkpoint(tiny_model_dir, tmp_path / "rtn", "rtn")
    assert _run(tiny_model_dir, "--checkpoint", str(rtn), "--layer", "0", "-o", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert "is a rtn checkpoint" in err and "pass one written by fq calib" in err
    assert not out.exists()


def test_an_output_that_is_a_file_is_refused(tiny_model_dir, checkpoint, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"x")
    assert _run(tiny_model_dir, "--checkpoint", str(checkpoint), "--layer", "0", "-o", str(out)) == 2
    assert "is a file: pass a directory" in capsys.readouterr().err
