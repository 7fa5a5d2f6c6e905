// ttt_linear_bwd.cu: fused backward scan of TTT-Linear, bf16 in, fp32 gradients (sm_80 and later).
//
// ================================================================================================
// DESIGN
// ================================================================================================
// Specification: ttt_engine/ops/ttt/backward.py (ttt_scan_backward with linear_update,
// linear_readout_backward, linear_update_backward): this kernel is that loop, with the same order.
// f(x) = x + LN(x W + b), W [64 x 64]; mini-batch b = 64; the forward kernel (ttt_linear_fwd.cu) saved
// the fp32 state before every `ckpt_every`-th mini-batch (its checkpoints ck_w, ck_b).
//
// Grid: one CTA of 256 threads (8 warps) per (batch, head).
//
// The groups of ckpt_every mini-batches are visited from last to first. For group [g0, g1):
//   Phase 1 (recompute): from checkpoint g0 / ckpt_every, run the state updates of mini-batches
//     g0 .. last - 1 (last = n for the final group, g1 - 1 otherwise) exactly as the forward kernel does
//     (fp32 W^T in registers, Z = K W + b by warps 0..3, LN+L2 gradient, W^T += (-eta g)^T K by all
//     warps) and write every state S_i, i = g0 .. last, to the scratch buffer: W^T as bf16 (the matmul
//     operand the forward used), b as fp32.
//   Phase 2 (reverse): reverse steps j = last, last - 1, ..., g0. Step j reads S_j only:
//     read-out backward of mini-batch j - 1 (warps 0..3, rows of Q_{j-1}), if j >= 1:
//       Zq = Q W + b;  dZq = LN-backward(dO);  dln_w += sum dO xhat, dln_b += sum dO
//       dW += Q^T dZq,  db += sum dZq,  dQ = dO + dZq W^T
//     update backward of mini-batch j (warps 4..7, rows of K_j), if j < n, with dS_{j+1} = (dW', db'):
//       Z = K W + b;  g = LNL2'(Z, V - K);  dP = -(K dW' + db');  deta = rowsum(dP g)
//       (dZ, dT) = VJP of LNL2' with eta dP;  dW += K^T dZ,  db += sum dZ
//       dK = -(eta g) dW'^T + dZ W^T - dT,  dV = dT
//   The state gradient dW (fp32, "dS") lives in REGISTERS for the whole kernel, as mma accumulators with
//   the forward's state layout (warp w: rows o in [16 (w & 3), +16) of dW^T, columns i in
//   [32 (w >> 2), +32)): dW += Q^T dZq + K^T dZ is an mma accumulation into them. A bf16 copy of dW^T
//   (dS_{j+1}) in shared memory is the B operand of K dW' and (eta g) dW'^T; it is rewritten at the end
//   of each step, after every read of the old one. db, dln_w, dln_b accumulate in fp32 shared memory
//   (column partial sums per warp, reduced in a fixed order: the result is deterministic).
//
// Step j in phases (S0..S2 are __syncthreads):
//   top  issue the loads of step j - 1 (cp.async, other slot), wait for step j's, S0
//   A    warps 0..3: Zq = Q_{j-1} W + b;  warps 4..7: Z = K_j W + b          (16 rows x 64 per warp)
//   B    warps 0..3: dZq -> smem (bf16);  warps 4..7: g, -eta g -> smem, dP, deta -> global,
//        VJP -> dZ -> smem (bf16), -dT -> smem (fp32)                                            S1
//   C    all: dW^T += dZq^T Q + dZ^T K (registers);  warps 0..3: dQ -> global;
//        warps 4..7: dK, dV -> global;  threads 0..63: db, dln_w, dln_b += column partials         S2
//   D    bf16 copy of dW^T -> smem
// Every gradient element is written once (plain stores, fp32); nothing is atomic.
//
// Loads: one cp.async group per step into slot j & 1 (W^T and b of S_j from the scratch, Q_{j-1},
// dO_{j-1}, K_j, V_j, eta_j), issued at the top of step j + 1 (the slot was last read in step j + 2,
// before its S2), waited for with cp.async.wait_group 1.
//
// Shared memory (struct Smem): W^T [2][64][72] 18 KB, dW^T copy 9 KB, Q/dO/K/V [2][64][72] 72 KB,
// dZq/dZ/-eta g [64][72] 27 KB, -dT [64][64] fp32 16 KB, small fp32 vectors: 150.5 KB (sm_80: 163 KB,
// sm_90: 227 KB; not sm_86/sm_89, whose 99 KB the forward kernel fits).
//
// Global tensors (contiguous): q, k, v, dout [B, H, L, 64] bf16 (L = 64 n); eta [B, H, L] fp32;
// ln_w, ln_b [H, 64] fp32; ck_w [B, H, n_ckpt, 64, 64], ck_b [B, H, n_ckpt, 1, 64] fp32 (the forward's
// checkpoints); d_w [B, H, 64, 64], d_b [B, H, 1, 64] fp32: in dL/d(final state), out dL/d(initial
// state); dq, dk, dv [B, H, L, 64], deta [B, H, L] fp32 (out); dln_w, dln_b [B, H, 64] fp32 (out, the
// (batch, head)'s share; the host sums over the batch); scratch: scr_w [B * H, ckpt_every + 1, 64, 64]
// bf16, scr_b [B * H, ckpt_every + 1, 64] fp32.
// ================================================================================================

#include "ttt_bwd_common.cuh"

namespace ttt {
namespace linear_bwd {

constexpr int NWARP = 8;
constexpr int NTHREAD = NWARP * 32;

struct Smem {
  bf16_t wt[2][HD * LD];     // W^T [o][i] of S_j (slot j & 1)
  bf16_t dwt[HD * LD];       // bf16 copy of dW^T (dS_{j+1} during step j)
  bf16_t q[2][MBS * LD];     // Q_{j-1}
  bf16_t dout[2][MBS * LD];  // dO_{j-1}
  bf16_t k[2][MBS * LD];     // K_j
  bf16_t v[2][MBS * LD];     // V_j
  bf16_t dzq[MBS * LD];      // dZ of the read-out rows
  bf16_t dz[MBS * LD];       // dZ of the update rows
  bf16_t neg_eg[MBS * LD];   // -eta g
  float neg_dt[MBS * HD];    // -dT of the update rows
  float b[2][HD];            // b of S_j (slot j & 1)
  float bcur[HD];            // phase 1: b of the state being updated
  float eta[2][MBS];
  float ln_w[HD];
  float ln_b[HD];
  float db[HD];              // dL/db (dS_{j+1}'s during step j until C)
  float dlnw[HD];
  float dlnb[HD];
  float cs_w[NWARP][HD];     // per-warp column sums: dL/dln_w, dL/dln_b, dZ
  float cs_b[NWARP][HD];
  float cs_z[NWARP][HD];
};

static_assert(sizeof(Smem) % 16 == 0, "Smem must keep 16-byte alignment");
static_assert(sizeof(Smem) <= 163 * 1024, "Smem exceeds the 163 KB of an sm_80 block");

// W^T / dW^T register layout (as ttt_linear_fwd.cu): x[nt][j] = M^T[o][i],
// o = 16 (warp & 3) + g + 8 (j >> 1), i = 32 (warp >> 2) + 8 nt + 2 tq + (j & 1); M stored [in][out].
__device__ __forceinline__ void load_state(float (&ws)[4][4], const float* w, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int o = 16 * (warp & 3) + g + 8 * (j >> 1);
      const int i = 32 * (warp >> 2) + 8 * nt + 2 * tq + (j & 1);
      ws[nt][j] = w[i * HD + o];
    }
}

__device__ __forceinline__ void store_state(const float (&ws)[4][4], float* w, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int o = 16 * (warp & 3) + g + 8 * (j >> 1);
      const int i = 32 * (warp >> 2) + 8 * nt + 2 * tq + (j & 1);
      w[i * HD + o] = ws[nt][j];
    }
}

// bf16 copy of M^T [o][i] with row stride ld (shared: LD, the scratch in global memory: HD).
__device__ __forceinline__ void write_transposed_bf16(bf16_t* t, int ld, const float (&ws)[4][4], int warp, int g,
                                                      int tq) {
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const int o = 16 * (warp & 3) + g, i = 32 * (warp >> 2) + 8 * nt + 2 * tq;
    st_bf16x2(&t[o * ld + i], ws[nt][0], ws[nt][1]);
    st_bf16x2(&t[(o + 8) * ld + i], ws[nt][2], ws[nt][3]);
  }
}

}  // namespace linear_bwd
}  // namespace ttt

extern "C" __global__ void ttt_linear_bwd_smem_bytes(unsigned* out) {
  *out = (unsigned)sizeof(ttt::linear_bwd::Smem);
}

extern "C" __global__ void __launch_bounds__(ttt::linear_bwd::NTHREAD, 1)
    ttt_linear_bwd_bf16(const ttt::bf16_t* __restrict__ q, const ttt::bf16_t* __restrict__ k,
                        const ttt::bf16_t* __restrict__ v, const ttt::bf16_t* __restrict__ dout,
                        const float* __restrict__ eta, const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                        const float* __restrict__ ck_w, const float* __restrict__ ck_b, float* __restrict__ d_w,
                        float* __restrict__ d_b, float* __restrict__ dq, float* __restrict__ dk,
                        float* __restrict__ dv, float* __restrict__ deta, float* __restrict__ dln_w,
                        float* __restrict__ dln_b, ttt::bf16_t* __restrict__ scr_w, float* __restrict__ scr_b,
                        int heads, int n_mb, int ckpt_every, int n_ckpt) {
  using namespace ttt;
  using namespace ttt::linear_bwd;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int bh = blockIdx.x;
  const int head = bh % heads;
  const int n = n_mb;
  const int r0 = 16 * (warp & 3);  // this warp's 16 token rows in A / B / C
  const size_t seq = static_cast<size_t>(n) * MBS;
  const bf16_t* gq = q + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gk = k + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gv = v + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gdo = dout + static_cast<size_t>(bh) * seq * HD;
  const float* geta = eta + static_cast<size_t>(bh) * seq;
  float* gdq = dq + static_cast<size_t>(bh) * seq * HD;
  float* gdk = dk + static_cast<size_t>(bh) * seq * HD;
  float* gdv = dv + static_cast<size_t>(bh) * seq * HD;
  float* gdeta = deta + static_cast<size_t>(bh) * seq;
  bf16_t* sw = scr_w + static_cast<size_t>(bh) * (ckpt_every + 1) * HD * HD;
  float* sb = scr_b + static_cast<size_t>(bh) * (ckpt_every + 1) * HD;

  {
    uint4* p = reinterpret_cast<uint4*>(smem_raw);
    for (int i = tid; i < static_cast<int>(sizeof(Smem) / 16); i += NTHREAD) p[i] = make_uint4(0u, 0u, 0u, 0u);
  }
  __syncthreads();

  // dW (fp32 registers) and db start as dL/d(final state)
  float dws[4][4];
  load_state(dws, d_w + static_cast<size_t>(bh) * HD * HD, warp, g, tq);
  write_transposed_bf16(s.dwt, LD, dws, warp, g, tq);
  if (tid < HD) {
    s.db[tid] = d_b[static_cast<size_t>(bh) * HD + tid];
    s.ln_w[tid] = ln_w[head * HD + tid];
    s.ln_b[tid] = ln_b[head * HD + tid];
  }
  __syncthreads();

  for (int gi = n_ckpt - 1; gi >= 0; --gi) {
    const int g0 = gi * ckpt_every;
    const int g1 = min(g0 + ckpt_every, n);
    const int last = g1 == n ? n : g1 - 1;

    // ================= phase 1: states S_g0 .. S_last -> scratch =================
    {
      float ws[4][4];
      const size_t c = static_cast<size_t>(bh) * n_ckpt + gi;
      load_state(ws, ck_w + c * HD * HD, warp, g, tq);
      if (tid < HD) s.bcur[tid] = ck_b[c * HD + tid];
      if (g0 < last) {
        cp_tile_async(s.k[g0 & 1], gk + static_cast<size_t>(g0) * MBS * HD, tid, NTHREAD);
        cp_tile_async(s.v[g0 & 1], gv + static_cast<size_t>(g0) * MBS * HD, tid, NTHREAD);
        cp_eta_async(s.eta[g0 & 1], geta + static_cast<size_t>(g0) * MBS, tid);
      }
      cp_async_commit();
      for (int i = g0;; ++i) {
        write_transposed_bf16(sw + static_cast<size_t>(i - g0) * HD * HD, HD, ws, warp, g, tq);
        if (tid < HD) sb[static_cast<size_t>(i - g0) * HD + tid] = s.bcur[tid];
        if (i == last) break;
        write_transposed_bf16(s.wt[0], LD, ws, warp, g, tq);
        if (i + 1 < last) {
          const size_t off = static_cast<size_t>(i + 1) * MBS;
          cp_tile_async(s.k[(i + 1) & 1], gk + off * HD, tid, NTHREAD);
          cp_tile_async(s.v[(i + 1) & 1], gv + off * HD, tid, NTHREAD);
          cp_eta_async(s.eta[(i + 1) & 1], geta + off, tid);
        }
        cp_async_commit();
        cp_async_wait<1>();  // K_i, V_i, eta_i landed
        __syncthreads();     // P1a: + W^T copy and b visible

        const int sl = i & 1;
        if (warp < 4) {  // Z = K W + b, g, -eta g, column sums of eta g
          float zz[8][4];
          zero_block(zz);
          mma_rows16<HD, 8, false, false>(zz, s.k[sl], LD, r0, s.wt[0], LD, 0, lane);
          float target[8][4];
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = r0 + g + 8 * h, col = 8 * nt + 2 * tq;
              float v0, v1, k0, k1;
              ld_bf16x2(&s.v[sl][row * LD + col], v0, v1);
              ld_bf16x2(&s.k[sl][row * LD + col], k0, k1);
              target[nt][2 * h] = v0 - k0;
              target[nt][2 * h + 1] = v1 - k1;
              zz[nt][2 * h] += s.bcur[col];
              zz[nt][2 * h + 1] += s.bcur[col + 1];
            }
          }
          ln_fused_l2_bwd_rows(zz, target, s.ln_w, s.ln_b, tq);  // zz <- g
          const float e0 = s.eta[sl][r0 + g], e1 = s.eta[sl][r0 + g + 8];
          store_rows_bf16(s.neg_eg, LD, r0, 0, zz, lane, -e0, -e1);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            zz[nt][0] *= e0;
            zz[nt][1] *= e0;
            zz[nt][2] *= e1;
            zz[nt][3] *= e1;
          }
          colsum_rows16(zz, s.cs_b[warp], 0, lane);
        }
        __syncthreads();  // P1b
        if (tid < HD) s.bcur[tid] -= s.cs_b[0][tid] + s.cs_b[1][tid] + s.cs_b[2][tid] + s.cs_b[3][tid];
        // W^T[o][i] += sum_j (-eta g)[j][o] K[j][i]
        mma_rows16<MBS, 4, true, true>(ws, s.neg_eg, LD, 16 * (warp & 3), s.k[sl], LD, 32 * (warp >> 2), lane);
        __syncthreads();  // P1c: slots, -eta g and the column sums are free again
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the scratch is written

    // ================= phase 2: reverse steps last .. g0 =================
    auto issue_step = [&](int jj) {
      const int sl = jj & 1;
      cp_tile_async(s.wt[sl], sw + static_cast<size_t>(jj - g0) * HD * HD, tid, NTHREAD);
      cp_eta_async(s.b[sl], sb + static_cast<size_t>(jj - g0) * HD, tid);
      if (jj >= 1) {
        const size_t off = static_cast<size_t>(jj - 1) * MBS * HD;
        cp_tile_async(s.q[sl], gq + off, tid, NTHREAD);
        cp_tile_async(s.dout[sl], gdo + off, tid, NTHREAD);
      }
      if (jj < n) {
        const size_t off = static_cast<size_t>(jj) * MBS;
        cp_tile_async(s.k[sl], gk + off * HD, tid, NTHREAD);
        cp_tile_async(s.v[sl], gv + off * HD, tid, NTHREAD);
        cp_eta_async(s.eta[sl], geta + off, tid);
      }
    };
    issue_step(last);
    cp_async_commit();

    for (int j = last; j >= g0; --j) {
      if (j - 1 >= g0) issue_step(j - 1);
      cp_async_commit();
      cp_async_wait<1>();  // step j's group landed
      __syncthreads();     // S0: + last step's dW^T copy and db visible

      const int sl = j & 1;
      const bool has_out = j >= 1, has_upd = j < n;

      // ---- A + B ---------------------------------------------------------------------------------------
      if (warp < 4 ? has_out : has_upd) {
        float zz[8][4];
        zero_block(zz);
        mma_rows16<HD, 8, false, false>(zz, warp < 4 ? s.q[sl] : s.k[sl], LD, r0, s.wt[sl], LD, 0, lane);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) zz[nt][e] += s.b[sl][8 * nt + 2 * tq + (e & 1)];
        if (warp < 4) {  // read-out backward of mini-batch j - 1
          layer_norm_bwd_rows(zz, s.dout[sl], r0, s.ln_w, s.cs_w[warp], s.cs_b[warp], s.cs_z[warp], lane);
          store_rows_bf16(s.dzq, LD, r0, 0, zz, lane);
        } else {  // update backward of mini-batch j
          float zk[8][4], target[8][4];
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = r0 + g + 8 * h, col = 8 * nt + 2 * tq;
              float v0, v1, k0, k1;
              ld_bf16x2(&s.v[sl][row * LD + col], v0, v1);
              ld_bf16x2(&s.k[sl][row * LD + col], k0, k1);
              target[nt][2 * h] = v0 - k0;
              target[nt][2 * h + 1] = v1 - k1;
              zk[nt][2 * h] = zz[nt][2 * h];
              zk[nt][2 * h + 1] = zz[nt][2 * h + 1];
            }
          }
          ln_fused_l2_bwd_rows(zz, target, s.ln_w, s.ln_b, tq);  // zz <- g
          const float e0 = s.eta[sl][r0 + g], e1 = s.eta[sl][r0 + g + 8];
          store_rows_bf16(s.neg_eg, LD, r0, 0, zz, lane, -e0, -e1);
          // dP = -(K dW' + db'), B[i][o] = dW'[i][o] = dW'^T[o][i]
          float dp[8][4];
          zero_block(dp);
          mma_rows16<HD, 8, false, false>(dp, s.k[sl], LD, r0, s.dwt, LD, 0, lane);
          float de0 = 0.f, de1 = 0.f;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              dp[nt][e] = -(dp[nt][e] + s.db[8 * nt + 2 * tq + (e & 1)]);
              if (e < 2)
                de0 += dp[nt][e] * zz[nt][e];
              else
                de1 += dp[nt][e] * zz[nt][e];
              dp[nt][e] *= e < 2 ? e0 : e1;  // u = eta dP
            }
          }
          de0 = quad_sum(de0);
          de1 = quad_sum(de1);
          if (tq == 0) {
            gdeta[static_cast<size_t>(j) * MBS + r0 + g] = de0;
            gdeta[static_cast<size_t>(j) * MBS + r0 + g + 8] = de1;
          }
          lnl2_vjp_rows(zk, dp, s.v[sl], s.k[sl], r0, s.ln_w, s.ln_b, s.neg_dt, HD, s.cs_w[warp], s.cs_b[warp],
                        s.cs_z[warp], lane);  // zk <- dZ
          store_rows_bf16(s.dz, LD, r0, 0, zk, lane);
        }
      }
      __syncthreads();  // S1

      // ---- C -------------------------------------------------------------------------------------------
      // dW^T[o][i] += sum_j dZq[j][o] Q[j][i] + sum_j dZ[j][o] K[j][i]
      if (has_out) mma_rows16<MBS, 4, true, true>(dws, s.dzq, LD, 16 * (warp & 3), s.q[sl], LD, 32 * (warp >> 2), lane);
      if (has_upd) mma_rows16<MBS, 4, true, true>(dws, s.dz, LD, 16 * (warp & 3), s.k[sl], LD, 32 * (warp >> 2), lane);
      if (warp < 4 ? has_out : has_upd) {
        float acc[8][4];
        zero_block(acc);
        if (warp < 4) {  // dQ = dO + dZq W^T, B[o][i] = W^T[o][i]
          mma_rows16<HD, 8, false, true>(acc, s.dzq, LD, r0, s.wt[sl], LD, 0, lane);
          add_rows_bf16(acc, s.dout[sl], LD, r0, 0, lane);
          store_rows_f32(gdq + static_cast<size_t>(j - 1) * MBS * HD, HD, r0, 0, acc, lane);
        } else {  // dK = (-eta g) dW'^T + dZ W^T - dT,  dV = dT
          mma_rows16<HD, 8, false, true>(acc, s.neg_eg, LD, r0, s.dwt, LD, 0, lane);
          mma_rows16<HD, 8, false, true>(acc, s.dz, LD, r0, s.wt[sl], LD, 0, lane);
          add_rows_f32(acc, s.neg_dt, HD, r0, 0, lane);
          store_rows_f32(gdk + static_cast<size_t>(j) * MBS * HD, HD, r0, 0, acc, lane);
          zero_block(acc);
          add_rows_f32(acc, s.neg_dt, HD, r0, 0, lane);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = -acc[nt][e];
          store_rows_f32(gdv + static_cast<size_t>(j) * MBS * HD, HD, r0, 0, acc, lane);
        }
      }
      if (tid < HD) {
        float sum_z = 0.f, sum_w = 0.f, sum_b = 0.f;
        for (int w = 0; w < NWARP; ++w) {
          if (w < 4 ? !has_out : !has_upd) continue;
          sum_z += s.cs_z[w][tid];
          sum_w += s.cs_w[w][tid];
          sum_b += s.cs_b[w][tid];
        }
        s.db[tid] += sum_z;
        s.dlnw[tid] += sum_w;
        s.dlnb[tid] += sum_b;
      }
      __syncthreads();  // S2: every read of the old dW^T copy is done

      // ---- D -------------------------------------------------------------------------------------------
      write_transposed_bf16(s.dwt, LD, dws, warp, g, tq);
    }
    cp_async_wait<0>();
    __syncthreads();
  }

  store_state(dws, d_w + static_cast<size_t>(bh) * HD * HD, warp, g, tq);
  if (tid < HD) {
    d_b[static_cast<size_t>(bh) * HD + tid] = s.db[tid];
    dln_w[static_cast<size_t>(bh) * HD + tid] = s.dlnw[tid];
    dln_b[static_cast<size_t>(bh) * HD + tid] = s.dlnb[tid];
  }
}
