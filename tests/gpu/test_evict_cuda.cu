// GPU token-eviction selection and compaction (issue 5) vs the CPU path: keep lists bit-identical
// to cpu::select_keep on random and adversarial scores (all equal, +-0, -inf, k' = 0, k' = N), and
// the out-of-place gather equal to cpu::compact_rows. Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/select_cases.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cuda/evict.cuh"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;
using memattn_gpu_test::download;

using namespace memattn;

TEST_CASE("evict_select on the GPU == cpu::select_keep (random, ties, adversarial), gather == compact_rows",
          "[evict][gpu]") {
  std::mt19937 rng(4321);
  for (int round = 0; round < 24; ++round) {
    // The last rounds: long segments (many radix passes per thread, 32-byte rows in 16-byte words).
    const bool longseg = round >= 20;
    const int S = longseg ? 1 + static_cast<int>(rng() % 3) : 1 + static_cast<int>(rng() % 40);
    std::int64_t stride = longseg ? 20000 + static_cast<std::int64_t>(rng() % 50000)
                                  : 1 + static_cast<std::int64_t>(rng() % 3000);
    // the 4-slots-per-thread select kernel in half the rounds, every score mode and long segments included
    if ((round + round / 4) % 2 == 0) stride = (stride + 3) / 4 * 4;
    const int mode = round % 4;
    const memattn_test::SelectCase sc = memattn_test::make_select_case(rng, S, stride, mode, false);
    const std::vector<float>& scores = sc.scores;
    const std::vector<std::int32_t>&pos = sc.pos, &len = sc.len, &budget = sc.budget, &tcur = sc.tcur;
    const evict::Protection pr = sc.protect;
    const evict::TieBreak tie = sc.tie;
    float* d_scores = upload(scores);
    std::int32_t *d_pos = upload(pos), *d_len = upload(len), *d_budget = upload(budget), *d_tcur = upload(tcur);
    std::int32_t *d_keep = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S * stride), -1)),
                 *d_count = upload(std::vector<std::int32_t>(S, -2)), *d_err = upload(std::vector<std::int32_t>(1, 0));
    kernels::EvictSelectParams p;
    p.scores = d_scores;
    p.pos = d_pos;
    p.len = d_len;
    p.budget = d_budget;
    p.t_cur = d_tcur;
    p.stride = stride;
    p.segments = S;
    p.protect = pr;
    p.tie = tie;
    p.keep = d_keep;
    p.keep_count = d_count;
    p.error = d_err;
    REQUIRE(memattn::cuda::evict_select_vec4(p) == (stride % 4 == 0));  // both kernels are covered
    REQUIRE(memattn::cuda::evict_select(p, nullptr) == Status::kSuccess);
    // gather positions (stand-in for K/V/state rows) out of place
    std::int32_t* d_dst = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S * stride), -1));
    REQUIRE(memattn::cuda::evict_gather(static_cast<const std::int32_t*>(d_pos), stride, d_dst, stride, 1, S, d_keep, stride,
                               d_count, nullptr) == Status::kSuccess);
    // hole filling (slot replacement) in place on a copy of the positions: rows of 3 elements
    // (position, -position, 7) so that a row moves as a whole
    std::vector<std::int32_t> rows3(static_cast<std::size_t>(S * stride * 3));
    for (std::size_t r = 0; r < pos.size(); ++r) {
      rows3[3 * r] = pos[r];
      rows3[3 * r + 1] = -pos[r];
      rows3[3 * r + 2] = 7;
    }
    std::int32_t* d_rows3 = upload(rows3);
    REQUIRE(memattn::cuda::evict_fill_holes(d_rows3, stride, 3, S, static_cast<const std::int32_t*>(d_keep), stride,
                                            static_cast<const std::int32_t*>(d_count), nullptr) == Status::kSuccess);
    // 32-byte rows (copied as two 16-byte words): gather, and hole filling with a grid-size hint
    // of one hole (the kernel still moves every hole)
    std::vector<std::int32_t> rows8(static_cast<std::size_t>(S * stride * 8));
    for (std::size_t r = 0; r < pos.size(); ++r)
      for (int e = 0; e < 8; ++e) rows8[8 * r + static_cast<std::size_t>(e)] = pos[r] * 8 + e;
    std::int32_t *d_rows8 = upload(rows8), *d_rows8_out = upload(std::vector<std::int32_t>(rows8.size(), -1));
    REQUIRE(memattn::cuda::evict_gather(static_cast<const std::int32_t*>(d_rows8), stride, d_rows8_out, stride, 8, S,
                                        d_keep, stride, d_count, nullptr) == Status::kSuccess);
    REQUIRE(memattn::cuda::evict_fill_holes(d_rows8, stride, 8, S, static_cast<const std::int32_t*>(d_keep), stride,
                                            static_cast<const std::int32_t*>(d_count), nullptr, 1) == Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const auto filled = download(d_rows3, rows3.size());
    const auto filled8 = download(d_rows8, rows8.size()), gathered8 = download(d_rows8_out, rows8.size());
    cudaFree(d_rows3);
    cudaFree(d_rows8);
    cudaFree(d_rows8_out);
    const auto keep = download(d_keep, static_cast<std::size_t>(S * stride));
    const auto count = download(d_count, static_cast<std::size_t>(S));
    const auto gathered = download(d_dst, static_cast<std::size_t>(S * stride));
    REQUIRE(download(d_err, 1)[0] == 0);
    for (int s = 0; s < S; ++s) {
      std::vector<std::uint64_t> scratch(static_cast<std::size_t>(len[s]));
      std::vector<std::int32_t> want(static_cast<std::size_t>(len[s]));
      std::int64_t want_count = 0;
      REQUIRE(cpu::select_keep(scores.data() + s * stride, pos.data() + s * stride, len[s], budget[s], tcur[s], pr, tie,
                               scratch.data(), want.data(), &want_count) == Status::kSuccess);
      REQUIRE(count[s] == want_count);
      std::vector<std::int32_t> cpos(pos.begin() + s * stride, pos.begin() + s * stride + len[s]);
      cpu::compact_rows(cpos.data(), 1, want.data(), want_count);
      std::vector<std::int32_t> hrows(rows3.begin() + s * stride * 3, rows3.begin() + (s * stride + len[s]) * 3);
      cpu::fill_holes(hrows.data(), 3, want.data(), want_count);
      std::vector<std::int32_t> hrows8(rows8.begin() + s * stride * 8, rows8.begin() + (s * stride + len[s]) * 8);
      cpu::fill_holes(hrows8.data(), 8, want.data(), want_count);
      for (std::int64_t i = 0; i < want_count; ++i) {
        REQUIRE(keep[static_cast<std::size_t>(s * stride + i)] == want[static_cast<std::size_t>(i)]);
        REQUIRE(gathered[static_cast<std::size_t>(s * stride + i)] == cpos[static_cast<std::size_t>(i)]);
        for (int e = 0; e < 3; ++e)  // the CPU's hole filling, bit for bit
          REQUIRE(filled[static_cast<std::size_t>((s * stride + i) * 3 + e)] == hrows[static_cast<std::size_t>(i * 3 + e)]);
        for (int e = 0; e < 8; ++e) {
          const std::size_t at = static_cast<std::size_t>((s * stride + i) * 8 + e);
          REQUIRE(filled8[at] == hrows8[static_cast<std::size_t>(i * 8 + e)]);
          REQUIRE(gathered8[at] == cpos[static_cast<std::size_t>(i)] * 8 + e);
        }
      }
    }
    for (void* ptr : {static_cast<void*>(d_scores), static_cast<void*>(d_pos), static_cast<void*>(d_len),
                      static_cast<void*>(d_budget), static_cast<void*>(d_tcur), static_cast<void*>(d_keep),
                      static_cast<void*>(d_count), static_cast<void*>(d_err), static_cast<void*>(d_dst)})
      cudaFree(ptr);
  }
}

TEST_CASE("evict_select: a NaN candidate score flags the segment, nothing written", "[evict][gpu]") {
  std::vector<float> scores = {1.f, std::nanf(""), 2.f, 3.f};
  std::vector<std::int32_t> pos = {0, 1, 2, 3}, len = {4}, budget = {2}, tcur = {3};
  float* d_scores = upload(scores);
  std::int32_t *d_pos = upload(pos), *d_len = upload(len), *d_budget = upload(budget), *d_tcur = upload(tcur);
  std::int32_t *d_keep = upload(std::vector<std::int32_t>(4, -7)), *d_count = upload(std::vector<std::int32_t>(1, 0)),
               *d_err = upload(std::vector<std::int32_t>(1, 0));
  kernels::EvictSelectParams p;
  p.scores = d_scores;
  p.pos = d_pos;
  p.len = d_len;
  p.budget = d_budget;
  p.t_cur = d_tcur;
  p.stride = 4;
  p.segments = 1;
  p.keep = d_keep;
  p.keep_count = d_count;
  p.error = d_err;
  REQUIRE(memattn::cuda::evict_select(p, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  CHECK(download(d_err, 1)[0] == 1);
  CHECK(download(d_count, 1)[0] == -1);
  CHECK(download(d_keep, 4) == std::vector<std::int32_t>(4, -7));
  for (void* ptr : {static_cast<void*>(d_scores), static_cast<void*>(d_pos), static_cast<void*>(d_len),
                    static_cast<void*>(d_budget), static_cast<void*>(d_tcur), static_cast<void*>(d_keep),
                    static_cast<void*>(d_count), static_cast<void*>(d_err)})
    cudaFree(ptr);
}
