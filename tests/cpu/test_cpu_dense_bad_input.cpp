// Every invalid argument gets its Status and leaves the outputs untouched.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "common/dense_problem.hpp"
#include "memattn/cpu/dense_attention.hpp"

using namespace memattn;
using namespace memattn_test;

namespace {

DecodeShape base_shape() {
  DecodeShape s;
  s.batch = 2;
  s.q_heads = 8;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.capacity = 50;
  s.lens = {20, 50};
  return s;
}

template <class Mutate>
void expect_rejected(Status want, Mutate mutate) {
  DecodeProblem<Half> p(base_shape(), 3);
  auto a = p.args();
  mutate(a, p);
  CHECK(cpu::dense_decode(a) == want);
  for (const auto& x : p.o) REQUIRE(x.bits == from_float<Half>(-777.f).bits);
  for (float x : p.lse) REQUIRE(x == -777.f);
}

}  // namespace

TEST_CASE("decode rejects bad arguments and writes nothing", "[bad-input]") {
  using A = attention::DecodeArgs<Half>;
  using P = DecodeProblem<Half>;
  SECTION("null pointers") {
    expect_rejected(Status::kErrorNullPointer, [](A& a, P&) { a.q.data = nullptr; });
    expect_rejected(Status::kErrorNullPointer, [](A& a, P&) { a.k_cache.data = nullptr; });
    expect_rejected(Status::kErrorNullPointer, [](A& a, P&) { a.v_cache.data = nullptr; });
    expect_rejected(Status::kErrorNullPointer, [](A& a, P&) { a.o.data = nullptr; });
  }
  SECTION("mismatched shapes") {
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.v_cache.shape[2] = 49; });
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.k_cache.shape[3] = 32; });
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.o.shape[2] = 4; });
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.lse.shape[0] = 1; });
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.v_cache.shape[0] = 1; });
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.q.shape[1] = 0; });
  }
  SECTION("bad strides") {
    expect_rejected(Status::kErrorInvalidStride, [](A& a, P&) { a.k_cache.stride[3] = 2; });
    expect_rejected(Status::kErrorInvalidStride, [](A& a, P&) { a.q.stride[0] = -1; });
    // Outputs that alias themselves (zero or overlapping strides).
    expect_rejected(Status::kErrorInvalidStride, [](A& a, P&) { a.o.stride[2] = 0; });
    expect_rejected(Status::kErrorInvalidStride, [](A& a, P&) { a.o.stride[2] = 32; });
    expect_rejected(Status::kErrorInvalidStride, [](A& a, P&) { a.lse.stride[0] = 0; });
  }
  SECTION("GQA ratio not an integer") {
    expect_rejected(Status::kErrorGqaRatio, [](A& a, P&) {
      a.k_cache.shape[1] = 3;
      a.v_cache.shape[1] = 3;
    });
  }
  SECTION("L = 0, L < Tq, L > capacity") {
    expect_rejected(Status::kErrorEmptyCache, [](A&, P& p) { p.s.lens[0] = 0; });
    expect_rejected(Status::kErrorEmptyCache, [](A&, P& p) { p.s.lens[1] = 51; });
    expect_rejected(Status::kErrorEmptyCache, [](A&, P& p) { p.s.lens[0] = -4; });
  }
  SECTION("bad scale or window") {
    expect_rejected(Status::kErrorInvalidArgument, [](A& a, P&) { a.scale = std::nanf(""); });
    expect_rejected(Status::kErrorInvalidArgument, [](A& a, P&) { a.scale = -1.f; });
    expect_rejected(Status::kErrorInvalidArgument, [](A& a, P&) { a.window = -2; });
  }
  SECTION("raw-logit output: shape and lse checked") {
    // [B, Hkv, Tq * G, Lcap] = [2, 2, 4, 50]
    static float scores[2 * 2 * 4 * 50];
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.scores = make_view<4>(scores, {2, 2, 4, 49}); });
    expect_rejected(Status::kErrorInvalidArgument, [](A& a, P&) {
      a.scores = make_view<4>(scores, {2, 2, 4, 50});
      a.lse = {};
    });
    // fp16 logits: same checks; never together with fp32 logits
    static Half scores_half[2 * 2 * 4 * 50];
    expect_rejected(Status::kErrorInvalidShape, [](A& a, P&) { a.scores_half = make_view<4>(scores_half, {2, 2, 3, 50}); });
    expect_rejected(Status::kErrorInvalidArgument, [](A& a, P&) {
      a.scores_half = make_view<4>(scores_half, {2, 2, 4, 50});
      a.lse = {};
    });
    expect_rejected(Status::kErrorInvalidArgument, [](A& a, P&) {
      a.scores = make_view<4>(scores, {2, 2, 4, 50});
      a.scores_half = make_view<4>(scores_half, {2, 2, 4, 50});
    });
  }
  SECTION("workspace too small or null") {
    DecodeProblem<Half> p(base_shape(), 3);
    auto a = p.args();
    std::size_t bytes = 0;
    REQUIRE(cpu::dense_decode_workspace_size(a, &bytes) == Status::kSuccess);
    HostWorkspace ws(bytes);
    CHECK(cpu::dense_decode(a, ws.data(), bytes - 1) == Status::kErrorWorkspaceTooSmall);
    CHECK(cpu::dense_decode(a, nullptr, bytes) == Status::kErrorWorkspaceTooSmall);
    CHECK(cpu::dense_decode_workspace_size(a, nullptr) == Status::kErrorNullPointer);
    for (const auto& x : p.o) REQUIRE(x.bits == from_float<Half>(-777.f).bits);
  }
}

TEST_CASE("prefill rejects bad arguments and writes nothing", "[bad-input]") {
  const std::int64_t T_ = 10, Hq = 4, Hkv = 2, D = 16;
  std::vector<float> q(T_ * Hq * D, 1.f), k(T_ * Hkv * D, 1.f), v(T_ * Hkv * D, 1.f), o(T_ * Hq * D, -777.f);
  auto make = [&]() {
    attention::PrefillArgs<float> a;
    a.q = make_view<4>(static_cast<const float*>(q.data()), {1, T_, Hq, D});
    a.k = make_view<4>(static_cast<const float*>(k.data()), {1, T_, Hkv, D});
    a.v = make_view<4>(static_cast<const float*>(v.data()), {1, T_, Hkv, D});
    a.o = make_view<4>(o.data(), {1, T_, Hq, D});
    return a;
  };
  auto a = make();
  a.k.data = nullptr;
  CHECK(cpu::dense_prefill(a) == Status::kErrorNullPointer);
  a = make();
  a.v.shape[1] = T_ - 1;
  CHECK(cpu::dense_prefill(a) == Status::kErrorInvalidShape);
  a = make();
  a.q.shape[2] = 3;
  a.o.shape[2] = 3;
  CHECK(cpu::dense_prefill(a) == Status::kErrorGqaRatio);
  a = make();
  a.window = -1;
  CHECK(cpu::dense_prefill(a) == Status::kErrorInvalidArgument);
  for (float x : o) REQUIRE(x == -777.f);
}
