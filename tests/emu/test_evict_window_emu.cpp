// The observation-window eviction kernels (evict_window.cuh: pass-1 LSE and its split combine,
// pass-2 column sums, pooling, WindowKV's statistics and ranks) run by the CPU emulator (simt.hpp)
// on every CI run, in both CTA orders, through the wrappers' own checks, plans and launch
// sequences (cuda/evict_window_params.cuh; the plan on 132 SMs), against the GPU test's CPU
// references (gpu/evict_window_cpu_bridge.hpp) and fp64 oracle with its tolerance
// (common/window_cases.hpp):
//  * window_colsum: ragged segments with gapped positions, G 1 / 3 / 4 / 8, D 64 / 128 / 256,
//    w 1 .. 48 (several query chunks, a window longer than the segments), fp32 / Half / BFloat16
//    queries and keys, every GQA reduction, pass 1 with automatic, 64-key (many partials) and
//    single splits and an external LSE; slots past a segment are never written, the NaN keys and
//    -5 positions there never read; workspace 0xFF, so a partial or LSE read unwritten shows.
//  * window_pool bit-identical to cpu::pool_scores on the CPU's column sums (avg / max, both pad
//    modes, kernels 1..7, zero fill), within the tolerance on the emulated ones.
//  * windowkv_scores bit-identical to WindowBlock::unit_scores (both modes, R 1 / 3 / 8, ties),
//    and end to end on emulated column sums.
//  * compresskv_scores vs cpu::head_subset_window_scores (tolerance), its pool-and-mean stage
//    bit-identical; the per-head buffer is cleared first (it starts as 0xFF here).
//  * bad arguments: the host checks' Status, nothing launched.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use
#include "emu/emu_launch.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/window_cases.hpp"
#include "gpu/evict_window_cpu_bridge.hpp"
#include "memattn/cuda/evict_window_params.cuh"

namespace {

using memattn_emu_test::emu_launch;
using memattn_emu_test::HostWs;
using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn_test::Case;
using memattn_test::dtype_id;
using memattn_test::kSentinel;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;
namespace wd = memattn::cuda::window_detail;

constexpr int kSms = 132;  // the plan's SM count (an H100 / H200)

// cuda::window_colsum on the emulator: checks, plan (sized, then carved), launches. `splits`: the
// plan's pass-1 splits (0: external LSE).
template <class TQ, class TK>
Status emulated_colsum(const mk::WindowColsumParams<TQ, TK>& p, int split_keys, int* splits = nullptr) {
  MEMATTN_RETURN_IF_ERROR(mc::window_colsum_can_implement(p));
  memattn::Workspace sizing;
  mk::WindowPlan pl;
  MEMATTN_RETURN_IF_ERROR(wd::plan(p, mk::WindowHeads{}, split_keys, kSms, sizing, &pl));
  HostWs ws(sizing.required());
  memattn::Workspace w(ws.data(), ws.bytes);
  MEMATTN_RETURN_IF_ERROR(wd::plan(p, mk::WindowHeads{}, split_keys, kSms, w, &pl));
  MEMATTN_RETURN_IF_ERROR(w.status());
  if (splits != nullptr) *splits = pl.splits;
  return wd::colsum_launches(p, pl, emu_launch);
}

Status emulated_pool(const mk::WindowPoolParams& p) {
  MEMATTN_RETURN_IF_ERROR(mc::window_pool_can_implement(p));
  return wd::pool_launch(p, emu_launch);
}

Status emulated_windowkv(const mk::WindowKvParams& p) {
  MEMATTN_RETURN_IF_ERROR(mc::windowkv_scores_can_implement(p));
  memattn::Workspace sizing;
  mk::WindowKvWork wk;
  wd::plan_windowkv(p, sizing, &wk);
  HostWs ws(sizing.required());
  memattn::Workspace w(ws.data(), ws.bytes);
  wd::plan_windowkv(p, w, &wk);
  MEMATTN_RETURN_IF_ERROR(w.status());
  return wd::windowkv_launches(p, wk, emu_launch);
}

template <class TQ, class TK>
Status emulated_compresskv(const mk::WindowColsumParams<TQ, TK>& p, const mc::CompressKvScoreArgs& a, int split_keys) {
  MEMATTN_RETURN_IF_ERROR(mc::compresskv_scores_can_implement(p, a));
  memattn::Workspace sizing;
  mk::WindowPlan pl;
  mk::WindowColsumParams<TQ, TK> q = p;
  MEMATTN_RETURN_IF_ERROR(wd::plan_compresskv(&q, a, split_keys, kSms, sizing, &pl));
  HostWs ws(sizing.required());
  memattn::Workspace w(ws.data(), ws.bytes);
  q = p;
  MEMATTN_RETURN_IF_ERROR(wd::plan_compresskv(&q, a, split_keys, kSms, w, &pl));
  MEMATTN_RETURN_IF_ERROR(w.status());
  auto clear = [](float* col, std::size_t n) {
    std::fill(col, col + n, 0.f);
    return Status::kSuccess;
  };
  return wd::compresskv_launches(q, a, pl, clear, emu_launch);
}

// Column sums of case (B, Hq, Hkv, D, w, Nmax) for every GQA reduction in the four pass-1 modes
// (automatic splits, 64-key splits, one split, external LSE), vs the CPU and the fp64 oracle; then
// the pooling of the mean-reduced sums (bit-identical on the CPU's, within the tolerance on these).
template <class TQ, class TK>
void run_colsum(int B, int Hq, int Hkv, int D, int w, int Nmax, unsigned seed) {
  INFO("B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " w " << w << " Nmax " << Nmax << " TQ " << dtype_id<TQ>()
            << " TK " << dtype_id<TK>() << " reversed " << memattn_emu::reverse_ctas());
  const Case<TQ, TK> c(B, Hq, Hkv, D, w, Nmax, false, seed);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<float> lse;
  std::vector<std::vector<double>> per;
  memattn_test::oracle_all(c, scale, &lse, &per);
  const int tiles = (Nmax + mk::kWindowTile - 1) / mk::kWindowTile;
  for (int reduce = 0; reduce < 3; ++reduce) {
    INFO("reduce " << reduce);
    std::vector<float> ref;
    std::vector<std::vector<float>> orc;
    memattn_test::colsum_references(c, per, scale, reduce, &ref, &orc);
    std::vector<float> emu_col;
    for (int mode = 0; mode < 4; ++mode) {
      INFO("mode " << mode);
      std::vector<float> col(ref.size(), kSentinel);
      auto p = memattn_test::window_params(c, c.q.data(), c.qpos.data(), c.k.data(), c.kpos.data(), c.lens.data(), col.data(),
                                           scale, reduce);
      if (mode == 3) memattn_test::use_external_lse(&p, lse.data());
      const int split_keys = mode == 1 ? 64 : mode == 2 ? Nmax : 0;
      int splits = -1;
      REQUIRE(emulated_colsum(p, split_keys, &splits) == Status::kSuccess);
      if (mode == 0) CHECK(splits == (tiles + 3) / 4);  // few segments for 132 SMs: the minimum of 4 tiles per split
      else CHECK(splits == (mode == 1 ? tiles : mode == 2 ? 1 : 0));
      memattn_test::check_colsums(c, col, ref, orc, "emulated");
      if (mode == 1) emu_col = col;
    }
    if (reduce == 0) {
      memattn_test::zero_sentinels(&emu_col);
      const std::vector<std::int32_t> cand = memattn_test::pool_counts(c.lens, seed + 7u);
      memattn_test::check_pool(B, Hkv, Nmax, c.lens, cand, ref, "emulated", [&](mk::WindowPoolParams pp, int src) {
        std::vector<float> out(static_cast<std::size_t>(B) * Hkv * Nmax, kSentinel);
        pp.in = src ? emu_col.data() : ref.data();
        pp.out = out.data();
        pp.count = cand.data();
        pp.lens = c.lens.data();
        REQUIRE(emulated_pool(pp) == Status::kSuccess);
        return out;
      });
    }
  }
}

template <class TQ, class TK>
void run_compresskv(int B, int Hq, int Hkv, int D, int w, int Nmax, const std::vector<std::int32_t>& heads, int kernel, int pool,
                    bool pad, int split_keys, unsigned seed) {
  INFO("Hq " << Hq << " Hkv " << Hkv << " D " << D << " w " << w << " heads " << heads.size() << " kernel " << kernel << " pool "
             << pool << " pad " << pad << " split_keys " << split_keys << " reversed " << memattn_emu::reverse_ctas());
  const Case<TQ, TK> c(B, Hq, Hkv, D, w, Nmax, true, seed);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<std::int32_t> lens_b;
  const std::vector<std::int32_t> n_cand = memattn_test::candidate_counts(c, &lens_b);
  std::vector<float> out(static_cast<std::size_t>(B) * Nmax, kSentinel);
  const auto p = memattn_test::window_params(c, c.q.data(), c.qpos.data(), c.k.data(), c.kpos.data(), c.lens.data(),
                                             static_cast<float*>(nullptr), scale, 0);
  mc::CompressKvScoreArgs a;
  a.heads = heads.data();
  a.n_heads = static_cast<int>(heads.size());
  a.kernel = kernel, a.pool = pool, a.count_include_pad = pad;
  a.n_cand = n_cand.data();
  a.lens = lens_b.data();
  a.out = out.data();
  a.out_stride = Nmax;
  REQUIRE(emulated_compresskv(p, a, split_keys) == Status::kSuccess);
  memattn_test::check_compresskv(c, heads, kernel, pool, pad, scale, n_cand, out,
                                 [&](mk::WindowPoolParams pp, const std::vector<float>& percol, std::int32_t count, std::int32_t len) {
                                   std::vector<float> pooled(static_cast<std::size_t>(len), kSentinel);
                                   pp.in = percol.data();
                                   pp.out = pooled.data();
                                   pp.count = &count;
                                   pp.lens = &len;
                                   REQUIRE(emulated_pool(pp) == Status::kSuccess);
                                   return pooled;
                                 });
}

mk::WindowKvParams windowkv_params(const std::vector<float>& col, int heads, int N, const std::vector<std::int32_t>& n_rev,
                                   std::vector<float>& out, int block, int mode) {
  return memattn_test::windowkv_params(col.data(), heads, N, n_rev.data(), static_cast<int>(n_rev.size()), out.data(), block, mode);
}

}  // namespace

TEST_CASE("emulated window_colsum == cpu::window_colsum and the fp64 oracle; pooling == cpu::pool_scores", "[emu][evict][window]") {
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    run_colsum<float, Half>(2, 8, 2, 128, 32, 300, 11u);        // G 4, two query chunks, 5 tiles
    run_colsum<Half, Half>(1, 8, 1, 64, 40, 200, 12u);          // G 8, w 40: 320 rows, five chunks
    run_colsum<BFloat16, BFloat16>(2, 4, 4, 64, 8, 330, 13u);   // G 1, 6 tiles: two automatic splits
    run_colsum<float, BFloat16>(1, 6, 2, 64, 21, 150, 14u);     // G 3: chunks of 21 tokens (63 rows)
    run_colsum<float, float>(1, 8, 1, 256, 16, 100, 15u);       // D 256 (> 48 KiB of shared memory)
    run_colsum<Half, BFloat16>(2, 2, 2, 64, 1, 65, 16u);        // w 1, one key past a tile
    run_colsum<Half, Half>(2, 4, 1, 64, 48, 40, 18u);           // w > segment lengths
  }
}

TEST_CASE("emulated windowkv_scores == WindowBlock::unit_scores, bit for bit", "[emu][evict][window][windowkv]") {
  memattn_test::WindowKvColumns gen;
  int round = 0;
  for (int heads : {1, 3, 8})
    for (int block : {1, 3, 8})
      for (int mode = 0; mode < 2; ++mode) {
        memattn_emu::ReverseCtas order(round++ % 2 == 1);
        INFO("heads " << heads << " R " << block << " mode " << mode << " reversed " << memattn_emu::reverse_ctas());
        const int B = 3, N = 301;
        const std::vector<std::int32_t> n_rev = {N, 0, 250};
        const std::vector<float> col = gen.next(B, heads, N);
        std::vector<float> out(static_cast<std::size_t>(B) * N, kSentinel);
        REQUIRE(emulated_windowkv(windowkv_params(col, heads, N, n_rev, out, block, mode)) == Status::kSuccess);
        memattn_test::check_windowkv(out, col, heads, N, n_rev, block, mode, "WindowKV scores (sentinel beyond n_rev)");
      }
}

TEST_CASE("emulated windowkv_scores on emulated column sums: the WindowKV pipeline end to end", "[emu][evict][window][windowkv]") {
  // Every KV head of a sequence holds the same slots (a layer group's shared selection).
  const int B = 2, Hq = 8, Hkv = 4, D = 128, w = 16, Nmax = 300;
  const Case<Half, Half> c(B, Hq, Hkv, D, w, Nmax, true, 31u);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  const std::vector<std::int32_t> n_rev = memattn_test::candidate_counts(c);
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    std::vector<float> col(static_cast<std::size_t>(B) * Hkv * Nmax, kSentinel);
    REQUIRE(emulated_colsum(memattn_test::window_params(c, c.q.data(), c.qpos.data(), c.k.data(), c.kpos.data(), c.lens.data(),
                                                        col.data(), scale, 0),
                            0) == Status::kSuccess);
    for (int mode = 0; mode < 2; ++mode) {
      INFO("mode " << mode << " reversed " << reverse);
      std::vector<float> out(static_cast<std::size_t>(B) * Nmax, kSentinel);
      REQUIRE(emulated_windowkv(windowkv_params(col, Hkv, Nmax, n_rev, out, 8, mode)) == Status::kSuccess);
      memattn_test::check_windowkv(out, col, Hkv, Nmax, n_rev, 8, mode, "WindowKV scores of the emulated sums");
    }
  }
}

TEST_CASE("emulated compresskv_scores == cpu::head_subset_window_scores", "[emu][evict][window][compresskv]") {
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    run_compresskv<Half, Half>(2, 8, 2, 128, 8, 300, {1, 2, 5, 6}, 5, 0, true, 0, 41u);  // RG-18: heads 1, 2 -> KV 0
    run_compresskv<float, BFloat16>(1, 8, 8, 64, 8, 200, {3}, 5, 0, false, 64, 42u);    // MHA, one head, 64-key splits
    run_compresskv<BFloat16, BFloat16>(2, 32, 4, 64, 16, 260, {31, 0, 9, 8, 17}, 7, 1, true, 0, 43u);  // any order, maxpool
    run_compresskv<Half, Half>(1, 16, 1, 64, 8, 64, {0, 15}, 1, 0, true, 0, 44u);       // MQA (G 16), kernel 1
  }
}

TEST_CASE("emulated window scores: bad arguments get the host checks' Status, nothing is launched", "[emu][evict][window]") {
  const int B = 1, Hq = 4, Hkv = 2, D = 64, w = 4, Nmax = 100;
  const Case<float, Half> c(B, Hq, Hkv, D, w, Nmax, true, 51u);
  const std::vector<float> sentinel(static_cast<std::size_t>(B) * Hkv * Nmax, kSentinel);
  std::vector<float> col = sentinel, out = sentinel;
  const auto good = memattn_test::window_params(c, c.q.data(), c.qpos.data(), c.k.data(), c.kpos.data(), c.lens.data(), col.data(), 0.125f, 0);
  auto expect = [&](const mk::WindowColsumParams<float, Half>& p, Status want, const char* what, int split_keys = 64) {
    INFO(what);
    CHECK(emulated_colsum(p, split_keys) == want);
  };
  auto p = good;
  p.q = nullptr;
  expect(p, Status::kErrorNullPointer, "null q");
  p = good, p.col = nullptr;
  expect(p, Status::kErrorNullPointer, "null col");
  p = good, p.head_dim = 60;
  expect(p, Status::kErrorUnsupportedHeadDim, "head_dim 60");
  p = good, p.q_heads = 5;
  expect(p, Status::kErrorGqaRatio, "5 query heads on 2 KV heads");
  p = good, p.q_heads = 18;
  expect(p, Status::kErrorGqaRatio, "G 9 > 8");
  p = good, p.window = 513;
  expect(p, Status::kErrorInvalidShape, "w * G > 1024");
  p = good, p.q = c.q.data() + 1;
  expect(p, Status::kErrorInvalidStride, "misaligned q");
  p = good, p.k_stride[2] = D + 1;
  expect(p, Status::kErrorInvalidStride, "key rows not 16-byte aligned");
  p = good, p.scale = std::numeric_limits<float>::quiet_NaN();
  expect(p, Status::kErrorInvalidArgument, "NaN scale");
  p = good, p.reduce = 3;
  expect(p, Status::kErrorInvalidArgument, "reduce 3");
  expect(good, Status::kErrorInvalidArgument, "negative split_keys", -1);
  CHECK(col == sentinel);
  // A workspace one byte short is refused by the carving the wrappers check.
  memattn::Workspace sizing;
  mk::WindowPlan pl;
  REQUIRE(wd::plan(good, mk::WindowHeads{}, 64, kSms, sizing, &pl) == Status::kSuccess);
  HostWs ws(sizing.required());
  memattn::Workspace shortw(ws.data(), ws.bytes - 1);
  REQUIRE(wd::plan(good, mk::WindowHeads{}, 64, kSms, shortw, &pl) == Status::kSuccess);
  CHECK(shortw.status() == Status::kErrorWorkspaceTooSmall);

  mk::WindowPoolParams pp;
  pp.in = col.data(), pp.in_stride[0] = Hkv * Nmax, pp.in_stride[1] = Nmax;
  pp.out = out.data(), pp.out_stride[0] = Hkv * Nmax, pp.out_stride[1] = Nmax;
  pp.count = c.lens.data(), pp.batch = B, pp.units = Hkv, pp.max_len = Nmax, pp.kernel = 4;
  CHECK(emulated_pool(pp) == Status::kErrorInvalidArgument);  // even kernel
  pp.kernel = 5, pp.out = col.data();
  CHECK(emulated_pool(pp) == Status::kErrorInvalidArgument);  // in place
  const std::vector<std::int32_t> n_rev = {Nmax};
  mk::WindowKvParams kp = windowkv_params(col, Hkv, Nmax, n_rev, out, 0, 0);
  CHECK(emulated_windowkv(kp) == Status::kErrorInvalidArgument);  // R 0
  const std::vector<std::int32_t> repeated = {3, 3};
  mc::CompressKvScoreArgs a;
  a.heads = repeated.data(), a.n_heads = 2, a.n_cand = c.lens.data(), a.out = out.data(), a.out_stride = Nmax;
  CHECK(emulated_compresskv(good, a, 64) == Status::kErrorInvalidArgument);
  CHECK(out == sentinel);
}
