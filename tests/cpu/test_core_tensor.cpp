// Tensor views, argument checks, the two-phase workspace and status messages.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/core/workspace.hpp"

using namespace memattn;

TEST_CASE("contiguous and strided views address the same elements", "[tensor]") {
  std::vector<float> buf(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  auto v = make_view<4>(buf.data(), {2, 3, 4, 5});
  CHECK(v.numel() == 120);
  CHECK(v.stride[0] == 60);
  CHECK(v.stride[3] == 1);
  CHECK(*v.ptr(1, 2, 3, 4) == 119.f);
  // Same memory seen as [2, 4, 3, 5] with dims 1 and 2 swapped through strides.
  auto t = make_strided_view<4>(buf.data(), {2, 4, 3, 5}, {60, 5, 20, 1});
  CHECK(*t.ptr(1, 3, 2, 4) == *v.ptr(1, 2, 3, 4));
  CHECK(check_tensor(t, {2, 4, 3, 5}) == Status::kSuccess);
  const auto c = v.as_const();
  CHECK(*c.ptr(0, 0, 1, 0) == 5.f);
}

TEST_CASE("argument checks report the right status", "[tensor]") {
  std::vector<float> buf(24);
  auto v = make_view<3>(buf.data(), {2, 3, 4});
  CHECK(check_tensor(v, {2, 3, 4}) == Status::kSuccess);
  CHECK(check_tensor(v, {-1, 3, -1}) == Status::kSuccess);
  CHECK(check_tensor(v, {2, 3, 5}) == Status::kErrorInvalidShape);
  CHECK(check_tensor(v, {2, 3}) == Status::kErrorInvalidShape);
  TensorView<float, 3> absent;
  CHECK(check_tensor(absent, {2, 3, 4}) == Status::kErrorNullPointer);
  CHECK(check_optional_tensor(absent, {2, 3, 4}) == Status::kSuccess);
  auto bad_inner = make_strided_view<3>(buf.data(), {2, 3, 4}, {12, 4, 2});
  CHECK(check_tensor(bad_inner, {2, 3, 4}) == Status::kErrorInvalidStride);
  auto negative = make_strided_view<3>(buf.data(), {2, 3, 4}, {-12, 4, 1});
  CHECK(check_tensor(negative, {2, 3, 4}) == Status::kErrorInvalidStride);
  auto zero = make_view<3>(buf.data(), {2, 0, 4});
  CHECK(check_tensor(zero, {2, 0, 4}) == Status::kErrorInvalidShape);
  CHECK(check_no_self_overlap(v) == Status::kSuccess);
  CHECK(check_no_self_overlap(make_strided_view<3>(buf.data(), {2, 3, 4}, {0, 4, 1})) == Status::kErrorInvalidStride);
  CHECK(check_no_self_overlap(make_strided_view<3>(buf.data(), {2, 3, 4}, {12, 2, 1})) == Status::kErrorInvalidStride);
  CHECK(check_no_self_overlap(make_strided_view<3>(buf.data(), {1, 3, 4}, {0, 4, 1})) == Status::kSuccess);
  CHECK(check_no_self_overlap(make_strided_view<3>(buf.data(), {2, 3, 4}, {1, 8, 2})) == Status::kSuccess);
  CHECK(is_aligned(v, 16) == (reinterpret_cast<std::uintptr_t>(buf.data()) % 16 == 0));
}

namespace {
struct Parts {
  float* a = nullptr;
  double* b = nullptr;
  int* c = nullptr;
};
template <class W>
void plan(W& ws, Parts* p) {
  p->a = ws.template take<float>(10);
  p->b = ws.template take<double>(3);
  p->c = ws.template take<int>(1, 4);
}
}  // namespace

TEST_CASE("two-phase workspace: size query, then aligned carving", "[workspace]") {
  Workspace sizing;
  Parts p;
  plan(sizing, &p);
  CHECK(p.a == nullptr);
  const std::size_t need = sizing.required();
  CHECK(need == kWorkspaceAlign + 3 * sizeof(double) + sizeof(int));  // c packs after b (align 4)

  alignas(256) static unsigned char buf[4096];
  Workspace carve(buf, need);
  plan(carve, &p);
  REQUIRE(carve.status() == Status::kSuccess);
  CHECK(reinterpret_cast<unsigned char*>(p.a) == buf);
  CHECK(reinterpret_cast<unsigned char*>(p.b) == buf + kWorkspaceAlign);
  CHECK(reinterpret_cast<std::uintptr_t>(p.c) % 4 == 0);

  Workspace small(buf, need - 1);
  plan(small, &p);
  CHECK(small.status() == Status::kErrorWorkspaceTooSmall);
  CHECK(p.c == nullptr);

  Workspace misaligned(buf + 8, need);
  plan(misaligned, &p);
  CHECK(misaligned.status() == Status::kErrorWorkspaceTooSmall);

  Workspace null_base(nullptr, need);
  plan(null_base, &p);
  CHECK(null_base.status() == Status::kErrorWorkspaceTooSmall);
}

TEST_CASE("every status has its own message", "[status]") {
  std::vector<std::string> seen;
  for (int s = 0; s <= static_cast<int>(Status::kErrorParse); ++s) {
    const std::string m = status_message(static_cast<Status>(s));
    CHECK(m != "unknown status");
    for (const auto& prev : seen) CHECK(prev != m);
    seen.push_back(m);
  }
  CHECK(ok(Status::kSuccess));
  CHECK_FALSE(ok(Status::kErrorNullPointer));
}

TEST_CASE("symbols live in the versioned inline namespace", "[config]") {
  static_assert(std::is_same<memattn::Status, memattn::v0_1::Status>::value, "inline namespace");
  // The version is part of the mangled name, so two embedded memattn builds cannot collide.
  CHECK(std::string(typeid(memattn::Status).name()).find("v0_1") != std::string::npos);
}

TEST_CASE("HostWorkspace is aligned and only grows", "[workspace]") {
  HostWorkspace ws(100);
  CHECK(reinterpret_cast<std::uintptr_t>(ws.data()) % kWorkspaceAlign == 0);
  CHECK(ws.size() == 100);
  void* before = ws.data();
  ws.resize(50);
  CHECK(ws.data() == before);
  ws.resize(5000);
  CHECK(ws.size() == 5000);
  CHECK(reinterpret_cast<std::uintptr_t>(ws.data()) % kWorkspaceAlign == 0);
  std::memset(ws.data(), 1, 5000);
}
