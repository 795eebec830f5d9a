"""The quickstart: FP, naive W4A4 RTN and FlatQuant on the embedded model and the pydoc tail.

It is the smallest run that shows the problem FlatQuant solves and its fix: fake-quantising every
decoder linear to 4-bit weights (per channel) and 4-bit activations (per token) with plain
round-to-nearest takes SmolLM2-135M from a perplexity of ~9.9 to thousands; FlatQuant, calibrated
in-process with fq-calib's `quickstart` recipe (minutes on two CPU cores), brings it back close.
fq-calib is optional: without it the FlatQuant row is skipped, with a hint.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fq_core.data import calibration_windows, pydoc_text, split_calibration_eval, tokenize
from fq_core.flat import load_quantized, quantize_
from fq_core.models import load_model
from fq_eval.methods import Bits, flat_config
from fq_eval.perplexity import perplexity

W4A4 = Bits(4, 4, 16)
CALIB_HINT = "pip install fq-calib adds the FlatQuant row (calibrated in-process, a few minutes)"


def fq_calib_available() -> bool:
    try:
        import fq_calib  # noqa: F401
    except ImportError:
        return False
    return True


def run_quickstart(
    model_spec: str,
    seqlen: int,
    windows: int,
    device: torch.device,
    status: Callable[[str], None] = lambda message: None,
    recipe: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(facts: data sizes and per-part seconds, rows: FP, RTN and, with fq-calib, FlatQuant).

    recipe: the fq-calib recipe (default `preset("quickstart")`); calibration windows come from the
    corpus before the evaluation tail, so the tail is never calibrated on.
    """
    status(f"loading {model_spec}")
    start = time.perf_counter()
    model, tokenizer = load_model(model_spec, dtype=torch.float32, device=device)
    facts: dict[str, Any] = {"load_s": time.perf_counter() - start}

    status("tokenising the pydoc corpus")
    ids = tokenize(tokenizer, pydoc_text())
    calibration, tail = split_calibration_eval(ids, n_eval_windows=windows, seqlen=seqlen)
    facts.update(corpus_tokens=ids.numel(), eval_tokens=tail.numel(), calibration_tokens=calibration.numel())

    rows = []
    status("perplexity of the FP model")
    rows.append(_evaluate("FP", 32, 32, model, tail, seqlen))

    status("fake-quantising to W4A4 (RTN)")
    start = time.perf_counter()
    rtn = copy.deepcopy(model)
    quantize_(rtn, flat_config("rtn", W4A4))
    facts["rtn_quantize_s"] = time.perf_counter() - start
    status("perplexity of W4A4 RTN")
    rows.append(_evaluate("RTN", W4A4.w, W4A4.a, rtn, tail, seqlen))
    del rtn

    if fq_calib_available():
        flat = _flatquant(model, model_spec, calibration, device, facts, status, recipe)
        status("perplexity of W4A4 FlatQuant")
        bits = flat.flat_config
        rows.append(_evaluate("FlatQuant", bits.weight.bits, bits.act.bits, flat, tail, seqlen))
    else:
        facts["flatquant"] = CALIB_HINT
    for row in rows:
        row["ratio_to_fp"] = row["ppl"] / rows[0]["ppl"]
    return facts, rows


def _flatquant(
    model: torch.nn.Module,
    model_spec: str,
    calibration: torch.Tensor,
    device: torch.device,
    facts: dict[str, Any],
    status: Callable[[str], None],
    recipe: Any,
) -> torch.nn.Module:
    """Calibrate a CPU copy with fq-calib into a temporary checkpoint, then load it like any checkpoint."""
    from fq_calib import calibrate, preset

    recipe = recipe or preset("quickstart")
    windows = calibration_windows(calibration, recipe.nsamples, recipe.seqlen, recipe.seed)
    facts["calibration"] = {"nsamples": recipe.nsamples, "seqlen": recipe.seqlen, "epochs": recipe.epochs}
    with tempfile.TemporaryDirectory(prefix="fq-quickstart-") as folder:
        checkpoint = Path(folder) / "ckpt"
        status(
            f"calibrating FlatQuant ({recipe.nsamples} x {recipe.seqlen} windows, {recipe.epochs} epochs "
            f"per layer)"
        )
        start = time.perf_counter()
        calibrate(
            copy.deepcopy(model).cpu(),
            windows,
            recipe,
            checkpoint,
            source=model_spec,
            data_source="pydoc",
            device=device,
            show_progress=sys.stderr.isatty(),
        )
        facts["calibrate_s"] = time.perf_counter() - start
        start = time.perf_counter()
        flat = load_quantized(checkpoint, model=copy.deepcopy(model), device=str(device)).eval()
        facts["flatquant_load_s"] = time.perf_counter() - start
    return flat


def _evaluate(
    method: str, w_bits: int, a_bits: int, model: torch.nn.Module, ids: torch.Tensor, seqlen: int
) -> dict[str, Any]:
    start = time.perf_counter()
    ppl = perplexity(model, ids, seqlen)
    return {
        "method": method,
        "w_bits": w_bits,
        "a_bits": a_bits,
        "ppl": ppl,
        "eval_s": time.perf_counter() - start,
    }
