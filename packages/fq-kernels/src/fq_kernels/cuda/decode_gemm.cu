// W4A4 decode GEMM on tiled int4 weights: out[m, n] = epilogue(sum_k x[m, k] * w[n, k]).
//
// Few tokens (decode) make this GEMM a stream of weight bytes, so the weights are stored in the
// order the tensor cores consume them (`fq_kernels.layout.tile_decode_weight`): for each 16-row x
// 64-k tile, lane l = 4g + t of a warp reads its 16 bytes with one 128-bit load, and byte c holds
// w[g, 16t + c] (low nibble) and w[g + 8, 16t + c] (high nibble). `b & 0xF0` and `(b << 4) & 0xF0`
// are then 16 x the high and the low nibble as int8, four at a time per 32-bit register, and those
// registers are exactly the A fragments of `mma.m16n8k32.s8` (rows g and g + 8) once the k order
// inside a 64-k step is permuted the same way for both operands: the MMA's logical k 4t + i and
// 16 + 4t + i stand for the real k 16t + 8s + i and 16t + 8s + 4 + i of k32 half s. With that
// permutation a lane's activations for one token are also 16 contiguous bytes (one 128-bit load),
// the B fragments of tokens g (and g + 8). No layout conversion between load and MMA: each lane
// feeds the MMA exactly the bytes it loaded.
//
// A block owns NT 16-row tiles and all of K; its WARPS warps take interleaved 64-k steps (adjacent
// 512-byte chunks, so a block streams contiguous memory). Each warp keeps STAGES - 1 steps of
// weights and activations in flight with asynchronous copies into its own ring of shared memory
// (each lane copies and later reads only its own 16-byte pieces, so no barrier is needed): loads
// into registers would not do, as the compiler schedules each load just before its first use and a
// warp then has one step in flight. The warps' int32 partial sums meet in shared memory and one
// pass applies the epilogue (the reference's float32 operations in its order; compiled with
// --fmad=false). Launched with programmatic dependent launch right after transform_quant
// (`fq_kernels/cuda/launch.py`), a warp issues its first STAGES - 1 weight steps before it waits
// for that kernel (`griddepcontrol.wait`) and reads the activations. blockIdx.y picks a group of 16 tokens, so any M works; TOKENS = 8 skips the
// second token group's copies and MMAs.
//
// Compile-time parameters (NVRTC -D): WARPS, NT, STAGES, TOKENS (8 or 16), OUT_KIND (0 float32,
// 1 bfloat16, 2 float16), HAS_BIAS, HAS_ZERO, RAW (store int32 accumulators, no epilogue).
// Dynamic shared memory: WARPS * STAGES * (NT + TOKENS / 8) * 512 bytes (`ring_bytes` in Python).

typedef unsigned int u32;
typedef unsigned short u16;

struct alignas(16) Words {
  u32 w[4];
};

#define SLOT (NT + TOKENS / 8)  // 512-byte pieces per stage: NT weight tiles, the token groups

__device__ __forceinline__ unsigned shared_address(const void* p) {
  unsigned long long a;
  asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
  return (unsigned)a;
}

__device__ __forceinline__ void copy_weights(Words* dst, const void* src) {
  // read once: bypass L1
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void copy_activations(Words* dst, const void* src) {
  // a few KB read by every warp: keep in L1
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"(shared_address(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Programmatic dependent launch (Hopper): without it, or before sm_90, the stream order already holds.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void wait_until_pending() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void mma_s8(int* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_step(int (*acc)[2][4], const Words* wv, const Words& xa,
                                         const Words& xb) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const u32 p = wv[j].w[2 * half], q = wv[j].w[2 * half + 1];
      const u32 a0 = (p << 4) & 0xF0F0F0F0u, a1 = p & 0xF0F0F0F0u;  // rows g, g + 8
      const u32 a2 = (q << 4) & 0xF0F0F0F0u, a3 = q & 0xF0F0F0F0u;
      mma_s8(acc[j][0], a0, a1, a2, a3, xa.w[2 * half], xa.w[2 * half + 1]);
      if (TOKENS == 16) mma_s8(acc[j][1], a0, a1, a2, a3, xb.w[2 * half], xb.w[2 * half + 1]);
    }
  }
}

__device__ __forceinline__ void store_out(void* out, long i, float v) {
#if OUT_KIND == 0
  static_cast<float*>(out)[i] = v;
#elif OUT_KIND == 1
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  static_cast<u16*>(out)[i] = h;
#else
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  static_cast<u16*>(out)[i] = h;
#endif
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
    w4a4_decode_tiled(const unsigned char* __restrict__ w,  // [N / 16][K / 64][512] tiled int4
                      const signed char* __restrict__ x,    // [M, K] int8, rows 16-byte aligned
                      void* __restrict__ out,               // [M, N], row stride out_stride
                      const float* __restrict__ sx, const float* __restrict__ sw,
                      const float* __restrict__ bias, const float* __restrict__ zx,
                      const float* __restrict__ wsum, int M, int N, int K, int x_stride,
                      int out_stride) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row_tiles = N >> 4, steps = K >> 6;
  const int tile0 = blockIdx.x * NT;
  const int m0 = blockIdx.y * 16;
  // the two tokens whose B fragments this lane supplies (rows past M repeat the last one; their
  // outputs are never stored)
  const signed char* x0 = x + (long)min(m0 + g, M - 1) * x_stride + 16 * t;
  const signed char* x1 = x + (long)min(m0 + g + 8, M - 1) * x_stride + 16 * t;
  const unsigned char* wt[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int tile = min(tile0 + j, row_tiles - 1);
    wt[j] = w + ((long)tile * steps) * 512 + 16 * lane;
  }

  int acc[NT][2][4];
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[j][h][c] = 0;

  extern __shared__ Words ring[];  // [WARPS][STAGES][SLOT][32 lanes], then the partial sums
  Words* mine = ring + warp * (STAGES * SLOT * 32) + lane;
  auto issue_weights = [&](int s, int slot) {
    if (s < steps) {
      Words* d = mine + slot * (SLOT * 32);
#pragma unroll
      for (int j = 0; j < NT; ++j) copy_weights(d + 32 * j, wt[j] + (long)s * 512);
    }
  };
  auto issue_activations = [&](int s, int slot) {
    if (s < steps) {
      Words* d = mine + slot * (SLOT * 32);
      copy_activations(d + 32 * NT, x0 + s * 64);
      if (TOKENS == 16) copy_activations(d + 32 * (NT + 1), x1 + s * 64);
    }
    commit();  // an empty group past the end keeps the count of pending groups uniform
  };
  // The weights do not depend on the kernel before this one (launched with programmatic dependent
  // launch, this block may start while transform_quant still writes x): start streaming them, then
  // wait for that kernel before the first read of x, sx or zx.
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) issue_weights(warp + p * WARPS, p);
  wait_for_previous_kernel();
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) issue_activations(warp + p * WARPS, p);
  int slot = 0;
  for (int s = warp; s < steps; s += WARPS) {
    const int next = s + (STAGES - 1) * WARPS;
    const int free = slot == 0 ? STAGES - 1 : slot - 1;  // the slot read last step
    issue_weights(next, free);
    issue_activations(next, free);
    wait_until_pending<STAGES - 1>();  // step s has landed
    const Words* d = mine + slot * (SLOT * 32);
    Words wv[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) wv[j] = d[32 * j];
    const Words xa = d[32 * NT];
    const Words xb = TOKENS == 16 ? d[32 * (NT + 1)] : xa;
    mma_step(acc, wv, xa, xb);
    slot = slot == STAGES - 1 ? 0 : slot + 1;
  }
  wait_until_pending<0>();
  __syncthreads();  // every warp is done with the ring: reuse it for the partial sums

  // partial sums of every warp -> shared memory [WARPS][NT * 16 rows][16 tokens]
  int(*partial)[NT * 16][16] = reinterpret_cast<int(*)[NT * 16][16]>(ring);
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        partial[warp][16 * j + g + 8 * (c >> 1)][8 * h + 2 * t + (c & 1)] = acc[j][h][c];
  __syncthreads();

  for (int i = threadIdx.x; i < NT * 16 * 16; i += WARPS * 32) {
    const int row = i % (NT * 16), token = i / (NT * 16);  // consecutive threads: consecutive n
    const int n = tile0 * 16 + row, m = m0 + token;
    if (n >= N || m >= M || token >= TOKENS) continue;
    int sum = 0;
#pragma unroll
    for (int v = 0; v < WARPS; ++v) sum += partial[v][row][token];
    sum >>= 4;  // the weights entered as 16 x their nibbles: an exact multiple of 16
    const long o = (long)m * out_stride + n;
#if RAW
    static_cast<int*>(out)[o] = sum;
#else
    float r = (float)sum;
#if HAS_ZERO
    r = r - zx[m] * wsum[n];
#endif
    r = r * sx[m] * sw[n];
#if HAS_BIAS
    r = r + bias[n];
#endif
    store_out(out, o, r);
#endif
  }
}
