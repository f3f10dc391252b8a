// The sliding-window softmax kernel and its ring store (linear_window.cuh; the BASED layer's window
// branch) run by the CPU emulator (simt.hpp) on every CI run, through the wrapper's own checks,
// parameters and launch sequence (cuda/linear_params.cuh), against the fp64 sliding window with
// the GPU test's threshold (output rel-RMS 5e-3): windows 1 / 64 / 128 / 256, varlen and dense
// with NaN padding rows (they keep the sentinel), GQA, D 16 / 64 / 256, Dv 64 / 112 / 256, bf16
// and fp16, accumulate (the BASED layer's o += window); a ring continued across calls (prefill,
// then single tokens) for one sequence and, with permuted ring slots and a skipped sequence, for
// several at once. CTAs in launch order and reversed.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/linear_problem.hpp"
#include "emu/emu_launch.hpp"
#include "memattn/cuda/linear_params.cuh"

namespace {

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn::linear::SlidingWindowArgs;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;
namespace ld = memattn::cuda::linear_detail;
namespace mk = memattn::kernels;

constexpr double kOut = 5e-3;

template <class T>
Status emulated_window(const SlidingWindowArgs<T>& a) {
  memattn::linear::WindowDims d;
  MEMATTN_RETURN_IF_ERROR(ld::check_window(a, &d));
  const mk::SlidingWindowParams p = ld::window_params(a, d);
  return ld::window_phases<T>(p, d, memattn_emu_test::emu_launch);
}

// The window arguments over a linear problem's q, k, v, o and sequences (no ring).
template <class T>
SlidingWindowArgs<T> window_args(LinearProblem<T>& p, int window) {
  const auto a = p.host_args();
  SlidingWindowArgs<T> w;
  w.q = a.q;
  w.k = a.k;
  w.v = a.v;
  w.o = a.o;
  w.seq = a.seq;
  w.window = window;
  w.scale = a.scale;
  w.cu_seqlens_host = a.seq.cu_seqlens;
  w.seq_lens_host = a.seq.seq_lens;
  return w;
}

template <class T>
memattn_test::ErrStats output_error(const LinearProblem<T>& p, const std::vector<double>& ref) {
  return memattn_test::compare(ref, [&](std::size_t i) { return static_cast<double>(memattn::to_float(p.o[i])); });
}

// Rows whose reference is NaN (padding, skipped sequences) still hold the sentinel.
template <class T>
std::int64_t overwritten(const LinearProblem<T>& p, const std::vector<double>& ref) {
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (std::isnan(ref[i]) && memattn::to_float(p.o[i]) != p.cfg.sentinel) ++bad;
  return bad;
}

// One call over whole sequences against swa_f64; then, accumulating, the same call again: 2x.
template <class T>
void check_whole(const LinearConfig& c, int window) {
  LinearProblem<T> p(c);
  const auto w = window_args(p, window);
  const auto ref = memattn_test::swa_f64(w);
  REQUIRE(emulated_window(w) == Status::kSuccess);
  const auto e = output_error(p, ref);
  INFO("W " << window << " D " << c.Dk << " Dv " << c.Dv << " Hq " << c.Hq << " Hk " << c.Hk << " varlen " << c.varlen
            << " reversed " << memattn_emu::reverse_ctas() << " output: " << e.describe());
  CHECK(e.within(kOut));
  CHECK(overwritten(p, ref) == 0);
  auto acc = w;
  acc.accumulate = true;
  REQUIRE(emulated_window(acc) == Status::kSuccess);
  std::vector<double> twice = ref;
  for (double& x : twice) x *= 2;
  const auto e2 = output_error(p, twice);
  INFO("accumulated: " << e2.describe());
  CHECK(e2.within(kOut));
  CHECK(overwritten(p, ref) == 0);
}

}  // namespace

TEST_CASE("emulated sliding window: whole sequences against fp64, accumulate", "[emu][linear][swa]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    LinearConfig c;  // the GPU test's [swa] case
    c.Hq = 4;
    c.Hk = 2;
    c.varlen = true;
    c.lens = {1, 65, 300};
    c.stateful = false;
    for (int w : {1, 64, 128}) check_whole<BFloat16>(c, w);
    c.varlen = false;  // dense with padding rows, BASED's feature dim 16, a partial last lane
    c.lens = {40, 7, 0};
    c.Dk = 16;
    c.Dv = 112;
    check_whole<Half>(c, 256);
    c.Hq = 2;  // the widest head, one value pass per lane
    c.Hk = 1;
    c.lens = {300};
    c.Dk = 256;
    c.Dv = 256;
    check_whole<BFloat16>(c, 256);
  }
}

TEST_CASE("emulated sliding window: ring continuation, one sequence", "[emu][linear][swa]") {
  for (bool reverse : {false, true})
  for (int W : {1, 64, 128}) {
    memattn_emu::ReverseCtas order(reverse);
    // the GPU test's case: prefill 130 tokens into a ring of W + 3 rows, then one token a call
    LinearConfig c;
    c.Hq = 2;
    c.Hk = 1;
    c.lens = {300};
    c.stateful = false;
    LinearProblem<BFloat16> p(c);
    const auto whole = window_args(p, W);
    const auto ref = memattn_test::swa_f64(whole);
    const std::int64_t R = W + 3;
    const BFloat16 nan = memattn::from_float<BFloat16>(std::numeric_limits<float>::quiet_NaN());
    std::vector<BFloat16> rk(static_cast<std::size_t>(R * 64), nan), rv(rk);  // unwritten ring rows show as NaN
    std::int32_t pos = 0;
    auto g = whole;
    g.seq.seq_lens = nullptr;
    g.seq_lens_host = nullptr;
    g.ring_k = memattn::make_view<4>(rk.data(), {1, R, 1, 64});
    g.ring_v = memattn::make_view<4>(rv.data(), {1, R, 1, 64});
    g.seq_pos = &pos;
    g.seq_pos_host = &pos;
    auto part = [&](std::int64_t r0, std::int64_t r1) {
      auto x = g;
      for (auto* v : {&x.q, &x.k, &x.v}) {
        v->data += r0 * v->stride[0];
        v->shape[0] = r1 - r0;
      }
      x.o.data += r0 * x.o.stride[0];
      x.o.shape[0] = r1 - r0;
      pos = static_cast<std::int32_t>(r0);
      return emulated_window(x);
    };
    REQUIRE(part(0, 130) == Status::kSuccess);
    for (std::int64_t t = 130; t < 300; ++t) REQUIRE(part(t, t + 1) == Status::kSuccess);
    const auto e = output_error(p, ref);
    INFO("W " << W << " reversed " << reverse << " output: " << e.describe());
    CHECK(e.within(kOut));
  }
}

TEST_CASE("emulated sliding window: rings of several sequences, permuted ring slots, a skipped sequence", "[emu][linear][swa]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    constexpr int W = 64;
    constexpr std::int64_t N = 3, L = 100, t0 = 40, R = W + 3;
    LinearConfig c;
    c.Hq = 4;
    c.Hk = 2;
    c.Dv = 112;
    c.lens = {L, L, L};
    c.stateful = false;
    LinearProblem<Half> p(c);
    const auto whole = window_args(p, W);
    auto ref = memattn_test::swa_f64(whole);
    for (std::size_t i = static_cast<std::size_t>(2 * L * c.Hq * c.Dv); i < ref.size(); ++i) ref[i] = NAN;  // seq 2: skipped
    const Half nan = memattn::from_float<Half>(std::numeric_limits<float>::quiet_NaN());
    std::vector<Half> rk(static_cast<std::size_t>(N * R * c.Hk * c.Dk), nan), rv(static_cast<std::size_t>(N * R * c.Hk * c.Dv), nan);
    const std::vector<std::int32_t> ring_slot = {2, 0, -1};
    std::vector<std::int32_t> pos(N, 0), prefix(N, static_cast<std::int32_t>(t0));
    auto g = whole;
    g.ring_k = memattn::make_view<4>(rk.data(), {N, R, c.Hk, c.Dk});
    g.ring_v = memattn::make_view<4>(rv.data(), {N, R, c.Hk, c.Dv});
    g.ring_slot = ring_slot.data();
    g.ring_slot_host = ring_slot.data();
    g.seq_pos = pos.data();
    g.seq_pos_host = pos.data();
    // the first t0 tokens of every sequence (dense, lengths t0 of T_pad = L)
    auto first = g;
    first.seq.seq_lens = prefix.data();
    first.seq_lens_host = prefix.data();
    REQUIRE(emulated_window(first) == Status::kSuccess);
    // then token t of every sequence per call: rows L apart, T_pad = 1
    for (std::int64_t t = t0; t < L; ++t) {
      auto x = g;
      for (auto* v : {&x.q, &x.k, &x.v}) {
        v->data += t * v->stride[0];
        v->shape[0] = N;
        v->stride[0] *= L;
      }
      x.o.data += t * x.o.stride[0];
      x.o.shape[0] = N;
      x.o.stride[0] *= L;
      x.seq.seq_lens = nullptr;
      x.seq_lens_host = nullptr;
      std::fill(pos.begin(), pos.end(), static_cast<std::int32_t>(t));
      REQUIRE(emulated_window(x) == Status::kSuccess);
    }
    const auto e = output_error(p, ref);
    INFO("reversed " << reverse << " output: " << e.describe());
    CHECK(e.within(kOut));
    CHECK(overwritten(p, ref) == 0);
    const std::size_t slot = static_cast<std::size_t>(R * c.Hk * c.Dk);  // ring slot 1 belongs to no sequence
    CHECK(std::all_of(rk.begin() + slot, rk.begin() + 2 * slot, [](Half x) { return std::isnan(memattn::to_float(x)); }));
  }
}
