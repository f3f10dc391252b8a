// GPU ThinK two-segment decode benchmark (issue 7): cuda::think_decode with λ = 0.4 / 0.5 against
// the same kernel with λ = 0 (every key full width: the dense peer of identical code), one new
// token, GQA 32 / 8 heads, head_dim 128, fp16, B sequences of L tokens (L - 32 pruned, 32 full
// width). CUDA events around each launch, median of --iters. One JSON line per case: us, ratio to
// λ = 0 in the same run, bytes of K+V read and effective GB/s. Split-KV entry (think_decode with
// max_tokens = L and a workspace). Value extension rows (vprune = 0.4 with λ = 0.4): old values
// compact too. KIVI rows (issue 7's "ratio against KIVI alone"): cuda::kivi_decode over a cache of
// the same shape (group 32, residual 128, 4/2 and 2/2 bits), records of random codes with finite
// meta, timed the same way; ratio to the λ = 0 ThinK time of the same run.
//
//   bench_think_decode_cuda [--iters N] [--smoke]      exits 77 without a device
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "memattn/cuda/kivi.cuh"
#include "memattn/cuda/think.cuh"
#include "bench_cuda_check.cuh"

namespace {

using memattn::Half;

__global__ void fill(Half* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = memattn::float_to_half(static_cast<float>(z >> 40) * (2.f / 16777216.f) - 1.f);
  }
}

double time_case(int B, int L, float lambda, int iters, bool* ok, float vlambda = 0.f) {
  const int Hq = 32, Hkv = 8, D = 128, recent = 32;
  const int dk = D - static_cast<int>(lambda * D), n_old = L - recent, S = B * Hkv;
  const int dvk = D - static_cast<int>(vlambda * D), v_rows = vlambda > 0.f ? recent : L;
  Half *k_old, *k_new, *v, *v_old = nullptr;
  std::uint8_t *ch, *vch = nullptr;
  int *no, *nn;
  float *q, *o;
  BENCH_CUDA(cudaMalloc(&k_old, sizeof(Half) * static_cast<std::size_t>(S) * n_old * dk));
  BENCH_CUDA(cudaMalloc(&k_new, sizeof(Half) * static_cast<std::size_t>(S) * recent * D));
  BENCH_CUDA(cudaMalloc(&v, sizeof(Half) * static_cast<std::size_t>(S) * v_rows * D));
  BENCH_CUDA(cudaMalloc(&ch, static_cast<std::size_t>(S) * dk));
  BENCH_CUDA(cudaMalloc(&no, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&nn, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&q, sizeof(float) * B * Hq * D));
  BENCH_CUDA(cudaMalloc(&o, sizeof(float) * B * Hq * D));
  fill<<<1024, 256>>>(k_old, static_cast<std::size_t>(S) * n_old * dk, 1);
  fill<<<1024, 256>>>(k_new, static_cast<std::size_t>(S) * recent * D, 2);
  fill<<<1024, 256>>>(v, static_cast<std::size_t>(S) * v_rows * D, 3);
  std::vector<std::uint8_t> hch(static_cast<std::size_t>(S) * dk);
  for (std::size_t i = 0; i < hch.size(); ++i) hch[i] = static_cast<std::uint8_t>((i % dk) * D / dk);
  std::vector<int> hno(S, n_old), hnn(S, recent);
  std::vector<float> hq(static_cast<std::size_t>(B) * Hq * D, 0.01f);
  BENCH_CUDA(cudaMemcpy(ch, hch.data(), hch.size(), cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(no, hno.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(nn, hnn.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(q, hq.data(), sizeof(float) * hq.size(), cudaMemcpyHostToDevice));
  memattn::kernels::ThinKDecodeParams p{k_old, static_cast<long long>(n_old) * dk, dk, ch, dk, k_new,
                                        static_cast<long long>(recent) * D, v, static_cast<long long>(L) * D, no, nn, q, o,
                                        B, Hq, Hkv, D, memattn::cuda::think_scale(D)};
  if (vlambda > 0.f) {
    BENCH_CUDA(cudaMalloc(&v_old, sizeof(Half) * static_cast<std::size_t>(S) * n_old * dvk));
    BENCH_CUDA(cudaMalloc(&vch, static_cast<std::size_t>(S) * dvk));
    fill<<<1024, 256>>>(v_old, static_cast<std::size_t>(S) * n_old * dvk, 4);
    std::vector<std::uint8_t> hv(static_cast<std::size_t>(S) * dvk);
    for (std::size_t i = 0; i < hv.size(); ++i) hv[i] = static_cast<std::uint8_t>((i % dvk) * D / dvk);
    BENCH_CUDA(cudaMemcpy(vch, hv.data(), hv.size(), cudaMemcpyHostToDevice));
    p.v_old = v_old;
    p.v_old_seg_stride = static_cast<long long>(n_old) * dvk;
    p.old_v_row_stride = dvk;
    p.v_channels = vch;
    p.dv_keep = dvk;
    p.v_seg_stride = static_cast<long long>(recent) * D;
  }
  std::size_t ws_bytes = 0;
  void* ws = nullptr;
  if (memattn::cuda::think_decode_workspace_size(p, L, &ws_bytes) != memattn::Status::kSuccess) *ok = false;
  if (ws_bytes) BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < iters + 2; ++i) {
    BENCH_CUDA(cudaEventRecord(a));
    if (memattn::cuda::think_decode(p, L, ws, ws_bytes, nullptr) != memattn::Status::kSuccess) *ok = false;
    BENCH_CUDA(cudaEventRecord(b));
    BENCH_CUDA(cudaEventSynchronize(b));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, a, b));
    if (i >= 2) ms.push_back(t);
  }
  if (ws) BENCH_CUDA(cudaFree(ws));
  std::vector<float> out(static_cast<std::size_t>(B) * Hq * D);
  BENCH_CUDA(cudaMemcpy(out.data(), o, sizeof(float) * out.size(), cudaMemcpyDeviceToHost));
  for (float x : out) *ok = *ok && x == x;
  for (void* ptr : {static_cast<void*>(k_old), static_cast<void*>(k_new), static_cast<void*>(v), static_cast<void*>(ch),
                    static_cast<void*>(no), static_cast<void*>(nn), static_cast<void*>(q), static_cast<void*>(o),
                    static_cast<void*>(v_old), static_cast<void*>(vch)})
    if (ptr) BENCH_CUDA(cudaFree(ptr));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;
}

// Random codes; every 16-bit meta word (scale, zero) set to 2^-4: finite, no NaN/Inf in the decode.
__global__ void fill_records(std::uint8_t* blocks, std::size_t records, memattn::quant::BlockLayout l, std::uint64_t seed) {
  const std::size_t n = records * l.bytes;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t off = i % l.bytes;
    const bool meta = (off >= l.km && off < l.vc) || off >= l.vm;
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z ^= z >> 29;
    blocks[i] = meta ? static_cast<std::uint8_t>(off % 2 ? 0x2C : 0x00) : static_cast<std::uint8_t>(z >> 17);
  }
}

double time_kivi(int B, int L, int bits_k, int bits_v, int iters, bool* ok, double* bytes_read) {
  const int Hq = 32, Hkv = 8, D = 128;
  memattn::quant::KvQuantConfig cfg;
  cfg.head_dim = D;
  cfg.bits_k = bits_k;
  cfg.bits_v = bits_v;
  cfg.group = 32;
  cfg.residual = 128;
  const memattn::quant::BlockLayout lay = memattn::quant::block_layout(cfg);
  const int nq = (L - cfg.residual) / cfg.group * cfg.group, max_blocks = nq / cfg.group + 1;
  const std::size_t records = static_cast<std::size_t>(B) * max_blocks * Hkv;
  const std::size_t ring = static_cast<std::size_t>(B) * (cfg.residual + cfg.group) * Hkv * D;
  std::uint8_t* blocks;
  Half *rk, *rv;
  int* n;
  float *q, *o;
  BENCH_CUDA(cudaMalloc(&blocks, records * lay.bytes));
  BENCH_CUDA(cudaMalloc(&rk, sizeof(Half) * ring));
  BENCH_CUDA(cudaMalloc(&rv, sizeof(Half) * ring));
  BENCH_CUDA(cudaMalloc(&n, sizeof(int) * B));
  BENCH_CUDA(cudaMalloc(&q, sizeof(float) * B * Hq * D));
  BENCH_CUDA(cudaMalloc(&o, sizeof(float) * B * Hq * D));
  fill_records<<<1024, 256>>>(blocks, records, lay, 5);
  fill<<<1024, 256>>>(rk, ring, 6);
  fill<<<1024, 256>>>(rv, ring, 7);
  std::vector<int> hn(B, L);
  std::vector<float> hq(static_cast<std::size_t>(B) * Hq * D, 0.01f);
  BENCH_CUDA(cudaMemcpy(n, hn.data(), sizeof(int) * B, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(q, hq.data(), sizeof(float) * hq.size(), cudaMemcpyHostToDevice));
  const memattn::kernels::KiviCacheView view{cfg, lay, blocks, rk, rv, Hkv, max_blocks};
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < iters + 2; ++i) {
    BENCH_CUDA(cudaEventRecord(a));
    if (memattn::cuda::kivi_decode(view, q, o, n, B, Hq, nullptr) != memattn::Status::kSuccess) *ok = false;
    BENCH_CUDA(cudaEventRecord(b));
    BENCH_CUDA(cudaEventSynchronize(b));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, a, b));
    if (i >= 2) ms.push_back(t);
  }
  std::vector<float> out(static_cast<std::size_t>(B) * Hq * D);
  BENCH_CUDA(cudaMemcpy(out.data(), o, sizeof(float) * out.size(), cudaMemcpyDeviceToHost));
  for (float x : out) *ok = *ok && x == x;
  for (void* ptr : {static_cast<void*>(blocks), static_cast<void*>(rk), static_cast<void*>(rv), static_cast<void*>(n),
                    static_cast<void*>(q), static_cast<void*>(o)})
    BENCH_CUDA(cudaFree(ptr));
  *bytes_read = static_cast<double>(B) * Hkv * (static_cast<double>(nq / cfg.group) * lay.bytes + (L - nq) * 2.0 * D * 2);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  bool smoke = false;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--smoke")) smoke = true, iters = 2;
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
  }
  bool ok = true;
  const std::vector<std::pair<int, int>> shapes = smoke ? std::vector<std::pair<int, int>>{{2, 256}}
                                                        : std::vector<std::pair<int, int>>{{16, 4096}, {16, 65536}, {1, 65536}};
  for (auto [B, L] : shapes) {
    const double base = time_case(B, L, 0.f, iters, &ok);
    for (float lambda : {0.f, 0.4f, 0.5f}) {
      const double us = lambda == 0.f ? base : time_case(B, L, lambda, iters, &ok);
      const int dk = 128 - static_cast<int>(lambda * 128);
      const double bytes = 2.0 * B * 8 * ((L - 32.0) * dk + 32.0 * 128 + L * 128.0);
      std::printf("{\"bench\": \"think_decode\", \"B\": %d, \"L\": %d, \"prune\": %.2f, \"d_keep\": %d, \"us\": %.2f, "
                  "\"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f}\n",
                  B, L, lambda, dk, us, us / base, bytes, bytes / us * 1e-3);
    }
    const double us = time_case(B, L, 0.4f, iters, &ok, 0.4f);
    const int dk = 128 - static_cast<int>(0.4f * 128);
    const double bytes = 2.0 * B * 8 * ((L - 32.0) * 2 * dk + 32.0 * 256);
    std::printf("{\"bench\": \"think_decode\", \"B\": %d, \"L\": %d, \"prune\": 0.40, \"vprune\": 0.40, \"d_keep\": %d, "
                "\"us\": %.2f, \"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f}\n",
                B, L, dk, us, us / base, bytes, bytes / us * 1e-3);
    for (auto [bk, bv] : {std::pair<int, int>{4, 2}, std::pair<int, int>{2, 2}}) {
      double kb = 0;
      const double kus = time_kivi(B, L, bk, bv, iters, &ok, &kb);
      std::printf("{\"bench\": \"kivi_decode\", \"B\": %d, \"L\": %d, \"kbits\": %d, \"vbits\": %d, \"us\": %.2f, "
                  "\"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f}\n",
                  B, L, bk, bv, kus, kus / base, kb, kb / kus * 1e-3);
    }
  }
  return ok ? 0 : 1;
}
