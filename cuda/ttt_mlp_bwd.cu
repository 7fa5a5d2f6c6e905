// ttt_mlp_bwd.cu: fused backward scan of TTT-MLP, bf16 in, fp32 gradients (sm_90: 2-CTA clusters).
//
// ================================================================================================
// DESIGN
// ================================================================================================
// Specification: ttt_engine/ops/ttt/backward.py (ttt_scan_backward with mlp_update,
// mlp_readout_backward, mlp_update_backward); this kernel runs that loop in the same order. Shapes fixed
// at compile time as in the forward (ttt_mlp_fwd.cu): head dim D = 64, mini-batch b = 64, hidden F = 256.
//
// Grid and cluster: one 2-CTA cluster per (batch, head), 256 threads per CTA; CTA rank r owns the hidden
// units f in [128 r, 128 r + 128) (W1[:, f], b1[f], W2[f, :] and their gradients), as in the forward.
// Quantities that need all of F (Z2, dP2, dg2) are summed over the two CTAs through distributed shared
// memory; both CTAs then hold bitwise identical sums (a + b == b + a) and compute the row-wise LN parts
// redundantly. Per-token gradients that are sums over F (dQ, dK, deta) go to zero-initialised fp32
// buffers with red.global.add: exactly two addends per element (one per CTA; rank 0 also adds the direct
// terms dO, -dT and the b2 part of deta into its own addend), so the result does not depend on order.
//
// Groups of ckpt_every mini-batches, last group first. For group [g0, g1) (last = n for the final group,
// g1 - 1 otherwise):
//   Phase 1 (recompute): from the forward's checkpoint, run the state updates g0 .. last - 1 (the
//     forward's math: fp32 W1^T / W2 slices in registers, Z2 all-reduced, LN+L2 gradient, GELU backward)
//     and write every state S_i, i = g0 .. last, to the scratch buffer: bf16 W1^T and W2 slices (the
//     forward's matmul operands), fp32 b1 slice and b2.
//   Phase 2 (reverse): steps j = last .. g0, each with ONE state S_j (loaded from the scratch):
//     read-out backward of mini-batch j - 1 (rows of Q_{j-1}, if j >= 1) and update backward of
//     mini-batch j (rows of K_j, if j < n) given dS_{j+1}, as backward.py:
//       P0  [Zq1 ; Z1] = [Q ; K] W1 + b1 -> XX = [Xq2 ; X2] (bf16)
//       P1  ZZ = XX W2 (partial over the local F), exchange A (128 rows), + b2
//       P2  warps 0..3: dZq2 = LN-backward(dO) (bf16), dln_w/dln_b/db2 column sums
//           warps 4..7: Z2 -> fp32 stash;  g2 = LNL2'(Z2, V - K) (bf16)
//       P3  dZq1 = (dZq2 W2^T) * gelu'(Zq1) (Zq1 recomputed) (bf16), column sums for db1
//       P4  dW2 += Xq2^T dZq2, dW1^T += dZq1^T Q (registers);  dQ += dZq1 W1^T (+ dO on rank 0)
//       P5  recompute Z1, G1 = g2 W2^T;  dP1 = -(K dW1' + db1');  g1 = G1 gelu'(Z1)
//           -> -eta g1 (bf16), dG1 = eta dP1 gelu'(Z1) (bf16), dZ1_a = eta dP1 G1 gelu''(Z1) (bf16, over
//           the dead Q / dO tiles),
//           deta partial sum_f dP1 g1
//       P6  dW2 += dG1^T g2;  partial [64 x 64]: eta (-(X2 dW2')) + dG1 W2, deta partial sum_d dP2 g2;
//           exchange B (64 rows, row major);  dg2 = sum of both - eta db2'
//       P7  warps 0..3: VJP of LNL2' with dg2 -> dZ2 (bf16), -dT (fp32, over the Z2 stash), dV (rank 0)
//       P8  dX2 = -eta (g2 dW2'^T) + dZ2 W2^T;  dZ1 = dZ1_a + dX2 gelu'(Z1) (recomputed Z1) (bf16)
//       P9  dW1^T += dZ1^T K, dW2 += X2^T dZ2 (registers);  dK += -(eta g1) dW1'^T + dZ1 W1^T
//           (- dT on rank 0);  deta += partials;  db1, db2, dln_w, dln_b += column sums;
//           bf16 copies of dW1^T, dW2 (dS_j) for the next step
//   The fp32 state gradient slices dW1^T, dW2 (64 floats a lane) are mma accumulators in REGISTERS
//   during phase 2 (warp w: rows f in [16 w, +16), all 64 d, the forward's state layout); between groups
//   they are parked in the output buffers d_w1 / d_w2 (each CTA its own slice), which start as
//   dL/d(final state) and end as dL/d(initial state). db1, db2, dln_w, dln_b: fp32 shared memory,
//   summed in a fixed order. Intermediates are recomputed rather than kept in registers across phases
//   (Z1 three times, Zq1 twice): with the 64 state-gradient registers, that is what keeps ptxas at 250
//   registers without spills (tests/cuda/test_compile.py checks).
//
// Synchronisation: __syncthreads between the phases; each exchange is a push into the peer's receive
// buffer between barrier.cluster.wait (the peer has released that buffer) and a full cluster barrier
// (arrive.release / wait.acquire). Receive buffers alias tiles that are dead at that time: exchange A
// lands on t1/t2 (released at the end of a step), exchange B on the Xq2 rows of XX (released after P4),
// the phase-1 exchange on t2. Every thread runs the same cluster-barrier sequence (arrive and wait
// alternate), whatever j.
//
// Loads (cp.async): at the top of a step S_j (W1^T, W2, b1, b2 from the scratch) and K_j; Q/dO/V/eta of
// the next step are prefetched after P8 (the first step of a group loads everything). The scratch of a
// group is written by this CTA in phase 1 just before, so it is usually still in L2.
//
// Shared memory (struct Smem): 222.3 KB of the 227 KB of an sm_90 SM.
//
// Global tensors (contiguous): q, k, v, dout [B, H, L, 64] bf16 (L = 64 n); eta [B, H, L] fp32;
// ln_w, ln_b [H, 64] fp32; checkpoints ck_w1 [B, H, n_ckpt, 64, 256], ck_b1 [.., 1, 256],
// ck_w2 [.., 256, 64], ck_b2 [.., 1, 64] fp32 (the forward's); d_w1 [B, H, 64, 256], d_b1 [B, H, 1, 256],
// d_w2 [B, H, 256, 64], d_b2 [B, H, 1, 64] fp32 in: dL/d(final state), out: dL/d(initial state);
// dq, dk [B, H, L, 64] and deta [B, H, L] fp32, ZEROED by the caller (red.add); dv [B, H, L, 64] fp32;
// dln_w, dln_b [B, H, 64] fp32 (this (batch, head)'s share); scratch scr_w [B * H, ckpt_every + 1, 2, 2,
// 128, 64] bf16 (state slot, CTA rank, W1^T / W2, f, d), scr_b [B * H, ckpt_every + 1, 2, 192] fp32.
// ================================================================================================

#include "ttt_bwd_common.cuh"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
#define TTT_MLP_BWD_HAS_CLUSTER 1
#define TTT_MLP_BWD_CLUSTER __cluster_dims__(2, 1, 1)
#else
#define TTT_MLP_BWD_HAS_CLUSTER 0
#define TTT_MLP_BWD_CLUSTER
#endif

namespace ttt {
namespace mlp_bwd {

constexpr int NC = 2;        // CTAs per cluster
constexpr int F = 256;       // hidden units
constexpr int FL = F / NC;   // hidden units per CTA
constexpr int NWARP = 8;
constexpr int NTHREAD = NWARP * 32;
constexpr int LDF = FL + 8;  // padded row of a [rows][FL] bf16 tile

struct Smem {
  bf16_t w1t[FL * LD];         // W1^T slice of S_j [f][d]
  bf16_t w2[FL * LD];          // W2 slice of S_j [f][d]
  bf16_t dw1t[FL * LD];        // bf16 dW1^T slice of dS_{j+1}
  bf16_t dw2[FL * LD];         // bf16 dW2 slice of dS_{j+1}
  bf16_t q[MBS * LD];          // Q_{j-1}  | P5..P8: q + dout hold dZ1_a [64][LDF] bf16
  bf16_t dout[MBS * LD];       // dO_{j-1} | (keep these two adjacent)
  bf16_t k[MBS * LD];          // K_j
  bf16_t v[MBS * LD];          // V_j
  bf16_t xx[2 * MBS * LDF];    // rows 0..63 Xq2 (after P4: receive buffer B, fp32 [64][64]); rows 64..127 X2
  bf16_t t1[MBS * LDF];        // dZq1, then -eta g1        | t1 + t2: receive buffer A (fp32 [8][8][32][4])
  bf16_t t2[MBS * LDF];        // dG1, then dZ1              | phase 1: t2 = receive buffer
  bf16_t dz2[MBS * LD];        // dZq2 (P2..P4), then dZ2 (P7..P9); phase 1: -eta g2
  bf16_t g2[MBS * LD];         // g2
  float z2s[MBS * HD];         // Z2 of the update rows (P2..P7), then -dT
  float bvec[FL + HD];         // b1 slice, b2 (of S_j; phase 1: of the state being updated)
  float eta[MBS];
  float ln_w[HD];
  float ln_b[HD];
  float db1[FL];               // dL/db1 slice (dS_{j+1}'s until the end of step j)
  float db2[HD];
  float dlnw[HD];
  float dlnb[HD];
  float cs_rw[4][HD];          // read-out rows: column sums of dO xhat, dO, dZq2
  float cs_rb[4][HD];
  float cs_rz[4][HD];
  float cs_uw[4][HD];          // update rows: column sums of the VJP's dln_w, dln_b, dZ2 (phase 1: eta g2)
  float cs_ub[4][HD];
  float cs_uz[4][HD];
  float cs_r1[2][FL];          // column sums of dZq1 / dZ1 (phase 1: eta g1) per 32-row half
  float cs_u1[2][FL];
  float deta_f[4][MBS];        // deta partial sums over the local F, per 32-column warp group
  float deta_d[2][MBS];        // deta partial sums over D, per 32-column half
};

static_assert(sizeof(Smem) % 16 == 0, "Smem must keep 16-byte alignment");
static_assert(sizeof(Smem) <= 227 * 1024, "Smem exceeds the 227 KB of an sm_90 SM");
static_assert(2 * MBS * LDF * sizeof(bf16_t) >= 8 * 8 * 32 * 4 * sizeof(float), "t1 + t2 hold receive buffer A");
static_assert(MBS * LDF * sizeof(bf16_t) >= MBS * HD * sizeof(float), "Xq2 rows hold receive buffer B");
static_assert(2 * MBS * LD >= MBS * LDF, "q + dout (adjacent in Smem) hold the dZ1_a tile");

#if TTT_MLP_BWD_HAS_CLUSTER

constexpr int SCR_TILE = FL * HD;            // elements of one bf16 W slice in the scratch
constexpr int SCR_SLOT = NC * 2 * SCR_TILE;  // one state: both ranks, W1^T and W2
constexpr int SCR_BVEC = FL + HD;            // b1 slice + b2

__device__ __forceinline__ u32 cluster_ctarank() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

__device__ __forceinline__ u32 map_to_rank(u32 saddr, u32 rank) {
  u32 r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(saddr), "r"(rank));
  return r;
}

__device__ __forceinline__ void st_cluster_v4(u32 addr, const float (&x)[4]) {
  asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "f"(x[0]), "f"(x[1]), "f"(x[2]),
               "f"(x[3])
               : "memory");
}

__device__ __forceinline__ void st_cluster_v2(u32 addr, float x, float y) {
  asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};" ::"r"(addr), "f"(x), "f"(y) : "memory");
}

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;" ::: "memory"); }

__device__ __forceinline__ void red_add_f32(float* p, float x) {
  asm volatile("red.global.add.f32 [%0], %1;" ::"l"(p), "f"(x) : "memory");
}

// State slice layout (as ttt_mlp_fwd.cu): warp w holds rows f = 16 w + g (+8) of W1^T [f][d] and W2 [f][d],
// columns d = 8 nt + 2 tq (+1).
__device__ __forceinline__ void load_slices(float (&w1s)[8][4], float (&w2s)[8][4], const float* w1, const float* w2,
                                            int fbase, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int f = fbase + 16 * warp + g + 8 * (j >> 1);
      const int d = 8 * nt + 2 * tq + (j & 1);
      w1s[nt][j] = w1[d * F + f];  // [64][256]
      w2s[nt][j] = w2[f * HD + d]; // [256][64]
    }
}

__device__ __forceinline__ void store_slices(const float (&w1s)[8][4], const float (&w2s)[8][4], float* w1, float* w2,
                                             int fbase, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int f = fbase + 16 * warp + g + 8 * (j >> 1);
      const int d = 8 * nt + 2 * tq + (j & 1);
      w1[d * F + f] = w1s[nt][j];
      w2[f * HD + d] = w2s[nt][j];
    }
}

// bf16 copies of this warp's slice rows into [f][d] tiles with row stride ld (local f).
__device__ __forceinline__ void write_slices_bf16(bf16_t* t1, bf16_t* t2, int ld, const float (&w1s)[8][4],
                                                  const float (&w2s)[8][4], int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const int f = 16 * warp + g, d = 8 * nt + 2 * tq;
    st_bf16x2(&t1[f * ld + d], w1s[nt][0], w1s[nt][1]);
    st_bf16x2(&t1[(f + 8) * ld + d], w1s[nt][2], w1s[nt][3]);
    st_bf16x2(&t2[f * ld + d], w2s[nt][0], w2s[nt][1]);
    st_bf16x2(&t2[(f + 8) * ld + d], w2s[nt][2], w2s[nt][3]);
  }
}

// Add x (16 x 32 block, rows row0, cols n0, row stride HD) to global fp32 rows with red.global.add.
__device__ __forceinline__ void red_add_rows(float* dst, int row0, int n0, const float (&x)[4][4], int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const int c = n0 + 8 * nt + 2 * tq;
    red_add_f32(&dst[(row0 + g) * HD + c], x[nt][0]);
    red_add_f32(&dst[(row0 + g) * HD + c + 1], x[nt][1]);
    red_add_f32(&dst[(row0 + g + 8) * HD + c], x[nt][2]);
    red_add_f32(&dst[(row0 + g + 8) * HD + c + 1], x[nt][3]);
  }
}

#endif  // TTT_MLP_BWD_HAS_CLUSTER

}  // namespace mlp_bwd
}  // namespace ttt

extern "C" __global__ void ttt_mlp_bwd_smem_bytes(unsigned* out) { *out = (unsigned)sizeof(ttt::mlp_bwd::Smem); }

extern "C" __global__ void TTT_MLP_BWD_CLUSTER __launch_bounds__(ttt::mlp_bwd::NTHREAD, 1)
    ttt_mlp_bwd_bf16(const ttt::bf16_t* __restrict__ q, const ttt::bf16_t* __restrict__ k,
                     const ttt::bf16_t* __restrict__ v, const ttt::bf16_t* __restrict__ dout,
                     const float* __restrict__ eta, const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                     const float* __restrict__ ck_w1, const float* __restrict__ ck_b1,
                     const float* __restrict__ ck_w2, const float* __restrict__ ck_b2, float* __restrict__ d_w1,
                     float* __restrict__ d_b1, float* __restrict__ d_w2, float* __restrict__ d_b2,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                     float* __restrict__ deta, float* __restrict__ dln_w, float* __restrict__ dln_b,
                     ttt::bf16_t* __restrict__ scr_w, float* __restrict__ scr_b, int heads, int n_mb,
                     int ckpt_every, int n_ckpt) {
#if TTT_MLP_BWD_HAS_CLUSTER
  using namespace ttt;
  using namespace ttt::mlp_bwd;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int rg = warp >> 2, cg = warp & 3;  // [64 x FL] tiles: rows 32 rg, columns 32 cg
  const int rq = 16 * (warp & 3), cq = 32 * (warp >> 2);  // [64 x 64] tiles: rows rq, columns cq
  const u32 rank = cluster_ctarank();
  const u32 peer = rank ^ 1u;
  const bool lead = rank == 0;
  const int bh = blockIdx.x / NC;
  const int head = bh % heads;
  const int n = n_mb;
  const int fbase = static_cast<int>(rank) * FL;
  const size_t seq = static_cast<size_t>(n) * MBS;
  const bf16_t* gq = q + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gk = k + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gv = v + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gdo = dout + static_cast<size_t>(bh) * seq * HD;
  const float* geta = eta + static_cast<size_t>(bh) * seq;
  // outputs of mini-batch mb: computed where used (fewer live registers than one pointer each)
  auto rows_of = [&](float* base, int mb) { return base + (static_cast<size_t>(bh) * seq + static_cast<size_t>(mb) * MBS) * HD; };
  float* gdw1 = d_w1 + static_cast<size_t>(bh) * HD * F;
  float* gdw2 = d_w2 + static_cast<size_t>(bh) * F * HD;
  bf16_t* sw = scr_w + static_cast<size_t>(bh) * (ckpt_every + 1) * SCR_SLOT + static_cast<size_t>(rank) * 2 * SCR_TILE;
  float* sb = scr_b + static_cast<size_t>(bh) * (ckpt_every + 1) * NC * SCR_BVEC + static_cast<size_t>(rank) * SCR_BVEC;
  float* recv_a = reinterpret_cast<float*>(s.t1);  // exchange A: [warp][nt][lane][4]
  float* recv_b = reinterpret_cast<float*>(s.xx);  // exchange B: row major [64][64]
  float* recv_1 = reinterpret_cast<float*>(s.t2);  // phase 1: [warp 0..3][nt][lane][4]
  bf16_t* dz1a_t = s.q;  // P5..P8: dZ1_a [64][LDF] bf16 over the dead Q and dO tiles

  {
    uint4* p = reinterpret_cast<uint4*>(smem_raw);
    for (int i = tid; i < static_cast<int>(sizeof(Smem) / 16); i += NTHREAD) p[i] = make_uint4(0u, 0u, 0u, 0u);
  }
  __syncthreads();
  if (tid < FL) s.db1[tid] = d_b1[static_cast<size_t>(bh) * F + fbase + tid];
  if (tid < HD) {
    s.db2[tid] = d_b2[static_cast<size_t>(bh) * HD + tid];
    s.ln_w[tid] = ln_w[head * HD + tid];
    s.ln_b[tid] = ln_b[head * HD + tid];
  }
  // every CTA of the cluster runs before anyone touches a peer's shared memory; then release the
  // receive buffers for the first exchange (each exchange starts with the wait matching this arrive)
  cluster_arrive();
  cluster_wait();
  cluster_arrive();
  __syncthreads();

  for (int gi = n_ckpt - 1; gi >= 0; --gi) {
    const int g0 = gi * ckpt_every;
    const int g1 = min(g0 + ckpt_every, n);
    const int last = g1 == n ? n : g1 - 1;

    // ================= phase 1: states S_g0 .. S_last -> scratch =================
    {
      float w1s[8][4], w2s[8][4];
      const size_t c = static_cast<size_t>(bh) * n_ckpt + gi;
      load_slices(w1s, w2s, ck_w1 + c * HD * F, ck_w2 + c * F * HD, fbase, warp, g, tq);
      if (tid < FL) s.bvec[tid] = ck_b1[c * F + fbase + tid];
      if (tid < HD) s.bvec[FL + tid] = ck_b2[c * HD + tid];
      __syncthreads();
      for (int i = g0;; ++i) {
        if (i < last) {
          const size_t off = static_cast<size_t>(i) * MBS;
          cp_tile_async(s.k, gk + off * HD, tid, NTHREAD);
          cp_tile_async(s.v, gv + off * HD, tid, NTHREAD);
          cp_eta_async(s.eta, geta + off, tid);
        }
        cp_async_commit();
        {
          bf16_t* slot = sw + static_cast<size_t>(i - g0) * SCR_SLOT;
          write_slices_bf16(slot, slot + SCR_TILE, HD, w1s, w2s, warp, g, tq);
          if (tid < SCR_BVEC) sb[static_cast<size_t>(i - g0) * NC * SCR_BVEC + tid] = s.bvec[tid];
        }
        if (i == last) break;
        write_slices_bf16(s.w1t, s.w2, LD, w1s, w2s, warp, g, tq);
        cp_async_wait<0>();
        __syncthreads();  // Q1

        // Z1 = K W1 + b1 -> X2 (rows 64.. of XX), gelu'(Z1)
        float gp[2][4][4];
        {
          float acc[2][4][4];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) zero_block(acc[mt]);
          mma_rows32<HD, 4, false, false>(acc, s.k, LD, 32 * rg, s.w1t, LD, 32 * cg, lane);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float z = acc[mt][nt][e] + s.bvec[32 * cg + 8 * nt + 2 * tq + (e & 1)];
                const float t = gelu_tanh_t(z);
                acc[mt][nt][e] = gelu_from_t(z, t);
                gp[mt][nt][e] = gelu_bwd_from_t(z, t);
              }
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) store_rows_bf16(s.xx + MBS * LDF, LDF, 32 * rg + 16 * mt, 32 * cg, acc[mt], lane);
        }
        __syncthreads();  // Q2

        // Z2 partial = X2 W2 (warps 0..3, rows 16 w), exchange, + b2, g2 and -eta g2, column sums
        float zz[8][4];
        zero_block(zz);
        if (warp < 4) mma_rows16<FL, 8, false, true>(zz, s.xx + MBS * LDF, LDF, 16 * warp, s.w2, LD, 0, lane);
        cluster_wait();  // the peer released its receive buffer
        if (warp < 4) {
          const u32 base = map_to_rank(smem_u32(recv_1), peer);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) st_cluster_v4(base + 16u * ((warp * 8 + nt) * 32 + lane), zz[nt]);
        }
        cluster_arrive();
        cluster_wait();
        if (warp < 4) {
          float target[8][4];
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            const float4 o = reinterpret_cast<const float4*>(recv_1)[(warp * 8 + nt) * 32 + lane];
            zz[nt][0] += o.x;
            zz[nt][1] += o.y;
            zz[nt][2] += o.z;
            zz[nt][3] += o.w;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = 16 * warp + g + 8 * h, col = 8 * nt + 2 * tq;
              float v0, v1, k0, k1;
              ld_bf16x2(&s.v[row * LD + col], v0, v1);
              ld_bf16x2(&s.k[row * LD + col], k0, k1);
              target[nt][2 * h] = v0 - k0;
              target[nt][2 * h + 1] = v1 - k1;
              zz[nt][2 * h] += s.bvec[FL + col];
              zz[nt][2 * h + 1] += s.bvec[FL + col + 1];
            }
          }
          ln_fused_l2_bwd_rows(zz, target, s.ln_w, s.ln_b, tq);  // zz <- g2
          const float e0 = s.eta[16 * warp + g], e1 = s.eta[16 * warp + g + 8];
          store_rows_bf16(s.g2, LD, 16 * warp, 0, zz, lane);
          store_rows_bf16(s.dz2, LD, 16 * warp, 0, zz, lane, -e0, -e1);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            zz[nt][0] *= e0;
            zz[nt][1] *= e0;
            zz[nt][2] *= e1;
            zz[nt][3] *= e1;
          }
          colsum_rows16(zz, s.cs_uz[warp], 0, lane);
        }
        __syncthreads();  // Q3

        if (tid < HD) s.bvec[FL + tid] -= s.cs_uz[0][tid] + s.cs_uz[1][tid] + s.cs_uz[2][tid] + s.cs_uz[3][tid];
        // G1 = g2 W2^T, g1 = G1 gelu'(Z1) -> -eta g1 (t1), column sums of eta g1
        {
          float acc[2][4][4];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) zero_block(acc[mt]);
          mma_rows32<HD, 4, false, false>(acc, s.g2, LD, 32 * rg, s.w2, LD, 32 * cg, lane);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            const float e0 = s.eta[32 * rg + 16 * mt + g], e1 = s.eta[32 * rg + 16 * mt + g + 8];
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) acc[mt][nt][e] *= gp[mt][nt][e] * (e < 2 ? e0 : e1);  // eta g1
            store_rows_bf16(s.t1, LDF, 32 * rg + 16 * mt, 32 * cg, acc[mt], lane, -1.f, -1.f);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) acc[0][nt][e] = mt == 0 ? acc[0][nt][e] : acc[0][nt][e] + acc[1][nt][e];
          }
          colsum_rows16(acc[0], s.cs_u1[rg], 32 * cg, lane);
        }
        __syncthreads();  // Q4

        if (tid < FL) s.bvec[tid] -= s.cs_u1[0][tid] + s.cs_u1[1][tid];
        mma_rows16<MBS, 8, true, true>(w1s, s.t1, LDF, 16 * warp, s.k, LD, 0, lane);  // W1^T += (-eta g1)^T K
        mma_rows16<MBS, 8, true, true>(w2s, s.xx + MBS * LDF, LDF, 16 * warp, s.dz2, LD, 0, lane);  // W2 += X2^T (-eta g2)
        __syncthreads();  // Q5
        cluster_arrive();  // release the receive buffer (t2) and t1
      }
    }
    __syncthreads();  // the scratch is written

    // ================= phase 2: reverse steps last .. g0 =================
    float dw1s[8][4], dw2s[8][4];
    load_slices(dw1s, dw2s, gdw1, gdw2, fbase, warp, g, tq);
    write_slices_bf16(s.dw1t, s.dw2, LD, dw1s, dw2s, warp, g, tq);

    auto issue_qdo = [&](int jj) {  // Q_{jj-1}, dO_{jj-1}
      const size_t off = static_cast<size_t>(jj - 1) * MBS * HD;
      cp_tile_async(s.q, gq + off, tid, NTHREAD);
      cp_tile_async(s.dout, gdo + off, tid, NTHREAD);
    };
    auto issue_ve = [&](int jj) {  // V_jj, eta_jj
      const size_t off = static_cast<size_t>(jj) * MBS;
      cp_tile_async(s.v, gv + off * HD, tid, NTHREAD);
      cp_eta_async(s.eta, geta + off, tid);
    };

    for (int j = last; j >= g0; --j) {
      const bool has_out = j >= 1, has_upd = j < n;
      {
        const bf16_t* slot = sw + static_cast<size_t>(j - g0) * SCR_SLOT;
        cp_tile_async(s.w1t, slot, tid, NTHREAD);
        cp_tile_async(s.w1t + MBS * LD, slot + MBS * HD, tid, NTHREAD);
        cp_tile_async(s.w2, slot + SCR_TILE, tid, NTHREAD);
        cp_tile_async(s.w2 + MBS * LD, slot + SCR_TILE + MBS * HD, tid, NTHREAD);
        const float* bsrc = sb + static_cast<size_t>(j - g0) * NC * SCR_BVEC;
        if (tid < SCR_BVEC / 4) cp_async16(smem_u32(s.bvec + 4 * tid), bsrc + 4 * tid);
        if (has_upd) cp_tile_async(s.k, gk + static_cast<size_t>(j) * MBS * HD, tid, NTHREAD);
        if (j == last) {  // nothing was prefetched for the first step of the group
          if (has_out) issue_qdo(j);
          if (has_upd) issue_ve(j);
        }
      }
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();  // T: loads landed; last step's dW copies and db1 / db2 visible

      // ---- P0: [Zq1 ; Z1] = [Q ; K] W1 + b1 -> XX ---------------------------------------------------------
      {
        float acc[2][4][4];
        if (has_out) {
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) zero_block(acc[mt]);
          mma_rows32<HD, 4, false, false>(acc, s.q, LD, 32 * rg, s.w1t, LD, 32 * cg, lane);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float z = acc[mt][nt][e] + s.bvec[32 * cg + 8 * nt + 2 * tq + (e & 1)];
                acc[mt][nt][e] = gelu_from_t(z, gelu_tanh_t(z));
              }
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) store_rows_bf16(s.xx, LDF, 32 * rg + 16 * mt, 32 * cg, acc[mt], lane);
        }
        if (has_upd) {
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) zero_block(acc[mt]);
          mma_rows32<HD, 4, false, false>(acc, s.k, LD, 32 * rg, s.w1t, LD, 32 * cg, lane);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float z = acc[mt][nt][e] + s.bvec[32 * cg + 8 * nt + 2 * tq + (e & 1)];
                acc[mt][nt][e] = gelu_from_t(z, gelu_tanh_t(z));
              }
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
            store_rows_bf16(s.xx + MBS * LDF, LDF, 32 * rg + 16 * mt, 32 * cg, acc[mt], lane);
        }
      }
      __syncthreads();  // S0

      // ---- P1: ZZ = XX W2 (partial), exchange A, + b2 ------------------------------------------------------
      float zz[8][4];
      zero_block(zz);
      if (warp < 4 ? has_out : has_upd) mma_rows16<FL, 8, false, true>(zz, s.xx, LDF, 16 * warp, s.w2, LD, 0, lane);
      cluster_wait();  // the peer released t1 / t2 (end of its previous step or phase-1 iteration)
      {
        const u32 base = map_to_rank(smem_u32(recv_a), peer);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) st_cluster_v4(base + 16u * ((warp * 8 + nt) * 32 + lane), zz[nt]);
      }
      cluster_arrive();
      cluster_wait();
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const float4 o = reinterpret_cast<const float4*>(recv_a)[(warp * 8 + nt) * 32 + lane];
        zz[nt][0] += o.x;
        zz[nt][1] += o.y;
        zz[nt][2] += o.z;
        zz[nt][3] += o.w;
#pragma unroll
        for (int e = 0; e < 4; ++e) zz[nt][e] += s.bvec[FL + 8 * nt + 2 * tq + (e & 1)];
      }
      __syncthreads();  // S1: everyone has read receive buffer A before t1 / t2 are written

      // ---- P2: read-out LN backward (warps 0..3); Z2 stash and g2 (warps 4..7) -----------------------------
      if (warp < 4) {
        if (has_out) {
          layer_norm_bwd_rows(zz, s.dout, 16 * warp, s.ln_w, s.cs_rw[warp], s.cs_rb[warp], s.cs_rz[warp], lane);
          store_rows_bf16(s.dz2, LD, 16 * warp, 0, zz, lane);  // dZq2
        }
      } else if (has_upd) {
        const int w4 = warp - 4;
        store_rows_f32(s.z2s, HD, 16 * w4, 0, zz, lane);
        float target[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = 16 * w4 + g + 8 * h, col = 8 * nt + 2 * tq;
            float v0, v1, k0, k1;
            ld_bf16x2(&s.v[row * LD + col], v0, v1);
            ld_bf16x2(&s.k[row * LD + col], k0, k1);
            target[nt][2 * h] = v0 - k0;
            target[nt][2 * h + 1] = v1 - k1;
          }
        }
        ln_fused_l2_bwd_rows(zz, target, s.ln_w, s.ln_b, tq);  // zz <- g2
        store_rows_bf16(s.g2, LD, 16 * w4, 0, zz, lane);
      }
      __syncthreads();  // S2

      // ---- P3: dZq1 = (dZq2 W2^T) gelu'(Zq1) -> t1 (Zq1 recomputed), column sums ---------------------------
      if (has_out) {
        float acc[2][4][4], zq1[2][4][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          zero_block(acc[mt]);
          zero_block(zq1[mt]);
        }
        mma_rows32<HD, 4, false, false>(acc, s.dz2, LD, 32 * rg, s.w2, LD, 32 * cg, lane);
        mma_rows32<HD, 4, false, false>(zq1, s.q, LD, 32 * rg, s.w1t, LD, 32 * cg, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float z = zq1[mt][nt][e] + s.bvec[32 * cg + 8 * nt + 2 * tq + (e & 1)];
              acc[mt][nt][e] *= gelu_bwd_from_t(z, gelu_tanh_t(z));
            }
          store_rows_bf16(s.t1, LDF, 32 * rg + 16 * mt, 32 * cg, acc[mt], lane);
        }
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[0][nt][e] += acc[1][nt][e];
        colsum_rows16(acc[0], s.cs_r1[rg], 32 * cg, lane);
      }
      __syncthreads();  // S3

      // ---- P4: dW2 += Xq2^T dZq2, dW1^T += dZq1^T Q; dQ += dZq1 W1^T (+ dO) ----------------------------------
      if (has_out) {
        mma_rows16<MBS, 8, true, true>(dw2s, s.xx, LDF, 16 * warp, s.dz2, LD, 0, lane);
        mma_rows16<MBS, 8, true, true>(dw1s, s.t1, LDF, 16 * warp, s.q, LD, 0, lane);
        float acc[4][4];
        zero_block(acc);
        mma_rows16<FL, 4, false, true>(acc, s.t1, LDF, rq, s.w1t, LD, cq, lane);
        if (lead) add_rows_bf16(acc, s.dout, LD, rq, cq, lane);
        red_add_rows(rows_of(dq, j - 1), rq, cq, acc, lane);
      }
      __syncthreads();  // S4: Xq2, dZq2, Q, dO are free
      cluster_arrive();  // release receive buffer B (the Xq2 rows)

      // ---- P5: dP1, g1, -eta g1 (t1), dG1 (t2), dZ1_a (bf16, over Q / dO), deta over F --------------------
      if (has_upd) {
        float z1[2][4][4], big_g1[2][4][4], dz1a[2][4][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          zero_block(z1[mt]);
          zero_block(big_g1[mt]);
          zero_block(dz1a[mt]);
        }
        mma_rows32<HD, 4, false, false>(z1, s.k, LD, 32 * rg, s.w1t, LD, 32 * cg, lane);
        mma_rows32<HD, 4, false, false>(big_g1, s.g2, LD, 32 * rg, s.w2, LD, 32 * cg, lane);
        mma_rows32<HD, 4, false, false>(dz1a, s.k, LD, 32 * rg, s.dw1t, LD, 32 * cg, lane);  // K dW1'
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          float de[2] = {0.f, 0.f};
          const float eh[2] = {s.eta[32 * rg + 16 * mt + g], s.eta[32 * rg + 16 * mt + g + 8]};
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = 32 * cg + 8 * nt + 2 * tq + (e & 1);
              const float z = z1[mt][nt][e] + s.bvec[col];
              const float t = gelu_tanh_t(z);
              const float gp = gelu_bwd_from_t(z, t);
              const float dp1 = -(dz1a[mt][nt][e] + s.db1[col]);
              const float g1 = big_g1[mt][nt][e] * gp;
              const float dg1 = eh[e >> 1] * dp1;
              de[e >> 1] += dp1 * g1;
              dz1a[mt][nt][e] = dg1 * big_g1[mt][nt][e] * gelu_bwd2_from_t(z, t);  // dZ1_a
              z1[mt][nt][e] = -eh[e >> 1] * g1;                                    // -eta g1
              big_g1[mt][nt][e] = dg1 * gp;                                        // dG1
            }
          store_rows_bf16(s.t1, LDF, 32 * rg + 16 * mt, 32 * cg, z1[mt], lane);
          store_rows_bf16(s.t2, LDF, 32 * rg + 16 * mt, 32 * cg, big_g1[mt], lane);
          store_rows_bf16(dz1a_t, LDF, 32 * rg + 16 * mt, 32 * cg, dz1a[mt], lane);
          de[0] = quad_sum(de[0]);
          de[1] = quad_sum(de[1]);
          if (tq == 0) {
            s.deta_f[cg][32 * rg + 16 * mt + g] = de[0];
            s.deta_f[cg][32 * rg + 16 * mt + g + 8] = de[1];
          }
        }
      }
      __syncthreads();  // S5

      // ---- P6: dW2 += dG1^T g2; [eta (-(X2 dW2')) + dG1 W2] partial, deta over D; exchange B -----------------
      float part[4][4];
      zero_block(part);
      if (has_upd) {
        mma_rows16<MBS, 8, true, true>(dw2s, s.t2, LDF, 16 * warp, s.g2, LD, 0, lane);
        float pg[4][4];
        zero_block(pg);
        mma_rows16<FL, 4, false, true>(part, s.xx + MBS * LDF, LDF, rq, s.dw2, LD, cq, lane);  // X2 dW2'
        mma_rows16<FL, 4, false, true>(pg, s.t2, LDF, rq, s.w2, LD, cq, lane);                 // dG1 W2
        const float eh[2] = {s.eta[rq + g], s.eta[rq + g + 8]};
        float de[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = rq + g + 8 * (e >> 1), col = cq + 8 * nt + 2 * tq + (e & 1);
            const float pd = -part[nt][e];
            const float g2v = __uint_as_float(static_cast<u32>(s.g2[row * LD + col]) << 16);
            de[e >> 1] += (lead ? pd - s.db2[col] : pd) * g2v;
            part[nt][e] = eh[e >> 1] * pd + pg[nt][e];
          }
        de[0] = quad_sum(de[0]);
        de[1] = quad_sum(de[1]);
        if (tq == 0) {
          s.deta_d[warp >> 2][rq + g] = de[0];
          s.deta_d[warp >> 2][rq + g + 8] = de[1];
        }
      }
      cluster_wait();  // the peer released its Xq2 rows
      {
        const u32 base = map_to_rank(smem_u32(recv_b), peer);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int col = cq + 8 * nt + 2 * tq;
          st_cluster_v2(base + 4u * ((rq + g) * HD + col), part[nt][0], part[nt][1]);
          st_cluster_v2(base + 4u * ((rq + g + 8) * HD + col), part[nt][2], part[nt][3]);
        }
      }
      cluster_arrive();
      cluster_wait();
      if (has_upd) {  // dg2 = own + peer - eta db2', in place over the receive buffer
        const float eh[2] = {s.eta[rq + g], s.eta[rq + g + 8]};
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = rq + g + 8 * h, col = cq + 8 * nt + 2 * tq;
            float2* p = reinterpret_cast<float2*>(&recv_b[row * HD + col]);
            const float2 o = *p;
            *p = make_float2(part[nt][2 * h] + o.x - eh[h] * s.db2[col],
                             part[nt][2 * h + 1] + o.y - eh[h] * s.db2[col + 1]);
          }
      }
      __syncthreads();  // S6

      // ---- P7: VJP of LNL2' (warps 0..3): dZ2 (bf16), -dT over the Z2 stash, dV ------------------------------
      if (has_upd && warp < 4) {
        float z[8][4], u[8][4];
        zero_block(z);
        zero_block(u);
        add_rows_f32(z, s.z2s, HD, 16 * warp, 0, lane);
        add_rows_f32(u, recv_b, HD, 16 * warp, 0, lane);
        lnl2_vjp_rows(z, u, s.v, s.k, 16 * warp, s.ln_w, s.ln_b, s.z2s, HD, s.cs_uw[warp], s.cs_ub[warp],
                      s.cs_uz[warp], lane);
        store_rows_bf16(s.dz2, LD, 16 * warp, 0, z, lane);  // dZ2
        if (lead) {  // dV = dT = -(-dT)
          zero_block(u);
          add_rows_f32(u, s.z2s, HD, 16 * warp, 0, lane);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) u[nt][e] = -u[nt][e];
          store_rows_f32(rows_of(dv, j), HD, 16 * warp, 0, u, lane);
        }
      }
      __syncthreads();  // S7

      // ---- P8: dX2 = -eta (g2 dW2'^T) + dZ2 W2^T;  dZ1 = dZ1_a + dX2 gelu'(Z1) -> t2 ----------------------
      if (has_upd) {
        float acc[2][4][4], z1[2][4][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          zero_block(acc[mt]);
          zero_block(z1[mt]);
        }
        mma_rows32<HD, 4, false, false>(acc, s.g2, LD, 32 * rg, s.dw2, LD, 32 * cg, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const float e0 = s.eta[32 * rg + 16 * mt + g], e1 = s.eta[32 * rg + 16 * mt + g + 8];
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] *= e < 2 ? -e0 : -e1;
        }
        mma_rows32<HD, 4, false, false>(acc, s.dz2, LD, 32 * rg, s.w2, LD, 32 * cg, lane);
        mma_rows32<HD, 4, false, false>(z1, s.k, LD, 32 * rg, s.w1t, LD, 32 * cg, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float z = z1[mt][nt][e] + s.bvec[32 * cg + 8 * nt + 2 * tq + (e & 1)];
              acc[mt][nt][e] *= gelu_bwd_from_t(z, gelu_tanh_t(z));
            }
          add_rows_bf16(acc[mt], dz1a_t, LDF, 32 * rg + 16 * mt, 32 * cg, lane);
          store_rows_bf16(s.t2, LDF, 32 * rg + 16 * mt, 32 * cg, acc[mt], lane);
        }
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[0][nt][e] += acc[1][nt][e];
        colsum_rows16(acc[0], s.cs_u1[rg], 32 * cg, lane);
      }
      __syncthreads();  // S8: Q, dO (dZ1_a), V and eta are free: prefetch the next step's
      if (j - 1 >= g0) {
        if (j - 1 >= 1) issue_qdo(j - 1);
        issue_ve(j - 1);
      }
      cp_async_commit();

      // ---- P9: dW1^T += dZ1^T K, dW2 += X2^T dZ2; dK += -(eta g1) dW1'^T + dZ1 W1^T (- dT); deta ------------
      if (has_upd) {
        mma_rows16<MBS, 8, true, true>(dw1s, s.t2, LDF, 16 * warp, s.k, LD, 0, lane);
        mma_rows16<MBS, 8, true, true>(dw2s, s.xx + MBS * LDF, LDF, 16 * warp, s.dz2, LD, 0, lane);
        float acc[4][4];
        zero_block(acc);
        mma_rows16<FL, 4, false, true>(acc, s.t1, LDF, rq, s.dw1t, LD, cq, lane);
        mma_rows16<FL, 4, false, true>(acc, s.t2, LDF, rq, s.w1t, LD, cq, lane);
        if (lead) add_rows_f32(acc, s.z2s, HD, rq, cq, lane);
        red_add_rows(rows_of(dk, j), rq, cq, acc, lane);
        if (tid < MBS) {
          const float d = s.deta_f[0][tid] + s.deta_f[1][tid] + s.deta_f[2][tid] + s.deta_f[3][tid] +
                          s.deta_d[0][tid] + s.deta_d[1][tid];
          red_add_f32(&deta[(static_cast<size_t>(bh) * seq + static_cast<size_t>(j) * MBS) + tid], d);
        }
      }
      __syncthreads();  // S9: every read of the old dW copies, t1 / t2 and db1 / db2 is done

      // ---- end of step: biases and LN gradients, bf16 copies of dS_j, release t1 / t2 ----------------------
      if (tid < FL) {
        float d = 0.f;
        if (has_out) d += s.cs_r1[0][tid] + s.cs_r1[1][tid];
        if (has_upd) d += s.cs_u1[0][tid] + s.cs_u1[1][tid];
        s.db1[tid] += d;
      }
      if (tid < HD) {
        float d2 = 0.f, dw = 0.f, db = 0.f;
        for (int w = 0; w < 4; ++w) {
          if (has_out) {
            d2 += s.cs_rz[w][tid];
            dw += s.cs_rw[w][tid];
            db += s.cs_rb[w][tid];
          }
          if (has_upd) {
            d2 += s.cs_uz[w][tid];
            dw += s.cs_uw[w][tid];
            db += s.cs_ub[w][tid];
          }
        }
        s.db2[tid] += d2;
        s.dlnw[tid] += dw;
        s.dlnb[tid] += db;
      }
      write_slices_bf16(s.dw1t, s.dw2, LD, dw1s, dw2s, warp, g, tq);
      cluster_arrive();  // release receive buffer A (t1 / t2)
    }
    store_slices(dw1s, dw2s, gdw1, gdw2, fbase, warp, g, tq);  // park (or, after group 0, the result)
    cp_async_wait<0>();
    __syncthreads();
  }

  cluster_wait();  // pairs with the last arrive: no CTA leaves while its peer may still write to it
  if (tid < FL) d_b1[static_cast<size_t>(bh) * F + fbase + tid] = s.db1[tid];
  if (lead && tid < HD) {
    d_b2[static_cast<size_t>(bh) * HD + tid] = s.db2[tid];
    dln_w[static_cast<size_t>(bh) * HD + tid] = s.dlnw[tid];
    dln_b[static_cast<size_t>(bh) * HD + tid] = s.dlnb[tid];
  }
#else
  asm volatile("trap;");  // thread-block clusters need sm_90; the backend never launches this here
#endif
}
