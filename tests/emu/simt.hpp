// A CPU emulator of the CUDA execution model for the warp-synchronous kernels, so that CI runs
// the kernels' own code (not a rewrite) on every run, on a machine without a GPU. Include it
// before any other header of a test translation unit; then call a kernel through
// memattn_emu::launch(grid, block, dynamic_smem_bytes, [&] { kernel(params...); }).
//
// Model: one CTA at a time, in launch order or (ReverseCtas) the reverse, its threads too, so that
// a kernel whose CTAs race through global memory (one reads what another writes in the same
// launch), or whose warps race through shared memory between barriers, fails in one of the orders.
// Each thread of a CTA is a fiber (ucontext to enter, then _setjmp / _longjmp) with its own stack,
// run cooperatively on the calling OS thread until it reaches a barrier: __syncthreads waits for
// every live thread of the CTA, warp collectives (__syncwarp, shuffles, votes, __reduce_max/add_sync,
// mma.sync) for every live lane of its warp. A thread that returns leaves every later barrier (as
// exited threads do on the GPU). Collectives exchange their operands through per-thread slots
// between two warp barriers. A barrier nobody can complete (divergent collectives) aborts with a
// message. Static shared variables (MEMATTN_SHARED) become function statics (one CTA runs at a
// time); they and dynamic shared memory start as 0xFF bytes (NaN floats, -1 integers) in every CTA,
// so a read of memory the kernel never wrote shows; cp.async (async_copy) reads its source at
// issue, fills its destination with 0xFF bytes at once and writes the data only when the issuing
// thread's wait_group retires its group, so that reading a stage before the wait, or overwriting
// one another warp still reads (a copy issued into it before the barrier that frees it), shows as
// garbage; cp.async.bulk copies likewise land only when a thread's try_wait on their mbarrier
// finds the phase's arrivals in (the expected bytes must match; a thread polling a phase that
// never completes aborts); atomics are plain read-modify-writes; ex2.approx is exp2f; mma.sync
// m16n8k16 sums its 16 products in fp32 in k order after the PTX fragment layout; CUB's BlockScan
// is shim/cub's stand-in. Not emulated: other CUB primitives, warp-divergent collectives, proxy
// fences, timing.
#pragma once

#define MEMATTN_SIMT_EMULATION 1
#define __host__
#define __device__
#define __global__
#define __shared__ static

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#undef __launch_bounds__
#define __launch_bounds__(...)
#define MEMATTN_DYNAMIC_SMEM(T, name) T* const name = reinterpret_cast<T*>(::memattn_emu::dynamic_smem())
// A static shared variable: a function static that the first thread of each CTA to reach the
// declaration fills with 0xFF bytes, so no CTA reads what an earlier one left there.
#define MEMATTN_SHARED(T, name, dims) \
  static T name dims;                 \
  ::memattn_emu::fresh_shared(&name, sizeof(name))

namespace memattn_emu {

enum Wait { kRunning = 0, kBlockBarrier = 1, kWarpBarrier = 2 };

struct Fiber {
  ucontext_t ctx{};  // entry (first switch only)
  jmp_buf jb{};      // later switches: _setjmp / _longjmp, no signal-mask system call
  bool started = false;
  std::unique_ptr<unsigned char[]> stack;
  uint3 tid{};
  int lin = 0;
  bool done = false;
  Wait wait = kRunning;
  alignas(16) unsigned char slot[64] = {};  // operands of the current warp collective
  // cp.async in flight: destination, the source bytes read at issue, the commit group it joins
  struct Copy {
    unsigned char* dst;
    unsigned char bytes[16];
    int n;
    long long group;
  };
  std::vector<Copy> copies;
  long long groups = 0;  // commit_group calls so far: a copy joins group `groups` at issue
};

struct Cta {
  dim3 grid, block;
  uint3 bid{};
  std::vector<Fiber> fibers;
  ucontext_t sched{};
  jmp_buf sched_jb{};
  int cur = -1;
  std::function<void()> body;
  std::vector<unsigned char> smem;
  std::vector<const void*> fresh;  // static shared variables already filled for this CTA
  // mbarriers (sm_90) in shared memory and the cp.async.bulk copies completing on them
  struct MBarrier {
    const void* addr = nullptr;
    int count = 0, pending = 0;  // arrivals per phase, still expected in this one
    long long tx = 0;            // bytes expected (expect_tx) minus bytes landed
    unsigned phase = 0;          // parity of the phase in progress
    struct Bulk {
      unsigned char* dst;
      std::vector<unsigned char> bytes;
    };
    std::vector<Bulk> copies;  // in flight
  };
  std::vector<MBarrier> mbarriers;
};

// A switch of the emulator set for a scope (restored after it).
template <bool& (*Flag)()>
struct ScopedSwitch {
  bool saved;
  explicit ScopedSwitch(bool on) : saved(Flag()) { Flag() = on; }
  ~ScopedSwitch() { Flag() = saved; }
};
inline bool& reverse_ctas() {
  static bool r = false;
  return r;
}
// Runs the CTAs of every launch in its scope in reverse order (z, y, x all descending), and the
// threads of each CTA last-first.
using ReverseCtas = ScopedSwitch<reverse_ctas>;
// Whether kernels may use cp.async.bulk (bulk_copy.cuh: sm_90 device code does); BulkCopies(false)
// makes the tests run the cp.async pipelines (sm_80) in its scope.
inline bool& bulk_copies() {
  static bool on = true;
  return on;
}
using BulkCopies = ScopedSwitch<bulk_copies>;

inline Cta*& cta() {
  static Cta* c = nullptr;
  return c;
}
inline Fiber& me() { return cta()->fibers[static_cast<std::size_t>(cta()->cur)]; }
inline unsigned char* dynamic_smem() { return cta()->smem.data(); }
inline void fresh_shared(void* p, std::size_t n) {
  std::vector<const void*>& f = cta()->fresh;
  for (const void* q : f)
    if (q == p) return;
  f.push_back(p);
  std::memset(p, 0xFF, n);
}
inline int lane_id() { return me().lin & 31; }

inline void yield(Wait w) {
  Fiber& f = me();
  f.wait = w;
  if (_setjmp(f.jb) == 0) _longjmp(cta()->sched_jb, 1);
}

// cp.async of n <= 16 bytes: see the model above.
inline void async_copy(void* dst, const void* src, int n) {
  if (n < 1 || n > 16) {
    std::fprintf(stderr, "memattn_emu: cp.async of %d bytes\n", n);
    std::abort();
  }
  Fiber::Copy c{static_cast<unsigned char*>(dst), {}, n, me().groups};
  std::memcpy(c.bytes, src, static_cast<std::size_t>(n));
  std::memset(dst, 0xFF, static_cast<std::size_t>(n));
  me().copies.push_back(c);
}
inline void async_commit() { ++me().groups; }
// cp.async.wait_group n: the copies of every committed group but the n most recent land, in issue
// order (uncommitted copies stay in flight).
inline void async_wait(int n) {
  Fiber& f = me();
  std::size_t kept = 0;
  for (const Fiber::Copy& c : f.copies) {
    if (c.group < f.groups - n) std::memcpy(c.dst, c.bytes, static_cast<std::size_t>(c.n));
    else f.copies[kept++] = c;
  }
  f.copies.resize(kept);
}

// mbarrier with a transaction count and cp.async.bulk (global -> shared) completing on it: a bulk
// copy reads its source at issue and fills its destination with 0xFF bytes; its bytes land when a
// thread tests the barrier (try_wait) after the phase's last expected arrival, which completes
// the phase, so a read of a stage before the wait shows garbage. The expected bytes must equal
// the bytes copied in the phase, sizes and addresses multiples of 16, as on the device.
inline Cta::MBarrier& mbarrier(const void* a, bool create = false) {
  for (Cta::MBarrier& b : cta()->mbarriers)
    if (b.addr == a) return b;
  if (!create) {
    std::fprintf(stderr, "memattn_emu: mbarrier %p used before mbarrier.init\n", a);
    std::abort();
  }
  cta()->mbarriers.emplace_back();
  cta()->mbarriers.back().addr = a;
  return cta()->mbarriers.back();
}
inline void mbarrier_init(void* a, int count) {
  Cta::MBarrier& b = mbarrier(a, true);
  b.count = b.pending = count;
  b.tx = 0;
  b.phase = 0;
  b.copies.clear();
}
inline void mbarrier_arrive_expect_tx(void* a, int bytes) {
  Cta::MBarrier& b = mbarrier(a);
  b.tx += bytes;
  if (--b.pending < 0) {
    std::fprintf(stderr, "memattn_emu: more arrivals on mbarrier %p than its count\n", a);
    std::abort();
  }
}
inline void bulk_copy(void* dst, const void* src, int bytes, void* bar) {
  if (bytes < 16 || bytes % 16 != 0 || reinterpret_cast<std::uintptr_t>(dst) % 16 != 0 || reinterpret_cast<std::uintptr_t>(src) % 16 != 0) {
    std::fprintf(stderr, "memattn_emu: cp.async.bulk of %d bytes from %p to %p (16-byte multiples and alignment)\n", bytes, src, dst);
    std::abort();
  }
  Cta::MBarrier& b = mbarrier(bar);
  const unsigned char* s = static_cast<const unsigned char*>(src);
  b.copies.push_back({static_cast<unsigned char*>(dst), std::vector<unsigned char>(s, s + bytes)});
  std::memset(dst, 0xFF, static_cast<std::size_t>(bytes));
}
// mbarrier.try_wait.parity: whether the phase of parity `parity` has completed
inline bool mbarrier_try_wait(void* a, unsigned parity) {
  Cta::MBarrier& b = mbarrier(a);
  if (b.phase != (parity & 1u)) return true;
  if (b.pending > 0) return false;
  for (const Cta::MBarrier::Bulk& c : b.copies) {
    std::memcpy(c.dst, c.bytes.data(), c.bytes.size());
    b.tx -= static_cast<long long>(c.bytes.size());
  }
  b.copies.clear();
  if (b.tx != 0) {
    std::fprintf(stderr, "memattn_emu: mbarrier %p expected %lld more bytes than were copied\n", a, b.tx);
    std::abort();
  }
  b.phase ^= 1u;
  b.pending = b.count;
  return true;
}

// Polls until the phase of parity `parity` has completed, letting the other threads run between
// polls; a wait that no thread can end is a bug (abort).
inline void mbarrier_wait(void* a, unsigned parity) {
  for (long spins = 0; !mbarrier_try_wait(a, parity); ++spins) {
    if (spins > (1L << 22)) {
      std::fprintf(stderr, "memattn_emu: mbarrier %p: the phase of parity %u never completes\n", a, parity);
      std::abort();
    }
    yield(kRunning);
  }
}

inline void fiber_entry() {
  cta()->body();
  for (const Fiber::Copy& c : me().copies) std::memcpy(c.dst, c.bytes, static_cast<std::size_t>(c.n));  // they land after exit too
  me().copies.clear();
  me().done = true;
  _longjmp(cta()->sched_jb, 1);
}

// Runs fiber i until it waits at a barrier or returns.
__attribute__((noinline)) inline void resume(Cta& c, int i) {
  Fiber& f = c.fibers[static_cast<std::size_t>(i)];
  c.cur = i;
  if (_setjmp(c.sched_jb) == 0) {
    if (!f.started) {
      f.started = true;
      swapcontext(&c.sched, &f.ctx);  // never returns here: the fiber comes back by _longjmp
    } else {
      _longjmp(f.jb, 1);
    }
  }
}

// Runs every thread of the current CTA to completion, releasing barriers as they fill.
inline void run_cta(Cta& c) {
  const int n = static_cast<int>(c.fibers.size()), warps = (n + 31) / 32;
  for (;;) {
    for (int k = 0; k < n; ++k) {
      const int i = reverse_ctas() ? n - 1 - k : k;  // reversed: warps (and lanes) run last-first too
      const Fiber& f = c.fibers[static_cast<std::size_t>(i)];
      if (f.done || f.wait != kRunning) continue;
      resume(c, i);
    }
    c.cur = -1;
    bool all_done = true, released = false;
    bool block_ready = true, any_block = false;
    for (const Fiber& f : c.fibers) {
      if (f.done) continue;
      all_done = false;
      if (f.wait == kBlockBarrier) any_block = true;
      else block_ready = false;
    }
    if (all_done) return;
    bool spinning = false;  // threads that yielded while polling (mbarrier waits) run again
    for (const Fiber& f : c.fibers) spinning = spinning || (!f.done && f.wait == kRunning);
    if (block_ready && any_block) {
      for (Fiber& f : c.fibers) f.wait = kRunning;
      continue;
    }
    for (int w = 0; w < warps; ++w) {
      bool ready = true, any = false;
      for (int l = w * 32; l < std::min(n, w * 32 + 32); ++l) {
        const Fiber& f = c.fibers[static_cast<std::size_t>(l)];
        if (f.done) continue;
        if (f.wait == kWarpBarrier) any = true;
        else ready = false;
      }
      if (ready && any) {
        for (int l = w * 32; l < std::min(n, w * 32 + 32); ++l) c.fibers[static_cast<std::size_t>(l)].wait = kRunning;
        released = true;
      }
    }
    if (!released && !spinning) {
      std::fprintf(stderr, "memattn_emu: deadlock: threads wait at barriers no group completes\n");
      std::abort();
    }
  }
}

// One CTA: fresh fibers at the kernel's entry, zeroed dynamic shared memory, run to completion.
// (Out of line: getcontext must not share a frame with the caller's loop variables.)
__attribute__((noinline)) inline void start_cta(Cta& c, uint3 bid, std::size_t smem_bytes, std::size_t stack_bytes) {
  c.bid = bid;
  c.smem.assign(smem_bytes + 16, 0xFF);
  c.fresh.clear();
  c.mbarriers.clear();
  const int n = static_cast<int>(c.fibers.size());
  for (int i = 0; i < n; ++i) {
    Fiber& f = c.fibers[static_cast<std::size_t>(i)];
    f.lin = i;
    f.tid = make_uint3(static_cast<unsigned>(i) % c.block.x, static_cast<unsigned>(i) / c.block.x % c.block.y,
                       static_cast<unsigned>(i) / (c.block.x * c.block.y));
    f.done = false;
    f.started = false;
    f.wait = kRunning;
    f.copies.clear();
    f.groups = 0;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = stack_bytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  run_cta(c);
}

// Runs `kernel` (a callable that invokes the __global__ function) over the grid, CTA by CTA.
template <class F>
void launch(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes, F&& kernel) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  if (n % 32 != 0) {
    std::fprintf(stderr, "memattn_emu: block size must be a multiple of 32\n");
    std::abort();
  }
  constexpr std::size_t kStack = 64 * 1024;  // per thread: 64 MiB at 1024 threads
  Cta c;
  c.grid = grid;
  c.block = block;
  c.body = std::function<void()>(kernel);
  c.fibers.resize(static_cast<std::size_t>(n));
  for (Fiber& f : c.fibers) f.stack.reset(new unsigned char[kStack]);
  Cta* const saved = cta();
  cta() = &c;
  const bool rev = reverse_ctas();
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x)
        start_cta(c, rev ? make_uint3(grid.x - 1 - x, grid.y - 1 - y, grid.z - 1 - z) : make_uint3(x, y, z), dynamic_smem_bytes, kStack);
  cta() = saved;
}

// ---- warp collectives: write the slot, wait for the warp, read, wait again ----
inline Fiber& lane_fiber(int lane) { return cta()->fibers[static_cast<std::size_t>((me().lin & ~31) + lane)]; }

template <class T>
T exchange(T v, int src_lane) {
  static_assert(sizeof(T) <= sizeof(Fiber::slot), "slot size");
  std::memcpy(me().slot, &v, sizeof(T));
  yield(kWarpBarrier);
  T r;
  std::memcpy(&r, lane_fiber(src_lane).slot, sizeof(T));
  yield(kWarpBarrier);
  return r;
}

// Every lane's 32-bit operand, between two warp barriers: the values of the lanes, 0 for lanes
// that have exited.
inline void lane_words(std::uint32_t v, std::uint32_t (&out)[32]) {
  std::memcpy(me().slot, &v, 4);
  yield(kWarpBarrier);
  for (int l = 0; l < 32; ++l) {
    const Fiber& f = lane_fiber(l);
    out[l] = 0;
    if (!f.done) std::memcpy(&out[l], f.slot, 4);
  }
  yield(kWarpBarrier);
}
// __reduce_{max,add}_sync over the live lanes (exited lanes read 0: the identity of both)
template <class Op>
unsigned lane_reduce(unsigned v, Op op) {
  std::uint32_t w[32];
  lane_words(v, w);
  unsigned r = 0;
  for (std::uint32_t x : w) r = op(r, x);
  return r;
}
inline unsigned ballot(bool pred) {
  std::uint32_t w[32];
  lane_words(pred ? 1u : 0u, w);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l) bits |= (w[l] & 1u) << l;
  return bits;
}

// __syncthreads_or: a CTA barrier that also tells whether pred held on any live thread.
inline bool block_any(bool pred) {
  const std::uint32_t v = pred ? 1u : 0u;
  std::memcpy(me().slot, &v, 4);
  yield(kBlockBarrier);
  bool any = false;
  for (const Fiber& f : cta()->fibers) {
    std::uint32_t x = 0;
    if (!f.done) std::memcpy(&x, f.slot, 4);
    any = any || x != 0u;
  }
  yield(kBlockBarrier);  // every thread has read the slots before any writes its next
  return any;
}

inline float half_lo(std::uint32_t w) { return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu))); }
inline float half_hi(std::uint32_t w) { return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16))); }

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.f32: lane (g = lane / 4, t = lane % 4) holds
// A rows g, g + 8 x cols 2t..2t+1 (a0, a1) and 2t+8..2t+9 (a2, a3), B rows 2t..2t+1 (b0) and
// 2t+8..2t+9 (b1) x col g, C/D rows g (c0, c1), g + 8 (c2, c3) x cols 2t, 2t + 1.
template <bool kBf16>
void mma16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  std::uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  std::memcpy(me().slot, mine, sizeof(mine));
  yield(kWarpBarrier);
  auto elem = [](std::uint32_t w, int half) {
    if (kBf16) {
      const std::uint32_t bits = half ? (w & 0xFFFF0000u) : (w << 16);
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    return half ? half_hi(w) : half_lo(w);
  };
  auto A = [&](int r, int k) {
    std::uint32_t regs[6];
    std::memcpy(regs, lane_fiber(4 * (r % 8) + (k % 8) / 2).slot, sizeof(regs));
    return elem(regs[(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  auto B = [&](int k, int c) {
    std::uint32_t regs[6];
    std::memcpy(regs, lane_fiber(4 * c + (k % 8) / 2).slot, sizeof(regs));
    return elem(regs[4 + (k >= 8 ? 1 : 0)], k % 2);
  };
  const int g = lane_id() / 4, t = lane_id() % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int r = g + (e >= 2 ? 8 : 0), c = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, c);
    out[e] = acc;
  }
  yield(kWarpBarrier);
  for (int e = 0; e < 4; ++e) d[e] = out[e];
}

}  // namespace memattn_emu

// ---- the CUDA built-ins the kernels use ----
#define threadIdx (::memattn_emu::me().tid)
#define blockIdx (::memattn_emu::cta()->bid)
#define blockDim (::memattn_emu::cta()->block)
#define gridDim (::memattn_emu::cta()->grid)

inline void __syncthreads() { memattn_emu::yield(memattn_emu::kBlockBarrier); }
inline int __syncthreads_or(int pred) { return memattn_emu::block_any(pred != 0) ? 1 : 0; }
inline void __syncwarp(unsigned = 0xFFFFFFFFu) { memattn_emu::yield(memattn_emu::kWarpBarrier); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
  return memattn_emu::exchange(v, memattn_emu::lane_id() ^ mask);
}
template <class T>
T __shfl_sync(unsigned, T v, int src, int = 32) {
  return memattn_emu::exchange(v, src & 31);
}
inline unsigned __ballot_sync(unsigned, int pred) { return memattn_emu::ballot(pred != 0); }
inline unsigned __reduce_max_sync(unsigned, unsigned v) {
  return memattn_emu::lane_reduce(v, [](unsigned a, unsigned b) { return a > b ? a : b; });
}
inline unsigned __reduce_add_sync(unsigned, unsigned v) {
  return memattn_emu::lane_reduce(v, [](unsigned a, unsigned b) { return a + b; });
}
inline int __any_sync(unsigned, int pred) { return memattn_emu::ballot(pred != 0) != 0u; }
inline int __all_sync(unsigned, int pred) {
  const unsigned yes = memattn_emu::ballot(pred != 0);
  return yes == memattn_emu::ballot(true);
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}
template <class T>
void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
inline int atomicOr(int* p, int v) {
  const int old = *p;
  *p = old | v;
  return old;
}
inline unsigned atomicOr(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old | v;
  return old;
}
inline int atomicExch(int* p, int v) {
  const int old = *p;
  *p = v;
  return old;
}
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
inline int __float_as_int(float x) { return static_cast<int>(__float_as_uint(x)); }
inline float __int_as_float(int i) { return __uint_as_float(static_cast<unsigned>(i)); }
using std::isfinite;  // a global built-in in device code
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline int __ffs(int x) { return x == 0 ? 0 : __builtin_ctz(static_cast<unsigned>(x)) + 1; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
