// Shared by the KV-cache decode-step benchmarks (bench_kv_cache_decode, bench_evict_step): one
// cache per case (kept alive across Google Benchmark's runs, one case at a time), deterministic
// inputs, and the timed step attend(one token) + end_chunk through the KvCache interface.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <memattn/cache/kv_cache.hpp>
#include <memattn/core/status.hpp>

#include "thread_pool.hpp"

namespace kv_step_bench {

// xorshift: cheap, deterministic, roughly uniform in [-1, 1).
inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed) {
  std::vector<float> out(n);
  std::uint32_t x = seed * 2654435761u + 1u;
  for (auto& f : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    f = static_cast<float>(x) / 2147483648.f - 1.f;
  }
  return out;
}

struct Case {
  std::unique_ptr<memattn_llama::ThreadPool> pool;
  std::unique_ptr<memattn::cache::KvCache> cache;
  std::vector<float> q, k, v, o;  // one decode token
  int hq = 0, hkv = 0, d = 0;
  void set_token(int q_heads, int kv_heads, int head_dim, std::uint32_t seed) {
    hq = q_heads;
    hkv = kv_heads;
    d = head_dim;
    q = random_floats(static_cast<std::size_t>(hq * d), seed);
    k = random_floats(static_cast<std::size_t>(hkv * d), seed + 1);
    v = random_floats(k.size(), seed + 2);
    o.assign(q.size(), 0.f);
  }
};

inline bool& failed() {  // a case whose Status was not kSuccess: the process exits 1
  static bool f = false;
  return f;
}

// Times attend + end_chunk of the case's token on the cache `key` names, building it with `make`
// on first use (the previous case is freed first). after_step (optional) runs after each step,
// e.g. to keep a growing cache near its length (it may pause the timer).
inline void time_steps(benchmark::State& state, const std::string& key, const std::function<memattn::Status(Case*)>& make,
                       const std::function<memattn::Status(Case&)>& after_step = {}) {
  static std::map<std::string, Case> cases;
  auto it = cases.find(key);
  memattn::Status st = memattn::Status::kSuccess;
  if (it == cases.end()) {
    cases.clear();
    Case c;
    st = make(&c);
    if (st == memattn::Status::kSuccess) it = cases.emplace(key, std::move(c)).first;
  }
  if (st == memattn::Status::kSuccess) {
    Case& c = it->second;
    const auto q = memattn::make_view<3>(static_cast<const float*>(c.q.data()), {1, c.hq, c.d});
    const auto k = memattn::make_view<3>(static_cast<const float*>(c.k.data()), {1, c.hkv, c.d});
    const auto v = memattn::make_view<3>(static_cast<const float*>(c.v.data()), {1, c.hkv, c.d});
    const auto o = memattn::make_view<3>(c.o.data(), {1, c.hq, c.d});
    for (auto _ : state) {
      if (st == memattn::Status::kSuccess) st = c.cache->attend(0, 0, q, k, v, o);
      if (st == memattn::Status::kSuccess) st = c.cache->end_chunk(0, {});
      if (st == memattn::Status::kSuccess && after_step) st = after_step(c);
      benchmark::DoNotOptimize(c.o.data());
      benchmark::ClobberMemory();
    }
    if (st == memattn::Status::kSuccess) state.counters["kv_MiB"] = static_cast<double>(c.cache->bytes()) / (1 << 20);
  }
  if (st != memattn::Status::kSuccess) {
    failed() = true;
    state.SkipWithError(memattn::status_message(st));
  }
}

}  // namespace kv_step_bench
