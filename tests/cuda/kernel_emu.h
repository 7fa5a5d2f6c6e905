// kernel_emu.h: run this project's CUDA kernels on the CPU, one fiber per CUDA thread (tests only).
//
// tests/cuda/kernel_emu.py preprocesses a kernel source, deletes every small device function whose body
// is inline PTX (ttt_common.cuh's ldmatrix / mma / cp.async / cvt helpers, the cluster helpers of the
// kernels) and compiles the rest, unchanged, as host C++ against the emulated versions defined here:
//
//   warp collectives (ldmatrix, mma.m16n8k16, shuffles): every lane of the warp must reach the same
//     collective; the last lane to arrive computes all 32 results from the PTX ISA fragment layouts
//     (not from the kernel's own comments), so a wrong fragment index in a kernel gives wrong numbers;
//   __syncthreads and barrier.cluster.arrive / wait: real barriers over the fibers (a thread that skips
//     one deadlocks, and the deadlock is reported);
//   cp.async: the destination is poisoned (0xFF bytes: bf16 / fp32 NaN) when the copy is issued and
//     written only by the issuing thread's cp.async.wait_group, so reading a tile before its wait +
//     barrier reads NaN;
//   shared memory starts as NaN bytes; warps are scheduled in a random order between collectives, so a
//     missing barrier between a writer warp and a reader warp shows up as wrong numbers.
// Numbers: bf16 rounding is round-to-nearest-even; mma accumulates exact bf16 products in fp32.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

// ------------------------------------------------------------------------------------------------
// CUDA spellings as host C++

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define __cluster_dims__(...)

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline void __threadfence_block() {}
inline void __threadfence() {}

namespace emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

// ------------------------------------------------------------------------------------------------
// fibers: a minimal x86-64 context switch (callee-saved registers + stack pointer)

extern "C" void emu_switch_ctx(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .hidden emu_switch_ctx
  .globl emu_switch_ctx
  .type emu_switch_ctx, @function
emu_switch_ctx:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_ctx, .-emu_switch_ctx
)");

enum class St { Runnable, Blocked, Done };

struct Copy {
  unsigned char* dst;
  unsigned char bytes[16];
};

struct Fiber {
  void* sp = nullptr;
  unsigned char* stack = nullptr;
  St state = St::Runnable;
  Dim3 tidx, bidx;
  int cta = 0, warp = 0, lane = 0;
  int arrivals = 0, waits = 0;     // barrier.cluster
  std::vector<Copy> open;          // cp.async not yet committed
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
  const char* waiting_on = "";
};

constexpr int kMaxWarpsPerCta = 32;
constexpr size_t kStack = 256 * 1024;
constexpr size_t kSmem = 232448;  // 227 KB, the sm_90 maximum per block

enum class Op { None, Ldsm, LdsmT, Mma, ShflF, ShflU };

struct WarpSync {
  int arrived = 0;
  unsigned generation = 0;
  Op op = Op::None;
  unsigned addr[32];
  unsigned a[32][4], b[32][2];
  float c[32][4];
  float f[32];
  unsigned u[32];
  int arg[32];
  unsigned r[32][4];
  float d[32][4];
  float fo[32];
  unsigned uo[32];
};

struct Cta {
  unsigned char* smem = nullptr;
  WarpSync warps[kMaxWarpsPerCta];
  int bar_arrived = 0;
  unsigned bar_generation = 0;
};

struct Runtime {
  std::vector<Fiber> fibers;
  std::vector<Cta> ctas;
  int block = 0, cluster = 0;
  int cluster_arrived = 0, cluster_completed = 0;
  void* sched_sp = nullptr;
  Fiber* cur = nullptr;
  std::function<void()> body;
  bool failed = false;
  std::mt19937 rng{12345};
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}
inline std::string& last_error() {
  static std::string s;
  return s;
}
inline Fiber* cur() { return rt().cur; }

inline void yield_to_scheduler() { emu_switch_ctx(&rt().cur->sp, rt().sched_sp); }

// Record the first error and park this fiber for good (the scheduler stops the launch).
[[noreturn]] inline void fail(const char* fmt, ...) {
  Runtime& r = rt();
  if (!r.failed) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char who[128];
    std::snprintf(who, sizeof who, " [block %u thread %u]", r.cur ? r.cur->bidx.x : 0u,
                  r.cur ? r.cur->tidx.x : 0u);
    last_error() = std::string(buf) + who;
    r.failed = true;
  }
  r.cur->state = St::Done;
  for (;;) yield_to_scheduler();
}

inline void block_here(const char* what) {
  Fiber* f = cur();
  f->state = St::Blocked;
  f->waiting_on = what;
  yield_to_scheduler();
}

// ------------------------------------------------------------------------------------------------
// shared-memory addresses: bits 24..31 = CTA rank in the cluster + 1, bits 0..23 = byte offset

inline unsigned encode_smem(int cta, size_t off) { return (static_cast<unsigned>(cta + 1) << 24) | off; }

inline unsigned char* decode_smem(unsigned addr, size_t bytes) {
  Runtime& r = rt();
  const int cta = static_cast<int>(addr >> 24) - 1;
  const size_t off = addr & 0xffffffu;
  if (cta < 0 || cta >= r.cluster || off + bytes > kSmem) fail("bad shared-memory address 0x%08x", addr);
  return r.ctas[cta].smem + off;
}

// ------------------------------------------------------------------------------------------------
// warp collectives

inline WarpSync& warp_sync() { return rt().ctas[cur()->cta].warps[cur()->warp]; }

// Every lane posts its operands, then calls this; the 32nd lane computes everyone's result.
template <typename Compute>
inline void warp_collective(Op op, const char* name, Compute compute) {
  WarpSync& w = warp_sync();
  if (w.arrived == 0) {
    w.op = op;
  } else if (w.op != op) {
    fail("warp divergence: lane %d reached %s while other lanes wait in another collective", cur()->lane, name);
  }
  if (++w.arrived == 32) {
    compute(w);
    w.arrived = 0;
    ++w.generation;
    Runtime& r = rt();
    const int base = (cur()->cta * r.block) + cur()->warp * 32;
    for (int l = 0; l < 32; ++l) {
      Fiber& f = r.fibers[base + l];
      if (f.state == St::Blocked) f.state = St::Runnable;
    }
  } else {
    const unsigned gen = w.generation;
    while (w.generation == gen) block_here(name);
  }
}

inline unsigned ld_u32(const unsigned char* p) {
  unsigned v;
  std::memcpy(&v, p, 4);
  return v;
}
inline unsigned short ld_u16(const unsigned char* p) {
  unsigned short v;
  std::memcpy(&v, p, 2);
  return v;
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lanes 8q..8q+7 give the row addresses of matrix q.
inline void ldsm_common(unsigned (&r)[4], unsigned addr, bool trans) {
  WarpSync& w = warp_sync();
  const int lane = cur()->lane;
  if (addr % 16) fail("ldmatrix: row address 0x%08x is not 16-byte aligned", addr);
  w.addr[lane] = addr;
  warp_collective(trans ? Op::LdsmT : Op::Ldsm, "ldmatrix", [trans](WarpSync& s) {
    for (int t = 0; t < 32; ++t) {
      for (int q = 0; q < 4; ++q) {
        if (!trans) {  // thread t: row t/4, elements 2(t%4), 2(t%4)+1
          s.r[t][q] = ld_u32(decode_smem(s.addr[8 * q + t / 4], 16) + 4 * (t % 4));
        } else {  // thread t: rows 2(t%4) and 2(t%4)+1, element t/4
          const unsigned short lo = ld_u16(decode_smem(s.addr[8 * q + 2 * (t % 4)], 16) + 2 * (t / 4));
          const unsigned short hi = ld_u16(decode_smem(s.addr[8 * q + 2 * (t % 4) + 1], 16) + 2 * (t / 4));
          s.r[t][q] = lo | (static_cast<unsigned>(hi) << 16);
        }
      }
    }
  });
  for (int q = 0; q < 4; ++q) r[q] = w.r[lane][q];
}

inline float bf16_to_f(unsigned short h) { return __uint_as_float(static_cast<unsigned>(h) << 16); }

inline unsigned short f_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<unsigned short>(u >> 16);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragment layouts of the PTX ISA:
//   A 16x16: reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
//   B 16x8:  reg0 = B[2t..2t+1][g], reg1 = B[2t+8..2t+9][g]
//   C 16x8:  c0, c1 = C[g][2t], C[g][2t+1];  c2, c3 = C[g+8][2t], C[g+8][2t+1]     (g = lane/4, t = lane%4)
inline void mma_emulated(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  WarpSync& w = warp_sync();
  const int lane = cur()->lane;
  for (int i = 0; i < 4; ++i) {
    w.a[lane][i] = a[i];
    w.c[lane][i] = d[i];
  }
  w.b[lane][0] = b0;
  w.b[lane][1] = b1;
  warp_collective(Op::Mma, "mma", [](WarpSync& s) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
      for (int i = 0; i < 4; ++i) {
        A[rows[i]][cols[i]] = bf16_to_f(s.a[l][i] & 0xffffu);
        A[rows[i]][cols[i] + 1] = bf16_to_f(s.a[l][i] >> 16);
      }
      B[2 * t][g] = bf16_to_f(s.b[l][0] & 0xffffu);
      B[2 * t + 1][g] = bf16_to_f(s.b[l][0] >> 16);
      B[2 * t + 8][g] = bf16_to_f(s.b[l][1] & 0xffffu);
      B[2 * t + 9][g] = bf16_to_f(s.b[l][1] >> 16);
      C[g][2 * t] = s.c[l][0];
      C[g][2 * t + 1] = s.c[l][1];
      C[g + 8][2 * t] = s.c[l][2];
      C[g + 8][2 * t + 1] = s.c[l][3];
    }
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        float acc = 0.f;  // bf16 x bf16 products are exact in fp32
        for (int k = 0; k < 16; ++k) acc += A[m][k] * B[k][n];
        C[m][n] += acc;
      }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      s.d[l][0] = C[g][2 * t];
      s.d[l][1] = C[g][2 * t + 1];
      s.d[l][2] = C[g + 8][2 * t];
      s.d[l][3] = C[g + 8][2 * t + 1];
    }
  });
  for (int i = 0; i < 4; ++i) d[i] = w.d[lane][i];
}

inline float shfl_xor_f(float x, int mask) {
  WarpSync& w = warp_sync();
  const int lane = cur()->lane;
  w.f[lane] = x;
  w.arg[lane] = mask;
  warp_collective(Op::ShflF, "shfl", [](WarpSync& s) {
    for (int l = 0; l < 32; ++l) s.fo[l] = s.f[(l ^ s.arg[l]) & 31];
  });
  return w.fo[lane];
}

inline unsigned shfl_xor_u(unsigned x, int mask) {
  WarpSync& w = warp_sync();
  const int lane = cur()->lane;
  w.u[lane] = x;
  w.arg[lane] = mask;
  warp_collective(Op::ShflU, "shfl", [](WarpSync& s) {
    for (int l = 0; l < 32; ++l) s.uo[l] = s.u[(l ^ s.arg[l]) & 31];
  });
  return w.uo[lane];
}

// ------------------------------------------------------------------------------------------------
// barriers

inline void syncthreads() {
  Runtime& r = rt();
  Cta& c = r.ctas[cur()->cta];
  if (++c.bar_arrived == r.block) {
    c.bar_arrived = 0;
    ++c.bar_generation;
    const int base = cur()->cta * r.block;
    for (int t = 0; t < r.block; ++t)
      if (r.fibers[base + t].state == St::Blocked) r.fibers[base + t].state = St::Runnable;
  } else {
    const unsigned gen = c.bar_generation;
    while (c.bar_generation == gen) block_here("__syncthreads");
  }
}

inline void cluster_arrive_emulated() {
  Runtime& r = rt();
  Fiber* f = cur();
  if (f->arrivals != f->waits) fail("barrier.cluster.arrive twice without a wait in between");
  ++f->arrivals;
  if (++r.cluster_arrived == r.block * r.cluster) {
    r.cluster_arrived = 0;
    ++r.cluster_completed;
    for (auto& g : r.fibers)
      if (g.state == St::Blocked) g.state = St::Runnable;
  }
}

inline void cluster_wait_emulated() {
  Runtime& r = rt();
  Fiber* f = cur();
  if (f->waits + 1 != f->arrivals) fail("barrier.cluster.wait without a matching arrive");
  while (r.cluster_completed < f->arrivals) block_here("barrier.cluster.wait");
  ++f->waits;
}

// ------------------------------------------------------------------------------------------------
// cp.async

inline void cp_async_issue(unsigned saddr, const void* gptr) {
  if (saddr % 16 || reinterpret_cast<uintptr_t>(gptr) % 16) fail("cp.async: 16-byte copy not 16-byte aligned");
  Copy c;
  c.dst = decode_smem(saddr, 16);
  std::memcpy(c.bytes, gptr, 16);
  std::memset(c.dst, 0xff, 16);  // poison until the wait
  cur()->open.push_back(c);
}

inline void cp_async_commit_emulated() {
  cur()->groups.push_back(std::move(cur()->open));
  cur()->open.clear();
}

inline void cp_async_wait_emulated(int n) {
  auto& groups = cur()->groups;
  while (static_cast<int>(groups.size()) > n) {
    for (const Copy& c : groups.front()) std::memcpy(c.dst, c.bytes, 16);
    groups.erase(groups.begin());
  }
}

// ------------------------------------------------------------------------------------------------
// launch: clusters one after another; inside a cluster, one fiber per thread

inline void fiber_entry() {
  Runtime& r = rt();
  r.body();
  r.cur->state = St::Done;
  yield_to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

inline void init_stack(Fiber& f) {
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack + kStack) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                      // fake return address of fiber_entry
  *--sp = reinterpret_cast<void*>(&fiber_entry);        // popped by `ret`
  for (int i = 0; i < 6; ++i) *--sp = nullptr;          // rbp rbx r12 r13 r14 r15
  f.sp = sp;
}

inline int launch(int grid, int block, int cluster, std::function<void()> body) {
  Runtime& r = rt();
  if (block % 32 || block > 32 * kMaxWarpsPerCta || cluster < 1 || grid % cluster) {
    last_error() = "bad launch configuration";
    return 1;
  }
  r.block = block;
  r.cluster = cluster;
  r.body = std::move(body);
  r.failed = false;
  last_error().clear();
  const int n = block * cluster;
  unsigned char* stacks = static_cast<unsigned char*>(
      mmap(nullptr, kStack * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (stacks == MAP_FAILED) {
    last_error() = "mmap of fiber stacks failed";
    return 1;
  }
  r.ctas.assign(cluster, Cta{});
  std::vector<unsigned char*> smem(cluster);
  for (int c = 0; c < cluster; ++c) {
    smem[c] = static_cast<unsigned char*>(std::aligned_alloc(128, kSmem));
    r.ctas[c].smem = smem[c];
  }
  int status = 0;
  for (int cl = 0; cl < grid / cluster && status == 0; ++cl) {
    r.fibers.assign(n, Fiber{});
    for (int c = 0; c < cluster; ++c) {
      std::memset(r.ctas[c].smem, 0xff, kSmem);  // NaN everywhere until written
      r.ctas[c].bar_arrived = 0;
      for (auto& w : r.ctas[c].warps) w.arrived = 0;
    }
    r.cluster_arrived = 0;
    r.cluster_completed = 0;
    for (int i = 0; i < n; ++i) {
      Fiber& f = r.fibers[i];
      f.cta = i / block;
      f.tidx.x = i % block;
      f.bidx.x = cl * cluster + f.cta;
      f.warp = (i % block) / 32;
      f.lane = i % 32;
      f.stack = stacks + kStack * i;
      init_stack(f);
    }
    std::vector<int> warps(n / 32);
    for (int w = 0; w < n / 32; ++w) warps[w] = w;
    for (;;) {
      bool ran = false, all_done = true;
      std::shuffle(warps.begin(), warps.end(), r.rng);
      for (int w : warps) {
        for (int l = 0; l < 32; ++l) {
          Fiber& f = r.fibers[32 * w + l];
          if (f.state != St::Done) all_done = false;
          if (f.state != St::Runnable) continue;
          r.cur = &f;
          emu_switch_ctx(&r.sched_sp, f.sp);
          r.cur = nullptr;
          ran = true;
          if (r.failed) break;
        }
        if (r.failed) break;
      }
      if (r.failed) {
        status = 1;
        break;
      }
      if (all_done) break;
      if (!ran) {
        char buf[256];
        int blocked = 0;
        const char* what = "";
        for (auto& f : r.fibers)
          if (f.state == St::Blocked) {
            ++blocked;
            what = f.waiting_on;
          }
        std::snprintf(buf, sizeof buf, "deadlock in cluster %d: %d threads blocked (e.g. in %s), others finished",
                      cl, blocked, what);
        last_error() = buf;
        status = 1;
        break;
      }
    }
  }
  for (auto* p : smem) std::free(p);
  munmap(stacks, kStack * n);
  r.fibers.clear();
  return status;
}

}  // namespace emu

// ------------------------------------------------------------------------------------------------
// the CUDA built-ins and the PTX helpers the harness removed, as the kernels call them

#define threadIdx (::emu::cur()->tidx)
#define blockIdx (::emu::cur()->bidx)

inline void __syncthreads() { emu::syncthreads(); }
inline float __shfl_xor_sync(unsigned mask, float x, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) emu::fail("__shfl_xor_sync: only full-warp shuffles are emulated");
  return emu::shfl_xor_f(x, lane_mask);
}
inline unsigned __shfl_xor_sync(unsigned mask, unsigned x, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) emu::fail("__shfl_xor_sync: only full-warp shuffles are emulated");
  return emu::shfl_xor_u(x, lane_mask);
}

inline unsigned smem_u32(const void* p) {
  emu::Runtime& r = emu::rt();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  const int me = emu::cur()->cta;
  if (c >= r.ctas[me].smem && c < r.ctas[me].smem + emu::kSmem) return emu::encode_smem(me, c - r.ctas[me].smem);
  emu::fail("smem_u32 of a pointer outside this CTA's shared memory");
}

inline unsigned pack_bf16(float lo, float hi) {
  return emu::f_to_bf16(lo) | (static_cast<unsigned>(emu::f_to_bf16(hi)) << 16);
}

inline void ldsm_x4(unsigned (&r)[4], unsigned addr) { emu::ldsm_common(r, addr, false); }
inline void ldsm_x4_t(unsigned (&r)[4], unsigned addr) { emu::ldsm_common(r, addr, true); }
inline void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  emu::mma_emulated(d, a, b0, b1);
}
inline void cp_async16(unsigned saddr, const void* gptr) { emu::cp_async_issue(saddr, gptr); }
inline void cp_async_commit() { emu::cp_async_commit_emulated(); }
template <int N>
inline void cp_async_wait() {
  emu::cp_async_wait_emulated(N);
}

inline int block_index() { return static_cast<int>(blockIdx.x); }

// thread-block cluster helpers (the kernels define these with inline PTX)
inline unsigned cluster_ctarank() { return static_cast<unsigned>(emu::cur()->cta); }
inline unsigned map_to_rank(unsigned saddr, unsigned rank) {
  return emu::encode_smem(static_cast<int>(rank), saddr & 0xffffffu);
}
inline void st_cluster_v4(unsigned addr, const float (&x)[4]) { std::memcpy(emu::decode_smem(addr, 16), x, 16); }
inline void st_cluster_v2(unsigned addr, float x, float y) {
  const float v[2] = {x, y};
  if (addr % 8) emu::fail("st.shared::cluster.v2: address 0x%08x not 8-byte aligned", addr);
  std::memcpy(emu::decode_smem(addr, 8), v, 8);
}
inline void cluster_arrive() { emu::cluster_arrive_emulated(); }
inline void cluster_wait() { emu::cluster_wait_emulated(); }
inline void red_add_f32(float* p, float x) { *p += x; }  // fibers never interleave inside it
