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
// reductions, quantise, store), so what counts is latency: every global load is issued before the
// first is waited for (the token by cp.async, the factors as 16-byte vectors), the operands stay in
// their natural row-major layout in shared memory and `ldmatrix` (.trans where the MMA wants the
// other order) feeds `mma.m16n8k16`, each warp keeps its output tiles in the registers the tensor
// cores write, reduces them with warp shuffles and writes its codes straight from those registers.
//
// Shared memory (16-bit elements, row-major, rows padded by 8 so that the 8 rows an ldmatrix phase
// reads fall in distinct banks):
//   rs [B2][B2 + 8]  right                       (B operand of the first product: ldmatrix.trans)
//   ls [B1][B1 + 8]  left                        (A operand leftᵀ of the second: ldmatrix.trans)
//   xs [B1][B2 + 8]  the token, zero padded      (A operand of the first product: ldmatrix)
//   ts [B1][B2 + 8]  T rounded to 16 bits        (B operand of the second product: ldmatrix.trans)
// The factors are staged once per block (converted from float32). Blocks loop over tokens; the next
// token's copy into xs starts as soon as the first product has read the current one.
//
// Compile-time parameters (NVRTC -D): N1, N2 (the tile; N2 % 8 == 0), B1, B2 (rounded up to 16),
// HAS_LEFT, HAS_RIGHT, IN_F16 (1: float16 activations, else bfloat16), PACKED (1: int4 pairs per
// byte, else int8), ASYM, QMIN, QMAX, WARPS. Dynamic shared memory: `smem_bytes` in Python.
// Token rows must be 16-byte aligned (the launcher copies them otherwise).

typedef unsigned int u32;
typedef unsigned short u16;

#define LDR (B2 + 8)
#define LDL (B1 + 8)
#define LDX (B2 + 8)
#define TILES ((B1 / 16) * (B2 / 8))           // 16 x 8 output tiles of Y
#define PER_WARP ((TILES + WARPS - 1) / WARPS)  // tiles a warp owns (w, w + WARPS, ...)
#define THREADS (WARPS * 32)
#define PADDED (B1 != N1 || B2 != N2)
#define INF __int_as_float(0x7f800000)
#define QNAN __int_as_float(0x7fffffff)

#if !(HAS_LEFT || HAS_RIGHT)
#error "without a transform the Triton kernel quantises (nothing here to gain)"
#endif
#if N2 % 8
#error "the token's rows are copied in 16-byte pieces: N2 must be a multiple of 8"
#endif

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ u16 to_half(float v) {
  u16 h;
#if IN_F16
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
#else
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
#endif
  return h;
}

__device__ __forceinline__ u32 pack_halves(float lo, float hi) {
  return to_half(lo) | (u32(to_half(hi)) << 16);
}

// Origin (first row, first column) of Y's 16 x 8 tile number `tile` (row-major over the tiles).
__device__ __forceinline__ int tile_row(int tile) { return (tile / (B2 / 8)) * 16; }
__device__ __forceinline__ int tile_col(int tile) { return (tile % (B2 / 8)) * 8; }

__device__ __forceinline__ void mma(float* c, const u32* a, const u32* b) {
#if IN_F16
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
#endif
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A fragment (16 x 16 at rows r0, cols k0) of a row-major matrix; TRANS: of the transpose of the
// row-major matrix m (A[r][k] = m[k][r]).
template <bool TRANS>
__device__ __forceinline__ void load_a(u32* a, const u16* m, int ld, int r0, int k0, int lane) {
  const int sub = lane >> 3, row = lane & 7;  // lane supplies row `row` of 8 x 8 matrix `sub`
  const u16* p = TRANS ? m + (k0 + row + 8 * (sub >> 1)) * ld + r0 + 8 * (sub & 1)
                       : m + (r0 + row + 8 * (sub & 1)) * ld + k0 + 8 * (sub >> 1);
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(shared_address(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(shared_address(p)));
}

// B fragment (16 x 8 at rows k0, cols n0) of a row-major matrix
__device__ __forceinline__ void load_b(u32* b, const u16* m, int ld, int k0, int n0, int lane) {
  const u16* p = m + (k0 + (lane & 15)) * ld + n0;  // lanes 16..31: ignored, kept in bounds
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
               : "=r"(b[0]), "=r"(b[1])
               : "r"(shared_address(p)));
}

// acc += A[r0.., 0..KD) · B[0..KD, n0..) for the warp's 16 x 8 tile
template <int KD, bool A_TRANS>
__device__ __forceinline__ void tile_product(float* acc, const u16* a, int lda, const u16* b, int ldb,
                                             int r0, int n0, int lane) {
#pragma unroll
  for (int k0 = 0; k0 < KD; k0 += 16) {
    u32 af[4], bf[2];
    load_a<A_TRANS>(af, a, lda, r0, k0, lane);
    load_b(bf, b, ldb, k0, n0, lane);
    mma(acc, af, bf);
  }
}

// Start copying token `token` (row-major N1 x N2) into xs (rows of LDX); padding stays untouched.
__device__ __forceinline__ void copy_token(u16* xs, const u16* x, long x_stride, int token) {
  const u16* xt = x + token * x_stride;
#pragma unroll
  for (int e = threadIdx.x; e < N1 * N2 / 8; e += THREADS) {
    const int i = (8 * e) / N2, j = (8 * e) % N2;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(xs + i * LDX + j)),
                 "l"(xt + i * N2 + j)
                 : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

__device__ __forceinline__ void wait_token() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// An N x N float32 factor staged as 16-bit into a row-major buffer (rows of LD): `load` issues
// every global load of the thread into registers, `store` converts and writes them, so the loads
// of both factors and of the token are in flight together.
template <int N, int LD>
struct Factor {
  static constexpr int V = N % 4 == 0 ? 4 : N % 2 == 0 ? 2 : 1;  // floats per load
  static constexpr int COUNT = N * N / V;
  static constexpr int PER_THREAD = (COUNT + THREADS - 1) / THREADS;
  float v[PER_THREAD][V];

  __device__ __forceinline__ void load(const float* src) {
#pragma unroll
    for (int r = 0; r < PER_THREAD; ++r) {
      const int e = threadIdx.x + r * THREADS;
      if (COUNT % THREADS == 0 || e < COUNT) {  // no branch when every thread has PER_THREAD
        if (V == 4) {
          const float4 f = reinterpret_cast<const float4*>(src)[e];
          v[r][0] = f.x, v[r][1 % V] = f.y, v[r][2 % V] = f.z, v[r][3 % V] = f.w;
        } else if (V == 2) {
          const float2 f = reinterpret_cast<const float2*>(src)[e];
          v[r][0] = f.x, v[r][1 % V] = f.y;
        } else {
          v[r][0] = src[e];
        }
      }
    }
  }

  __device__ __forceinline__ void store(u16* dst) const {
#pragma unroll
    for (int r = 0; r < PER_THREAD; ++r) {
      const int e = threadIdx.x + r * THREADS;
      if (COUNT % THREADS == 0 || e < COUNT) {  // no branch when every thread has PER_THREAD
        const int row = (V * e) / N, col = (V * e) % N;
        if (V == 1) {
          dst[row * LD + col] = to_half(v[r][0]);
        } else {
#pragma unroll
          for (int c = 0; c < V; c += 2)  // two values per 32-bit store (col and LD are even)
            *reinterpret_cast<u32*>(dst + row * LD + col + c) = pack_halves(v[r][c], v[r][(c + 1) % V]);
        }
      }
    }
  }
};

// Zero the padding (rows >= ROWS, columns >= COLS) of a ROWS_P x COLS_P buffer with rows of LD.
template <int ROWS, int COLS, int ROWS_P, int COLS_P, int LD>
__device__ __forceinline__ void zero_padding(u16* buf) {
  for (int e = threadIdx.x; e < ROWS_P * COLS_P / 2; e += THREADS) {
    const int row = (2 * e) / COLS_P, col = (2 * e) % COLS_P;
    if (row >= ROWS || col >= COLS) *reinterpret_cast<u32*>(buf + row * LD + col) = 0u;
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

extern "C" __global__ void __launch_bounds__(THREADS)
    transform_quant_tokens(const u16* __restrict__ x,       // [M, K] bf16 / f16, row stride x_stride
                           const float* __restrict__ left,  // [N1, N1] (unused without HAS_LEFT)
                           const float* __restrict__ right, // [N2, N2] (unused without HAS_RIGHT)
                           const float* __restrict__ clip,  // (clip_max, clip_min)
                           unsigned char* __restrict__ q,   // [M, K] int8 or [M, K / 2] packed
                           float* __restrict__ scales, float* __restrict__ zeros, int M, int x_stride) {
  extern __shared__ __align__(16) u32 smem_words[];
  u16* rs = reinterpret_cast<u16*>(smem_words);
  u16* ls = rs + (HAS_RIGHT ? B2 * LDR : 0);
  u16* xs = ls + (HAS_LEFT ? B1 * LDL : 0);
  u16* ts = xs + (HAS_RIGHT && HAS_LEFT ? B1 * LDX : 0);  // T; without both factors, T is X
  __shared__ float partial[2][WARPS];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
#if __CUDA_ARCH__ >= 900
  // The GEMM that reads this kernel's output may launch now (programmatic dependent launch): it
  // starts streaming its weights and waits for this grid to finish before it reads the codes.
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  if (blockIdx.x >= M) return;
  const float clip_max = clip[0], clip_min = clip[1];
  copy_token(xs, x, x_stride, blockIdx.x);
  {
    Factor<N2, LDR> r;
    Factor<N1, LDL> l;
    if (HAS_RIGHT) r.load(right);
    if (HAS_LEFT) l.load(left);
    if (HAS_RIGHT) r.store(rs);
    if (HAS_LEFT) l.store(ls);
  }
  if (PADDED) {
    zero_padding<N1, N2, B1, B2, LDX>(xs);
    if (HAS_RIGHT) zero_padding<N2, N2, B2, B2, LDR>(rs);
    if (HAS_LEFT) zero_padding<N1, N1, B1, B1, LDL>(ls);
  }

  for (int token = blockIdx.x; token < M; token += gridDim.x) {
    const int next = token + gridDim.x;
    wait_token();
    __syncthreads();  // the token (and, the first time, the factors) are in shared memory

    float acc[PER_WARP][4];
#pragma unroll
    for (int s = 0; s < PER_WARP; ++s)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[s][c] = 0.0f;

    // T = X · right, then Y = leftᵀ · T (T = X without a right factor, Y = T without a left one)
    if (HAS_RIGHT) {
#pragma unroll
      for (int s = 0; s < PER_WARP; ++s) {
        const int tile = warp + s * WARPS;
        if (tile < TILES)
          tile_product<B2, false>(acc[s], xs, LDX, rs, LDR, tile_row(tile), tile_col(tile), lane);
      }
    }
    if (HAS_RIGHT && HAS_LEFT) {
#pragma unroll
      for (int s = 0; s < PER_WARP; ++s) {
        const int tile = warp + s * WARPS;
        if (tile < TILES) {
          const int r0 = tile_row(tile), n0 = tile_col(tile);
          // acc[s][c]: T[r0 + g + 8 (c >> 1)][n0 + 2t + (c & 1)]
#pragma unroll
          for (int h = 0; h < 2; ++h)
            *reinterpret_cast<u32*>(ts + (r0 + g + 8 * h) * LDX + n0 + 2 * t) =
                pack_halves(acc[s][2 * h], acc[s][2 * h + 1]);
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[s][c] = 0.0f;
        }
      }
    }
    __syncthreads();  // every warp is done with xs (and has written T)
    if (HAS_RIGHT && next < M) copy_token(xs, x, x_stride, next);
    if (HAS_LEFT) {
#pragma unroll
      for (int s = 0; s < PER_WARP; ++s) {
        const int tile = warp + s * WARPS;
        if (tile < TILES)
          tile_product<B1, true>(acc[s], ls, LDL, ts, LDX, tile_row(tile), tile_col(tile), lane);
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
    __syncthreads();  // also: every warp has read ts and (without a right factor) xs
    if (!HAS_RIGHT && next < M) copy_token(xs, x, x_stride, next);
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
    const float inv = __fdiv_rn(1.0f, scale);

    unsigned char* qt = q + (long)token * (PACKED ? N1 * N2 / 2 : N1 * N2);
#pragma unroll
    for (int s = 0; s < PER_WARP; ++s) {
      const int tile = warp + s * WARPS;
      if (tile < TILES) {
        const int r0 = tile_row(tile), n0 = tile_col(tile);
        const int j = n0 + 2 * t;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int i = r0 + g + 8 * h;
          if (i < N1 && j < N2) {
            int code[2];
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              // the IEEE quotient y / scale that the reference rounds, from the reciprocal: y * inv
              // is within an ulp, and one FMA step on its exact residual rounds it correctly
              // (Markstein; fq_kernels.triton.common.div_rn_by_reciprocal)
              const float y = acc[s][2 * h + c];
              const float q0 = __fmul_rn(y, inv);
              float v = fminf(fmaxf(__fmaf_rn(__fmaf_rn(-q0, scale, y), inv, q0), vmin), QMAX + 1.0f);
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
  }
}
