"""Calibration speed of one decoder layer of a real model shape (random weights: speed does not
depend on values). Prints and writes JSON: the fixed per-layer cost and the time per epoch.

    python packages/fq-calib/benchmarks/layer_speed.py --shape llama-3-8b --epochs 2 --out speed.json
    python packages/fq-calib/benchmarks/layer_speed.py --shape llama-3-8b --epochs 2 --ranks 2   # 2 GPUs
    python packages/fq-calib/benchmarks/layer_speed.py --shape tiny --nsamples 8 --seqlen 64   # CPU smoke

With --ranks N the layer is calibrated as `fq calib --gpus N` does it: N processes (NCCL on CUDA,
gloo on the CPU), each with its shard of every batch, gradients all-reduced.

The paper's recipe (128 x 2048 windows, batch 4) on a LLaMA-3-8B layer is the figure compared with
the reference code (METHOD.md: 5.1-5.7 s per epoch plus ~2.5 s per layer on an H100).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time

import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from fq_calib import distributed, preset
from fq_calib.train import calibrate_layer
from fq_core.flat import freeze_layer, quantize_

SHAPES = {
    "llama-3-8b": dict(
        hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8
    ),
    "llama-2-7b": dict(
        hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32
    ),
    "smollm2-135m": dict(  # the embedded model: the CPU's per-layer-epoch figure vs the reference's
        hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3
    ),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
}


class OneLayer(torch.nn.Module):
    """The smallest model `quantize_` accepts: a config and one decoder layer."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = torch.nn.ModuleList([LlamaDecoderLayer(config, 0)])


def build(args: argparse.Namespace, device: torch.device):
    """A one-layer flat model of the shape, its random inputs (this rank's shard of them), the layer
    kwargs and the recipe. Every rank builds the same model and inputs from the same seeds."""
    config = LlamaConfig(num_hidden_layers=1, vocab_size=128, **SHAPES[args.shape])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)  # the same random layer in every rank
    model = OneLayer(config).to(device)
    recipe = preset(
        args.recipe,
        "w4a4kv4" if args.kv4 else "w4a4",
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        epochs=args.epochs,
    )
    quantize_(model, recipe.flat)
    g = torch.Generator(device=device).manual_seed(0)
    inputs = torch.randn(args.nsamples, args.seqlen, config.hidden_size, device=device, generator=g)
    rows = distributed.shard_rows(
        args.nsamples, recipe.batch_size, distributed.rank(), distributed.world_size()
    )
    inputs = inputs[rows.to(device)]
    position_ids = torch.arange(args.seqlen, device=device).unsqueeze(0)
    kwargs = {
        "position_embeddings": LlamaRotaryEmbedding(config).to(device)(inputs[:1], position_ids),
        "position_ids": position_ids,
    }
    return model, inputs, kwargs, recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, default="llama-3-8b")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--kv4", action="store_true", help="W4A4KV4 instead of W4A4")
    ap.add_argument("--recipe", choices=("paper", "best"), default="paper")
    ap.add_argument("--layers", type=int, default=1, help="layers calibrated in turn; the last is reported")
    ap.add_argument("--ranks", type=int, default=1, help="processes sharing every batch (one per GPU)")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then profile one epoch over N windows (torch.profiler) and print the top ops",
    )
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.ranks > 1:
        distributed.spawn(measure, args.ranks, device, args)
    else:
        measure(device, args)


def time_layer(args: argparse.Namespace, device: torch.device):
    """Calibrate one fresh layer; (seconds, per-epoch seconds, stats, recipe)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    model, inputs, kwargs, recipe = build(args, device)
    marks: list[float] = []

    def on_epoch(epoch: int, loss: float) -> None:
        sync()
        marks.append(time.perf_counter())

    sync()
    start = time.perf_counter()
    stats, _, _ = calibrate_layer(
        0,
        model.layers[0],
        inputs,
        kwargs,
        recipe,
        device,
        lambda trained: freeze_layer(trained, model),
        on_epoch,
    )
    sync()
    seconds = time.perf_counter() - start
    return seconds, [b - a for a, b in itertools.pairwise([start, *marks])], stats, recipe


def measure(device: torch.device, args: argparse.Namespace) -> None:
    """Calibrate `--layers` fresh layers on `device` (this rank's) one after the other, as a model's
    run does, and time each; rank 0 prints and writes the JSON. The first layer also pays for
    one-time work (torch.compile of the quantisers on CUDA, allocator warm-up): the last layer's
    time is the steady per-layer cost of the rest of a model."""
    layer_seconds = []
    for _ in range(args.layers):
        seconds, epoch_s, stats, recipe = time_layer(args, device)
        layer_seconds.append(seconds)
    total = layer_seconds[-1]
    per_epoch = min(epoch_s)
    if not distributed.is_main():
        return
    result = {
        "shape": args.shape,
        "ranks": distributed.world_size(),
        "recipe": recipe.to_dict(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "layer_seconds": layer_seconds,
        "seconds_total": total,
        "seconds_per_epoch": per_epoch,
        "seconds_fixed": total - per_epoch * args.epochs,
        "epoch_seconds": epoch_s,
        "mse_init": stats.mse_init,
        "mse_final": stats.mse_final,
        "command": " ".join(sys.argv),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.profile and distributed.world_size() == 1:
        profile(args, device)


def profile(args: argparse.Namespace, device: torch.device) -> None:
    """Where one epoch's time goes: a fresh layer calibrated on `--profile` windows for one epoch."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    small = argparse.Namespace(**{**vars(args), "nsamples": args.profile, "epochs": 1, "profile": 0})
    model, inputs, kwargs, recipe = build(small, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        calibrate_layer(0, model.layers[0], inputs, kwargs, recipe, device, lambda t: freeze_layer(t, model))
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30))


if __name__ == "__main__":
    main()
