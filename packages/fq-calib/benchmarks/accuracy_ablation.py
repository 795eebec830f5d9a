"""Accuracy ablation on the embedded model: each calibration lever alone and combined, per budget.

Every (budget, KV bits, variant) cell calibrates SmolLM2-135M on the pydoc corpus minus its tail,
then measures perplexity on the pydoc tail (16 x 512, fq-eval's protocol) and, with --heldout, on
every complete 512-token window of another English text. Results accumulate in a JSON file (a cell
already there is skipped, so the ablation can be run piecewise) and the markdown table is rebuilt
from all of them.

    python packages/fq-calib/benchmarks/accuracy_ablation.py --budgets 32x512x3 --kv 16 \\
        --variants paper,asym-act,gptq,feed-quant,best --heldout licenses.txt \\
        --results docs/benchmarks/accuracy.json --table docs/benchmarks/accuracy-table.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from fq_calib import preset
from fq_calib.data import PYDOC_EVAL_SEQLEN, PYDOC_EVAL_WINDOWS, windows_for
from fq_calib.run import calibrate
from fq_core.data import pydoc_text, read_text, split_calibration_eval, tokenize
from fq_core.models import load_model
from fq_core.models.quiet import quiet_transformers
from fq_eval.perplexity import window_nlls

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("paper", {}),
    "asym-act": ("paper", {"asym_act": True}),
    "gptq": ("paper", {"weight_rounding": "gptq"}),
    "feed-quant": ("paper", {"feed": "quant"}),
    "batch-1": ("paper", {"batch_size": 1}),
    "lr-2x": ("paper", {"lr": 1e-2}),
    "loss-lm-head": ("paper", {"loss": "lm-head"}),
    "best": ("best", {}),
    "best-loss-lm-head": ("best", {"loss": "lm-head"}),
    "best-without-gptq": ("best", {"weight_rounding": "rtn"}),
}
"""Variant -> (recipe preset, overrides). 'best' is `fq calib --recipe best`."""

REFERENCE = {
    ("32x512x3", 16): 20.75,
    ("64x512x5", 16): 15.06,
    ("32x512x3", 4): 26.43,
    ("8x512x1", 16): 44.12,
}
"""The reference code's pydoc-tail perplexity on the same protocol (../shared/METHOD.md, measured
2026-11-23 on this machine type with its ref_anchor.py)."""


def parse_budget(text: str) -> dict[str, int]:
    nsamples, seqlen, epochs = (int(v) for v in text.split("x"))
    return {"nsamples": nsamples, "seqlen": seqlen, "epochs": epochs}


def ppl(model: torch.nn.Module, ids: torch.Tensor) -> float:
    return math.exp(window_nlls(model, ids, PYDOC_EVAL_SEQLEN).mean().item())


def run_cell(budget: str, kv: int, variant: str, heldout: torch.Tensor | None) -> dict[str, Any]:
    recipe_name, overrides = VARIANTS[variant]
    recipe = preset(recipe_name, "w4a4kv4" if kv == 4 else "w4a4", **parse_budget(budget), **overrides)
    with quiet_transformers():
        model, tokenizer = load_model("default", dtype=torch.float32)
    ids = tokenize(tokenizer, pydoc_text())
    tail = split_calibration_eval(ids, PYDOC_EVAL_WINDOWS, PYDOC_EVAL_SEQLEN)[1]
    windows = windows_for(tokenizer, "pydoc", recipe.nsamples, recipe.seqlen, recipe.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = calibrate(
            model,
            windows,
            recipe,
            Path(tmp) / "ckpt",
            "default",
            device=torch.device("cpu"),
            show_progress=False,
        )
    seconds = time.perf_counter() - start
    log = config.options["calibration"]
    result = {
        "budget": budget,
        "kv": kv,
        "variant": variant,
        "recipe": recipe.to_dict(),
        "ppl_pydoc_tail": ppl(model, tail),
        "calib_seconds": seconds,
        "seconds_per_layer_epoch": seconds / len(log) / recipe.epochs,
        "mse_final_mean": sum(entry["mse_final"] for entry in log) / len(log),
        "threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "versions": {p: version(p) for p in ("torch", "transformers", "fq-core", "fq-calib")},
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(sys.argv),
    }
    if heldout is not None:
        result["ppl_heldout"] = ppl(model, heldout)
    return result


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per (budget, KV), one column per variant, the reference beside them."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in results)]
    cells = {(r["budget"], r["kv"], r["variant"]): r for r in results}
    keys = sorted(
        {(r["budget"], r["kv"]) for r in results}, key=lambda k: (k[1], parse_budget(k[0])["nsamples"])
    )
    head = "| budget (samples x seqlen x epochs) | KV bits | reference | " + " | ".join(variants) + " |"
    lines = [head, "|" + "---|" * (3 + len(variants))]
    for budget, kv in keys:
        ref = REFERENCE.get((budget, kv))
        row = [budget, str(kv), f"{ref:.2f}" if ref else "-"]
        for v in variants:
            r = cells.get((budget, kv, v))
            if r is None:
                row.append("-")
                continue
            text = f"{r['ppl_pydoc_tail']:.2f}"
            if "ppl_heldout" in r:
                text += f" / {r['ppl_heldout']:.2f}"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="32x512x3", help="comma-separated NSAMPLESxSEQLENxEPOCHS")
    ap.add_argument("--kv", default="16", help="comma-separated KV-cache bits: 16 and/or 4")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    ap.add_argument("--heldout", type=Path, default=None, help="another English text for a second PPL")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--table", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        sys.exit(f"error: unknown variants {sorted(unknown)}: use {', '.join(VARIANTS)}")
    # the file is a list of cells, or an object whose "cells" are (docs/benchmarks/accuracy.json)
    saved = json.loads(args.results.read_text()) if args.results.is_file() else []
    results = saved["cells"] if isinstance(saved, dict) else saved
    heldout = None
    if args.heldout is not None:
        _, tokenizer = load_model("default", dtype=torch.float32)
        heldout = tokenize(tokenizer, read_text(args.heldout))
    for budget in args.budgets.split(","):
        for kv in (int(k) for k in args.kv.split(",")):
            for variant in args.variants.split(","):
                if any((r["budget"], r["kv"], r["variant"]) == (budget, kv, variant) for r in results):
                    continue
                result = run_cell(budget, kv, variant, heldout)
                print(
                    json.dumps({k: result[k] for k in ("budget", "kv", "variant", "ppl_pydoc_tail")}),
                    flush=True,
                )
                results.append(result)
                tmp = args.results.with_suffix(".tmp")
                tmp.write_text(json.dumps(saved if isinstance(saved, dict) else results, indent=1))
                tmp.replace(args.results)
    if args.table is not None:
        args.table.write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
