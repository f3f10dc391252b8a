// GPU token merging (issue 6) vs the CPU path: D2O nearest-cosine merge (two rounds, so the EMA
// threshold carries over) and the KVMerger pipeline (sets -> evict_select on the set scores ->
// Gaussian merge) on ragged fp16 segments. Pivots, set scores and keep lists must be identical;
// merged rows equal within one fp16 rounding (both accumulate in fp64, in different orders).
// Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/merge_cases.hpp"
#include "gpu/evict_merge_cpu_bridge.hpp"
#include "memattn/cuda/evict.cuh"
#include "memattn/cuda/evict_merge.cuh"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;
using memattn_gpu_test::download;

using namespace memattn;
using memattn_test::check_half_rows;
using memattn_test::clustered;

TEST_CASE("evict_nearest_cos (D2O) on the GPU == cpu::merge_nearest_cos, EMA over two rounds", "[merge][gpu]") {
  std::mt19937 rng(77);
  for (const int D : {64, 40}) {
    const int S = 5;
    const std::int64_t stride = 300;
    std::vector<Half> k = clustered(S * stride, D, 3, 0.3f, rng);
    std::vector<Half> v = clustered(S * stride, D, 1, 0.f, rng);
    std::vector<std::int32_t> len(S);
    for (int s = 0; s < S; ++s) len[static_cast<std::size_t>(s)] = 2 + static_cast<std::int32_t>(rng() % (stride - 1));
    Half* dk = upload(k);
    Half* dv = upload(v);
    std::int32_t* dlen = upload(len);
    float* dtau = upload(std::vector<float>(S, 0.f));
    std::int32_t* dhas = upload(std::vector<std::int32_t>(S, 0));
    std::int32_t* dtarget = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S * stride), 0));
    double* dsim = upload(std::vector<double>(static_cast<std::size_t>(S * stride), 0.0));
    std::vector<float> tau(S, 0.f);
    std::vector<bool> has(S, false);
    for (int round = 0; round < 2; ++round) {
      std::vector<std::int32_t> keep(static_cast<std::size_t>(S * stride), 0), count(S);
      for (int s = 0; s < S; ++s) {
        std::int32_t c = 0;
        for (std::int32_t j = 0; j < len[static_cast<std::size_t>(s)]; ++j)
          if (rng() % 3 == 0 || j == 0) keep[static_cast<std::size_t>(s * stride + c++)] = j;
        count[static_cast<std::size_t>(s)] = c;
      }
      std::int32_t* dkeep = upload(keep);
      std::int32_t* dcount = upload(count);
      kernels::EvictNearestCosParams<Half> p;
      p.k = dk, p.v = dv, p.len = dlen, p.keep = dkeep, p.keep_count = dcount, p.tau = dtau, p.has_tau = dhas;
      p.target = dtarget, p.sim = dsim, p.stride = stride, p.D = D, p.segments = S, p.alpha = 0.3f, p.beta = 0.7f;
      REQUIRE(memattn::cuda::evict_nearest_cos(p, nullptr) == Status::kSuccess);
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      for (int s = 0; s < S; ++s) {
        float t = tau[static_cast<std::size_t>(s)];
        bool h = has[static_cast<std::size_t>(s)];
        REQUIRE(memattn_test::cpu_merge_nearest_cos(0.3f, 0.7f, &t, &h, k.data() + s * stride * D, v.data() + s * stride * D,
                                                    D, len[static_cast<std::size_t>(s)], keep.data() + s * stride,
                                                    count[static_cast<std::size_t>(s)]) == Status::kSuccess);
        tau[static_cast<std::size_t>(s)] = t;
        has[static_cast<std::size_t>(s)] = h;
      }
      check_half_rows(download(dk, k.size()), k);
      check_half_rows(download(dv, v.size()), v);
      const std::vector<float> gt = download(dtau, S);
      for (int s = 0; s < S; ++s) CHECK(gt[static_cast<std::size_t>(s)] == Approx(tau[static_cast<std::size_t>(s)]).epsilon(1e-5));
      // keep both sides bit-equal for the next round
      REQUIRE(cudaMemcpy(dk, k.data(), k.size() * sizeof(Half), cudaMemcpyHostToDevice) == cudaSuccess);
      REQUIRE(cudaMemcpy(dv, v.data(), v.size() * sizeof(Half), cudaMemcpyHostToDevice) == cudaSuccess);
      REQUIRE(cudaMemcpy(dtau, tau.data(), tau.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
      cudaFree(dkeep);
      cudaFree(dcount);
    }
    cudaFree(dk), cudaFree(dv), cudaFree(dlen), cudaFree(dtau), cudaFree(dhas), cudaFree(dtarget), cudaFree(dsim);
  }
}

TEST_CASE("KVMerger on the GPU (sets -> select -> Gaussian merge) == the CPU path", "[merge][gpu]") {
  std::mt19937 rng(78);
  for (const int D : {64, 8, 128}) {
    const int S = 6, max_set = D == 64 ? 5 : 3;  // 3 cuts the runs of 4 similar keys (5 never binds)
    const std::int64_t stride = 257;
    std::vector<Half> k = clustered(S * stride, D, 4, 0.2f, rng);
    std::vector<Half> v = clustered(S * stride, D, 1, 0.f, rng);
    std::vector<std::int32_t> len(S), pos(static_cast<std::size_t>(S * stride), 0), budget(S), tcur(S);
    std::vector<float> scores(static_cast<std::size_t>(S * stride), 0.f);
    const evict::Protection pr{2, 16};
    for (int s = 0; s < S; ++s) {
      const std::int32_t n = 20 + static_cast<std::int32_t>(rng() % (stride - 20));
      len[static_cast<std::size_t>(s)] = n;
      budget[static_cast<std::size_t>(s)] = std::max(1, n / 3);
      std::int32_t p = 0;
      for (std::int32_t j = 0; j < n; ++j) {
        pos[static_cast<std::size_t>(s * stride + j)] = p;
        p += rng() % 10 == 0 ? 2 : 1;  // a few gaps break sets
        scores[static_cast<std::size_t>(s * stride + j)] = std::uniform_real_distribution<float>(0.f, 3.f)(rng);
      }
      tcur[static_cast<std::size_t>(s)] = p - 1;
    }
    std::vector<float> state = scores;
    Half* dk = upload(k);
    Half* dv = upload(v);
    std::int32_t* dlen = upload(len);
    std::int32_t* dpos = upload(pos);
    std::int32_t* dbudget = upload(budget);
    std::int32_t* dtcur = upload(tcur);
    float* dscores = upload(scores);
    float* downs = upload(scores);
    float* dstate = upload(state);
    std::int32_t* dpivot = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S * stride), 0));
    std::int32_t* dkeep = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S * stride), 0));
    std::int32_t* dcount = upload(std::vector<std::int32_t>(S, 0));
    std::int32_t* derr = upload(std::vector<std::int32_t>(1, 0));

    kernels::EvictConsecutiveSetsParams<Half> a;
    a.k = dk, a.pos = dpos, a.len = dlen, a.t_cur = dtcur, a.scores = dscores, a.own = downs, a.pivot = dpivot;
    a.stride = stride, a.D = D, a.segments = S, a.protect = pr, a.theta = 0.8f, a.max_set = max_set;
    REQUIRE(memattn::cuda::evict_consecutive_sets(a, nullptr) == Status::kSuccess);
    kernels::EvictSelectParams sp;
    sp.scores = dscores, sp.pos = dpos, sp.len = dlen, sp.budget = dbudget, sp.t_cur = dtcur, sp.stride = stride;
    sp.segments = S, sp.protect = pr, sp.keep = dkeep, sp.keep_count = dcount, sp.error = derr;
    REQUIRE(memattn::cuda::evict_select(sp, nullptr) == Status::kSuccess);
    kernels::EvictGaussianMergeParams<Half, float> g;
    g.k = dk, g.v = dv, g.len = dlen, g.keep = dkeep, g.keep_count = dcount, g.pivot = dpivot, g.own = downs;
    g.state = dstate, g.stride = stride, g.D = D, g.segments = S;
    REQUIRE(memattn::cuda::evict_gaussian_merge(g, nullptr) == Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

    std::vector<std::int32_t> pivot(static_cast<std::size_t>(S * stride), 0), keep(static_cast<std::size_t>(S * stride), 0);
    const std::vector<std::int32_t> gpivot = download(dpivot, pivot.size()), gkeep = download(dkeep, keep.size());
    const std::vector<std::int32_t> gcount = download(dcount, S);
    const std::vector<float> gscores = download(dscores, scores.size()), gstate = download(dstate, state.size());
    for (int s = 0; s < S; ++s) {
      const std::int64_t o = s * stride, n = len[static_cast<std::size_t>(s)];
      std::int64_t count = 0;
      REQUIRE(memattn_test::cpu_kvmerger_compact(0.8f, max_set, k.data() + o * D, v.data() + o * D, D, pos.data() + o, n,
                                                 budget[static_cast<std::size_t>(s)], tcur[static_cast<std::size_t>(s)], pr,
                                                 scores.data() + o, state.data() + o, pivot.data() + o, keep.data() + o,
                                                 &count) == Status::kSuccess);
      REQUIRE(gcount[static_cast<std::size_t>(s)] == count);
      for (std::int64_t j = 0; j < n; ++j) {
        const std::size_t i = static_cast<std::size_t>(o + j);
        CHECK(gpivot[i] == pivot[i]);
        CHECK(gscores[i] == scores[i]);
        CHECK(gstate[i] == Approx(state[i]).epsilon(1e-6));
      }
      for (std::int64_t i = 0; i < count; ++i) CHECK(gkeep[static_cast<std::size_t>(o + i)] == keep[static_cast<std::size_t>(o + i)]);
    }
    check_half_rows(download(dk, k.size()), k);
    check_half_rows(download(dv, v.size()), v);
    cudaFree(dk), cudaFree(dv), cudaFree(dlen), cudaFree(dpos), cudaFree(dbudget), cudaFree(dtcur), cudaFree(dscores);
    cudaFree(downs), cudaFree(dstate), cudaFree(dpivot), cudaFree(dkeep), cudaFree(dcount), cudaFree(derr);
  }
}
