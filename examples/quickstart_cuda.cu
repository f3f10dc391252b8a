// Quickstart (CUDA): dense decode attention on a synthetic KV cache on the GPU.
//
// Two sequences of different lengths in one cache [B, Hkv, Lcap, D] (bf16), GQA with 8 query
// heads over 2 KV heads, one new token each: size the scratch (phase 1), run on a stream
// (phase 2), copy back and print part of the result, the bytes involved and the status.
// Without a GPU it says so and exits 0 (77 with --skip-code, which is how ctest runs it, so CI
// reports it as skipped rather than passed).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "memattn/cuda/dense_decode.cuh"

namespace {

bool check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) std::printf("%s: %s\n", what, cudaGetErrorString(e));
  return e == cudaSuccess;
}

}  // namespace

int main(int argc, char** argv) {
  using memattn::BFloat16;
  const bool skip_code = argc > 1 && std::string(argv[1]) == "--skip-code";
  namespace att = memattn::attention;

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("quickstart_cuda: no CUDA device here; nothing to run\n");
    return skip_code ? 77 : 0;
  }

  const int B = 2, Tq = 1, Hq = 8, Hkv = 2, D = 128, Lcap = 4096;
  const std::vector<std::int32_t> lens = {4096, 1500};  // tokens per sequence, the new one included

  // Synthetic data on the host: q, K, V with a smooth pattern.
  std::vector<BFloat16> hq(static_cast<std::size_t>(B) * Tq * Hq * D);
  std::vector<BFloat16> hkv(static_cast<std::size_t>(B) * Hkv * Lcap * D);
  for (std::size_t i = 0; i < hq.size(); ++i) hq[i] = memattn::from_float<BFloat16>(std::sin(0.37f * i));
  for (std::size_t i = 0; i < hkv.size(); ++i) hkv[i] = memattn::from_float<BFloat16>(std::cos(0.11f * i));

  BFloat16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  std::int32_t* seq_lens = nullptr;
  const std::size_t kv_bytes = hkv.size() * sizeof(BFloat16);
  if (!check(cudaMalloc(&q, hq.size() * sizeof(BFloat16)), "cudaMalloc q") ||
      !check(cudaMalloc(&k, kv_bytes), "cudaMalloc k") || !check(cudaMalloc(&v, kv_bytes), "cudaMalloc v") ||
      !check(cudaMalloc(&o, hq.size() * sizeof(BFloat16)), "cudaMalloc o") ||
      !check(cudaMalloc(&lse, static_cast<std::size_t>(B) * Tq * Hq * sizeof(float)), "cudaMalloc lse") ||
      !check(cudaMalloc(&seq_lens, lens.size() * sizeof(std::int32_t)), "cudaMalloc seq_lens"))
    return 1;
  cudaMemcpy(q, hq.data(), hq.size() * sizeof(BFloat16), cudaMemcpyHostToDevice);
  cudaMemcpy(k, hkv.data(), kv_bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(v, hkv.data(), kv_bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(seq_lens, lens.data(), lens.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice);

  att::DecodeArgs<BFloat16> args;
  args.q = memattn::make_view<4>(static_cast<const BFloat16*>(q), {B, Tq, Hq, D});
  args.k_cache = memattn::make_view<4>(static_cast<const BFloat16*>(k), {B, Hkv, Lcap, D});
  args.v_cache = memattn::make_view<4>(static_cast<const BFloat16*>(v), {B, Hkv, Lcap, D});
  args.o = memattn::make_view<4>(o, {B, Tq, Hq, D});
  args.lse = memattn::make_view<3>(lse, {B, Tq, Hq});
  args.seq_lens = seq_lens;          // device copy, read by the kernel
  args.seq_lens_host = lens.data();  // host copy: validated before launch, sizes the split grid

  // Phase 1: scratch size. Phase 2: run (asynchronous on the stream).
  std::size_t ws_bytes = 0;
  memattn::Status st = memattn::cuda::dense_decode_workspace_size(args, &ws_bytes);
  std::printf("workspace_size: %s, %zu bytes\n", memattn::status_message(st), ws_bytes);
  void* ws = nullptr;
  if (ws_bytes && !check(cudaMalloc(&ws, ws_bytes), "cudaMalloc workspace")) return 1;
  memattn::cuda::DenseDecodePlan plan;
  memattn::cuda::dense_decode_plan(args, &plan);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  st = memattn::cuda::dense_decode(args, ws, ws_bytes, stream);
  std::printf("dense_decode: %s (row tile %d, %d splits of <= %d keys, %lld CTAs)\n", memattn::status_message(st),
              plan.row_tile, plan.num_splits, plan.keys_per_split, static_cast<long long>(plan.decode_ctas));
  const bool ran = check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

  std::vector<BFloat16> ho(hq.size());
  std::vector<float> hlse(static_cast<std::size_t>(B) * Tq * Hq);
  cudaMemcpy(ho.data(), o, ho.size() * sizeof(BFloat16), cudaMemcpyDeviceToHost);
  cudaMemcpy(hlse.data(), lse, hlse.size() * sizeof(float), cudaMemcpyDeviceToHost);
  for (int b = 0; b < B && ran && memattn::ok(st); ++b) {
    for (int h = 0; h < Hq; h += 3) {
      const std::size_t row = static_cast<std::size_t>((b * Tq) * Hq + h);
      std::printf("seq %d (L=%d) head %d: lse %.4f  o[0..3] = %.4f %.4f %.4f %.4f\n", b, lens[b], h, hlse[row],
                  memattn::to_float(ho[row * D + 0]), memattn::to_float(ho[row * D + 1]),
                  memattn::to_float(ho[row * D + 2]), memattn::to_float(ho[row * D + 3]));
    }
  }
  double used = 0;
  for (int b = 0; b < B; ++b) used += static_cast<double>(lens[b]) * Hkv * D * 2 * sizeof(BFloat16);
  std::printf("cache: %.1f MiB allocated (K+V), %.1f MiB read for these lengths\n", 2.0 * kv_bytes / (1 << 20),
              used / (1 << 20));

  cudaStreamDestroy(stream);
  cudaFree(ws);
  cudaFree(seq_lens);
  cudaFree(lse);
  cudaFree(o);
  cudaFree(v);
  cudaFree(k);
  cudaFree(q);
  return ran && memattn::ok(st) ? 0 : 1;
}
