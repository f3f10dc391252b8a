// The CPU MiKV cache (Eigen) behind a plain function boundary for the GPU test: builds a mixed
// cache from random chunks, runs one decode step through it, and returns every (layer 0, KV head)
// segment as the kernel sees it plus the CPU output and score updates. Host compiler only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"

namespace memattn_test {

struct MikvSnapshot {
  int head_dim = 0, group = 0, groups = 0, low_bits = 0;
  std::vector<std::uint8_t> lo_rec, hi_rec;
  std::vector<std::uint32_t> lo_live, hi_live;
  int lo_slots = 0, hi_slots = 0, n_exact = 0;
  std::vector<memattn::Half> k, v;  // exact rows [n_exact][D], the decode token included
  std::vector<float> balancer;      // [D]
  std::vector<float> q;             // [G][D] the decode query
  std::vector<float> out_cpu;       // [G][D]
  std::vector<float> pbar_cpu;      // [lo + hi + exact]: GQA-mean probability of the step (dead slots 0)
};

// spec: a mikv --kv spec (track=1 is added so Low scores move too); D head_dim, G query heads per KV head.
memattn::Status mikv_cpu_snapshot(const std::string& spec, int D, int G, int kv_heads, unsigned seed,
                                  std::vector<MikvSnapshot>* out);

}  // namespace memattn_test
