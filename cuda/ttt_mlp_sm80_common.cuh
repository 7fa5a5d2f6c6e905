// ttt_mlp_sm80_common.cuh: the no-cluster TTT-MLP forward's state layout, shared-memory layout and phases
// (ttt_mlp_fwd_sm80.cu, whose header describes them). ttt_mlp_bwd_sm80.cu runs the same phases A, B and D
// to recompute the states of a checkpoint group (its phase 1), so they live here, once.
#pragma once

#include "ttt_common.cuh"

namespace ttt {
namespace mlp80 {

constexpr int F = 256;          // hidden units
constexpr int NWARP = 8;
constexpr int NTHREAD = NWARP * 32;
constexpr int FW = F / NWARP;   // hidden units per warp
constexpr int TILE = MBS * HD;  // elements of a 64 x 64 tile
constexpr int RBLOCKS = MBS / 16;  // row blocks of Z2 (16 rows; two warps each, 32 columns apiece)

struct Smem {
  bf16_t w2[F * HD];    // bf16 copy of W2 [f][d], swizzled
  bf16_t z1t[F * MBS];  // Z1^T = (X W1 + b1)^T [f][j], swizzled (X: K_i, then Q_i)
  bf16_t k[TILE];       // K_i [j][d]
  bf16_t q[TILE];       // Q_i [j][d]
  bf16_t vg[TILE];      // V_i [j][d] until phase B, then g2 [j][d] in place
  float eta[MBS];
  float b1[F];          // each warp reads and writes only its own 32 hidden units
  float b2[HD];
  float ln_w[HD];
  float ln_b[HD];
  float colpart2[RBLOCKS][HD];  // column sums of eta * g2 per row block
  float red[4][2][MBS];        // row sums of the two column halves (full_row_sums)
};

static_assert(sizeof(Smem) % 16 == 0, "Smem must keep 16-byte alignment");
static_assert(NTHREAD == F, "b1 is loaded and stored one hidden unit per thread");
static_assert(sizeof(Smem) <= 99 * 1024, "Smem exceeds the 99 KB per block of sm_86 / sm_89");

typedef float StateRows[2][8][4];  // this warp's 32 rows f x 64 columns d, mma accumulator layout

// Row f of m-tile mt and accumulator register j (lane = 4 g + tq).
__device__ __forceinline__ int state_row(int warp, int mt, int g, int j) { return FW * warp + 16 * mt + g + 8 * (j >> 1); }

__device__ __forceinline__ void load_state(StateRows& w1s, StateRows& w2s, const float* w1, const float* w2, int warp,
                                           int g, int tq) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int f = state_row(warp, mt, g, j), d = 8 * nt + 2 * tq + (j & 1);
        w1s[mt][nt][j] = w1[d * F + f];  // W1 [64][256]
        w2s[mt][nt][j] = w2[f * HD + d]; // W2 [256][64]
      }
    }
  }
}

__device__ __forceinline__ void store_state(const StateRows& w1s, const StateRows& w2s, float* w1, float* w2, int warp,
                                            int g, int tq) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int f = state_row(warp, mt, g, j), d = 8 * nt + 2 * tq + (j & 1);
        w1[d * F + f] = w1s[mt][nt][j];
        w2[f * HD + d] = w2s[mt][nt][j];
      }
    }
  }
}

// bf16 copy of this warp's rows of W2 (read by every warp in Z2 = X2 W2).
__device__ __forceinline__ void write_w2_shadow(Smem& s, const StateRows& w2s, int warp, int g, int tq) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const int f = state_row(warp, mt, g, 0), d = 8 * nt + 2 * tq;
      st_bf16x2(&s.w2[sw64(f, d)], w2s[mt][nt][0], w2s[mt][nt][1]);
      st_bf16x2(&s.w2[sw64(f + 8, d)], w2s[mt][nt][2], w2s[mt][nt][3]);
    }
  }
}

// Z^T[f][j] for this warp's 32 rows f and the 16 tokens j of chunk c: acc[mt][nt] (nt: tokens 16c + 8nt..)
// = sum_d W^T[f][d] X[j][d] with W^T from the state registers and X a swizzled [j][d] tile.
__device__ __forceinline__ void rows_times_tile(float (&acc)[2][2][4], const StateRows& ws, const bf16_t* x, int c,
                                                int lane) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mt][nt][j] = 0.f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    u32 b[4];
    load_b_nmajor_sw(b, x, 16 * c, 16 * kk, lane);  // B[d][j] = X[j][d]
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      u32 a[4];
      a_from_acc(a, ws[mt], kk);
      mma_bf16(acc[mt][0], a, b[0], b[1]);
      mma_bf16(acc[mt][1], a, b[2], b[3]);
    }
  }
}

// Z1^T = W1^T X^T + b1 for this warp's rows -> s.z1t (bf16; gelu is applied where it is read).
__device__ __forceinline__ void hidden_to_shared(Smem& s, const StateRows& w1s, const bf16_t* x, int warp, int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll 1
  for (int c = 0; c < MBS / 16; ++c) {
    float z[2][2][4];
    rows_times_tile(z, w1s, x, c, lane);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float bias = s.b1[state_row(warp, mt, g, 2 * h)];
          const float z0 = z[mt][nt][2 * h] + bias, z1 = z[mt][nt][2 * h + 1] + bias;
          st_bf16x2(&s.z1t[sw64(state_row(warp, mt, g, 2 * h), 16 * c + 8 * nt + 2 * tq)], z0, z1);
        }
      }
    }
  }
}

// gelu of both halves of a packed bf16 pair, repacked (X2 = gelu(Z1) as an mma operand).
__device__ __forceinline__ u32 gelu_bf16x2(u32 p) {
  const float lo = bf16_lo(p), hi = bf16_hi(p);
  return pack_bf16(gelu_from_t(lo, gelu_tanh_t(lo)), gelu_from_t(hi, gelu_tanh_t(hi)));
}

// This warp's block of Z2 = gelu(Z1) W2 + b2: rows 16 rb .. + 15, columns 32 ch .. + 31 (rb = warp & 3,
// ch = warp >> 2), from the shared Z1^T and W2 copies (16 k-steps over f).
__device__ __forceinline__ void z2_block(float (&zz)[4][4], const Smem& s, int warp, int lane) {
  const int tq = lane & 3, rb = warp & 3, ch = warp >> 2;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) zz[nt][j] = 0.f;
#pragma unroll 4
  for (int kk = 0; kk < F / 16; ++kk) {
    u32 a[4];
    load_a_t_sw(a, s.z1t, 16 * rb, 16 * kk, lane);  // A[j][f] = Z1^T[f][j] -> gelu
#pragma unroll
    for (int r = 0; r < 4; ++r) a[r] = gelu_bf16x2(a[r]);
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      u32 b[4];
      load_b_kmajor_sw(b, s.w2, 32 * ch + 16 * np, 16 * kk, lane);  // B[f][d] = W2[f][d]
      mma_bf16(zz[2 * np], a, b[0], b[1]);
      mma_bf16(zz[2 * np + 1], a, b[2], b[3]);
    }
  }
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) zz[nt][j] += s.b2[32 * ch + 8 * nt + 2 * tq + (j & 1)];
}

// Sums over all 64 columns of this lane's rows (16 rb + g and 16 rb + g + 8): quad sums of this warp's
// 32 columns plus those of warp ^ 4 (the other 32) through s.red[slot ..]. Every warp calls it (it holds
// a __syncthreads); each call of a phase uses its own slots, so no second barrier is needed.
template <int N>
__device__ __forceinline__ void full_row_sums(Smem& s, int slot, float (&v)[N][2], int warp, int lane) {
  const int g = lane >> 2, tq = lane & 3, rb = warp & 3, ch = warp >> 2;
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      v[n][h] = quad_sum(v[n][h]);
      if (tq == 0) s.red[slot + n][ch][16 * rb + g + 8 * h] = v[n][h];
    }
  __syncthreads();
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int h = 0; h < 2; ++h) v[n][h] += s.red[slot + n][ch ^ 1][16 * rb + g + 8 * h];
}

// Row mean and standard deviation (biased variance, eps inside the sqrt, as inner_layer_norm) of this
// lane's two rows; uses s.red slots 0 and 1.
__device__ __forceinline__ void row_stats_split(Smem& s, const float (&zz)[4][4], float (&mu)[2], float (&sd)[2],
                                                int warp, int lane) {
  float v[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    v[0][0] += zz[nt][0] + zz[nt][1];
    v[0][1] += zz[nt][2] + zz[nt][3];
  }
  full_row_sums<1>(s, 0, v, warp, lane);
  mu[0] = v[0][0] * (1.0f / HD);
  mu[1] = v[0][1] * (1.0f / HD);
  float d[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float x = zz[nt][j] - mu[j >> 1];
      d[0][j >> 1] += x * x;
    }
  full_row_sums<1>(s, 1, d, warp, lane);
  sd[0] = sqrtf(d[0][0] * (1.0f / HD) + LN_EPS);
  sd[1] = sqrtf(d[0][1] * (1.0f / HD) + LN_EPS);
}

// Phase B (all warps): g2 = ln_fused_l2_bwd(Z2, V - K) of this warp's block -> s.vg over V (each lane
// overwrites exactly the V elements it read), and column sums of eta g2 over its 16 rows.
__device__ __forceinline__ void inner_loss_grad(Smem& s, int warp, int lane) {
  const int g = lane >> 2, tq = lane & 3, rb = warp & 3, ch = warp >> 2;
  float zz[4][4];
  z2_block(zz, s, warp, lane);
  float mu[2], sd[2];
  row_stats_split(s, zz, mu, sd, warp, lane);
  const auto target = [&](int nt, int j) {  // V - K at the position of zz[nt][j]
    const int o = sw64(16 * rb + g + 8 * (j >> 1), 32 * ch + 8 * nt + 2 * tq + (j & 1));
    return __uint_as_float(static_cast<u32>(s.vg[o]) << 16) - __uint_as_float(static_cast<u32>(s.k[o]) << 16);
  };
  float sums[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // sum g, sum g * xhat
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = j >> 1, c = 32 * ch + 8 * nt + 2 * tq + (j & 1);
      const float xhat = (zz[nt][j] - mu[h]) / sd[h];
      const float gl = (s.ln_w[c] * xhat + s.ln_b[c] - target(nt, j)) * s.ln_w[c];
      zz[nt][j] = xhat;
      sums[0][h] += gl;
      sums[1][h] += gl * xhat;
    }
  full_row_sums<2>(s, 2, sums, warp, lane);
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = j >> 1, c = 32 * ch + 8 * nt + 2 * tq + (j & 1);
      const float xhat = zz[nt][j];
      const float gl = (s.ln_w[c] * xhat + s.ln_b[c] - target(nt, j)) * s.ln_w[c];
      zz[nt][j] = (HD * gl - sums[0][h] - xhat * sums[1][h]) / (HD * sd[h]);
    }
  const float e0 = s.eta[16 * rb + g], e1 = s.eta[16 * rb + g + 8];
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const int col = 32 * ch + 8 * nt + 2 * tq;
    st_bf16x2(&s.vg[sw64(16 * rb + g, col)], zz[nt][0], zz[nt][1]);
    st_bf16x2(&s.vg[sw64(16 * rb + g + 8, col)], zz[nt][2], zz[nt][3]);
    const float c0 = column_sum8(e0 * zz[nt][0] + e1 * zz[nt][2]);
    const float c1 = column_sum8(e0 * zz[nt][1] + e1 * zz[nt][3]);
    if (g == 0) {
      s.colpart2[rb][col] = c0;
      s.colpart2[rb][col + 1] = c1;
    }
  }
}

// Phase D for one warp: the gradients of its hidden units and the updates of W1, b1, W2 (+ shadow).
__device__ __forceinline__ void update_state(Smem& s, StateRows& w1s, StateRows& w2s, int warp, int lane) {
  const int g = lane >> 2, tq = lane & 3;
  float bsum[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
  // G^T = W2 g2^T needs the old W2, so every chunk's G comes before the W2 update below; W1 is not read
  // again this iteration (Z1 is in shared memory), so each chunk's W1 update is applied at once.
#pragma unroll 1  // one chunk at a time: unrolled, the W2 fragments would be kept for all four (spills)
  for (int c = 0; c < MBS / 16; ++c) {
    float gg[2][2][4];
    rows_times_tile(gg, w2s, s.vg, c, lane);  // G^T[f][j] = sum_d W2[f][d] g2[j][d]
    u32 neg_eg1[2][4];  // A fragments of (-eta g1)^T [f][j], k-step = this chunk's 16 tokens
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int j = 16 * c + 8 * nt + 2 * tq;
          float z0, z1;
          ld_bf16x2(&s.z1t[sw64(state_row(warp, mt, g, 2 * h), j)], z0, z1);
          const float g10 = gg[mt][nt][2 * h] * gelu_bwd_from_t(z0, gelu_tanh_t(z0));
          const float g11 = gg[mt][nt][2 * h + 1] * gelu_bwd_from_t(z1, gelu_tanh_t(z1));
          const float e0 = s.eta[j], e1 = s.eta[j + 1];
          bsum[mt][h] += e0 * g10 + e1 * g11;
          neg_eg1[mt][2 * nt + h] = pack_bf16(-e0 * g10, -e1 * g11);
        }
      }
    }
    // W1^T += (-eta g1)^T K over this chunk's tokens
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      u32 b[4];
      load_b_kmajor_sw(b, s.k, 16 * np, 16 * c, lane);  // B[j][d] = K[j][d]
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_bf16(w1s[mt][2 * np], neg_eg1[mt], b[0], b[1]);
        mma_bf16(w1s[mt][2 * np + 1], neg_eg1[mt], b[2], b[3]);
      }
    }
  }
  // W2 += (-eta X2)^T g2: A = gelu of this warp's rows of Z1^T, column j scaled by -eta_j
#pragma unroll 1  // one chunk at a time: unrolled, the W2 fragments would be kept for all four (spills)
  for (int c = 0; c < MBS / 16; ++c) {
    const float e0 = -s.eta[16 * c + 2 * tq], e1 = -s.eta[16 * c + 2 * tq + 1];
    const float e8 = -s.eta[16 * c + 8 + 2 * tq], e9 = -s.eta[16 * c + 9 + 2 * tq];
    u32 a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      load_a_sw(a[mt], s.z1t, FW * warp + 16 * mt, 16 * c, lane);  // A[f][j] = Z1^T[f][j]
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float lo = bf16_lo(a[mt][r]), hi = bf16_hi(a[mt][r]);
        const float elo = (r < 2) ? e0 : e8, ehi = (r < 2) ? e1 : e9;
        a[mt][r] = pack_bf16(elo * gelu_from_t(lo, gelu_tanh_t(lo)), ehi * gelu_from_t(hi, gelu_tanh_t(hi)));
      }
    }
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      u32 b[4];
      load_b_kmajor_sw(b, s.vg, 16 * np, 16 * c, lane);  // B[j][d] = g2[j][d]
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_bf16(w2s[mt][2 * np], a[mt], b[0], b[1]);
        mma_bf16(w2s[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const float d0 = quad_sum(bsum[mt][0]), d1 = quad_sum(bsum[mt][1]);
    if (tq == 0) {  // b1 rows are private to the warp
      s.b1[state_row(warp, mt, g, 0)] -= d0;
      s.b1[state_row(warp, mt, g, 2)] -= d1;
    }
  }
  write_w2_shadow(s, w2s, warp, g, tq);
}

// Phase F (all warps): out rows 16 rb .. + 15, columns 32 ch .. + 31 of mini-batch i = Q + LN(X2q W2 + b2).
__device__ __forceinline__ void readout_block(Smem& s, const bf16_t* gq, bf16_t* gout, int i, int warp, int lane) {
  const int g = lane >> 2, tq = lane & 3, rb = warp & 3, ch = warp >> 2;
  float zz[4][4];
  z2_block(zz, s, warp, lane);
  float mu[2], sd[2];
  row_stats_split(s, zz, mu, sd, warp, lane);
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int col = 32 * ch + 8 * nt + 2 * tq;
      const size_t o = (static_cast<size_t>(i) * MBS + 16 * rb + g + 8 * h) * HD + col;
      const float y0 = (zz[nt][2 * h] - mu[h]) / sd[h] * s.ln_w[col] + s.ln_b[col];
      const float y1 = (zz[nt][2 * h + 1] - mu[h]) / sd[h] * s.ln_w[col + 1] + s.ln_b[col + 1];
      const u32 qv = *reinterpret_cast<const u32*>(gq + o);
      *reinterpret_cast<u32*>(gout + o) = pack_bf16(bf16_lo(qv) + y0, bf16_hi(qv) + y1);
    }
  }
}

}  // namespace mlp80
}  // namespace ttt
