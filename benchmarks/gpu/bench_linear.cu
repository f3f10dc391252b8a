// GPU linear / Lightning attention benchmark (spec §7): chunked prefill on B = 1, H = 32,
// D = 128, bf16 I/O, fp32 state, TNL decay of layer 0 of 24 and scale 1/√128 (the peer's
// setting: benchmarks/gpu/linear_peer.py times fla's chunk_lightning_attn and PyTorch SDPA flash
// on the same shapes), T = 2K..64K: stateless (G1, like the peer), stateful (pool in and out),
// and each forced schedule. Decode steps (G4) on (B, H) = (64, 32), (16, 64), (64, 64), (256, 64)
// rotating over state pools of >= 256 MB, and a 2 GiB device-to-device copy as the bandwidth
// reference of the same run. CUDA events around the call only (workspace prepared beforehand),
// 5 warm-ups, median of --iters (default 20). One JSON line per measurement on stdout (and in
// --json PATH). Exits 77 without a device.
//   bench_linear_cuda [--json PATH] [--iters N] [--smoke]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "memattn/cuda/linear_attention.cuh"
#include "bench_cuda_check.cuh"

namespace {

using memattn::BFloat16;
using memattn::Status;
namespace mc = memattn::cuda;
namespace ml = memattn::linear;


__global__ void fill_normalish(BFloat16* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.f / 16777216.f);
    p[i] = memattn::float_to_bfloat16(3.4641016f * (u - 0.5f));  // unit variance
  }
}

__global__ void count_nonfinite(const BFloat16* p, std::size_t n, unsigned* bad) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    if (!isfinite(memattn::bfloat16_to_float(p[i]))) atomicAdd(bad, 1u);
}

struct Options {
  std::string json;
  int iters = 20, warmup = 5;
  bool smoke = false;
};

FILE* g_json = nullptr;
std::string g_device;

void emit(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (g_json) {
    std::fprintf(g_json, "%s\n", line.c_str());
    std::fflush(g_json);
  }
}

template <class F>
double median_us(F&& f, int warmup, int iters) {
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) f(i);
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    BENCH_CUDA(cudaEventRecord(a));
    f(warmup + i);
    BENCH_CUDA(cudaEventRecord(b));
    BENCH_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e3);
  }
  BENCH_CUDA(cudaEventDestroy(a));
  BENCH_CUDA(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double copy_bandwidth(const Options& o) {
  const std::size_t bytes = o.smoke ? (64u << 20) : (std::size_t{2} << 30);
  void *src = nullptr, *dst = nullptr;
  BENCH_CUDA(cudaMalloc(&src, bytes));
  BENCH_CUDA(cudaMalloc(&dst, bytes));
  BENCH_CUDA(cudaMemset(src, 1, bytes));
  const double us = median_us([&](int) { BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); },
                              o.warmup, o.iters);
  BENCH_CUDA(cudaFree(src));
  BENCH_CUDA(cudaFree(dst));
  const double gbps = 2.0 * bytes / (us * 1e-6) * 1e-9;
  char buf[256];
  std::snprintf(buf, sizeof buf, "{\"bench\":\"copy\",\"device\":\"%s\",\"bytes\":%zu,\"us\":%.3f,\"GBps\":%.1f}",
                g_device.c_str(), bytes, us, gbps);
  emit(buf);
  return gbps;
}

int prefill(const Options& o, std::int64_t T, const char* variant, ml::Schedule sched, bool stateful, double copy_gbps) {
  const std::int64_t H = 32, D = 128;
  const std::size_t n = static_cast<std::size_t>(T * H * D);
  BFloat16 *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
  float *pool = nullptr, *decay = nullptr;
  BENCH_CUDA(cudaMalloc(&q, n * 2));
  BENCH_CUDA(cudaMalloc(&k, n * 2));
  BENCH_CUDA(cudaMalloc(&v, n * 2));
  BENCH_CUDA(cudaMalloc(&out, n * 2));
  BENCH_CUDA(cudaMalloc(&pool, static_cast<std::size_t>(H * D * D) * 4));
  BENCH_CUDA(cudaMalloc(&decay, H * 4));
  fill_normalish<<<1024, 256>>>(q, n, 1);
  fill_normalish<<<1024, 256>>>(k, n, 2);
  fill_normalish<<<1024, 256>>>(v, n, 3);
  BENCH_CUDA(cudaMemset(pool, 0, static_cast<std::size_t>(H * D * D) * 4));
  const std::vector<float> rates = ml::decay_rates_tnl(static_cast<int>(H), 0, 24);
  BENCH_CUDA(cudaMemcpy(decay, rates.data(), H * 4, cudaMemcpyHostToDevice));
  ml::LinearArgs<BFloat16> a;
  a.q = memattn::make_view<3>(static_cast<const BFloat16*>(q), {T, H, D});
  a.k = memattn::make_view<3>(static_cast<const BFloat16*>(k), {T, H, D});
  a.v = memattn::make_view<3>(static_cast<const BFloat16*>(v), {T, H, D});
  a.o = memattn::make_view<3>(out, {T, H, D});
  a.seq.num_seqs = 1;
  a.decay_rate = decay;
  a.host.decay_rate = rates.data();
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  a.schedule = sched;
  if (stateful) {
    a.state.pool = pool;
    a.state.num_slots = 1;
  }
  mc::LinearPlan plan;
  std::size_t bytes = 0;
  if (mc::linear_prefill_plan(a, &plan) != Status::kSuccess || mc::linear_prefill_workspace_size(a, &bytes) != Status::kSuccess) {
    std::fprintf(stderr, "prefill T=%lld: plan failed\n", static_cast<long long>(T));
    return 1;
  }
  void* ws = nullptr;
  if (bytes) BENCH_CUDA(cudaMalloc(&ws, bytes));
  Status st = Status::kSuccess;
  const double us = median_us([&](int) { st = mc::linear_prefill(a, ws, bytes, nullptr); }, o.warmup, o.iters);
  BENCH_CUDA(cudaDeviceSynchronize());
  unsigned* bad = nullptr;
  BENCH_CUDA(cudaMallocManaged(&bad, 4));
  *bad = 0;
  count_nonfinite<<<1024, 256>>>(out, n, bad);
  BENCH_CUDA(cudaDeviceSynchronize());
  const double model_bytes = 4.0 * n * 2;  // q, k, v read, o written
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"bench\":\"prefill\",\"variant\":\"%s\",\"device\":\"%s\",\"B\":1,\"T\":%lld,\"H\":%lld,\"D\":%lld,"
                "\"us\":%.3f,\"tokens_per_s\":%.4g,\"model_bytes\":%.0f,\"GBps\":%.1f,\"pct_copy_bw\":%.1f,"
                "\"path\":\"%s\",\"L_seg\":%d,\"ctas\":%lld,\"smem\":%d,\"status\":\"%s\",\"nonfinite\":%u}",
                variant, g_device.c_str(), static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(D),
                us, T / (us * 1e-6), model_bytes, model_bytes / (us * 1e-6) * 1e-9,
                100.0 * model_bytes / (us * 1e-6) * 1e-9 / copy_gbps,
                plan.path == ml::Schedule::kSinglePass ? "single" : "seqpar", plan.seg_len,
                static_cast<long long>(plan.ctas), plan.smem_bytes, memattn::status_message(st), *bad);
  emit(buf);
  const int rc = st == Status::kSuccess && *bad == 0 ? 0 : 1;
  cudaFree(bad);
  cudaFree(ws);
  cudaFree(q);
  cudaFree(k);
  cudaFree(v);
  cudaFree(out);
  cudaFree(pool);
  cudaFree(decay);
  return rc;
}

int decode(const Options& o, std::int64_t B, std::int64_t H, double copy_gbps) {
  const std::int64_t D = 128;
  const std::size_t tok = static_cast<std::size_t>(B * H * D);
  const std::size_t pool_floats = static_cast<std::size_t>(B * H * D * D);
  const std::size_t min_total = o.smoke ? 0 : (std::size_t{256} << 20);
  const int pools = static_cast<int>(std::max<std::size_t>(2, (min_total + pool_floats * 4 - 1) / (pool_floats * 4)));
  BFloat16 *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
  float* decay = nullptr;
  std::vector<float*> pool(static_cast<std::size_t>(pools));
  BENCH_CUDA(cudaMalloc(&q, tok * 2));
  BENCH_CUDA(cudaMalloc(&k, tok * 2));
  BENCH_CUDA(cudaMalloc(&v, tok * 2));
  BENCH_CUDA(cudaMalloc(&out, tok * 2));
  for (auto& p : pool) {
    BENCH_CUDA(cudaMalloc(&p, pool_floats * 4));
    BENCH_CUDA(cudaMemset(p, 0, pool_floats * 4));
  }
  fill_normalish<<<256, 256>>>(q, tok, 1);
  fill_normalish<<<256, 256>>>(k, tok, 2);
  fill_normalish<<<256, 256>>>(v, tok, 3);
  const std::vector<float> rates = ml::decay_rates_minimax(static_cast<int>(H), 0, 8);
  BENCH_CUDA(cudaMalloc(&decay, H * 4));
  BENCH_CUDA(cudaMemcpy(decay, rates.data(), H * 4, cudaMemcpyHostToDevice));
  ml::LinearArgs<BFloat16> a;
  a.q = memattn::make_view<3>(static_cast<const BFloat16*>(q), {B, H, D});
  a.k = memattn::make_view<3>(static_cast<const BFloat16*>(k), {B, H, D});
  a.v = memattn::make_view<3>(static_cast<const BFloat16*>(v), {B, H, D});
  a.o = memattn::make_view<3>(out, {B, H, D});
  a.seq.num_seqs = B;
  a.decay_rate = decay;
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  a.state.num_slots = B;
  Status st = Status::kSuccess;
  const double us = median_us(
      [&](int i) {
        a.state.pool = pool[static_cast<std::size_t>(i % pools)];
        st = mc::linear_decode(a, nullptr);
      },
      o.warmup, o.iters);
  const double state_bytes = 2.0 * pool_floats * 4;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"bench\":\"decode\",\"device\":\"%s\",\"B\":%lld,\"H\":%lld,\"D\":%lld,\"us\":%.3f,"
                "\"state_bytes\":%.0f,\"GBps\":%.1f,\"pct_copy_bw\":%.1f,\"pools\":%d,\"status\":\"%s\"}",
                g_device.c_str(), static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(D), us,
                state_bytes, state_bytes / (us * 1e-6) * 1e-9, 100.0 * state_bytes / (us * 1e-6) * 1e-9 / copy_gbps,
                pools, memattn::status_message(st));
  emit(buf);
  for (auto p : pool) cudaFree(p);
  cudaFree(q);
  cudaFree(k);
  cudaFree(v);
  cudaFree(out);
  cudaFree(decay);
  return st == Status::kSuccess ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) o.json = argv[++i];
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) o.iters = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--smoke")) o.smoke = true;
    else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--iters N] [--smoke]\n", argv[0]);
      return 2;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  g_device = prop.name;
  if (o.smoke) {
    o.iters = 2;
    o.warmup = 1;
  }
  if (!o.json.empty()) g_json = std::fopen(o.json.c_str(), "w");
  const double bw = copy_bandwidth(o);
  int rc = 0;
  const std::vector<std::int64_t> Ts = o.smoke ? std::vector<std::int64_t>{2048}
                                               : std::vector<std::int64_t>{2048, 4096, 8192, 16384, 32768, 65536};
  for (std::int64_t T : Ts) {
    rc |= prefill(o, T, "default", ml::Schedule::kAuto, false, bw);
    if (o.smoke) continue;
    rc |= prefill(o, T, "stateful", ml::Schedule::kAuto, true, bw);
    rc |= prefill(o, T, "single_pass", ml::Schedule::kSinglePass, false, bw);
  }
  const std::vector<std::pair<std::int64_t, std::int64_t>> dec =
      o.smoke ? std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 8}}
              : std::vector<std::pair<std::int64_t, std::int64_t>>{{64, 32}, {16, 64}, {64, 64}, {256, 64}};
  for (auto [B, H] : dec) rc |= decode(o, B, H, bw);
  if (g_json) std::fclose(g_json);
  return rc;
}
