"""The FP8 (W8A8) baseline: what a Hopper user runs instead of 4-bit weights, in the same static loop.

`Fp8Linear` is FP8 as it is deployed today: e4m3 weights with one scale per output channel
(absmax / 448), activations quantised to e4m3 per token at run time (their absmax / 448), and one
cuBLASLt GEMM with row-wise scales into the activations' dtype (`torch._scaled_mm`, the kernel
torchao's and vLLM's per-row FP8 linears call on Hopper). The activation quantiser is one compiled
pass on CUDA, as the int4 model's elementwise work is. The KV cache stays 16-bit.

`quantize_fp8_(model)` turns a full-precision transformers model into that baseline in place, with
q|k|v and gate|up fused like the int4 model's (one activation quantisation per shared input), so
`StaticDecoder` runs FP16, FP8 and W4A4KV4 models through one code path.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from fq_core.adapters import get_adapter
from fq_kernels.runtime.attention import Int4Attention
from fq_kernels.runtime.elementwise import for_device
from fq_kernels.runtime.mlp import Int4MLP

FP8_MAX = 448.0
"""Largest finite float8_e4m3fn value: a row's absmax maps to it."""


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 values, float32 scales [rows, 1]) of x [rows, K], one scale per row (absmax / 448; an
    all-zero row gets scale 1)."""
    absmax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = torch.where(absmax > 0, absmax / FP8_MAX, torch.ones_like(absmax))
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def _library_gemm(device: torch.device) -> bool:
    """cuBLASLt's FP8 GEMM runs on CUDA GPUs with fp8 tensor cores (compute capability 8.9+)."""
    if device.type != "cuda":
        return False
    return _fp8_tensor_cores(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _fp8_tensor_cores(index: int) -> bool:
    """Asked once per device, not once per linear call."""
    return torch.cuda.get_device_capability(index) >= (8, 9)


class Fp8Linear(nn.Module):
    """y = x Wᵀ (+ b) with per-channel e4m3 weights and per-token dynamic e4m3 activations."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        values, scale = quantize_rows(weight.detach())
        self.register_buffer("weight", values)
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._quantize = for_device(quantize_rows, weight.device)

    @classmethod
    def fused(cls, linears: list[nn.Linear]) -> Fp8Linear:
        """One FP8 linear computing `linears` side by side (their outputs concatenated)."""
        weight = torch.cat([linear.weight.detach() for linear in linears])
        biases = [linear.bias for linear in linears]
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat(
                [
                    b.detach() if b is not None else weight.new_zeros(linear.out_features)
                    for b, linear in zip(biases, linears, strict=True)
                ]
            )
        return cls(weight, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xq, sx = self._quantize(x.reshape(-1, self.in_features))
        if _library_gemm(x.device) and xq.shape[0] > 0:
            y = torch._scaled_mm(
                xq, self.weight.t(), sx, self.weight_scale, bias=self.bias, out_dtype=x.dtype
            )
        else:  # CPU: the same quantised values, dequantised (the reference of the GEMM above)
            w = self.weight.float() * self.weight_scale.reshape(-1, 1)
            y = torch.nn.functional.linear(
                xq.float() * sx, w, None if self.bias is None else self.bias.float()
            )
            y = y.to(x.dtype)
        return y.reshape(*lead, self.out_features)


def quantize_fp8_(model: nn.Module) -> nn.Module:
    """Replace the decoder layers' attention and MLP of a full-precision model by the int4 model's
    structure over `Fp8Linear`s (fused q|k|v and gate|up, 16-bit KV cache); in place, returns it."""
    adapter = get_adapter(model)
    names = adapter.names
    for layer in adapter.decoder_layers(model):
        attention, mlp = getattr(layer, names.attention), getattr(layer, names.mlp)
        qkv = Fp8Linear.fused([getattr(attention, name) for name in (names.q, names.k, names.v)])
        o_proj = getattr(attention, names.o)
        setattr(
            layer,
            names.attention,
            Int4Attention(attention, adapter, qkv, Fp8Linear(o_proj.weight, o_proj.bias), None, None),
        )
        gate_up = Fp8Linear.fused([getattr(mlp, names.gate), getattr(mlp, names.up)])
        down = getattr(mlp, names.down)
        setattr(layer, names.mlp, Int4MLP(mlp.act_fn, gate_up, Fp8Linear(down.weight, down.bias)))
    return model
