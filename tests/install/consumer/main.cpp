// A downstream program, built out of tree against memattn (installed, or added as a
// subdirectory): one real fp16 GQA decode through memattn::cpu, checked against the project's
// fp64 reference, plus one rejected call. Prints "memattn consumer: ok" and returns 0 only when
// every check passes.
#include <memattn/memattn.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

// The project's fp64 reference and test data (tests/common, on the include path; it includes
// only public memattn headers, which resolve to the memattn under test).
#include "common/naive_attention.hpp"
#include "common/test_data.hpp"

#if defined(EXPECT_MEMATTN_VERSION_MAJOR)
static_assert(MEMATTN_VERSION_MAJOR == EXPECT_MEMATTN_VERSION_MAJOR &&
                  MEMATTN_VERSION_MINOR == EXPECT_MEMATTN_VERSION_MINOR &&
                  MEMATTN_VERSION_PATCH == EXPECT_MEMATTN_VERSION_PATCH,
              "the headers' version differs from the CMake package version");
#endif

int main() {
  using memattn::Half;
  constexpr std::int64_t B = 1, Tq = 1, Hq = 4, Hkv = 2, D = 64, Lcap = 48;
  const std::int32_t seq_len = 41;  // the last token of the 41 cached is the query's own

  const auto q = memattn_test::random_vector<Half>(B * Tq * Hq * D, 1);
  const auto k = memattn_test::random_vector<Half>(B * Hkv * Lcap * D, 2);
  const auto v = memattn_test::random_vector<Half>(k.size(), 3);
  std::vector<Half> o(q.size());
  std::vector<float> lse(B * Tq * Hq, 0.f);

  memattn::attention::DecodeArgs<Half> args;
  args.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {B, Tq, Hq, D});
  args.k_cache = memattn::make_view<4>(static_cast<const Half*>(k.data()), {B, Hkv, Lcap, D});
  args.v_cache = memattn::make_view<4>(static_cast<const Half*>(v.data()), {B, Hkv, Lcap, D});
  args.seq_lens = &seq_len;
  args.o = memattn::make_view<4>(o.data(), {B, Tq, Hq, D});
  args.lse = memattn::make_view<3>(lse.data(), {B, Tq, Hq});

  // Two-phase scratch: ask the size, hand over an aligned buffer, run.
  std::size_t ws_bytes = 0;
  memattn::Status st = memattn::cpu::dense_decode_workspace_size(args, &ws_bytes);
  if (st != memattn::Status::kSuccess) {
    std::printf("workspace_size failed: %s\n", memattn::status_message(st));
    return 1;
  }
  memattn::HostWorkspace ws(ws_bytes);
  st = memattn::cpu::dense_decode(args, ws.data(), ws_bytes);
  if (st != memattn::Status::kSuccess) {
    std::printf("dense_decode failed: %s\n", memattn::status_message(st));
    return 1;
  }

  const memattn_test::NaiveResult ref = memattn_test::naive_decode(args, &seq_len);
  const double err_o = memattn_test::max_scaled_error(o.data(), ref.o, memattn_test::output_tolerance<Half>(),
                                                      memattn_test::output_tolerance<Half>());
  const double err_lse = memattn_test::max_scaled_error(lse.data(), ref.lse, 1e-5, 1e-5);
  if (!(err_o <= 1.0) || !(err_lse <= 1.0)) {
    std::printf("result differs from the fp64 reference: scaled error o %.3g, lse %.3g (> 1)\n", err_o, err_lse);
    return 1;
  }

  // Invalid arguments are reported, and nothing is written.
  const std::vector<Half> before = o;
  args.q.data = nullptr;
  st = memattn::cpu::dense_decode(args);
  if (st != memattn::Status::kErrorNullPointer) {
    std::printf("a null query gave '%s', expected a null-pointer error\n", memattn::status_message(st));
    return 1;
  }
  for (std::size_t i = 0; i < o.size(); ++i) {
    if (o[i].bits != before[i].bits) {
      std::printf("a rejected call wrote its output\n");
      return 1;
    }
  }

  std::printf("memattn consumer: ok (memattn %d.%d.%d, scaled error o %.2f, lse %.2f; <= 1 passes)\n",
              MEMATTN_VERSION_MAJOR, MEMATTN_VERSION_MINOR, MEMATTN_VERSION_PATCH, err_o, err_lse);
  return 0;
}
