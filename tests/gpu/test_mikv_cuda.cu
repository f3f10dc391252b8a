// MiKV fused mixed decode on the GPU vs the CPU mixed cache (cpu/mikv_kv_cache.hpp): the CPU builds
// a cache with Low, INT8 High and exact tiers and runs one decode step; its segments are uploaded
// as they are, the kernel's output must match the CPU output and its normalised probabilities the
// CPU's H2O score updates (GQA mean). Both Low formats: per-token records (lowk=0) and the
// per-channel blocks + staging rows of `lowk=1` (lo_format = kBlocks), the latter also with Low
// slots killed on a copy (reference: the CPU tier functions, tests/common/mikv_block_export.hpp).
// Exits 77 without a device (gpu_test_main.cpp).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/mikv_segments.hpp"
#include "memattn/cuda/mikv.cuh"

using namespace memattn;

namespace {

template <class T>
T* upload(const std::vector<T>& h) {
  void* p = nullptr;
  const std::size_t n = h.empty() ? 1 : h.size();
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemset(p, 0, n * sizeof(T)) == cudaSuccess);
  if (!h.empty()) REQUIRE(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return static_cast<T*>(p);
}

memattn_test::MikvCaseStats run_case(const std::string& spec, int D, int G, int sequences = 1, int kill_low = 0) {
  INFO(spec << " D " << D << " G " << G << " sequences " << sequences << " kill_low " << kill_low);
  const std::vector<memattn_test::MikvSnapshot> snap = memattn_test::mikv_snapshots(spec, D, G, sequences, kill_low);
  const int S = static_cast<int>(snap.size());
  memattn_test::MikvCaseStats stats;
  long long stash = 0;
  std::vector<float> q;
  const std::vector<kernels::MikvSegment> segs =
      memattn_test::mikv_segments(snap, G, [](const auto& v) { return upload(v); }, &stats, &stash, &q);
  kernels::MikvDecodeParams p = memattn_test::mikv_params(snap, G, D);
  p.segments = upload(segs);
  p.q = upload(q);
  std::vector<float> zeros(q.size(), 0.f), lse0(static_cast<std::size_t>(S * G), 0.f),
      st0(static_cast<std::size_t>(stash), 0.f);
  p.o = upload(zeros);
  p.lse = upload(lse0);
  p.probs = upload(st0);
  REQUIRE(cuda::mikv_decode(p, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<float> o(q.size()), probs(static_cast<std::size_t>(stash));
  REQUIRE(cudaMemcpy(o.data(), p.o, o.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(cudaMemcpy(probs.data(), p.probs, probs.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  std::vector<float> lse(lse0.size());
  REQUIRE(cudaMemcpy(lse.data(), p.lse, lse.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  memattn_test::check_mikv_outputs(snap, segs, G, D, o, lse, probs);
  return stats;
}

}  // namespace

TEST_CASE("mikv fused decode == CPU mixed cache (Low + INT8 High + exact)", "[mikv][gpu]") {
  memattn_test::mikv_row_cases(run_case);
}

TEST_CASE("mikv fused decode, lowk=1 per-channel Low blocks == CPU mixed cache", "[mikv][gpu]") {
  memattn_test::mikv_block_cases(run_case);
}

TEST_CASE("mikv decode rejects bad arguments before launching", "[mikv][gpu]") {
  kernels::MikvDecodeParams p{};
  p.lo_cfg = quant::MixedRowConfig{64, 2, 2};
  p.hi_cfg = quant::MixedRowConfig{64, 8, 2};
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorNullPointer);
  p.hi_cfg.groups = 4;
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.hi_cfg.groups = 2;
  p.lo_format = kernels::MikvLowFormat::kBlocks;
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorNullPointer);  // the format itself is valid
  p.lo_format = static_cast<kernels::MikvLowFormat>(2);               // neither kRows nor kBlocks
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.lo_format = static_cast<kernels::MikvLowFormat>(-1);
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.lo_format = kernels::MikvLowFormat::kBlocks;
  p.lo_cfg.bits = 8;  // the per-channel Low tier is 2/3/4-bit like the per-token one
  CHECK(cuda::mikv_decode(p, nullptr) == Status::kErrorInvalidArgument);
}
