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
      std::vector<std::int32_t> keep, count;
      memattn_test::random_keep(len, stride, rng, &keep, &count);
      std::int32_t* dkeep = upload(keep);
      std::int32_t* dcount = upload(count);
      kernels::EvictNearestCosParams<Half> p;
      p.k = dk, p.v = dv, p.len = dlen, p.keep = dkeep, p.keep_count = dcount, p.tau = dtau, p.has_tau = dhas;
      p.target = dtarget, p.sim = dsim, p.stride = stride, p.D = D, p.segments = S, p.alpha = 0.3f, p.beta = 0.7f;
      REQUIRE(memattn::cuda::evict_nearest_cos(p, nullptr) == Status::kSuccess);
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      memattn_test::cpu_nearest_cos_round(&k, &v, D, stride, len, keep, count, &tau, &has);
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
    memattn_test::KvMergerCase c(S, D, stride, rng);
    const evict::Protection pr{2, 16};
    const std::vector<Half>& k = c.k;
    const std::vector<Half>& v = c.v;
    const std::vector<float>& scores = c.scores;
    const std::vector<float>& state = c.state;
    Half* dk = upload(k);
    Half* dv = upload(v);
    std::int32_t* dlen = upload(c.len);
    std::int32_t* dpos = upload(c.pos);
    std::int32_t* dbudget = upload(c.budget);
    std::int32_t* dtcur = upload(c.tcur);
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

    const std::size_t slots = static_cast<std::size_t>(S * stride);
    memattn_test::check_kvmerger(c, max_set, pr, download(dcount, S), download(dpivot, slots), download(dscores, slots),
                                 download(dstate, slots), download(dkeep, slots), download(dk, k.size()), download(dv, v.size()));
    cudaFree(dk), cudaFree(dv), cudaFree(dlen), cudaFree(dpos), cudaFree(dbudget), cudaFree(dtcur), cudaFree(dscores);
    cudaFree(downs), cudaFree(dstate), cudaFree(dpivot), cudaFree(dkeep), cudaFree(dcount), cudaFree(derr);
  }
}
