"""The quickstart: FP against naive W4A4 RTN on the embedded model and the pydoc tail.

It is the smallest run that shows the problem FlatQuant solves: fake-quantising every decoder
linear to 4-bit weights (per channel) and 4-bit activations (per token) with plain round-to-
nearest takes SmolLM2-135M from a perplexity of ~9.9 to thousands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from fq_core.data import pydoc_text, split_calibration_eval, tokenize
from fq_core.flat import FlatConfig, quantize_
from fq_core.models import load_model
from fq_core.quant import QuantSpec
from fq_eval.perplexity import perplexity

W4A4_RTN = FlatConfig(method="rtn", weight=QuantSpec(4, True, "channel"), act=QuantSpec(4, True, "token"))


def run_quickstart(
    model_spec: str,
    seqlen: int,
    windows: int,
    device: torch.device,
    status: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(facts about the data and timings, one result row per method), FP first."""
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
    quantize_(model, W4A4_RTN)
    facts["quantize_s"] = time.perf_counter() - start
    status("perplexity of W4A4 RTN")
    rows.append(_evaluate("RTN", W4A4_RTN.weight.bits, W4A4_RTN.act.bits, model, tail, seqlen))
    for row in rows:
        row["ratio_to_fp"] = row["ppl"] / rows[0]["ppl"]
    return facts, rows


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
