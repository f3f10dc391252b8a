// The CPU MiKV cache (Eigen) behind a plain function boundary for the GPU test: builds a mixed
// cache from random chunks, runs one decode step through it, and returns every (sequence, layer 0,
// KV head) segment as the kernel sees it plus the CPU output and score updates. Host compiler only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"

namespace memattn_test {

struct MikvSnapshot {
  int head_dim = 0, group = 0, groups = 0, low_bits = 0;
  std::vector<std::uint8_t> lo_rec, hi_rec;   // lo_rec: per-token Low records (lowk=0 only)
  std::vector<std::uint32_t> lo_live, hi_live;
  int lo_slots = 0, hi_slots = 0, n_exact = 0;
  // lowk=1: the Low tier in quant::MixedBlockPool's format (kernels::MikvLowBlocks, lo_format = kBlocks)
  bool lo_blocked = false;
  int lo_block = 0, lo_blocks = 0;            // rows per block (MixedBlockPool::kBlock), full blocks
  std::vector<std::uint32_t> lo_kc, lo_vc;    // [blocks][key words], [blocks*block][code words]
  std::vector<std::uint16_t> lo_km, lo_vm;    // [blocks][D][2], [blocks*block][groups][2] fp16 bits
  std::vector<memattn::Half> lo_ks, lo_vs;    // staging rows [lo_slots - blocks*block][D], keys balanced
  int lo_dead = 0;                            // dead Low slots
  std::vector<memattn::Half> k, v;  // exact rows [n_exact][D], the decode token included
  std::vector<float> balancer;      // [D]
  std::vector<float> q;             // [G][D] the decode query
  std::vector<float> out_cpu;       // [G][D]
  std::vector<float> pbar_cpu;      // [lo + hi + exact]: GQA-mean probability of the step (dead slots 0)
};

// spec: a mikv --kv spec (track=1 is added so Low scores move too); D head_dim, G query heads per
// KV head. `sequences` sequences with ragged chunk schedules, one segment per (sequence, KV head).
// kill_low > 0 (lowk=1 only): on a copy of each Low pool every kill_low-th live slot and the first
// staged row are killed (dead slots inside blocks and staging, which a lowk=1 cache never keeps
// after a tier event), and out_cpu / pbar_cpu come from the CPU tier functions over the copy
// (tests/common/mikv_block_export.hpp, checked against the cache by tests/cpu/test_mikv.cpp).
memattn::Status mikv_cpu_snapshot(const std::string& spec, int D, int G, int kv_heads, unsigned seed,
                                  std::vector<MikvSnapshot>* out, int sequences = 1, int kill_low = 0);

}  // namespace memattn_test
