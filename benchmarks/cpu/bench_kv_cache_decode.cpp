// One decode step through the KvCache interface (append one token + attention of one query token,
// then end_chunk), one layer, GQA Hq 32 / Hkv 8, head_dim 128, over a cache holding L to L + 127
// tokens (filled with KvCache::append, so set-up costs no O(L^2) prefill). Policies: the dense
// fp32 and fp16 caches (`full:fp32=1`, `full`) and KIVI K2V2 / K4V4 (R = 128, G = 32), each on 1
// and 2 worker threads (the engine's thread pool as Executor). After the table, one line per case:
// time per step and speed-up against the dense fp32 cache with the same threads and L (issue 4's
// CPU gate: K2V2 faster than dense fp32 at L >= 8K).
//
//   bench_kv_cache_decode [--benchmark_filter=kivi] [--benchmark_repetitions=3] ...
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <memattn/memattn.hpp>

#include "kv_factory.hpp"
#include "kv_step_bench.hpp"
#include "thread_pool.hpp"

namespace {

constexpr int kHq = 32, kHkv = 8, kD = 128;
const std::int64_t kLengths[] = {1024, 8192, 16384};
const char* const kSpecs[] = {"full:fp32=1", "full", "kivi:kbits=2,vbits=2,group=32,residual=128",
                              "kivi:kbits=4,vbits=4,group=32,residual=128"};
using kv_step_bench::Case;
using kv_step_bench::random_floats;
constexpr std::int64_t kDrift = 128;

// Appends L tokens of deterministic K/V to sequence 0 (KvCache::append, chunks of 1024).
memattn::Status fill(memattn::cache::KvCache* cache, std::int64_t L) {
  const std::int64_t chunk = 1024;
  const auto kp = random_floats(static_cast<std::size_t>(chunk * kHkv * kD), 1);
  const auto vp = random_floats(kp.size(), 2);
  for (std::int64_t t = 0; t < L; t += chunk) {
    const std::int64_t n = std::min(chunk, L - t);
    MEMATTN_RETURN_IF_ERROR(cache->append(0, 0, memattn::make_view<3>(kp.data(), {n, kHkv, kD}),
                                          memattn::make_view<3>(vp.data(), {n, kHkv, kD})));
    MEMATTN_RETURN_IF_ERROR(cache->end_chunk(0, {}));
  }
  return memattn::Status::kSuccess;
}

// One cache per (spec, L, threads), filled once and reused across Google Benchmark's runs.
memattn::Status make_case(const std::string& spec, std::int64_t L, int threads, Case* c) {
  c->pool.reset(new memattn_llama::ThreadPool(threads));
  memattn::cache::CacheShape s;
  s.layers = 1;
  s.q_heads = kHq;
  s.kv_heads = kHkv;
  s.head_dim = kD;
  s.max_tokens = static_cast<int>(L + (1 << 20));
  std::string err;
  MEMATTN_RETURN_IF_ERROR(memattn_llama::make_kv_cache(spec, s, c->pool->executor(), &c->cache, &err));
  MEMATTN_RETURN_IF_ERROR(c->cache->reserve(0, static_cast<int>(L + kDrift + 1)));
  MEMATTN_RETURN_IF_ERROR(fill(c->cache.get(), L));
  c->set_token(kHq, kHkv, kD, 3);
  return memattn::Status::kSuccess;
}

// Each timed step appends a token; once the cache holds L + kDrift tokens it is refilled to L
// (timer paused), so every case is measured over [L, L + kDrift) whatever its iteration count.
// kDrift = KIVI's residual length: each case averages over one whole flush cycle.
memattn::Status keep_length(Case& c, benchmark::State& state, std::int64_t L) {
  if (c.cache->tokens(0) < L + kDrift) return memattn::Status::kSuccess;
  state.PauseTiming();
  memattn::Status st = c.cache->reset(0);
  if (st == memattn::Status::kSuccess) st = c.cache->reserve(0, static_cast<int>(L + kDrift + 1));
  if (st == memattn::Status::kSuccess) st = fill(c.cache.get(), L);
  state.ResumeTiming();
  return st;
}

void bm_step(benchmark::State& state, const std::string& spec, std::int64_t L, int threads) {
  // one cache alive at a time (the fp32 ones hold up to 130 MB)
  kv_step_bench::time_steps(state, spec + "|" + std::to_string(L) + "|" + std::to_string(threads),
                            [&](Case* c) { return make_case(spec, L, threads, c); },
                            [&](Case& c) { return keep_length(c, state, L); });
}

// Console table, then each case's time per step against dense fp32 with the same L and threads.
class SpeedupReporter : public benchmark::ConsoleReporter {
 public:
  SpeedupReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      const std::string name = r.run_name.str();
      if (times_.find(name) == times_.end()) order_.push_back(name);
      Time& t = times_[name];
      if (r.run_type == Run::RT_Iteration) {
        t.sum += r.GetAdjustedRealTime();
        t.n += 1;
      } else if (r.aggregate_name == "median") {
        t.median = r.GetAdjustedRealTime();
      }
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\nTime per decode step (us) and speed-up over the dense fp32 cache (same L, threads, run):\n");
    for (const std::string& name : order_) {
      // name: step/<spec>/L:<L>/threads:<n>
      const auto slash = name.find("/L:");
      if (slash == std::string::npos) continue;
      const auto base = times_.find("step/full:fp32=1" + name.substr(slash));
      const double t = times_[name].value();
      if (base == times_.end() || t <= 0) continue;
      std::printf("  %-62s %9.1f us   x%.2f\n", name.c_str(), t, base->second.value() / t);
    }
    std::fflush(stdout);
  }

 private:
  struct Time {
    double sum = 0;
    int n = 0;
    double median = -1;
    double value() const { return median >= 0 ? median : (n ? sum / n : 0); }
  };
  std::map<std::string, Time> times_;
  std::vector<std::string> order_;
};

}  // namespace

int main(int argc, char** argv) {
  for (const std::int64_t L : kLengths)
    for (const int threads : {1, 2})
      for (const char* spec : kSpecs) {
        const std::string name = std::string("step/") + spec + "/L:" + std::to_string(L) + "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), [spec, L, threads](benchmark::State& s) { bm_step(s, spec, L, threads); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  SpeedupReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return kv_step_bench::failed() ? 1 : 0;
}
