"""Sweep kernel configurations on the GPU and check what the heuristics in fq_kernels.triton pick.

    TRITON_CACHE_DIR=/tmp/tcache python packages/fq-kernels/benchmarks/tune_kernels.py --out DIR

Sections (each appends JSON lines to DIR/tune.jsonl and prints a short table):
  exact    fp8 accumulation exactness on adversarial int4 data (int8 is exact by construction)
  prefill  int8 tensor-core GEMM configs and the library fp8 GEMM at prefill shapes, with cuBLAS rates
  swiglu   a gated MLP's gate|up GEMM (int8, asymmetric activations) plain and with SwiGLU in its epilogue
  tiles    the GEMM on the packed int4 tiles (prompts) over a grid of tiles, at 64..2048 tokens,
           plain and as a gate|up GEMM with SwiGLU
  decode   packed-weight GEMM configs at M = 1 and 16 (rotating weights: no L2 hits), bf16 GEMV
  tq       transform_quant (dot precision, pipelining) at M = 16 and 2048
  kv       kv_attention (int4 cache) block size / warps / stages / programs per SM at decode shapes
  rope     rope_map (RoPE + the key / query map) tokens per program and warps at a 2048-token prompt
  asm      which compiled kernels use wgmma / mma (from the Triton cache's PTX)
Kernels compile in parallel worker processes first (they share the Triton cache), then the main
process times every case with CUDA-graph replays.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

BENCH_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (4096, 14336), (14336, 4096)]
PREFILL_SHAPES = [(m, k, n) for m in (128, 2048, 8192) for k, n in BENCH_SHAPES]
TILES_SHAPES = [(m, k, n) for m in (64, 256, 512, 2048) for k, n in BENCH_SHAPES]
DECODE_SHAPES = [(m, k, n) for m in (1, 16) for k, n in BENCH_SHAPES]
TQ_SHAPES = [(m, k) for m in (1, 16, 128, 2048, 8192) for k in (4096, 11008, 14336)]
SWIGLU_SHAPES = [(2048, 4096, 2 * 11008), (2048, 4096, 2 * 14336)]
"""A 2048-token prompt through LLaMA-2-7B's / LLaMA-3-8B's gate|up projection (N = gate + up rows)."""
KV_SHAPES = [(b, hq, hkv, 2304, 128) for b in (1, 16, 64) for hq, hkv in ((32, 32), (32, 8))]
"""(batch, query heads, kv heads, cached positions, head_dim): LLaMA-2-7B / LLaMA-3-8B after a
2048-token prompt and 256 new tokens."""
ROPE_SHAPES = [(2048, heads, 128, mapped) for heads in (32, 8) for mapped in (True, False)]
"""(tokens, heads, head_dim, with the head map): a 2048-token prompt's q (32 heads) and LLaMA-3's k (8)."""


def cases():
    """Every candidate configuration of the kernels at the benchmark's shapes."""
    from fq_core.transforms.kronecker import kron_factors
    from fq_kernels._runtime import next_pow2
    from fq_kernels.triton import gemm_packed, gemm_prefill, kv_attention, rope
    from fq_kernels.triton import transform_quant as tqm

    out = []
    library_fp8 = asdict(gemm_prefill.PrefillConfig(schedule="scaled_mm"))  # the Triton fp8 ones: slower
    for m, k, n in PREFILL_SHAPES:
        for cfg in gemm_prefill.candidates(m, n, k, False):
            out.append({"section": "prefill", "m": m, "k": k, "n": n, "kind": "int8", "cfg": asdict(cfg)})
        out.append({"section": "prefill", "m": m, "k": k, "n": n, "kind": "fp8", "cfg": library_fp8})
    for m, k, n in TILES_SHAPES:
        for cfg in tiles_grid(m):
            out.append({"section": "tiles", "m": m, "k": k, "n": n, "swiglu": False, "cfg": asdict(cfg)})
    for m, k, n in SWIGLU_SHAPES:
        for cfg in tiles_grid(m, swiglu=True):
            out.append({"section": "tiles", "m": m, "k": k, "n": n, "swiglu": True, "cfg": asdict(cfg)})
    for m, k, n in SWIGLU_SHAPES:
        for cfg in gemm_prefill.candidates(m, n, k, False):
            for swiglu in (False, True):
                case = {"section": "swiglu", "m": m, "k": k, "n": n, "swiglu": swiglu}
                out.append({**case, "cfg": asdict(cfg)})
    for m, k, n in DECODE_SHAPES:
        for cfg in gemm_packed.candidates(m, n, k // 2):
            out.append({"section": "decode", "m": m, "k": k, "n": n, "cfg": asdict(cfg)})
    for m, k in TQ_SHAPES:
        n1, n2 = kron_factors(k)
        fmt = "packed" if m <= 16 else "int8"
        for cfg in tqm.candidates(next_pow2(n1), next_pow2(n2)):
            out.append({"section": "tq", "m": m, "k": k, "dot": "bf16", "fmt": fmt, "cfg": asdict(cfg)})
    for b, hq, hkv, s, d in KV_SHAPES:
        for cfg in kv_attention.candidates(hq // hkv):
            out.append({"section": "kv", "b": b, "hq": hq, "hkv": hkv, "s": s, "d": d, "cfg": asdict(cfg)})
    for t, h, d, mapped in ROPE_SHAPES:
        for cfg in rope.candidates(t, mapped):
            out.append({"section": "rope", "t": t, "h": h, "d": d, "mapped": mapped, "cfg": asdict(cfg)})
    return out


def tiles_grid(m: int, swiglu: bool = False):
    """The packed-tiles GEMM's configurations worth timing at m tokens: the shipped candidates and
    a grid around them (4 warps: one warpgroup over 2 x block_p weight rows; 8 warps: two)."""
    from fq_kernels.triton.gemm_tiles import TilesConfig, candidates

    grid = list(candidates(m, 4096, 4096, swiglu))
    block_ms = [bm for bm in (16, 32, 64, 128) if bm <= max(16, m) and not (swiglu and bm > 64)]
    for bm in block_ms[-3:]:
        for bp in (32, 64):
            for bk in (128, 256):
                for stages in (3, 4):
                    grid.append(TilesConfig(bm, bp, bk, 8, 4, stages))
    for bm in block_ms[-2:]:
        for bk in (64, 128):
            grid.append(TilesConfig(bm, 128, bk, 8, 8, 3 if bk == 128 else 4))
    return list(dict.fromkeys(grid))


# ---------------------------------------------------------------------------------------------


_INPUTS: dict = {}


def _inputs(m, k, n, copies=1):
    key = (m, k, n, copies)
    if key not in _INPUTS:
        from fq_core.quant.pack import pack_int4
        from fq_kernels.layout import tile_decode_weight

        g = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randint(-8, 8, (m, k), device="cuda", dtype=torch.int8, generator=g)
        w = [
            torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8, generator=g) for _ in range(copies)
        ]
        _INPUTS[key] = {
            "a8": a,
            "af8": a.to(torch.float8_e4m3fn),
            "w8": w,
            "wf8": [t.to(torch.float8_e4m3fn) for t in w],
            "wp": [pack_int4(t) for t in w],
            "wt": [tile_decode_weight(pack_int4(t)) for t in w] if n % 16 == 0 and k % 64 == 0 else None,
            "ap": pack_int4(a),
            "sx": torch.rand(m, device="cuda") + 0.5,
            "sw": torch.rand(n, device="cuda") * 0.01,
            "out": torch.empty(m, n, device="cuda", dtype=torch.bfloat16),
        }
    return _INPUTS[key]


def make_call(case, copies=1):
    from fq_kernels.triton import gemm_packed, gemm_prefill
    from fq_kernels.triton.transform_quant import launch_transform_quant

    if case["section"] == "prefill":
        cfg = gemm_prefill.PrefillConfig(**case["cfg"])
        t = _inputs(case["m"], case["k"], case["n"], copies)
        a = t["a8"] if case["kind"] == "int8" else t["af8"]
        ws = t["w8"] if case["kind"] == "int8" else t["wf8"]
        return lambda i: lambda: gemm_prefill.launch_prefill(a, ws[i], t["sx"], t["sw"], None, t["out"], cfg)
    if case["section"] == "swiglu":
        cfg = gemm_prefill.PrefillConfig(**case["cfg"])
        m, k, n, swiglu = case["m"], case["k"], case["n"], case["swiglu"]
        t = _inputs(m, k, n, copies)
        zx = torch.randint(-8, 8, (m,), device="cuda").float()
        wsum = t["w8"][0].sum(1, dtype=torch.int32).float()
        out = torch.empty(m, n // 2 if swiglu else n, device="cuda", dtype=torch.bfloat16)
        return lambda i: (
            lambda: gemm_prefill.launch_prefill(
                t["a8"], t["w8"][i], t["sx"], t["sw"], None, out, cfg, zx=zx, wsum=wsum, swiglu=swiglu
            )
        )
    if case["section"] == "tiles":
        from fq_kernels.triton.gemm_tiles import TilesConfig, launch_tiles

        cfg = TilesConfig(**case["cfg"])
        m, k, n, swiglu = case["m"], case["k"], case["n"], case["swiglu"]
        t = _inputs(m, k, n, copies)
        out = torch.empty(m, n // 2 if swiglu else n, device="cuda", dtype=torch.bfloat16)
        return lambda i: (
            lambda: launch_tiles(t["a8"], t["wt"][i], t["sx"], t["sw"], None, out, cfg, swiglu=swiglu)
        )
    if case["section"] == "decode":
        cfg = gemm_packed.PackedConfig(**case["cfg"])
        t = _inputs(case["m"], case["k"], case["n"], copies)
        return lambda i: (
            lambda: gemm_packed.launch_packed(t["a8"], t["wp"][i], t["sx"], t["sw"], None, t["out"], cfg)
        )
    if case["section"] == "tq":
        from fq_core.transforms.kronecker import kron_factors
        from fq_kernels.testing import random_orthogonal
        from fq_kernels.triton import transform_quant as tqm

        m, k = case["m"], case["k"]
        n1, n2 = kron_factors(k)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        g = torch.Generator().manual_seed(k)
        left, right = random_orthogonal(n1, g).cuda(), random_orthogonal(n2, g).cuda()
        clip = torch.tensor([0.95, 0.9], device="cuda")

        cfg = tqm.TQConfig(**case["cfg"])
        return lambda i: (
            lambda: launch_transform_quant(x, left, right, clip, 4, case["fmt"], case["dot"], cfg)
        )
    if case["section"] == "kv":
        from fq_kernels.ops import quant_kv
        from fq_kernels.triton.kv_attention import KVAttentionConfig, launch_kv_attention

        b, hq, hkv, s, d = (case[key] for key in ("b", "hq", "hkv", "s", "d"))
        keys = quant_kv(torch.randn(b, hkv, s, d, device="cuda", dtype=torch.float16), d)
        values = quant_kv(torch.randn(b, hkv, s, d, device="cuda", dtype=torch.float16), d)
        q = torch.randn(b, hq, d, device="cuda", dtype=torch.float16)
        lengths = torch.full((b,), s, dtype=torch.int32, device="cuda")
        cfg = KVAttentionConfig(**case["cfg"])
        return lambda i: lambda: launch_kv_attention(q, keys, values, lengths, d, d**-0.5, cfg)
    if case["section"] == "rope":
        from fq_kernels.triton.rope import RopeConfig, launch_rope_map

        t, h, d = case["t"], case["h"], case["d"]
        qkv = torch.randn(1, t, 3 * h * d, device="cuda", dtype=torch.float16)
        x = qkv[..., : h * d].view(1, t, h, d)  # a view of the projection, as the runtime has it
        cos, sin = (torch.randn(1, t, d, device="cuda", dtype=torch.float16) for _ in range(2))
        head_map = torch.randn(d, d, device="cuda", dtype=torch.float16) if case["mapped"] else None
        cfg = RopeConfig(**case["cfg"])
        return lambda i: lambda: launch_rope_map(x, cos, sin, head_map, cfg)
    raise ValueError(case)


def _precompile(case):
    try:
        make_call(case)(0)()
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # reported again (with traceback) by the timing pass
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def precompile(all_cases, workers, case_timeout):
    """Compile and run every case once in worker processes; {index: error} of the cases that raised
    or did not finish within case_timeout seconds. Those never reach the timing pass: a kernel that
    faults there would poison the timing process's CUDA context, one that hangs would stall it."""
    t0 = time.time()
    pool = mp.get_context("spawn").Pool(workers)
    pending = [pool.apply_async(_precompile, (case,)) for case in all_cases]
    errors = {}
    for i, result in enumerate(pending):
        try:
            error = result.get(timeout=case_timeout)
        except mp.TimeoutError:
            error = f"did not finish within {case_timeout} s (hung or too slow)"
        if error is not None:
            errors[i] = error
    pool.terminate()
    print(f"precompiled {len(all_cases)} cases in {time.time() - t0:.1f}s ({len(errors)} failed)", flush=True)
    for i, error in list(errors.items())[:12]:
        print("  failed:", {k: v for k, v in all_cases[i].items() if k != "section"}, error, flush=True)
    return errors


# ---------------------------------------------------------------------------------------------


def exactness(log):
    from fq_kernels.triton import gemm_prefill

    results = []
    for k in (4096, 14336):
        m, n = 256, 512
        g = torch.Generator(device="cuda").manual_seed(1)
        sets = {
            "a=7,w in 5..7": (
                torch.full((m, k), 7, device="cuda"),
                torch.randint(5, 8, (n, k), device="cuda", generator=g),
            ),
            "a=-8,w random": (
                torch.full((m, k), -8, device="cuda"),
                torch.randint(-8, 8, (n, k), device="cuda", generator=g),
            ),
            "random": (
                torch.randint(-8, 8, (m, k), device="cuda", generator=g),
                torch.randint(-8, 8, (n, k), device="cuda", generator=g),
            ),
        }
        for name, (a, w) in sets.items():
            ref = (a.double() @ w.double().T).to(torch.int64)
            for kind, imprecise in (("int8", None), ("fp8", 0), ("fp8", 128), ("fp8", 32)):
                dt = torch.int8 if kind == "int8" else torch.float8_e4m3fn
                cfg = gemm_prefill.PrefillConfig(block_n=128, num_stages=3, imprecise=imprecise)
                out = torch.empty(m, n, dtype=torch.int32, device="cuda")
                one = torch.ones(max(m, n), device="cuda")
                gemm_prefill.launch_prefill(
                    a.to(dt), w.to(dt).contiguous(), one, one, None, out, cfg, raw=True
                )
                diff = (out.long() - ref).abs()
                row = {
                    "section": "exact",
                    "k": k,
                    "data": name,
                    "kind": kind,
                    "imprecise": imprecise,
                    "mismatches": int((diff > 0).sum()),
                    "max_abs_diff": int(diff.max()),
                    "max_abs_acc": int(ref.abs().max()),
                }
                log(row)
                results.append(row)
    print("\n== exactness (raw int32 accumulators vs float64 reference)")
    for r in results:
        print(
            f"K={r['k']:5d} {r['data']:15s} {r['kind']}/{r['imprecise']}: mismatches {r['mismatches']:7d} "
            f"max|diff| {r['max_abs_diff']} (max|acc| {r['max_abs_acc']})"
        )


def _baseline_row(m, k, n):
    from fq_kernels.bench.timing import copies_to_defeat_l2, time_graph

    copies = copies_to_defeat_l2(n * k * 2) if m <= 512 else 1
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    res = {"section": "baseline", "m": m, "k": k, "n": n}
    res["bf16_ms"] = time_graph(lambda i: lambda: torch.nn.functional.linear(x, ws[i]), copies)["median_ms"]
    if m > 16:
        a8 = torch.randint(-8, 8, (m, k), device="cuda", dtype=torch.int8)
        w8 = torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8)
        res["int8_ms"] = time_graph(lambda i: lambda: torch._int_mm(a8, w8.t()))["median_ms"]
        af, wf = a8.to(torch.float8_e4m3fn), w8.to(torch.float8_e4m3fn)
        sa, sb = torch.rand(m, 1, device="cuda"), torch.rand(1, n, device="cuda")

        def scaled(i):
            return lambda: torch._scaled_mm(af, wf.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

        res["fp8_ms"] = time_graph(scaled)["median_ms"]
    return res


def baselines(log, tokens, shapes):
    rows = []
    for m, k, n in dict.fromkeys(PREFILL_SHAPES + TILES_SHAPES + DECODE_SHAPES):
        if (tokens and m not in tokens) or (shapes and (k, n) not in shapes):
            continue
        res = _baseline_row(m, k, n)
        log(res)
        rows.append(res)
        print(res, flush=True)
    return rows


def timing_pass(all_cases, log):
    from fq_kernels.bench.timing import copies_to_defeat_l2, time_graph

    results = []
    for case in all_cases:
        copies = 1
        if case["section"] in ("decode", "tiles"):
            copies = copies_to_defeat_l2(case["n"] * case["k"] // 2)
        try:
            t = time_graph(make_call(case, copies), copies)
            row = {**case, **t}
        except Exception as exc:
            row = {**case, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            traceback.print_exc(limit=2)
        _INPUTS.clear()
        log(row)
        results.append(row)
    return results


def _prefill_config_name(c: dict) -> str:
    if c["schedule"] == "scaled_mm":
        return "torch._scaled_mm"
    tile = f"{c['block_m']}x{c['block_n']}x{c['block_k']}"
    return f"{tile} w{c['num_warps']} s{c['num_stages']} {c['schedule']}"


def summarize(results, base):
    from fq_kernels.triton import kv_attention

    nan = float("nan")
    bf = {(r["m"], r["k"], r["n"]): r for r in base}
    print("\n== prefill (best per shape & kind; ratio = bf16 cuBLAS / ours GEMM alone)")
    best = {}
    for r in results:
        if r["section"] != "prefill" or "error" in r:
            continue
        key = (r["m"], r["k"], r["n"], r["kind"], r.get("imprecise"))
        if key not in best or r["median_ms"] < best[key]["median_ms"]:
            best[key] = r
    for key, r in sorted(best.items(), key=lambda kv: (kv[0][:3], str(kv[0][3:]))):
        b = bf.get(key[:3], {})
        cfg = _prefill_config_name(r["cfg"])
        tops = 2 * key[0] * key[1] * key[2] / r["median_ms"] / 1e9
        bf16 = b.get("bf16_ms", float("nan"))
        cublas = f"cuBLAS int8 {bf16 / b.get('int8_ms', nan):.2f}, fp8 {bf16 / b.get('fp8_ms', nan):.2f}"
        print(
            f"M={key[0]:5d} K={key[1]:5d} N={key[2]:5d} {key[3]}/{key[4]}: {r['median_ms']:.4f} ms "
            f"{tops:6.0f} TOP/s ratio {bf16 / r['median_ms']:.2f} [{cfg}] ({cublas})"
        )
    print("\n== gate|up GEMM, plain and with SwiGLU in the epilogue (best configuration of each)")
    best = {}
    for r in results:
        if r["section"] != "swiglu" or "error" in r:
            continue
        key = (r["m"], r["k"], r["n"], r["swiglu"])
        if key not in best or r["median_ms"] < best[key]["median_ms"]:
            best[key] = r
    for key, r in sorted(best.items()):
        print(
            f"M={key[0]:5d} K={key[1]:5d} N={key[2]:5d} swiglu={key[3]}: {r['median_ms']:.4f} ms "
            f"[{_prefill_config_name(r['cfg'])}]"
        )
    print("\n== packed-tiles GEMM (best and shipped default per shape; ratio = bf16 cuBLAS / GEMM alone)")
    from fq_kernels.triton.gemm_tiles import candidates as tiles_candidates

    best = {}
    for r in results:
        if r["section"] == "tiles" and "error" not in r:
            best.setdefault((r["m"], r["k"], r["n"], r["swiglu"]), []).append(r)
    for (m, k, n, swiglu), rs in sorted(best.items()):
        rs.sort(key=lambda r: r["median_ms"])
        shipped = asdict(tiles_candidates(m, n, k, swiglu)[0])
        default = next((r for r in rs if r["cfg"] == shipped), None)
        b = bf.get((m, k, n), {})
        bf16, fp8 = b.get("bf16_ms", nan), b.get("fp8_ms", nan)
        c = rs[0]["cfg"]
        tops = 2 * m * k * n / rs[0]["median_ms"] / 1e9
        print(
            f"M={m:5d} K={k:5d} N={n:5d}{' swiglu' if swiglu else ''}: {rs[0]['median_ms'] * 1000:7.1f} us "
            f"{tops:5.0f} TOP/s x{bf16 / rs[0]['median_ms']:.2f} bf16 x{fp8 / rs[0]['median_ms']:.2f} fp8 "
            f"[{c['block_m']}x{c['block_p']}x{c['block_k']} w{c['num_warps']} s{c['num_stages']}] "
            f"default {default['median_ms'] * 1000 if default else nan:.1f} us"
        )
    print("\n== decode (best per shape; GB/s of packed weights)")
    best = {}
    for r in results:
        if r["section"] != "decode" or "error" in r:
            continue
        key = (r["m"], r["k"], r["n"])
        best.setdefault(key, []).append(r)
    for key, rs in sorted(best.items()):
        rs.sort(key=lambda r: r["median_ms"])
        b = bf.get(key, {})
        top = rs[0]
        c = top["cfg"]
        gbs = key[1] * key[2] / 2 / top["median_ms"] / 1e6
        second = f"2nd {rs[1]['median_ms'] * 1000:.1f} us" if len(rs) > 1 else ""
        loads = " a-contiguous" if c.get("a_contiguous") else ""
        print(
            f"M={key[0]:2d} K={key[1]:5d} N={key[2]:5d}: {top['median_ms'] * 1000:.1f} us {gbs:5.0f} GB/s "
            f"ratio {b.get('bf16_ms', float('nan')) / top['median_ms']:.2f} "
            f"[BN{c['block_n']} BKP{c['block_kp']} split{c['split_k']} unpack{c['unpack']} swap{c['swap']} "
            f"w{c['num_warps']} s{c['num_stages']}{loads}] {second}"
        )
    print("\n== transform_quant")
    for r in results:
        if r["section"] == "tq":
            if "error" in r:
                print(r["m"], r["k"], r["dot"], r["fmt"], r["cfg"], r["error"])
            else:
                gbs = r["m"] * r["k"] * (2 + (0.5 if r["fmt"] == "packed" else 1)) / r["median_ms"] / 1e6
                print(
                    f"M={r['m']:5d} K={r['k']:5d} {r['dot']} {r['fmt']:6s} {r['cfg']}: "
                    f"{r['median_ms'] * 1000:7.1f} us {gbs:5.0f} GB/s"
                )
    print("\n== kv_attention (best per shape; GB/s of the int4 cache read)")
    best = {}
    for r in results:
        if r["section"] == "kv" and "error" not in r:
            best.setdefault((r["b"], r["hq"], r["hkv"], r["s"], r["d"]), []).append(r)
    for (b, hq, hkv, s, d), rs in sorted(best.items()):
        rs.sort(key=lambda r: r["median_ms"])
        cache_bytes = 2 * b * hkv * s * (d // 2 + 5)  # codes + float32 scale + uint8 zero, keys and values
        default = next((r for r in rs if r["cfg"] == asdict(kv_attention.candidates(hq // hkv)[0])), None)
        default_us = "-" if default is None else f"{default['median_ms'] * 1000:.1f} us"
        print(
            f"B={b:2d} Hq={hq} Hkv={hkv} S={s}: {rs[0]['median_ms'] * 1000:.1f} us "
            f"{cache_bytes / rs[0]['median_ms'] / 1e6:5.0f} GB/s {rs[0]['cfg']} (default {default_us})"
        )
    print("\n== rope_map (per configuration; GB/s of x read + out written)")
    for r in results:
        if r["section"] == "rope" and "error" not in r:
            gbs = 2 * 2 * r["t"] * r["h"] * r["d"] / r["median_ms"] / 1e6
            print(
                f"T={r['t']} H={r['h']:2d} map={r['mapped']!s:5}: {r['median_ms'] * 1000:6.1f} us "
                f"{gbs:5.0f} GB/s {r['cfg']}"
            )
    errors = [r for r in results if "error" in r]
    print(f"\n{len(errors)} failing cases")
    for r in errors[:10]:
        print(r)


def asm_report(cache_dir, log):
    print("\n== compiled kernels (Triton cache)")
    seen = {}
    for meta_path in Path(cache_dir).rglob("*.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except Exception:
            continue
        name = meta.get("name")
        if not name or not name.startswith(
            ("_prefill", "_packed", "_transform", "_quant_kv", "_dequant", "_split")
        ):
            continue
        ptx = meta_path.with_suffix(".ptx")
        text = ptx.read_text() if ptx.exists() else ""
        row = {
            "section": "asm",
            "name": name,
            "num_warps": meta.get("num_warps"),
            "num_stages": meta.get("num_stages"),
            "shared": meta.get("shared"),
            "wgmma": len(re.findall(r"wgmma\.mma_async", text)),
            "mma_sync": len(re.findall(r"\bmma\.sync", text)),
            "cp_async_bulk_tensor": len(re.findall(r"cp\.async\.bulk\.tensor", text)),
            "wgmma_types": sorted(set(re.findall(r"wgmma\.mma_async\.[\w.]+", text)))[:4],
        }
        log(row)
        key = (name, row["num_warps"], row["num_stages"], row["wgmma"] > 0)
        seen.setdefault(key, row)
    for row in seen.values():
        print(row)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tune-out")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--sections", default="exact,baseline,prefill,swiglu,decode,tq,kv,asm")
    parser.add_argument("--precompile-only", action="store_true", help="only fill the Triton cache")
    parser.add_argument("--case-timeout", type=float, default=180, help="seconds per case in precompile")
    parser.add_argument("--tokens", default="", help="only these M (comma-separated; default all)")
    parser.add_argument("--shapes", default="", help="only these KxN linear shapes (and their K for tq)")
    args = parser.parse_args()
    tokens = {int(t) for t in args.tokens.split(",") if t}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "tune.jsonl").open("a")

    def log(row):
        log_file.write(json.dumps(row) + "\n")
        log_file.flush()

    import triton

    print(
        f"device {torch.cuda.get_device_name(0)} torch {torch.__version__} triton {triton.__version__}",
        flush=True,
    )
    sections = args.sections.split(",")
    todo = [c for c in cases() if c["section"] in sections and (not tokens or c.get("m") in tokens)]
    shapes = {tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s}
    if shapes:  # a linear shape's cases, and transform_quant at its K
        keep = shapes | {(k, None) for k, _ in shapes}
        todo = [c for c in todo if (c.get("k"), c.get("n")) in keep]
    if todo and args.workers > 0:
        failed = precompile(todo, args.workers, args.case_timeout)
        for i, error in failed.items():
            log({**todo[i], "error": f"precompile: {error}"})
        todo = [case for i, case in enumerate(todo) if i not in failed]
    if args.precompile_only:
        return 0

    def guarded(fn, *args):
        try:
            return fn(*args)
        except Exception:
            traceback.print_exc()
            return None

    if "exact" in sections:
        guarded(exactness, log)
    base = (guarded(baselines, log, tokens, shapes) if "baseline" in sections else []) or []
    results = timing_pass(todo, log)
    guarded(summarize, results, base)
    if "asm" in sections:
        guarded(asm_report, os.environ.get("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache")), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
