"""Prefill and decode latency of a causal LM or of one of its decoder layers.

What is timed is what serving does: prefill = one forward over batch x seqlen prompt tokens that
fills a fresh KV cache and computes only the last position's logits (as `generate` does); decode =
one token per sequence per step, greedy, against the KV cache of a `prompt`-token prefill, reported
as ms per step and tokens/s (batch / step time). On CUDA each repeat is timed with CUDA events after
warm-up calls, and the median of the repeats is reported; on the CPU `perf_counter` does the same
for smoke tests (the numbers are then only a sanity check).

Models can be built from a config alone with random weights (`random_model("llama-2-7b")`), so a
GPU run needs no checkpoint: latency does not depend on the weights' values.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from fq_core.adapters.hf_names import cache_kwarg, output_cache
from fq_core.errors import ConfigError
from fq_eval.placement import model_devices

SHAPES: dict[str, dict[str, Any]] = {
    "llama-2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    "llama-3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
    },
    # For smoke tests on a CPU: the same code path at a size that runs in milliseconds.
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 1024,
    },
}
SHAPE_PREFIX = "shape:"


@dataclass(frozen=True)
class LatencySettings:
    """What to time. scope "model" runs the whole LM; "layer" only decoder layer 0 on random hidden states."""

    prefill: bool = True
    decode: bool = True
    scope: str = "model"
    prefill_batch: int = 1
    prefill_seqlen: int = 2048
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    decode_prompt: int = 512
    decode_tokens: int = 32
    warmup: int = 2
    repeats: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scope not in ("model", "layer"):
            raise ConfigError(f"latency scope {self.scope!r} is unknown: use 'model' or 'layer'")
        for name in ("prefill_batch", "prefill_seqlen", "decode_prompt", "decode_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"latency {name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or not self.decode_batches or min(self.decode_batches) < 1:
            raise ConfigError("latency warm-up must be >= 0 and decode batches >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_config(name: str, layers: int | None = None) -> Any:
    """A LlamaConfig of a named shape (e.g. "llama-2-7b"), optionally with fewer layers."""
    from transformers import LlamaConfig

    if name not in SHAPES:
        raise ConfigError(f"unknown model shape {name!r}: use one of {', '.join(SHAPES)}")
    values = dict(SHAPES[name])
    if layers is not None:
        values["num_hidden_layers"] = layers
    return LlamaConfig(**values)


def random_model(
    name: str, dtype: torch.dtype, device: torch.device | str, layers: int | None = None, seed: int = 0
) -> nn.Module:
    """A LlamaForCausalLM of shape `name` with random weights, built directly on `device` in `dtype`."""
    from transformers import LlamaForCausalLM

    config = shape_config(name, layers)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Timing.


def _devices(devices: torch.device | Sequence[torch.device]) -> list[torch.device]:
    return [devices] if isinstance(devices, torch.device) else list(devices)


def _sync(devices: list[torch.device]) -> None:
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def time_ms(
    run: Callable[[], Any],
    devices: torch.device | Sequence[torch.device],
    warmup: int,
    repeats: int,
    setup: Callable[[], Any] | None = None,
) -> list[float]:
    """Milliseconds of `run()` per repeat, after `warmup` untimed calls; `setup()` runs untimed first.

    On one GPU, CUDA events time its stream; a model spread over several GPUs is timed by the host
    clock between synchronisations of all of them (an event pair sees only one device's stream)."""
    devices = _devices(devices)
    events = len(devices) == 1 and devices[0].type == "cuda"
    for _ in range(warmup):
        if setup is not None:
            setup()
        run()
    _sync(devices)
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        _sync(devices)
        if events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            run()
            _sync(devices)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times)}


def _device_of(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


def release_memory(devices: torch.device | Sequence[torch.device]) -> None:
    """Drop collected tensors and return the CUDA cache's free blocks (between measurements)."""
    gc.collect()
    for device in _devices(devices):
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# The whole model.


class ModelRunner:
    """Prefill / decode steps of a causal LM with a KV cache (transformers' default DynamicCache)."""

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        self.model = model
        self.devices = model_devices(model)
        self.device = self.devices[0]  # inputs go here; a spread model's outputs come back here
        self.vocab = model.config.vocab_size
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def prompt(self, batch: int, seqlen: int) -> torch.Tensor:
        ids = torch.randint(0, self.vocab, (batch, seqlen), generator=self.generator)
        return ids.to(self.device)

    def prefill(self, ids: torch.Tensor) -> tuple[Any, torch.Tensor]:
        out = self.model(ids, use_cache=True, logits_to_keep=1)
        return output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)

    def decode(self, cache: Any, token: torch.Tensor, steps: int) -> torch.Tensor:
        for _ in range(steps):
            out = self.model(token, use_cache=True, **{cache_kwarg(): cache})
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        return token


class LayerRunner:
    """The same for decoder layer 0 alone, on random hidden states (positions and RoPE as in the model)."""

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        from fq_core.adapters import get_adapter

        base = getattr(model, "model", model)
        self.layer = get_adapter(model).decoder_layers(model)[0]
        self.rotary = base.rotary_emb
        self.config = model.config
        self.device, self.dtype = _device_of(self.layer)
        self.devices = [self.device]
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def _hidden(self, batch: int, seqlen: int) -> torch.Tensor:
        x = torch.randn(batch, seqlen, self.config.hidden_size, generator=self.generator)
        return x.to(self.device, self.dtype)

    def _positions(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, Any]:
        ids = torch.arange(start, start + x.shape[1], device=self.device)[None].expand(x.shape[0], -1)
        return ids, self.rotary(x, ids)

    def prompt(self, batch: int, seqlen: int) -> torch.Tensor:
        return self._hidden(batch, seqlen)

    def _step(self, x: torch.Tensor, cache: Any, start: int, embeddings: Any = None) -> torch.Tensor:
        ids, rope = self._positions(x, start) if embeddings is None else embeddings
        cached = {cache_kwarg(): cache}
        out = self.layer(x, position_ids=ids, position_embeddings=rope, use_cache=True, **cached)
        return out[0] if isinstance(out, tuple) else out

    def prefill(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        self._step(x, cache, 0)
        return cache, x[:, -1:]

    def decode(self, cache: Any, token: torch.Tensor, steps: int) -> torch.Tensor:
        start = cache.get_seq_length()
        # Inputs and RoPE of every step made before the clock starts: the layer alone is timed.
        inputs = [self._hidden(token.shape[0], 1) for _ in range(steps)]
        embeddings = [self._positions(x, start + i) for i, x in enumerate(inputs)]
        for x, emb in zip(inputs, embeddings, strict=True):
            token = self._step(x, cache, 0, emb)
        return token


@torch.no_grad()
def run_latency(
    model: nn.Module, settings: LatencySettings, status: Callable[[str], None] = lambda message: None
) -> list[dict[str, Any]]:
    """Rows {phase, scope, batch, seqlen|prompt, tokens, ms, ms_min, ms_max, tokens_per_s, peak_gib}."""
    runner = ModelRunner(model) if settings.scope == "model" else LayerRunner(model)
    devices = runner.devices
    rows = []
    if settings.prefill:
        b, s = settings.prefill_batch, settings.prefill_seqlen
        status(f"prefill {b} x {s} ({settings.scope})")
        ids = runner.prompt(b, s)
        rows.append(
            _measure(
                devices,
                lambda: runner.prefill(ids),
                settings,
                {"phase": "prefill", "scope": settings.scope, "batch": b, "seqlen": s, "tokens": b * s},
            )
        )
        del ids
        release_memory(devices)
    if settings.decode:
        for b in settings.decode_batches:
            steps, prompt = settings.decode_tokens, settings.decode_prompt
            status(f"decode batch {b}, {steps} steps after {prompt} ({settings.scope})")
            rows.append(_decode_row(runner, b, settings))
            release_memory(devices)
    return rows


def _decode_row(runner: Any, batch: int, settings: LatencySettings) -> dict[str, Any]:
    prompt = runner.prompt(batch, settings.decode_prompt)
    state: dict[str, Any] = {}

    def setup() -> None:
        state.clear()
        state["cache"], state["token"] = runner.prefill(prompt)

    info = {
        "phase": "decode",
        "scope": settings.scope,
        "batch": batch,
        "prompt": settings.decode_prompt,
        "tokens": batch,
        "steps": settings.decode_tokens,
    }
    row = _measure(
        runner.devices,
        lambda: runner.decode(state["cache"], state["token"], settings.decode_tokens),
        settings,
        info,
        setup=setup,
        per=settings.decode_tokens,
    )
    state.clear()
    return row


def _measure(
    devices: list[torch.device],
    run: Callable[[], Any],
    settings: LatencySettings,
    info: dict[str, Any],
    setup: Callable[[], Any] | None = None,
    per: int = 1,
) -> dict[str, Any]:
    """Time `run` (per = steps it makes: ms are per step); an out-of-memory is a row, not a crash."""
    gpus = [device for device in devices if device.type == "cuda"]
    for gpu in gpus:
        torch.cuda.reset_peak_memory_stats(gpu)
    try:
        times = [t / per for t in time_ms(run, devices, settings.warmup, settings.repeats, setup)]
    except torch.cuda.OutOfMemoryError:
        release_memory(devices)
        return {**info, "ms": None, "error": "out of memory"}
    row = {**info, **_summary(times)}
    row["tokens_per_s"] = info["tokens"] / (row["ms"] / 1e3)
    if gpus:  # summed over the GPUs of a spread model, with each GPU's own peak beside it
        peaks = [torch.cuda.max_memory_allocated(gpu) / 2**30 for gpu in gpus]
        row["peak_gib"] = sum(peaks)
        if len(peaks) > 1:
            row["peak_gib_per_gpu"] = peaks
    return row
