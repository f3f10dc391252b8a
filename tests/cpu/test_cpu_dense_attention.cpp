// CPU dense attention against the fp64 naive reference: random data, odd lengths, GQA 1/4/8,
// sliding window on/off, L = 1, several query tokens, strided caches, all three dtypes; and the
// consistency of prefill with decode (a prefill row equals decode over the same prefix). Built
// twice: portable, and as test_cpu_dense_attention_avx2 (-mavx2 -mfma -mf16c), whose decode rows
// take the vector block path (cpu/dense_block_decode.hpp).
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dense_problem.hpp"
#include "common/naive_attention.hpp"
#include "memattn/cpu/dense_attention.hpp"

using namespace memattn;
using namespace memattn_test;

namespace {

template <class T>
void check_decode(const DecodeShape& shape, std::uint32_t seed) {
  DecodeProblem<T> p(shape, seed);
  auto a = p.args();
  REQUIRE(cpu::dense_decode(a) == Status::kSuccess);
  const NaiveResult ref = naive_decode(a, a.seq_lens);
  const double tol = output_tolerance<T>();
  CHECK(max_scaled_error(p.o.data(), ref.o, tol, tol) <= 1.0);
  CHECK(max_scaled_error(p.lse.data(), ref.lse, 1e-5, 1e-5) <= 1.0);
}

template <class T>
void check_prefill(std::int64_t B, std::int64_t T_, std::int64_t Hq, std::int64_t Hkv, std::int64_t D,
                   std::int32_t window, std::uint32_t seed) {
  auto q = random_vector<T>(static_cast<std::size_t>(B * T_ * Hq * D), seed);
  auto k = random_vector<T>(static_cast<std::size_t>(B * T_ * Hkv * D), seed + 1);
  auto v = random_vector<T>(static_cast<std::size_t>(B * T_ * Hkv * D), seed + 2);
  std::vector<T> o(q.size());
  std::vector<float> lse(static_cast<std::size_t>(B * T_ * Hq));
  attention::PrefillArgs<T> a;
  a.q = make_view<4>(static_cast<const T*>(q.data()), {B, T_, Hq, D});
  a.k = make_view<4>(static_cast<const T*>(k.data()), {B, T_, Hkv, D});
  a.v = make_view<4>(static_cast<const T*>(v.data()), {B, T_, Hkv, D});
  a.o = make_view<4>(o.data(), {B, T_, Hq, D});
  a.lse = make_view<3>(lse.data(), {B, T_, Hq});
  a.window = window;
  REQUIRE(cpu::dense_prefill(a) == Status::kSuccess);
  const NaiveResult ref = naive_prefill(a);
  const double tol = output_tolerance<T>();
  CHECK(max_scaled_error(o.data(), ref.o, tol, tol) <= 1.0);
  CHECK(max_scaled_error(lse.data(), ref.lse, 1e-5, 1e-5) <= 1.0);
}

}  // namespace

TEMPLATE_TEST_CASE("decode matches the fp64 reference", "[decode]", float, Half, BFloat16) {
  const std::int64_t hkv = GENERATE(8, 2, 1);  // GQA group 1, 4, 8 with 8 query heads
  const std::int32_t window = GENERATE(0, 37);
  const bool token_major = GENERATE(false, true);
  DecodeShape s;
  s.batch = 3;
  s.q_heads = 8;
  s.kv_heads = hkv;
  s.head_dim = 64;
  s.capacity = 301;
  s.lens = {1, 157, 301};  // L = 1, odd lengths, a full cache
  s.window = window;
  s.token_major_cache = token_major;
  check_decode<TestType>(s, 11);
}

TEMPLATE_TEST_CASE("decode with several query tokens and odd head_dim", "[decode]", float, Half, BFloat16) {
  DecodeShape s;
  s.batch = 2;
  s.q_tokens = GENERATE(2, 5);
  s.q_heads = 12;
  s.kv_heads = 3;
  s.head_dim = GENERATE(72, 128);
  s.capacity = 260;
  s.lens = {5, 260};
  s.window = GENERATE(0, 3, 200);
  check_decode<TestType>(s, 23);
}

TEST_CASE("decode without seq_lens uses the full capacity; scale is honoured", "[decode]") {
  DecodeShape s;
  s.capacity = 129;
  s.head_dim = 32;
  DecodeProblem<float> p(s, 5);
  auto a = p.args();
  a.scale = 0.3f;
  REQUIRE(cpu::dense_decode(a) == Status::kSuccess);
  const NaiveResult ref = naive_decode(a, nullptr);
  CHECK(max_scaled_error(p.o.data(), ref.o, 2e-5, 2e-5) <= 1.0);
  CHECK(max_scaled_error(p.lse.data(), ref.lse, 1e-5, 1e-5) <= 1.0);
}

TEST_CASE("decode with lse absent still writes the output", "[decode]") {
  DecodeShape s;
  s.capacity = 40;
  DecodeProblem<Half> p(s, 9);
  auto a = p.args();
  a.lse = TensorView<float, 3>{};
  REQUIRE(cpu::dense_decode(a) == Status::kSuccess);
  const NaiveResult ref = naive_decode(a, nullptr);
  CHECK(max_scaled_error(p.o.data(), ref.o, 1.5e-3, 1.5e-3) <= 1.0);
  CHECK(p.lse[0] == -777.f);
}

// DecodeArgs::scores / scores_half (the eviction epilogue's input): raw logits scale * q.k of the
// keys each row sees, -inf for keys of the batch entry's range the row does not see, nothing
// written outside that range; the output and lse are those of a decode without logits.
TEMPLATE_TEST_CASE("decode writes the raw logits in the CUDA kernel's layout", "[decode][scores]", float, Half) {
  const bool half_logits = GENERATE(false, true);
  DecodeShape s;
  s.batch = 2;
  s.q_tokens = GENERATE(1, 3, 70);  // 70: two query blocks (64 tokens each) with different key ranges
  s.q_heads = 8;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.capacity = 300;
  s.lens = {80, 300};
  s.window = GENERATE(0, 37);
  const std::int64_t G = s.q_heads / s.kv_heads, F = s.q_tokens * G;
  DecodeProblem<TestType> p(s, 17), plain(s, 17);
  auto a = p.args();
  const std::size_t n = static_cast<std::size_t>(s.batch * s.kv_heads * F * s.capacity);
  std::vector<float> logits(n, std::nanf(""));
  std::vector<Half> logits_half(n, from_float<Half>(-777.f));
  if (half_logits)
    a.scores_half = make_view<4>(logits_half.data(), {s.batch, s.kv_heads, F, s.capacity});
  else
    a.scores = make_view<4>(logits.data(), {s.batch, s.kv_heads, F, s.capacity});
  REQUIRE(cpu::dense_decode(a) == Status::kSuccess);
  REQUIRE(cpu::dense_decode(plain.args()) == Status::kSuccess);
  for (std::size_t i = 0; i < p.o.size(); ++i) REQUIRE(to_float(p.o[i]) == to_float(plain.o[i]));
  for (std::size_t i = 0; i < p.lse.size(); ++i) REQUIRE(p.lse[i] == plain.lse[i]);

  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const double rel = half_logits ? 1e-3 : 1e-5;
  double worst = 0, worst_mass = 0;
  std::int64_t neg_inf = 0, untouched = 0;
  for (std::int64_t b = 0; b < s.batch; ++b) {
    const std::int64_t L = s.lens[static_cast<std::size_t>(b)];
    auto lo_of = [&](std::int64_t t) { return s.window > 0 ? std::max<std::int64_t>(0, L - s.q_tokens + t - s.window + 1) : 0; };
    const std::int64_t b_lo = lo_of(0), b_hi = L;  // keys some token of b sees
    for (std::int64_t h = 0; h < s.kv_heads; ++h)
      for (std::int64_t t = 0; t < s.q_tokens; ++t)
        for (std::int64_t g = 0; g < G; ++g) {
          const std::int64_t f = t * G + g, lo = lo_of(t), hi = L - s.q_tokens + t + 1;
          double mass = 0;
          for (std::int64_t j = 0; j < s.capacity; ++j) {
            const std::size_t i = static_cast<std::size_t>(((b * s.kv_heads + h) * F + f) * s.capacity + j);
            const float got = half_logits ? to_float(logits_half[i]) : logits[i];
            if (j < b_lo || j >= b_hi) {  // outside every row's range: not written
              const bool kept = half_logits ? logits_half[i].bits == from_float<Half>(-777.f).bits : std::isnan(got);
              REQUIRE(kept);
              ++untouched;
            } else if (j < lo || j >= hi) {
              REQUIRE(got == -std::numeric_limits<float>::infinity());
              ++neg_inf;
            } else {
              double x = 0;
              for (std::int64_t e = 0; e < s.head_dim; ++e)
                x += static_cast<double>(to_float(*a.q.ptr(b, t, h * G + g, e))) * to_float(*a.k_cache.ptr(b, h, j, e));
              x *= scale;
              worst = std::max(worst, std::abs(got - x) / std::max(1.0, std::abs(x)));
              mass += std::exp(static_cast<double>(got) - *a.lse.ptr(b, t, h * G + g));
            }
          }
          worst_mass = std::max(worst_mass, std::abs(mass - 1.0));
        }
  }
  INFO("logits " << worst << " probability mass " << worst_mass);
  CHECK(worst <= rel);
  CHECK(worst_mass <= (half_logits ? 0.05 : 1e-4));
  CHECK(untouched > 0);
  if (s.q_tokens > 1) CHECK(neg_inf > 0);  // later tokens see keys earlier ones do not
}

TEMPLATE_TEST_CASE("prefill matches the fp64 reference", "[prefill]", float, Half, BFloat16) {
  const std::int64_t hkv = GENERATE(4, 1);
  const std::int32_t window = GENERATE(0, 50);
  check_prefill<TestType>(2, 200, 4, hkv, 32, window, 31);  // 200 > query block and key block
  check_prefill<TestType>(1, 1, 8, 1, 16, window, 32);      // T = 1
  check_prefill<TestType>(1, 77, 8, 8, 64, window, 33);
}

TEST_CASE("prefill rows equal decode over the same prefix (chunked prefill)", "[prefill][decode]") {
  const std::int64_t T_ = 150, Hq = 8, Hkv = 2, D = 64;
  for (std::int32_t window : {0, 40}) {
    auto q = random_vector<float>(static_cast<std::size_t>(T_ * Hq * D), 3);
    auto k = random_vector<float>(static_cast<std::size_t>(T_ * Hkv * D), 4);
    auto v = random_vector<float>(static_cast<std::size_t>(T_ * Hkv * D), 5);
    std::vector<float> o_pre(q.size()), lse_pre(static_cast<std::size_t>(T_ * Hq));
    attention::PrefillArgs<float> pa;
    pa.q = make_view<4>(static_cast<const float*>(q.data()), {1, T_, Hq, D});
    pa.k = make_view<4>(static_cast<const float*>(k.data()), {1, T_, Hkv, D});
    pa.v = make_view<4>(static_cast<const float*>(v.data()), {1, T_, Hkv, D});
    pa.o = make_view<4>(o_pre.data(), {1, T_, Hq, D});
    pa.lse = make_view<3>(lse_pre.data(), {1, T_, Hq});
    pa.window = window;
    REQUIRE(cpu::dense_prefill(pa) == Status::kSuccess);

    // The last chunk of 30 tokens as a decode step against the token-major cache of all T_.
    const std::int64_t chunk = 30, t0 = T_ - chunk;
    std::vector<float> o_dec(static_cast<std::size_t>(chunk * Hq * D)), lse_dec(static_cast<std::size_t>(chunk * Hq));
    const std::int32_t len = static_cast<std::int32_t>(T_);
    attention::DecodeArgs<float> da;
    da.q = make_view<4>(static_cast<const float*>(q.data()) + t0 * Hq * D, {1, chunk, Hq, D});
    da.k_cache = make_strided_view<4>(static_cast<const float*>(k.data()), {1, Hkv, T_, D}, {T_ * Hkv * D, D, Hkv * D, 1});
    da.v_cache = make_strided_view<4>(static_cast<const float*>(v.data()), {1, Hkv, T_, D}, {T_ * Hkv * D, D, Hkv * D, 1});
    da.seq_lens = &len;
    da.o = make_view<4>(o_dec.data(), {1, chunk, Hq, D});
    da.lse = make_view<3>(lse_dec.data(), {1, chunk, Hq});
    da.window = window;
    REQUIRE(cpu::dense_decode(da) == Status::kSuccess);
    for (std::size_t i = 0; i < o_dec.size(); ++i) REQUIRE(o_dec[i] == Approx(o_pre[t0 * Hq * D + i]).margin(1e-6));
    for (std::size_t i = 0; i < lse_dec.size(); ++i) REQUIRE(lse_dec[i] == Approx(lse_pre[t0 * Hq + i]).margin(1e-6));
  }
}

TEST_CASE("explicit workspace: size query then run, identical to the convenience call", "[decode]") {
  DecodeShape s;
  s.batch = 2;
  s.capacity = 200;
  s.lens = {100, 200};
  DecodeProblem<BFloat16> p(s, 41), p2(s, 41);
  auto a = p.args();
  std::size_t bytes = 0;
  REQUIRE(cpu::dense_decode_workspace_size(a, &bytes) == Status::kSuccess);
  REQUIRE(bytes > 0);
  HostWorkspace ws(bytes);
  REQUIRE(cpu::dense_decode(a, ws.data(), bytes) == Status::kSuccess);
  REQUIRE(cpu::dense_decode(p2.args()) == Status::kSuccess);
  for (std::size_t i = 0; i < p.o.size(); ++i) REQUIRE(p.o[i].bits == p2.o[i].bits);
}
