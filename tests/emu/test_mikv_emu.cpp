// The MiKV fused mixed decode (mikv_decode.cuh) run by the CPU emulator (simt.hpp) on every CI
// run, through the wrapper's check (cuda/mikv_params.cuh) and launch (a CTA of 128 threads per
// segment): the segments of a CPU MixedKvCache after ragged chunks and one decode step, exported
// as the GPU test exports them (tests/gpu/mikv_cpu_bridge.cpp); the output must match the CPU
// output and the normalised probabilities (GQA mean) the CPU's H2O score updates. Both Low
// formats: per-token 2/3/4-bit records (lowk=0) and per-channel key blocks + staging rows
// (lowk=1, kBlocks), the latter also with dead Low slots inside blocks and in staging; INT8 and
// fp16 High tiers, head_dim 8 / 64 / 128, GQA groups 1 to 4, ragged segments.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/mikv_cpu_bridge.hpp"
#include "memattn/cuda/mikv_params.cuh"

namespace {

namespace mk = memattn::kernels;
using memattn::Status;

struct CaseStats {
  int blocks = 0, staged = 0, dead_low = 0;
  bool ragged = false;  // segments with different token counts
};

CaseStats run_case(const std::string& spec, int D, int G, int sequences = 1, int kill_low = 0) {
  INFO(spec << " D " << D << " G " << G << " sequences " << sequences << " kill_low " << kill_low);
  const int Hkv = 2;
  std::vector<memattn_test::MikvSnapshot> snap;
  REQUIRE(memattn_test::mikv_cpu_snapshot(spec, D, G, Hkv, 1234u + static_cast<unsigned>(D), &snap, sequences, kill_low) ==
          Status::kSuccess);
  REQUIRE(snap.size() == static_cast<std::size_t>(Hkv * sequences));
  const int S = static_cast<int>(snap.size());
  const bool blocked = snap[0].lo_blocked;
  CaseStats stats;
  std::vector<mk::MikvSegment> segs;
  std::vector<float> q;
  long long stash = 0;
  for (const auto& m : snap) {  // host pointers into the snapshot, as the GPU test uploads them
    mk::MikvSegment s{};
    REQUIRE(m.lo_blocked == blocked);
    if (blocked) {
      REQUIRE(m.lo_block == mk::kMikvBlock);
      s.lo_blk = mk::MikvLowBlocks{m.lo_kc.data(), m.lo_km.data(), m.lo_vc.data(), m.lo_vm.data(),
                                   m.lo_ks.data(), m.lo_vs.data(), m.lo_blocks};
      stats.blocks += m.lo_blocks;
      stats.staged += m.lo_slots - m.lo_blocks * m.lo_block;
    } else {
      s.lo_rec = m.lo_rec.data();
    }
    stats.dead_low += m.lo_dead;
    stats.ragged = stats.ragged || m.lo_slots + m.hi_slots + m.n_exact != snap[0].lo_slots + snap[0].hi_slots + snap[0].n_exact;
    s.lo_live = m.lo_live.data();
    s.lo_slots = m.lo_slots;
    s.hi_rec = m.hi_rec.data();
    s.hi_live = m.hi_live.data();
    s.hi_slots = m.hi_slots;
    s.k_exact = m.k.data();
    s.v_exact = m.v.data();
    s.n_exact = m.n_exact;
    s.balancer = m.balancer.data();
    s.stash_offset = stash;
    stash += static_cast<long long>(G) * (m.lo_slots + m.hi_slots + m.n_exact);
    segs.push_back(s);
    q.insert(q.end(), m.q.begin(), m.q.end());
    CHECK(m.lo_slots > 0);  // the case exercises the Low tier
  }
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    INFO("reversed " << reverse);
    // NaN-filled: an output the kernel never writes fails
    std::vector<float> o(q.size(), NAN), lse(static_cast<std::size_t>(S * G), NAN), probs(static_cast<std::size_t>(stash), NAN);
    mk::MikvDecodeParams p{};
    p.segments = segs.data();
    p.num_segments = S;
    p.group = G;
    p.lo_format = blocked ? mk::MikvLowFormat::kBlocks : mk::MikvLowFormat::kRows;
    p.lo_cfg = memattn::quant::MixedRowConfig{D, snap[0].low_bits, snap[0].groups};
    p.hi_cfg = memattn::quant::MixedRowConfig{D, 8, snap[0].groups};
    p.q = q.data();
    p.o = o.data();
    p.lse = lse.data();
    p.probs = probs.data();
    p.scale = 1.f / std::sqrt(static_cast<float>(D));
    // As cuda::mikv_decode: the check, then one CTA of 128 threads per segment.
    REQUIRE(memattn::cuda::mikv_check(p) == Status::kSuccess);
    memattn_emu::launch(dim3(static_cast<unsigned>(S)), dim3(128), 0, [&] { mk::mikv_decode_kernel<128>(p); });
    for (int h = 0; h < S; ++h) {
      const auto& m = snap[static_cast<std::size_t>(h)];
      for (int g = 0; g < G; ++g) REQUIRE(std::isfinite(lse[static_cast<std::size_t>(h * G + g)]));
      for (int i = 0; i < G * D; ++i) {
        const double want = m.out_cpu[static_cast<std::size_t>(i)], got = o[static_cast<std::size_t>(h * G * D + i)];
        REQUIRE(std::fabs(got - want) <= 1e-4 + 1e-4 * std::fabs(want));
      }
      const int N = m.lo_slots + m.hi_slots + m.n_exact;
      for (int u = 0; u < N; ++u) {
        double pbar = 0;
        for (int g = 0; g < G; ++g) pbar += probs[static_cast<std::size_t>(segs[static_cast<std::size_t>(h)].stash_offset + g * N + u)];
        pbar /= G;
        REQUIRE(std::fabs(pbar - m.pbar_cpu[static_cast<std::size_t>(u)]) <= 2e-5 + 1e-4 * pbar);
        if (u < m.lo_slots && !((m.lo_live[static_cast<std::size_t>(u) >> 5] >> (u & 31)) & 1u)) REQUIRE(pbar == 0.0);
      }
    }
  }
  return stats;
}

}  // namespace

TEST_CASE("emulated mikv decode, per-token Low records == CPU mixed cache", "[emu][mikv]") {
  run_case("mikv:budget=48,high=16,low=2,lowbudget=60", 64, 3);
  run_case("mikv:budget=48,high=8,low=4,lowbudget=60", 64, 3);
  run_case("mikv:budget=40,high=8,low=3,recent=16", 128, 4, 2);
  run_case("mikv:budget=32,high=8,low=2,groups=1,balance=0", 8, 2);
}

TEST_CASE("emulated mikv decode, lowk=1 per-channel Low blocks == CPU mixed cache", "[emu][mikv]") {
  // Cache as it is (every Low slot live after its tier events), 3 ragged sequences x 2 KV heads.
  const CaseStats a = run_case("mikv:budget=48,high=16,low=2,lowk=1", 64, 3, 3);
  CHECK(a.blocks > 0);
  CHECK(a.staged > 0);
  CHECK(a.ragged);
  run_case("mikv:budget=40,high=8,low=4,recent=16,lowk=1", 128, 4, 3);
  run_case("mikv:budget=48,high=8,low=3,lowbudget=70,lowk=1", 64, 2, 2);  // whole-block Low eviction, 10 codes/word
  run_case("mikv:budget=32,high=8,low=2,groups=1,balance=0,lowk=1", 8, 2, 2);
  // Dead Low slots inside blocks and in staging (killed on a copy of each pool).
  for (const char* spec : {"mikv:budget=48,high=16,low=2,lowk=1", "mikv:budget=40,high=8,low=4,lowk=1",
                           "mikv:budget=40,high=8,low=3,lowk=1,exact=1"}) {
    const CaseStats d = run_case(spec, 64, 4, 3, 5);
    CHECK(d.dead_low > 0);
    CHECK(d.staged > 0);
    CHECK(d.blocks > 0);
  }
  run_case("mikv:budget=48,high=16,low=2,lowk=1", 128, 1, 2, 3);  // G = 1
}
