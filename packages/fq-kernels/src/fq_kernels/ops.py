"""The public ops, registered as `torch.library` custom ops (namespace `fq_kernels`).

Each op has a fake (meta) implementation, so it traces under torch.compile and FakeTensor mode, and
dispatches to its Triton kernel on CUDA (or on CPU under TRITON_INTERPRET=1) and to the PyTorch
reference otherwise (`fq_kernels._runtime.use_triton`). The reference defines the result; see
`fq_kernels.reference` for each op's exact contract and tolerances.

| op | inputs | outputs |
|---|---|---|
| `transform_quant` | x [..., K] float; left [n1, n1], right [n2, n2] (or None); clip [2] | values, scales |
| `transform_quant_asym` | as `transform_quant` | values, scales, zeros [...] |
| `w4a4_linear` | xq, sx [...]; wq, sw [N]; bias, zx, wsum or None; swiglu | out [..., N] (N/2: swiglu) |
| `quant_kv` | x [..., D] float; clip [2] | q uint8 [..., D/2], scale fp32, zero uint8 [..., D/G] |
| `dequant_kv` | q, scale, zero | x [..., D] |
| `rope_map` | x [B, T, heads, D]; cos, sin [B or 1, T, D]; head_map [D, D] or None | out [B, T, heads, D] |

Operand layouts of `w4a4_linear` (all hold the same int4 values):
- decode tiles, uint8 [N/16, K/64, 512] (`fq_kernels.layout`), xq int8 [M, K]: the layout
  `QuantLinear` keeps for every token count. Up to `TILES_DECODE_MAX_TOKENS` tokens the CUDA decode
  kernel reads them (`fq_kernels.cuda.decode_gemm`, where it runs), above that the Triton prompt
  GEMM (`fq_kernels.triton.gemm_tiles`), which makes 8-bit tensor-core operands of the same bytes
  on chip;
- packed rows, uint8 [N, K/2], xq int8 [M, K] or packed [M, K/2]: the Triton decode kernels (any
  token count; the slower path for shapes that do not split into whole tiles);
- one byte per weight, wq and xq both int8 [., K] or both float8_e4m3fn [., K]: an opt-in prefill
  copy (`fq_kernels.layout.prefill_weight`), twice the packed memory.
`transform_quant(..., out_format=)` writes the activation layout: "packed", "int8" or "fp8".

Asymmetric activations: `transform_quant_asym` stores codes and zero points shifted into the signed
int4 range (q - 8, zero - 8), so `w4a4_linear` runs the same main loops and its epilogue subtracts
zx[m] * wsum[n] (wsum: the weights' row sums, `fq_kernels.layout.weight_sums`), exactly for
K <= `fq_kernels.reference.ASYM_MAX_K` (see `fq_kernels.reference.gemm`).
"""

from __future__ import annotations

import torch

from fq_kernels import reference as ref
from fq_kernels._runtime import use_triton
from fq_kernels.reference.activation import OUT_FORMATS
from fq_kernels.reference.gemm import ASYM_MAX_K, gemm_k, gemm_n
from fq_kernels.strided import quant_kv_outputs

TILES_DECODE_MAX_TOKENS = 32
"""Token counts up to this run the CUDA decode kernel on decode tiles, more the Triton prompt GEMM
on the same tiles: at 32 tokens the decode kernel took 20.0 / 15.8 us (4096 x 11008 / 11008 x 4096)
on the H200 (docs/benchmarks/kernels.md); the prompt GEMM at 64 tokens 15-23 us on the H100."""
_FORMAT_DTYPES = {"packed": torch.uint8, "int8": torch.int8, "fp8": torch.float8_e4m3fn}
_GEMM_DTYPES = (torch.uint8, torch.int8, torch.float8_e4m3fn)
_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# ---------------------------------------------------------------------------------------------
# transform_quant


def _check_transform_args(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor,
    bits: int,
    out_format: str,
) -> None:
    if not x.is_floating_point():
        raise ValueError(f"transform_quant expects float activations, got {x.dtype}")
    if out_format not in OUT_FORMATS:
        raise ValueError(f"out_format must be one of {', '.join(OUT_FORMATS)}, got {out_format!r}")
    limit = {"packed": 4, "fp8": 5, "int8": 8}[out_format]
    if not 2 <= bits <= limit:
        raise ValueError(f"bits={bits} does not fit out_format={out_format!r} (2..{limit})")
    if out_format == "packed" and x.shape[-1] % 2:
        raise ValueError(f"packed int4 output needs an even K, got {x.shape[-1]}")
    if clip.numel() != 2:
        raise ValueError("clip must hold (clip_max, clip_min)")
    for name, f in (("left", left), ("right", right)):
        if f is not None and (f.dim() != 2 or f.shape[0] != f.shape[1]):
            raise ValueError(f"{name} must be a square matrix, got {tuple(f.shape)}")


def _transform_quant(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor,
    bits: int,
    out_format: str,
    symmetric: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Both ops' body: (values, scales, zero points or None when symmetric)."""
    _check_transform_args(x, left, right, clip, bits, out_format)
    if not use_triton(x):
        if symmetric:
            return (*ref.transform_quant_ref(x, left, right, clip, bits, out_format), None)
        return ref.transform_quant_asym_ref(x, left, right, clip, bits, out_format)
    from fq_kernels.cuda import transform_quant as cuda_transform_quant
    from fq_kernels.cuda.launch import mark_output
    from fq_kernels.triton.transform_quant import launch_transform_quant

    k, lead = x.shape[-1], x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    clip32 = clip.to(x.device, torch.float32)
    use_cuda = cuda_transform_quant.supports(x2, left, right, out_format)
    launch = cuda_transform_quant.launch if use_cuda else launch_transform_quant
    q, scale, zero = launch(x2, left, right, clip32, bits, out_format, symmetric=symmetric)
    if q.is_cuda:
        mark_output(q)  # both kernels signal their dependents: the decode GEMM may overlap them
    return q.reshape(*lead, q.shape[-1]), scale.reshape(lead), None if zero is None else zero.reshape(lead)


def _transform_quant_fake(x, left, right, clip, bits, out_format) -> tuple[torch.Tensor, torch.Tensor]:
    _check_transform_args(x, left, right, clip, bits, out_format)
    k = x.shape[-1]
    width = k // 2 if out_format == "packed" else k
    q = x.new_empty((*x.shape[:-1], width), dtype=_FORMAT_DTYPES[out_format])
    return q, x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("fq_kernels::transform_quant", mutates_args=())
def _transform_quant_op(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor,
    bits: int,
    out_format: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, scale, _ = _transform_quant(x, left, right, clip, bits, out_format, symmetric=True)
    return q, scale


@_transform_quant_op.register_fake
def _(x, left, right, clip, bits, out_format):
    return _transform_quant_fake(x, left, right, clip, bits, out_format)


@torch.library.custom_op("fq_kernels::transform_quant_asym", mutates_args=())
def _transform_quant_asym_op(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor,
    bits: int,
    out_format: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _transform_quant(x, left, right, clip, bits, out_format, symmetric=False)


@_transform_quant_asym_op.register_fake
def _(x, left, right, clip, bits, out_format):
    q, scale = _transform_quant_fake(x, left, right, clip, bits, out_format)
    return q, scale, torch.empty_like(scale)


def _clip_arg(clip: torch.Tensor | float | tuple[float, float], device: torch.device) -> torch.Tensor:
    """The clipping pair as the ops take it: float32 [2] (a tensor already so shaped passes as is)."""
    if isinstance(clip, torch.Tensor) and clip.numel() == 2 and clip.dtype == torch.float32:
        return clip
    return ref.clip_pair(clip, device)


def transform_quant(
    x: torch.Tensor,
    left: torch.Tensor | None = None,
    right: torch.Tensor | None = None,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
    out_format: str = "packed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online transform + per-token symmetric quantisation of x [..., K], in one kernel.

    Variants by the factors given: `left` and `right` (Kronecker: x @ kron(left, right)), `left`
    alone (o_proj's heads factor: x viewed [heads, head_dim] -> leftᵀ X), neither (the transform is
    merged into the weights; plain per-token quantisation). `clip` is the activation clipping pair
    (clip_max, clip_min) of the site, or one factor for both; pass a float32 tensor [2] on x's device
    to keep the op free of host-to-device copies (CUDA graphs). Likewise pass contiguous float32
    factors on x's device (as `QuantLinear` holds them): others are copied on every call, and a copy
    kernel costs about what the one-token kernel does (QR's column-major Q is such a factor).
    Returns (values, scales): values packed [..., K/2] uint8, int8 [..., K] or float8 e4m3 [..., K]
    as `out_format` says, and float32 scales [...] (NaN for a token with non-finite values).
    """
    return torch.ops.fq_kernels.transform_quant(x, left, right, _clip_arg(clip, x.device), bits, out_format)


def transform_quant_asym(
    x: torch.Tensor,
    left: torch.Tensor | None = None,
    right: torch.Tensor | None = None,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
    out_format: str = "packed",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`transform_quant` with fq-core's asymmetric per-token quantiser (codes 0..2^b-1, a zero point).

    Returns (values, scales, zeros): codes and zero points minus 2^(b-1), i.e. in the symmetric
    path's signed range and storage, with x ~= (values - zeros) * scales; zeros float32 [...] (0 for
    a token with non-finite values). Feed values, scales and zeros to `w4a4_linear` (`zx=`).
    """
    clip = _clip_arg(clip, x.device)
    return torch.ops.fq_kernels.transform_quant_asym(x, left, right, clip, bits, out_format)


def quantize_act(
    x: torch.Tensor,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
    out_format: str = "packed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`transform_quant` without a transform (inputs whose transform is merged into the weights)."""
    return transform_quant(x, None, None, clip, bits, out_format)


def transform_quant_heads(
    x: torch.Tensor,
    heads: torch.Tensor,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
    out_format: str = "packed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """o_proj's input: x [..., heads * head_dim] viewed [heads, head_dim] -> headsᵀ X, quantised."""
    return transform_quant(x, heads, None, clip, bits, out_format)


# ---------------------------------------------------------------------------------------------
# w4a4_linear


def _check_gemm_args(xq, sx, wq, sw, bias, out_dtype, zx, wsum, swiglu=False) -> int:
    tiled = wq.dim() == 3 and wq.dtype == torch.uint8 and wq.shape[-1] == 512
    if wq.dim() != 2 and not tiled:
        raise ValueError(
            "wq must be [N, K/2] packed, [N/16, K/64, 512] decode tiles or [N, K], "
            f"got shape {tuple(wq.shape)}"
        )
    if tiled and xq.dtype != torch.int8:
        raise ValueError(f"decode tiles take int8 activations (out_format='int8'), got {xq.dtype}")
    if xq.dtype not in _GEMM_DTYPES or wq.dtype not in _GEMM_DTYPES:
        raise ValueError(
            f"operands must be uint8 (packed int4), int8 or float8_e4m3fn, got {xq.dtype}, {wq.dtype}"
        )
    k = gemm_k(wq)
    kx = xq.shape[-1] * 2 if xq.dtype == torch.uint8 else xq.shape[-1]
    if kx != k:
        raise ValueError(f"xq holds K = {kx} values per row but wq holds K = {k}")
    if wq.dtype != torch.uint8 and xq.dtype != wq.dtype:
        raise ValueError(
            f"int8/fp8 weights need activations of the same dtype, got {xq.dtype} and {wq.dtype}"
        )
    if wq.dtype == torch.uint8 and xq.dtype == torch.float8_e4m3fn:
        raise ValueError("packed weights take int8 or packed activations, not fp8")
    if sx.shape != xq.shape[:-1]:
        raise ValueError(f"sx must have shape {tuple(xq.shape[:-1])}, got {tuple(sx.shape)}")
    n = gemm_n(wq)
    if sw.numel() != n:
        raise ValueError(f"sw must hold one scale per output channel ({n}), got {sw.numel()}")
    if bias is not None and bias.numel() != n:
        raise ValueError(f"bias must hold {n} values, got {bias.numel()}")
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    if swiglu and n % 2:
        raise ValueError(f"swiglu splits the rows into gate and up halves: N must be even, got {n}")
    if (zx is None) != (wsum is None):
        raise ValueError("asymmetric activations need both zx (their zero points) and wsum (weight row sums)")
    if zx is not None:
        if zx.shape != sx.shape:
            raise ValueError(f"zx must have shape {tuple(sx.shape)}, got {tuple(zx.shape)}")
        if wsum.numel() != n:
            raise ValueError(f"wsum must hold one sum per output channel ({n}), got {wsum.numel()}")
        if k > ASYM_MAX_K:
            raise ValueError(f"the asymmetric epilogue is exact up to K = {ASYM_MAX_K}, got K = {k}")
    return k


@torch.library.custom_op("fq_kernels::w4a4_linear", mutates_args=())
def _w4a4_linear_op(
    xq: torch.Tensor,
    sx: torch.Tensor,
    wq: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    _check_gemm_args(xq, sx, wq, sw, bias, out_dtype, zx, wsum, swiglu)
    if not _use_kernel(xq, wq):
        return ref.w4a4_linear_ref(xq, sx, wq, sw, bias, out_dtype, zx, wsum, swiglu)
    lead = xq.shape[:-1]
    a = xq.reshape(-1, xq.shape[-1])
    if a.stride(-1) != 1:
        a = a.contiguous()
    b = wq if wq.stride(-1) == 1 and (wq.dim() == 2 or wq.is_contiguous()) else wq.contiguous()
    sx32, sw32, bias32, zx32, wsum32 = (_f32_vector(t) for t in (sx, sw, bias, zx, wsum))
    n = gemm_n(b)
    # The prompt kernels apply SwiGLU in their epilogue; the decode kernels' output gets it after.
    fused = swiglu and fuses_swiglu(b, a.shape[0])
    out = torch.empty((a.shape[0], n // 2 if fused else n), dtype=out_dtype, device=xq.device)
    _gemm(a, b, sx32, sw32, bias32, out, False, zx32, wsum32, fused)
    if swiglu and not fused:
        out = ref.swiglu_halves(out)
    return out.reshape(*lead, out.shape[-1])


def _use_kernel(xq: torch.Tensor, wq: torch.Tensor) -> bool:
    """A kernel (else the reference), as `use_triton` says."""
    return use_triton(xq)


def _tiles_decode(tokens: int, device: torch.device) -> bool:
    """Whether decode tiles at this token count go to the CUDA decode kernel (else the Triton GEMM)."""
    if tokens > TILES_DECODE_MAX_TOKENS or device.type != "cuda":
        return False
    from fq_kernels.cuda import decode_gemm

    return decode_gemm.available(device)


def fuses_swiglu(wq: torch.Tensor, tokens: int) -> bool:
    """Whether `w4a4_linear(..., swiglu=True)` on this weight operand at this token count applies
    SwiGLU in the GEMM's epilogue (the prompt kernels), rather than as a pass after it."""
    if wq.dim() == 3:
        from fq_kernels.triton.gemm_tiles import fused_swiglu_ok

        return not _tiles_decode(tokens, wq.device) and fused_swiglu_ok(gemm_n(wq))
    return wq.dtype != torch.uint8


def _f32_vector(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.reshape(-1).to(torch.float32).contiguous()


def _gemm(a, b, sx, sw, bias, out, raw: bool, zx=None, wsum=None, swiglu: bool = False) -> torch.Tensor:
    if b.dim() == 3:
        if _tiles_decode(a.shape[0], a.device):
            from fq_kernels.cuda import decode_gemm

            return decode_gemm.launch_tuned(a, b, sx, sw, bias, out, raw, zx, wsum)
        from fq_kernels.triton import gemm_tiles

        return gemm_tiles.launch_tuned(a, b, sx, sw, bias, out, raw, zx, wsum, swiglu)
    if b.dtype == torch.uint8:
        from fq_kernels.triton import gemm_packed

        return gemm_packed.launch_tuned(a, b, sx, sw, bias, out, raw, zx, wsum)
    from fq_kernels.triton import gemm_prefill

    return gemm_prefill.launch_tuned(a, b, sx, sw, bias, out, raw, zx, wsum, swiglu)


@_w4a4_linear_op.register_fake
def _(xq, sx, wq, sw, bias, out_dtype, zx=None, wsum=None, swiglu=False):
    _check_gemm_args(xq, sx, wq, sw, bias, out_dtype, zx, wsum, swiglu)
    n = gemm_n(wq)
    return xq.new_empty((*xq.shape[:-1], n // 2 if swiglu else n), dtype=out_dtype)


def w4a4_linear(
    xq: torch.Tensor,
    sx: torch.Tensor,
    wq: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """out = (xq @ wqᵀ as an exact integer sum) * sx[token] * sw[channel] (+ bias), as out_dtype.

    Layouts: see this module's docstring (packed weights pick the decode kernel, int8/fp8 weights
    the tensor-core prefill kernel). A token whose scale is NaN (non-finite input) gives a NaN row.
    Asymmetric activations (`transform_quant_asym`): zx [...] their zero points, wsum [N] the
    weights' row sums (`fq_kernels.layout.weight_sums`); out = (acc - zx * wsum) * sx * sw (+ bias).
    swiglu: wq's rows are a gate projection's then an up projection's (N/2 each) and the result is
    silu(gate) * up [..., N/2]: the prefill kernel does it in its epilogue, so a gated MLP's
    intermediate is written once, at half the width.
    """
    return torch.ops.fq_kernels.w4a4_linear(xq, sx, wq, sw, bias, out_dtype, zx, wsum, swiglu)


def w4a4_matmul_int(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """The integer core of `w4a4_linear`: int32 accumulators [M, N], no epilogue (exactness checks)."""
    if not _use_kernel(xq, wq):
        return ref.int_matmul_ref(xq, wq)
    n = gemm_n(wq)
    dummy = torch.ones(max(xq.shape[0], n), dtype=torch.float32, device=xq.device)
    a = xq.reshape(-1, xq.shape[-1]).contiguous()
    out = torch.empty((a.shape[0], n), dtype=torch.int32, device=xq.device)
    return _gemm(a, wq.contiguous(), dummy, dummy, None, out, raw=True)


# ---------------------------------------------------------------------------------------------
# KV cache


def _check_kv(x_last: int, group_size: int) -> None:
    if group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be even and >= 2, got {group_size}")
    if x_last % group_size:
        raise ValueError(f"last dim {x_last} is not a multiple of group_size {group_size}")


@torch.library.custom_op("fq_kernels::quant_kv", mutates_args=())
def _quant_kv_op(
    x: torch.Tensor, clip: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_kv(x.shape[-1], group_size)
    if use_triton(x):
        from fq_kernels.triton.kv import launch_quant_kv

        return launch_quant_kv(x, group_size, clip.to(x.device, torch.float32))
    # the kernel's output layout (x's memory order), which the fake implementation promises
    outputs = quant_kv_outputs(x, group_size)
    for out, value in zip(outputs, ref.quant_kv_ref(x, group_size, clip), strict=True):
        out.copy_(value)
    return outputs


@_quant_kv_op.register_fake
def _(x, clip, group_size):
    _check_kv(x.shape[-1], group_size)
    return quant_kv_outputs(x, group_size)


def quant_kv(
    x: torch.Tensor, group_size: int = 128, clip: torch.Tensor | float | tuple[float, float] = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 KV-cache quantisation per group of the last dim (fq-core's quantiser).

    Returns (q packed uint8 [..., D/2], scale float32 [..., D/G], zero uint8 [..., D/G]) laid out in
    x's memory order (a transposed x gives transposed outputs; `fq_kernels.strided`); `clip` is the
    cache site's (clip_max, clip_min).
    """
    return torch.ops.fq_kernels.quant_kv(x, _clip_arg(clip, x.device), group_size)


def _check_kv_into(x, group_size, codes, scales, zeros, positions) -> None:
    _check_kv(x.shape[-1], group_size)
    b, h, t, d = x.shape
    if x.stride(-1) != 1:
        raise ValueError(f"x's last dim must be contiguous, got strides {x.stride()}")
    groups = d // group_size
    widths = {"codes": (codes, d // 2), "scales": (scales, groups), "zeros": (zeros, groups)}
    for name, (cache, width) in widths.items():
        if cache.dim() != 4 or cache.shape[0] < b or cache.shape[1] != h or cache.shape[3] != width:
            raise ValueError(
                f"{name} must be a cache [>= {b}, {h}, positions, {width}] for x {tuple(x.shape)}, "
                f"got {tuple(cache.shape)}"
            )
    if positions.shape != (t,):
        raise ValueError(f"positions must hold one position per token ({t}), got {tuple(positions.shape)}")


@torch.library.custom_op("fq_kernels::quant_kv_into", mutates_args=("codes", "scales", "zeros"))
def _quant_kv_into_op(
    x: torch.Tensor,
    clip: torch.Tensor,
    group_size: int,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    positions: torch.Tensor,
) -> None:
    _check_kv_into(x, group_size, codes, scales, zeros, positions)
    if use_triton(x):
        from fq_kernels.triton.kv import launch_quant_kv_into

        clip = clip.to(x.device, torch.float32)
        launch_quant_kv_into(x, group_size, clip, (codes, scales, zeros), positions)
        return
    b = x.shape[0]
    for cache, value in zip((codes, scales, zeros), ref.quant_kv_ref(x, group_size, clip), strict=True):
        cache[:b].index_copy_(2, positions, value)


@_quant_kv_into_op.register_fake
def _(x, clip, group_size, codes, scales, zeros, positions):
    _check_kv_into(x, group_size, codes, scales, zeros, positions)


def quant_kv_into(
    x: torch.Tensor,
    cache: ref.QuantizedKV,
    positions: torch.Tensor,
    group_size: int = 128,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
) -> None:
    """`quant_kv` of x [B, H, T, D] written straight into a cache (codes [max_B, H, L, D/2], scales
    and zeros [max_B, H, L, D/G], `quant_kv`'s layout per position) at positions [T] (int64, on the
    device: a CUDA graph replays it for new positions) of its first B sequences. One kernel in place
    of the quantisation and three indexed copies."""
    torch.ops.fq_kernels.quant_kv_into(x, _clip_arg(clip, x.device), group_size, *cache, positions)


@torch.library.custom_op("fq_kernels::dequant_kv", mutates_args=())
def _dequant_kv_op(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, out_dtype: torch.dtype
) -> torch.Tensor:
    _check_kv(q.shape[-1] * 2, group_size)
    if use_triton(q):
        from fq_kernels.triton.kv import launch_dequant_kv

        return launch_dequant_kv(q, scale, zero, group_size, out_dtype)
    return ref.dequant_kv_ref(q, scale, zero, group_size, out_dtype)


@_dequant_kv_op.register_fake
def _(q, scale, zero, group_size, out_dtype):
    _check_kv(q.shape[-1] * 2, group_size)
    return q.new_empty((*q.shape[:-1], q.shape[-1] * 2), dtype=out_dtype)


def dequant_kv(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int = 128,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """x [..., D] = (q - zero) * scale, the inverse of `quant_kv`'s layout."""
    return torch.ops.fq_kernels.dequant_kv(q, scale, zero, group_size, out_dtype)


# ---------------------------------------------------------------------------------------------
# kv_attention


def _check_kv_attention(
    q: torch.Tensor, key_codes: torch.Tensor, lengths: torch.Tensor, group_size: int
) -> None:
    if q.dim() != 3 or key_codes.dim() != 4:
        raise ValueError(
            f"kv_attention takes q [B, Hq, D] and caches [B, Hkv, S, D/2], got {tuple(q.shape)} and "
            f"{tuple(key_codes.shape)}"
        )
    b, hq, d = q.shape
    if key_codes.shape[0] != b or key_codes.shape[-1] * 2 != d or hq % key_codes.shape[1]:
        raise ValueError(
            f"caches {tuple(key_codes.shape)} do not fit q {tuple(q.shape)}: batch and head_dim must "
            "agree and query heads be a multiple of kv heads"
        )
    _check_kv(d, group_size)
    if lengths.shape != (b,):
        raise ValueError(f"lengths must be [B] = [{b}], got {tuple(lengths.shape)}")


def _power_of_two(n: int) -> bool:
    """The kernel's tiles need it of head_dim and of groups per head (true of every supported family;
    the tiny test models' head_dim 12 takes the reference)."""
    return n & (n - 1) == 0


@torch.library.custom_op("fq_kernels::kv_attention", mutates_args=())
def _kv_attention_op(
    q: torch.Tensor,
    key_codes: torch.Tensor,
    key_scales: torch.Tensor,
    key_zeros: torch.Tensor,
    value_codes: torch.Tensor,
    value_scales: torch.Tensor,
    value_zeros: torch.Tensor,
    lengths: torch.Tensor,
    group_size: int,
    scaling: float,
) -> torch.Tensor:
    _check_kv_attention(q, key_codes, lengths, group_size)
    keys, values = (key_codes, key_scales, key_zeros), (value_codes, value_scales, value_zeros)
    if use_triton(q) and _power_of_two(q.shape[-1]) and _power_of_two(q.shape[-1] // group_size):
        from fq_kernels.triton.kv_attention import launch_kv_attention

        return launch_kv_attention(q, keys, values, lengths, group_size, scaling)
    return ref.kv_attention_ref(q, keys, values, lengths, group_size, scaling)


@_kv_attention_op.register_fake
def _(
    q, key_codes, key_scales, key_zeros, value_codes, value_scales, value_zeros, lengths, group_size, scaling
):
    _check_kv_attention(q, key_codes, lengths, group_size)
    return torch.empty_like(q)


def kv_attention(
    q: torch.Tensor,
    keys: ref.QuantizedKV,
    values: ref.QuantizedKV,
    lengths: torch.Tensor,
    group_size: int = 128,
    scaling: float = 1.0,
) -> torch.Tensor:
    """Decode attention over an int4 KV cache without dequantising it to memory: out [B, Hq, D].

    q [B, Hq, D] (one token per sequence; `scaling` multiplies q·k, as in attention);
    keys / values: `quant_kv`'s (codes, scale, zero) laid out [B, Hkv, S, ...]; lengths [B] int:
    how many cached positions each sequence attends to (read on the device, so a CUDA graph
    replays for any length). Contract: `reference.kv_attention_ref`.
    """
    return torch.ops.fq_kernels.kv_attention(q, *keys, *values, lengths, group_size, float(scaling))


# ---------------------------------------------------------------------------------------------
# RoPE + the key / query map


def _check_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_map: torch.Tensor | None) -> None:
    if x.dim() != 4 or x.shape[-1] % 2 or x.stride(-1) != 1:
        raise ValueError(
            f"x must be [B, T, heads, D] with an even, contiguous last dim, got {tuple(x.shape)} "
            f"strides {x.stride()}"
        )
    b, t, _, d = x.shape
    for name, c in (("cos", cos), ("sin", sin)):
        if c.dim() != 3 or c.shape[0] not in (1, b) or tuple(c.shape[1:]) != (t, d):
            raise ValueError(f"{name} must be [{b} or 1, {t}, {d}], got {tuple(c.shape)}")
    if head_map is not None and tuple(head_map.shape) != (d, d):
        raise ValueError(f"head_map must be [{d}, {d}], got {tuple(head_map.shape)}")


@torch.library.custom_op("fq_kernels::rope_map", mutates_args=())
def _rope_map_op(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_map: torch.Tensor | None
) -> torch.Tensor:
    _check_rope(x, cos, sin, head_map)
    if not use_triton(x):
        return ref.rope_map_ref(x, cos, sin, head_map)
    from fq_kernels.triton.rope import launch_rope_map

    b, t, _, d = x.shape
    cos, sin = (c.to(x.dtype).expand(b, t, d) for c in (cos, sin))
    if cos.stride() != sin.stride() or cos.stride(-1) != 1:
        cos, sin = cos.contiguous(), sin.contiguous()
    return launch_rope_map(x, cos, sin, head_map)


@_rope_map_op.register_fake
def _(x, cos, sin, head_map):
    _check_rope(x, cos, sin, head_map)
    return x.new_empty(x.shape)


def rope_map(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_map: torch.Tensor | None = None
) -> torch.Tensor:
    """RoPE of x [B, T, heads, D] (a view of the q|k|v projection: any token/head strides) with
    cos / sin [B or 1, T, D], then `@ head_map` [D, D] per head if given (the KV cache's key map,
    or the queries' inverse-transposed one): out [B, T, heads, D], contiguous. One kernel on the GPU;
    contract: `reference.rope_map_ref`."""
    return torch.ops.fq_kernels.rope_map(x, cos, sin, head_map)
