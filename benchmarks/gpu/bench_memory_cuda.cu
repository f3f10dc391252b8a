// CUDA virtual KV memory benchmark (memattn::memory::CudaVmmBackend), one JSON line per result on
// stdout (and in --json PATH), every line starting {"bench": "memory", ...}:
//
//  driver_calls   per chunk size (2 MiB .. 512 MiB): host microseconds of each VMM driver call
//                 per handle (cuMemCreate, cuMemMap, cuMemSetAccess, cuMemUnmap, cuMemRelease),
//                 median over the handles: shows the cost is per handle, not per byte.
//  commit         per chunk size: VirtualBuffer::commit / decommit of one chunk (what a user
//                 pays), without and (2 MiB) with a pre-filled CudaHandlePool.
//  serving_step   64 slots x 32 layers (Hkv 8, D 128, fp16), every slot grows by one 16-token
//                 block per step for 96 steps: per-step host time (mean, p50, max) of
//                 VirtualKvCache::ensure_tokens for the per-layer and interleaved layouts, with
//                 and without a handle pool, against the peer: a paged layout's block allocator
//                 (free-list pop + block-table upload with cudaMemcpyAsync).
//  decode         cuda::dense_decode (fp16, Hq 32 / Hkv 8, D 128, 16 x 4096 tokens) reading a
//                 VirtualKvCache (both layouts) vs an ordinary cudaMalloc cache: kernel time
//                 (CUDA events, median) -- mapping through VMM must not slow the reads.
//
//   bench_memory_cuda [--json PATH] [--smoke]      (--smoke: tiny sizes, for ctest)
// Exits 77 without a CUDA device, 1 when a memattn call fails.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "memattn/cuda/dense_decode.cuh"
#include "bench_cuda_check.cuh"
#include "memattn/memory/cuda_vmm_backend.cuh"
#include "memattn/memory/virtual_kv_cache.hpp"

namespace {

using memattn::Half;
using memattn::Status;
namespace mem = memattn::memory;
namespace mc = memattn::cuda;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMiB = std::size_t{1} << 20;

FILE* g_json = nullptr;
bool g_smoke = false;
std::string g_device;

void emit(const std::string& body) {
  const std::string line = "{\"bench\": \"memory\", \"device\": \"" + g_device + "\", " + body + "}";
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (g_json) {
    std::fprintf(g_json, "%s\n", line.c_str());
    std::fflush(g_json);
  }
}

std::string num(double v, int prec = 2) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

[[noreturn]] void die(const char* what, Status st) {
  std::fprintf(stderr, "bench_memory_cuda: %s -> %s\n", what, memattn::status_message(st));
  std::exit(1);
}

#define BENCH_OK(expr)                  \
  do {                                  \
    const Status st_ = (expr);          \
    if (st_ != Status::kSuccess) die(#expr, st_); \
  } while (0)


double us_since(Clock::time_point t0) { return std::chrono::duration<double, std::micro>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

std::size_t free_device_bytes() {
  std::size_t f = 0, t = 0;
  return cudaMemGetInfo(&f, &t) == cudaSuccess ? f : 0;
}

// ---- driver calls per handle --------------------------------------------------------------------
void bench_driver_calls(int device) {
  mem::detail::CudaVmmDriver drv;
  int dev = device;
  std::size_t min_g = 0, rec = 0;
  BENCH_OK(mem::detail::prepare_vmm_device(drv, &dev, 0, &rec, &min_g));
  mem::detail::ScopedDevice guard;
  BENCH_OK(guard.enter(dev));
  const CUmemAllocationProp prop = mem::detail::device_allocation_prop(dev);
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = dev;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  std::vector<std::size_t> chunks = {2, 4, 8, 16, 32, 64, 128, 256, 512};
  if (g_smoke) chunks = {2, 4};
  for (std::size_t c_mib : chunks) {
    const std::size_t chunk = c_mib * kMiB;
    if (chunk % min_g != 0) continue;
    const std::size_t n = g_smoke ? 2 : std::max<std::size_t>(4, std::min<std::size_t>(32, (std::size_t{2} << 30) / chunk));
    CUdeviceptr base = 0;
    BENCH_OK(mem::status_from_cu(drv.mem_address_reserve(&base, n * chunk, chunk, 0, 0)));
    std::vector<CUmemGenericAllocationHandle> h(n);
    std::vector<double> t_create, t_map, t_access, t_unmap, t_release;
    for (std::size_t i = 0; i < n; ++i) {
      auto t0 = Clock::now();
      BENCH_OK(mem::status_from_cu(drv.mem_create(&h[i], chunk, &prop, 0)));
      t_create.push_back(us_since(t0));
      t0 = Clock::now();
      BENCH_OK(mem::status_from_cu(drv.mem_map(base + i * chunk, chunk, 0, h[i], 0)));
      t_map.push_back(us_since(t0));
      t0 = Clock::now();
      BENCH_OK(mem::status_from_cu(drv.mem_set_access(base + i * chunk, chunk, &access, 1)));
      t_access.push_back(us_since(t0));
    }
    BENCH_CUDA(cudaMemset(reinterpret_cast<void*>(base), 0, n * chunk));  // really usable
    BENCH_CUDA(cudaDeviceSynchronize());
    for (std::size_t i = 0; i < n; ++i) {
      auto t0 = Clock::now();
      BENCH_OK(mem::status_from_cu(drv.mem_unmap(base + i * chunk, chunk)));
      t_unmap.push_back(us_since(t0));
      t0 = Clock::now();
      BENCH_OK(mem::status_from_cu(drv.mem_release(h[i])));
      t_release.push_back(us_since(t0));
    }
    BENCH_OK(mem::status_from_cu(drv.mem_address_free(base, n * chunk)));
    const double total = median(t_create) + median(t_map) + median(t_access) + median(t_unmap) + median(t_release);
    emit("\"kind\": \"driver_calls\", \"chunk_mib\": " + std::to_string(c_mib) + ", \"handles\": " + std::to_string(n) +
         ", \"create_us\": " + num(median(t_create)) + ", \"map_us\": " + num(median(t_map)) +
         ", \"set_access_us\": " + num(median(t_access)) + ", \"unmap_us\": " + num(median(t_unmap)) +
         ", \"release_us\": " + num(median(t_release)) + ", \"total_us\": " + num(total) +
         ", \"total_us_per_mib\": " + num(total / static_cast<double>(c_mib), 3));
  }
}

// ---- VirtualBuffer commit / decommit per chunk ---------------------------------------------------
void bench_commit(std::size_t chunk_mib, bool pooled) {
  const std::size_t chunk = chunk_mib * kMiB;
  const std::size_t n = g_smoke ? 2 : std::max<std::size_t>(4, std::min<std::size_t>(32, (std::size_t{2} << 30) / chunk));
  mem::CudaHandlePool pool;
  mem::CudaVmmOptions opt;
  opt.chunk_bytes = chunk;
  if (pooled) {
    BENCH_OK(pool.init(-1, chunk, n));
    BENCH_OK(pool.prefill(n));
    opt.pool = &pool;
  }
  mem::VirtualBuffer<mem::CudaVmmBackend> buf{mem::CudaVmmBackend{opt}};
  const Status rs = buf.reserve(n * chunk);
  if (rs == Status::kErrorInvalidArgument) return;  // chunk not a multiple of this device's granularity
  BENCH_OK(rs);
  std::vector<double> tc, td;
  for (int rep = 0; rep < 2; ++rep) {
    for (std::size_t i = 0; i < n; ++i) {
      const auto t0 = Clock::now();
      BENCH_OK(buf.commit(i * chunk, chunk));
      tc.push_back(us_since(t0));
    }
    for (std::size_t i = 0; i < n; ++i) {
      const auto t0 = Clock::now();
      BENCH_OK(buf.decommit(i * chunk, chunk));
      td.push_back(us_since(t0));
    }
  }
  emit("\"kind\": \"commit\", \"chunk_mib\": " + std::to_string(chunk_mib) + ", \"pool\": " + (pooled ? "true" : "false") +
       ", \"commit_us\": " + num(median(tc)) + ", \"decommit_us\": " + num(median(td)) +
       ", \"commit_us_per_mib\": " + num(median(tc) / static_cast<double>(chunk_mib), 3));
}

// ---- serving step --------------------------------------------------------------------------------
struct StepStats {
  std::vector<double> us;
  std::size_t commits = 0;
  double trim_us = 0;
  double prefill_us = 0;
};

void report_steps(const char* variant, const StepStats& s, std::int64_t slots, std::int64_t layers,
                  std::int64_t block) {
  std::vector<double> sorted = s.us;
  std::sort(sorted.begin(), sorted.end());
  emit(std::string("\"kind\": \"serving_step\", \"variant\": \"") + variant + "\", \"slots\": " + std::to_string(slots) +
       ", \"layers\": " + std::to_string(layers) + ", \"block_tokens\": " + std::to_string(block) +
       ", \"steps\": " + std::to_string(s.us.size()) + ", \"mean_us\": " + num(mean(s.us)) +
       ", \"p50_us\": " + num(median(s.us)) + ", \"max_us\": " + num(sorted.empty() ? 0 : sorted.back()) +
       ", \"handles_mapped\": " + std::to_string(s.commits) + ", \"trim_all_us\": " + num(s.trim_us) +
       ", \"pool_prefill_us\": " + num(s.prefill_us));
}

void bench_serving(mem::KvLayout layout, bool pooled, std::int64_t slots, std::int64_t layers, std::int64_t steps,
                   std::int64_t block) {
  mem::VirtualKvCacheConfig cfg;
  cfg.slots = slots;
  cfg.layers = layers;
  cfg.kv_heads = 8;
  cfg.head_dim = 128;
  cfg.max_tokens = steps * block;
  cfg.layout = layout;
  StepStats st;
  mem::CudaHandlePool pool;
  mem::CudaVmmOptions opt;
  if (pooled) {
    // Enough handles for the whole run, created before it (off the critical path).
    const std::size_t row = 8 * 128 * 2;
    const std::size_t per_slot = layout == mem::KvLayout::kPerLayer
                                     ? static_cast<std::size_t>(2 * layers) * ((steps * block * row + 2 * kMiB - 1) / (2 * kMiB))
                                     : (steps * block * row * 2 * layers + 2 * kMiB - 1) / (2 * kMiB);
    const std::size_t handles = per_slot * static_cast<std::size_t>(slots);
    BENCH_OK(pool.init(-1, 0, handles));
    const auto t0 = Clock::now();
    BENCH_OK(pool.prefill(handles));
    st.prefill_us = us_since(t0);
    opt.pool = &pool;
  }
  {
    mem::VirtualKvCache<mem::CudaVmmBackend> kv;
    BENCH_OK(kv.init(cfg, mem::CudaVmmBackend{opt}));
    for (std::int64_t step = 0; step < steps; ++step) {
      const std::size_t before = kv.buffer().committed_granules();
      const auto t0 = Clock::now();
      for (std::int64_t s = 0; s < slots; ++s) BENCH_OK(kv.ensure_tokens(s, (step + 1) * block));
      st.us.push_back(us_since(t0));
      st.commits += kv.buffer().committed_granules() - before;
    }
    const auto t0 = Clock::now();
    for (std::int64_t s = 0; s < slots; ++s) BENCH_OK(kv.trim(s, 0));
    st.trim_us = us_since(t0);
  }
  report_steps(layout == mem::KvLayout::kPerLayer ? (pooled ? "per_layer+pool" : "per_layer")
                                                  : (pooled ? "interleaved+pool" : "interleaved"),
               st, slots, layers, block);
}

// The peer: a paged layout's block allocator (pages preallocated; one page id per slot per block,
// shared by all layers as in vLLM), with the new block-table column uploaded each step.
void bench_serving_paged(std::int64_t slots, std::int64_t layers, std::int64_t steps, std::int64_t block) {
  std::vector<std::int32_t> free_list(static_cast<std::size_t>(slots * steps));
  for (std::size_t i = 0; i < free_list.size(); ++i) free_list[i] = static_cast<std::int32_t>(i);
  std::int32_t* table_host = nullptr;
  std::int32_t* table_dev = nullptr;
  BENCH_CUDA(cudaMallocHost(&table_host, free_list.size() * sizeof(std::int32_t)));
  BENCH_CUDA(cudaMalloc(&table_dev, free_list.size() * sizeof(std::int32_t)));
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  StepStats st;
  std::size_t top = free_list.size();
  for (std::int64_t step = 0; step < steps; ++step) {
    const auto t0 = Clock::now();
    for (std::int64_t s = 0; s < slots; ++s) table_host[s * steps + step] = free_list[--top];
    // Upload the whole table (a real engine uploads what changed; this is the upper bound).
    BENCH_CUDA(cudaMemcpyAsync(table_dev, table_host, free_list.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice,
                               stream));
    BENCH_CUDA(cudaStreamSynchronize(stream));
    st.us.push_back(us_since(t0));
  }
  report_steps("paged_peer", st, slots, layers, block);
  BENCH_CUDA(cudaStreamDestroy(stream));
  BENCH_CUDA(cudaFree(table_dev));
  BENCH_CUDA(cudaFreeHost(table_host));
}

// ---- decode on the virtual cache vs a plain allocation ------------------------------------------
float time_decode(const memattn::attention::DecodeArgs<Half>& a, void* ws, std::size_t ws_bytes, int iters) {
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) BENCH_OK(mc::dense_decode(a, ws, ws_bytes, cudaStream_t{0}));
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    BENCH_CUDA(cudaEventRecord(e0));
    BENCH_OK(mc::dense_decode(a, ws, ws_bytes, cudaStream_t{0}));
    BENCH_CUDA(cudaEventRecord(e1));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1000.0);
  }
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  return static_cast<float>(median(t));
}

void bench_decode() {
  const std::int64_t B = g_smoke ? 2 : 16, L = g_smoke ? 256 : 4096, Hq = 32, Hkv = 8, D = 128;
  const std::int64_t layers = g_smoke ? 2 : 8;  // interleaved: token stride = layers * 2 rows
  const int iters = g_smoke ? 2 : 20;
  Half* q = nullptr;
  Half* o = nullptr;
  std::int32_t* lens = nullptr;
  BENCH_CUDA(cudaMalloc(&q, B * Hq * D * sizeof(Half)));
  BENCH_CUDA(cudaMalloc(&o, B * Hq * D * sizeof(Half)));
  BENCH_CUDA(cudaMalloc(&lens, B * sizeof(std::int32_t)));
  BENCH_CUDA(cudaMemset(q, 0x3c, B * Hq * D * sizeof(Half)));  // fp16 0x3c3c ~ 1.06
  std::vector<std::int32_t> hl(static_cast<std::size_t>(B), static_cast<std::int32_t>(L));
  BENCH_CUDA(cudaMemcpy(lens, hl.data(), B * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  const double kv_bytes = 2.0 * B * Hkv * L * D * sizeof(Half);

  memattn::attention::DecodeArgs<Half> a;
  a.q = memattn::make_view<4>(static_cast<const Half*>(q), {B, 1, Hq, D});
  a.o = memattn::make_view<4>(o, {B, 1, Hq, D});
  a.seq_lens = lens;
  a.seq_lens_host = hl.data();

  auto run = [&](const char* variant, const memattn::TensorView<const Half, 4>& k,
                 const memattn::TensorView<const Half, 4>& v) {
    a.k_cache = k;
    a.v_cache = v;
    std::size_t ws_bytes = 0;
    BENCH_OK(mc::dense_decode_workspace_size(a, &ws_bytes));
    void* ws = nullptr;
    if (ws_bytes) BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
    const float us = time_decode(a, ws, ws_bytes, iters);
    if (ws) BENCH_CUDA(cudaFree(ws));
    emit(std::string("\"kind\": \"decode\", \"variant\": \"") + variant + "\", \"B\": " + std::to_string(B) +
         ", \"L\": " + std::to_string(L) + ", \"us\": " + num(us, 1) + ", \"tbps\": " + num(kv_bytes / (us * 1e-6) / 1e12, 3));
    return us;
  };

  // Plain: one cudaMalloc, token-major [B, L, Hkv, D] seen as [B, Hkv, L, D] (the per-layer layout's strides).
  Half* plain = nullptr;
  BENCH_CUDA(cudaMalloc(&plain, 2 * B * L * Hkv * D * sizeof(Half)));
  BENCH_CUDA(cudaMemset(plain, 0x3c, 2 * B * L * Hkv * D * sizeof(Half)));
  const auto pk = memattn::make_strided_view<4>(static_cast<const Half*>(plain), {B, Hkv, L, D}, {L * Hkv * D, D, Hkv * D, 1});
  const auto pv = memattn::make_strided_view<4>(static_cast<const Half*>(plain) + B * L * Hkv * D, {B, Hkv, L, D},
                                                {L * Hkv * D, D, Hkv * D, 1});
  const float plain_us = run("plain_cudamalloc", pk, pv);
  BENCH_CUDA(cudaFree(plain));

  for (mem::KvLayout layout : {mem::KvLayout::kPerLayer, mem::KvLayout::kInterleaved}) {
    mem::VirtualKvCacheConfig cfg;
    cfg.slots = B;
    cfg.layers = layout == mem::KvLayout::kPerLayer ? 1 : layers;
    cfg.kv_heads = Hkv;
    cfg.head_dim = D;
    cfg.max_tokens = L;
    cfg.layout = layout;
    mem::VirtualKvCache<mem::CudaVmmBackend> kv;
    BENCH_OK(kv.init(cfg));
    for (std::int64_t s = 0; s < B; ++s) BENCH_OK(kv.ensure_tokens(s, L));
    BENCH_CUDA(cudaMemset(kv.buffer().data(), 0x3c, kv.buffer().size()));  // all of it is committed
    memattn::TensorView<const Half, 4> k, v;
    BENCH_OK(kv.layer_views<const Half>(0, 0, B, &k, &v));
    const float us = run(layout == mem::KvLayout::kPerLayer ? "virtual_per_layer" : "virtual_interleaved", k, v);
    emit(std::string("\"kind\": \"decode_ratio\", \"variant\": \"") +
         (layout == mem::KvLayout::kPerLayer ? "virtual_per_layer" : "virtual_interleaved") +
         "\", \"virtual_over_plain\": " + num(us / plain_us, 3));
    BENCH_CUDA(cudaDeviceSynchronize());
  }
  BENCH_CUDA(cudaFree(q));
  BENCH_CUDA(cudaFree(o));
  BENCH_CUDA(cudaFree(lens));
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--smoke") {
      g_smoke = true;
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--smoke]\n", argv[0]);
      return 2;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  int device = 0;
  BENCH_CUDA(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, device));
  g_device = prop.name;
  if (!json_path.empty()) {
    g_json = std::fopen(json_path.c_str(), "w");
    if (!g_json) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 2;
    }
  }
  const auto t0 = Clock::now();
  bench_driver_calls(device);
  const std::vector<std::size_t> chunks = g_smoke ? std::vector<std::size_t>{2} : std::vector<std::size_t>{2, 8, 32, 128, 512};
  for (std::size_t c : chunks) bench_commit(c, false);
  bench_commit(2, true);

  const std::int64_t slots = g_smoke ? 4 : 64, layers = g_smoke ? 2 : 32, steps = g_smoke ? 4 : 96, block = 16;
  const std::size_t free_before = free_device_bytes();
  for (mem::KvLayout layout : {mem::KvLayout::kPerLayer, mem::KvLayout::kInterleaved})
    for (bool pooled : {false, true}) bench_serving(layout, pooled, slots, layers, steps, block);
  bench_serving_paged(slots, layers, steps, block);
  const std::size_t free_after = free_device_bytes();
  emit("\"kind\": \"leak_check\", \"free_before_mib\": " + num(free_before / double(kMiB), 0) +
       ", \"free_after_mib\": " + num(free_after / double(kMiB), 0));

  bench_decode();
  emit("\"kind\": \"done\", \"seconds\": " + num(us_since(t0) * 1e-6, 1));
  if (g_json) std::fclose(g_json);
  return 0;
}
