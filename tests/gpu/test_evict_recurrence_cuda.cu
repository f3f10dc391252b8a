// Issue 6 on the GPU vs the CPU path: LazyEviction's per-step recurrence update (last_hit, mri,
// acc) and score bit-identical to evict::recurrence_update / recurrence_score over 200 steps with
// probabilities at and around the threshold; selection with retention priorities (hard pins and
// soft priorities, §2.10) bit-identical to cpu::select_keep with the same priorities. Exits 77
// without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "memattn/cpu/evict_select.hpp"
#include "memattn/cuda/evict.cuh"
#include "memattn/cuda/evict_recurrence.cuh"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;
using memattn_gpu_test::download;

using namespace memattn;

TEST_CASE("recurrence update and score on the GPU == CPU, bit for bit, 200 steps", "[evict][lazy][gpu]") {
  std::mt19937 rng(99);
  const int S = 7;
  const std::int64_t stride = 700;
  const float alpha = 0.01f;
  std::vector<std::int32_t> len(S);
  std::vector<evict::RecurrenceState> st(static_cast<std::size_t>(S * stride));
  for (int s = 0; s < S; ++s) {
    len[s] = 1 + static_cast<std::int32_t>(rng() % stride);
    for (std::int32_t j = 0; j < len[s]; ++j) st[static_cast<std::size_t>(s * stride + j)] = evict::Recurrence::init_state(j);
  }
  evict::RecurrenceState* d_st = upload(st);
  std::int32_t* d_len = upload(len);
  std::vector<float> pbar(static_cast<std::size_t>(S * stride));
  float* d_pbar = upload(pbar);
  std::vector<float> scores(static_cast<std::size_t>(S * stride), 0.f);
  float* d_scores = upload(scores);
  std::vector<std::int32_t> t(S);
  std::int32_t* d_t = upload(t);
  for (int step = 0; step < 200; ++step) {
    for (int s = 0; s < S; ++s) {
      t[s] = len[s] + step;
      for (std::int32_t j = 0; j < len[s]; ++j) {
        const int r = static_cast<int>(rng() % 8);
        pbar[static_cast<std::size_t>(s * stride + j)] =
            r == 0 ? alpha : r == 1 ? std::nextafter(alpha, 0.f) : std::uniform_real_distribution<float>(0.f, 0.03f)(rng);
      }
    }
    REQUIRE(cudaMemcpy(d_pbar, pbar.data(), pbar.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cudaMemcpy(d_t, t.data(), t.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
    kernels::RecurrenceParams p;
    p.state = d_st;
    p.pbar = d_pbar;
    p.scores = d_scores;
    p.len = d_len;
    p.t = d_t;
    p.stride = stride;
    p.segments = S;
    p.alpha = alpha;
    p.acc_tie = (step & 1) != 0;
    p.raw = (step % 3) == 0;
    REQUIRE(memattn::cuda::recurrence_update(p, nullptr) == Status::kSuccess);
    REQUIRE(memattn::cuda::recurrence_scores(p, nullptr) == Status::kSuccess);
    for (int s = 0; s < S; ++s)
      for (std::int32_t j = 0; j < len[s]; ++j) {
        auto& x = st[static_cast<std::size_t>(s * stride + j)];
        evict::recurrence_update(x, pbar[static_cast<std::size_t>(s * stride + j)], t[s], alpha);
        scores[static_cast<std::size_t>(s * stride + j)] = evict::recurrence_score(x, t[s], p.acc_tie, p.raw);
      }
    if (step % 40 == 39 || step == 199) {
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      const auto gst = download(d_st, st.size());
      const auto gsc = download(d_scores, scores.size());
      for (int s = 0; s < S; ++s)
        for (std::int32_t j = 0; j < len[s]; ++j) {
          const std::size_t i = static_cast<std::size_t>(s * stride + j);
          REQUIRE(gst[i].last_hit == st[i].last_hit);
          REQUIRE(gst[i].mri == st[i].mri);
          REQUIRE(std::memcmp(&gst[i].acc, &st[i].acc, 4) == 0);
          REQUIRE(std::memcmp(&gsc[i], &scores[i], 4) == 0);
        }
    }
  }
  kernels::RecurrenceParams bad;
  CHECK(memattn::cuda::recurrence_update(bad, nullptr) == Status::kErrorNullPointer);
  for (void* ptr : {static_cast<void*>(d_st), static_cast<void*>(d_len), static_cast<void*>(d_pbar),
                    static_cast<void*>(d_scores), static_cast<void*>(d_t)})
    cudaFree(ptr);
}

TEST_CASE("evict_select with retention priorities == cpu::select_keep with the same priorities", "[evict][pin][gpu]") {
  std::mt19937 rng(2024);
  for (int round = 0; round < 12; ++round) {
    const int S = 1 + static_cast<int>(rng() % 20);
    std::int64_t stride = 1 + static_cast<std::int64_t>(rng() % 2000);
    // the 4-slots-per-thread select kernel in half the rounds, tied and random scores included
    if ((round + round / 2) % 2 == 0) stride = (stride + 3) / 4 * 4;
    std::vector<float> scores(static_cast<std::size_t>(S * stride), 0.f);
    std::vector<std::int32_t> pos(static_cast<std::size_t>(S * stride), 0), len(S), budget(S), tcur(S);
    std::vector<std::uint8_t> prio(static_cast<std::size_t>(S * stride), 0);
    evict::Protection pr;
    pr.n_sink = static_cast<std::int32_t>(rng() % 4);
    pr.n_recent = static_cast<std::int32_t>(rng() % 20);
    const evict::TieBreak tie = (rng() & 1) ? evict::TieBreak::kPreferLater : evict::TieBreak::kPreferEarlier;
    for (int s = 0; s < S; ++s) {
      const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % stride);
      len[s] = static_cast<std::int32_t>(n);
      std::int32_t p = 0;
      const std::int32_t a = static_cast<std::int32_t>(rng() % (n + 1)), b = a + static_cast<std::int32_t>(rng() % 64);
      const std::uint8_t level = static_cast<std::uint8_t>((round % 3 == 0) ? 255 : 1 + rng() % 254);
      for (std::int64_t j = 0; j < n; ++j) {
        const std::size_t i = static_cast<std::size_t>(s * stride + j);
        pos[i] = p;
        p += 1 + static_cast<std::int32_t>(rng() % 2);
        scores[i] = (round % 2) ? 0.5f : std::uniform_real_distribution<float>(-3.f, 3.f)(rng);
        if (j >= a && j < b) prio[i] = level;
        if (rng() % 50 == 0) prio[i] = 255;
      }
      tcur[s] = pos[static_cast<std::size_t>(s * stride + n - 1)];
      budget[s] = 1 + static_cast<std::int32_t>(rng() % n);
    }
    float* d_scores = upload(scores);
    std::uint8_t* d_prio = upload(prio);
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
    p.prio = d_prio;
    REQUIRE(memattn::cuda::evict_select(p, nullptr) == Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const auto keep = download(d_keep, static_cast<std::size_t>(S * stride));
    const auto count = download(d_count, static_cast<std::size_t>(S));
    REQUIRE(download(d_err, 1)[0] == 0);
    for (int s = 0; s < S; ++s) {
      std::vector<std::uint64_t> scratch(static_cast<std::size_t>(len[s]));
      std::vector<std::int32_t> want(static_cast<std::size_t>(len[s]));
      std::int64_t want_count = 0;
      REQUIRE(cpu::select_keep(scores.data() + s * stride, pos.data() + s * stride, prio.data() + s * stride, len[s],
                               budget[s], tcur[s], pr, tie, scratch.data(), want.data(), &want_count) == Status::kSuccess);
      REQUIRE(count[s] == want_count);
      for (std::int64_t i = 0; i < want_count; ++i)
        REQUIRE(keep[static_cast<std::size_t>(s * stride + i)] == want[static_cast<std::size_t>(i)]);
    }
    for (void* ptr : {static_cast<void*>(d_scores), static_cast<void*>(d_prio), static_cast<void*>(d_pos),
                      static_cast<void*>(d_len), static_cast<void*>(d_budget), static_cast<void*>(d_tcur),
                      static_cast<void*>(d_keep), static_cast<void*>(d_count), static_cast<void*>(d_err)})
      cudaFree(ptr);
  }
}
