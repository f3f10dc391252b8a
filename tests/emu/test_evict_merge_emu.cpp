// The token-merging kernels (evict_merge.cuh) run by the CPU emulator (simt.hpp) on every CI run,
// in both CTA orders, through the wrappers' checks and launches (cuda/evict_merge_params.cuh),
// against the GPU test's CPU path (gpu/evict_merge_cpu_bridge.hpp: cpu/evict_merge.hpp) and its
// tolerance (common/merge_cases.hpp): D2O's nearest-cosine merge over two rounds (the EMA
// threshold carries over; targets and similarities in 0xFF workspaces), and the KVMerger pipeline
// (consecutive sets, capped at 5 or 3 -> the select kernel on the set scores -> Gaussian merge) on
// ragged fp16 segments with position gaps and protected sinks / recent tokens. Pivots, set scores
// and keep lists identical; merged rows within one fp16 rounding; merged scores within 1e-6.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use
#include "emu/emu_launch.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/merge_cases.hpp"
#include "gpu/evict_merge_cpu_bridge.hpp"
#include "memattn/cuda/evict_merge_params.cuh"
#include "memattn/kernels/evict_select.cuh"

namespace {

using memattn_emu_test::emu_launch;
using memattn::Half;
using memattn::Status;
using memattn_test::check_half_rows;
using memattn_test::clustered;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;
namespace evict = memattn::evict;

// NaN doubles / -1 ints: the kernels must write every entry they read.
template <class T>
std::vector<T> garbage(std::size_t n) {
  std::vector<T> v(n);
  std::memset(v.data(), 0xFF, n * sizeof(T));
  return v;
}

}  // namespace

TEST_CASE("emulated evict_nearest_cos (D2O) == cpu::merge_nearest_cos, EMA over two rounds", "[emu][evict][merge]") {
  std::mt19937 rng(77);
  int run = 0;
  for (const int D : {64, 40})
    for (const bool reverse : {false, true}) {
      memattn_emu::ReverseCtas order(reverse);
      INFO("D " << D << " reversed " << reverse);
      const int S = 5;
      const std::int64_t stride = 160 + 7 * run++;  // the GPU test's 300 costs seconds per segment here
      std::vector<Half> k = clustered(S * stride, D, 3, 0.3f, rng);
      std::vector<Half> v = clustered(S * stride, D, 1, 0.f, rng);
      std::vector<Half> gk = k, gv = v;
      std::vector<std::int32_t> len(S);
      for (int s = 0; s < S; ++s) len[static_cast<std::size_t>(s)] = 2 + static_cast<std::int32_t>(rng() % (stride - 1));
      std::vector<float> tau(S, 0.f), gtau(S, 0.f);
      std::vector<bool> has(S, false);
      std::vector<std::int32_t> ghas(S, 0);
      std::vector<std::int32_t> target = garbage<std::int32_t>(static_cast<std::size_t>(S * stride));
      std::vector<double> sim = garbage<double>(static_cast<std::size_t>(S * stride));
      for (int round = 0; round < 2; ++round) {
        INFO("round " << round);
        std::vector<std::int32_t> keep, count;
        memattn_test::random_keep(len, stride, rng, &keep, &count);
        if (round == 1) count[0] = -1;  // an invalid segment (select flagged it): skipped
        mk::EvictNearestCosParams<Half> p;
        p.k = gk.data(), p.v = gv.data(), p.len = len.data(), p.keep = keep.data(), p.keep_count = count.data();
        p.tau = gtau.data(), p.has_tau = ghas.data(), p.target = target.data(), p.sim = sim.data();
        p.stride = stride, p.D = D, p.segments = S, p.alpha = 0.3f, p.beta = 0.7f;
        REQUIRE(mc::evict_nearest_cos_can_implement(p) == Status::kSuccess);
        REQUIRE(mc::evict_nearest_cos_launch(p, emu_launch) == Status::kSuccess);
        memattn_test::cpu_nearest_cos_round(&k, &v, D, stride, len, keep, count, &tau, &has);
        check_half_rows(gk, k);
        check_half_rows(gv, v);
        for (int s = 0; s < S; ++s) {
          CHECK(gtau[static_cast<std::size_t>(s)] == Approx(tau[static_cast<std::size_t>(s)]).epsilon(1e-5));
          CHECK(ghas[static_cast<std::size_t>(s)] == (has[static_cast<std::size_t>(s)] ? 1 : 0));
        }
        // keep both sides bit-equal for the next round
        gk = k, gv = v, gtau = tau;
      }
    }
}

TEST_CASE("emulated KVMerger (sets -> select -> Gaussian merge) == the CPU path", "[emu][evict][merge]") {
  std::mt19937 rng(78);
  for (const int D : {64, 8, 128})
    for (const bool reverse : {false, true}) {
      memattn_emu::ReverseCtas order(reverse);
      INFO("D " << D << " reversed " << reverse);
      const int S = 6, max_set = D == 64 ? 5 : 3;  // 3 cuts the runs of 4 similar keys
      const std::int64_t stride = 257;
      memattn_test::KvMergerCase c(S, D, stride, rng);
      const evict::Protection pr{2, 16};
      const std::vector<std::int32_t>& len = c.len;
      const std::vector<std::int32_t>& pos = c.pos;
      const std::vector<float>& scores = c.scores;
      std::vector<Half> gk = c.k, gv = c.v;
      std::vector<float> gscores = scores, gstate = c.state, gown = garbage<float>(scores.size());
      std::vector<std::int32_t> gpivot = garbage<std::int32_t>(scores.size()), gkeep = garbage<std::int32_t>(scores.size());
      std::vector<std::int32_t> gcount(S, -2), gerr(1, 0);

      mk::EvictConsecutiveSetsParams<Half> a;
      a.k = gk.data(), a.pos = pos.data(), a.len = len.data(), a.t_cur = c.tcur.data(), a.scores = gscores.data(), a.own = gown.data();
      a.pivot = gpivot.data(), a.stride = stride, a.D = D, a.segments = S, a.protect = pr, a.theta = 0.8f, a.max_set = max_set;
      REQUIRE(mc::evict_consecutive_sets_can_implement(a) == Status::kSuccess);
      REQUIRE(mc::evict_consecutive_sets_launch(a, emu_launch) == Status::kSuccess);
      // cuda::evict_select's launch for this stride (not a multiple of 4: one slot per thread)
      mk::EvictSelectParams sp;
      sp.scores = gscores.data(), sp.pos = pos.data(), sp.len = len.data(), sp.budget = c.budget.data(), sp.t_cur = c.tcur.data();
      sp.stride = stride, sp.segments = S, sp.protect = pr, sp.keep = gkeep.data(), sp.keep_count = gcount.data(), sp.error = gerr.data();
      memattn_emu::launch(dim3(S), dim3(mk::kEvictSelectThreads), 0, [&] { mk::evict_select_kernel<mk::kEvictSelectThreads, 1>(sp); });
      REQUIRE(gerr[0] == 0);
      mk::EvictGaussianMergeParams<Half, float> g;
      g.k = gk.data(), g.v = gv.data(), g.len = len.data(), g.keep = gkeep.data(), g.keep_count = gcount.data(), g.pivot = gpivot.data();
      g.own = gown.data(), g.state = gstate.data(), g.stride = stride, g.D = D, g.segments = S;
      REQUIRE(mc::evict_gaussian_merge_can_implement(g) == Status::kSuccess);
      REQUIRE(mc::evict_gaussian_merge_launch(g, emu_launch) == Status::kSuccess);

      memattn_test::check_kvmerger(c, max_set, pr, gcount, gpivot, gscores, gstate, gkeep, gk, gv);
    }
}

TEST_CASE("emulated merge kernels: bad arguments get the host checks' Status", "[emu][evict][merge]") {
  mk::EvictNearestCosParams<Half> n;
  CHECK(mc::evict_nearest_cos_can_implement(n) == Status::kErrorNullPointer);
  mk::EvictGaussianMergeParams<Half, float> g;
  std::vector<Half> rows(8);
  std::vector<std::int32_t> ints(8, 0);
  std::vector<float> own(8, 0.f);
  g.k = g.v = rows.data(), g.len = g.keep = g.keep_count = g.pivot = ints.data(), g.own = own.data();
  g.stride = 8, g.segments = 1, g.D = mk::kEvictMergeMaxDim + 1;
  CHECK(mc::evict_gaussian_merge_can_implement(g) == Status::kErrorInvalidShape);
  mk::EvictConsecutiveSetsParams<Half> a;
  a.k = rows.data(), a.pos = a.len = a.t_cur = a.pivot = ints.data(), a.scores = a.own = own.data();
  a.stride = 8, a.segments = 1, a.D = 1, a.max_set = 0;
  CHECK(mc::evict_consecutive_sets_can_implement(a) == Status::kErrorInvalidArgument);
}
