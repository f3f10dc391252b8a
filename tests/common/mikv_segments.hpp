// The MiKV fused decode's inputs built from CPU snapshots (tests/gpu/mikv_cpu_bridge.hpp) and the
// check of its outputs against the CPU cache's, shared by the GPU test (device copies) and the
// emulated test (host pointers into the snapshots).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/mikv_cpu_bridge.hpp"
#include "memattn/kernels/mikv_decode.cuh"

namespace memattn_test {

struct MikvCaseStats {
  int blocks = 0, staged = 0, dead_low = 0, segments = 0;
  bool ragged = false;  // segments with different token counts
};

// The CPU snapshots of a case: `sequences` sequences x 2 KV heads (mikv_cpu_snapshot).
inline std::vector<MikvSnapshot> mikv_snapshots(const std::string& spec, int D, int G, int sequences, int kill_low) {
  constexpr int kKvHeads = 2;
  std::vector<MikvSnapshot> snap;
  REQUIRE(mikv_cpu_snapshot(spec, D, G, kKvHeads, 1234u + static_cast<unsigned>(D), &snap, sequences, kill_low) ==
          memattn::Status::kSuccess);
  REQUIRE(snap.size() == static_cast<std::size_t>(kKvHeads * sequences));
  return snap;
}

// One segment per snapshot, its arrays placed by `place` (a snapshot vector -> the pointer the
// kernel reads); stash offsets G x (lo + hi + exact) apart, *stash the total; *q the queries.
template <class Place>
std::vector<memattn::kernels::MikvSegment> mikv_segments(const std::vector<MikvSnapshot>& snap, int G, Place&& place,
                                                         MikvCaseStats* stats, long long* stash, std::vector<float>* q) {
  namespace mk = memattn::kernels;
  std::vector<mk::MikvSegment> segs;
  const bool blocked = snap[0].lo_blocked;
  *stash = 0;
  stats->segments = static_cast<int>(snap.size());
  for (const auto& m : snap) {
    mk::MikvSegment s{};
    REQUIRE(m.lo_blocked == blocked);
    if (blocked) {
      REQUIRE(m.lo_block == mk::kMikvBlock);  // the CPU pool's block size is the kernel's
      REQUIRE(m.lo_slots >= m.lo_blocks * m.lo_block);
      s.lo_blk = mk::MikvLowBlocks{place(m.lo_kc), place(m.lo_km), place(m.lo_vc), place(m.lo_vm),
                                   place(m.lo_ks), place(m.lo_vs), m.lo_blocks};
      stats->blocks += m.lo_blocks;
      stats->staged += m.lo_slots - m.lo_blocks * m.lo_block;
    } else {
      s.lo_rec = place(m.lo_rec);
    }
    stats->dead_low += m.lo_dead;
    stats->ragged = stats->ragged || m.lo_slots + m.hi_slots + m.n_exact != snap[0].lo_slots + snap[0].hi_slots + snap[0].n_exact;
    s.lo_live = place(m.lo_live);
    s.lo_slots = m.lo_slots;
    s.hi_rec = place(m.hi_rec);
    s.hi_live = place(m.hi_live);
    s.hi_slots = m.hi_slots;
    s.k_exact = place(m.k);
    s.v_exact = place(m.v);
    s.n_exact = m.n_exact;
    s.balancer = place(m.balancer);
    s.stash_offset = *stash;
    *stash += static_cast<long long>(G) * (m.lo_slots + m.hi_slots + m.n_exact);
    segs.push_back(s);
    q->insert(q->end(), m.q.begin(), m.q.end());
    CHECK(m.lo_slots > 0);  // the case exercises the Low tier
  }
  return segs;
}

// The decode's parameters for the snapshots apart from the pointers (segments, q, o, lse, probs).
inline memattn::kernels::MikvDecodeParams mikv_params(const std::vector<MikvSnapshot>& snap, int G, int D) {
  namespace mk = memattn::kernels;
  mk::MikvDecodeParams p{};
  p.num_segments = static_cast<int>(snap.size());
  p.group = G;
  p.lo_format = snap[0].lo_blocked ? mk::MikvLowFormat::kBlocks : mk::MikvLowFormat::kRows;
  p.lo_cfg = memattn::quant::MixedRowConfig{D, snap[0].low_bits, snap[0].groups};
  p.hi_cfg = memattn::quant::MixedRowConfig{D, 8, snap[0].groups};
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  return p;
}

// The kernel's output within 1e-4 (+ 1e-4 relative) of the CPU output, a finite LSE, and its
// normalised probabilities (GQA mean) within 2e-5 (+ 1e-4 relative) of the CPU's H2O score
// updates, exactly 0 on dead Low slots.
inline void check_mikv_outputs(const std::vector<MikvSnapshot>& snap, const std::vector<memattn::kernels::MikvSegment>& segs, int G,
                               int D, const std::vector<float>& o, const std::vector<float>& lse, const std::vector<float>& probs) {
  for (std::size_t h = 0; h < snap.size(); ++h) {
    const auto& m = snap[h];
    for (int g = 0; g < G; ++g) REQUIRE(std::isfinite(lse[h * G + static_cast<std::size_t>(g)]));
    for (int i = 0; i < G * D; ++i) {
      const double want = m.out_cpu[static_cast<std::size_t>(i)], got = o[h * G * D + static_cast<std::size_t>(i)];
      REQUIRE(std::fabs(got - want) <= 1e-4 + 1e-4 * std::fabs(want));
    }
    const int N = m.lo_slots + m.hi_slots + m.n_exact;
    for (int u = 0; u < N; ++u) {
      double pbar = 0;
      for (int g = 0; g < G; ++g) pbar += probs[static_cast<std::size_t>(segs[h].stash_offset + g * N + u)];
      pbar /= G;
      REQUIRE(std::fabs(pbar - m.pbar_cpu[static_cast<std::size_t>(u)]) <= 2e-5 + 1e-4 * pbar);
      if (u < m.lo_slots && !((m.lo_live[static_cast<std::size_t>(u) >> 5] >> (u & 31)) & 1u)) REQUIRE(pbar == 0.0);
    }
  }
}

// The cases both tests run: run(spec, D, G, sequences = 1, kill_low = 0) -> MikvCaseStats.
// Per-token Low records (lowk=0): 2/3/4-bit Low, INT8 and fp16 High, head_dim 8 / 64 / 128.
template <class Run>
void mikv_row_cases(Run&& run) {
  run("mikv:budget=48,high=16,low=2,lowbudget=60", 64, 3, 1, 0);
  run("mikv:budget=48,high=8,low=4,lowbudget=60", 64, 3, 1, 0);
  run("mikv:budget=40,high=8,low=3,recent=16", 128, 4, 2, 0);
  run("mikv:budget=32,high=8,low=2,groups=1,balance=0", 8, 2, 1, 0);
}
// lowk=1: per-channel Low blocks + staging rows, also with dead Low slots (killed on a copy).
template <class Run>
void mikv_block_cases(Run&& run) {
  // Cache as it is (every Low slot live after its tier events), 3 ragged sequences x 2 KV heads.
  const MikvCaseStats a = run("mikv:budget=48,high=16,low=2,lowk=1", 64, 3, 3, 0);
  CHECK(a.blocks > 0);
  CHECK(a.staged > 0);  // staging rows in some segment
  CHECK(a.ragged);
  run("mikv:budget=40,high=8,low=4,recent=16,lowk=1", 128, 4, 3, 0);
  run("mikv:budget=48,high=8,low=3,lowbudget=70,lowk=1", 64, 2, 2, 0);  // whole-block Low eviction, 10 codes/word
  run("mikv:budget=32,high=8,low=2,groups=1,balance=0,lowk=1", 8, 2, 2, 0);
  for (const char* spec : {"mikv:budget=48,high=16,low=2,lowk=1", "mikv:budget=40,high=8,low=4,lowk=1",
                           "mikv:budget=40,high=8,low=3,lowk=1,exact=1"}) {
    const MikvCaseStats d = run(spec, 64, 4, 3, 5);
    CHECK(d.dead_low > 0);
    CHECK(d.staged > 0);
    CHECK(d.blocks > 0);
  }
  run("mikv:budget=48,high=16,low=2,lowk=1", 128, 1, 2, 3);  // G = 1
}

}  // namespace memattn_test
