"""`fq eval --device-map`: each method's model spread by accelerate gives the results of the model
on one device (perplexity, zero-shot, latency rows), on the CPU with layers offloaded to the disk
(CI) and over two GPUs (`-m gpu`, needs 2 CUDA devices); bad options are one error line."""

import importlib.util
import json

import pytest
import torch

from fq_core.cli import main
from fq_eval.compare import EvalPlan, run_eval
from fq_eval.latency import LatencySettings
from fq_eval.placement import Placement

SEQLEN = 32
LM_EVAL = importlib.util.find_spec("lm_eval") is not None
"""The GPU machine's image has no lm-eval: there the two-GPU test covers perplexity and latency."""
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model_dir):
    """A FlatQuant checkpoint of the tiny model (one quick epoch: the values do not matter here)."""
    fq_calib = pytest.importorskip("fq_calib")
    from fq_core.data import calibration_windows, pydoc_text, split_calibration_eval, tokenize
    from fq_core.models import load_model

    model, tokenizer = load_model(tiny_model_dir)
    recipe = fq_calib.preset("quickstart", nsamples=4, seqlen=SEQLEN, epochs=1, batch_size=2)
    windows = split_calibration_eval(tokenize(tokenizer, pydoc_text()), 16, SEQLEN)[0]
    out = tmp_path_factory.mktemp("device-map") / "ckpt"
    fq_calib.calibrate(
        model, calibration_windows(windows, 4, SEQLEN), recipe, out, source="tiny", show_progress=False
    )
    return out


def plan(model_dir, checkpoint, zero_shot: bool = True) -> EvalPlan:
    return EvalPlan(
        model=str(model_dir),
        methods=["fp", "rtn", "flatquant"],
        checkpoint=checkpoint,
        seqlen=SEQLEN,
        zero_shot=["pydoc_lastword_mc"] if zero_shot else [],
        zero_shot_limit=8,
        latency=LatencySettings(
            prefill=True,
            decode=True,
            prefill_seqlen=16,
            decode_batches=(1, 2),
            decode_prompt=8,
            decode_tokens=2,
            warmup=0,
            repeats=1,
        ),
    )


def assert_same_results(spread: list[dict], whole: list[dict], rel: float) -> None:
    for got, expected in zip(spread, whole, strict=True):
        assert got["method"] == expected["method"]
        assert got["ppl"]["pydoc"] == pytest.approx(expected["ppl"]["pydoc"], rel=rel), got["method"]
        assert got["zero_shot"].keys() == expected["zero_shot"].keys()
        for task, row in expected["zero_shot"].items():
            assert got["zero_shot"][task]["accuracy"] == pytest.approx(row["accuracy"]), task
        assert [(r["phase"], r["batch"]) for r in got["latency"]] == [
            (r["phase"], r["batch"]) for r in expected["latency"]
        ]
        assert all(r["ms"] > 0 for r in got["latency"])


def test_layers_offloaded_to_the_disk_give_the_results_of_the_whole_model(tiny_model_dir, checkpoint):
    """A CPU limit below one decoder layer sends the layers to the disk: accelerate loads each one's
    weights back for its forward, so every number must equal the undispatched model's exactly."""
    cpu = torch.device("cpu")
    _, whole = run_eval(plan(tiny_model_dir, checkpoint), cpu)
    _, spread = run_eval(plan(tiny_model_dir, checkpoint), Placement(cpu, "sequential", {"cpu": "150KiB"}))
    assert_same_results(spread, whole, rel=1e-9)
    for row in spread:
        assert row["device_map"].get("disk", 0) >= 2, row["device_map"]  # really spread
        assert "device_map" not in next(r for r in whole if r["method"] == row["method"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device-map", "everywhere"], "--device-map 'everywhere' is unknown"),
        (["--device-map", "auto", "--device", "cpu"], "--device-map places the model itself"),
        (["--max-memory", "cpu=1GiB"], "--max-memory limits a --device-map"),
        (["--device-map", "auto", "--max-memory", "gpu0"], "--max-memory takes DEVICE=SIZE items"),
        (["--device-map", "auto", "--max-memory", "9=1GiB"], "--max-memory names GPU 9"),
        (["--device-map", "auto", "--real", "--method", "flatquant"], "leave out --device-map"),
    ],
)
def test_bad_placement_options_are_one_line(tiny_model_dir, tmp_path, capsys, extra, message):
    args = ["eval", "--model", str(tiny_model_dir), "--seqlen", str(SEQLEN), "--checkpoint", str(tmp_path)]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


@pytest.mark.gpu
@two_gpus
def test_two_gpus_give_the_results_of_one(tiny_model_dir, checkpoint, tmp_path, capsys):
    """Spread over two GPUs (float16, as `fq eval` on CUDA): a 100 KiB limit on GPU 0 sends the later
    layers of the ~105 KiB model to GPU 1, and perplexity, zero-shot accuracy and the latency rows
    match the model on GPU 0 alone."""
    _, whole = run_eval(plan(tiny_model_dir, checkpoint, zero_shot=LM_EVAL), torch.device("cuda", 0))
    out = tmp_path / "spread.json"
    limit = "0=100KiB,1=10MiB"
    args = ["eval", "--model", str(tiny_model_dir), "--checkpoint", str(checkpoint), "--seqlen", str(SEQLEN)]
    args += ["--method", "fp,rtn,flatquant"]
    args += ["--zero-shot", "pydoc_lastword_mc", "--zero-shot-limit", "8"] if LM_EVAL else []
    args += ["--latency", "prefill,decode", "--prefill-seqlen", "16", "--decode-batches", "1,2"]
    args += ["--decode-prompt", "8", "--decode-tokens", "2", "--warmup", "0", "--repeats", "1"]
    assert main([*args, "--device-map", "sequential", "--max-memory", limit, "--output", str(out)]) == 0
    spread = json.loads(out.read_text())["results"]
    assert_same_results(spread, whole, rel=1e-3)
    for row in spread:
        assert {"cuda:0", "cuda:1"} <= set(row["device_map"]), row["device_map"]
        assert all(len(r["peak_gib_per_gpu"]) == 2 for r in row["latency"])
