"""`QuantLinear`: a W4A4 linear layer read from a flatquant checkpoint, run by the fused kernels.

forward(x) = w4a4_linear(transform_quant(x)): the site's online transform and activation clipping,
per-token int4 activations, packed int4 weights with per-channel scales, exact integer products.

One weight layout in memory for every token count: the checkpoint's packed int4 weights, as decode
tiles [N/16, K/64, 512] where the shape splits into whole tiles (every LLaMA-family linear), else as
[N, K/2] rows (`fq_kernels.layout`). A few tokens (decode) run the CUDA decode kernel on the tiles;
a prompt runs the Triton GEMM that turns the same bytes into 8-bit tensor-core operands on chip
(`fq_kernels.triton.gemm_tiles`). Resident weights are therefore half a byte per weight plus one
float32 scale per output channel (and a row sum for asymmetric activations).

Opt-in: `prefill="int8"` or `"fp8"` adds a one-byte copy of the weights [N, K] for prompts (run by
the int8 Triton kernel or cuBLASLt's fp8 GEMM): 1.5 bytes per weight in all, three times the packed
size. It is never made unless asked for, and asking warns with its size. Rows that do not split
into tiles run the Triton decode kernels at every token count (the documented slower path).

A fused gate|up projection of a gated MLP can return silu(gate) * up instead (`layer(x, swiglu=True)`):
the prompt kernels compute each gate column beside its up column and apply the activation in
their epilogue, so the MLP's intermediate is written once, at half the width, with no extra pass.

Activations are quantised as the checkpoint says, symmetric or asymmetric per token; an asymmetric
layer keeps its weights' row sums (made at load) for the GEMM epilogue's zero-point term
(`fq_kernels.reference.gemm`).

Only fq-core (base install: torch + safetensors) and fq-kernels are needed: no transformers.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fq_core.checkpoint import Checkpoint, load_checkpoint
from fq_kernels import reference as ref
from fq_kernels.layout import (
    PREFILL_KINDS,
    activation_format,
    fits_decode_tiles,
    packed_weight,
    prefill_weight,
    tile_decode_weight,
    weight_sums,
)
from fq_kernels.ops import (
    TILES_DECODE_MAX_TOKENS,
    fuses_swiglu,
    transform_quant,
    transform_quant_asym,
    w4a4_linear,
)

DECODE_MAX_TOKENS = 16
"""With a prefill copy: token counts up to this use the Triton decode kernel on packed rows."""
TILES_MAX_TOKENS = TILES_DECODE_MAX_TOKENS
"""With a prefill copy: token counts up to this use the CUDA decode kernel on decode tiles."""
DECODE_LAYOUTS: tuple[str, ...] = ("tiles", "packed")
"""How the weights are stored: decode tiles, or the checkpoint's packed rows."""


class PrefillCopyWarning(UserWarning):
    """A QuantLinear was asked for a one-byte prefill copy of its weights (memory it costs)."""


SITE_OF: dict[str, str] = {
    "self_attn.q_proj": "attn_in",
    "self_attn.k_proj": "attn_in",
    "self_attn.v_proj": "attn_in",
    "self_attn.o_proj": "o_in",
    "mlp.gate_proj": "mlp_in",
    "mlp.up_proj": "mlp_in",
    "mlp.down_proj": "down_in",
}
"""The online site (docs/architecture.md) that feeds each linear of a decoder layer."""
_LINEAR_NAME = re.compile(r"^(layers\.\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$")


def site_for(name: str) -> str:
    """`layers.3.attn_in` for `layers.3.self_attn.q_proj`, and so on."""
    match = _LINEAR_NAME.match(name)
    if not match:
        raise ValueError(
            f"cannot infer the activation site of {name!r}: pass site='layers.{{i}}.attn_in' (or o_in, "
            "mlp_in, down_in), or site=None for no transform and no clipping"
        )
    return f"{match.group(1)}.{SITE_OF[match.group(2)]}"


class QuantLinear(nn.Module):
    """y = x Wᵀ (+ b) with W4A4 integer arithmetic; x [..., in_features] -> y [..., out_features].

    qweight: packed int4 [N, K/2] (uint8, fq-core nibble order); scale: [N] or [N, 1] per-channel
    weight scales; left/right: the online Kronecker factors (left alone: o_proj's heads factor);
    clip: the activation clipping pair (clip_max, clip_min); act_symmetric: False quantises the
    activations asymmetrically (fq-core's QuantSpec(4, False, "token")); prefill: None (the packed
    weights for every token count), or "int8" / "fp8" for an opt-in one-byte copy for prompts
    (module docstring); decode: "tiles", "packed" or "auto" (tiles where the shape splits into whole
    tiles). The `qweight` buffer holds that layout; `packed_qweight()` gives [N, K/2].
    decode_max_tokens: with a prefill copy, the most tokens the packed weights take; None picks by
    the layout (TILES_MAX_TOKENS for tiles, DECODE_MAX_TOKENS for packed rows).
    """

    def __init__(
        self,
        qweight: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        left: torch.Tensor | None = None,
        right: torch.Tensor | None = None,
        clip: torch.Tensor | float | tuple[float, float] = 1.0,
        act_symmetric: bool = True,
        prefill: str | None = None,
        decode: str = "auto",
        decode_max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if qweight.dtype != torch.uint8 or qweight.dim() != 2:
            raise ValueError(
                f"qweight must be packed int4 uint8 [N, K/2], got {qweight.dtype} {tuple(qweight.shape)}"
            )
        n, kp = qweight.shape
        if scale.numel() != n:
            raise ValueError(
                f"scale must hold one value per output channel ({n}), got shape {tuple(scale.shape)}"
            )
        self.in_features, self.out_features = 2 * kp, n
        device = qweight.device
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("weight_scale", scale.reshape(n).to(device, torch.float32).contiguous())
        self.register_buffer("bias", None if bias is None else bias.reshape(n).to(device, torch.float32))
        self.register_buffer("left", None if left is None else left.to(device, torch.float32).contiguous())
        self.register_buffer("right", None if right is None else right.to(device, torch.float32).contiguous())
        self.register_buffer("clip", ref.clip_pair(clip, device))
        self.register_buffer("weight_sum", None if act_symmetric else weight_sums(self.qweight))
        self.register_buffer("prefill_weight", None)
        self.decode_max_tokens = decode_max_tokens
        self.prepare(prefill, decode)

    def prepare(self, prefill: str | None = None, decode: str = "auto") -> QuantLinear:
        """(Re)build the weight layouts, e.g. after moving the module to another device: the decode
        layout and an opt-in prefill copy (see the class docstring for the choices)."""
        if prefill is not None and prefill not in PREFILL_KINDS:
            raise ValueError(f"prefill must be None or one of {', '.join(PREFILL_KINDS)}, got {prefill!r}")
        if decode not in (*DECODE_LAYOUTS, "auto"):
            raise ValueError(f"decode must be one of {', '.join(DECODE_LAYOUTS)} or 'auto', got {decode!r}")
        fits = fits_decode_tiles(self.out_features, self.in_features)
        if decode == "auto":
            decode = "tiles" if fits else "packed"
        if decode == "tiles" and not fits:
            raise ValueError(
                f"decode tiles need out_features % 16 == 0 and in_features % 64 == 0, "
                f"got {self.out_features} x {self.in_features}: use decode='packed'"
            )
        packed = packed_weight(self.qweight)
        if decode == "packed":
            self.qweight = packed
        elif self.qweight.dim() == 2:  # tile once; weights already tiled stay as they are
            self.qweight = tile_decode_weight(packed)
        self.prefill_weight = None if prefill is None else prefill_weight(packed, prefill)
        if prefill is not None:
            warnings.warn(
                f"QuantLinear {self.in_features}x{self.out_features}: the {prefill} prefill copy adds "
                f"{self.prefill_weight.nbytes / 2**20:.1f} MiB (1 byte per weight, on top of the packed 0.5)",
                PrefillCopyWarning,
                stacklevel=2,
            )
        return self

    def packed_qweight(self) -> torch.Tensor:
        """The weights as the checkpoint packs them, [N, K/2], whatever the decode layout."""
        return packed_weight(self.qweight)

    @property
    def transform(self) -> str:
        if self.left is not None and self.right is not None:
            return "kronecker"
        if self.left is not None:
            return "heads"
        return "right" if self.right is not None else "none"

    @property
    def act_symmetric(self) -> bool:
        return self.weight_sum is None

    def extra_repr(self) -> str:
        prefill = (
            None if self.prefill_weight is None else str(self.prefill_weight.dtype).replace("torch.", "")
        )
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, "
            f"transform={self.transform}, act={'sym' if self.act_symmetric else 'asym'}, "
            f"decode={'tiles' if self.qweight.dim() == 3 else 'packed'}, "
            f"prefill={prefill}, decode_max_tokens={self.decode_limit}"
        )

    @property
    def decode_limit(self) -> int:
        """Most tokens the decode kernel takes (`decode_max_tokens`, else by the decode layout)."""
        if self.decode_max_tokens is not None:
            return self.decode_max_tokens
        return TILES_MAX_TOKENS if self.qweight.dim() == 3 else DECODE_MAX_TOKENS

    def uses_decode_path(self, tokens: int) -> bool:
        """Whether `tokens` tokens run on the packed weights (always, unless there is a prefill copy)."""
        return self.prefill_weight is None or tokens <= self.decode_limit

    def fuses_swiglu(self, tokens: int) -> bool:
        """Whether `forward(x, swiglu=True)` at `tokens` tokens applies SwiGLU in the GEMM's epilogue
        (prompts), rather than as a pass after it (decode kernels)."""
        weight = self.qweight if self.uses_decode_path(tokens) else self.prefill_weight
        return fuses_swiglu(weight, tokens)

    def forward(self, x: torch.Tensor, swiglu: bool = False) -> torch.Tensor:
        """x [..., in_features] -> [..., out_features]; swiglu: the rows are a gate projection's then
        an up projection's, and the result is silu(gate) * up [..., out_features / 2] (in the prefill
        kernel's epilogue; after the GEMM in the decode path)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input features, got {x.shape[-1]}")
        tokens = x.numel() // self.in_features
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        weight = self.qweight if self.uses_decode_path(tokens) else self.prefill_weight
        fmt = activation_format(tokens, weight)
        if self.act_symmetric:
            (xq, sx), zx = transform_quant(x, self.left, self.right, self.clip, 4, fmt), None
        else:
            xq, sx, zx = transform_quant_asym(x, self.left, self.right, self.clip, 4, fmt)
        return w4a4_linear(
            xq, sx, weight, self.weight_scale, self.bias, out_dtype, zx, self.weight_sum, swiglu
        )

    def reference_forward(self, x: torch.Tensor, swiglu: bool = False) -> torch.Tensor:
        """The same layer through the pure-PyTorch references (transform in float64)."""
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        if self.act_symmetric:
            (xq, sx), zx = ref.transform_quant_ref(x, self.left, self.right, self.clip, 4, "int8"), None
        else:
            xq, sx, zx = ref.transform_quant_asym_ref(x, self.left, self.right, self.clip, 4, "int8")
        return ref.w4a4_linear_ref(
            xq, sx, self.qweight, self.weight_scale, self.bias, out_dtype, zx, self.weight_sum, swiglu
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Checkpoint | str | os.PathLike[str],
        names: str | Sequence[str],
        site: str | None = "auto",
        *,
        device: torch.device | str | None = None,
        prefill: str | None = None,
        decode: str = "auto",
        decode_max_tokens: int | None = None,
    ) -> QuantLinear:
        """Build from a checkpoint (a loaded `Checkpoint`, or its directory) and linear name(s).

        names: e.g. "layers.0.self_attn.q_proj"; several names (q, k, v) give one fused linear with
            their outputs concatenated in order (they must share the input and its site);
        site: "layers.0.attn_in" etc.; "auto" infers it from the name; None means no transform and
            no clipping. The site's transform is `left`/`right` (Kronecker), or `heads` (o_in).
        """
        if isinstance(checkpoint, (str, os.PathLike, Path)):
            checkpoint = load_checkpoint(checkpoint)
        config, tensors = checkpoint.config, checkpoint.tensors
        w, a = config.quant.weight, config.quant.act
        if not (w.bits == 4 and w.symmetric and w.granularity == "channel"):
            raise ValueError(
                f"QuantLinear needs 4-bit symmetric per-channel weights; this checkpoint has {w.to_dict()}"
            )
        if not (a.bits == 4 and a.granularity == "token" and a.dynamic):
            raise ValueError(
                "QuantLinear needs 4-bit dynamic per-token activations (symmetric or asymmetric); "
                f"this checkpoint has {a.to_dict()}"
            )
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("no linear name given")
        if site == "auto":
            sites = {site_for(name) for name in names}
            if len(sites) != 1:
                raise ValueError(f"{names} are fed by different sites {sorted(sites)}: they cannot be fused")
            site = sites.pop()
        target = torch.device(device) if device is not None else None

        def get(name: str) -> torch.Tensor:
            if name not in tensors:
                raise KeyError(f"checkpoint has no tensor {name!r}")
            t = tensors[name]
            return t if target is None else t.to(target)

        qweights = [get(f"{name}.qweight") for name in names]
        scales = [get(f"{name}.scale").reshape(-1) for name in names]
        in_sizes = {q.shape[1] for q in qweights}
        if len(in_sizes) != 1:
            raise ValueError(f"{names} have different input sizes and cannot be fused")
        has_bias = [f"{name}.bias" in tensors for name in names]
        bias = None
        if any(has_bias):
            bias = torch.cat(
                [
                    get(f"{name}.bias").float() if b else torch.zeros(q.shape[0], device=q.device)
                    for name, b, q in zip(names, has_bias, qweights, strict=True)
                ]
            )
        left = right = None
        clip: torch.Tensor | float = 1.0
        if site is not None:
            if f"{site}.left" in tensors:
                left, right = get(f"{site}.left"), get(f"{site}.right")
            elif f"{site}.heads" in tensors:
                left = get(f"{site}.heads")
            if f"{site}.clip_max" in tensors:
                clip = torch.cat([get(f"{site}.clip_max").reshape(1), get(f"{site}.clip_min").reshape(1)])
            elif not any(key.startswith(f"{site}.") for key in tensors):
                raise KeyError(f"checkpoint has no tensors for site {site!r}")
        return cls(
            torch.cat(qweights) if len(qweights) > 1 else qweights[0],
            torch.cat([s.float() for s in scales]),
            bias,
            left=left,
            right=right,
            clip=clip,
            act_symmetric=a.symmetric,
            prefill=prefill,
            decode=decode,
            decode_max_tokens=decode_max_tokens,
        )
