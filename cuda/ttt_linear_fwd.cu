// ttt_linear_fwd.cu: fused forward scan of TTT-Linear (ttt-mlp.md section 1), bf16 in, fp32 state.
//
// ================================================================================================
// DESIGN
// ================================================================================================
// Specification: ttt_engine/ops/ttt/reference.py (linear_step_primal). f(x) = x + LN(x W + b), W [64 x 64].
//
// Grid: one CTA of 256 threads (8 warps) per (batch, head); no cluster, so it runs on sm_80 and later.
//
// State: W in REGISTERS as fp32 mma accumulators for the whole sequence. Warp w holds W^T rows
// o in [16 (w & 3), +16) and columns i in [32 (w >> 2), +32) (16 floats a lane); the update
// W^T += (-eta g)^T K is an mma accumulation straight into them. After each update the warps write a
// bf16 copy of W^T into shared memory, from which the next matmul reads W with ldmatrix. b is fp32 in
// shared memory.
//
// One loop iteration i (0 <= i <= n):
//   A  ZZ = [Q_{i-1} ; K_i] W        [128 x 64], warp w computes rows 16 w .. 16 w + 15
//      (readout of mini-batch i-1 and forward of mini-batch i use the same state: one pass)
//   B  warps 0..3 (i >= 1): out[i-1] = Q + LN(ZZ + b)
//      warps 4..7 (i < n):  g = ln_fused_l2_bwd(ZZ + b, V - K); -eta g -> smem (bf16);
//                           column partial sums of eta g for b
//   C  b -= sum_j eta_j g_j;  W^T += (-eta g)^T K_i;  bf16 shadow of W^T
// Iteration 0 reads a zero Q tile; iteration n only finishes the last readout. Two __syncthreads per
// iteration.
//
// Loads (cp.async double buffering): group KVE(m) = {K_m, V_m, eta_m} into slot m & 1 is issued at the
// top of iteration m - 1; group Q(m) into Q slot m & 1 after B of iteration m - 1. Before A(i) a
// cp.async.wait_group 1 leaves only Q(i) in flight (A(i) needs Q_{i-1} and K_i).
//
// Shared memory: W^T shadow 9 KB, Q/K/V [2][64][72] bf16 54 KB, -eta g 9 KB, small fp32 vectors:
// 75.5 KB, so it also fits sm_86 / sm_89 (99 KB per block).
//
// Global tensors (contiguous): q, k, v, out [B, H, L, 64] bf16 (L = 64 n); eta [B, H, L] fp32;
// ln_w, ln_b [H, 64] fp32; w [B, H, 64, 64], b [B, H, 1, 64] fp32. Optional checkpoints of the state
// before mini-batch i (i % ckpt_every == 0) to ck_w [B, H, n_ckpt, 64, 64], ck_b [B, H, n_ckpt, 1, 64].
// ================================================================================================

#include "ttt_common.cuh"

namespace ttt {
namespace linear {

constexpr int NWARP = 8;
constexpr int NTHREAD = NWARP * 32;

struct Smem {
  bf16_t wt[HD * LD];       // W^T [o][i]: B operand (k = i, n = o), n-major
  bf16_t q[2][MBS * LD];
  bf16_t k[2][MBS * LD];
  bf16_t v[2][MBS * LD];
  bf16_t neg_eg[MBS * LD];  // -eta g [j][o]
  float eta[2][MBS];
  float b[HD];
  float ln_w[HD];
  float ln_b[HD];
  float colpart[4][HD];
};

static_assert(sizeof(Smem) % 16 == 0, "Smem must keep 16-byte alignment");
static_assert(sizeof(Smem) <= 99 * 1024, "Smem exceeds the 99 KB of an sm_86 block");

// This lane's 16 state entries: W^T[o][i] with o = 16 (warp & 3) + g (+8), i = 32 (warp >> 2) + 8 nt + 2 tq (+1).
__device__ __forceinline__ void load_state(float (&ws)[4][4], const float* w, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int o = 16 * (warp & 3) + g + 8 * (j >> 1);
      const int i = 32 * (warp >> 2) + 8 * nt + 2 * tq + (j & 1);
      ws[nt][j] = w[i * HD + o];  // W [in][out]
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

__device__ __forceinline__ void write_shadow(Smem& s, const float (&ws)[4][4], int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const int o = 16 * (warp & 3) + g, i = 32 * (warp >> 2) + 8 * nt + 2 * tq;
    st_bf16x2(&s.wt[o * LD + i], ws[nt][0], ws[nt][1]);
    st_bf16x2(&s.wt[(o + 8) * LD + i], ws[nt][2], ws[nt][3]);
  }
}

}  // namespace linear
}  // namespace ttt

extern "C" __global__ void ttt_linear_fwd_smem_bytes(unsigned* out) { *out = (unsigned)sizeof(ttt::linear::Smem); }

extern "C" __global__ void __launch_bounds__(ttt::linear::NTHREAD, 1)
    ttt_linear_fwd_bf16(const ttt::bf16_t* __restrict__ q, const ttt::bf16_t* __restrict__ k,
                        const ttt::bf16_t* __restrict__ v, const float* __restrict__ eta,
                        const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                        const float* __restrict__ w_in, const float* __restrict__ b_in, ttt::bf16_t* __restrict__ out,
                        float* __restrict__ w_out, float* __restrict__ b_out, float* __restrict__ ck_w,
                        float* __restrict__ ck_b, int heads, int n_mb, int ckpt_every, int n_ckpt) {
  using namespace ttt;
  using namespace ttt::linear;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int bh = blockIdx.x;
  const int head = bh % heads;
  const int n = n_mb;
  const size_t seq = static_cast<size_t>(n) * MBS;
  const bf16_t* gq = q + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gk = k + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gv = v + static_cast<size_t>(bh) * seq * HD;
  const float* geta = eta + static_cast<size_t>(bh) * seq;
  bf16_t* gout = out + static_cast<size_t>(bh) * seq * HD;

  {
    uint4* p = reinterpret_cast<uint4*>(smem_raw);
    for (int i = tid; i < static_cast<int>(sizeof(Smem) / 16); i += NTHREAD) p[i] = make_uint4(0u, 0u, 0u, 0u);
  }
  __syncthreads();

  // KVE(0) then Q(0)
  cp_tile_async(s.k[0], gk, tid, NTHREAD);
  cp_tile_async(s.v[0], gv, tid, NTHREAD);
  cp_eta_async(s.eta[0], geta, tid);
  cp_async_commit();
  cp_tile_async(s.q[0], gq, tid, NTHREAD);
  cp_async_commit();

  float ws[4][4];
  load_state(ws, w_in + static_cast<size_t>(bh) * HD * HD, warp, g, tq);
  write_shadow(s, ws, warp, g, tq);
  if (tid < HD) {
    s.b[tid] = b_in[static_cast<size_t>(bh) * HD + tid];
    s.ln_w[tid] = ln_w[head * HD + tid];
    s.ln_b[tid] = ln_b[head * HD + tid];
  }

  for (int i = 0;; ++i) {
    const bool has_grad = i < n;
    cp_async_wait<1>();  // KVE(i) and Q(i-1) landed; Q(i) may be in flight
    __syncthreads();     // T: also orders the previous C (state, b, shadow) before this A

    if (i + 1 < n) {  // KVE(i+1) into the slots of mini-batch i-1 (last read in C of i-1)
      const size_t off = static_cast<size_t>(i + 1) * MBS;
      cp_tile_async(s.k[(i + 1) & 1], gk + off * HD, tid, NTHREAD);
      cp_tile_async(s.v[(i + 1) & 1], gv + off * HD, tid, NTHREAD);
      cp_eta_async(s.eta[(i + 1) & 1], geta + off, tid);
    }
    cp_async_commit();

    if (ckpt_every > 0 && has_grad && i % ckpt_every == 0) {
      const size_t c = static_cast<size_t>(bh) * n_ckpt + i / ckpt_every;
      store_state(ws, ck_w + c * HD * HD, warp, g, tq);
      if (tid < HD) ck_b[c * HD + tid] = s.b[tid];
    }

    // ---- A: ZZ = [Q_{i-1} ; K_i] W --------------------------------------------------------------------
    const bf16_t* qprev = s.q[(i + 1) & 1];  // slot of mini-batch i-1 (zeros for i = 0)
    const bf16_t* kt = s.k[i & 1];
    float zz[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) zz[nt][j] = 0.f;
    {
      const bf16_t* rows = warp < 4 ? qprev : kt;
      const int r0 = 16 * (warp & 3);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        u32 a[4];
        load_a(a, rows, LD, r0, 16 * kk, lane);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          u32 b[4];
          load_b_nmajor(b, s.wt, LD, 16 * np, 16 * kk, lane);  // B[i][o] = W^T[o][i]
          mma_bf16(zz[2 * np], a, b[0], b[1]);
          mma_bf16(zz[2 * np + 1], a, b[2], b[3]);
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) zz[nt][j] += s.b[8 * nt + 2 * tq + (j & 1)];

    // ---- B: readout rows / gradient rows -------------------------------------------------------------
    if (warp < 4) {
      if (i > 0) {
        layer_norm_rows(zz, s.ln_w, s.ln_b, tq);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = 16 * warp + g + 8 * h, col = 8 * nt + 2 * tq;
            float q0, q1;
            ld_bf16x2(&qprev[row * LD + col], q0, q1);
            const size_t o = (static_cast<size_t>(i - 1) * MBS + row) * HD + col;
            *reinterpret_cast<u32*>(gout + o) = pack_bf16(q0 + zz[nt][2 * h], q1 + zz[nt][2 * h + 1]);
          }
        }
      }
    } else if (has_grad) {
      const int w4 = warp - 4;
      const bf16_t* vt = s.v[i & 1];
      float target[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = 16 * w4 + g + 8 * h, col = 8 * nt + 2 * tq;
          float v0, v1, k0, k1;
          ld_bf16x2(&vt[row * LD + col], v0, v1);
          ld_bf16x2(&kt[row * LD + col], k0, k1);
          target[nt][2 * h] = v0 - k0;
          target[nt][2 * h + 1] = v1 - k1;
        }
      }
      ln_fused_l2_bwd_rows(zz, target, s.ln_w, s.ln_b, tq);  // zz <- g
      const float* et = s.eta[i & 1];
      const float e0 = et[16 * w4 + g], e1 = et[16 * w4 + g + 8];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int col = 8 * nt + 2 * tq;
        st_bf16x2(&s.neg_eg[(16 * w4 + g) * LD + col], -e0 * zz[nt][0], -e0 * zz[nt][1]);
        st_bf16x2(&s.neg_eg[(16 * w4 + g + 8) * LD + col], -e1 * zz[nt][2], -e1 * zz[nt][3]);
        const float c0 = column_sum8(e0 * zz[nt][0] + e1 * zz[nt][2]);
        const float c1 = column_sum8(e0 * zz[nt][1] + e1 * zz[nt][3]);
        if (g == 0) {
          s.colpart[w4][col] = c0;
          s.colpart[w4][col + 1] = c1;
        }
      }
    }
    if (!has_grad) break;
    __syncthreads();  // U

    if (i + 1 < n)  // Q(i+1) into the slot of Q_{i-1} (last read in A / B above)
      cp_tile_async(s.q[(i + 1) & 1], gq + static_cast<size_t>(i + 1) * MBS * HD, tid, NTHREAD);
    cp_async_commit();

    // ---- C: b -= sum eta g; W^T += (-eta g)^T K_i; shadow ---------------------------------------------
    if (tid < HD) s.b[tid] -= s.colpart[0][tid] + s.colpart[1][tid] + s.colpart[2][tid] + s.colpart[3][tid];
#pragma unroll
    for (int kk = 0; kk < MBS / 16; ++kk) {
      u32 a[4];
      load_a_t(a, s.neg_eg, LD, 16 * (warp & 3), 16 * kk, lane);  // A[o][j] = (-eta g)[j][o]
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        u32 b[4];
        load_b_kmajor(b, kt, LD, 32 * (warp >> 2) + 16 * np, 16 * kk, lane);  // B[j][i] = K[j][i]
        mma_bf16(ws[2 * np], a, b[0], b[1]);
        mma_bf16(ws[2 * np + 1], a, b[2], b[3]);
      }
    }
    write_shadow(s, ws, warp, g, tq);
  }
  cp_async_wait<0>();

  store_state(ws, w_out + static_cast<size_t>(bh) * HD * HD, warp, g, tq);
  if (tid < HD) b_out[static_cast<size_t>(bh) * HD + tid] = s.b[tid];
}
