// ttt_mlp_bwd_sm80.cu: fused backward scan of TTT-MLP without thread-block clusters (sm_80, sm_86, sm_89;
// it also runs on sm_90), bf16 in, fp32 gradients. Same arguments and results as ttt_mlp_bwd.cu.
//
// ================================================================================================
// DESIGN
// ================================================================================================
// Specification: ttt_engine/ops/ttt/backward.py (ttt_scan_backward with mlp_update, mlp_readout_backward,
// mlp_update_backward), the loop of ttt_mlp_bwd.cu. D = 64, b = 64, F = 256 fixed.
//
// Budget (per (batch, head)): S_j and dS are 128 KB each in fp32, and the register file is 256 KB, so
// they cannot both be on chip in fp32; S_j (64 KB in bf16) plus the bf16 copy of dS_{j+1} that the
// contractions over F read (64 KB) is already over the 99 KB of shared memory per block of sm_86 / sm_89.
// So: dS in fp32 REGISTERS for the whole reverse scan of a group, S_j and the bf16 copy of dS_{j+1}
// streamed from an L2 scratch through shared memory, half a table (128 hidden units, 16 KB) at a time.
// One CTA per (batch, head), not a pair through global memory: the video model runs 96 scans per launch,
// one wave of single CTAs on every sm_80 / 86 / 89 card, two waves of pairs (docs/ttt_mlp_bwd_sm80_design.md
// gives the argument in full).
//
// Grid: one CTA per (batch, head), 256 threads (8 warps). Warp w owns hidden units f = 128 h + 16 w + [0, 16)
// in each half h = 0, 1; its rows of dW1^T [f][d] and dW2 [f][d] are fp32 mma accumulators dw1[h], dw2[h]
// (2 x 8 x 4 floats each: 128 registers), the state layout of ttt_mlp_fwd_sm80.cu.
//
// Groups of ckpt_every mini-batches, last group first, as ttt_mlp_bwd.cu:
//   Phase 1: from the forward's checkpoint, the forward's update phases A, B, D (ttt_mlp_sm80_common.cuh,
//     fp32 state in registers, its 93 KB shared layout) recompute S_g0 .. S_last into the scratch: bf16
//     W1^T [256][64] and W2 [256][64], fp32 b1, b2.
//   Phase 2: steps j = last .. g0 with S_j (from the scratch) and dS_{j+1} (dW in registers, the bf16
//     copy D1 = dW1'^T, D2 = dW2' in the scratch, db1 / db2 in shared memory): the update backward of
//     mini-batch j (if j < n), then the read-out backward of mini-batch j - 1 (if j >= 1). Every product is
//       f-local       [16 f][16 j] per warp and token chunk: A = rows of a table half (ldmatrix), B = a tile
//       weight grad   dW[h] += X^T Y: A = an f-local chunk (registers), B = a [j][d] tile
//       contraction   C[j][d] = sum_f A[j][f] B[f][d]: the warps write A^T rows [f][j] of one half to opa,
//                     then each warp computes its 16 x 32 block (rows 16 (w & 3), cols 32 (w >> 2)) over the
//                     half's 128 units and stores it (h = 0) or adds it (h = 1) to fp32 rows in the scratch
//                     (flush_block: the same thread both times, so no reduction and a fixed order; held in
//                     registers across the next half's f-local work, the sums spilled)
//     Reads of dS_{j+1} use its bf16 copy only, so the fp32 accumulators take this step's terms in any order.
//     Passes (each for h = 0, 1; T0 / T1 = the two table slots; stashes in the scratch):
//       U1  T0 W1t, T1 W2:  Z1^T = W1t K^T + b1 -> stash Z1 (bf16); gelu -> opa;  Z2 += X2 W2
//           rows (warps 0..3): Z2 + b2 -> stash Z2 (fp32); g2 = LNL2'(Z2, V - K) -> tile g2
//       U2  T0 D1, T1 W2:   dP1 = -(D1 K^T + db1'), G1 = W2 g2^T, gelu'(Z1); deta over f; dZ1_a, -eta g1
//           -> stash; dW2 += dG1^T g2; dG1^T -> opa;  part1 += dG1 W2
//       U3  T0 D2:          X2^T (from the Z1 stash) -> opa;  part2 += X2 D2
//           rows: dP2 = -(part2 + db2'), deta over d, dg2 = eta dP2 + part1; warps 0..3: VJP of LNL2'
//           -> tile dZ2, -dT -> dk, dV; db2, dln_w, dln_b
//       U4  T0 D2, T1 W2:   dX2 = -eta (D2 g2^T) + W2 dZ2^T; dZ1 = dZ1_a + dX2 gelu'(Z1); dW1^T += dZ1^T K;
//           dW2 += X2^T dZ2; db1; dZ1^T -> opa;  then T0 W1t: dk += dZ1 W1t
//       U5  T0 D1, opa <- the -eta g1 stash:  dk += (-eta g1) D1
//       R1  T0 W1t, T1 W2:  Zq1^T = W1t Q^T + b1, gelu -> opa;  Zq2 += Xq2 W2
//           rows (warps 0..3): LN backward with dO -> tile dZq2; db2, dln_w, dln_b
//       R2  T0 W1t, T1 W2:  Zq1 recomputed; dZq1 = (W2 dZq2^T) gelu'(Zq1); dW1^T += dZq1^T Q;
//           dW2 += Xq2^T dZq2; db1; dZq1^T -> opa;  dq = dO + dZq1 W1t
//       end: db1, db2 += this step's column sums; deta stored; bf16 copy of dS_j -> D1, D2 (for step j - 1)
//   Row-wise phases: warps 0..3 take 16 full rows each from the flushed sums (the helpers of
//   ttt_bwd_common.cuh; V, K, dO read from global memory / L2); dg2, the VJP's input, goes to an fp32
//   [64][64] tile over opa (dead then), where the VJP reads it (not in registers).
//   Between groups dW is parked in d_w1 / d_w2, which start as dL/d(final state) and end as
//   dL/d(initial state); db1, db2, dln_w, dln_b live outside phase 1's shared memory.
//
// FLOPs per mini-batch: phase 1 5 units of 2 b D F, update 13 (X2 and gelu'(Z1) come from the Z1 stash),
// read-out 7: 25 units = 52.4 MFLOP. L2 traffic per step ~1.3 MB: table halves 448 KB, contraction sums
// ~480 KB, stashes ~220 KB, the dS copy 64 KB (docs/benchmarks.md: "TTT-MLP backward: expected cost").
// One CTA owns every sum: dq, dk, dv, deta are written once (plain stores, no red.add), in a fixed order.
//
// Shared memory (struct Smem): max(phase 1: the forward's 95,232 B, phase 2: 91,136 B) + 1,792 B =
// 97,024 B = 94.75 KB, 4.25 KB under the 99 KB of sm_86 / sm_89. Phase 2: two table slots and opa
// [128][64] bf16 (48 KB), K, Q, g2, dZ [64][64] bf16 (32 KB), fp32 vectors 9 KB; tiles swizzled (sw64).
//
// Registers: 255, no spills with nvcc 13.0 on sm_80 / 86 / 89 (tests/cuda/test_compile.py; what it took:
// local_chunk / contract_half not unrolled, the contraction sums flushed, half tables copied with one
// address per thread, cold addresses recomputed, global indices zero-extended); no headroom (capped at
// 240 it spills). Forced on sm_90 it spills ~140 B (Hopper trains on the cluster kernel).
//
// Global tensors: as ttt_mlp_bwd.cu, except the scratch: scr_w [B * H, 5 + 2 (ckpt_every + 1), 256, 64]
// bf16 (D1, D2 and the stashes Z1^T, dZ1_a^T, (-eta g1)^T, all [f][d or j]; then W1^T, W2 per state) and
// scr_b [B * H, 3 * 64 * 64 + (ckpt_every + 1) * 320] fp32 (the Z2 stash and two contraction sums
// [64][64]; then b1, b2 per state).
// dq, dk, deta need not be zeroed (every element is stored).
// ================================================================================================

#include "ttt_bwd_common.cuh"
#include "ttt_mlp_sm80_common.cuh"

namespace ttt {
namespace mlp80_bwd {

using mlp80::F;
using mlp80::NTHREAD;
using mlp80::NWARP;
using mlp80::TILE;

constexpr int FH = F / 2;        // hidden units per half table
constexpr int HALF = FH * HD;    // elements of a half table [128][64]
constexpr int TABLE = F * HD;    // elements of a [256][64] table
constexpr int STASHES = 5;       // tables after the states in scr_w: D1, D2, Z1^T, dZ1_a^T, (-eta g1)^T
constexpr int BVEC = F + HD;     // fp32 b1, b2 of one state

struct Phase2 {
  bf16_t tb[2][HALF];  // table slots T0, T1: rows 128 h .. of a [256][64] table, swizzled
  bf16_t opa[HALF];    // A^T [f - 128 h][j] of a contraction; row-wise phases: fp32 [64][64] (zrow)
  bf16_t k[TILE];      // K_j [j][d]
  bf16_t q[TILE];      // Q_{j-1} [j][d]
  bf16_t g2[TILE];     // g2 of mini-batch j [j][d]
  bf16_t dz[TILE];     // dZ2 (U3..U4), then dZq2 (R1..R2)
  float eta[MBS];
  float b1[F];         // b1, b2 of S_j
  float b2[HD];
  float ln_w[HD];
  float ln_b[HD];
  float cs_w[4][HD];   // column sums of a row-wise phase, per warp 0..3
  float cs_b[4][HD];
  float cs_z[4][HD];
  float acc_db1[F];    // this step's terms of db1, db2 (added at the end of the step: db1' is read before)
  float acc_db2[HD];
  float deta_f[NWARP][MBS];  // deta terms summed over each warp's hidden units
  float deta_d[2][MBS];      // deta terms summed over each 32-column half
};

struct Smem {
  union {
    mlp80::Smem p1;  // phase 1: the forward's layout
    Phase2 p2;
  };
  float db1[F];  // dL/db1, dL/db2 of dS_{j+1}, kept across groups
  float db2[HD];
  float dlnw[HD];
  float dlnb[HD];
};

static_assert(sizeof(Phase2) % 16 == 0 && sizeof(Smem) % 16 == 0, "Smem must keep 16-byte alignment");
static_assert(HALF * sizeof(bf16_t) >= MBS * HD * sizeof(float), "opa holds the fp32 [64][64] row tile");
static_assert(sizeof(Smem) <= 99 * 1024 - 4 * 1024, "Smem must leave 4 KB of the 99 KB of sm_86 / sm_89");

typedef float GradRows[2][8][4];  // [half h][n-tile][4]: rows 128 h + 16 warp + g (+8), columns d

__device__ __forceinline__ int grad_row(int h, int warp, int g, int j) { return FH * h + 16 * warp + g + 8 * (j >> 1); }

__device__ __forceinline__ void load_grad(GradRows& dw1, GradRows& dw2, const float* w1, const float* w2, int warp,
                                          int g, int tq) {
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int f = grad_row(h, warp, g, j), d = 8 * nt + 2 * tq + (j & 1);
        dw1[h][nt][j] = w1[d * F + f];  // dW1 [64][256]
        dw2[h][nt][j] = w2[f * HD + d]; // dW2 [256][64]
      }
}

__device__ __forceinline__ void store_grad(const GradRows& dw1, const GradRows& dw2, float* w1, float* w2, int warp,
                                           int g, int tq) {
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int f = grad_row(h, warp, g, j), d = 8 * nt + 2 * tq + (j & 1);
        w1[d * F + f] = dw1[h][nt][j];
        w2[f * HD + d] = dw2[h][nt][j];
      }
}

// bf16 copy of dS (rows of dW1^T and dW2) into the scratch tables D1, D2 [256][64].
__device__ __forceinline__ void store_grad_bf16(bf16_t* d1, bf16_t* d2, const GradRows& dw1, const GradRows& dw2,
                                                int warp, int g, int tq) {
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const int f = grad_row(h, warp, g, 0), d = 8 * nt + 2 * tq;
      st_bf16x2(&d1[f * HD + d], dw1[h][nt][0], dw1[h][nt][1]);
      st_bf16x2(&d1[(f + 8) * HD + d], dw1[h][nt][2], dw1[h][nt][3]);
      st_bf16x2(&d2[f * HD + d], dw2[h][nt][0], dw2[h][nt][1]);
      st_bf16x2(&d2[(f + 8) * HD + d], dw2[h][nt][2], dw2[h][nt][3]);
    }
}

// Phase 1: bf16 W1^T, W2 [256][64] of the state in the forward's registers (rows 32 warp ..).
__device__ __forceinline__ void store_state_bf16(bf16_t* w1t, bf16_t* w2, const mlp80::StateRows& w1s,
                                                 const mlp80::StateRows& w2s, int warp, int g, int tq) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const int f = mlp80::state_row(warp, mt, g, 0), d = 8 * nt + 2 * tq;
      st_bf16x2(&w1t[f * HD + d], w1s[mt][nt][0], w1s[mt][nt][1]);
      st_bf16x2(&w1t[(f + 8) * HD + d], w1s[mt][nt][2], w1s[mt][nt][3]);
      st_bf16x2(&w2[f * HD + d], w2s[mt][nt][0], w2s[mt][nt][1]);
      st_bf16x2(&w2[(f + 8) * HD + d], w2s[mt][nt][2], w2s[mt][nt][3]);
    }
}

// Rows 128 h .. 128 h + 127 of a [256][64] bf16 table into a swizzled [128][64] slot (cp.async): thread tid
// copies 16-byte chunk tid % 8 of rows tid / 8 + 32 i, which share one swizzle, so each call needs one
// shared and one global address (ptxas kept cp_tile_async_sw's per-call addresses live, and spilled them).
static_assert(FH * HD / 8 == 4 * NTHREAD, "load_half_async: four 16-byte chunks per thread");
__device__ __forceinline__ void load_half_async(bf16_t* slot, const bf16_t* table, int h, int tid) {
  const int row = tid >> 3, col = (tid & 7) * 8;
  const bf16_t* src = table + h * HALF + row * HD + col;
  const u32 dst = smem_u32(slot + sw64(row, col));
#pragma unroll
  for (int i = 0; i < 4; ++i) cp_async16(dst + i * 32 * HD * sizeof(bf16_t), src + i * 32 * HD);
}

// f-local product of token chunk c: acc[nt] (tokens 16 c + 8 nt ..) = sum_d T[r0 + row][d] X[j][d] for the
// 16 rows r0.. of a table slot and a swizzled [j][d] tile.
// local_chunk_add: the same product added to acc.
__device__ __forceinline__ void local_chunk_add(float (&acc)[2][4], const bf16_t* tab, int r0, const bf16_t* x,
                                                int c, int lane) {
#pragma unroll 1  // not unrolled: ptxas would hoist every step's fragments beside the 128-register dS
  for (int kk = 0; kk < HD / 16; ++kk) {
    u32 a[4], b[4];
    load_a_sw(a, tab, r0, 16 * kk, lane);           // A[f][d]
    load_b_nmajor_sw(b, x, 16 * c, 16 * kk, lane);  // B[d][j] = X[j][d]
    mma_bf16(acc[0], a, b[0], b[1]);
    mma_bf16(acc[1], a, b[2], b[3]);
  }
}

__device__ __forceinline__ void local_chunk(float (&acc)[2][4], const bf16_t* tab, int r0, const bf16_t* x, int c,
                                            int lane) {
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
  local_chunk_add(acc, tab, r0, x, c, lane);
}

// The A fragment [16 f][16 j] of an f-local chunk (the accumulator -> A-fragment identity).
__device__ __forceinline__ void a_from_chunk(u32 (&a)[4], const float (&x)[2][4]) {
  a[0] = pack_bf16(x[0][0], x[0][1]);
  a[1] = pack_bf16(x[0][2], x[0][3]);
  a[2] = pack_bf16(x[1][0], x[1][1]);
  a[3] = pack_bf16(x[1][2], x[1][3]);
}

// dw[f][d] += sum_{j in chunk c} A[f][j] Y[j][d] (Y a swizzled [j][d] tile).
__device__ __forceinline__ void wgrad_chunk(float (&dw)[8][4], const u32 (&a)[4], const bf16_t* y, int c, int lane) {
#pragma unroll
  for (int np = 0; np < 4; ++np) {
    u32 b[4];
    load_b_kmajor_sw(b, y, 16 * np, 16 * c, lane);  // B[j][d] = Y[j][d]
    mma_bf16(dw[2 * np], a, b[0], b[1]);
    mma_bf16(dw[2 * np + 1], a, b[2], b[3]);
  }
}

// A chunk -> bf16 rows r0 + g (+8), columns 16 c + 8 nt + 2 tq of a [rows][64] array: swizzled shared
// memory (opa) or, with swz = false, a row-major global stash.
template <bool SWZ>
__device__ __forceinline__ void store_chunk(bf16_t* t, int r0, int c, const float (&x)[2][4], int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    const int col = 16 * c + 8 * nt + 2 * tq;
    st_bf16x2(&t[SWZ ? sw64(r0 + g, col) : (r0 + g) * HD + col], x[nt][0], x[nt][1]);
    st_bf16x2(&t[SWZ ? sw64(r0 + g + 8, col) : (r0 + g + 8) * HD + col], x[nt][2], x[nt][3]);
  }
}

// The chunk at the same positions from a row-major global stash.
__device__ __forceinline__ void load_chunk(float (&x)[2][4], const bf16_t* t, int r0, int c, int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    const int col = 16 * c + 8 * nt + 2 * tq;
    ld_bf16x2(&t[(r0 + g) * HD + col], x[nt][0], x[nt][1]);
    ld_bf16x2(&t[(r0 + g + 8) * HD + col], x[nt][2], x[nt][3]);
  }
}

// Contraction over one half: acc (rows 16 (warp & 3), columns 32 (warp >> 2)) += A[j][f] B[f][d] with
// A^T = opa [f][j] and B = a table slot [f][d], f over the half's 128 units.
__device__ __forceinline__ void contract_half(float (&acc)[4][4], const bf16_t* opa, const bf16_t* tab, int warp,
                                              int lane) {
  const int rb = warp & 3, ch = warp >> 2;
#pragma unroll 1  // as local_chunk
  for (int kk = 0; kk < FH / 16; ++kk) {
    u32 a[4];
    load_a_t_sw(a, opa, 16 * rb, 16 * kk, lane);  // A[j][f] = opa[f][j]
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      u32 b[4];
      load_b_kmajor_sw(b, tab, 32 * ch + 16 * np, 16 * kk, lane);  // B[f][d]
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// A contraction block (rows 16 (warp & 3), columns 32 (warp >> 2)) into fp32 rows [64][64] of global memory:
// stored (first half) or added (the same thread wrote the previous value), so no accumulator stays live
// across the next half's f-local work.
__device__ __forceinline__ void flush_block(float* rows, float (&acc)[4][4], bool first, int warp, int lane) {
  const int rb = warp & 3, ch = warp >> 2;
  if (!first) add_rows_f32(acc, rows, HD, 16 * rb, 32 * ch, lane);
  store_rows_f32(rows, HD, 16 * rb, 32 * ch, acc, lane);
}

// A warp's 16 x 64 rows (8 n-tiles) -> a swizzled bf16 [j][d] tile.
__device__ __forceinline__ void store_rows_sw(bf16_t* t, int row0, const float (&x)[8][4], int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    st_bf16x2(&t[sw64(row0 + g, 8 * nt + 2 * tq)], x[nt][0], x[nt][1]);
    st_bf16x2(&t[sw64(row0 + g + 8, 8 * nt + 2 * tq)], x[nt][2], x[nt][3]);
  }
}

}  // namespace mlp80_bwd
}  // namespace ttt

extern "C" __global__ void ttt_mlp_bwd_sm80_smem_bytes(unsigned* out) {
  *out = (unsigned)sizeof(ttt::mlp80_bwd::Smem);
}

extern "C" __global__ void __launch_bounds__(ttt::mlp80::NTHREAD, 1)
    ttt_mlp_bwd_sm80_bf16(const ttt::bf16_t* __restrict__ q, const ttt::bf16_t* __restrict__ k,
                          const ttt::bf16_t* __restrict__ v, const ttt::bf16_t* __restrict__ dout,
                          const float* __restrict__ eta, const float* __restrict__ ln_w,
                          const float* __restrict__ ln_b, const float* __restrict__ ck_w1,
                          const float* __restrict__ ck_b1, const float* __restrict__ ck_w2,
                          const float* __restrict__ ck_b2, float* __restrict__ d_w1, float* __restrict__ d_b1,
                          float* __restrict__ d_w2, float* __restrict__ d_b2, float* __restrict__ dq,
                          float* __restrict__ dk, float* __restrict__ dv, float* __restrict__ deta,
                          float* __restrict__ dln_w, float* __restrict__ dln_b, ttt::bf16_t* __restrict__ scr_w,
                          float* __restrict__ scr_b, int heads, int n_mb, int ckpt_every, int n_ckpt) {
  using namespace ttt;
  using namespace ttt::mlp80_bwd;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);
  mlp80::Smem& s1 = s.p1;
  Phase2& s2 = s.p2;
  float* zrow = reinterpret_cast<float*>(s2.opa);  // row-wise phases: fp32 [64][64] over opa

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int rb = warp & 3, ch = warp >> 2;  // contraction block: rows 16 rb, columns 32 ch
  const unsigned utid = threadIdx.x;  // global indices: zero-extended (a sign-extended tid spilled)
  const int bh = blockIdx.x;
  const int n = n_mb;
  // addresses of cold data (per group, per step, at the end) are recomputed where used from block_index()
  // and the arguments, so that none stays live beside the 128-register dS (they spilled)
  auto tok0 = [&]() { return static_cast<size_t>(block_index()) * static_cast<size_t>(n_mb) * MBS; };
  auto rows_of = [&](auto* base, int mb) { return base + (tok0() + static_cast<size_t>(mb) * MBS) * HD; };
  const bf16_t* gk = k + static_cast<size_t>(bh) * n * MBS * HD;
  const bf16_t* gv = v + static_cast<size_t>(bh) * n * MBS * HD;
  const float* geta = eta + static_cast<size_t>(bh) * n * MBS;
  const int slots = ckpt_every + 1;
  // per (batch, head): the step tables at constant offsets, then the states (fewer live pointers)
  bf16_t* const gd1 = scr_w + static_cast<size_t>(bh) * (STASHES + 2 * slots) * TABLE;  // bf16 dW1'^T of dS_{j+1}
  bf16_t* const gd2 = gd1 + TABLE;      // bf16 dW2' of dS_{j+1}
  bf16_t* const gz1 = gd1 + 2 * TABLE;  // Z1^T of step j
  bf16_t* const gdz1a = gd1 + 3 * TABLE;  // dZ1_a^T
  bf16_t* const gneg1 = gd1 + 4 * TABLE;  // (-eta g1)^T
  bf16_t* const sw = gd1 + STASHES * TABLE;  // states: W1^T, W2 per slot
  float* const gz2 = scr_b + static_cast<size_t>(bh) * (3 * MBS * HD + slots * BVEC);  // Z2 of step j [64][64]
  float* const gpart1 = gz2 + MBS * HD;  // contraction sums [64][64]: dG1 W2, then Zq2
  float* const gpart2 = gz2 + 2 * MBS * HD;  // X2 dW2'
  float* const sb = gz2 + 3 * MBS * HD;  // states: b1, b2 per slot

  s.db1[tid] = (d_b1 + static_cast<size_t>(bh) * F)[utid];
  if (tid < HD) {
    s.db2[tid] = (d_b2 + static_cast<size_t>(bh) * HD)[utid];
    s.dlnw[tid] = 0.f;
    s.dlnb[tid] = 0.f;
  }

  // Table halves h of t0 / t1 (null: slot untouched) into T0 / T1, with every outstanding cp.async.
  auto tables = [&](const bf16_t* t0, const bf16_t* t1, int h) {
    if (t0 != nullptr) load_half_async(s2.tb[0], t0, h, tid);
    if (t1 != nullptr) load_half_async(s2.tb[1], t1, h, tid);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  };

  for (int gi = n_ckpt - 1; gi >= 0; --gi) {
    const int g0 = gi * ckpt_every;
    const int g1 = min(g0 + ckpt_every, n);
    const int last = g1 == n ? n : g1 - 1;

    // ================= phase 1: states S_g0 .. S_last -> scratch (the forward's update phases) ==========
    {
      mlp80::StateRows w1s, w2s;
      const size_t c = static_cast<size_t>(block_index()) * n_ckpt + gi;
      const int head = block_index() % heads;
      mlp80::load_state(w1s, w2s, ck_w1 + c * HD * F, ck_w2 + c * F * HD, warp, g, tq);
      __syncthreads();  // the previous group's phase 2 is done with the shared memory
      s1.b1[tid] = (ck_b1 + c * F)[utid];
      if (tid < HD) {
        s1.b2[tid] = (ck_b2 + c * HD)[utid];
        s1.ln_w[tid] = ln_w[head * HD + tid];
        s1.ln_b[tid] = ln_b[head * HD + tid];
      }
      mlp80::write_w2_shadow(s1, w2s, warp, g, tq);
      __syncthreads();
      for (int i = g0;; ++i) {
        bf16_t* slot = sw + static_cast<size_t>(i - g0) * 2 * TABLE;
        store_state_bf16(slot, slot + TABLE, w1s, w2s, warp, g, tq);
        float* bslot = sb + static_cast<size_t>(i - g0) * BVEC;
        bslot[utid] = s1.b1[tid];
        if (tid < HD) bslot[F + utid] = s1.b2[tid];
        if (i == last) break;
        const size_t off = static_cast<size_t>(i) * MBS;
        cp_tile_async_sw(s1.k, gk + off * HD, tid, NTHREAD);
        cp_tile_async_sw(s1.vg, gv + off * HD, tid, NTHREAD);
        cp_eta_async(s1.eta, geta + off, tid);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();  // P1
        mlp80::hidden_to_shared(s1, w1s, s1.k, warp, lane);
        __syncthreads();  // P2
        mlp80::inner_loss_grad(s1, warp, lane);
        __syncthreads();  // P3
        if (tid < HD) {
          float sum = 0.f;
#pragma unroll
          for (int r = 0; r < mlp80::RBLOCKS; ++r) sum += s1.colpart2[r][tid];
          s1.b2[tid] -= sum;
        }
        mlp80::update_state(s1, w1s, w2s, warp, lane);
        __syncthreads();  // P4: new b1, b2, W2 shadow
      }
    }
    __syncthreads();  // phase 1's shared memory is free

    // ================= phase 2: reverse steps last .. g0 =================
    GradRows dw1, dw2;
    load_grad(dw1, dw2, d_w1 + static_cast<size_t>(block_index()) * HD * F,
              d_w2 + static_cast<size_t>(block_index()) * F * HD, warp, g, tq);
    store_grad_bf16(gd1, gd2, dw1, dw2, warp, g, tq);
    s2.acc_db1[tid] = 0.f;
    if (tid < HD) {
      const int head = block_index() % heads;
      s2.ln_w[tid] = ln_w[head * HD + tid];
      s2.ln_b[tid] = ln_b[head * HD + tid];
      s2.acc_db2[tid] = 0.f;
    }

    for (int j = last; j >= g0; --j) {
      const bool has_out = j >= 1, has_upd = j < n;
      const bf16_t* w1t = sw + static_cast<size_t>(j - g0) * 2 * TABLE;  // S_j
      const bf16_t* w2 = w1t + TABLE;
      {
        const float* bsrc = sb + static_cast<size_t>(j - g0) * BVEC;
        s2.b1[tid] = bsrc[utid];
        if (tid < HD) s2.b2[tid] = bsrc[F + utid];
        if (has_upd) {
          cp_tile_async_sw(s2.k, gk + static_cast<size_t>(j) * MBS * HD, tid, NTHREAD);
          cp_eta_async(s2.eta, geta + static_cast<size_t>(j) * MBS, tid);
        }
        if (has_out) cp_tile_async_sw(s2.q, rows_of(q, j - 1), tid, NTHREAD);
        cp_async_commit();  // waited for by the first tables() below
      }

      // ======== update backward of mini-batch j ========
      if (has_upd) {
        const bf16_t* gvj = gv + static_cast<size_t>(j) * MBS * HD;
        const bf16_t* gkj = gk + static_cast<size_t>(j) * MBS * HD;
        float* gdk = rows_of(dk, j);

        // ---- U1: Z1 -> stash, X2 -> opa; Z2 = X2 W2 -> the Z2 stash ----------------------------------------
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tables(w1t, w2, h);
          const int r0 = 16 * warp, f0 = FH * h + r0;
#pragma unroll 1
          for (int c = 0; c < MBS / 16; ++c) {
            float z[2][4];
            local_chunk(z, s2.tb[0], r0, s2.k, c, lane);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) z[nt][e] += s2.b1[f0 + g + 8 * (e >> 1)];
            store_chunk<false>(gz1, f0, c, z, lane);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) z[nt][e] = gelu_from_t(z[nt][e], gelu_tanh_t(z[nt][e]));
            store_chunk<true>(s2.opa, r0, c, z, lane);
          }
          __syncthreads();  // opa complete
          float acc[4][4];
          zero_block(acc);
          contract_half(acc, s2.opa, s2.tb[1], warp, lane);
          flush_block(gz2, acc, h == 0, warp, lane);
          __syncthreads();  // opa and the slots free; the Z2 sums visible
        }
        if (warp < 4) {  // Z2 + b2 -> stash; g2 = LNL2'(Z2, V - K) -> tile
          float zz[8][4], target[8][4];
          zero_block(zz);
          add_rows_f32(zz, gz2, HD, 16 * warp, 0, lane);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              const int row = 16 * warp + g + 8 * hh, col = 8 * nt + 2 * tq;
              float v0, v1, k0, k1;
              ld_bf16x2(&gvj[row * HD + col], v0, v1);
              ld_bf16x2(&gkj[row * HD + col], k0, k1);
              target[nt][2 * hh] = v0 - k0;
              target[nt][2 * hh + 1] = v1 - k1;
              zz[nt][2 * hh] += s2.b2[col];
              zz[nt][2 * hh + 1] += s2.b2[col + 1];
            }
          store_rows_f32(gz2, HD, 16 * warp, 0, zz, lane);
          ln_fused_l2_bwd_rows(zz, target, s2.ln_w, s2.ln_b, tq);
          store_rows_sw(s2.g2, 16 * warp, zz, lane);
        }
        __syncthreads();

        // ---- U2: dP1, G1, deta over f, dZ1_a and -eta g1 -> stash, dW2 += dG1^T g2; part1 += dG1 W2 -----------
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tables(gd1, w2, h);
          const int r0 = 16 * warp, f0 = FH * h + r0;
#pragma unroll 1
          for (int c = 0; c < MBS / 16; ++c) {
            float dp[2][4], gg[2][4];
            local_chunk(dp, s2.tb[0], r0, s2.k, c, lane);   // dW1'^T K^T
            local_chunk(gg, s2.tb[1], r0, s2.g2, c, lane);  // G1^T = W2 g2^T
            float dep[2][2] = {{0.f, 0.f}, {0.f, 0.f}};     // dP1 g1 over this lane's two rows, per token
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int hh = 0; hh < 2; ++hh) {
                const int f = f0 + g + 8 * hh, tok = 16 * c + 8 * nt + 2 * tq;
                float z[2], dza[2], neg[2];
                ld_bf16x2(&gz1[f * HD + tok], z[0], z[1]);
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                  const float t = gelu_tanh_t(z[e]), gp = gelu_bwd_from_t(z[e], t);
                  const float dp1 = -(dp[nt][2 * hh + e] + s.db1[f]);
                  const float big_g1 = gg[nt][2 * hh + e], g1 = big_g1 * gp;
                  const float et = s2.eta[tok + e];
                  const float dg1 = et * dp1;
                  dep[nt][e] += dp1 * g1;
                  dza[e] = dg1 * big_g1 * gelu_bwd2_from_t(z[e], t);  // dZ1_a
                  neg[e] = -et * g1;                                  // -eta g1
                  dp[nt][2 * hh + e] = dg1 * gp;                      // dG1
                }
                st_bf16x2(&gdz1a[f * HD + tok], dza[0], dza[1]);
                st_bf16x2(&gneg1[f * HD + tok], neg[0], neg[1]);
              }
            u32 a[4];
            a_from_chunk(a, dp);
            wgrad_chunk(dw2[h], a, s2.g2, c, lane);  // dW2 += dG1^T g2
            store_chunk<true>(s2.opa, r0, c, dp, lane);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const float sum = column_sum8(dep[nt][e]);
                if (g == 0) {
                  float& d = s2.deta_f[warp][16 * c + 8 * nt + 2 * tq + e];
                  d = h == 0 ? sum : d + sum;
                }
              }
          }
          __syncthreads();
          float acc[4][4];
          zero_block(acc);
          contract_half(acc, s2.opa, s2.tb[1], warp, lane);  // dG1 W2
          flush_block(gpart1, acc, h == 0, warp, lane);
          __syncthreads();
        }

        // ---- U3: part2 = X2 D2 -----------------------------------------------------------------------------------
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tables(gd2, nullptr, h);
          const int r0 = 16 * warp, f0 = FH * h + r0;
#pragma unroll 1
          for (int c = 0; c < MBS / 16; ++c) {
            float z[2][4];
            load_chunk(z, gz1, f0, c, lane);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) z[nt][e] = gelu_from_t(z[nt][e], gelu_tanh_t(z[nt][e]));
            store_chunk<true>(s2.opa, r0, c, z, lane);
          }
          __syncthreads();
          float acc[4][4];
          zero_block(acc);
          contract_half(acc, s2.opa, s2.tb[0], warp, lane);
          flush_block(gpart2, acc, h == 0, warp, lane);
          __syncthreads();
        }
        {  // dP2 = -(X2 dW2' + db2'), deta over d, dg2 = eta dP2 + dG1 W2 -> zrow (this thread's sums)
          float acc[4][4], part1[4][4];
          zero_block(acc);
          zero_block(part1);
          add_rows_f32(acc, gpart2, HD, 16 * rb, 32 * ch, lane);
          add_rows_f32(part1, gpart1, HD, 16 * rb, 32 * ch, lane);
          const float eh[2] = {s2.eta[16 * rb + g], s2.eta[16 * rb + g + 8]};
          float de[2] = {0.f, 0.f};
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int row = 16 * rb + g + 8 * (e >> 1), col = 32 * ch + 8 * nt + 2 * tq + (e & 1);
              const float dp2 = -(acc[nt][e] + s.db2[col]);
              const float g2v = __uint_as_float(static_cast<u32>(s2.g2[sw64(row, col)]) << 16);
              de[e >> 1] += dp2 * g2v;
              part1[nt][e] += eh[e >> 1] * dp2;
            }
          de[0] = quad_sum(de[0]);
          de[1] = quad_sum(de[1]);
          if (tq == 0) {
            s2.deta_d[ch][16 * rb + g] = de[0];
            s2.deta_d[ch][16 * rb + g + 8] = de[1];
          }
          store_rows_f32(zrow, HD, 16 * rb, 32 * ch, part1, lane);
        }
        __syncthreads();
        if (warp < 4) {  // VJP of LNL2': dZ2 -> tile, -dT -> dk, dV
          float z[8][4], u[8][4];
          zero_block(z);
          add_rows_f32(z, gz2, HD, 16 * warp, 0, lane);
          lnl2_vjp_rows(z, zrow, gvj, gkj, 16 * warp, s2.ln_w, s2.ln_b, gdk, HD, s2.cs_w[warp], s2.cs_b[warp],
                        s2.cs_z[warp], lane, HD);
          store_rows_sw(s2.dz, 16 * warp, z, lane);
          zero_block(u);
          add_rows_f32(u, gdk, HD, 16 * warp, 0, lane);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) u[nt][e] = -u[nt][e];
          store_rows_f32(rows_of(dv, j), HD, 16 * warp, 0, u, lane);
        }
        __syncthreads();
        if (tid < HD) {
          s2.acc_db2[tid] += s2.cs_z[0][tid] + s2.cs_z[1][tid] + s2.cs_z[2][tid] + s2.cs_z[3][tid];
          s.dlnw[tid] += s2.cs_w[0][tid] + s2.cs_w[1][tid] + s2.cs_w[2][tid] + s2.cs_w[3][tid];
          s.dlnb[tid] += s2.cs_b[0][tid] + s2.cs_b[1][tid] + s2.cs_b[2][tid] + s2.cs_b[3][tid];
        }

        // ---- U4: dX2, dZ1, dW1 += dZ1^T K, dW2 += X2^T dZ2, db1; dk += dZ1 W1t.  U5: dk += (-eta g1) D1 ---------
        // (dk holds -dT from the VJP; each contraction adds to it)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tables(gd2, w2, h);
          const int r0 = 16 * warp, f0 = FH * h + r0;
          float cs1[2] = {0.f, 0.f};
#pragma unroll 1
          for (int c = 0; c < MBS / 16; ++c) {
            float dx[2][4], z1[2][4], dza[2][4];
            local_chunk(dx, s2.tb[0], r0, s2.g2, c, lane);  // dW2' g2^T
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) dx[nt][e] *= -s2.eta[16 * c + 8 * nt + 2 * tq + (e & 1)];
            local_chunk_add(dx, s2.tb[1], r0, s2.dz, c, lane);  // dX2^T = -eta (dW2' g2^T) + W2 dZ2^T
            load_chunk(z1, gz1, f0, c, lane);
            load_chunk(dza, gdz1a, f0, c, lane);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float z = z1[nt][e], t = gelu_tanh_t(z);
                dza[nt][e] += dx[nt][e] * gelu_bwd_from_t(z, t);  // dZ1
                z1[nt][e] = gelu_from_t(z, t);              // X2
                cs1[e >> 1] += dza[nt][e];
              }
            u32 a[4];
            a_from_chunk(a, dza);
            wgrad_chunk(dw1[h], a, s2.k, c, lane);  // dW1^T += dZ1^T K
            a_from_chunk(a, z1);
            wgrad_chunk(dw2[h], a, s2.dz, c, lane);  // dW2 += X2^T dZ2
            store_chunk<true>(s2.opa, r0, c, dza, lane);
          }
          cs1[0] = quad_sum(cs1[0]);
          cs1[1] = quad_sum(cs1[1]);
          if (tq == 0) {  // rows private to this warp
            s2.acc_db1[f0 + g] += cs1[0];
            s2.acc_db1[f0 + g + 8] += cs1[1];
          }
          __syncthreads();  // opa complete, T0 free
          tables(w1t, nullptr, h);
          {
            float acc[4][4];
            zero_block(acc);
            contract_half(acc, s2.opa, s2.tb[0], warp, lane);  // dZ1 W1^T
            flush_block(gdk, acc, false, warp, lane);
          }
          __syncthreads();
          load_half_async(s2.opa, gneg1, h, tid);
          tables(gd1, nullptr, h);
          {
            float acc[4][4];
            zero_block(acc);
            contract_half(acc, s2.opa, s2.tb[0], warp, lane);  // (-eta g1) dW1'^T
            flush_block(gdk, acc, false, warp, lane);
          }
          __syncthreads();
        }
      }

      // ======== read-out backward of mini-batch j - 1 ========
      if (has_out) {
        const bf16_t* gdoj = rows_of(dout, j - 1);

        // ---- R1: Xq2 -> opa; Zq2 = Xq2 W2 (sums in gpart1); LN backward -> dZq2 -------------------------------
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tables(w1t, w2, h);
          const int r0 = 16 * warp, f0 = FH * h + r0;
#pragma unroll 1
          for (int c = 0; c < MBS / 16; ++c) {
            float z[2][4];
            local_chunk(z, s2.tb[0], r0, s2.q, c, lane);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float zz = z[nt][e] + s2.b1[f0 + g + 8 * (e >> 1)];
                z[nt][e] = gelu_from_t(zz, gelu_tanh_t(zz));
              }
            store_chunk<true>(s2.opa, r0, c, z, lane);
          }
          __syncthreads();
          float acc[4][4];
          zero_block(acc);
          contract_half(acc, s2.opa, s2.tb[1], warp, lane);
          flush_block(gpart1, acc, h == 0, warp, lane);
          __syncthreads();
        }
        if (warp < 4) {
          float zz[8][4];
          zero_block(zz);
          add_rows_f32(zz, gpart1, HD, 16 * warp, 0, lane);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) zz[nt][e] += s2.b2[8 * nt + 2 * tq + (e & 1)];
          layer_norm_bwd_rows(zz, gdoj, 16 * warp, s2.ln_w, s2.cs_w[warp], s2.cs_b[warp], s2.cs_z[warp], lane, HD);
          store_rows_sw(s2.dz, 16 * warp, zz, lane);  // dZq2
        }
        __syncthreads();
        if (tid < HD) {
          s2.acc_db2[tid] += s2.cs_z[0][tid] + s2.cs_z[1][tid] + s2.cs_z[2][tid] + s2.cs_z[3][tid];
          s.dlnw[tid] += s2.cs_w[0][tid] + s2.cs_w[1][tid] + s2.cs_w[2][tid] + s2.cs_w[3][tid];
          s.dlnb[tid] += s2.cs_b[0][tid] + s2.cs_b[1][tid] + s2.cs_b[2][tid] + s2.cs_b[3][tid];
        }

        // ---- R2: dZq1, dW1^T += dZq1^T Q, dW2 += Xq2^T dZq2, db1; dq = dO + dZq1 W1^T --------------------------
        float* gdq = rows_of(dq, j - 1);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tables(w1t, w2, h);
          const int r0 = 16 * warp, f0 = FH * h + r0;
          float cs1[2] = {0.f, 0.f};
#pragma unroll 1
          for (int c = 0; c < MBS / 16; ++c) {
            float zq[2][4], dd[2][4];
            local_chunk(zq, s2.tb[0], r0, s2.q, c, lane);   // Zq1^T - b1
            local_chunk(dd, s2.tb[1], r0, s2.dz, c, lane);  // W2 dZq2^T
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float z = zq[nt][e] + s2.b1[f0 + g + 8 * (e >> 1)], t = gelu_tanh_t(z);
                dd[nt][e] *= gelu_bwd_from_t(z, t);  // dZq1
                zq[nt][e] = gelu_from_t(z, t);       // Xq2
                cs1[e >> 1] += dd[nt][e];
              }
            u32 a[4];
            a_from_chunk(a, dd);
            wgrad_chunk(dw1[h], a, s2.q, c, lane);  // dW1^T += dZq1^T Q
            a_from_chunk(a, zq);
            wgrad_chunk(dw2[h], a, s2.dz, c, lane);  // dW2 += Xq2^T dZq2
            store_chunk<true>(s2.opa, r0, c, dd, lane);
          }
          cs1[0] = quad_sum(cs1[0]);
          cs1[1] = quad_sum(cs1[1]);
          if (tq == 0) {
            s2.acc_db1[f0 + g] += cs1[0];
            s2.acc_db1[f0 + g + 8] += cs1[1];
          }
          __syncthreads();
          float acc[4][4];
          zero_block(acc);
          contract_half(acc, s2.opa, s2.tb[0], warp, lane);  // dZq1 W1^T
          if (h == 0) add_rows_bf16(acc, gdoj, HD, 16 * rb, 32 * ch, lane);  // + dO
          flush_block(gdq, acc, h == 0, warp, lane);
          __syncthreads();
        }
      }

      // ======== end of step: db1, db2, deta; bf16 copy of dS_j for step j - 1 ========
      __syncthreads();
      s.db1[tid] += s2.acc_db1[tid];
      s2.acc_db1[tid] = 0.f;
      if (tid < HD) {
        s.db2[tid] += s2.acc_db2[tid];
        s2.acc_db2[tid] = 0.f;
      }
      if (has_upd && tid < MBS) {
        float d = s2.deta_d[0][tid] + s2.deta_d[1][tid];
#pragma unroll
        for (int w = 0; w < NWARP; ++w) d += s2.deta_f[w][tid];
        (deta + tok0() + static_cast<size_t>(j) * MBS)[utid] = d;
      }
      store_grad_bf16(gd1, gd2, dw1, dw2, warp, g, tq);
      __syncthreads();  // the copy is complete before the next step's table loads
    }
    store_grad(dw1, dw2, d_w1 + static_cast<size_t>(block_index()) * HD * F,
               d_w2 + static_cast<size_t>(block_index()) * F * HD, warp, g, tq);  // park (after group 0: the result)
  }

  __syncthreads();
  const size_t bh_end = block_index();
  (d_b1 + bh_end * F)[utid] = s.db1[tid];
  if (tid < HD) {
    (d_b2 + bh_end * HD)[utid] = s.db2[tid];
    (dln_w + bh_end * HD)[utid] = s.dlnw[tid];
    (dln_b + bh_end * HD)[utid] = s.dlnb[tid];
  }
}
