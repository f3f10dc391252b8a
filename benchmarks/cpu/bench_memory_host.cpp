// Host virtual memory (memattn::memory::HostVmBackend through VirtualBuffer / VirtualKvCache):
//
//  BM_HostCommit     one commit() of one granule, for granules of 64 KiB / 2 MiB / 16 MiB:
//                    lazy (mprotect only), lazy + first touch of every page (what the first
//                    writes then pay in page faults), populate (MADV_POPULATE_WRITE at commit),
//                    touch_thp (first touch with huge_pages: transparent huge pages, if enabled).
//  BM_HostDecommit   one decommit() of one granule whose pages were all touched (mprotect +
//                    madvise(MADV_DONTNEED): the pages go back to the OS).
//  BM_ServingStep    a serving step's memory management: 64 slots x 32 layers (Hkv 8, D 128,
//                    fp16: 2 KiB per token row), each slot grows by one 16-token block; for the
//                    per-layer and interleaved VirtualKvCache layouts and for the peer, a paged
//                    layout's block allocator (free-list pop + block-table write per slot). Only
//                    the growth is timed (manual time); the cache is emptied between sweeps.
//
// The cost is per call (per granule), not per byte, unless pages are touched: compare the
// lazy rows across granule sizes. Counters: granule bytes/s; commits per step.
//
//   bench_memory_host [--benchmark_filter=...] [--benchmark_repetitions=N]
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <memattn/memattn.hpp>

namespace {

using memattn::Status;
namespace mem = memattn::memory;
using Clock = std::chrono::steady_clock;

bool g_failed = false;

enum Mode { kLazy = 0, kTouch = 1, kPopulate = 2, kTouchThp = 3 };
const char* const kModeNames[] = {"lazy", "touch", "populate", "touch_thp"};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void touch(unsigned char* p, std::size_t n) {
  for (std::size_t off = 0; off < n; off += 4096) p[off] = 1;
  benchmark::ClobberMemory();
}

void bm_commit(benchmark::State& state, std::size_t granule, Mode mode) {
  mem::HostVmOptions opt;
  opt.granule_bytes = granule;
  opt.populate = mode == kPopulate;
  opt.huge_pages = mode == kTouchThp;
  mem::VirtualBuffer<mem::HostVmBackend> buf{mem::HostVmBackend{opt}};
  const std::size_t n = 32;
  if (buf.reserve(n * granule) != Status::kSuccess) {
    g_failed = true;
    state.SkipWithError("reserve failed");
    return;
  }
  std::size_t g = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const Status st = buf.commit(g * granule, granule);
    if (mode == kTouch || mode == kTouchThp) touch(buf.bytes() + g * granule, granule);
    state.SetIterationTime(seconds_since(t0));
    if (st != Status::kSuccess) {
      g_failed = true;
      state.SkipWithError("commit failed");
      break;
    }
    if (++g == n) {  // untimed: give everything back
      (void)buf.decommit_all();
      g = 0;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * granule));
}

void bm_decommit(benchmark::State& state, std::size_t granule) {
  mem::HostVmOptions opt;
  opt.granule_bytes = granule;
  mem::VirtualBuffer<mem::HostVmBackend> buf{mem::HostVmBackend{opt}};
  const std::size_t n = 32;
  if (buf.reserve(n * granule) != Status::kSuccess) {
    g_failed = true;
    state.SkipWithError("reserve failed");
    return;
  }
  std::size_t g = n;
  for (auto _ : state) {
    if (g == n) {  // untimed: commit and touch everything again
      if (buf.commit(0, n * granule) != Status::kSuccess) {
        g_failed = true;
        state.SkipWithError("commit failed");
        break;
      }
      touch(buf.bytes(), n * granule);
      g = 0;
    }
    const auto t0 = Clock::now();
    const Status st = buf.decommit(g * granule, granule);
    state.SetIterationTime(seconds_since(t0));
    if (st != Status::kSuccess) {
      g_failed = true;
      state.SkipWithError("decommit failed");
      break;
    }
    ++g;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * granule));
}

// ---- serving step -------------------------------------------------------------------------------
constexpr std::int64_t kSlots = 64, kLayers = 32, kHkv = 8, kD = 128, kBlock = 16, kMaxTokens = 1024;

void bm_serving_virtual(benchmark::State& state, mem::KvLayout layout) {
  mem::VirtualKvCacheConfig cfg;
  cfg.slots = kSlots;
  cfg.layers = kLayers;
  cfg.kv_heads = kHkv;
  cfg.head_dim = kD;
  cfg.max_tokens = kMaxTokens;
  cfg.layout = layout;
  mem::VirtualKvCache<mem::HostVmBackend> kv;
  if (kv.init(cfg) != Status::kSuccess) {
    g_failed = true;
    state.SkipWithError("init failed");
    return;
  }
  std::int64_t len = 0;
  std::size_t granules = 0;
  for (auto _ : state) {
    const std::size_t before = kv.buffer().committed_granules();
    const auto t0 = Clock::now();
    Status st = Status::kSuccess;
    for (std::int64_t s = 0; s < kSlots && st == Status::kSuccess; ++s) st = kv.ensure_tokens(s, len + kBlock);
    state.SetIterationTime(seconds_since(t0));
    granules += kv.buffer().committed_granules() - before;
    if (st != Status::kSuccess) {
      g_failed = true;
      state.SkipWithError("ensure_tokens failed");
      break;
    }
    len += kBlock;
    if (len == kMaxTokens) {  // untimed: every sequence finishes
      for (std::int64_t s = 0; s < kSlots; ++s) (void)kv.trim(s, 0);
      len = 0;
    }
  }
  state.counters["commits_per_step"] = static_cast<double>(granules) / static_cast<double>(state.iterations());
}

// The peer: a paged KV cache's block allocator. Physical pages are preallocated; growing a
// sequence by a block pops a page id and writes it into the sequence's block table.
void bm_serving_paged(benchmark::State& state) {
  const std::int64_t pages_per_slot = kMaxTokens / kBlock;
  std::vector<std::int32_t> free_list(static_cast<std::size_t>(kSlots * pages_per_slot));
  std::vector<std::int32_t> table(free_list.size(), -1);
  auto refill = [&]() {
    for (std::size_t i = 0; i < free_list.size(); ++i) free_list[i] = static_cast<std::int32_t>(free_list.size() - 1 - i);
  };
  refill();
  std::size_t top = free_list.size();
  std::int64_t len = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (std::int64_t s = 0; s < kSlots; ++s) {
      if (top == 0) break;
      table[static_cast<std::size_t>(s * pages_per_slot + len / kBlock)] = free_list[--top];
    }
    benchmark::DoNotOptimize(table.data());
    state.SetIterationTime(seconds_since(t0));
    len += kBlock;
    if (len == kMaxTokens) {
      refill();
      top = free_list.size();
      len = 0;
    }
  }
  state.counters["commits_per_step"] = 0;
}

int register_all() {
  const std::size_t granules[] = {std::size_t{64} << 10, std::size_t{2} << 20, std::size_t{16} << 20};
  for (std::size_t g : granules) {
    const std::string gname = std::to_string(g >> 10) + "KiB";
    for (Mode m : {kLazy, kTouch, kPopulate, kTouchThp}) {
      if (m == kTouchThp && g < (std::size_t{2} << 20)) continue;  // THP needs 2 MiB-aligned granules
      benchmark::RegisterBenchmark(("BM_HostCommit/granule:" + gname + "/" + kModeNames[m]).c_str(),
                                   [g, m](benchmark::State& s) { bm_commit(s, g, m); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
    benchmark::RegisterBenchmark(("BM_HostDecommit/granule:" + gname + "/touched").c_str(),
                                 [g](benchmark::State& s) { bm_decommit(s, g); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("BM_ServingStep/per_layer",
                               [](benchmark::State& s) { bm_serving_virtual(s, mem::KvLayout::kPerLayer); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_ServingStep/interleaved",
                               [](benchmark::State& s) { bm_serving_virtual(s, mem::KvLayout::kInterleaved); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_ServingStep/paged_peer", bm_serving_paged)->UseManualTime()->Unit(benchmark::kMicrosecond);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_failed) std::fprintf(stderr, "bench_memory_host: a memattn call failed\n");
  return g_failed ? 1 : 0;
}
