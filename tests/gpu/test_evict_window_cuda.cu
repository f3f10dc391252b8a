// Observation-window eviction scores on the GPU (spec eviction.md §4.1, §3.4, §3.10, §3.11) vs the
// CPU (host-compiled bridge) and an fp64 oracle:
//  * window_colsum: ragged segments (per-head subsets of each sequence's tokens, positions with
//    gaps, lengths 1 .. a few thousand, not multiples of the 64-key tile), G in {1, 3, 4, 8},
//    D in {64, 128, 256}, w in {1 .. 64}, fp32 / Half / BFloat16 queries and keys, all three GQA
//    reductions, pass 1 with automatic, 64-key and single splits, and with an external LSE.
//    Column sums: |gpu - ref| <= 2e-4 |ref| + 1e-6 max|ref| (fp32 logits summed in another order
//    than Eigen's: ~1e-6 relative per term); slots beyond a segment's length are never written and
//    keys / positions there (NaN, position -5) are never read.
//  * window_pool: bit-identical to cpu::pool_scores on the CPU's column sums (avg/max, both pad
//    modes, kernels 1..7, zero fill), within the tolerance end to end.
//  * windowkv_scores: bit-identical to WindowBlock::unit_scores (both modes, R in {1, 3, 8}, ties).
//  * compresskv_scores: vs cpu::head_subset_window_scores (tolerance), its pool-and-mean stage
//    bit-identical.
//  * bad arguments: the documented Status, nothing written.
// Exits 77 without a device (gpu_test_main.cpp).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/window_cases.hpp"
#include "evict_window_cpu_bridge.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/cuda/evict_window.cuh"

using namespace memattn;
namespace mk = memattn::kernels;
using memattn_test::Case;
using memattn_test::dtype_id;
using memattn_test::kSentinel;

namespace {

template <class T>
struct DevBuf {
  T* p = nullptr;
  std::size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(std::size_t count) : n(count) { REQUIRE(cudaMalloc(&p, std::max<std::size_t>(1, n) * sizeof(T)) == cudaSuccess); }
  explicit DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { upload(h); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  void upload(const std::vector<T>& h) {
    REQUIRE(h.size() == n);
    if (n) REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    if (n) REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};

template <class TQ, class TK>
mk::WindowColsumParams<TQ, TK> make_params(const Case<TQ, TK>& c, const DevBuf<TQ>& q, const DevBuf<std::int32_t>& qpos,
                                           const DevBuf<TK>& k, const DevBuf<std::int32_t>& kpos,
                                           const DevBuf<std::int32_t>& lens, float* col, float scale, int reduce) {
  return memattn_test::window_params(c, q.p, qpos.p, k.p, kpos.p, lens.p, col, scale, reduce);
}

// Pooling of every segment's column sums over [0, n_cand) with zero fill up to len: GPU on the
// CPU's sums (bit-identical) and on its own (tolerance).
void check_pool(int B, int Hkv, int Nmax, const std::vector<std::int32_t>& lens, const std::vector<float>& cpu_col,
                const std::vector<float>& gpu_col, unsigned seed) {
  const std::vector<std::int32_t> cand = memattn_test::pool_counts(lens, seed);
  DevBuf<std::int32_t> d_cand(cand), d_lens(lens);
  DevBuf<float> d_in(cpu_col), d_in_gpu(gpu_col);
  DevBuf<float> d_out(static_cast<std::size_t>(B) * Hkv * Nmax);
  memattn_test::check_pool(B, Hkv, Nmax, lens, cand, cpu_col, "GPU", [&](mk::WindowPoolParams pp, int src) {
    d_out.upload(std::vector<float>(d_out.n, kSentinel));
    pp.in = src ? d_in_gpu.p : d_in.p;
    pp.out = d_out.p;
    pp.count = d_cand.p;
    pp.lens = d_lens.p;
    REQUIRE(cuda::window_pool(pp, nullptr) == Status::kSuccess);
    return d_out.download();
  });
}

template <class TQ, class TK>
void run_colsum(int B, int Hq, int Hkv, int D, int w, int Nmax, unsigned seed) {
  INFO("B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " w " << w << " Nmax " << Nmax << " TQ "
            << dtype_id<TQ>() << " TK " << dtype_id<TK>());
  const Case<TQ, TK> c(B, Hq, Hkv, D, w, Nmax, false, seed);
  const int S = B * Hkv;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  DevBuf<TQ> d_q(c.q);
  DevBuf<std::int32_t> d_qpos(c.qpos), d_kpos(c.kpos), d_lens(c.lens);
  DevBuf<TK> d_k(c.k);
  DevBuf<float> d_col(static_cast<std::size_t>(S) * Nmax);
  // fp64 oracle per segment (independent of the reduction) and its LSE as an external input
  std::vector<float> lse;
  std::vector<std::vector<double>> per;
  memattn_test::oracle_all(c, scale, &lse, &per);
  DevBuf<float> d_lse(lse);
  for (int reduce = 0; reduce < 3; ++reduce) {
    INFO("reduce " << reduce);
    std::vector<float> ref;
    std::vector<std::vector<float>> orc;
    memattn_test::colsum_references(c, per, scale, reduce, &ref, &orc);  // and the CPU vs the oracle
    std::vector<float> gpu_col;
    // mode 0: automatic splits; 1: 64-key splits (many partials); 2: one split; 3: external LSE
    for (int mode = 0; mode < 4; ++mode) {
      INFO("mode " << mode);
      std::vector<float> col(ref.size(), kSentinel);
      d_col.upload(col);
      auto p = make_params(c, d_q, d_qpos, d_k, d_kpos, d_lens, d_col.p, scale, reduce);
      if (mode == 3) memattn_test::use_external_lse(&p, d_lse.p);
      const int split_keys = mode == 1 ? 64 : mode == 2 ? Nmax : 0;
      std::size_t bytes = 0;
      REQUIRE(cuda::window_colsum_workspace_size(p, &bytes, split_keys) == Status::kSuccess);
      if (mode == 3) CHECK(bytes == 0);
      DevBuf<unsigned char> ws(bytes);
      if (bytes > 0) REQUIRE(cuda::window_colsum(p, ws.p, bytes - 1, nullptr, split_keys) == Status::kErrorWorkspaceTooSmall);
      REQUIRE(cuda::window_colsum(p, bytes ? ws.p : nullptr, bytes, nullptr, split_keys) == Status::kSuccess);
      col = d_col.download();
      memattn_test::check_colsums(c, col, ref, orc, "GPU");
      if (mode == 1) gpu_col = col;
    }
    if (reduce == 0) {
      memattn_test::zero_sentinels(&gpu_col);
      check_pool(B, Hkv, Nmax, c.lens, ref, gpu_col, seed + 7u);
    }
  }
}

}  // namespace

TEST_CASE("window_colsum matches cpu::window_colsum and an fp64 oracle; pooling matches cpu::pool_scores", "[evict][window]") {
  run_colsum<float, Half>(2, 8, 2, 128, 32, 1000, 11u);        // G 4, two query chunks
  run_colsum<Half, Half>(3, 8, 1, 64, 64, 2500, 12u);          // G 8, w 64: 512 rows, eight chunks
  run_colsum<BFloat16, BFloat16>(2, 4, 4, 128, 8, 3000, 13u);  // G 1
  run_colsum<float, BFloat16>(1, 6, 2, 64, 21, 777, 14u);      // G 3: chunks of 21 tokens (63 rows)
  run_colsum<float, float>(2, 8, 1, 256, 16, 300, 15u);        // D 256 (> 48 KiB of shared memory)
  run_colsum<Half, BFloat16>(2, 2, 2, 64, 1, 65, 16u);         // w 1, one key past a tile
  run_colsum<BFloat16, Half>(1, 16, 2, 128, 40, 129, 17u);     // G 8, w 40: 320 rows, last chunk partial
  run_colsum<Half, Half>(2, 4, 1, 64, 48, 40, 18u);            // w > segment lengths
}

TEST_CASE("windowkv_scores are bit-identical to WindowBlock::unit_scores", "[evict][window][windowkv]") {
  memattn_test::WindowKvColumns gen;
  for (int heads : {1, 3, 8})
    for (int block : {1, 3, 8})
      for (int mode = 0; mode < 2; ++mode) {
        INFO("heads " << heads << " R " << block << " mode " << mode);
        const int B = 3, N = 301;
        const std::vector<std::int32_t> n_rev = {N, 0, 250};
        const std::vector<float> col = gen.next(B, heads, N);
        DevBuf<float> d_col(col);
        DevBuf<std::int32_t> d_rev(n_rev);
        DevBuf<float> d_out(static_cast<std::size_t>(B) * N);
        d_out.upload(std::vector<float>(static_cast<std::size_t>(B) * N, kSentinel));
        const mk::WindowKvParams p = memattn_test::windowkv_params(d_col.p, heads, N, d_rev.p, B, d_out.p, block, mode);
        std::size_t bytes = 0;
        REQUIRE(cuda::windowkv_scores_workspace_size(p, &bytes) == Status::kSuccess);
        DevBuf<unsigned char> ws(bytes);
        REQUIRE(cuda::windowkv_scores(p, ws.p, bytes, nullptr) == Status::kSuccess);
        memattn_test::check_windowkv(d_out.download(), col, heads, N, n_rev, block, mode, "WindowKV scores (sentinel beyond n_rev)");
      }
}

TEST_CASE("windowkv_scores on GPU column sums: the WindowKV pipeline end to end", "[evict][window][windowkv]") {
  // Every KV head of a sequence holds the same slots (a layer group's shared selection).
  const int B = 2, Hq = 8, Hkv = 4, D = 128, w = 16, Nmax = 700;
  const Case<Half, Half> c(B, Hq, Hkv, D, w, Nmax, true, 31u);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  DevBuf<Half> d_q(c.q), d_k(c.k);
  DevBuf<std::int32_t> d_qpos(c.qpos), d_kpos(c.kpos), d_lens(c.lens);
  DevBuf<float> d_col(static_cast<std::size_t>(B) * Hkv * Nmax);
  auto p = make_params(c, d_q, d_qpos, d_k, d_kpos, d_lens, d_col.p, scale, 0);
  std::size_t bytes = 0;
  REQUIRE(cuda::window_colsum_workspace_size(p, &bytes) == Status::kSuccess);
  DevBuf<unsigned char> ws(bytes);
  REQUIRE(cuda::window_colsum(p, ws.p, bytes, nullptr) == Status::kSuccess);
  const std::vector<std::int32_t> n_rev = memattn_test::candidate_counts(c);
  DevBuf<std::int32_t> d_rev(n_rev);
  DevBuf<float> d_out(static_cast<std::size_t>(B) * Nmax);
  for (int mode = 0; mode < 2; ++mode) {
    INFO("mode " << mode);
    d_out.upload(std::vector<float>(static_cast<std::size_t>(B) * Nmax, kSentinel));
    const mk::WindowKvParams kp = memattn_test::windowkv_params(d_col.p, Hkv, Nmax, d_rev.p, B, d_out.p, 8, mode);
    std::size_t kb = 0;
    REQUIRE(cuda::windowkv_scores_workspace_size(kp, &kb) == Status::kSuccess);
    DevBuf<unsigned char> kws(kb);
    REQUIRE(cuda::windowkv_scores(kp, kws.p, kb, nullptr) == Status::kSuccess);
    memattn_test::check_windowkv(d_out.download(), d_col.download(), Hkv, Nmax, n_rev, 8, mode, "WindowKV scores of the GPU sums");
  }
}

namespace {

template <class TQ, class TK>
void run_compresskv(int B, int Hq, int Hkv, int D, int w, int Nmax, const std::vector<std::int32_t>& heads, int kernel,
                    int pool, bool pad, unsigned seed) {
  INFO("Hq " << Hq << " Hkv " << Hkv << " D " << D << " w " << w << " heads " << heads.size() << " kernel " << kernel
             << " pool " << pool << " pad " << pad);
  const Case<TQ, TK> c(B, Hq, Hkv, D, w, Nmax, true, seed);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<std::int32_t> lens_b;
  const std::vector<std::int32_t> n_cand = memattn_test::candidate_counts(c, &lens_b);
  DevBuf<TQ> d_q(c.q);
  DevBuf<TK> d_k(c.k);
  DevBuf<std::int32_t> d_qpos(c.qpos), d_kpos(c.kpos), d_lens(c.lens), d_cand(n_cand), d_lens_b(lens_b);
  DevBuf<float> d_out(static_cast<std::size_t>(B) * Nmax);
  d_out.upload(std::vector<float>(static_cast<std::size_t>(B) * Nmax, kSentinel));
  auto p = make_params(c, d_q, d_qpos, d_k, d_kpos, d_lens, nullptr, scale, 0);
  cuda::CompressKvScoreArgs a;
  a.heads = heads.data();
  a.n_heads = static_cast<int>(heads.size());
  a.kernel = kernel, a.pool = pool, a.count_include_pad = pad;
  a.n_cand = d_cand.p;
  a.lens = d_lens_b.p;
  a.out = d_out.p;
  a.out_stride = Nmax;
  std::size_t bytes = 0;
  REQUIRE(cuda::compresskv_scores_workspace_size(p, a, &bytes) == Status::kSuccess);
  DevBuf<unsigned char> ws(bytes);
  REQUIRE(cuda::compresskv_scores(p, a, ws.p, bytes - 4, nullptr) == Status::kErrorWorkspaceTooSmall);
  REQUIRE(cuda::compresskv_scores(p, a, ws.p, bytes, nullptr) == Status::kSuccess);
  memattn_test::check_compresskv(c, heads, kernel, pool, pad, scale, n_cand, d_out.download(),
                                 [&](mk::WindowPoolParams pp, const std::vector<float>& percol, std::int32_t count, std::int32_t len) {
                                   DevBuf<float> d_in(percol), d_pool(static_cast<std::size_t>(len));
                                   DevBuf<std::int32_t> d_c1(std::vector<std::int32_t>{count}), d_l1(std::vector<std::int32_t>{len});
                                   pp.in = d_in.p;
                                   pp.out = d_pool.p;
                                   pp.count = d_c1.p;
                                   pp.lens = d_l1.p;
                                   REQUIRE(cuda::window_pool(pp, nullptr) == Status::kSuccess);
                                   return d_pool.download();
                                 });
}

}  // namespace

TEST_CASE("compresskv_scores match cpu::head_subset_window_scores", "[evict][window][compresskv]") {
  run_compresskv<Half, Half>(2, 8, 2, 128, 8, 900, {1, 2, 5, 6}, 5, 0, true, 41u);      // RG-18: heads 1, 2 -> KV 0
  run_compresskv<float, BFloat16>(1, 8, 8, 64, 8, 300, {3}, 5, 0, false, 42u);         // MHA, one head
  run_compresskv<BFloat16, BFloat16>(2, 32, 4, 128, 16, 1500, {31, 0, 9, 8, 17}, 7, 1, true, 43u);  // any order, maxpool
  run_compresskv<Half, Half>(1, 16, 1, 64, 8, 64, {0, 15}, 1, 0, true, 44u);            // MQA (G 16), kernel 1
}

TEST_CASE("window scores: bad arguments get a Status and nothing is written", "[evict][window]") {
  const int B = 1, Hq = 4, Hkv = 2, D = 64, w = 4, Nmax = 100;
  const Case<float, Half> c(B, Hq, Hkv, D, w, Nmax, true, 51u);
  DevBuf<float> d_q(c.q);
  DevBuf<Half> d_k(c.k);
  DevBuf<std::int32_t> d_qpos(c.qpos), d_kpos(c.kpos), d_lens(c.lens);
  const std::vector<float> sentinel(static_cast<std::size_t>(B) * Hkv * Nmax, kSentinel);
  DevBuf<float> d_col(sentinel);
  const auto good = make_params(c, d_q, d_qpos, d_k, d_kpos, d_lens, d_col.p, 0.125f, 0);
  std::size_t bytes = 0;
  REQUIRE(cuda::window_colsum_workspace_size(good, &bytes, 64) == Status::kSuccess);
  REQUIRE(bytes > 0);
  DevBuf<unsigned char> ws(bytes + 512);
  auto expect = [&](const mk::WindowColsumParams<float, Half>& p, Status want, const char* what, void* wsp = nullptr,
                    std::size_t wsb = 0, int split_keys = 64) {
    INFO(what);
    CHECK(cuda::window_colsum(p, wsp ? wsp : ws.p, wsp ? wsb : bytes, nullptr, split_keys) == want);
  };
  auto p = good;
  p.q = nullptr;
  expect(p, Status::kErrorNullPointer, "null q");
  p = good, p.kpos = nullptr;
  expect(p, Status::kErrorNullPointer, "null kpos");
  p = good, p.col = nullptr;
  expect(p, Status::kErrorNullPointer, "null col");
  p = good, p.head_dim = 60;
  expect(p, Status::kErrorUnsupportedHeadDim, "head_dim 60");
  p = good, p.head_dim = 264;
  expect(p, Status::kErrorUnsupportedHeadDim, "head_dim 264");
  p = good, p.q_heads = 5;
  expect(p, Status::kErrorGqaRatio, "5 query heads on 2 KV heads");
  p = good, p.q_heads = 18;
  expect(p, Status::kErrorGqaRatio, "G 9 > 8");
  p = good, p.window = 0;
  expect(p, Status::kErrorInvalidShape, "w 0");
  p = good, p.window = 513;
  expect(p, Status::kErrorInvalidShape, "w * G > 1024");
  p = good, p.batch = 0;
  expect(p, Status::kErrorInvalidShape, "batch 0");
  p = good, p.max_keys = 0;
  expect(p, Status::kErrorInvalidShape, "max_keys 0");
  p = good, p.q = d_q.p + 1;
  expect(p, Status::kErrorInvalidStride, "misaligned q");
  p = good, p.k_stride[2] = D + 1;
  expect(p, Status::kErrorInvalidStride, "key rows not 16-byte aligned");
  p = good, p.k_stride[2] = D / 2;
  expect(p, Status::kErrorInvalidStride, "key rows shorter than head_dim");
  p = good, p.kpos_stride[0] = -1;
  expect(p, Status::kErrorInvalidStride, "negative stride");
  p = good, p.scale = std::numeric_limits<float>::quiet_NaN();
  expect(p, Status::kErrorInvalidArgument, "NaN scale");
  p = good, p.reduce = 3;
  expect(p, Status::kErrorInvalidArgument, "reduce 3");
  expect(good, Status::kErrorWorkspaceTooSmall, "workspace too small", ws.p, bytes - 1);
  expect(good, Status::kErrorWorkspaceTooSmall, "misaligned workspace", ws.p + 4, bytes + 256);
  expect(good, Status::kErrorInvalidArgument, "negative split_keys", ws.p, bytes, -1);
  CHECK(cuda::window_colsum_workspace_size(good, nullptr) == Status::kErrorNullPointer);
  CHECK(d_col.download() == sentinel);

  // pooling
  DevBuf<float> d_out(sentinel);
  mk::WindowPoolParams pp;
  pp.in = d_col.p, pp.in_stride[0] = Hkv * Nmax, pp.in_stride[1] = Nmax;
  pp.out = d_out.p, pp.out_stride[0] = Hkv * Nmax, pp.out_stride[1] = Nmax;
  pp.count = d_lens.p, pp.batch = B, pp.units = Hkv, pp.max_len = Nmax, pp.kernel = 5;
  auto bad_pool = [&](mk::WindowPoolParams x, Status want, const char* what) {
    INFO(what);
    CHECK(cuda::window_pool(x, nullptr) == want);
  };
  auto x = pp;
  x.kernel = 4;
  bad_pool(x, Status::kErrorInvalidArgument, "even kernel");
  x = pp, x.kernel = 0;
  bad_pool(x, Status::kErrorInvalidArgument, "kernel 0");
  x = pp, x.pool = 2;
  bad_pool(x, Status::kErrorInvalidArgument, "pool 2");
  x = pp, x.out = d_col.p;
  bad_pool(x, Status::kErrorInvalidArgument, "in place");
  x = pp, x.count = nullptr;
  bad_pool(x, Status::kErrorNullPointer, "null count");
  x = pp, x.rows_per_unit = 0;
  bad_pool(x, Status::kErrorInvalidShape, "rows_per_unit 0");
  CHECK(d_out.download() == sentinel);

  // WindowKV
  mk::WindowKvParams kp;
  kp.col = d_col.p, kp.col_stride[0] = Hkv * Nmax, kp.col_stride[1] = Nmax, kp.heads = Hkv;
  kp.n_rev = d_lens.p, kp.out = d_out.p, kp.out_stride = Nmax, kp.batch = B, kp.max_rev = Nmax;
  auto bad_kv = [&](mk::WindowKvParams y, Status want, const char* what) {
    INFO(what);
    CHECK(cuda::windowkv_scores(y, ws.p, bytes + 512, nullptr) == want);
  };
  auto y = kp;
  y.block = 0;
  bad_kv(y, Status::kErrorInvalidArgument, "R 0");
  y = kp, y.mode = 2;
  bad_kv(y, Status::kErrorInvalidArgument, "mode 2");
  y = kp, y.heads = 0;
  bad_kv(y, Status::kErrorInvalidShape, "heads 0");
  y = kp, y.n_rev = nullptr;
  bad_kv(y, Status::kErrorNullPointer, "null n_rev");
  std::size_t kvb = 0;
  REQUIRE(cuda::windowkv_scores_workspace_size(kp, &kvb) == Status::kSuccess);
  CHECK(cuda::windowkv_scores(kp, ws.p, kvb - 1, nullptr) == Status::kErrorWorkspaceTooSmall);
  CHECK(d_out.download() == sentinel);

  // CompressKV
  const std::vector<std::int32_t> heads = {0, 3};
  cuda::CompressKvScoreArgs a;
  a.heads = heads.data(), a.n_heads = 2, a.n_cand = d_lens.p, a.out = d_out.p, a.out_stride = Nmax;
  auto bad_ckv = [&](const cuda::CompressKvScoreArgs& z, Status want, const char* what) {
    INFO(what);
    CHECK(cuda::compresskv_scores(good, z, ws.p, bytes + 512, nullptr, 64) == want);
  };
  const std::vector<std::int32_t> out_of_range = {0, 4}, repeated = {3, 3};
  auto z = a;
  z.heads = out_of_range.data();
  bad_ckv(z, Status::kErrorInvalidArgument, "head 4 of 4");
  z = a, z.heads = repeated.data();
  bad_ckv(z, Status::kErrorInvalidArgument, "repeated head");
  z = a, z.n_heads = 0;
  bad_ckv(z, Status::kErrorInvalidArgument, "no heads");
  z = a, z.n_heads = mk::kWindowMaxSelHeads + 1;
  bad_ckv(z, Status::kErrorInvalidArgument, "too many heads");
  z = a, z.heads = nullptr;
  bad_ckv(z, Status::kErrorNullPointer, "null heads");
  z = a, z.n_cand = nullptr;
  bad_ckv(z, Status::kErrorNullPointer, "null n_cand");
  z = a, z.kernel = 6;
  bad_ckv(z, Status::kErrorInvalidArgument, "even kernel");
  std::size_t cb = 0;
  REQUIRE(cuda::compresskv_scores_workspace_size(good, a, &cb, 64) == Status::kSuccess);
  CHECK(cuda::compresskv_scores(good, a, ws.p, cb - 1, nullptr, 64) == Status::kErrorWorkspaceTooSmall);
  CHECK(d_out.download() == sentinel);
  CHECK(cudaGetLastError() == cudaSuccess);
}
