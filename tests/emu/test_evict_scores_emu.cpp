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
#include <cstring>
#include <random>
#include <vector>

#include "common/evict_score_reference.hpp"
#include "memattn/cuda/decode_accumulate_params.cuh"
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

// Random fp16 q, k, v, lengths L and L / 2 + extra (at least Tq), |N(0, 1)| accumulators.
struct ScoreInputs {
  std::vector<Half> q, k, v;
  std::vector<std::int32_t> lens;
  std::vector<float> acc0;
  ScoreInputs(const memattn_test::ScoreShape& c, int extra, std::mt19937& rng)
      : q(static_cast<std::size_t>(c.B) * c.Tq * c.Hkv * c.G * c.D), k(static_cast<std::size_t>(c.B) * c.Hkv * c.L * c.D),
        v(k.size()), lens(static_cast<std::size_t>(c.B)), acc0(static_cast<std::size_t>(c.B) * c.Hkv * c.L) {
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto* t : {&q, &k, &v})
      for (auto& x : *t) x = memattn::from_float<Half>(nd(rng));
    for (int b = 0; b < c.B; ++b) lens[static_cast<std::size_t>(b)] = b == 0 ? c.L : std::max(c.Tq, c.L / 2 + extra);
    for (auto& x : acc0) x = std::fabs(nd(rng));
  }
};

void check(const memattn_test::ScoreShape& c, int splits, std::mt19937& rng) {
  const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
  INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq << " window " << c.window
            << " splits " << splits << " reversed " << memattn_emu::reverse_ctas());
  const ScoreInputs in(c, 1, rng);
  const std::vector<Half>&q = in.q, &k = in.k, &v = in.v;
  const std::vector<std::int32_t>& lens = in.lens;
  const std::vector<float>& acc0 = in.acc0;
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

namespace {

// cuda::decode_accumulate's host half on the emulator (plan on 132 SMs, as emulated_decode).
Status emulated_accumulate(const memattn::attention::DecodeArgs<Half>& a, const mc::DecodeScoreState& st,
                           const mc::DenseDecodeTuning& tuning, memattn_emu_test::HostWs* ws) {
  namespace cd = memattn::cuda::detail;
  memattn::attention::AttentionDims d;
  MEMATTN_RETURN_IF_ERROR(cd::check_accumulate(a, st, &d));
  mc::DenseDecodePlan pl;
  MEMATTN_RETURN_IF_ERROR(cd::make_plan(a, d, memattn_emu::kDecodeSms, tuning, &pl));
  memattn::Workspace sizing;
  cd::carve_accumulate(sizing, d, pl);
  if (ws->bytes < sizing.required()) *ws = memattn_emu_test::HostWs(sizing.required());
  memattn::Workspace w(ws->data(), ws->bytes);
  const cd::AccumulateBuffers buf = cd::carve_accumulate(w, d, pl);
  MEMATTN_RETURN_IF_ERROR(w.status());
  mk::DenseDecodeParams p;
  mk::EvictScoreParams ep;
  cd::accumulate_params(a, d, pl, st, buf, &p, &ep);
  return cd::accumulate_phases<Half>(p, ep, pl, memattn_emu_test::emu_launch);
}

// decode_accumulate == the decode writing fp16 logits + the epilogue kernel, bit for bit (acc and
// o), over two steps with one workspace, and == fp64; K and V streamed evict-first or not.
void check_accumulate(const memattn_test::ScoreShape& c, int splits, bool evict_first, std::mt19937& rng) {
  const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
  INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq << " window " << c.window
            << " splits " << splits << " reversed " << memattn_emu::reverse_ctas());
  const ScoreInputs in(c, 3, rng);
  const std::vector<Half>&q = in.q, &k = in.k, &v = in.v;
  const std::vector<std::int32_t>& lens = in.lens;
  const std::vector<float>& acc0 = in.acc0;
  mc::DenseDecodeTuning tuning;
  tuning.num_splits = splits;
  tuning.kv_evict_first = evict_first;
  memattn_emu_test::HostWs ws(64);
  for (const int reduce : {0, 1, 2})
    for (const float gamma : {1.f, 0.9f}) {
      INFO("reduce " << reduce << " gamma " << gamma);
      memattn::attention::DecodeArgs<Half> a;
      a.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {c.B, c.Tq, Hq, c.D});
      a.k_cache = memattn::make_view<4>(static_cast<const Half*>(k.data()), {c.B, c.Hkv, c.L, c.D});
      a.v_cache = memattn::make_view<4>(static_cast<const Half*>(v.data()), {c.B, c.Hkv, c.L, c.D});
      a.seq_lens = lens.data();
      a.seq_lens_host = lens.data();
      a.window = c.window;
      // the reference: two steps of decode (fp16 logits) + epilogue
      std::vector<Half> o_ref(q.size()), o(q.size());
      std::vector<float> lse(static_cast<std::size_t>(c.B) * c.Tq * Hq);
      std::vector<Half> logits(static_cast<std::size_t>(c.B) * c.Hkv * rows * c.L);
      std::vector<float> acc_ref = acc0, acc = acc0;
      memattn::attention::DecodeArgs<Half> r = a;
      r.o = memattn::make_view<4>(o_ref.data(), {c.B, c.Tq, Hq, c.D});
      r.lse = memattn::make_view<3>(lse.data(), {c.B, c.Tq, Hq});
      r.scores_half = memattn::make_view<4>(logits.data(), {c.B, c.Hkv, rows, c.L});
      mk::EvictScoreParams ep = mc::evict_score_params(r, gamma, reduce);
      ep.acc = acc_ref.data();
      ep.state_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.L;
      ep.state_stride[1] = c.L;
      mc::DecodeScoreState st;
      st.acc = acc.data();
      st.stride[0] = ep.state_stride[0];
      st.stride[1] = ep.state_stride[1];
      st.gamma = gamma;
      st.reduce = reduce;
      a.o = memattn::make_view<4>(o.data(), {c.B, c.Tq, Hq, c.D});
      for (int step = 0; step < 2; ++step) {
        mc::DenseDecodePlan pl;
        REQUIRE(memattn_emu::emulated_decode(r, tuning, &pl) == Status::kSuccess);
        REQUIRE(emulated_epilogue(ep, mk::EvictScoreMode::kAccumulate) == Status::kSuccess);
        REQUIRE(emulated_accumulate(a, st, tuning, &ws) == Status::kSuccess);
        CHECK(std::memcmp(o.data(), o_ref.data(), o.size() * sizeof(Half)) == 0);
        CHECK(std::memcmp(acc.data(), acc_ref.data(), acc.size() * sizeof(float)) == 0);
        if (step == 0) {  // one step against fp64; fp16 logits move p by up to |s| 2^-11 relative
          std::vector<std::uint64_t> hist0(acc0.size()), hist(acc0.size());
          std::vector<float> no_logits;
          const memattn_test::ScoreMismatches bad =
              memattn_test::check_scores(c, q, k, lens, acc0, hist0, no_logits, acc, hist, reduce, gamma, false, 4e-3);
          CHECK(bad.acc == 0);
        }
      }
    }
}

}  // namespace

TEST_CASE("emulated decode_accumulate == decode (fp16 logits) + epilogue, bit for bit, and == fp64", "[emu][evict]") {
  std::mt19937 rng(91);
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    check_accumulate({2, 2, 4, 64, 300, 1, 0}, 3, true, rng);      // several splits, ragged
    check_accumulate({1, 2, 4, 128, 256, 1, 0}, 1, false, rng);    // one split (direct path)
    check_accumulate({1, 3, 4, 64, 332, 2, 0}, 2, true, rng);      // Tq 2
    check_accumulate({2, 1, 8, 128, 256, 1, 100}, 0, false, rng);  // window, planned splits
    check_accumulate({1, 3, 3, 64, 332, 3, 0}, 2, true, rng);      // 9 rows: two row tiles
    check_accumulate({1, 2, 4, 64, 301, 1, 0}, 2, false, rng);     // Lcap % 4 != 0: scalar epilogue
  }
}

TEST_CASE("decode_accumulate rejects bad arguments before any launch", "[emu][evict]") {
  std::vector<Half> q(4 * 64), kv(1 * 1 * 16 * 64), o(q.size());
  std::vector<float> acc(16);
  std::vector<Half> logits(4 * 16);
  memattn::attention::DecodeArgs<Half> a;
  a.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {1, 1, 4, 64});
  a.k_cache = memattn::make_view<4>(static_cast<const Half*>(kv.data()), {1, 1, 16, 64});
  a.v_cache = memattn::make_view<4>(static_cast<const Half*>(kv.data()), {1, 1, 16, 64});
  a.o = memattn::make_view<4>(o.data(), {1, 1, 4, 64});
  mc::DecodeScoreState st;
  st.acc = acc.data();
  st.stride[0] = 16;
  st.stride[1] = 16;
  memattn_emu_test::HostWs ws(1 << 16);
  const std::vector<float> acc_before = acc;
  mc::DecodeScoreState bad = st;
  bad.acc = nullptr;
  CHECK(emulated_accumulate(a, bad, {}, &ws) == Status::kErrorNullPointer);
  bad = st;
  bad.gamma = 1.5f;
  CHECK(emulated_accumulate(a, bad, {}, &ws) == Status::kErrorInvalidArgument);
  bad = st;
  bad.reduce = 3;
  CHECK(emulated_accumulate(a, bad, {}, &ws) == Status::kErrorInvalidArgument);
  memattn::attention::DecodeArgs<Half> own = a;
  own.scores_half = memattn::make_view<4>(logits.data(), {1, 1, 4, 16});
  CHECK(emulated_accumulate(own, st, {}, &ws) == Status::kErrorInvalidArgument);
  CHECK(acc == acc_before);
  CHECK(emulated_accumulate(a, st, {}, &ws) == Status::kSuccess);
  CHECK(acc != acc_before);
}
