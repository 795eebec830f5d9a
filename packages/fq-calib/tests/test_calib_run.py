"""The `fq calib` run end to end: checkpoint out, kill + resume == uninterrupted, clear refusals."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fq_core.checkpoint import load_checkpoint, validate_checkpoint
from fq_core.cli import main

RECIPE = ["--nsamples", "8", "--seqlen", "32", "--epochs", "2", "--batch-size", "4", "--device", "cpu"]


def fq(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from fq_core.cli import main; sys.exit(main())", *args]


def test_calib_writes_a_valid_checkpoint_with_a_layer_log(tmp_path, tiny_model_dir):
    out = tmp_path / "ckpt"
    result = subprocess.run(
        fq("calib", "--model", str(tiny_model_dir), "-o", str(out), *RECIPE), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    config = validate_checkpoint(out)
    assert config.method == "flatquant" and config.quant.weight.bits == 4 and config.quant.act.bits == 4
    log = config.options["calibration"]
    assert [entry["layer"] for entry in log] == [0, 1, 2]
    assert sum(e["mse_final"] for e in log) < sum(e["mse_init"] for e in log)
    assert all(len(e["epoch_losses"]) == 2 and e["seconds"] > 0 for e in log)
    assert not (tmp_path / "ckpt.partial").exists()


@pytest.mark.parametrize(
    "levers", [[], ["--feed", "quant", "--gptq", "--loss", "lm-head"]], ids=["paper", "levers"]
)
def test_resume_after_a_kill_gives_the_same_checkpoint(tmp_path, tiny_model_dir, levers):
    recipe = [*RECIPE, *levers]
    whole = tmp_path / "whole"
    subprocess.run(
        fq("calib", "--model", str(tiny_model_dir), "-o", str(whole), *recipe),
        check=True,
        capture_output=True,
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        fq("calib", "--model", str(tiny_model_dir), "-o", str(killed), *recipe), stderr=subprocess.DEVNULL
    )
    first_layer = tmp_path / "killed.partial" / "layer_000.safetensors"
    deadline = time.monotonic() + 300
    while not first_layer.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not killed.exists()

    resumed = subprocess.run(fq("calib", "--resume", str(killed)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(whole).tensors, load_checkpoint(killed).tensors
    assert a.keys() == b.keys()
    different = [name for name in a if not (a[name] == b[name]).all()]
    assert not different, different[:5]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nsamples", "6", "--batch-size", "4"], "multiple of batch_size"),
        (["--nsamples", "100000", "--seqlen", "512"], "fewer than nsamples x seqlen"),
        (["--recipe", "fast"], "unknown recipe"),
        (["--bits", "w3a3"], "unknown bits preset"),
        (["--data", "no/such/file.txt"], "neither 'pydoc' nor a text file"),
    ],
)
def test_bad_options_fail_with_one_line_before_any_work(tmp_path, tiny_model_dir, capsys, args, message):
    out = tmp_path / "ckpt"
    assert main(["calib", "--model", str(tiny_model_dir), "-o", str(out), *args]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in last and last.startswith("error: ")
    assert not out.exists() and not Path(str(out) + ".partial").exists()


@pytest.mark.parametrize(
    "args, symmetric, rounding",
    [
        (["--recipe", "paper"], True, "rtn"),
        (["--recipe", "paper", "--a-asym", "--gptq"], False, "gptq"),
        (["--no-a-asym", "--no-gptq"], True, "rtn"),
        ([], False, "gptq"),
    ],
)
def test_levers_follow_the_recipe_unless_told(tmp_path, tiny_model_dir, args, symmetric, rounding):
    out = tmp_path / "ckpt"
    small = ["--nsamples", "4", "--seqlen", "16", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main(["calib", "--model", str(tiny_model_dir), "-o", str(out), *small, *args]) == 0
    config = validate_checkpoint(out)
    assert config.quant.act.symmetric is symmetric
    assert config.options["recipe"]["weight_rounding"] == rounding
