// The fused token-eviction scores (issue 5, spec eviction.md §4.3) on the CPU emulator (simt.hpp)
// on every CI run: the dense decode writes raw logits, then the score epilogue
// (evict_scores.cuh, one key per thread or four) updates H2O / A2SF accumulators and Scissorhands
// histories, through the wrappers' own host logic (cuda/dense_decode_params.cuh,
// cuda/evict_scores_params.cuh), against the fp64 reference the GPU test uses
// (common/evict_score_reference.hpp): GQA mean / max / sum, gamma 1 and 0.9, Tq 1 and 3, ragged
// lengths, a window, forced splits; Lcap a multiple of 4 takes the four-keys kernel.
#include "emu/emulated_decode.hpp"  // first: the emulator defines the CUDA built-ins

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/evict_score_reference.hpp"
#include "memattn/cuda/evict_scores_params.cuh"

namespace {

using memattn::Half;
using memattn::Status;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;

Status emulated_epilogue(const mk::EvictScoreParams& p, mk::EvictScoreMode mode) {
  MEMATTN_RETURN_IF_ERROR(mc::evict_accumulate_can_implement(p, mode));
  return mc::evict_score_launch(p, mode, memattn_emu_test::emu_launch);
}

void check(const memattn_test::ScoreShape& c, int splits, std::mt19937& rng) {
  const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
  INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq << " window " << c.window
            << " splits " << splits << " reversed " << memattn_emu::reverse_ctas());
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<Half> q(static_cast<std::size_t>(c.B) * c.Tq * Hq * c.D), k(static_cast<std::size_t>(c.B) * c.Hkv * c.L * c.D), v(k.size());
  for (auto& x : q) x = memattn::from_float<Half>(nd(rng));
  for (auto& x : k) x = memattn::from_float<Half>(nd(rng));
  for (auto& x : v) x = memattn::from_float<Half>(nd(rng));
  std::vector<std::int32_t> lens(static_cast<std::size_t>(c.B));
  for (int b = 0; b < c.B; ++b) lens[static_cast<std::size_t>(b)] = b == 0 ? c.L : std::max(c.Tq, c.L / 2 + 1);
  std::vector<float> acc0(static_cast<std::size_t>(c.B) * c.Hkv * c.L);
  for (auto& x : acc0) x = std::fabs(nd(rng));
  std::vector<std::uint64_t> hist0(acc0.size());
  for (auto& x : hist0) x = (static_cast<std::uint64_t>(rng()) << 32) | rng();

  std::vector<Half> o(q.size());
  std::vector<float> lse(static_cast<std::size_t>(c.B) * c.Tq * Hq), logits(static_cast<std::size_t>(c.B) * c.Hkv * rows * c.L, NAN);
  memattn::attention::DecodeArgs<Half> a;
  a.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {c.B, c.Tq, Hq, c.D});
  a.k_cache = memattn::make_view<4>(static_cast<const Half*>(k.data()), {c.B, c.Hkv, c.L, c.D});
  a.v_cache = memattn::make_view<4>(static_cast<const Half*>(v.data()), {c.B, c.Hkv, c.L, c.D});
  a.seq_lens = lens.data();
  a.seq_lens_host = lens.data();
  a.window = c.window;
  a.o = memattn::make_view<4>(o.data(), {c.B, c.Tq, Hq, c.D});
  a.lse = memattn::make_view<3>(lse.data(), {c.B, c.Tq, Hq});
  a.scores = memattn::make_view<4>(logits.data(), {c.B, c.Hkv, rows, c.L});
  mc::DenseDecodeTuning tuning;
  tuning.num_splits = splits;
  mc::DenseDecodePlan pl;
  REQUIRE(memattn_emu::emulated_decode(a, tuning, &pl) == Status::kSuccess);
  for (const int reduce : {0, 1, 2})
    for (const float gamma : {1.f, 0.9f}) {
      std::vector<float> acc = acc0;
      std::vector<std::uint64_t> hist = hist0;
      mk::EvictScoreParams p = mc::evict_score_params(a, gamma, reduce);
      p.acc = acc.data();
      p.state_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.L;
      p.state_stride[1] = c.L;
      CHECK(mc::evict_scores_vec4(p) == (c.L % 4 == 0));  // both kernels are covered
      REQUIRE(emulated_epilogue(p, mk::EvictScoreMode::kAccumulate) == Status::kSuccess);
      p.acc = nullptr;
      p.hist = hist.data();
      REQUIRE(emulated_epilogue(p, mk::EvictScoreMode::kHistory) == Status::kSuccess);
      const memattn_test::ScoreMismatches bad =
          memattn_test::check_scores(c, q, k, lens, acc0, hist0, logits, acc, hist, reduce, gamma, reduce == 0 && gamma == 1.f);
      INFO("reduce " << reduce << " gamma " << gamma);
      CHECK(bad.logits == 0);
      CHECK(bad.acc == 0);
      CHECK(bad.hist == 0);
    }
}

}  // namespace

TEST_CASE("emulated decode logits + score epilogue == fp64 (H2O accumulation, Scissorhands history)", "[emu][evict]") {
  std::mt19937 rng(77);
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    check({2, 2, 4, 64, 300, 1, 0}, 3, rng);    // scalar kernel
    check({1, 3, 3, 64, 333, 3, 0}, 2, rng);    // Tq 3, ragged
    check({1, 3, 3, 64, 332, 3, 0}, 2, rng);    // four keys per thread, Tq 3
    check({2, 1, 8, 128, 256, 1, 100}, 0, rng);  // four keys per thread, window, planned splits
  }
}
