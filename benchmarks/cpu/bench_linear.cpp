// CPU linear / Lightning attention (spec G5): chunked prefill throughput must be flat in T
// (tokens/s at T = 1K..64K within 15%), B = 1, H = 8, D = 128, bf16 I/O, fp32 state, MiniMax
// decay; with 1 worker and with every hardware thread. Also one decode step (B = 8, H = 8).
//   build/bin/bench_linear --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "memattn/cpu/linear_attention.hpp"

namespace {

using memattn::BFloat16;

// std::thread executor: tasks strided over the workers (spawned per call; prefill tasks are long).
struct ThreadExecutor {
  int n = 1;
  memattn::Executor get() {
    memattn::Executor ex;
    ex.workers = n;
    ex.self = this;
    ex.parallel_for = [](void* self, std::int64_t count, memattn::Executor::TaskFn fn, void* ctx) {
      const int w = static_cast<ThreadExecutor*>(self)->n;
      std::vector<std::thread> th;
      for (int i = 0; i < w; ++i)
        th.emplace_back([=] {
          for (std::int64_t t = i; t < count; t += w) fn(ctx, t, i);
        });
      for (auto& t : th) t.join();
    };
    return ex;
  }
};

std::vector<BFloat16> randn(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<BFloat16> v(n);
  for (auto& x : v) x = memattn::from_float<BFloat16>(nd(rng));
  return v;
}

void BM_LinearPrefill(benchmark::State& state) {
  const std::int64_t T = state.range(0), H = 8, D = 128;
  const int workers = state.range(1) == 0 ? std::max(1u, std::thread::hardware_concurrency()) : 1;
  const auto q = randn(static_cast<std::size_t>(T * H * D), 1), k = randn(q.size(), 2), v = randn(q.size(), 3);
  std::vector<BFloat16> o(q.size());
  std::vector<float> pool(static_cast<std::size_t>(H * D * D), 0.f);
  const auto decay = memattn::linear::decay_rates_minimax(static_cast<int>(H), 0, 8);
  memattn::linear::LinearArgs<BFloat16> a;
  a.q = memattn::make_view<3>(q.data(), {T, H, D});
  a.k = memattn::make_view<3>(k.data(), {T, H, D});
  a.v = memattn::make_view<3>(v.data(), {T, H, D});
  a.o = memattn::make_view<3>(o.data(), {T, H, D});
  a.seq.num_seqs = 1;
  a.state.pool = pool.data();
  a.state.num_slots = 1;
  a.decay_rate = decay.data();
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  ThreadExecutor te{workers};
  const memattn::Executor ex = te.get();
  std::size_t bytes = 0;
  if (memattn::cpu::linear_prefill_workspace_size(a, &bytes, ex) != memattn::Status::kSuccess) {
    state.SkipWithError("workspace_size failed");
    return;
  }
  memattn::HostWorkspace ws(bytes);
  for (auto _ : state) {
    std::fill(pool.begin(), pool.end(), 0.f);
    if (memattn::cpu::linear_prefill(a, ws.data(), bytes, ex) != memattn::Status::kSuccess) {
      state.SkipWithError("linear_prefill failed");
      return;
    }
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["workers"] = workers;
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(T) * state.iterations(), benchmark::Counter::kIsRate);
  // 4·D·(C + D) FLOP per head-token (QKᵀ, PV, Q·S, KᵀV).
  state.counters["GFLOPs"] = benchmark::Counter(4.0 * D * (64 + D) * H * T * state.iterations() * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinearPrefill)
    ->ArgNames({"T", "one_thread"})
    ->ArgsProduct({{1024, 4096, 16384, 65536}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_LinearDecode(benchmark::State& state) {
  const std::int64_t B = state.range(0), H = 8, D = 128;
  const auto q = randn(static_cast<std::size_t>(B * H * D), 1), k = randn(q.size(), 2), v = randn(q.size(), 3);
  std::vector<BFloat16> o(q.size());
  std::vector<float> pool(static_cast<std::size_t>(B * H * D * D), 0.1f);
  const auto decay = memattn::linear::decay_rates_minimax(static_cast<int>(H), 0, 8);
  memattn::linear::LinearArgs<BFloat16> a;
  a.q = memattn::make_view<3>(q.data(), {B, H, D});
  a.k = memattn::make_view<3>(k.data(), {B, H, D});
  a.v = memattn::make_view<3>(v.data(), {B, H, D});
  a.o = memattn::make_view<3>(o.data(), {B, H, D});
  a.seq.num_seqs = B;
  a.state.pool = pool.data();
  a.state.num_slots = B;
  a.decay_rate = decay.data();
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  std::size_t bytes = 0;
  if (memattn::cpu::linear_decode_workspace_size(a, &bytes) != memattn::Status::kSuccess) {
    state.SkipWithError("workspace_size failed");
    return;
  }
  memattn::HostWorkspace ws(bytes);
  for (auto _ : state) {
    if (memattn::cpu::linear_decode(a, ws.data(), bytes) != memattn::Status::kSuccess) {
      state.SkipWithError("linear_decode failed");
      return;
    }
    benchmark::DoNotOptimize(pool.data());
  }
  // fp32 state read + written once per step.
  state.counters["state_GBps"] =
      benchmark::Counter(2.0 * 4 * B * H * D * D * state.iterations() * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinearDecode)->ArgName("B")->Arg(1)->Arg(8)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
