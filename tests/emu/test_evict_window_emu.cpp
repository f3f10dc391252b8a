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

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn_test::Case;
using memattn_test::check_close;
using memattn_test::check_equal;
using memattn_test::dtype_id;
using memattn_test::kSentinel;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;
namespace wd = memattn::cuda::window_detail;

constexpr int kSms = 132;  // the plan's SM count (an H100 / H200)

// The launcher of the wrappers' launch sequences, on the emulator.
const auto emu_launch = [](auto kernel, dim3 grid, dim3 block, int smem, const auto&... args) {
  memattn_emu::launch(grid, block, static_cast<std::size_t>(smem), [&] { decltype(kernel)::kernel(args...); });
  return Status::kSuccess;
};

// A workspace of `bytes` at a kWorkspaceAlign-aligned base (as cudaMalloc's), 0xFF: NaN floats.
struct HostWs {
  std::vector<unsigned char> buf;
  std::size_t bytes;
  explicit HostWs(std::size_t n) : buf(n + memattn::kWorkspaceAlign, 0xFF), bytes(n) {}
  void* data() {
    const std::size_t a = memattn::kWorkspaceAlign;
    return buf.data() + (a - reinterpret_cast<std::uintptr_t>(buf.data()) % a) % a;
  }
};

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

int touched_beyond(const float* row, int from, int to) {
  int n = 0;
  for (int j = from; j < to; ++j) n += row[j] != kSentinel;
  return n;
}

// Pooling of every segment's column sums over [0, n_cand) with zero fill up to len: bit-identical
// on the CPU's sums, within the tolerance on the emulated ones.
void check_pool(int B, int Hkv, int Nmax, const std::vector<std::int32_t>& lens, const std::vector<float>& cpu_col,
                const std::vector<float>& emu_col, unsigned seed) {
  std::mt19937 rng(seed);
  const int S = B * Hkv;
  std::vector<std::int32_t> cand(static_cast<std::size_t>(S));
  for (int s = 0; s < S; ++s) {
    const int n = lens[static_cast<std::size_t>(s)];
    const int pick = static_cast<int>(rng() % 4);
    cand[static_cast<std::size_t>(s)] = pick == 0 ? n : pick == 1 ? 0 : static_cast<int>(rng() % static_cast<unsigned>(n + 1));
  }
  for (int kernel : {1, 3, 5, 7})
    for (int pool = 0; pool < 2; ++pool)
      for (int pad = 0; pad < 2; ++pad)
        for (int src = 0; src < 2; ++src) {
          INFO("kernel " << kernel << " pool " << pool << " pad " << pad << " src " << (src ? "emulated" : "cpu"));
          std::vector<float> out(static_cast<std::size_t>(S) * Nmax, kSentinel);
          mk::WindowPoolParams pp;
          pp.in = src ? emu_col.data() : cpu_col.data();
          pp.in_stride[0] = static_cast<std::int64_t>(Hkv) * Nmax;
          pp.in_stride[1] = Nmax;
          pp.out = out.data();
          pp.out_stride[0] = static_cast<std::int64_t>(Hkv) * Nmax;
          pp.out_stride[1] = Nmax;
          pp.count = cand.data();
          pp.lens = lens.data();
          pp.batch = B, pp.units = Hkv, pp.max_len = Nmax;
          pp.kernel = kernel, pp.pool = pool, pp.count_include_pad = pad != 0;
          REQUIRE(emulated_pool(pp) == Status::kSuccess);
          for (int s = 0; s < S; ++s) {
            const int n = cand[static_cast<std::size_t>(s)], L = lens[static_cast<std::size_t>(s)];
            std::vector<float> ref(static_cast<std::size_t>(L), 0.f);
            REQUIRE(cpu_pool_scores(cpu_col.data() + static_cast<std::size_t>(s) * Nmax, n, kernel, pool, pad != 0, ref.data()));
            const float* o = out.data() + static_cast<std::size_t>(s) * Nmax;
            if (src == 0) check_equal(o, ref.data(), L, "pool of the CPU column sums");
            else check_close(o, ref.data(), L, "pool of the emulated column sums");
            CHECK(touched_beyond(o, L, Nmax) == 0);
          }
        }
}

// Column sums of case (B, Hq, Hkv, D, w, Nmax) for every GQA reduction in the four pass-1 modes
// (automatic splits, 64-key splits, one split, external LSE), vs the CPU and the fp64 oracle; then
// the pooling of the mean-reduced sums.
template <class TQ, class TK>
void run_colsum(int B, int Hq, int Hkv, int D, int w, int Nmax, unsigned seed) {
  INFO("B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " w " << w << " Nmax " << Nmax << " TQ " << dtype_id<TQ>()
            << " TK " << dtype_id<TK>() << " reversed " << memattn_emu::reverse_ctas());
  const Case<TQ, TK> c(B, Hq, Hkv, D, w, Nmax, false, seed);
  const int G = Hq / Hkv, S = B * Hkv;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  // fp64 oracle per segment (independent of the reduction) and its LSE as an external input
  std::vector<float> lse(static_cast<std::size_t>(B) * w * Hq, 0.f);
  std::vector<std::vector<double>> per(static_cast<std::size_t>(S));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h) {
      std::vector<double> ol;
      memattn_test::oracle(c, b, h, scale, &ol, &per[static_cast<std::size_t>(b) * Hkv + h]);
      for (int i = 0; i < w; ++i)
        for (int g = 0; g < G; ++g)
          lse[(static_cast<std::size_t>(b) * w + i) * Hq + h * G + g] = static_cast<float>(ol[static_cast<std::size_t>(i) * G + g]);
    }
  const int tiles = (Nmax + mk::kWindowTile - 1) / mk::kWindowTile;
  for (int reduce = 0; reduce < 3; ++reduce) {
    INFO("reduce " << reduce);
    std::vector<float> ref(static_cast<std::size_t>(S) * Nmax, 0.f);
    std::vector<std::vector<float>> orc(static_cast<std::size_t>(S));
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < Hkv; ++h) {
        const std::size_t s = static_cast<std::size_t>(b) * Hkv + h;
        const std::vector<float> qg = c.group_q(b, h);
        REQUIRE(cpu_window_colsum(qg.data(), c.qpos.data() + static_cast<std::size_t>(b) * w, w, G, D, scale, c.keys(b, h),
                                  dtype_id<TK>(), c.kp(b, h), c.len(b, h), reduce, ref.data() + s * Nmax));
        orc[s] = memattn_test::oracle_reduce(per[s], G, reduce);
        check_close(ref.data() + s * Nmax, orc[s].data(), c.len(b, h), "CPU vs fp64 oracle");  // the tolerance is honest
      }
    std::vector<float> emu_col;
    for (int mode = 0; mode < 4; ++mode) {
      INFO("mode " << mode);
      std::vector<float> col(ref.size(), kSentinel);
      auto p = memattn_test::window_params(c, c.q.data(), c.qpos.data(), c.k.data(), c.kpos.data(), c.lens.data(), col.data(),
                                           scale, reduce);
      if (mode == 3) {
        p.lse = lse.data();
        p.lse_stride[0] = static_cast<std::int64_t>(w) * Hq;
        p.lse_stride[1] = Hq;
        p.lse_stride[2] = 1;
      }
      const int split_keys = mode == 1 ? 64 : mode == 2 ? Nmax : 0;
      int splits = -1;
      REQUIRE(emulated_colsum(p, split_keys, &splits) == Status::kSuccess);
      if (mode == 0) CHECK(splits == (tiles + 3) / 4);  // few segments for 132 SMs: the minimum of 4 tiles per split
      else CHECK(splits == (mode == 1 ? tiles : mode == 2 ? 1 : 0));
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < Hkv; ++h) {
          INFO("segment b " << b << " h " << h << " len " << c.len(b, h));
          const std::size_t s = static_cast<std::size_t>(b) * Hkv + h;
          const int n = c.len(b, h);
          check_close(col.data() + s * Nmax, ref.data() + s * Nmax, n, "emulated vs CPU column sums");
          check_close(col.data() + s * Nmax, orc[s].data(), n, "emulated vs fp64 oracle column sums");
          CHECK(touched_beyond(col.data() + s * Nmax, n, Nmax) == 0);
        }
      if (mode == 1) emu_col = col;
    }
    if (reduce == 0) {
      for (float& x : emu_col)
        if (x == kSentinel) x = 0.f;
      check_pool(B, Hkv, Nmax, c.lens, ref, emu_col, seed + 7u);
    }
  }
}

template <class TQ, class TK>
void run_compresskv(int B, int Hq, int Hkv, int D, int w, int Nmax, const std::vector<std::int32_t>& heads, int kernel, int pool,
                    bool pad, int split_keys, unsigned seed) {
  INFO("Hq " << Hq << " Hkv " << Hkv << " D " << D << " w " << w << " heads " << heads.size() << " kernel " << kernel << " pool "
             << pool << " pad " << pad << " split_keys " << split_keys << " reversed " << memattn_emu::reverse_ctas());
  const Case<TQ, TK> c(B, Hq, Hkv, D, w, Nmax, true, seed);
  const int G = Hq / Hkv, n_heads = static_cast<int>(heads.size());
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<std::int32_t> n_cand(static_cast<std::size_t>(B)), lens_b(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b) {
    lens_b[static_cast<std::size_t>(b)] = c.len(b, 0);
    n_cand[static_cast<std::size_t>(b)] = std::max(0, c.len(b, 0) - w);
  }
  std::vector<float> out(static_cast<std::size_t>(B) * Nmax, kSentinel);
  const auto p = memattn_test::window_params(c, c.q.data(), c.qpos.data(), c.k.data(), c.kpos.data(), c.lens.data(),
                                             static_cast<float*>(nullptr), scale, 0);
  mc::CompressKvScoreArgs a;
  a.heads = heads.data();
  a.n_heads = n_heads;
  a.kernel = kernel, a.pool = pool, a.count_include_pad = pad;
  a.n_cand = n_cand.data();
  a.lens = lens_b.data();
  a.out = out.data();
  a.out_stride = Nmax;
  REQUIRE(emulated_compresskv(p, a, split_keys) == Status::kSuccess);
  for (int b = 0; b < B; ++b) {
    INFO("sequence " << b);
    const int N = c.len(b, 0);
    // the layer's keys [Hkv][N][D] with the shared positions, as the CPU cache holds them
    std::vector<float> keys(static_cast<std::size_t>(Hkv) * N * D);
    for (int h = 0; h < Hkv; ++h) std::copy_n(c.keys(b, h), static_cast<std::size_t>(N) * D, keys.data() + static_cast<std::size_t>(h) * N * D);
    std::vector<float> wq(static_cast<std::size_t>(w) * Hq * D);
    std::copy_n(c.qrow(b, 0, 0), wq.size(), wq.data());
    const std::int32_t* wpos = c.qpos.data() + static_cast<std::size_t>(b) * w;
    std::vector<float> ref(static_cast<std::size_t>(N));
    REQUIRE(cpu_compresskv_scores(wq.data(), wpos, w, Hq, Hkv, D, keys.data(), dtype_id<TK>(), c.kp(b, 0), N,
                                  n_cand[static_cast<std::size_t>(b)], heads.data(), n_heads, kernel, pool, pad, ref.data()));
    check_close(out.data() + static_cast<std::size_t>(b) * Nmax, ref.data(), N, "CompressKV scores");
    CHECK(touched_beyond(out.data() + static_cast<std::size_t>(b) * Nmax, N, Nmax) == 0);
    // The pool-and-mean stage on the CPU's per-head sums is bit-identical to the CPU's scores.
    std::vector<float> percol(static_cast<std::size_t>(n_heads) * N);
    for (int s = 0; s < n_heads; ++s) {
      std::vector<float> q1(static_cast<std::size_t>(w) * D);
      for (int i = 0; i < w; ++i) std::copy_n(c.qrow(b, i, heads[static_cast<std::size_t>(s)]), D, q1.data() + static_cast<std::size_t>(i) * D);
      REQUIRE(cpu_window_colsum(q1.data(), wpos, w, 1, D, scale, c.keys(b, heads[static_cast<std::size_t>(s)] / G), dtype_id<TK>(),
                                c.kp(b, 0), N, 2, percol.data() + static_cast<std::size_t>(s) * N));
    }
    std::vector<float> pooled(static_cast<std::size_t>(N), kSentinel);
    const std::int32_t one_cand = n_cand[static_cast<std::size_t>(b)], one_len = N;
    mk::WindowPoolParams pp;
    pp.in = percol.data();
    pp.in_stride[0] = static_cast<std::int64_t>(n_heads) * N;
    pp.in_stride[1] = N;
    pp.rows_per_unit = n_heads;
    pp.out = pooled.data();
    pp.count = &one_cand;
    pp.lens = &one_len;
    pp.batch = 1, pp.units = 1, pp.max_len = N;
    pp.kernel = kernel, pp.pool = pool, pp.count_include_pad = pad;
    REQUIRE(emulated_pool(pp) == Status::kSuccess);
    check_equal(pooled.data(), ref.data(), N, "CompressKV pool-and-mean stage");
  }
}

mk::WindowKvParams windowkv_params(const std::vector<float>& col, int heads, int N, const std::vector<std::int32_t>& n_rev,
                                   std::vector<float>& out, int block, int mode) {
  mk::WindowKvParams p;
  p.col = col.data();
  p.col_stride[0] = static_cast<std::int64_t>(heads) * N;
  p.col_stride[1] = N;
  p.heads = heads;
  p.n_rev = n_rev.data();
  p.out = out.data();
  p.out_stride = N;
  p.batch = static_cast<int>(n_rev.size()), p.max_rev = N, p.block = block, p.mode = mode;
  return p;
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
  std::mt19937 rng(21u);
  std::uniform_int_distribution<int> level(0, 5);
  std::normal_distribution<float> nd(0.f, 1.f);
  int round = 0;
  for (int heads : {1, 3, 8})
    for (int block : {1, 3, 8})
      for (int mode = 0; mode < 2; ++mode) {
        memattn_emu::ReverseCtas order(round++ % 2 == 1);
        INFO("heads " << heads << " R " << block << " mode " << mode << " reversed " << memattn_emu::reverse_ctas());
        const int B = 3, N = 301;
        const std::vector<std::int32_t> n_rev = {N, 0, 250};
        std::vector<float> col(static_cast<std::size_t>(B) * heads * N);
        // coarse levels in half the sequences: many ties (tie-breaking by index must match)
        for (std::size_t x = 0; x < col.size(); ++x)
          col[x] = (x / (static_cast<std::size_t>(heads) * N)) % 2 == 0 ? 0.25f * static_cast<float>(level(rng)) : std::exp(nd(rng));
        std::vector<float> out(static_cast<std::size_t>(B) * N, kSentinel);
        REQUIRE(emulated_windowkv(windowkv_params(col, heads, N, n_rev, out, block, mode)) == Status::kSuccess);
        for (int b = 0; b < B; ++b) {
          INFO("sequence " << b << " n_rev " << n_rev[static_cast<std::size_t>(b)]);
          std::vector<float> ref(static_cast<std::size_t>(N), kSentinel);
          cpu_windowkv_scores(col.data() + static_cast<std::size_t>(b) * heads * N, heads, N, n_rev[static_cast<std::size_t>(b)], block,
                              mode, ref.data());
          check_equal(out.data() + static_cast<std::size_t>(b) * N, ref.data(), N, "WindowKV scores (sentinel beyond n_rev)");
        }
      }
}

TEST_CASE("emulated windowkv_scores on emulated column sums: the WindowKV pipeline end to end", "[emu][evict][window][windowkv]") {
  // Every KV head of a sequence holds the same slots (a layer group's shared selection).
  const int B = 2, Hq = 8, Hkv = 4, D = 128, w = 16, Nmax = 300;
  const Case<Half, Half> c(B, Hq, Hkv, D, w, Nmax, true, 31u);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<std::int32_t> n_rev(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b) n_rev[static_cast<std::size_t>(b)] = std::max(0, c.len(b, 0) - w);
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
      for (int b = 0; b < B; ++b) {
        std::vector<float> ref(static_cast<std::size_t>(Nmax), kSentinel);
        cpu_windowkv_scores(col.data() + static_cast<std::size_t>(b) * Hkv * Nmax, Hkv, Nmax, n_rev[static_cast<std::size_t>(b)], 8, mode,
                            ref.data());
        check_equal(out.data() + static_cast<std::size_t>(b) * Nmax, ref.data(), Nmax, "WindowKV scores of the emulated sums");
      }
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
