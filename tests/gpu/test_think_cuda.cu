// ThinK two-segment decode on the GPU vs the CPU composed cache (issue 7): the CPU cache runs a
// ragged batch (prefill + decode), its pruned/full-width segments are copied to the device, and
// the kernel's output for the last decode step must match the CPU output (fp32 both, rel 1e-4 of
// the row's max), for the tile kernel and the lane-group kernel (rows padded to 8 channels), whose
// raw logits and LSE must also agree. Exits 77 without a device (gpu_test_main.cpp).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "memattn/cuda/think.cuh"
#include "think_cpu_bridge.hpp"
#include "device_vectors.hpp"
#include "think_decode_modes.hpp"
#include "row_error.hpp"

using memattn_gpu_test::download;
using memattn_gpu_test::max_row_rel_error;
using memattn_gpu_test::worse;
using memattn_gpu_test::think_decode_mode;
using memattn_gpu_test::upload;

using namespace memattn;

namespace {

// The kernels on the same case: the tile kernel (path 1) on rows of d_keep halves, the lane-group
// kernel (path 2; head_dim 64 / 128 / 256, no value extension) and the fp16 tensor-core kernel
// (path 4; head_dim 64 / 128, also the value extension) on rows padded to a multiple of 8. Each
// must match the CPU output; their raw logits and LSE (eviction inputs) must agree.
void run(int B, int Hq, int Hkv, int D, float prune, int prefill, int steps, float vprune = 0.f) {
  INFO("B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " prune " << prune << " prefill " << prefill
            << " vprune " << vprune);
  ThinKCase c;
  REQUIRE(think_cpu_case(B, Hq, Hkv, D, prune, prefill, steps, 1234u + static_cast<unsigned>(D), &c, vprune));
  const int S = B * Hkv, G = Hq / Hkv;
  int max_tokens = 1;
  for (std::size_t i = 0; i < c.n_old.size(); ++i) max_tokens = std::max(max_tokens, c.n_old[i] + c.n_new[i]);
  const bool lanes_ok = vprune == 0.f && (D == 64 || D == 128 || D == 256);
  std::vector<float> ref_scores, ref_lse;
  for (int path : {1, 2, 4}) {
    INFO("path " << path);
    if ((path == 2 && !lanes_ok) || (path == 4 && D != 64 && D != 128)) continue;
    const int stride = path >= 2 ? (c.d_keep + 7) / 8 * 8 : c.d_keep;
    const int vstride = path >= 2 ? (c.dv_keep + 7) / 8 * 8 : c.dv_keep;  // value extension rows
    kernels::ThinKDecodeParams p{};
    p.path = path;
    p.k_old = upload(think_restride(c.k_old, S * c.cap_old, c.d_keep, stride));
    p.old_seg_stride = static_cast<long long>(c.cap_old) * stride;
    p.old_row_stride = stride;
    p.channels = upload(c.channels);
    p.d_keep = c.d_keep;
    p.k_new = upload(c.k_new);
    p.new_seg_stride = static_cast<long long>(c.cap_new) * D;
    p.v = upload(c.v);
    p.v_seg_stride = static_cast<long long>(vprune > 0.f ? c.cap_new : c.cap_old + c.cap_new) * D;
    if (vprune > 0.f) {
      REQUIRE(c.dv_keep < D);
      p.v_old = upload(think_restride(c.v_old, S * c.cap_old, c.dv_keep, vstride));
      p.v_old_seg_stride = static_cast<long long>(c.cap_old) * vstride;
      p.old_v_row_stride = vstride;
      p.v_channels = upload(c.v_channels);
      p.dv_keep = c.dv_keep;
    }
    p.n_old = upload(c.n_old);
    p.n_new = upload(c.n_new);
    p.q = upload(c.q);
    std::vector<float> out(c.q.size(), NAN);
    float* d_out = upload(out);
    p.o = d_out;
    p.lse = upload(std::vector<float>(static_cast<std::size_t>(B) * Hq, NAN));
    p.scores = upload(std::vector<float>(static_cast<std::size_t>(S) * G * max_tokens, NAN));
    p.scores_seg_stride = static_cast<long long>(G) * max_tokens;
    p.scores_row_stride = max_tokens;
    p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.head_dim = D;
    p.scale = cuda::think_scale(D);
    // the three launch modes of think_decode_modes.hpp
    for (int mode = 0; mode < 3; ++mode) {
      INFO("mode " << mode);
      std::fill(out.begin(), out.end(), NAN);
      REQUIRE(cudaMemcpy(d_out, out.data(), out.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
      think_decode_mode(p, mode, max_tokens);
      REQUIRE(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
      CHECK(max_row_rel_error(c.out_cpu, out, B * Hq, D) <= 1e-4);
      const std::vector<float> lse = download(p.lse, static_cast<std::size_t>(B) * Hq);
      const std::vector<float> sc = download(p.scores, static_cast<std::size_t>(S) * G * max_tokens);
      if (ref_lse.empty()) {
        ref_lse = lse;
        ref_scores = sc;
        for (float x : lse) CHECK(std::isfinite(x));
        continue;
      }
      double worst_lse = 0, worst_sc = 0;
      for (std::size_t i = 0; i < lse.size(); ++i) worst_lse = worse(worst_lse, std::abs(static_cast<double>(lse[i]) - ref_lse[i]));
      for (int sg = 0; sg < S; ++sg)
        for (int g = 0; g < G; ++g)
          for (int t = 0; t < c.n_old[static_cast<std::size_t>(sg)] + c.n_new[static_cast<std::size_t>(sg)]; ++t) {
            const std::size_t i = (static_cast<std::size_t>(sg) * G + g) * max_tokens + t;
            worst_sc = worse(worst_sc, std::abs(static_cast<double>(sc[i]) - ref_scores[i]));
          }
      CHECK(worst_lse <= 1e-4);  // every path, split or not, gives the same logits and LSE
      CHECK(worst_sc <= 1e-4);
    }
    if (path == 1 && lanes_ok) {  // the tile-kernel layout is not one the lane-group kernel reads
      for (int padded_path : {2, 4}) {
        p.path = padded_path;
        if (c.d_keep % 8 != 0) CHECK(cuda::think_decode(p, nullptr) == Status::kErrorNotSupported);
      }
    }
    for (const void* ptr : {static_cast<const void*>(p.k_old), static_cast<const void*>(p.channels), static_cast<const void*>(p.k_new),
                            static_cast<const void*>(p.v), static_cast<const void*>(p.n_old), static_cast<const void*>(p.n_new),
                            static_cast<const void*>(p.q), static_cast<const void*>(p.o), static_cast<const void*>(p.v_old),
                            static_cast<const void*>(p.v_channels), static_cast<const void*>(p.lse), static_cast<const void*>(p.scores)})
      if (ptr != nullptr) cudaFree(const_cast<void*>(ptr));
  }
  bool pruned = false;
  for (int n : c.n_old) pruned = pruned || n > 0;
  CHECK(pruned);
}

}  // namespace

TEST_CASE("ThinK two-segment decode: CUDA == CPU composed cache", "[think][gpu]") {
  run(3, 4, 2, 64, 0.4f, 100, 5);   // ragged batch (RG-13), d_keep = 39
  run(2, 9, 3, 64, 0.5f, 300, 3);   // SmolLM2 heads
  run(1, 8, 4, 8, 0.25f, 40, 2);    // stories260K head_dim
  run(2, 32, 4, 128, 0.4f, 200, 4); // d = 128, d_keep = 77
  run(1, 8, 1, 256, 0.5f, 150, 2);  // d = 256 (two value channels per thread), group 8
  run(2, 4, 4, 128, 0.4f, 120, 3);  // group 1
  run(2, 16, 4, 64, 0.3f, 90, 6);   // group 4, d_keep = 45
}

TEST_CASE("ThinK value extension: compact old values (v_old + channel list) == CPU", "[think][gpu]") {
  run(3, 4, 2, 64, 0.4f, 100, 5, 0.5f);    // dv_keep = 32
  run(2, 32, 4, 128, 0.4f, 200, 4, 0.25f); // dv_keep = 96
  run(1, 8, 1, 256, 0.5f, 150, 2, 0.4f);   // two value channels per thread
}

TEST_CASE("ThinK decode wrapper rejects bad arguments without launching", "[think][gpu]") {
  kernels::ThinKDecodeParams p{};
  CHECK(cuda::think_decode(p, nullptr) == Status::kErrorNullPointer);
  ThinKCase c;
  REQUIRE(think_cpu_case(1, 4, 2, 64, 0.4f, 60, 1, 7u, &c, 0.5f));
  p.k_old = upload(c.k_old);
  p.old_seg_stride = static_cast<long long>(c.cap_old) * c.d_keep;
  p.old_row_stride = c.d_keep;
  p.channels = upload(c.channels);
  p.d_keep = c.d_keep;
  p.k_new = upload(c.k_new);
  p.new_seg_stride = static_cast<long long>(c.cap_new) * 64;
  p.v = upload(c.v);
  p.v_seg_stride = static_cast<long long>(c.cap_new) * 64;
  p.n_old = upload(c.n_old);
  p.n_new = upload(c.n_new);
  p.q = upload(c.q);
  std::vector<float> sentinel(c.q.size(), 7.f);
  float* d_out = upload(sentinel);
  p.o = d_out;
  p.batch = 1, p.q_heads = 4, p.kv_heads = 2, p.head_dim = 64;
  p.scale = cuda::think_scale(64);
  p.v_channels = upload(c.v_channels);  // value extension without v_old
  CHECK(cuda::think_decode(p, nullptr) == Status::kErrorNullPointer);
  p.v_old = upload(c.v_old);
  p.dv_keep = 65;
  p.old_v_row_stride = 65;
  CHECK(cuda::think_decode(p, nullptr) == Status::kErrorInvalidArgument);
  p.dv_keep = c.dv_keep;
  p.old_v_row_stride = c.dv_keep - 1;  // row stride below the width
  CHECK(cuda::think_decode(p, nullptr) == Status::kErrorInvalidArgument);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<float> back(sentinel.size());
  REQUIRE(cudaMemcpy(back.data(), d_out, back.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(back == sentinel);  // nothing launched
  for (const void* ptr : {static_cast<const void*>(p.k_old), static_cast<const void*>(p.channels), static_cast<const void*>(p.k_new),
                          static_cast<const void*>(p.v), static_cast<const void*>(p.n_old), static_cast<const void*>(p.n_new),
                          static_cast<const void*>(p.q), static_cast<const void*>(p.o), static_cast<const void*>(p.v_old),
                          static_cast<const void*>(p.v_channels)})
    cudaFree(const_cast<void*>(ptr));
}
