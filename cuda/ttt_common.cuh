// ttt_common.cuh: device helpers shared by the TTT scan kernels.
//
// No #include at all, so the same text compiles under nvcc (tests/cuda/test_compile.py) and under NVRTC
// (cuda/loader.py inlines this file into each .cu before compiling). bf16 values are handled as raw
// 16-bit patterns (bf16_t) and converted with PTX, so cuda_bf16.h is not needed either.
//
// Fragment conventions (PTX ISA, mma.m16n8k16 with .bf16 inputs and .f32 accumulators), lane = 4*g + tq:
//   A (16x16, row major):  a[0] = A[g][2tq..2tq+1]    a[1] = A[g+8][2tq..]
//                          a[2] = A[g][2tq+8..]       a[3] = A[g+8][2tq+8..]
//   B (16x8, "col"):       b[0] = B[2tq..2tq+1][g]    b[1] = B[2tq+8..2tq+9][g]
//   C/D (16x8, fp32):      c[0], c[1] = C[g][2tq], C[g][2tq+1];  c[2], c[3] = C[g+8][2tq], C[g+8][2tq+1]
// A packed bf16 pair keeps the lower column index in the low 16 bits.
#pragma once

namespace ttt {

typedef unsigned short bf16_t;  // raw bf16 bits
typedef unsigned int u32;

constexpr int HD = 64;        // head dim
constexpr int MBS = 64;       // tokens per mini-batch
constexpr int LD = HD + 8;    // padded row (elements) of a 64-wide bf16 tile: 144 B rows, conflict-free ldmatrix
constexpr float LN_EPS = 1e-8f;

// tanh-GELU constants, as ttt_engine/ops/ttt/inner_grads.py
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
constexpr float GELU_CUBIC = 0.044715f;
constexpr float GELU_BWD_CUBIC = 0.1070322243f;

// ------------------------------------------------------------------------------------------------
// conversions and addresses

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// blockIdx.x through a volatile move: what derives from it is recomputed where it is used instead of being
// kept live through a kernel (ttt_mlp_bwd_sm80.cu: addresses kept from the kernel's start spilled beside its
// 128-register state gradient).
__device__ __forceinline__ int block_index() {
  int r;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(r));
  return r;
}

// Round two floats to bf16 (nearest even) and pack them: lo -> bits 0..15, hi -> bits 16..31.
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float bf16_lo(u32 p) { return __uint_as_float(p << 16); }
__device__ __forceinline__ float bf16_hi(u32 p) { return __uint_as_float(p & 0xffff0000u); }

// Load a packed bf16 pair from shared memory (4-byte aligned) and widen both halves.
__device__ __forceinline__ void ld_bf16x2(const bf16_t* p, float& lo, float& hi) {
  const u32 v = *reinterpret_cast<const u32*>(p);
  lo = bf16_lo(v);
  hi = bf16_hi(v);
}

__device__ __forceinline__ void st_bf16x2(bf16_t* p, float lo, float hi) {
  *reinterpret_cast<u32*>(p) = pack_bf16(lo, hi);
}

// ------------------------------------------------------------------------------------------------
// tensor cores: ldmatrix + mma.sync (sm_80 and later)

__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ void ldsm_x4_t(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d += A * B for one 16x8x16 tile; b0, b1 are the two B registers of one n-tile.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ldmatrix.x4: lanes 8q..8q+7 give the 8 row addresses of matrix q; register q receives matrix q.

// A fragment of the 16x16 block A[m0.., k0..] where A is stored row major: S[m][k], row stride ld.
__device__ __forceinline__ void load_a(u32 (&a)[4], const bf16_t* S, int ld, int m0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4(a, smem_u32(S + (m0 + (q & 1) * 8 + r) * ld + k0 + (q >> 1) * 8));
}

// A fragment of A = S^T, i.e. A[m][k] = S[k][m] (S row major, row stride ld).
__device__ __forceinline__ void load_a_t(u32 (&a)[4], const bf16_t* S, int ld, int m0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4_t(a, smem_u32(S + (k0 + (q >> 1) * 8 + r) * ld + m0 + (q & 1) * 8));
}

// B fragments of two n-tiles (n0 and n0 + 8) over k0..k0+15, where B[k][n] = S[n][k] ("n-major").
// b[0], b[1]: n-tile n0;  b[2], b[3]: n-tile n0 + 8.
__device__ __forceinline__ void load_b_nmajor(u32 (&b)[4], const bf16_t* S, int ld, int n0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4(b, smem_u32(S + (n0 + (q >> 1) * 8 + r) * ld + k0 + (q & 1) * 8));
}

// The same two B n-tiles where B[k][n] = S[k][n] ("k-major", B stored row major).
__device__ __forceinline__ void load_b_kmajor(u32 (&b)[4], const bf16_t* S, int ld, int n0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4_t(b, smem_u32(S + (k0 + (q & 1) * 8 + r) * ld + n0 + (q >> 1) * 8));
}

// ------------------------------------------------------------------------------------------------
// swizzled 64-column bf16 tiles (no padding): 16-byte chunk c of row r is stored at chunk c ^ (r & 7), so
// the 8 row addresses of every ldmatrix matrix and the 8 rows of a C-fragment store hit 8 different
// chunks (all 32 banks). Used where shared memory is too small for padded rows (the sm_80 MLP kernel).

// Element offset of [row][col] in a swizzled tile with 64 columns (col: any; pairs stay contiguous).
__device__ __forceinline__ int sw64(int row, int col) {
  return row * HD + ((((col >> 3) ^ row) & 7) << 3) + (col & 7);
}

// The four fragment loads above for swizzled 64-column tiles (same meaning of m0, n0, k0).
__device__ __forceinline__ void load_a_sw(u32 (&a)[4], const bf16_t* S, int m0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4(a, smem_u32(S + sw64(m0 + (q & 1) * 8 + r, k0 + (q >> 1) * 8)));
}

__device__ __forceinline__ void load_a_t_sw(u32 (&a)[4], const bf16_t* S, int m0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4_t(a, smem_u32(S + sw64(k0 + (q >> 1) * 8 + r, m0 + (q & 1) * 8)));
}

__device__ __forceinline__ void load_b_nmajor_sw(u32 (&b)[4], const bf16_t* S, int n0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4(b, smem_u32(S + sw64(n0 + (q >> 1) * 8 + r, k0 + (q & 1) * 8)));
}

__device__ __forceinline__ void load_b_kmajor_sw(u32 (&b)[4], const bf16_t* S, int n0, int k0, int lane) {
  const int q = lane >> 3, r = lane & 7;
  ldsm_x4_t(b, smem_u32(S + sw64(k0 + (q & 1) * 8 + r, n0 + (q >> 1) * 8)));
}

// The A fragment of k-step kk of a 16 x 64 block held as accumulators c[8][4] (n-tiles 2kk, 2kk + 1):
// an fp32 state kept in mma accumulators feeds the next mma directly, rounded to bf16.
__device__ __forceinline__ void a_from_acc(u32 (&a)[4], const float (&c)[8][4], int kk) {
  a[0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// ------------------------------------------------------------------------------------------------
// asynchronous global -> shared copies (cp.async, sm_80 and later)

__device__ __forceinline__ void cp_async16(u32 saddr, const void* gptr) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(saddr), "l"(gptr) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Copy a 64x64 bf16 tile (global rows of 64 elements, 128 B, 16-byte aligned) into a padded smem tile.
__device__ __forceinline__ void cp_tile_async(bf16_t* dst, const bf16_t* src, int tid, int nthreads) {
  for (int c = tid; c < MBS * HD / 8; c += nthreads) {
    const int row = c >> 3, col = (c & 7) * 8;
    cp_async16(smem_u32(dst + row * LD + col), src + row * HD + col);
  }
}

// The same copy into a swizzled tile (sw64).
__device__ __forceinline__ void cp_tile_async_sw(bf16_t* dst, const bf16_t* src, int tid, int nthreads) {
  for (int c = tid; c < MBS * HD / 8; c += nthreads) {
    const int row = c >> 3, col = (c & 7) * 8;
    cp_async16(smem_u32(dst + sw64(row, col)), src + row * HD + col);
  }
}

// Copy the 64 fp32 learning rates of one mini-batch (256 B) into shared memory.
__device__ __forceinline__ void cp_eta_async(float* dst, const float* src, int tid) {
  if (tid < MBS / 4) cp_async16(smem_u32(dst + tid * 4), src + tid * 4);
}

// ------------------------------------------------------------------------------------------------
// element-wise math (fp32, the reference's formulas)

__device__ __forceinline__ float gelu_tanh_t(float x) {
  return tanhf(SQRT_2_OVER_PI * x * (1.0f + GELU_CUBIC * x * x));
}

__device__ __forceinline__ float gelu_from_t(float x, float t) { return 0.5f * x * (1.0f + t); }

// d gelu_tanh(x) / dx given t = tanh(sqrt(2/pi) x (1 + 0.044715 x^2))
__device__ __forceinline__ float gelu_bwd_from_t(float x, float t) {
  return 0.5f * x * ((1.0f - t * t) * (SQRT_2_OVER_PI + GELU_BWD_CUBIC * x * x)) + 0.5f * (1.0f + t);
}

// Sum over the 4 lanes of a quad (the lanes holding one accumulator row).
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}

// Sum over the 8 lanes sharing tq (the lanes holding one accumulator column pair).
__device__ __forceinline__ float column_sum8(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 4);
  x += __shfl_xor_sync(0xffffffffu, x, 8);
  x += __shfl_xor_sync(0xffffffffu, x, 16);
  return x;
}

// ------------------------------------------------------------------------------------------------
// Row-wise LayerNorm pieces on a warp's 16 x 64 accumulator block z[8][4] (8 n-tiles of 8 columns):
// this lane holds rows g (c0, c1) and g + 8 (c2, c3), columns 8 * nt + 2 * tq + {0, 1}.

struct RowStats {
  float mu[2];
  float std[2];
};

__device__ __forceinline__ RowStats row_stats(const float (&z)[8][4]) {
  RowStats s;
  float s0 = 0.f, s1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    s0 += z[nt][0] + z[nt][1];
    s1 += z[nt][2] + z[nt][3];
  }
  s.mu[0] = quad_sum(s0) * (1.0f / HD);
  s.mu[1] = quad_sum(s1) * (1.0f / HD);
  float v0 = 0.f, v1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const float a = z[nt][0] - s.mu[0], b = z[nt][1] - s.mu[0];
    const float c = z[nt][2] - s.mu[1], d = z[nt][3] - s.mu[1];
    v0 += a * a + b * b;
    v1 += c * c + d * d;
  }
  // biased variance, eps inside the sqrt, as inner_layer_norm / ln_fused_l2_bwd
  s.std[0] = sqrtf(quad_sum(v0) * (1.0f / HD) + LN_EPS);
  s.std[1] = sqrtf(quad_sum(v1) * (1.0f / HD) + LN_EPS);
  return s;
}

// In place: z <- LN(z) * w + b (w, b: 64 fp32 in shared memory).
__device__ __forceinline__ void layer_norm_rows(float (&z)[8][4], const float* w, const float* b, int tq) {
  const RowStats s = row_stats(z);
  const float r0 = 1.0f / s.std[0], r1 = 1.0f / s.std[1];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int c = 8 * nt + 2 * tq + e;
      z[nt][e] = (z[nt][e] - s.mu[0]) * r0 * w[c] + b[c];
      z[nt][2 + e] = (z[nt][2 + e] - s.mu[1]) * r1 * w[c] + b[c];
    }
  }
}

// In place: z <- d/dz of 0.5 * ||LN(z) * w + b - target||^2, row by row (ln_fused_l2_bwd).
// target[nt][*] holds V - K at the same positions as z.
__device__ __forceinline__ void ln_fused_l2_bwd_rows(float (&z)[8][4], const float (&target)[8][4], const float* w,
                                                     const float* b, int tq) {
  const RowStats s = row_stats(z);
  float sg[2] = {0.f, 0.f}, sgx[2] = {0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = j >> 1;
      const int c = 8 * nt + 2 * tq + (j & 1);
      const float xhat = (z[nt][j] - s.mu[h]) / s.std[h];
      const float g = (w[c] * xhat + b[c] - target[nt][j]) * w[c];
      z[nt][j] = xhat;  // keep xhat; g is rebuilt below
      sg[h] += g;
      sgx[h] += g * xhat;
    }
  }
  sg[0] = quad_sum(sg[0]);
  sg[1] = quad_sum(sg[1]);
  sgx[0] = quad_sum(sgx[0]);
  sgx[1] = quad_sum(sgx[1]);
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = j >> 1;
      const int c = 8 * nt + 2 * tq + (j & 1);
      const float xhat = z[nt][j];
      const float g = (w[c] * xhat + b[c] - target[nt][j]) * w[c];
      z[nt][j] = (HD * g - sg[h] - xhat * sgx[h]) / (HD * s.std[h]);
    }
  }
}

}  // namespace ttt
