// Linear attention, CPU decode / extend: prefill ≡ decode loop, extend with step slots and
// write_final, fp32 drift over 32 768 steps (T8), the mixed chain (T7 e).
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "common/linear_problem.hpp"
#include "memattn/cpu/linear_attention.hpp"

using memattn::BFloat16;
using memattn::Status;
using memattn::linear::FeatureMap;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;

namespace {

// Rows [r0, r1) of a one-sequence problem as a call of its own (dense, one sequence).
template <class T>
memattn::linear::LinearArgs<T> rows_of(memattn::linear::LinearArgs<T> x, std::int64_t r0, std::int64_t r1) {
  x.q.data += r0 * x.q.stride[0];
  x.k.data += r0 * x.k.stride[0];
  x.v.data += r0 * x.v.stride[0];
  if (x.o.data) x.o.data += r0 * x.o.stride[0];
  x.q.shape[0] = x.k.shape[0] = x.v.shape[0] = x.o.shape[0] = r1 - r0;
  x.seq.seq_lens = nullptr;
  x.seq.num_seqs = 1;
  return x;
}

}  // namespace

TEST_CASE("linear decode: prefill(t0) + decode steps == fp64 == one prefill", "[linear][decode][T7]") {
  const std::int64_t t0 = GENERATE(0, 64, 100);
  const bool norm = GENERATE(false, true);
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {300};
  c.decay = {1e-3f, 0.05f};
  c.fm = norm ? FeatureMap::kEluPlusOne : FeatureMap::kIdentity;
  c.normalize = norm;
  LinearProblem<BFloat16> whole(c), dec(c);
  const auto ref = whole.reference();
  auto wa = whole.host_args();
  REQUIRE(memattn::cpu::linear_prefill(wa) == Status::kSuccess);
  auto da = dec.host_args();
  if (t0 > 0) REQUIRE(memattn::cpu::linear_prefill(rows_of(da, 0, t0)) == Status::kSuccess);
  auto step = rows_of(da, 0, 1);
  std::size_t bytes = 0;
  REQUIRE(memattn::cpu::linear_decode_workspace_size(step, &bytes) == Status::kSuccess);
  memattn::HostWorkspace ws(bytes);
  for (std::int64_t t = t0; t < 300; ++t)
    REQUIRE(memattn::cpu::linear_decode(rows_of(da, t, t + 1), ws.data(), bytes) == Status::kSuccess);
  const auto eo = dec.compare_output(dec.o, ref), es = dec.compare_state(dec.pool, ref);
  INFO(eo.describe() << " | " << es.describe());
  REQUIRE(eo.within(5e-3));
  REQUIRE(es.within(1e-4));
  if (norm) REQUIRE(dec.compare_z(dec.zpool, ref).within(1e-4));
  // Cross-path against the prefill.
  std::vector<double> po(whole.o.size());
  for (std::size_t i = 0; i < po.size(); ++i) po[i] = memattn::to_float(whole.o[i]);
  REQUIRE(memattn_test::compare(po, [&](std::size_t i) { return double(memattn::to_float(dec.o[i])); }).within(5e-3));
}

TEST_CASE("linear extend: up to 16 tokens, step slots, write_final = false", "[linear][decode][extend]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {16, 5, 0};
  c.decay = {0.02f};
  LinearProblem<BFloat16> p(c);
  const auto ref = p.reference();
  auto a = p.host_args();
  // Sequence 0 also stores its state after step 3 in slot 0; nothing else.
  std::vector<std::int32_t> steps(3 * 16, -1);
  steps[3] = 0;
  a.step_slots = steps.data();
  REQUIRE(memattn::cpu::linear_decode(a) == Status::kSuccess);
  REQUIRE(p.compare_output(p.o, ref).within(5e-3));
  REQUIRE(p.compare_state(p.pool, ref).within(1e-4));
  // The step state equals the reference after 4 tokens.
  LinearProblem<BFloat16> q(c);
  auto qa = q.host_args();
  std::vector<std::int32_t> lens4{4, 0, 0};
  qa.seq.seq_lens = lens4.data();
  const auto ref4 = memattn_test::linear_reference_f64(qa, q.S0, q.z0);
  const std::int64_t sf = p.Hs * p.kphi * c.Dv;
  const auto e = memattn_test::compare(std::vector<double>(ref4.S.begin(), ref4.S.begin() + sf),
                                       [&](std::size_t i) { return double(p.pool[i]); });
  INFO(e.describe());
  REQUIRE(e.within(1e-4));

  // write_final = false: the slots keep the pre-call state, outputs are still produced.
  LinearProblem<BFloat16> w(c);
  const auto pool0 = w.pool;
  auto wa = w.host_args();
  wa.write_final = false;
  REQUIRE(memattn::cpu::linear_decode(wa) == Status::kSuccess);
  REQUIRE(w.pool == pool0);
  REQUIRE(w.compare_output(w.o, ref).within(5e-3));
  // More than 16 tokens per sequence: rejected.
  LinearConfig c17 = c;
  c17.lens = {17};
  LinearProblem<BFloat16> x(c17);
  REQUIRE(memattn::cpu::linear_decode(x.host_args()) == Status::kErrorInvalidArgument);
}

TEST_CASE("linear decode: fp32 state drift over 32768 steps stays within 1e-4 (expm1 form)", "[linear][decode][T8]") {
  const float s = GENERATE(1e-6f, 1e-4f, 1e-2f);
  constexpr int D = 32, T = 32768;
  LinearConfig c;
  c.Hq = 1;
  c.Hk = 1;
  c.Dk = D;
  c.Dv = D;
  c.lens = {T};
  c.decay = {s};
  LinearProblem<BFloat16> p(c);
  auto a = p.host_args();
  a.o = {};
  auto step = rows_of(a, 0, 1);
  std::size_t bytes = 0;
  REQUIRE(memattn::cpu::linear_decode_workspace_size(step, &bytes) == Status::kSuccess);
  memattn::HostWorkspace ws(bytes);
  for (std::int64_t t = 0; t < T; ++t) {
    auto x = rows_of(a, t, t + 1);
    x.o = {};
    REQUIRE(memattn::cpu::linear_decode(x, ws.data(), bytes) == Status::kSuccess);
  }
  // fp64 state only (no outputs).
  a.o = {};
  const auto ref = memattn_test::linear_reference_f64(a, p.S0, p.z0);
  const auto e = p.compare_state(p.pool, ref);
  INFO("s=" << s << " " << e.describe());
  REQUIRE(e.within(1e-4));
}

TEST_CASE("linear: mixed chain prefill -> 5 decode -> extend(8) -> prefill", "[linear][decode][T7]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 2;
  c.lens = {163};
  c.decay = {1e-4f, 0.03f};
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  LinearProblem<BFloat16> p(c);
  const auto ref = p.reference();
  auto a = p.host_args();
  REQUIRE(memattn::cpu::linear_prefill(rows_of(a, 0, 100)) == Status::kSuccess);
  for (std::int64_t t = 100; t < 105; ++t) REQUIRE(memattn::cpu::linear_decode(rows_of(a, t, t + 1)) == Status::kSuccess);
  REQUIRE(memattn::cpu::linear_decode(rows_of(a, 105, 113)) == Status::kSuccess);
  REQUIRE(memattn::cpu::linear_prefill(rows_of(a, 113, 163)) == Status::kSuccess);
  REQUIRE(p.compare_output(p.o, ref).within(5e-3));
  REQUIRE(p.compare_state(p.pool, ref).within(1e-4));
  REQUIRE(p.compare_z(p.zpool, ref).within(1e-4));
}
