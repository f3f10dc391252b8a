// The linear-attention decode / extend kernels (linear_decode.cuh: the decode, then the z writes)
// run by the CPU emulator (simt.hpp) on every CI run, through the wrapper's own checks, parameters
// and launch sequence (cuda/linear_params.cuh), against the fp64 recurrence with the GPU test's
// thresholds (output rel-RMS 5e-3, state 1e-3): single-token steps and extends carrying the state
// in place across calls for every feature map (identity, elu+1, relu, Taylor from a reachable
// state), normaliser on and off, decay on and off, both GQA state modes, bf16 and fp16, Dv 32 / 64
// / 112 (one, two and a partial fourth V slice); one batched call with ragged lengths, a fresh
// slot, a skipped sequence, slot_out, step_slots, write_final = false, an empty sequence copied to
// its slot_out; stateless and state-only calls; fp32 state drift over 2048 steps. CTAs in launch
// order and reversed: the V-slice CTAs of one (sequence, head) all read the slot's initial z.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/linear_problem.hpp"
#include "emu/emu_launch.hpp"
#include "memattn/cuda/linear_params.cuh"

namespace {

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn::linear::FeatureMap;
using memattn::linear::GqaState;
using memattn::linear::LinearArgs;
using memattn_test::ErrStats;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;
using memattn_test::LinearRef;
namespace ld = memattn::cuda::linear_detail;
namespace mk = memattn::kernels;

constexpr double kOut = 5e-3, kState = 1e-3;

template <class T>
Status emulated_decode(const LinearArgs<T>& a) {
  memattn::linear::LinearDims d;
  MEMATTN_RETURN_IF_ERROR(ld::check_linear(a, true, &d));
  const mk::LinearDecodeParams p = ld::decode_params(a, d);
  return ld::dispatch_fm(a.feature_map, d.dk, [&](auto tag) {
    return ld::decode_phases<T, decltype(tag)>(p, memattn_emu_test::emu_launch);
  });
}

// Rows [r0, r1) of a one-sequence problem as a call of its own.
template <class T>
LinearArgs<T> rows_of(LinearArgs<T> x, std::int64_t r0, std::int64_t r1) {
  for (auto* v : {&x.q, &x.k, &x.v}) {
    v->data += r0 * v->stride[0];
    v->shape[0] = r1 - r0;
  }
  if (x.o.data) {
    x.o.data += r0 * x.o.stride[0];
    x.o.shape[0] = r1 - r0;
  }
  x.seq.seq_lens = nullptr;
  x.host.seq_lens = nullptr;
  return x;
}

// Sequence n's state (or z with `z`) in `slot` of the pool against the reference's final one.
template <class T>
ErrStats slot_error(const LinearProblem<T>& p, const LinearRef& ref, std::int64_t n, std::int32_t slot, bool z = false) {
  const std::int64_t per = p.Hs * p.kphi * (z ? 1 : p.cfg.Dv);
  const std::vector<double>& all = z ? ref.z : ref.S;
  const std::vector<double> want(all.begin() + n * per, all.begin() + (n + 1) * per);
  const float* got = (z ? p.zpool.data() : p.pool.data()) + slot * per;
  return memattn_test::compare(want, [&](std::size_t i) { return static_cast<double>(got[i]); });
}

template <class T>
bool slot_unchanged(const LinearProblem<T>& now, const LinearProblem<T>& before, std::int32_t slot) {
  const std::int64_t sf = now.Hs * now.kphi * now.cfg.Dv, zf = now.Hs * now.kphi;
  return std::memcmp(now.pool.data() + slot * sf, before.pool.data() + slot * sf, sizeof(float) * sf) == 0 &&
         std::memcmp(now.zpool.data() + slot * zf, before.zpool.data() + slot * zf, sizeof(float) * zf) == 0;
}

// One sequence of `len` tokens decoded by calls of `steps` tokens each (cycled), the state in
// place in its slot across calls; outputs, final state and z against the fp64 recurrence.
template <class T>
void check_steps(const LinearConfig& c, const std::vector<int>& steps) {
  LinearProblem<T> p(c);
  const auto ref = p.reference();
  auto a = p.host_args();
  a.host.slot_in = p.slot_in.data();
  a.host.decay_rate = c.decay.empty() ? nullptr : c.decay.data();
  std::int64_t t = 0;
  for (std::size_t i = 0; t < c.lens[0]; i = (i + 1) % steps.size()) {
    const std::int64_t t1 = std::min<std::int64_t>(c.lens[0], t + steps[i]);
    REQUIRE(emulated_decode(rows_of(a, t, t1)) == Status::kSuccess);
    t = t1;
  }
  const auto eo = p.compare_output(p.o, ref), es = p.compare_state(p.pool, ref);
  INFO("fm " << static_cast<int>(c.fm) << " Dk " << c.Dk << " Dv " << c.Dv << " normalize " << c.normalize
             << " gqa " << static_cast<int>(c.gqa) << " reversed " << memattn_emu::reverse_ctas() << " output: "
             << eo.describe() << " state: " << es.describe());
  CHECK(eo.within(kOut));
  CHECK(es.within(kState));
  if (c.normalize) {
    const auto ez = p.compare_z(p.zpool, ref);
    INFO("z: " << ez.describe());
    CHECK(ez.within(kState));
  }
}

}  // namespace

TEST_CASE("emulated linear decode: steps and extends, every feature map, against fp64", "[emu][linear][decode]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    LinearConfig c;  // the GPU test's [decode] case: elu+1, normalised, decay, G = 2
    c.Hq = 4;
    c.Hk = 2;
    c.lens = {40};
    c.decay = {1e-3f, 0.05f};
    c.fm = FeatureMap::kEluPlusOne;
    c.normalize = true;
    check_steps<BFloat16>(c, {1, 1, 1, 16, 5});
    c.fm = FeatureMap::kIdentity;  // no normaliser, no decay, per-query-head state, partial V slice
    c.normalize = false;
    c.decay.clear();
    c.Dk = 128;
    c.Dv = 112;
    c.gqa = GqaState::kPerQueryHead;
    check_steps<Half>(c, {16, 1, 3});
    c.fm = FeatureMap::kRelu;  // one V slice
    c.Dk = 64;
    c.Dv = 32;
    c.gqa = GqaState::kPerKvHead;
    c.decay = {0.1f, 0.f};
    check_steps<BFloat16>(c, {7, 1});
    c.fm = FeatureMap::kTaylor2;  // BASED: Dk 16, normalised from a reachable state
    c.Dk = 16;
    c.Dv = 64;
    c.normalize = true;
    c.eps = 1e-12f;
    c.decay = {0.f, 1e-3f};
    check_steps<BFloat16>(c, {1, 16, 2});
    c.gqa = GqaState::kPerQueryHead;
    c.decay = {0.f, 1e-3f, 0.01f, 0.1f};
    check_steps<Half>(c, {4, 1});
  }
}

TEST_CASE("emulated linear decode: one batched call, slots, step slots, write_final, stateless", "[emu][linear][decode]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    LinearConfig c;
    c.Hq = 4;
    c.Hk = 2;
    c.Dv = 112;
    c.fm = FeatureMap::kEluPlusOne;
    c.normalize = true;
    c.decay = {0.02f, 0.3f};
    c.lens = {16, 1, 5, 9, 0};  // P = 7 slots; slot_in {6, 5, 4, 3, 2}
    for (bool write_final : {true, false}) {
      INFO("write_final " << write_final << " reversed " << reverse);
      LinearProblem<BFloat16> p(c);
      p.has_init[1] = 0;   // seq 1 starts fresh (its slot's contents are never read)
      p.slot_in[2] = -1;   // seq 2 skipped: its outputs untouched
      p.refresh_initial();
      const auto ref = p.reference();
      // seq 0 ends in slot 0 and leaves its state after 4 tokens in slot 1 (step_slots); seq 4
      // (empty) copies slot 2 into slot 4 (free: seq 2 is skipped); seqs 1 and 3 stay in place.
      std::vector<std::int32_t> slot_out = {0, 5, -1, 3, 4};
      std::vector<std::int32_t> step(static_cast<std::size_t>(p.rows), -1);
      step[3] = 1;
      const auto before = p;
      auto a = p.host_args();
      a.state.slot_out = slot_out.data();
      a.step_slots = step.data();
      a.write_final = write_final;
      a.host.seq_lens = p.lens.data();
      a.host.slot_in = p.slot_in.data();
      a.host.slot_out = slot_out.data();
      a.host.step_slots = step.data();
      a.host.decay_rate = c.decay.data();
      REQUIRE(emulated_decode(a) == Status::kSuccess);

      auto want_o = ref;
      for (std::int64_t t = 0; t < 5; ++t)  // seq 2's rows keep the sentinel
        for (std::int64_t x = 0; x < c.Hq * c.Dv; ++x) want_o.o[static_cast<std::size_t>((2 * 16 + t) * c.Hq * c.Dv + x)] = NAN;
      const auto eo = p.compare_output(p.o, want_o);
      INFO("output: " << eo.describe());
      CHECK(eo.within(kOut));
      const auto seq2 = p.o.begin() + 2 * 16 * c.Hq * c.Dv;
      CHECK(std::all_of(seq2, seq2 + 5 * c.Hq * c.Dv, [&](BFloat16 x) { return memattn::to_float(x) == c.sentinel; }));

      // slot 1: seq 0's state after its first 4 tokens (the reference of the 4-token prefix)
      auto prefix = before;
      prefix.lens[0] = 4;
      const auto ref4 = prefix.reference();
      CHECK(slot_error(p, ref4, 0, 1).within(kState));
      CHECK(slot_error(p, ref4, 0, 1, true).within(kState));
      CHECK(slot_unchanged(p, before, 6));  // slot_out differs: slot_in is read only
      CHECK(slot_unchanged(p, before, 2));
      if (write_final) {
        for (int n : {0, 1, 3, 4}) {
          INFO("seq " << n << " state " << slot_error(p, ref, n, slot_out[n]).describe());
          CHECK(slot_error(p, ref, n, slot_out[n]).within(kState));
          CHECK(slot_error(p, ref, n, slot_out[n], true).within(kState));
        }
      } else {
        for (int s : {0, 3, 4, 5}) CHECK(slot_unchanged(p, before, s));
      }
    }

    // Stateless (zero initial state) and state-only (no q, no o) calls.
    LinearConfig cs = c;
    cs.stateful = false;
    LinearProblem<Half> s(cs);
    auto sa = s.host_args();
    sa.host.seq_lens = s.lens.data();
    REQUIRE(emulated_decode(sa) == Status::kSuccess);
    CHECK(s.compare_output(s.o, s.reference()).within(kOut));
    LinearProblem<Half> so(c);
    auto oa = so.host_args();
    oa.o = {};
    oa.q = {};
    oa.host.seq_lens = so.lens.data();
    const auto ref = memattn_test::linear_reference_f64(oa, so.S0, so.z0);
    REQUIRE(emulated_decode(oa) == Status::kSuccess);
    CHECK(so.compare_state(so.pool, ref).within(kState));
    CHECK(so.compare_z(so.zpool, ref).within(kState));
  }
}

TEST_CASE("emulated linear decode: fp32 state drift over 2048 single-token steps", "[emu][linear][decode]") {
  // the GPU test's drift check (32768 steps there), state-only, from slow to fast decay
  for (float rate : {1e-6f, 1e-4f, 1e-2f}) {
    LinearConfig c;
    c.Hq = 1;
    c.Hk = 1;
    c.lens = {2048};
    c.decay = {rate};
    LinearProblem<BFloat16> p(c);
    auto a = p.host_args();
    a.o = {};
    for (std::int64_t t = 0; t < c.lens[0]; ++t) REQUIRE(emulated_decode(rows_of(a, t, t + 1)) == Status::kSuccess);
    const auto e = p.compare_state(p.pool, memattn_test::linear_reference_f64(a, p.S0, p.z0));
    INFO("rate " << rate << " state: " << e.describe());
    CHECK(e.within(1e-4));
  }
}
