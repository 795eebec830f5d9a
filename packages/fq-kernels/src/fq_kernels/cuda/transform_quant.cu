// Online transform + per-token quantisation of 16-bit activations: one block per token at a time.
//
// Same result definition as the Triton kernel (`fq_kernels.triton.transform_quant`, dot precision
// "bf16" / "fp16"): a token x of K = N1 * N2 values, viewed as the N1 x N2 tile X, becomes
//
//     T = X · right            (16-bit operands, float32 sums; skipped without a right factor)
//     Y = leftᵀ · T            (T and left rounded to the 16-bit type; skipped without a left factor)
//
// then fq-core's per-token quantiser (symmetric, or asymmetric with a zero point) with the clip pair,
// IEEE division and round-half-even, and the codes stored as int8 or packed int4 with one float32
// scale per token. A token with NaN or ±inf gets scale NaN and all-zero codes.
//
// Why not Triton: at decode sizes the kernel is one token's dependent chain (load, two dots, two
// reductions, quantise, store), and Triton's version spends ~5 us in layout conversions through
// shared memory between those steps. Here each warp keeps its output tiles in the registers the
// tensor cores write (`mma.m16n8k16`, fragments read with plain 32-bit shared-memory loads from
// buffers laid out so that every fragment register is one aligned word, conflict-free), reduces
// them with warp shuffles and writes its codes straight from those registers.
//
// Shared memory (16-bit elements, rows padded by 8 so that fragment loads hit 32 distinct banks):
//   rt [B2][B2 + 8]  right transposed (rt[j][k] = right[k][j]), the B operand of the first product
//   lt [B1][B1 + 8]  left transposed (lt[i][k] = left[k][i]), the A operand of the second
//   xs [B1][B2 + 8]  the token (zero padded), the A operand of the first product; after it, the same
//                    memory holds tt [B2][B1 + 8] = Tᵀ, the B operand of the second product
// The factors are staged once per block (converted from float32); blocks loop over tokens.
//
// Compile-time parameters (NVRTC -D): N1, N2 (the tile; N2 even), B1, B2 (N1, N2 rounded up to 16),
// HAS_LEFT, HAS_RIGHT, IN_F16 (1: float16 activations, else bfloat16), PACKED (1: int4 pairs per
// byte, else int8), ASYM, QMIN, QMAX, WARPS. Dynamic shared memory: `smem_bytes` in Python.

typedef unsigned int u32;
typedef unsigned short u16;

#define LDR (B2 + 8)
#define LDL (B1 + 8)
#define LDX (B2 + 8)
#define LDT (B1 + 8)
#define XS_ELEMS (B1 * LDX > B2 * LDT ? B1 * LDX : B2 * LDT)
#define TILES ((B1 / 16) * (B2 / 8))                   // 16 x 8 output tiles of Y
#define PER_WARP ((TILES + WARPS - 1) / WARPS)          // tiles a warp owns (w, w + WARPS, ...)
#define INF __int_as_float(0x7f800000)
#define QNAN __int_as_float(0x7fffffff)

#if !(HAS_LEFT || HAS_RIGHT)
#error "without a transform the Triton kernel quantises (nothing here to gain)"
#endif

__device__ __forceinline__ u16 to_half(float v) {
  u16 h;
#if IN_F16
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
#else
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
#endif
  return h;
}

__device__ __forceinline__ void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if IN_F16
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
#endif
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 word(const u16* p) { return *reinterpret_cast<const u32*>(p); }

// acc (a warp's 16 x 8 tile at rows r0, cols n0) += A[r0.., 0..KD) · B[0..KD, n0..): A row-major
// with row stride lda; B given as Bᵀ (row n holds column n of B) with row stride ldb, or, when
// B_ROWS, as B itself (row-major, stride ldb; each register then takes two 16-bit loads).
template <int KD, bool B_ROWS>
__device__ __forceinline__ void tile_product(float* acc, const u16* a, int lda, const u16* b, int ldb,
                                             int r0, int n0, int g, int t) {
#pragma unroll
  for (int k0 = 0; k0 < KD; k0 += 16) {
    const u16* ar = a + (r0 + g) * lda + k0 + 2 * t;
    const u32 a0 = word(ar), a1 = word(ar + 8 * lda), a2 = word(ar + 8), a3 = word(ar + 8 * lda + 8);
    u32 b0, b1;
    if (B_ROWS) {
      const u16* bc = b + (k0 + 2 * t) * ldb + n0 + g;
      b0 = bc[0] | (u32(bc[ldb]) << 16);
      b1 = bc[8 * ldb] | (u32(bc[9 * ldb]) << 16);
    } else {
      const u16* br = b + (n0 + g) * ldb + k0 + 2 * t;
      b0 = word(br);
      b1 = word(br + 8);
    }
    mma(acc, a0, a1, a2, a3, b0, b1);
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_min(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
    transform_quant_tokens(const u16* __restrict__ x,       // [M, K] bf16 / f16, row stride x_stride
                           const float* __restrict__ left,  // [N1, N1] (unused without HAS_LEFT)
                           const float* __restrict__ right, // [N2, N2] (unused without HAS_RIGHT)
                           const float* __restrict__ clip,  // (clip_max, clip_min)
                           unsigned char* __restrict__ q,   // [M, K] int8 or [M, K / 2] packed
                           float* __restrict__ scales, float* __restrict__ zeros, int M, int x_stride) {
  extern __shared__ u32 smem_words[];
  u16* smem = reinterpret_cast<u16*>(smem_words);
  u16* rt = smem;
  u16* lt = rt + (HAS_RIGHT ? B2 * LDR : 0);
  u16* xs = lt + (HAS_LEFT ? B1 * LDL : 0);
  u16* tt = xs;  // Tᵀ replaces the token once the first product has read it
  __shared__ float partial[2][WARPS];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int threads = WARPS * 32;
#if __CUDA_ARCH__ >= 900
  // The GEMM that reads this kernel's output may launch now (programmatic dependent launch): it
  // starts streaming its weights and waits for this grid to finish before it reads the codes.
  asm volatile("griddepcontrol.launch_dependents;");
#endif

  if (HAS_RIGHT)
    for (int e = threadIdx.x; e < B2 * B2; e += threads) {
      const int k = e / B2, j = e % B2;  // consecutive threads: consecutive j of right's row k
      rt[j * LDR + k] = (k < N2 && j < N2) ? to_half(right[k * N2 + j]) : u16(0);
    }
  if (HAS_LEFT)
    for (int e = threadIdx.x; e < B1 * B1; e += threads) {
      const int k = e / B1, i = e % B1;
      lt[i * LDL + k] = (k < N1 && i < N1) ? to_half(left[k * N1 + i]) : u16(0);
    }
  const float clip_max = clip[0], clip_min = clip[1];

  for (int token = blockIdx.x; token < M; token += gridDim.x) {
    const u16* xt = x + (long)token * x_stride;
    for (int e = threadIdx.x; e < B1 * B2 / 2; e += threads) {  // pairs: N2 is even
      const int i = (2 * e) / B2, j = (2 * e) % B2;
      const u32 v = (i < N1 && j < N2) ? word(xt + i * N2 + j) : 0u;
      *reinterpret_cast<u32*>(xs + i * LDX + j) = v;
    }
    __syncthreads();

    float acc[PER_WARP][4];
#pragma unroll
    for (int s = 0; s < PER_WARP; ++s)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[s][c] = 0.0f;

    // T = X · right, then Y = leftᵀ · T (T = X without a right factor, Y = T without a left one)
#pragma unroll
    for (int s = 0; s < PER_WARP; ++s) {
      const int tile = warp + s * WARPS;
      if (tile < TILES) {
        const int r0 = (tile / (B2 / 8)) * 16, n0 = (tile % (B2 / 8)) * 8;
        if (HAS_RIGHT) tile_product<B2, false>(acc[s], xs, LDX, rt, LDR, r0, n0, g, t);
      }
    }
    if (HAS_LEFT) {
      if (HAS_RIGHT) {
        __syncthreads();  // every warp has read the token: its memory becomes Tᵀ
#pragma unroll
        for (int s = 0; s < PER_WARP; ++s) {
          const int tile = warp + s * WARPS;
          if (tile < TILES) {
            const int r0 = (tile / (B2 / 8)) * 16, n0 = (tile % (B2 / 8)) * 8;
            // acc[s][c]: T[r0 + g + 8 (c >> 1)][n0 + 2t + (c & 1)]
#pragma unroll
            for (int c = 0; c < 4; ++c)
              tt[(n0 + 2 * t + (c & 1)) * LDT + r0 + g + 8 * (c >> 1)] = to_half(acc[s][c]);
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[s][c] = 0.0f;
          }
        }
        __syncthreads();
      }
#pragma unroll
      for (int s = 0; s < PER_WARP; ++s) {
        const int tile = warp + s * WARPS;
        if (tile < TILES) {
          const int r0 = (tile / (B2 / 8)) * 16, n0 = (tile % (B2 / 8)) * 8;
          if (HAS_RIGHT)
            tile_product<B1, false>(acc[s], lt, LDL, tt, LDT, r0, n0, g, t);
          else
            tile_product<B1, true>(acc[s], lt, LDL, xs, LDX, r0, n0, g, t);
        }
      }
    }

    // the token's range: a non-finite value turns the max into +inf (NaN compares false)
    float hi = -INF, lo = INF;
#pragma unroll
    for (int s = 0; s < PER_WARP; ++s)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float v = acc[s][c];
        hi = fmaxf(hi, fabsf(v) < INF ? v : INF);
        lo = fminf(lo, v);
      }
    hi = warp_max(hi);
    lo = warp_min(lo);
    if (lane == 0) {
      partial[0][warp] = hi;
      partial[1][warp] = lo;
    }
    __syncthreads();
    hi = partial[0][0];
    lo = partial[1][0];
#pragma unroll
    for (int w = 1; w < WARPS; ++w) {
      hi = fmaxf(hi, partial[0][w]);
      lo = fminf(lo, partial[1][w]);
    }
    const bool bad = hi == INF;
    hi = fmaxf(hi, 0.0f) * clip_max;
    lo = fminf(lo, 0.0f) * clip_min;
#if ASYM
    if (hi == 0.0f && lo == 0.0f) {
      hi = 1.0f;
      lo = -1.0f;
    }
    const float scale = __fdiv_rn(hi - lo, float(QMAX));
    const float zero = rintf(__fdiv_rn(-lo, scale));
#else
    const float absmax = fmaxf(hi, -lo);
    const float scale = absmax == 0.0f ? 1.0f : __fdiv_rn(absmax, float(QMAX));
    const float zero = 0.0f;
#endif
    const float vmin = ASYM ? -QMAX - 1.0f : QMIN - 1.0f;

    unsigned char* qt = q + (long)token * (PACKED ? N1 * N2 / 2 : N1 * N2);
#pragma unroll
    for (int s = 0; s < PER_WARP; ++s) {
      const int tile = warp + s * WARPS;
      if (tile < TILES) {
        const int r0 = (tile / (B2 / 8)) * 16, n0 = (tile % (B2 / 8)) * 8;
        const int j = n0 + 2 * t;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int i = r0 + g + 8 * h;
          if (i < N1 && j < N2) {
            int code[2];
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              float v = fminf(fmaxf(__fdiv_rn(acc[s][2 * h + c], scale), vmin), QMAX + 1.0f);
              v = rintf(v) + zero;
              v = fminf(fmaxf(v, float(QMIN)), float(QMAX)) - (ASYM ? (QMAX + 1) / 2 : 0);
              code[c] = bad ? 0 : int(v);
            }
            if (PACKED)
              qt[(i * N2 + j) / 2] = (unsigned char)((code[0] & 15) | ((code[1] & 15) << 4));
            else
              *reinterpret_cast<u16*>(qt + i * N2 + j) = u16((code[0] & 255) | ((code[1] & 255) << 8));
          }
        }
      }
    }
    if (threadIdx.x == 0) {
      scales[token] = bad ? QNAN : scale;
      if (ASYM) zeros[token] = bad ? 0.0f : zero - (QMAX + 1) / 2;
    }
    __syncthreads();  // the token's memory and the partial ranges are free for the next token
  }
}
