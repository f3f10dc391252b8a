// MiKV fused mixed decode on the GPU vs the CPU mixed cache (cpu/mikv_kv_cache.hpp): the CPU builds
// a cache with Low, INT8 High and exact tiers and runs one decode step; its segments are uploaded
// as they are, the kernel's output must match the CPU output and its normalised probabilities the
// CPU's H2O score updates (GQA mean). Both Low formats: per-token records (lowk=0) and the
// per-channel blocks + staging rows of `lowk=1` (lo_format = kBlocks), the latter also with Low
// slots killed on a copy (reference: the CPU tier functions, tests/common/mikv_block_export.hpp).
// Exits 77 without a device (gpu_test_main.cpp).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/mikv_cpu_bridge.hpp"
#include "memattn/cuda/mikv.cuh"

using namespace memattn;

namespace {

template <class T>
T* upload(const std::vector<T>& h) {
  void* p = nullptr;
  const std::size_t n = h.empty() ? 1 : h.size();
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemset(p, 0, n * sizeof(T)) == cudaSuccess);
  if (!h.empty()) REQUIRE(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return static_cast<T*>(p);
}

struct CaseStats {
  int blocks = 0, staged = 0, dead_low = 0, segments = 0;
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
  stats.segments = S;
  std::vector<kernels::MikvSegment> segs;
  std::vector<float> q;
  std::vector<void*> owned;
  long long stash = 0;
  for (const auto& m : snap) {
    kernels::MikvSegment s{};
    REQUIRE(m.lo_blocked == blocked);
    if (blocked) {
      REQUIRE(m.lo_block == kernels::kMikvBlock);  // the CPU pool's block size is the kernel's
      REQUIRE(m.lo_slots >= m.lo_blocks * m.lo_block);
      s.lo_blk.kc = upload(m.lo_kc);
      s.lo_blk.km = upload(m.lo_km);
      s.lo_blk.vc = upload(m.lo_vc);
      s.lo_blk.vm = upload(m.lo_vm);
      s.lo_blk.k_stage = upload(m.lo_ks);
      s.lo_blk.v_stage = upload(m.lo_vs);
      s.lo_blk.blocks = m.lo_blocks;
      stats.blocks += m.lo_blocks;
      stats.staged += m.lo_slots - m.lo_blocks * m.lo_block;
    } else {
      s.lo_rec = upload(m.lo_rec);
    }
    stats.dead_low += m.lo_dead;
    stats.ragged = stats.ragged || m.lo_slots + m.hi_slots + m.n_exact != snap[0].lo_slots + snap[0].hi_slots + snap[0].n_exact;
    s.lo_live = upload(m.lo_live);
    s.lo_slots = m.lo_slots;
    s.hi_rec = upload(m.hi_rec);
    s.hi_live = upload(m.hi_live);
    s.hi_slots = m.hi_slots;
    s.k_exact = upload(m.k);
    s.v_exact = upload(m.v);
    s.n_exact = m.n_exact;
    s.balancer = upload(m.balancer);
    s.stash_offset = stash;
    stash += static_cast<long long>(G) * (m.lo_slots + m.hi_slots + m.n_exact);
    segs.push_back(s);
    q.insert(q.end(), m.q.begin(), m.q.end());
    CHECK(m.lo_slots > 0);  // the case exercises the Low tier
  }
  kernels::MikvDecodeParams p{};
  p.segments = upload(segs);
  p.num_segments = S;
  p.group = G;
  p.lo_format = blocked ? kernels::MikvLowFormat::kBlocks : kernels::MikvLowFormat::kRows;
  p.lo_cfg = quant::MixedRowConfig{D, snap[0].low_bits, snap[0].groups};
  p.hi_cfg = quant::MixedRowConfig{D, 8, snap[0].groups};
  p.q = upload(q);
  std::vector<float> zeros(q.size(), 0.f), lse0(static_cast<std::size_t>(S * G), 0.f),
      st0(static_cast<std::size_t>(stash), 0.f);
  p.o = upload(zeros);
  p.lse = upload(lse0);
  p.probs = upload(st0);
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  REQUIRE(cuda::mikv_decode(p, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<float> o(q.size()), probs(static_cast<std::size_t>(stash));
  REQUIRE(cudaMemcpy(o.data(), p.o, o.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(cudaMemcpy(probs.data(), p.probs, probs.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  std::vector<float> lse(lse0.size());
  REQUIRE(cudaMemcpy(lse.data(), p.lse, lse.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
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
  return stats;
}

}  // namespace

TEST_CASE("mikv fused decode == CPU mixed cache (Low + INT8 High + exact)", "[mikv][gpu]") {
  run_case("mikv:budget=48,high=16,low=2,lowbudget=60", 64, 3);
  run_case("mikv:budget=48,high=8,low=4,lowbudget=60", 64, 3);
  run_case("mikv:budget=40,high=8,low=3,recent=16", 128, 4);
  run_case("mikv:budget=32,high=8,low=2,groups=1,balance=0", 8, 2);
}

TEST_CASE("mikv fused decode, lowk=1 per-channel Low blocks == CPU mixed cache", "[mikv][gpu]") {
  // Cache as it is (every Low slot live after its tier events), 3 ragged sequences x 2 KV heads.
  CaseStats a = run_case("mikv:budget=48,high=16,low=2,lowk=1", 64, 3, 3);
  CHECK(a.blocks > 0);
  CHECK(a.staged > 0);  // staging rows in some segment
  CHECK(a.ragged);
  run_case("mikv:budget=40,high=8,low=4,recent=16,lowk=1", 128, 4, 3);
  run_case("mikv:budget=48,high=8,low=3,lowbudget=70,lowk=1", 64, 2, 2);  // whole-block Low eviction, 10 codes/word
  run_case("mikv:budget=32,high=8,low=2,groups=1,balance=0,lowk=1", 8, 2, 2);
  // Dead Low slots inside blocks and in staging (killed on a copy of each pool).
  for (const char* spec : {"mikv:budget=48,high=16,low=2,lowk=1", "mikv:budget=40,high=8,low=4,lowk=1",
                           "mikv:budget=40,high=8,low=3,lowk=1,exact=1"}) {
    CaseStats d = run_case(spec, 64, 4, 3, 5);
    CHECK(d.dead_low > 0);
    CHECK(d.staged > 0);
    CHECK(d.blocks > 0);
  }
  run_case("mikv:budget=48,high=16,low=2,lowk=1", 128, 1, 2, 3);  // G = 1
}

TEST_CASE("mikv decode rejects bad arguments before launching", "[mikv][gpu]") {
  kernels::MikvDecodeParams p{};
  p.lo_cfg = quant::MixedRowConfig{64, 2, 2};
  p.hi_cfg = quant::MixedRowConfig{64, 8, 2};
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorNullPointer);
  p.hi_cfg.groups = 4;
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.hi_cfg.groups = 2;
  p.lo_format = kernels::MikvLowFormat::kBlocks;
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorNullPointer);  // the format itself is valid
  p.lo_format = static_cast<kernels::MikvLowFormat>(2);               // neither kRows nor kBlocks
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.lo_format = static_cast<kernels::MikvLowFormat>(-1);
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.lo_format = kernels::MikvLowFormat::kBlocks;
  p.lo_cfg.bits = 8;  // the per-channel Low tier is 2/3/4-bit like the per-token one
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
}
