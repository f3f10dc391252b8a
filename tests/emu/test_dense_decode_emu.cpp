// The split-KV dense decode (dense_decode.cuh) run by the CPU emulator (simt.hpp) on every CI
// run, through the wrapper's own checks, plan, workspace carving and launch sequence
// (cuda/dense_decode_params.cuh): output and LSE against the fp64 naive decode for fp16 and bf16,
// head_dim 64 / 128 / 256, every row tile (GQA groups x query tokens 1..12), ragged lengths, a
// sliding window, head- and token-major caches, one split and many; raw logits (the eviction
// scores' input) against fp64 q.k. Also the emulator's cp.async model, which the pipelines rely on.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/dense_problem.hpp"
#include "common/naive_attention.hpp"
#include "common/test_data.hpp"
#include "emu/emulated_decode.hpp"

namespace {

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn_test::DecodeProblem;
using memattn_test::DecodeShape;
using memattn_emu::emulated_decode;

// growth > 0: key j scaled by 1 + growth * j, so logits grow along the cache and the running
// maximum keeps moving (the lazy rescale path).
template <class T>
void check(const DecodeShape& s, int splits, bool logits, double growth = 0) {
  INFO("growth " << growth << " B " << s.batch << " Tq " << s.q_tokens << " Hq " << s.q_heads << " Hkv " << s.kv_heads << " D " << s.head_dim << " Lcap "
            << s.capacity << " window " << s.window << " token-major " << s.token_major_cache << " splits " << splits
            << " reversed " << memattn_emu::reverse_ctas());
  DecodeProblem<T> pr(s);
  if (growth > 0)
    for (std::size_t i = 0; i < pr.k.size(); ++i) {
      const std::int64_t j = s.token_major_cache ? static_cast<std::int64_t>(i) / (s.kv_heads * s.head_dim) % s.capacity
                                                 : static_cast<std::int64_t>(i) / s.head_dim % s.capacity;
      pr.k[i] = memattn::from_float<T>(static_cast<float>(memattn::to_float(pr.k[i]) * (1.0 + growth * static_cast<double>(j))));
    }
  auto a = pr.args();
  a.seq_lens_host = s.lens.empty() ? nullptr : s.lens.data();
  const std::int64_t G = s.q_heads / s.kv_heads;
  std::vector<float> logits_buf;
  if (logits) {
    logits_buf.assign(static_cast<std::size_t>(s.batch * s.kv_heads * s.q_tokens * G * s.capacity), NAN);
    a.scores = memattn::make_view<4>(logits_buf.data(), {s.batch, s.kv_heads, s.q_tokens * G, s.capacity});
  }
  memattn::cuda::DenseDecodeTuning tuning;
  tuning.num_splits = splits;
  memattn::cuda::DenseDecodePlan pl;
  REQUIRE(emulated_decode(a, tuning, &pl) == Status::kSuccess);
  INFO("plan: row tile " << pl.row_tile << " splits " << pl.num_splits << " keys/split " << pl.keys_per_split);
  const auto ref = memattn_test::naive_decode(a, s.lens.empty() ? nullptr : s.lens.data());
  double worst_o = 0, worst_lse = 0;
  for (std::int64_t r = 0; r < static_cast<std::int64_t>(ref.lse.size()); ++r) {
    double row = 0;
    for (std::int64_t e = 0; e < s.head_dim; ++e) row = std::max(row, std::abs(ref.o[static_cast<std::size_t>(r * s.head_dim + e)]));
    for (std::int64_t e = 0; e < s.head_dim; ++e) {
      const std::size_t i = static_cast<std::size_t>(r * s.head_dim + e);
      worst_o = memattn_test::worse(worst_o, std::abs(memattn::to_float(pr.o[i]) - ref.o[i]) / std::max(row, 1e-6));
    }
    worst_lse = memattn_test::worse(worst_lse, std::abs(pr.lse[static_cast<std::size_t>(r)] - ref.lse[static_cast<std::size_t>(r)]));
  }
  INFO("output " << worst_o << " lse " << worst_lse);
  CHECK(worst_o <= (std::is_same<T, Half>::value ? 2e-3 : 1e-2));  // one 16-bit rounding of o
  CHECK(worst_lse <= 1e-4);
  if (!logits) return;
  // raw logit of (b, kv head, row f = t * G + g, key j) = scale * q.k for the keys row f sees
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  double worst_l = 0;
  for (std::int64_t b = 0; b < s.batch; ++b) {
    const std::int64_t L = s.lens.empty() ? s.capacity : s.lens[static_cast<std::size_t>(b)];
    for (std::int64_t h = 0; h < s.kv_heads; ++h)
      for (std::int64_t t = 0; t < s.q_tokens; ++t)
        for (std::int64_t g = 0; g < G; ++g) {
          const std::int64_t pos = L - s.q_tokens + t, lo = s.window > 0 ? std::max<std::int64_t>(0, pos - s.window + 1) : 0;
          for (std::int64_t j = lo; j <= pos; ++j) {
            double x = 0;
            for (std::int64_t e = 0; e < s.head_dim; ++e)
              x += static_cast<double>(memattn::to_float(*a.q.ptr(b, t, h * G + g, e))) * memattn::to_float(*a.k_cache.ptr(b, h, j, e));
            const float got = *a.scores.ptr(b, h, t * G + g, j);
            worst_l = memattn_test::worse(worst_l, std::abs(got - scale * x) / std::max(1.0, std::abs(scale * x)));
          }
        }
  }
  INFO("logits " << worst_l);
  CHECK(worst_l <= 1e-5);
}

}  // namespace

TEST_CASE("emulated dense decode == fp64 (head dims, row tiles, splits, windows, layouts)", "[emu][decode]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    DecodeShape s;
    s.batch = 3;
    s.q_heads = 8;
    s.kv_heads = 2;
    s.head_dim = 64;
    s.capacity = 300;
    s.lens = {300, 1, 177};
    for (int splits : {1, 5}) check<Half>(s, splits, false);
    check<Half>(s, 2, true, 0.05);  // rising logits: the running maximum moves chunk after chunk
    s.q_tokens = 3;  // 12 rows per KV head: two row tiles of 8
    s.lens = {300, 3, 177};
    s.window = 40;
    s.token_major_cache = true;
    check<BFloat16>(s, 4, false);
    DecodeShape w;
    w.batch = 2;
    w.q_heads = 4;
    w.kv_heads = 4;  // G = 1: row tile 1
    w.head_dim = 128;
    w.capacity = 130;
    w.lens = {130, 64};
    check<BFloat16>(w, 0, true);  // the split heuristic; raw logits
    w.q_heads = 8;               // G = 2
    w.head_dim = 256;
    check<Half>(w, 3, true);
  }
}

// NaN is never laundered, also not when every key a lane group's stream (or a whole split)
// holds is NaN, where the running max stays -inf and only l carries the NaN: a NaN query element
// makes its row's output and LSE NaN; NaN keys over tokens [0, 96) of one (sequence, KV head) make
// its query heads' rows NaN (all splits, one split); every other row is what fp64 gives.
TEST_CASE("emulated dense decode: NaN queries and keys stay NaN", "[emu][decode]") {
  for (bool reverse : {false, true})
    for (int splits : {1, 5}) {
      memattn_emu::ReverseCtas order(reverse);
      INFO("splits " << splits << " reversed " << reverse);
      DecodeShape s;
      s.batch = 2;
      s.q_heads = 8;
      s.kv_heads = 2;
      s.head_dim = 64;
      s.capacity = 300;
      s.lens = {300, 250};
      DecodeProblem<Half> pr(s);
      const std::int64_t D = s.head_dim, G = s.q_heads / s.kv_heads;
      pr.q[static_cast<std::size_t>((0 * s.q_heads + 1) * D + 3)] = Half{0x7E00};  // (b 0, query head 1)
      for (std::int64_t t = 0; t < 96; ++t)                                          // (b 1, KV head 1)
        for (std::int64_t e = 0; e < D; ++e) pr.k[static_cast<std::size_t>(((1 * s.kv_heads + 1) * s.capacity + t) * D + e)] = Half{0x7E00};
      auto a = pr.args();
      a.seq_lens_host = s.lens.data();
      memattn::cuda::DenseDecodeTuning tuning;
      tuning.num_splits = splits;
      memattn::cuda::DenseDecodePlan pl;
      REQUIRE(emulated_decode(a, tuning, &pl) == Status::kSuccess);
      const auto ref = memattn_test::naive_decode(a, s.lens.data());
      double worst = 0;
      for (std::int64_t r = 0; r < s.batch * s.q_heads; ++r) {
        const std::int64_t b = r / s.q_heads, hq = r % s.q_heads;
        const bool poisoned = (b == 0 && hq == 1) || (b == 1 && hq / G == 1);
        INFO("row " << r);
        if (poisoned) {
          CHECK_FALSE(std::isfinite(pr.lse[static_cast<std::size_t>(r)]));
          for (std::int64_t e = 0; e < D; ++e) CHECK_FALSE(std::isfinite(memattn::to_float(pr.o[static_cast<std::size_t>(r * D + e)])));
          continue;
        }
        for (std::int64_t e = 0; e < D; ++e) {
          const std::size_t i = static_cast<std::size_t>(r * D + e);
          worst = memattn_test::worse(worst, std::abs(memattn::to_float(pr.o[i]) - ref.o[i]));
        }
      }
      CHECK(worst <= 2e-3);
    }
}

// The emulator's cp.async model (simt.hpp), through the kernels' own helpers: a copy's destination
// reads 0xFF from its issue until the issuing thread's wait_group retires its commit group; the
// source is read at issue.
TEST_CASE("emulated cp.async lands at the wait_group that retires its group", "[emu][decode]") {
  namespace kd = memattn::kernels::detail;
  alignas(16) std::uint32_t src[3][4] = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}};
  std::vector<std::uint32_t> seen;
  memattn_emu::launch(dim3(1), dim3(32), 64, [&] {
    MEMATTN_DYNAMIC_SMEM(std::uint32_t, sm);
    if (threadIdx.x != 0) return;
    for (int i = 0; i < 16; ++i) sm[i] = 0u;
    kd::cp_async_16(sm, src[0]);
    kd::cp_async_commit();
    kd::cp_async_16(sm + 4, src[1]);
    kd::cp_async_commit();
    kd::cp_async_16(sm + 8, src[2]);  // not committed: no wait_group retires it
    src[2][0] = 99;                   // the source was read at issue
    seen.push_back(sm[0]), seen.push_back(sm[4]), seen.push_back(sm[8]);
    kd::cp_async_wait<1>();  // group 0 lands, group 1 may still be in flight
    seen.push_back(sm[0]), seen.push_back(sm[4]);
    kd::cp_async_wait<0>();
    seen.push_back(sm[4]), seen.push_back(sm[8]), seen.push_back(sm[12]);
  });
  const std::vector<std::uint32_t> want = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 1u, 0xFFFFFFFFu,
                                           5u,          0xFFFFFFFFu, 0u};
  CHECK(seen == want);
}
