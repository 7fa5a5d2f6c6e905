// ttt_bwd_common.cuh: device helpers of the backward scan kernels (ttt_linear_bwd.cu, ttt_mlp_bwd.cu).
//
// Like ttt_common.cuh (which it builds on): no system #include, so nvcc and NVRTC compile the same text.
// The math is ttt_engine/ops/ttt/backward.py; the formulas are repeated next to each helper.
//
// Accumulator blocks: a warp's 16 x (8 NT) block x[NT][4] at rows m0.., cols n0.. holds, in lane
// (g = lane / 4, tq = lane % 4), rows m0 + g (x[nt][0], x[nt][1]) and m0 + g + 8 (x[nt][2], x[nt][3]),
// columns n0 + 8 nt + 2 tq (+1): the mma.m16n8k16 C layout of ttt_common.cuh.
#pragma once

#include "ttt_common.cuh"

namespace ttt {

template <int NT>
__device__ __forceinline__ void zero_block(float (&x)[NT][4]) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) x[nt][j] = 0.f;
}

// acc (16 x 8NT at rows m0, cols n0) += A[m0.., 0..K) * B[0..K), n0..), bf16 operands in shared memory.
// AT: A[m][k] = SA[k][m] (the tile holds A^T), else A[m][k] = SA[m][k].
// BK: B[k][n] = SB[k][n] ("k-major"), else B[k][n] = SB[n][k] ("n-major").
template <int K, int NT, bool AT, bool BK>
__device__ __forceinline__ void mma_rows16(float (&acc)[NT][4], const bf16_t* sa, int lda, int m0, const bf16_t* sb,
                                           int ldb, int n0, int lane) {
  static_assert(NT % 2 == 0 && K % 16 == 0, "mma_rows16: NT even, K a multiple of 16");
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    u32 a[4];
    if (AT)
      load_a_t(a, sa, lda, m0, 16 * kk, lane);
    else
      load_a(a, sa, lda, m0, 16 * kk, lane);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      u32 b[4];
      if (BK)
        load_b_kmajor(b, sb, ldb, n0 + 16 * np, 16 * kk, lane);
      else
        load_b_nmajor(b, sb, ldb, n0 + 16 * np, 16 * kk, lane);
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// The same for a 32-row block (two m-tiles at m0 and m0 + 16 sharing the B fragments). The k loop is
// not unrolled: each step already issues 2 NT independent mma, and unrolling it makes ptxas hoist the
// fragment loads of every step, which spills in ttt_mlp_bwd.cu (255 registers, state gradient live).
template <int K, int NT, bool AT, bool BK>
__device__ __forceinline__ void mma_rows32(float (&acc)[2][NT][4], const bf16_t* sa, int lda, int m0,
                                           const bf16_t* sb, int ldb, int n0, int lane) {
  static_assert(NT % 2 == 0 && K % 16 == 0, "mma_rows32: NT even, K a multiple of 16");
#pragma unroll 1
  for (int kk = 0; kk < K / 16; ++kk) {
    u32 a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      if (AT)
        load_a_t(a[mt], sa, lda, m0 + 16 * mt, 16 * kk, lane);
      else
        load_a(a[mt], sa, lda, m0 + 16 * mt, 16 * kk, lane);
    }
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      u32 b[4];
      if (BK)
        load_b_kmajor(b, sb, ldb, n0 + 16 * np, 16 * kk, lane);
      else
        load_b_nmajor(b, sb, ldb, n0 + 16 * np, 16 * kk, lane);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_bf16(acc[mt][2 * np], a[mt], b[0], b[1]);
        mma_bf16(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// x (16 x 8NT block at rows row0, cols n0) -> bf16 tile t (row stride ld), optionally scaled per row.
template <int NT>
__device__ __forceinline__ void store_rows_bf16(bf16_t* t, int ld, int row0, int n0, const float (&x)[NT][4], int lane,
                                                float scale0 = 1.f, float scale1 = 1.f) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int c = n0 + 8 * nt + 2 * tq;
    st_bf16x2(&t[(row0 + g) * ld + c], scale0 * x[nt][0], scale0 * x[nt][1]);
    st_bf16x2(&t[(row0 + g + 8) * ld + c], scale1 * x[nt][2], scale1 * x[nt][3]);
  }
}

// x -> fp32 rows (row-major, row stride ld): shared or global memory.
template <int NT>
__device__ __forceinline__ void store_rows_f32(float* t, int ld, int row0, int n0, const float (&x)[NT][4], int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int c = n0 + 8 * nt + 2 * tq;
    *reinterpret_cast<float2*>(&t[(row0 + g) * ld + c]) = make_float2(x[nt][0], x[nt][1]);
    *reinterpret_cast<float2*>(&t[(row0 + g + 8) * ld + c]) = make_float2(x[nt][2], x[nt][3]);
  }
}

// x += fp32 rows (row-major, row stride ld).
template <int NT>
__device__ __forceinline__ void add_rows_f32(float (&x)[NT][4], const float* t, int ld, int row0, int n0, int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int c = n0 + 8 * nt + 2 * tq;
    const float2 a = *reinterpret_cast<const float2*>(&t[(row0 + g) * ld + c]);
    const float2 b = *reinterpret_cast<const float2*>(&t[(row0 + g + 8) * ld + c]);
    x[nt][0] += a.x;
    x[nt][1] += a.y;
    x[nt][2] += b.x;
    x[nt][3] += b.y;
  }
}

// x += bf16 tile rows.
template <int NT>
__device__ __forceinline__ void add_rows_bf16(float (&x)[NT][4], const bf16_t* t, int ld, int row0, int n0, int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int c = n0 + 8 * nt + 2 * tq;
    float a0, a1, b0, b1;
    ld_bf16x2(&t[(row0 + g) * ld + c], a0, a1);
    ld_bf16x2(&t[(row0 + g + 8) * ld + c], b0, b1);
    x[nt][0] += a0;
    x[nt][1] += a1;
    x[nt][2] += b0;
    x[nt][3] += b1;
  }
}

// Column sums over the block's 16 rows: lanes with g == 0 write cs[n0 + 8 nt + 2 tq (+1)].
template <int NT>
__device__ __forceinline__ void colsum_rows16(const float (&x)[NT][4], float* cs, int n0, int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const float c0 = column_sum8(x[nt][0] + x[nt][2]);
    const float c1 = column_sum8(x[nt][1] + x[nt][3]);
    if (g == 0) {
      cs[n0 + 8 * nt + 2 * tq] = c0;
      cs[n0 + 8 * nt + 2 * tq + 1] = c1;
    }
  }
}

// Row sums over the block's 8NT columns (both rows of this lane): returns {row g, row g + 8} in every lane
// of the quad.
template <int NT>
__device__ __forceinline__ float2 rowsum_quad(const float (&x)[NT][4]) {
  float a = 0.f, b = 0.f;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    a += x[nt][0] + x[nt][1];
    b += x[nt][2] + x[nt][3];
  }
  return make_float2(quad_sum(a), quad_sum(b));
}

// d/dx of gelu_bwd_from_t (the derivative of the formula as written), given t = gelu_tanh_t(x):
//   dt = (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2),  p = sqrt(2/pi) + 0.1070322243 x^2
//   gelu'' = 0.5 (1 - t^2) p - x t dt p + x^2 (1 - t^2) 0.1070322243 + 0.5 dt
__device__ __forceinline__ float gelu_bwd2_from_t(float x, float t) {
  const float omt = 1.0f - t * t;
  const float dt = omt * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC * x * x);
  const float p = SQRT_2_OVER_PI + GELU_BWD_CUBIC * x * x;
  return 0.5f * omt * p - x * t * dt * p + x * x * omt * GELU_BWD_CUBIC + 0.5f * dt;
}

// ------------------------------------------------------------------------------------------------
// Backward of the read-out LayerNorm, y = LN(z) * w + b, on this warp's 16 x 64 rows (row0..):
//   xhat = (z - mu) / std,  dxhat = dy * w,  dz = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / std
// In place: z (Z, bias included) <- dz. dy: bf16 rows (row stride ldy: LD for a padded tile). Column
// sums over the 16 rows of dy * xhat (dL/dw), dy (dL/db) and dz go to cs_w, cs_b, cs_z (64 floats each,
// g == 0 lanes write).
__device__ __forceinline__ void layer_norm_bwd_rows(float (&z)[8][4], const bf16_t* dyt, int row0, const float* w,
                                                    float* cs_w, float* cs_b, float* cs_z, int lane, int ldy = LD) {
  const int g = lane >> 2, tq = lane & 3;
  const RowStats st = row_stats(z);
  float sd[2] = {0.f, 0.f}, sdx[2] = {0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    float cw[2] = {0.f, 0.f}, cb[2] = {0.f, 0.f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float dy[2];
      ld_bf16x2(&dyt[(row0 + g + 8 * h) * ldy + 8 * nt + 2 * tq], dy[0], dy[1]);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = 8 * nt + 2 * tq + e;
        const float xh = (z[nt][2 * h + e] - st.mu[h]) / st.std[h];
        z[nt][2 * h + e] = xh;
        const float dxh = dy[e] * w[c];
        sd[h] += dxh;
        sdx[h] += dxh * xh;
        cw[e] += dy[e] * xh;
        cb[e] += dy[e];
      }
    }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float a = column_sum8(cw[e]), b = column_sum8(cb[e]);
      if (g == 0) {
        cs_w[8 * nt + 2 * tq + e] = a;
        cs_b[8 * nt + 2 * tq + e] = b;
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    sd[h] = quad_sum(sd[h]) * (1.0f / HD);
    sdx[h] = quad_sum(sdx[h]) * (1.0f / HD);
  }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    float cz[2] = {0.f, 0.f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float dy[2];
      ld_bf16x2(&dyt[(row0 + g + 8 * h) * ldy + 8 * nt + 2 * tq], dy[0], dy[1]);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = 8 * nt + 2 * tq + e;
        const float xh = z[nt][2 * h + e];
        const float dz = (dy[e] * w[c] - sd[h] - xh * sdx[h]) / st.std[h];
        z[nt][2 * h + e] = dz;
        cz[e] += dz;
      }
    }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float a = column_sum8(cz[e]);
      if (g == 0) cs_z[8 * nt + 2 * tq + e] = a;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Vector-Jacobian product of the fused LN + L2 inner gradient g = LNL2'(z, t) (ln_fused_l2_bwd), with
// u = dL/dg, on this warp's 16 x 64 rows. Per row (D = 64, t = V - K from the bf16 rows vt, kt, row
// stride ldvk: LD for padded tiles):
//   xhat = (z - mu) / std,  r = w xhat + b - t,  h = r w,  a = mean(h),  c = mean(h xhat)
//   g = (h - a - xhat c) / std;  sum(u g) = (sum(u h) - a sum(u) - c sum(u xhat)) / std
//   dh = (u - mean(u) - xhat mean(u xhat)) / std
//   dxhat = w^2 dh - (c u + h mean(u xhat)) / std,   dstd = -sum(u g) / std
//   dz = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / std + dstd xhat / D
//   dt = -w dh  (so dV += dt, dK -= dt),  dL/dw = sum_rows dh (r + w xhat),  dL/db = sum_rows dh w
// In place: z (Z, bias included) <- dz; u is destroyed (overwritten with dxhat). u: the warp's 16 x 64
// block in registers, or fp32 rows in shared memory (row stride HD), which keeps it out of registers
// beside a register-resident state gradient (ttt_mlp_bwd_sm80.cu). -dt = w dh is written to neg_dt (fp32
// rows, row stride ld_dt). Column sums over the 16 rows of dL/dw, dL/db and dz go to cs_w, cs_b, cs_z.
__device__ __forceinline__ float& vjp_u(float (&u)[8][4], int nt, int j, int, int) { return u[nt][j]; }
__device__ __forceinline__ float& vjp_u(float* u, int, int, int row, int col) { return u[row * HD + col]; }

template <class U>
__device__ __forceinline__ void lnl2_vjp_rows(float (&z)[8][4], U&& u, const bf16_t* vt, const bf16_t* kt,
                                              int row0, const float* w, const float* b, float* neg_dt, int ld_dt,
                                              float* cs_w, float* cs_b, float* cs_z, int lane, int ldvk = LD) {
  const int g = lane >> 2, tq = lane & 3;
  const RowStats st = row_stats(z);
  float sh[2] = {0.f, 0.f}, shx[2] = {0.f, 0.f}, su[2] = {0.f, 0.f}, sux[2] = {0.f, 0.f}, suh[2] = {0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + g + 8 * h;
      float v2[2], k2[2];
      ld_bf16x2(&vt[row * ldvk + 8 * nt + 2 * tq], v2[0], v2[1]);
      ld_bf16x2(&kt[row * ldvk + 8 * nt + 2 * tq], k2[0], k2[1]);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = 8 * nt + 2 * tq + e;
        const float xh = (z[nt][2 * h + e] - st.mu[h]) / st.std[h];
        z[nt][2 * h + e] = xh;
        const float hh = (w[c] * xh + b[c] - (v2[e] - k2[e])) * w[c];
        const float uu = vjp_u(u, nt, 2 * h + e, row, c);
        sh[h] += hh;
        shx[h] += hh * xh;
        su[h] += uu;
        sux[h] += uu * xh;
        suh[h] += uu * hh;
      }
    }
  }
  float a[2], c[2], mu_u[2], mux[2], dstd[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    a[h] = quad_sum(sh[h]) * (1.0f / HD);
    c[h] = quad_sum(shx[h]) * (1.0f / HD);
    const float s_u = quad_sum(su[h]), s_ux = quad_sum(sux[h]), s_uh = quad_sum(suh[h]);
    mu_u[h] = s_u * (1.0f / HD);
    mux[h] = s_ux * (1.0f / HD);
    dstd[h] = -((s_uh - a[h] * s_u - c[h] * s_ux) / st.std[h]) / st.std[h];
  }
  float sdx[2] = {0.f, 0.f}, sdxx[2] = {0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    float cw[2] = {0.f, 0.f}, cb[2] = {0.f, 0.f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + g + 8 * h;
      float v2[2], k2[2], ndt[2];
      ld_bf16x2(&vt[row * ldvk + 8 * nt + 2 * tq], v2[0], v2[1]);
      ld_bf16x2(&kt[row * ldvk + 8 * nt + 2 * tq], k2[0], k2[1]);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * nt + 2 * tq + e;
        const float xh = z[nt][2 * h + e];
        const float r = w[col] * xh + b[col] - (v2[e] - k2[e]);
        const float hh = r * w[col];
        float& ur = vjp_u(u, nt, 2 * h + e, row, col);
        const float uu = ur;
        const float dh = (uu - mu_u[h] - xh * mux[h]) / st.std[h];
        const float dxh = w[col] * w[col] * dh - (c[h] * uu + hh * mux[h]) / st.std[h];
        ur = dxh;
        sdx[h] += dxh;
        sdxx[h] += dxh * xh;
        cw[e] += dh * (r + w[col] * xh);
        cb[e] += dh * w[col];
        ndt[e] = w[col] * dh;
      }
      *reinterpret_cast<float2*>(&neg_dt[row * ld_dt + 8 * nt + 2 * tq]) = make_float2(ndt[0], ndt[1]);
    }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float sw = column_sum8(cw[e]), sb = column_sum8(cb[e]);
      if (g == 0) {
        cs_w[8 * nt + 2 * tq + e] = sw;
        cs_b[8 * nt + 2 * tq + e] = sb;
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    sdx[h] = quad_sum(sdx[h]) * (1.0f / HD);
    sdxx[h] = quad_sum(sdxx[h]) * (1.0f / HD);
  }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    float cz[2] = {0.f, 0.f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float xh = z[nt][2 * h + e];
        const float dxh = vjp_u(u, nt, 2 * h + e, row0 + g + 8 * h, 8 * nt + 2 * tq + e);
        const float dz = (dxh - sdx[h] - xh * sdxx[h]) / st.std[h] + dstd[h] * xh * (1.0f / HD);
        z[nt][2 * h + e] = dz;
        cz[e] += dz;
      }
    }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float s = column_sum8(cz[e]);
      if (g == 0) cs_z[8 * nt + 2 * tq + e] = s;
    }
  }
}

}  // namespace ttt
