// CPU decode step through the KV-cache interface: ThinK two-segment decode ("think:prune=λ") vs the
// dense fp16 cache ("full") at the same shape (one layer, Hq=32 / Hkv=8, head_dim 128, L cached
// tokens, one query token). Reports time per step; the summary prints the ratio think / full for
// every L, measured in the same run; "think:prune=0" is the same composed code path with nothing pruned (the
// like-for-like peer: its ratio to "full" is the code-path difference, think:λ / think:0 the byte effect). The ThinK cache holds L - 32 keys with d_keep channels and
// the newest 32 at full width, so the key bytes it reads shrink by about λ; values are full width.
// MiKV rows (issue 7's other cache): 256 High tokens exact, the rest 2-bit (per-token keys, and
// per-channel key blocks with lowk=1), filled by chunks of 256 so the demotions run as in serving.
// Single-threaded, like memattn.
//
//   bench_think_decode [--benchmark_filter=L:4096] ...
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <memattn/memattn.hpp>

#include "kv_factory.hpp"

namespace {

constexpr std::int64_t kHq = 32, kHkv = 8, kD = 128;
const std::int64_t kLengths[] = {1024, 4096, 16384};
const char* kSpecs[] = {"full", "think:prune=0", "think:prune=0.4", "think:prune=0.5", "kivi:kbits=4,vbits=2", "think:prune=0.4+kivi:kbits=4,vbits=2",
                        "mikv:budget=256,high=16,low=2", "mikv:budget=256,high=16,low=2,lowk=1"};
bool g_failed = false;
std::map<std::pair<std::string, std::int64_t>, double> g_time;  // seconds per step

std::vector<float> random_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> out(n);
  for (auto& x : out) x = normal(rng);
  return out;
}

memattn::Status step(memattn::cache::KvCache& c, const std::vector<float>& q, const std::vector<float>& k,
                     const std::vector<float>& v, std::vector<float>& o, std::int64_t n) {
  using memattn::make_view;
  const memattn::Status s = c.attend(0, 0, make_view<3>(q.data(), {n, kHq, kD}), make_view<3>(k.data(), {n, kHkv, kD}),
                                     make_view<3>(v.data(), {n, kHkv, kD}), make_view<3>(o.data(), {n, kHq, kD}));
  if (s != memattn::Status::kSuccess) return s;
  return c.end_chunk(0, {});
}

void fill(memattn::cache::KvCache& c, std::int64_t L, bool chunked) {
  const auto q = random_values(static_cast<std::size_t>(L * kHq * kD), 1);
  const auto k = random_values(static_cast<std::size_t>(L * kHkv * kD), 2);
  const auto v = random_values(k.size(), 3);
  std::vector<float> o(q.size());
  if (c.reset(0) != memattn::Status::kSuccess) {
    g_failed = true;
    return;
  }
  // Caches that can restore a prefix without attention (full, KIVI) skip the O(L^2) prefill; the
  // stored state is the same. ThinK needs the prefill's queries to choose its channels.
  using memattn::make_view;
  const memattn::Status a = c.append(0, 0, make_view<3>(k.data(), {L, kHkv, kD}), make_view<3>(v.data(), {L, kHkv, kD}));
  if (a == memattn::Status::kSuccess) {
    if (c.end_chunk(0, {}) != memattn::Status::kSuccess) g_failed = true;
  } else if (a != memattn::Status::kErrorNotSupported) {
    g_failed = true;
  } else if (chunked) {  // MiKV: chunks of 256, each demoting what falls out of the High budget
    constexpr std::int64_t kChunk = 256;
    for (std::int64_t t = 0; t < L && !g_failed; t += kChunk) {
      const std::int64_t n = std::min(kChunk, L - t);
      std::vector<float> qc(q.begin() + t * kHq * kD, q.begin() + (t + n) * kHq * kD);
      std::vector<float> kc(k.begin() + t * kHkv * kD, k.begin() + (t + n) * kHkv * kD);
      std::vector<float> vc(v.begin() + t * kHkv * kD, v.begin() + (t + n) * kHkv * kD);
      std::vector<float> oc(qc.size());
      if (step(c, qc, kc, vc, oc, n) != memattn::Status::kSuccess) g_failed = true;
    }
  } else if (step(c, q, k, v, o, L) != memattn::Status::kSuccess) {
    g_failed = true;
  }
}

void bm_decode(benchmark::State& state, std::string spec, std::int64_t L) {
  memattn::cache::CacheShape shape;
  shape.layers = 1;
  shape.q_heads = kHq;
  shape.kv_heads = kHkv;
  shape.head_dim = kD;
  shape.max_tokens = static_cast<int>(L + 1024);
  std::unique_ptr<memattn::cache::KvCache> c;
  std::string err;
  if (memattn_llama::make_kv_cache(spec, shape, memattn::Executor{}, &c, &err) != memattn::Status::kSuccess) {
    state.SkipWithError(err.c_str());
    g_failed = true;
    return;
  }
  const bool chunked = spec.rfind("mikv", 0) == 0;
  fill(*c, L, chunked);
  const auto q = random_values(static_cast<std::size_t>(kHq * kD), 4);
  const auto k = random_values(static_cast<std::size_t>(kHkv * kD), 5);
  const auto v = random_values(k.size(), 6);
  std::vector<float> o(q.size());
  std::int64_t steps = 0;
  for (auto _ : state) {
    if (++steps % 512 == 0) {  // keep the length near L
      state.PauseTiming();
      fill(*c, L, chunked);
      state.ResumeTiming();
    }
    if (step(*c, q, k, v, o, 1) != memattn::Status::kSuccess) g_failed = true;
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["kv_bytes"] = static_cast<double>(c->bytes());
}

class Collect : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs)
      if (!r.error_occurred && r.run_type == Run::RT_Iteration) {
        const std::string name = r.benchmark_name();
        const std::size_t at = name.find("/L:");
        g_time[{name.substr(0, at), std::stoll(name.substr(at + 3))}] = r.GetAdjustedRealTime() * 1e-9;
      }
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  for (const char* spec : kSpecs)
    for (std::int64_t L : kLengths)
      benchmark::RegisterBenchmark((std::string("decode/") + spec + "/L:" + std::to_string(L)).c_str(),
                                   [spec, L](benchmark::State& s) { bm_decode(s, spec, L); })
          ->Unit(benchmark::kMicrosecond);
  benchmark::Initialize(&argc, argv);
  Collect reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("\nratio of step time vs full (same run; < 1 is faster):\n");
  for (std::int64_t L : kLengths) {
    const auto full = g_time.find({"decode/full", L});
    if (full == g_time.end()) continue;
    for (const char* spec : kSpecs) {
      const auto it = g_time.find({std::string("decode/") + spec, L});
      if (it != g_time.end() && std::string(spec) != "full")
        std::printf("  L=%-6lld %-40s %.3f\n", static_cast<long long>(L), spec, it->second / full->second);
    }
  }
  return g_failed ? 1 : 0;
}
