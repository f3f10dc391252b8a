// CPU dense attention against the fp64 naive reference: random data, odd lengths, GQA 1/4/8,
// sliding window on/off, L = 1, several query tokens, strided caches, all three dtypes; and the
// consistency of prefill with decode (a prefill row equals decode over the same prefix). Built
// twice: portable, and as test_cpu_dense_attention_avx2 (-mavx2 -mfma -mf16c), whose decode rows
// take the vector block path (cpu/dense_block_decode.hpp).
#include <catch2/catch.hpp>
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
