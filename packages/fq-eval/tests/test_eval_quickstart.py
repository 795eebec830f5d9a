"""`fq quickstart` end to end on a tiny random model folder (FP, W4A4 RTN, FlatQuant rows, the JSON)."""

import json
import math
import sys

import pytest
import typer
from typer.testing import CliRunner

from fq_core.errors import ConfigError, DataError
from fq_eval.cli import register


@pytest.fixture
def app():
    app = typer.Typer()

    @app.callback()
    def root():  # a group, as under the real `fq` app
        pass

    register(app)
    return app


@pytest.fixture
def no_fq_calib(monkeypatch):
    """As if fq-calib were not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "fq_calib", None)


def test_quickstart_prints_fp_and_rtn_and_writes_the_json(app, tiny_model_dir, tmp_path, no_fq_calib):
    out = tmp_path / "sub" / "results.json"
    args = ["quickstart", "--output", str(out), "--model", str(tiny_model_dir), "--seqlen", "32"]
    result = CliRunner().invoke(app, [*args, "--windows", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in table] == ["FP", "RTN"]
    assert "pip install fq-calib adds the FlatQuant row" in result.stderr
    assert "4/4" in table[1] and "ratio to FP" in result.stdout

    record = json.loads(out.read_text())
    assert record["device"]["type"] == "cpu"
    assert {"torch", "transformers", "fq-core", "fq-eval", "python"} <= set(record["versions"])
    assert record["command"].endswith(
        f"quickstart --model {tiny_model_dir} --seqlen 32 --windows 3 --device cpu --output {out}"
    )
    settings = record["settings"]
    assert (settings["model"], settings["seqlen"], settings["windows"]) == (str(tiny_model_dir), 32, 3)
    assert settings["eval_tokens"] == 96
    assert settings["calibration_tokens"] + 96 == settings["corpus_tokens"]
    fp, rtn = record["results"]
    assert (fp["method"], fp["w_bits"], fp["a_bits"], fp["ratio_to_fp"]) == ("FP", 32, 32, 1.0)
    assert (rtn["method"], rtn["w_bits"], rtn["a_bits"]) == ("RTN", 4, 4)
    assert math.isfinite(fp["ppl"]) and math.isfinite(rtn["ppl"]) and fp["ppl"] > 1
    assert rtn["ratio_to_fp"] == pytest.approx(rtn["ppl"] / fp["ppl"])
    assert rtn["ppl"] != fp["ppl"]  # the fake quantisation did change the model
    assert f"{fp['ppl']:.2f}" in table[0] and f"{rtn['ppl']:.2f}" in table[1]


def test_quickstart_on_a_missing_model_raises_a_data_error(app, tmp_path):
    result = CliRunner().invoke(app, ["quickstart", "--model", str(tmp_path / "nope")])
    assert isinstance(result.exception, DataError)


def test_quickstart_rejects_a_bad_device(app, tiny_model_dir):
    result = CliRunner().invoke(app, ["quickstart", "--model", str(tiny_model_dir), "--device", "tpu9"])
    assert isinstance(result.exception, ConfigError) and "not a torch device" in str(result.exception)


def test_quickstart_adds_a_flatquant_row_calibrated_in_process(app, tiny_model_dir, tmp_path):
    pytest.importorskip("fq_calib")
    out = tmp_path / "results.json"
    args = ["quickstart", "--output", str(out), "--model", str(tiny_model_dir), "--seqlen", "32"]
    result = CliRunner().invoke(app, [*args, "--windows", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in table] == ["FP", "RTN", "FlatQuant"]
    record = json.loads(out.read_text())
    fp, rtn, flat = record["results"]
    assert (flat["method"], flat["w_bits"], flat["a_bits"]) == ("FlatQuant", 4, 4)
    assert math.isfinite(flat["ppl"]) and flat["ppl"] not in (fp["ppl"], rtn["ppl"])
    assert flat["ratio_to_fp"] == pytest.approx(flat["ppl"] / fp["ppl"])
    settings = record["settings"]
    assert settings["calibration"] == {"nsamples": 16, "seqlen": 512, "epochs": 2}  # fq-calib's quickstart
    assert {"load_s", "rtn_quantize_s", "calibrate_s", "flatquant_load_s"} <= set(settings)
    assert "pip install fq-calib" not in result.stderr
