"""`fq eval --checkpoint DIR --real`: the flatquant row comes from fq-kernels' int4 model.

fq-kernels' ops run on their PyTorch references here (what a CPU without TRITON_INTERPRET runs):
the wiring of `--real` is under test; the kernels are tested in fq-kernels (interpreter and CUDA),
and interpreting every GEMM of the whole-corpus perplexity took over four minutes of CI.
"""

import json

import pytest

from fq_core.cli import main
from fq_core.flat import FlatConfig, load_quantized, quantize_, save_quantized
from fq_core.models import load_model
from fq_core.quant import QuantSpec
from fq_eval.perplexity import perplexity
from fq_eval.ppl_data import pydoc_ids
from fq_kernels.runtime import load_int4_model

SEQLEN = 32
KV4 = QuantSpec(4, False, "group", 12)


@pytest.fixture(autouse=True)
def _reference_ops(monkeypatch):
    monkeypatch.setenv("FQ_KERNELS_BACKEND", "reference")


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    """Hadamard W4A4KV4 (fixed transforms, frozen by quantize_): every online site, no training."""
    model, _ = load_model(tiny_model_dir)
    path = tmp_path_factory.mktemp("ckpt") / "hadamard-w4a4kv4"
    save_quantized(quantize_(model, FlatConfig(method="hadamard", key=KV4, value=KV4)), path)
    return path


def test_real_row_is_the_int4_models_perplexity(tiny_model_dir, checkpoint, tmp_path, capsys):
    out = tmp_path / "results.json"
    args = ["eval", "--model", str(tiny_model_dir), "--checkpoint", str(checkpoint), "--real"]
    args += ["--method", "fp,flatquant", "--seqlen", str(SEQLEN), "--device", "cpu", "--output", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert "W4A4KV4 int4" in capsys.readouterr().out

    record = json.loads(out.read_text())
    assert record["settings"]["real"] is True
    row = {r["method"]: r for r in record["results"]}["flatquant"]
    assert row["real"] is True and row["bits"] == {"w": 4, "a": 4, "k": 4, "v": 4}
    ids = pydoc_ids(load_model(tiny_model_dir)[1], SEQLEN)
    real, fake = load_int4_model(checkpoint), load_quantized(checkpoint)
    assert row["ppl"]["pydoc"] == pytest.approx(perplexity(real, ids, SEQLEN), rel=1e-9)
    assert row["ppl"]["pydoc"] == pytest.approx(perplexity(fake, ids, SEQLEN), rel=0.01)


def test_real_without_a_checkpoint_is_one_error_line(tiny_model_dir, capsys):
    args = ["eval", "--model", str(tiny_model_dir), "--real", "--seqlen", str(SEQLEN), "--device", "cpu"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --real") and err.count("\n") == 1, err
