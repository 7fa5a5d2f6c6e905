// ttt_mlp_fwd.cu: fused forward scan of TTT-MLP (ttt-mlp.md sections 1 and 5), bf16 in, fp32 state.
//
// ================================================================================================
// DESIGN
// ================================================================================================
// Specification: ttt_engine/ops/ttt/reference.py (mlp_step_primal; the dual form gives the same numbers).
// Shapes fixed at compile time: head dim D = 64, mini-batch b = 64, hidden F = 256.
//
// Grid and cluster. One 2-CTA thread-block cluster per (batch, head): grid = 2 * B * H, 256 threads
// (8 warps) per CTA, one CTA per SM. The hidden dimension is split over the two CTAs ("on-chip tensor
// parallel", as ttt-tk): CTA rank r owns hidden units f in [128 r, 128 r + 128), i.e. W1[:, f], b1[f],
// W2[f, :]. b2 and the LayerNorm parameters are replicated. Thread-block clusters need sm_90, so this
// kernel runs on Hopper and later only; on sm_80 it compiles to a stub that traps (the backend refuses
// sm_80 for TTT-MLP before launching: a whole head's state, 128 KB fp32 plus bf16 operand copies and
// the per-mini-batch intermediates, does not fit one A100 SM).
//
// State. The fp32 master state lives in REGISTERS for the whole sequence, as mma accumulators:
// warp w holds rows f in [16 w, 16 w + 16) of the local W1^T slice [128 f x 64 d] (32 floats a lane)
// and of the local W2 slice [128 f x 64 d] (32 floats a lane). The state update of a mini-batch is then
// literally an mma accumulation into the state registers (W1^T += (-eta g1)^T K, W2 += X2^T (-eta g2)),
// with fp32 accumulation. After each update the warp writes bf16 copies ("shadows") of its rows into
// shared memory; every other matmul reads W from those shadows with ldmatrix. b1 (local) and b2 are fp32
// in shared memory.
//
// One loop iteration i (0 <= i <= n, n = number of mini-batches) does:
//   P1  ZZ = XX W2                    [128 x 64] partial over the local 128 hidden units (8 k-steps)
//       rows 0..63: readout of mini-batch i-1 (Q rows), rows 64..127: forward of mini-batch i (K rows)
//       exchange: each CTA pushes its partial ZZ into the peer's shared memory (st.shared::cluster),
//       cluster barrier, both CTAs add the two partials (a + b == b + a, so both hold identical sums).
//   P2  rows 0..63  (i >= 1): out[i-1] = Q + LN(ZZ + b2)                 -> global (each CTA 32 rows)
//       rows 64..127 (i < n): g2 = ln_fused_l2_bwd(ZZ + b2, V - K); -eta*g2 and g2 -> smem (bf16),
//       column partial sums of eta*g2 for b2.
//   P3  b2 -= sum_j eta_j g2_j;  G = g2 W2^T (old W2), g1 = G * gelu'(Z1) (gelu' kept in registers since
//       P5), -eta*g1 -> smem (bf16, over the dead readout half of XX); column partials of eta*g1 for b1.
//   P4  b1 -= sum_j eta_j g1_j;  W1^T += (-eta g1)^T K;  W2 += X2^T (-eta g2);  write bf16 shadows.
//   P5  [Q_i ; K_{i+1}] W1 + b1 -> Z (fp32) -> XX = gelu(Z) (bf16); gelu'(Z) of the K rows kept in
//       registers for P3 of the next iteration. Fusing the readout of mini-batch i with the forward
//       of mini-batch i+1 (both need the state after update i) reads each weight once per mini-batch
//       and needs one Z2 exchange per mini-batch instead of two.
// A prologue runs P5 for K_0 (the Q rows read a zero tile); iteration n only finishes the readout of
// the last mini-batch. Synchronisation per iteration: one cluster barrier (arrive.release/wait.acquire)
// around the exchange, a second split cluster barrier (arrive after P2 reads the received partial,
// wait before the next push) that keeps the single receive buffer free of write-after-read races,
// and four __syncthreads (after P2, P3, P4, P5).
//
// Matmuls: mma.sync m16n8k16 bf16 x bf16 -> fp32 (sm_80+ instruction, also on sm_90), operands from
// shared memory via ldmatrix (.trans where the operand is the transpose of the stored tile). LayerNorm,
// its fused backward, GELU and GELU' run in fp32 on the accumulators, row statistics by quad shuffles.
// Rounding to bf16 happens exactly where a value becomes a tensor-core operand (inputs, X2, g2, -eta g,
// W shadows); sums of eta*g for the biases use the fp32 values.
//
// Loads: cp.async (16 B, L1 bypass) double buffering. Q and K have two slots, eta two, V one:
//   after P2 of iteration i:  Q_{i+1}, V_{i+1}, eta_{i+1}   (group A(i+1))
//   after P4 of iteration i:  K_{i+2}                       (group B(i+2))
// so every tile is requested about one iteration before it is read. Waits use cp.async.wait_group 1
// (before P2: A(i) and B(i) landed; before P5: B(i+1) and A(i) landed); empty groups are committed past
// the end of the sequence so the counting never changes.
//
// Shared memory per CTA (struct Smem below): 168.5 KB, within the 227 KB of an H100/H200 SM.
//   W1^T shadow [128][72] bf16 18 KB, W2 shadow [128][72] 18 KB, XX [128][136] 34 KB,
//   g2 and -eta g2 [64][72] 9 KB each, Q [2][64][72] 18 KB, K [2][64][72] 18 KB, V 9 KB,
//   eta [2][64], b1 [128], b2, ln_w, ln_b [64] fp32, column partials 2 KB, receive buffer 32 KB.
// Padded rows (72 or 136 bf16: 144 / 272 B) make every ldmatrix and every 4-byte fragment store
// bank-conflict free.
//
// Registers per lane: 64 (state) + 32 (gelu' of the K rows, P5 -> P3) + 32..64 accumulators.
//
// Checkpoints (optional, for a backward pass): if ckpt_every > 0, the state before mini-batch i
// (i % ckpt_every == 0) is written to ck_* [B, H, n_ckpt, ...] in fp32.
//
// Layout of the global tensors (all contiguous): q, k, v, out [B, H, L, 64] bf16 with L = 64 n;
// eta [B, H, L] fp32; ln_w, ln_b [H, 64] fp32; w1 [B, H, 64, 256], b1 [B, H, 1, 256],
// w2 [B, H, 256, 64], b2 [B, H, 1, 64] fp32 (in and out). 64-bit offsets throughout.
// ================================================================================================

#include "ttt_common.cuh"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
#define TTT_MLP_HAS_CLUSTER 1
#define TTT_MLP_CLUSTER __cluster_dims__(2, 1, 1)
#else
#define TTT_MLP_HAS_CLUSTER 0
#define TTT_MLP_CLUSTER
#endif

namespace ttt {
namespace mlp {

constexpr int NC = 2;             // CTAs per cluster
constexpr int F = 256;            // hidden units
constexpr int FL = F / NC;        // hidden units per CTA
constexpr int NWARP = 8;
constexpr int NTHREAD = NWARP * 32;
constexpr int LDF = FL + 8;       // padded row of a [rows][FL] bf16 tile (272 B)

struct Smem {
  bf16_t w1t[FL * LD];            // W1^T slice [f][d]: B operand (k = d, n = f), n-major
  bf16_t w2[FL * LD];             // W2 slice [f][d]: B operand k-major (k = f) in P1, n-major (k = d) in P3
  bf16_t xx[2 * MBS * LDF];       // [128][FL]: rows 0..63 gelu(Q W1 + b1) then -eta g1; rows 64..127 X2
  bf16_t g2[MBS * LD];            // [64][64]
  bf16_t neg_eg2[MBS * LD];       // [64][64]
  bf16_t q[2][MBS * LD];
  bf16_t k[2][MBS * LD];
  bf16_t v[MBS * LD];
  float eta[2][MBS];
  float b1[FL];
  float b2[HD];
  float ln_w[HD];
  float ln_b[HD];
  float colpart2[4][HD];          // per-warp column sums of eta * g2 (warps 4..7)
  float colpart1[2][FL];          // per-row-group column sums of eta * g1
  float recv[NWARP * 8 * 32 * 4]; // the peer's partial ZZ, [warp][n-tile][lane][4]
};

static_assert(sizeof(Smem) % 16 == 0, "Smem must keep 16-byte alignment");
static_assert(sizeof(Smem) <= 227 * 1024, "Smem exceeds the 227 KB of an sm_90 SM");

#if TTT_MLP_HAS_CLUSTER

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

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;" ::: "memory"); }

// Load this warp's rows of the state slice from global fp32 into the register accumulators.
__device__ __forceinline__ void load_state(float (&w1s)[8][4], float (&w2s)[8][4], const float* w1, const float* w2,
                                           int fbase, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int f = fbase + 16 * warp + g + 8 * (j >> 1);
      const int d = 8 * nt + 2 * tq + (j & 1);
      w1s[nt][j] = w1[d * F + f];  // W1 [64][256]
      w2s[nt][j] = w2[f * HD + d]; // W2 [256][64]
    }
  }
}

__device__ __forceinline__ void store_state(const float (&w1s)[8][4], const float (&w2s)[8][4], float* w1, float* w2,
                                            int fbase, int warp, int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int f = fbase + 16 * warp + g + 8 * (j >> 1);
      const int d = 8 * nt + 2 * tq + (j & 1);
      w1[d * F + f] = w1s[nt][j];
      w2[f * HD + d] = w2s[nt][j];
    }
  }
}

// bf16 copies of this warp's state rows: w1t[f][d], w2[f][d].
__device__ __forceinline__ void write_shadows(Smem& s, const float (&w1s)[8][4], const float (&w2s)[8][4], int warp,
                                              int g, int tq) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const int f = 16 * warp + g, d = 8 * nt + 2 * tq;
    st_bf16x2(&s.w1t[f * LD + d], w1s[nt][0], w1s[nt][1]);
    st_bf16x2(&s.w1t[(f + 8) * LD + d], w1s[nt][2], w1s[nt][3]);
    st_bf16x2(&s.w2[f * LD + d], w2s[nt][0], w2s[nt][1]);
    st_bf16x2(&s.w2[(f + 8) * LD + d], w2s[nt][2], w2s[nt][3]);
  }
}

// P5: [Q ; K] W1 + b1 -> XX = gelu(.) (bf16); gp = gelu'(.) of the K rows.
// Warp (rg, cg) = (warp >> 2, warp & 3) computes rows 32 rg .. 32 rg + 31 of both halves and local
// columns 32 cg .. 32 cg + 31. P3 uses the same tiling, so gp lines up with G.
__device__ __forceinline__ void forward_w1(Smem& s, const bf16_t* qt, const bf16_t* kt, float (&gp)[2][4][4], int warp,
                                           int lane) {
  const int rg = warp >> 2, cg = warp & 3, g = lane >> 2, tq = lane & 3;
  float aq[2][4][4], ak[2][4][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        aq[mt][nt][j] = 0.f;
        ak[mt][nt][j] = 0.f;
      }
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    u32 fq[2][4], fk[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      load_a(fq[mt], qt, LD, 32 * rg + 16 * mt, 16 * kk, lane);
      load_a(fk[mt], kt, LD, 32 * rg + 16 * mt, 16 * kk, lane);
    }
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      u32 b[4];
      load_b_nmajor(b, s.w1t, LD, 32 * cg + 16 * np, 16 * kk, lane);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_bf16(aq[mt][2 * np], fq[mt], b[0], b[1]);
        mma_bf16(aq[mt][2 * np + 1], fq[mt], b[2], b[3]);
        mma_bf16(ak[mt][2 * np], fk[mt], b[0], b[1]);
        mma_bf16(ak[mt][2 * np + 1], fk[mt], b[2], b[3]);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int col = 32 * cg + 8 * nt + 2 * tq;
      const float bias0 = s.b1[col], bias1 = s.b1[col + 1];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = 32 * rg + 16 * mt + g + 8 * h;
        float z0 = aq[mt][nt][2 * h] + bias0, z1 = aq[mt][nt][2 * h + 1] + bias1;
        st_bf16x2(&s.xx[row * LDF + col], gelu_from_t(z0, gelu_tanh_t(z0)), gelu_from_t(z1, gelu_tanh_t(z1)));
        z0 = ak[mt][nt][2 * h] + bias0;
        z1 = ak[mt][nt][2 * h + 1] + bias1;
        const float t0 = gelu_tanh_t(z0), t1 = gelu_tanh_t(z1);
        st_bf16x2(&s.xx[(MBS + row) * LDF + col], gelu_from_t(z0, t0), gelu_from_t(z1, t1));
        gp[mt][nt][2 * h] = gelu_bwd_from_t(z0, t0);
        gp[mt][nt][2 * h + 1] = gelu_bwd_from_t(z1, t1);
      }
    }
  }
}

#endif  // TTT_MLP_HAS_CLUSTER

}  // namespace mlp
}  // namespace ttt

// Bytes of dynamic shared memory the kernel needs (the loader reads it with a one-thread launch).
extern "C" __global__ void ttt_mlp_fwd_smem_bytes(unsigned* out) { *out = (unsigned)sizeof(ttt::mlp::Smem); }

extern "C" __global__ void TTT_MLP_CLUSTER __launch_bounds__(ttt::mlp::NTHREAD, 1)
    ttt_mlp_fwd_bf16(const ttt::bf16_t* __restrict__ q, const ttt::bf16_t* __restrict__ k,
                     const ttt::bf16_t* __restrict__ v, const float* __restrict__ eta,
                     const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                     const float* __restrict__ w1_in, const float* __restrict__ b1_in,
                     const float* __restrict__ w2_in, const float* __restrict__ b2_in, ttt::bf16_t* __restrict__ out,
                     float* __restrict__ w1_out, float* __restrict__ b1_out, float* __restrict__ w2_out,
                     float* __restrict__ b2_out, float* __restrict__ ck_w1, float* __restrict__ ck_b1,
                     float* __restrict__ ck_w2, float* __restrict__ ck_b2, int heads, int n_mb, int ckpt_every,
                     int n_ckpt) {
#if TTT_MLP_HAS_CLUSTER
  using namespace ttt;
  using namespace ttt::mlp;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const u32 rank = cluster_ctarank();
  const u32 peer = rank ^ 1u;
  const int bh = blockIdx.x / NC;
  const int head = bh % heads;
  const int n = n_mb;
  const int fbase = static_cast<int>(rank) * FL;
  const size_t seq = static_cast<size_t>(n) * MBS;
  const bf16_t* gq = q + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gk = k + static_cast<size_t>(bh) * seq * HD;
  const bf16_t* gv = v + static_cast<size_t>(bh) * seq * HD;
  const float* geta = eta + static_cast<size_t>(bh) * seq;
  bf16_t* gout = out + static_cast<size_t>(bh) * seq * HD;

  // ---- prologue: zero shared memory (tiles read before their first load must be finite) --------
  {
    uint4* p = reinterpret_cast<uint4*>(smem_raw);
    for (int i = tid; i < static_cast<int>(sizeof(Smem) / 16); i += NTHREAD) p[i] = make_uint4(0u, 0u, 0u, 0u);
  }
  __syncthreads();

  // first loads: A(0) = {Q0, V0, eta0}, B(0) = {K0}, B(1) = {K1}
  cp_tile_async(s.q[0], gq, tid, NTHREAD);
  cp_tile_async(s.v, gv, tid, NTHREAD);
  cp_eta_async(s.eta[0], geta, tid);
  cp_async_commit();
  cp_tile_async(s.k[0], gk, tid, NTHREAD);
  cp_async_commit();
  if (n > 1) cp_tile_async(s.k[1], gk + static_cast<size_t>(MBS) * HD, tid, NTHREAD);
  cp_async_commit();

  float w1s[8][4], w2s[8][4];
  load_state(w1s, w2s, w1_in + static_cast<size_t>(bh) * HD * F, w2_in + static_cast<size_t>(bh) * F * HD,
             fbase, warp, g, tq);
  write_shadows(s, w1s, w2s, warp, g, tq);
  if (tid < FL) s.b1[tid] = b1_in[static_cast<size_t>(bh) * F + fbase + tid];
  if (tid < HD) {
    s.b2[tid] = b2_in[static_cast<size_t>(bh) * HD + tid];
    s.ln_w[tid] = ln_w[head * HD + tid];
    s.ln_b[tid] = ln_b[head * HD + tid];
  }
  cp_async_wait<1>();  // A(0), B(0) landed; B(1) may be in flight
  // every CTA of the cluster is running before anyone touches a peer's shared memory
  cluster_arrive();
  cluster_wait();
  __syncthreads();

  float gp[2][4][4];
  forward_w1(s, s.q[1], s.k[0], gp, warp, lane);  // Q rows: zero tile (no mini-batch -1)
  __syncthreads();

  for (int i = 0;; ++i) {
    const bool has_grad = i < n;
    const bool has_out = i > 0;

    // ---- checkpoint of the state before mini-batch i ----------------------------------------------
    if (ckpt_every > 0 && has_grad && i % ckpt_every == 0) {
      const size_t c = static_cast<size_t>(bh) * n_ckpt + i / ckpt_every;
      store_state(w1s, w2s, ck_w1 + c * HD * F, ck_w2 + c * F * HD, fbase, warp, g, tq);
      if (tid < FL) ck_b1[c * F + fbase + tid] = s.b1[tid];
      if (rank == 0 && tid < HD) ck_b2[c * HD + tid] = s.b2[tid];
    }

    // ---- P1: ZZ = XX W2 (partial over the local hidden units) ------------------------------------
    float zz[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) zz[nt][j] = 0.f;
#pragma unroll
    for (int kk = 0; kk < FL / 16; ++kk) {
      u32 a[4];
      load_a(a, s.xx, LDF, 16 * warp, 16 * kk, lane);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        u32 b[4];
        load_b_kmajor(b, s.w2, LD, 16 * np, 16 * kk, lane);
        mma_bf16(zz[2 * np], a, b[0], b[1]);
        mma_bf16(zz[2 * np + 1], a, b[2], b[3]);
      }
    }
    cp_async_wait<1>();  // A(i) and B(i) landed (V_i, eta_i, Q_i, K_i)

    // ---- exchange the partial sums with the peer CTA ---------------------------------------------
    if (i > 0) cluster_wait();  // the peer has finished reading its receive buffer (previous P2)
    {
      const u32 base = map_to_rank(smem_u32(s.recv), peer);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) st_cluster_v4(base + 16u * ((warp * 8 + nt) * 32 + lane), zz[nt]);
    }
    cluster_arrive();
    cluster_wait();
    __syncthreads();
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const float4 o = reinterpret_cast<const float4*>(s.recv)[(warp * 8 + nt) * 32 + lane];
      zz[nt][0] += o.x;
      zz[nt][1] += o.y;
      zz[nt][2] += o.z;
      zz[nt][3] += o.w;
#pragma unroll
      for (int j = 0; j < 4; ++j) zz[nt][j] += s.b2[8 * nt + 2 * tq + (j & 1)];
    }
    cluster_arrive();  // done with the receive buffer; the peer waits for this before its next push

    // ---- P2: readout rows (warps 0..3) and gradient rows (warps 4..7) -------------------------------
    if (warp < 4) {
      if (has_out) {
        layer_norm_rows(zz, s.ln_w, s.ln_b, tq);
        // each CTA writes half of the 64 rows: rank 0 warps 0, 1; rank 1 warps 2, 3
        if ((warp >> 1) == static_cast<int>(rank)) {
          const bf16_t* qt = s.q[(i - 1) & 1];
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = 16 * warp + g + 8 * h, col = 8 * nt + 2 * tq;
              float q0, q1;
              ld_bf16x2(&qt[row * LD + col], q0, q1);
              const size_t o = (static_cast<size_t>(i - 1) * MBS + row) * HD + col;
              *reinterpret_cast<u32*>(gout + o) = pack_bf16(q0 + zz[nt][2 * h], q1 + zz[nt][2 * h + 1]);
            }
          }
        }
      }
    } else if (has_grad) {
      const int w4 = warp - 4;
      const bf16_t* kt = s.k[i & 1];
      float target[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = 16 * w4 + g + 8 * h, col = 8 * nt + 2 * tq;
          float v0, v1, k0, k1;
          ld_bf16x2(&s.v[row * LD + col], v0, v1);
          ld_bf16x2(&kt[row * LD + col], k0, k1);
          target[nt][2 * h] = v0 - k0;
          target[nt][2 * h + 1] = v1 - k1;
        }
      }
      ln_fused_l2_bwd_rows(zz, target, s.ln_w, s.ln_b, tq);  // zz <- g2
      const float* et = s.eta[i & 1];
      const float e0 = et[16 * w4 + g], e1 = et[16 * w4 + g + 8];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int col = 8 * nt + 2 * tq;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = 16 * w4 + g + 8 * h;
          const float e = h ? e1 : e0;
          st_bf16x2(&s.g2[row * LD + col], zz[nt][2 * h], zz[nt][2 * h + 1]);
          st_bf16x2(&s.neg_eg2[row * LD + col], -e * zz[nt][2 * h], -e * zz[nt][2 * h + 1]);
        }
        const float c0 = column_sum8(e0 * zz[nt][0] + e1 * zz[nt][2]);
        const float c1 = column_sum8(e0 * zz[nt][1] + e1 * zz[nt][3]);
        if (g == 0) {
          s.colpart2[w4][col] = c0;
          s.colpart2[w4][col + 1] = c1;
        }
      }
    }
    if (!has_grad) break;
    __syncthreads();  // S2

    // prefetch A(i+1): Q_{i+1}, V_{i+1}, eta_{i+1} (their slots were last read in P2 / P3 of i-1)
    if (i + 1 < n) {
      const size_t off = static_cast<size_t>(i + 1) * MBS;
      cp_tile_async(s.q[(i + 1) & 1], gq + off * HD, tid, NTHREAD);
      cp_tile_async(s.v, gv + off * HD, tid, NTHREAD);
      cp_eta_async(s.eta[(i + 1) & 1], geta + off, tid);
    }
    cp_async_commit();

    // ---- P3: b2 update; G = g2 W2^T; -eta g1 -> xx rows 0..63 --------------------------------------
    if (tid < HD) s.b2[tid] -= s.colpart2[0][tid] + s.colpart2[1][tid] + s.colpart2[2][tid] + s.colpart2[3][tid];
    {
      const int rg = warp >> 2, cg = warp & 3;
      float acc[2][4][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[mt][nt][j] = 0.f;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        u32 a[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) load_a(a[mt], s.g2, LD, 32 * rg + 16 * mt, 16 * kk, lane);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          u32 b[4];
          load_b_nmajor(b, s.w2, LD, 32 * cg + 16 * np, 16 * kk, lane);  // B[d][f] = W2[f][d]
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_bf16(acc[mt][2 * np], a[mt], b[0], b[1]);
            mma_bf16(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
      const float* et = s.eta[i & 1];
      float csum[4][2];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) csum[nt][0] = csum[nt][1] = 0.f;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = 32 * rg + 16 * mt + g + 8 * h;
          const float e = et[row];
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) {
            const int col = 32 * cg + 8 * nt + 2 * tq;
            const float g10 = acc[mt][nt][2 * h] * gp[mt][nt][2 * h];
            const float g11 = acc[mt][nt][2 * h + 1] * gp[mt][nt][2 * h + 1];
            st_bf16x2(&s.xx[row * LDF + col], -e * g10, -e * g11);
            csum[nt][0] += e * g10;
            csum[nt][1] += e * g11;
          }
        }
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const float c0 = column_sum8(csum[nt][0]), c1 = column_sum8(csum[nt][1]);
        if (g == 0) {
          const int col = 32 * cg + 8 * nt + 2 * tq;
          s.colpart1[rg][col] = c0;
          s.colpart1[rg][col + 1] = c1;
        }
      }
    }
    __syncthreads();  // S3

    // ---- P4: b1 update; W1^T += (-eta g1)^T K; W2 += X2^T (-eta g2); shadows -----------------------
    if (tid < FL) s.b1[tid] -= s.colpart1[0][tid] + s.colpart1[1][tid];
    {
      const bf16_t* kt = s.k[i & 1];
      const bf16_t* x2 = s.xx + MBS * LDF;
#pragma unroll
      for (int kk = 0; kk < MBS / 16; ++kk) {  // contraction over the 64 tokens
        u32 a1[4], a2[4];
        load_a_t(a1, s.xx, LDF, 16 * warp, 16 * kk, lane);  // A[f][j] = (-eta g1)[j][f]
        load_a_t(a2, x2, LDF, 16 * warp, 16 * kk, lane);    // A[f][j] = X2[j][f]
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          u32 b[4];
          load_b_kmajor(b, kt, LD, 16 * np, 16 * kk, lane);  // B[j][d] = K[j][d]
          mma_bf16(w1s[2 * np], a1, b[0], b[1]);
          mma_bf16(w1s[2 * np + 1], a1, b[2], b[3]);
          load_b_kmajor(b, s.neg_eg2, LD, 16 * np, 16 * kk, lane);  // B[j][d] = (-eta g2)[j][d]
          mma_bf16(w2s[2 * np], a2, b[0], b[1]);
          mma_bf16(w2s[2 * np + 1], a2, b[2], b[3]);
        }
      }
      write_shadows(s, w1s, w2s, warp, g, tq);
    }
    cp_async_wait<1>();  // B(i+1) (K_{i+1}) and A(i) (Q_i) landed; A(i+1) may be in flight
    __syncthreads();     // S4

    // prefetch B(i+2): K_{i+2} into the slot of K_i (last read in P4)
    if (i + 2 < n) cp_tile_async(s.k[i & 1], gk + static_cast<size_t>(i + 2) * MBS * HD, tid, NTHREAD);
    cp_async_commit();

    // ---- P5: [Q_i ; K_{i+1}] W1 + b1 -> XX, gelu' ----------------------------------------------------
    forward_w1(s, s.q[i & 1], s.k[(i + 1) & 1], gp, warp, lane);
    __syncthreads();  // S5
  }

  cluster_wait();  // pairs with the last arrive: no CTA leaves while its peer may still need it
  cp_async_wait<0>();

  // ---- final state -------------------------------------------------------------------------------------
  store_state(w1s, w2s, w1_out + static_cast<size_t>(bh) * HD * F, w2_out + static_cast<size_t>(bh) * F * HD,
              fbase, warp, g, tq);
  if (tid < FL) b1_out[static_cast<size_t>(bh) * F + fbase + tid] = s.b1[tid];
  if (rank == 0 && tid < HD) b2_out[static_cast<size_t>(bh) * HD + tid] = s.b2[tid];
#else
  asm volatile("trap;");  // thread-block clusters need sm_90; the backend never launches this here
#endif
}
