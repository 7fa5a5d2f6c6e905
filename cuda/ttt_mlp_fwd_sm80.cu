// ttt_mlp_fwd_sm80.cu: fused forward scan of TTT-MLP without thread-block clusters (sm_80, sm_86, sm_89;
// it also runs on sm_90), bf16 in, fp32 state. Same arguments and results as ttt_mlp_fwd.cu.
//
// ================================================================================================
// DESIGN
// ================================================================================================
// Specification: ttt_engine/ops/ttt/reference.py (mlp_step_primal). D = 64, b = 64, F = 256 fixed.
//
// Grid: one CTA per (batch, head), 256 threads (8 warps), one CTA per SM. The whole fp32 state
// (W1 64x256 + W2 256x64 = 128 KB) lives in REGISTERS, split over the warps by hidden unit ("on-chip
// tensor parallel" over warps instead of over a cluster): warp w owns f in [32 w, 32 w + 32), i.e. rows
// f of W1^T [f][d] and of W2 [f][d], as mma accumulators (2 m-tiles x 8 n-tiles: 64 + 64 floats a lane);
// its b1[f] are fp32 in shared memory (rows private to the warp). Everything local in f runs from those
// registers, with the accumulator -> A-fragment identity (a_from_acc) instead of a bf16 copy:
//   Z1^T = W1^T X^T + b1           A = W1^T (registers), B = X tile (ldmatrix)
//   G^T  = W2 g2^T                 A = W2 (registers),   B = g2 tile
//   W1^T += (-eta g1)^T K          A = -eta g1^T (registers, built in place), B = K
//   W2   += (-eta X2)^T g2          A = gelu(Z1^T) of the warp's own rows, scaled by -eta; B = g2
// The one contraction over f, Z2 = gelu(Z1) W2, needs every warp's hidden units: each warp stores its
// rows of Z1^T (pre-activation, bf16) and a bf16 copy of its rows of W2 in shared memory; then warp w
// computes the 16 x 32 block (rows 16 (w & 3), columns 32 (w >> 2)) of Z2 over all 256 f, applying gelu
// to the A fragments as it loads them. The row-wise LayerNorm (and its fused backward) sums each row
// over the two warps holding its halves (quad shuffles, then s.red with one __syncthreads per sum).
// Keeping Z1 rather than gelu(Z1) in shared memory gives gelu'(Z1) for the gradient without holding it
// in registers from the forward to the backward half (the register pressure of ttt_mlp_fwd.cu).
//
// One iteration i (mini-batch i: K_i, V_i, Q_i, eta_i), all warps in every phase:
//   A   Z1^T = W1^T K_i^T + b1 -> shared (bf16)
//   B   Z2 = gelu(Z1) W2 + b2; g2 = ln_fused_l2_bwd(Z2, V - K) -> shared over V (bf16);
//       column sums of eta g2 for b2 (3 row sums across warps)
//   D   b2 -= sum eta g2; per 16-token chunk: G^T = W2 g2^T (old W2), g1 = G gelu'(Z1), -eta g1 -> A
//       fragments -> W1^T update (W1 is not read again in this iteration), row sums of eta g1; then the
//       W2 update (after every chunk's G: it needs the old W2), b1, and the W2 copy rewritten
//   F   Z1q^T = W1^T Q_i^T + b1 -> shared; out_i = Q_i + LN(gelu(Z1q) W2 + b2) (2 row sums)
// __syncthreads per iteration: 5 between phases (after the loads' wait, A, B, D, F's Z1 store) and 5
// inside the row sums.
//
// Loads: cp.async, each tile requested one phase or more before it is read:
//   after D of iteration i:  K_{i+1}, V_{i+1}, eta_{i+1}  (their slots were last read in D)
//   after F's Z1 store:      Q_{i+1}                        (Q_i was last read there)
// Waits: cp.async.wait_group 1 at the top of iteration i (K, V, eta of i landed, Q_i may be in flight),
// wait_group 0 at the end of D (Q_i landed). The residual Q_i of the output is read from global memory
// (L2: it was just loaded), which frees the Q slot for the prefetch.
//
// Shared memory (struct Smem): 95,232 B = 93 KB, under the 99 KB per block of sm_86 / sm_89 (6 KB to
// spare) and the 163 KB of sm_80: W2 copy [256][64] bf16 32 KB, Z1^T [256][64] 32 KB, K, Q, V/g2 tiles
// 8 KB each, eta, b1, b2, ln_w, ln_b, column partials and row-sum halves 4.5 KB. Tiles are swizzled
// (sw64), not padded: padding would cost 9 KB more.
//
// Registers: 128 a lane hold the state; with nvcc 13.0 and NVRTC 13.5 the kernel does not spill even
// when capped at 224 registers (tests/cuda/test_compile.py), 31 under the 255 it may use.
//
// Checkpoints (optional, for the backward kernel): if ckpt_every > 0 the state before mini-batch i
// (i % ckpt_every == 0) is written to ck_* [B, H, n_ckpt, ...] in fp32, as ttt_mlp_fwd.cu.
// Layout of the global tensors: as ttt_mlp_fwd.cu.
// ================================================================================================

#include "ttt_mlp_sm80_common.cuh"

// Bytes of dynamic shared memory the kernel needs (the loader reads it with a one-thread launch).
extern "C" __global__ void ttt_mlp_fwd_sm80_smem_bytes(unsigned* out) {
  *out = (unsigned)sizeof(ttt::mlp80::Smem);
}

extern "C" __global__ void __launch_bounds__(ttt::mlp80::NTHREAD, 1)
    ttt_mlp_fwd_sm80_bf16(const ttt::bf16_t* __restrict__ q, const ttt::bf16_t* __restrict__ k,
                          const ttt::bf16_t* __restrict__ v, const float* __restrict__ eta,
                          const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                          const float* __restrict__ w1_in, const float* __restrict__ b1_in,
                          const float* __restrict__ w2_in, const float* __restrict__ b2_in,
                          ttt::bf16_t* __restrict__ out, float* __restrict__ w1_out, float* __restrict__ b1_out,
                          float* __restrict__ w2_out, float* __restrict__ b2_out, float* __restrict__ ck_w1,
                          float* __restrict__ ck_b1, float* __restrict__ ck_w2, float* __restrict__ ck_b2,
                          int heads, int n_mb, int ckpt_every, int n_ckpt) {
  using namespace ttt;
  using namespace ttt::mlp80;
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

  // first loads: {K0, V0, eta0}, then {Q0}
  if (n > 0) {
    cp_tile_async_sw(s.k, gk, tid, NTHREAD);
    cp_tile_async_sw(s.vg, gv, tid, NTHREAD);
    cp_eta_async(s.eta, geta, tid);
  }
  cp_async_commit();
  if (n > 0) cp_tile_async_sw(s.q, gq, tid, NTHREAD);
  cp_async_commit();

  float w1s[2][8][4], w2s[2][8][4];
  load_state(w1s, w2s, w1_in + static_cast<size_t>(bh) * HD * F, w2_in + static_cast<size_t>(bh) * F * HD, warp, g,
             tq);
  s.b1[tid] = b1_in[static_cast<size_t>(bh) * F + tid];
  write_w2_shadow(s, w2s, warp, g, tq);
  if (tid < HD) {
    s.b2[tid] = b2_in[static_cast<size_t>(bh) * HD + tid];
    s.ln_w[tid] = ln_w[head * HD + tid];
    s.ln_b[tid] = ln_b[head * HD + tid];
  }

  for (int i = 0; i < n; ++i) {
    // ---- checkpoint of the state before mini-batch i (b2: written by these same threads) ----------
    if (ckpt_every > 0 && i % ckpt_every == 0) {
      const size_t c = static_cast<size_t>(bh) * n_ckpt + i / ckpt_every;
      store_state(w1s, w2s, ck_w1 + c * HD * F, ck_w2 + c * F * HD, warp, g, tq);
      ck_b1[c * F + tid] = s.b1[tid];
      if (tid < HD) ck_b2[c * HD + tid] = s.b2[tid];
    }

    cp_async_wait<1>();  // K_i, V_i, eta_i landed; Q_i may be in flight
    __syncthreads();     // S1: the loads are visible; the previous readout is done with z1t

    // ---- A: Z1^T = W1^T K^T + b1 -----------------------------------------------------------------------
    hidden_to_shared(s, w1s, s.k, warp, lane);
    __syncthreads();  // S2

    // ---- B: Z2, g2 ------------------------------------------------------------------------------------
    inner_loss_grad(s, warp, lane);
    __syncthreads();  // S3

    // ---- D: updates -------------------------------------------------------------------------------------
    if (tid < HD) {
      float sum = 0.f;
#pragma unroll
      for (int r = 0; r < RBLOCKS; ++r) sum += s.colpart2[r][tid];
      s.b2[tid] -= sum;
    }
    update_state(s, w1s, w2s, warp, lane);
    cp_async_wait<0>();  // Q_i landed
    __syncthreads();     // S4: K, V/g2, eta free; new b2 and W2 shadow visible

    if (i + 1 < n) {
      const size_t off = static_cast<size_t>(i + 1) * MBS;
      cp_tile_async_sw(s.k, gk + off * HD, tid, NTHREAD);
      cp_tile_async_sw(s.vg, gv + off * HD, tid, NTHREAD);
      cp_eta_async(s.eta, geta + off, tid);
    }
    cp_async_commit();

    // ---- F: readout of mini-batch i with the updated state ------------------------------------------
    hidden_to_shared(s, w1s, s.q, warp, lane);
    __syncthreads();  // S5: z1t complete; Q slot free

    if (i + 1 < n) cp_tile_async_sw(s.q, gq + static_cast<size_t>(i + 1) * MBS * HD, tid, NTHREAD);
    cp_async_commit();
    readout_block(s, gq, gout, i, warp, lane);
  }
  cp_async_wait<0>();

  // ---- final state -------------------------------------------------------------------------------------
  store_state(w1s, w2s, w1_out + static_cast<size_t>(bh) * HD * F, w2_out + static_cast<size_t>(bh) * F * HD, warp, g,
              tq);
  b1_out[static_cast<size_t>(bh) * F + tid] = s.b1[tid];
  if (tid < HD) b2_out[static_cast<size_t>(bh) * HD + tid] = s.b2[tid];
}
