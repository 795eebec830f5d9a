"""`fq calib`: calibrate a model with FlatQuant and write the checkpoint (resumable).

Registered through the `fq.commands` entry point; heavy imports happen inside the command.
`--ranks N` runs N processes that calibrate together (`fq_calib.distributed`); so does torchrun.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fq_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from fq_calib.recipe import CalibRecipe


def register(app: typer.Typer) -> None:
    app.command("calib")(calib)


def _spec_overrides(
    w_bits: int | None,
    a_bits: int | None,
    k_bits: int | None,
    v_bits: int | None,
    w_asym: bool,
    w_group_size: int | None,
    kv_group_size: int,
) -> dict[str, Any]:
    """QuantSpec overrides from the bit options (None keeps the --bits preset's value)."""
    from fq_core.quant import QuantSpec

    out: dict[str, Any] = {}
    if w_bits is not None or w_asym or w_group_size is not None:
        granularity = "group" if w_group_size else "channel"
        out["weight"] = QuantSpec(w_bits or 4, not w_asym, granularity, w_group_size)
    if a_bits is not None:
        out["act"] = QuantSpec(a_bits, True, "token")
    for name, bits in (("key", k_bits), ("value", v_bits)):
        if bits is not None:
            out[name] = QuantSpec(bits, False, "group", kv_group_size) if bits < 16 else QuantSpec(16)
    return out


def calib(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Checkpoint directory to write.")
    ] = None,
    model: Annotated[
        str, typer.Option(help="'default' (embedded SmolLM2-135M), an HF model dir or a .gguf.")
    ] = ("default"),
    recipe: Annotated[
        str,
        typer.Option(
            help="'best' (128x2048x15 with our levers), 'paper' (the reference's recipe, bit for bit) "
            "or 'quickstart' (best, 16x512x2)."
        ),
    ] = "best",
    bits: Annotated[str, typer.Option(help="Bit-width preset: w4a4, w4a4kv4, w4a16, w8a8.")] = "w4a4",
    data: Annotated[
        str, typer.Option(help="'pydoc' (embedded corpus minus its eval tail) or a text file.")
    ] = ("pydoc"),
    w_bits: Annotated[int | None, typer.Option(help="Weight bits (overrides --bits).")] = None,
    a_bits: Annotated[int | None, typer.Option(help="Activation bits (16 = off).")] = None,
    k_bits: Annotated[int | None, typer.Option(help="KV-cache key bits (16 = off).")] = None,
    v_bits: Annotated[int | None, typer.Option(help="KV-cache value bits (16 = off).")] = None,
    w_asym: Annotated[bool, typer.Option(help="Asymmetric weights.")] = False,
    a_asym: Annotated[
        bool | None,
        typer.Option(help="Asymmetric per-token activations (default: the recipe's; on in best/quickstart)."),
    ] = None,
    w_group_size: Annotated[int | None, typer.Option(help="Per-group weights of this size.")] = None,
    kv_group_size: Annotated[int, typer.Option(help="KV quantisation group (capped at head_dim).")] = 128,
    lwc: Annotated[bool, typer.Option(help="Learnable weight clipping.")] = True,
    lac: Annotated[bool, typer.Option(help="Learnable activation clipping.")] = True,
    add_diag: Annotated[bool, typer.Option(help="Learnable per-channel scaling.")] = True,
    diag_alpha: Annotated[float, typer.Option(help="SmoothQuant exponent of the scaling init.")] = 0.3,
    direct_inv: Annotated[
        bool, typer.Option(help="Plain matrices + float64 inverse instead of SVD.")
    ] = False,
    nsamples: Annotated[int | None, typer.Option(help="Calibration windows.")] = None,
    seqlen: Annotated[int | None, typer.Option(help="Tokens per window.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per layer.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of transforms (clipping gets 10x).")] = None,
    feed: Annotated[str | None, typer.Option(help="Next layer's inputs: 'fp' (paper) or 'quant'.")] = None,
    gptq: Annotated[
        bool | None,
        typer.Option(help="GPTQ rounding of the merged weights, else to nearest (default: the recipe's)."),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            help="Layer objective: 'mse' (paper) or 'lm-head' (errors the LM head reads weigh more)."
        ),
    ] = None,
    amp: Annotated[
        bool | None,
        typer.Option(
            help="bfloat16 autocast on CUDA, else float32 (the CPU always runs float32). [default: on]"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of windows and transform inits.")] = 0,
    device: Annotated[str, typer.Option(help="torch device; 'auto' takes CUDA when available.")] = "auto",
    resume: Annotated[
        Path | None, typer.Option(help="Continue a killed run: its output dir (or <output>.partial).")
    ] = None,
    ranks: Annotated[
        int,
        typer.Option(
            "--ranks",
            "--gpus",
            help="Processes sharing every batch: one per GPU on CUDA (NCCL), else on the CPU (gloo).",
        ),
    ] = 1,
) -> None:
    """Calibrate FlatQuant transforms and clipping layer by layer, then write the checkpoint."""
    from fq_calib import distributed
    from fq_calib.data import check_source
    from fq_calib.recipe import CalibRecipe, preset
    from fq_calib.state import PROGRESS, work_dir_for
    from fq_core.devices import resolve_device

    if resume is not None:
        output = resume.with_name(resume.name.removesuffix(".partial"))
        progress = work_dir_for(output) / PROGRESS
        if not progress.is_file():
            raise ConfigError(f"nothing to resume at {resume}: {progress} does not exist")
        identity = json.loads(progress.read_text())["identity"]
        run_recipe, model, data = (
            CalibRecipe.from_dict(identity["recipe"]),
            identity["model"],
            identity["source"],
        )
    else:
        if output is None:
            raise ConfigError("--output is required (or --resume DIR to continue a run)")
        overrides = {
            "nsamples": nsamples,
            "seqlen": seqlen,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "feed": feed,
            "weight_rounding": None if gptq is None else ("gptq" if gptq else "rtn"),
            "asym_act": a_asym,
            "amp": amp,
            "loss": loss,
        }
        flat = {"lwc": lwc, "lac": lac, "channel_scale": add_diag, "diag_alpha": diag_alpha}
        flat["parametrization"] = "direct" if direct_inv else "svd"
        flat.update(_spec_overrides(w_bits, a_bits, k_bits, v_bits, w_asym, w_group_size, kv_group_size))
        run_recipe = preset(
            recipe, bits, seed=seed, **{k: v for k, v in overrides.items() if v is not None}, **flat
        )
    target = resolve_device(device)
    check_source(data)  # a missing data file fails before the model is loaded
    torchrun_world = distributed.torchrun_world()
    if ranks < 1:
        raise ConfigError(f"--ranks (--gpus) must be >= 1, got {ranks}")
    if torchrun_world > 1 and ranks > 1:
        raise ConfigError("--ranks starts fq calib's own processes: leave it out under torchrun")
    distributed.check_batch_size(run_recipe.batch_size, max(ranks, torchrun_world))
    job = (run_recipe, model, data, output, resume is not None)
    if torchrun_world > 1:
        distributed.run_torchrun_rank(_run, target, *job)
    elif ranks > 1:
        distributed.spawn(_run, ranks, target, *job)
    else:
        _run(target, *job)


def _run(
    device: torch.device, recipe: CalibRecipe, model: str, data: str, output: Path, resume: bool
) -> None:
    """Load the model and the windows, calibrate, and (on rank 0) report. Runs in every rank."""
    import torch

    from fq_calib.data import windows_for
    from fq_calib.distributed import is_main
    from fq_calib.run import calibrate
    from fq_core.models import load_model
    from fq_core.models.quiet import quiet_transformers

    err = Console(stderr=True, quiet=not is_main())
    err.print(f"[dim]loading {model}[/]")
    with quiet_transformers():
        base, tokenizer = load_model(model, dtype=torch.float32)
        windows = windows_for(tokenizer, data, recipe.nsamples, recipe.seqlen, recipe.seed)
        config = calibrate(
            base, windows, recipe, output, source=model, data_source=data, resume=resume, device=device
        )
    log = config.options["calibration"]
    mse_init = sum(entry["mse_init"] for entry in log) / len(log)
    mse_final = sum(entry["mse_final"] for entry in log) / len(log)
    seconds = sum(entry["seconds"] for entry in log)
    err.print(
        f"wrote {output}: {len(log)} layers, mean MSE {mse_init:.3g} -> {mse_final:.3g}, {seconds:.0f} s"
    )
