// One H2O decode step on the CPU (append one token, attention of one query token, score update,
// end_chunk evicting one token), one layer, GQA Hq 32 / Hkv 8, head_dim 128, budget C per KV head,
// against the plain fp16 cache holding the same C tokens. Compaction is either ordered (slots stay
// chronological: every row after the victim moves) or hole filling (spec §5.5 slot replacement:
// the new row moves into the victim's slot). After the table, one line per case: time per step and
// the policy's overhead over the dense step at the same length (issue 5: CPU policy overhead linear
// in tokens; hole filling removes the O(C·D) move). h2o_think_kivi: the composed cache (issue 7,
// `h2o:budget=C+think:prune=0.4+kivi:kbits=4,vbits=2`) at its budget, evicting from its quantised
// blocks at every step.
//
//   bench_evict_step [--benchmark_filter=C:2048] [--benchmark_repetitions=3] ...
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <memattn/cpu/dense_kv_cache.hpp>
#include <memattn/cpu/evict_kv_cache.hpp>

#include "kv_factory.hpp"
#include "kv_step_bench.hpp"
#include "thread_pool.hpp"

namespace {

constexpr int kHq = 32, kHkv = 8, kD = 128;
const std::int64_t kBudgets[] = {512, 2048};
using kv_step_bench::Case;
using kv_step_bench::random_floats;

enum class Kind { kDense, kOrdered, kHoles, kComposed };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kDense: return "dense_fp16";
    case Kind::kOrdered: return "h2o_ordered";
    case Kind::kHoles: return "h2o_holes";
    default: return "h2o_think_kivi";
  }
}

memattn::cache::CacheShape shape(std::int64_t C) {
  memattn::cache::CacheShape s;
  s.layers = 1;
  s.q_heads = kHq;
  s.kv_heads = kHkv;
  s.head_dim = kD;
  s.max_tokens = static_cast<int>(C + (1 << 20));
  return s;
}

// Fills the cache with C tokens: the evicting one through attention (chunks of 256), so it sits at
// its budget and every timed step evicts exactly one token; the dense one with append.
memattn::Status fill(Kind kind, std::int64_t C, Case* c) {
  const std::int64_t chunk = 256;
  const auto qp = random_floats(static_cast<std::size_t>(chunk * kHq * kD), 1);
  const auto kp = random_floats(static_cast<std::size_t>(chunk * kHkv * kD), 2);
  const auto vp = random_floats(kp.size(), 3);
  std::vector<float> op(qp.size());
  MEMATTN_RETURN_IF_ERROR(c->cache->reset(0));
  // the dense cache grows to C + 16 between refills: reserved here, or a timed step would pay for
  // its reallocation (zero-filled pages and a copy of every row)
  if (kind == Kind::kDense) MEMATTN_RETURN_IF_ERROR(c->cache->reserve(0, static_cast<int>(C + 17)));
  for (std::int64_t t = 0; t < C; t += chunk) {
    const std::int64_t n = std::min(chunk, C - t);
    const auto k = memattn::make_view<3>(kp.data(), {n, kHkv, kD});
    const auto v = memattn::make_view<3>(vp.data(), {n, kHkv, kD});
    if (kind == Kind::kDense)
      MEMATTN_RETURN_IF_ERROR(c->cache->append(0, 0, k, v));
    else
      MEMATTN_RETURN_IF_ERROR(c->cache->attend(0, 0, memattn::make_view<3>(qp.data(), {n, kHq, kD}), k, v,
                                               memattn::make_view<3>(op.data(), {n, kHq, kD})));
    MEMATTN_RETURN_IF_ERROR(c->cache->end_chunk(0, {}));
  }
  return memattn::Status::kSuccess;
}

memattn::Status make_case(Kind kind, std::int64_t C, Case* c) {
  c->pool.reset(new memattn_llama::ThreadPool(1));
  const auto s = shape(C);
  if (kind == Kind::kComposed) {  // issue 7's composition, evicting into its quantised blocks
    const std::string spec = "h2o:budget=" + std::to_string(C) + "+think:prune=0.4+kivi:kbits=4,vbits=2";
    std::string err;
    const memattn::Status st = memattn_llama::make_kv_cache(spec, s, c->pool->executor(), &c->cache, &err);
    if (st != memattn::Status::kSuccess) std::fprintf(stderr, "bench_evict_step: %s\n", err.c_str());
    MEMATTN_RETURN_IF_ERROR(st);
  } else if (kind == Kind::kDense) {
    std::unique_ptr<memattn::cpu::DenseKvCache<memattn::Half>> d;
    MEMATTN_RETURN_IF_ERROR(memattn::cpu::DenseKvCache<memattn::Half>::create(s, c->pool->executor(), &d));
    c->cache = std::move(d);
  } else {
    using Cache = memattn::cpu::EvictKvCache<memattn::evict::H2O>;
    Cache::Config cfg;
    cfg.policy = memattn::evict::h2o_params(C, -1);
    cfg.ordered = kind == Kind::kOrdered;
    std::unique_ptr<Cache> e;
    MEMATTN_RETURN_IF_ERROR(Cache::create(s, cfg, "h2o", c->pool->executor(), &e));
    c->cache = std::move(e);
  }
  MEMATTN_RETURN_IF_ERROR(fill(kind, C, c));
  c->set_token(kHq, kHkv, kD, 4);
  return memattn::Status::kSuccess;
}

void bm_step(benchmark::State& state, Kind kind, std::int64_t C) {
  kv_step_bench::time_steps(
      state, std::string(kind_name(kind)) + "|" + std::to_string(C), [&](Case* c) { return make_case(kind, C, c); },
      [&](Case& c) {
        // The dense cache grows by one token per step: refilled so it stays within C + 16.
        if (kind != Kind::kDense || c.cache->tokens(0) < C + 16) return memattn::Status::kSuccess;
        state.PauseTiming();
        const memattn::Status st = fill(kind, C, &c);
        state.ResumeTiming();
        return st;
      });
}

// Console table, then each H2O case against the dense step at the same C.
class OverheadReporter : public benchmark::ConsoleReporter {
 public:
  OverheadReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.run_name.str();
      if (sum_.find(name) == sum_.end()) order_.push_back(name);
      sum_[name] += r.GetAdjustedRealTime();
      n_[name] += 1;
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\nTime per decode step (us); overhead = evicting step - dense fp16 step at the same C (same run):\n");
    for (const std::string& name : order_) {  // name: step/<kind>/C:<C>
      const std::size_t a = name.find('/') + 1, b = name.find("/C:");
      const std::string kind = name.substr(a, b - a), tail = name.substr(b);
      const double t = sum_[name] / n_[name];  // GetAdjustedRealTime: in the benchmark unit (us)
      const auto dense = sum_.find("step/dense_fp16" + tail);
      if (kind == "dense_fp16" || dense == sum_.end()) {
        std::printf("  %-34s %9.1f us\n", name.c_str(), t);
        continue;
      }
      const double td = dense->second / n_["step/dense_fp16" + tail];
      std::printf("  %-34s %9.1f us   overhead %8.1f us (%5.1f%% of the dense step)\n", name.c_str(), t, t - td,
                  100.0 * (t - td) / td);
    }
  }

 private:
  std::vector<std::string> order_;
  std::map<std::string, double> sum_;
  std::map<std::string, int> n_;
};

}  // namespace

int main(int argc, char** argv) {
  for (std::int64_t C : kBudgets)
    for (Kind k : {Kind::kDense, Kind::kOrdered, Kind::kHoles, Kind::kComposed}) {
      const std::string name = std::string("step/") + kind_name(k) + "/C:" + std::to_string(C);
      benchmark::RegisterBenchmark(name.c_str(), [k, C](benchmark::State& s) { bm_step(s, k, C); })
          ->Unit(benchmark::kMicrosecond);
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  OverheadReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return kv_step_bench::failed() ? 1 : 0;
}
