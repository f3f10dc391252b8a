// CudaVmmBackend / VirtualBuffer / VirtualKvCache on the GPU (a GPU session runs this; without a
// device the binary exits 77 before Catch starts):
//  * reserve 1 GiB, grow and shrink, stable base pointer, data kept across growth, memory given
//    back to the device (cudaMemGetInfo measured);
//  * bad input: misaligned, past the reservation, double decommit, reserve beyond the address
//    space, bad chunk sizes, a pool of another chunk size;
//  * commit when device memory runs out: kErrorOutOfMemory, nothing committed lost, buffer usable;
//  * chunk size option and the handle pool (driver calls counted);
//  * the dense decode kernel reading a VirtualKvCache (both layouts) gives bitwise the result it
//    gives on a plain cudaMalloc cache, and matches the CPU path;
//  * a CUDA graph captured over the virtual cache stays valid across commits and trims.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common/test_data.hpp"
#include "gpu/cpu_bridge.hpp"
#include "memattn/cuda/dense_decode.cuh"
#include "memattn/memory/cuda_vmm_backend.cuh"
#include "memattn/memory/virtual_kv_cache.hpp"
#include "row_error.hpp"

using memattn::Half;
using memattn::Status;
using memattn::memory::CudaHandlePool;
using memattn::memory::CudaVmmBackend;
using memattn::memory::CudaVmmOptions;
using memattn::memory::KvLayout;
using memattn::memory::VirtualBuffer;
using memattn::memory::VirtualKvCache;
using memattn::memory::VirtualKvCacheConfig;
namespace mc = memattn::cuda;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;

#define CUDA_REQUIRE(expr)                                 \
  do {                                                     \
    const cudaError_t e_ = (expr);                         \
    INFO(#expr << ": " << cudaGetErrorString(e_));         \
    REQUIRE(e_ == cudaSuccess);                            \
  } while (0)

std::size_t free_device_bytes() {
  std::size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  return free_b;
}

std::size_t total_device_bytes() {
  std::size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  return total_b;
}

unsigned char read_byte(const unsigned char* dev) {
  unsigned char b = 0;
  CUDA_REQUIRE(cudaMemcpy(&b, dev, 1, cudaMemcpyDeviceToHost));
  return b;
}

template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(std::size_t n) { CUDA_REQUIRE(cudaMalloc(&ptr, std::max<std::size_t>(1, n) * sizeof(T))); }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

}  // namespace

TEST_CASE("CUDA VirtualBuffer: reserve 1 GiB, grow, shrink, stable pointer, data kept", "[memory]") {
  VirtualBuffer<CudaVmmBackend> buf;
  REQUIRE(buf.reserve(kGiB) == Status::kSuccess);
  const std::size_t G = buf.granularity();
  std::printf("VMM granularity (recommended): %zu KiB, minimum %zu KiB\n", G / 1024,
              buf.backend().min_granularity() / 1024);
  REQUIRE(G % buf.backend().min_granularity() == 0);
  REQUIRE(buf.size() == kGiB);
  unsigned char* const base = buf.bytes();
  REQUIRE(base != nullptr);

  const std::size_t n = std::min<std::size_t>(64, kGiB / G);
  const std::size_t free0 = free_device_bytes();
  for (std::size_t g = 0; g < n; ++g) {
    REQUIRE(buf.commit(0, (g + 1) * G) == Status::kSuccess);
    REQUIRE(buf.bytes() == base);
    CUDA_REQUIRE(cudaMemset(base + g * G, static_cast<int>(g + 1), G));
  }
  CUDA_REQUIRE(cudaDeviceSynchronize());
  REQUIRE(buf.committed_bytes() == n * G);
  REQUIRE(buf.backend().stats().creates == n);
  const std::size_t free_committed = free_device_bytes();
  for (std::size_t g = 0; g < n; ++g) {
    REQUIRE(read_byte(base + g * G) == static_cast<unsigned char>(g + 1));
    REQUIRE(read_byte(base + g * G + G - 1) == static_cast<unsigned char>(g + 1));
  }

  REQUIRE(buf.decommit(n / 2 * G, (n - n / 2) * G) == Status::kSuccess);
  REQUIRE(buf.decommit(n / 2 * G, (n - n / 2) * G) == Status::kSuccess);  // double decommit: no-op
  REQUIRE(buf.committed_bytes() == n / 2 * G);
  const std::size_t free_shrunk = free_device_bytes();
  for (std::size_t g = 0; g < n / 2; ++g) REQUIRE(read_byte(base + g * G) == static_cast<unsigned char>(g + 1));

  REQUIRE(buf.commit(0, n * G) == Status::kSuccess);  // regrow: the kept half still holds its data
  for (std::size_t g = 0; g < n / 2; ++g) REQUIRE(read_byte(base + g * G) == static_cast<unsigned char>(g + 1));
  REQUIRE(buf.bytes() == base);
  REQUIRE(buf.decommit_all() == Status::kSuccess);
  const std::size_t free_end = free_device_bytes();
  std::printf("device free: before %.1f MiB, %zu chunks committed %.1f MiB, half decommitted %.1f MiB, all %.1f MiB\n",
              free0 / double(kMiB), n, free_committed / double(kMiB), free_shrunk / double(kMiB), free_end / double(kMiB));
  CHECK(free0 - free_committed >= n * G - 4 * G);             // the commits took device memory ...
  CHECK(free_shrunk - free_committed >= (n - n / 2) * G - 4 * G);  // ... and decommit gave it back
  CHECK(free_end + 4 * G >= free0);
}

TEST_CASE("CUDA VirtualBuffer: bad input", "[memory][bad_input]") {
  VirtualBuffer<CudaVmmBackend> buf;
  REQUIRE(buf.reserve(std::size_t{1} << 62) == Status::kErrorOutOfMemory);  // beyond the address space
  REQUIRE(!buf.reserved());
  REQUIRE(buf.reserve(64 * kMiB) == Status::kSuccess);  // usable after the failure
  const std::size_t G = buf.granularity();
  REQUIRE(buf.commit(0, G) == Status::kSuccess);
  CUDA_REQUIRE(cudaMemset(buf.data(), 0x7b, G));
  REQUIRE(buf.commit(1, G) == Status::kErrorInvalidArgument);
  REQUIRE(buf.commit(0, G / 2) == Status::kErrorInvalidArgument);
  REQUIRE(buf.decommit(G / 2, G) == Status::kErrorInvalidArgument);
  REQUIRE(buf.commit(buf.size(), G) == Status::kErrorCapacityExceeded);
  REQUIRE(buf.commit(buf.size() - G, 2 * G) == Status::kErrorCapacityExceeded);
  REQUIRE(buf.decommit(G, G) == Status::kSuccess);  // never committed: no-op
  REQUIRE(buf.committed_bytes() == G);
  REQUIRE(read_byte(buf.bytes()) == 0x7b);

  for (std::size_t chunk : {std::size_t{1}, G / 2, G + G / 2}) {
    CudaVmmOptions opt;
    opt.chunk_bytes = chunk;
    VirtualBuffer<CudaVmmBackend> b{CudaVmmBackend{opt}};
    REQUIRE(b.reserve(64 * kMiB) == Status::kErrorInvalidArgument);
  }
  {
    CudaVmmOptions opt;
    opt.device = 1 << 20;
    VirtualBuffer<CudaVmmBackend> b{CudaVmmBackend{opt}};
    REQUIRE(b.reserve(64 * kMiB) == Status::kErrorInvalidArgument);
  }
  {
    CudaHandlePool pool;
    REQUIRE(pool.init(-1, 2 * G, 4) == Status::kSuccess);
    CudaVmmOptions opt;
    opt.pool = &pool;  // chunk_bytes 0 = G != the pool's 2G
    VirtualBuffer<CudaVmmBackend> b{CudaVmmBackend{opt}};
    REQUIRE(b.reserve(64 * kMiB) == Status::kErrorInvalidArgument);
    REQUIRE(pool.init(-1, G, 4) == Status::kErrorInvalidArgument);  // twice
    CudaHandlePool empty;
    REQUIRE(empty.init(-1, G, 0) == Status::kErrorInvalidArgument);
    REQUIRE(empty.prefill(1) == Status::kErrorNullPointer);
  }
}

TEST_CASE("CUDA VirtualBuffer: commit when device memory runs out", "[memory][oom]") {
  // 1 GiB chunks keep the number of driver calls small; reserve twice the device's memory.
  CudaVmmOptions opt;
  opt.chunk_bytes = kGiB;
  VirtualBuffer<CudaVmmBackend> buf{CudaVmmBackend{opt}};
  const std::size_t total = total_device_bytes();
  REQUIRE(total > 0);
  REQUIRE(buf.reserve(2 * total) == Status::kSuccess);
  const std::size_t G = buf.granularity();
  REQUIRE(G == kGiB);
  REQUIRE(buf.commit(0, G) == Status::kSuccess);
  CUDA_REQUIRE(cudaMemset(buf.data(), 0x42, G));
  CUDA_REQUIRE(cudaDeviceSynchronize());
  const std::size_t free0 = free_device_bytes();

  // All at once: fails, and everything this call mapped is undone.
  REQUIRE(buf.commit(0, buf.size()) == Status::kErrorOutOfMemory);
  REQUIRE(buf.committed_bytes() == G);
  REQUIRE(read_byte(buf.bytes()) == 0x42);
  REQUIRE(read_byte(buf.bytes() + G - 1) == 0x42);
  CHECK(free_device_bytes() + 2 * G >= free0);  // nothing leaked

  // One chunk at a time until the device is full: the last one fails, the rest stay usable.
  std::size_t g = 1;
  Status st = Status::kSuccess;
  for (; g < buf.granule_count(); ++g) {
    st = buf.commit(g * G, G);
    if (st != Status::kSuccess) break;
  }
  std::printf("committed %zu GiB chunks before running out (device %.1f GiB)\n", g, total / double(kGiB));
  REQUIRE(st == Status::kErrorOutOfMemory);
  REQUIRE(buf.committed_granules() == g);
  REQUIRE(read_byte(buf.bytes()) == 0x42);
  // Free one chunk (so kernels have room again), use the others, and the failed commit succeeds.
  REQUIRE(g >= 3);
  REQUIRE(buf.decommit((g - 1) * G, G) == Status::kSuccess);
  CUDA_REQUIRE(cudaMemset(buf.bytes() + (g - 2) * G, 0x17, G));
  CUDA_REQUIRE(cudaDeviceSynchronize());
  REQUIRE(read_byte(buf.bytes() + (g - 2) * G + 5) == 0x17);
  REQUIRE(buf.commit(g * G, G) == Status::kSuccess);
  REQUIRE(read_byte(buf.bytes()) == 0x42);
  REQUIRE(buf.decommit_all() == Status::kSuccess);
  CHECK(free_device_bytes() + 2 * G >= free0 + G);
}

TEST_CASE("CUDA VirtualBuffer: chunk size and handle pool", "[memory][pool]") {
  std::size_t G = 0;
  {
    VirtualBuffer<CudaVmmBackend> probe;
    REQUIRE(probe.reserve(64 * kMiB) == Status::kSuccess);
    G = probe.granularity();
  }
  {
    CudaVmmOptions opt;
    opt.chunk_bytes = 4 * G;
    VirtualBuffer<CudaVmmBackend> buf{CudaVmmBackend{opt}};
    REQUIRE(buf.reserve(64 * kMiB) == Status::kSuccess);
    REQUIRE(buf.granularity() == 4 * G);
    REQUIRE(buf.commit(0, 8 * G) == Status::kSuccess);
    REQUIRE(buf.backend().stats().creates == 2);  // one handle per chunk
    REQUIRE(buf.backend().stats().maps == 2);
    REQUIRE(buf.backend().stats().set_access == 1);  // one access call per run
  }
  CudaHandlePool pool;
  REQUIRE(pool.init(-1, 0, 16) == Status::kSuccess);
  REQUIRE(pool.chunk_bytes() == G);
  REQUIRE(pool.prefill(8) == Status::kSuccess);
  REQUIRE(pool.size() == 8);
  REQUIRE(pool.created() == 8);
  {
    CudaVmmOptions opt;
    opt.pool = &pool;
    VirtualBuffer<CudaVmmBackend> buf{CudaVmmBackend{opt}};
    REQUIRE(buf.reserve(256 * kMiB) == Status::kSuccess);
    REQUIRE(buf.commit(0, 4 * G) == Status::kSuccess);
    REQUIRE(buf.backend().stats().pool_takes == 4);
    REQUIRE(buf.backend().stats().creates == 0);
    REQUIRE(pool.size() == 4);
    CUDA_REQUIRE(cudaMemset(buf.data(), 1, 4 * G));
    REQUIRE(buf.decommit(0, 4 * G) == Status::kSuccess);
    REQUIRE(buf.backend().stats().pool_gives == 4);
    REQUIRE(buf.backend().stats().releases == 0);
    REQUIRE(pool.size() == 8);
    REQUIRE(buf.commit(0, 20 * G) == Status::kSuccess);  // 8 from the pool, 12 created
    REQUIRE(buf.backend().stats().pool_takes == 12);
    REQUIRE(buf.backend().stats().creates == 12);
    REQUIRE(pool.size() == 0);
    REQUIRE(buf.decommit(0, 20 * G) == Status::kSuccess);  // 16 kept (capacity), 4 released
    REQUIRE(pool.size() == 16);
    REQUIRE(buf.backend().stats().releases == 4);
  }  // the buffer goes before the pool
  const std::size_t free_pooled = free_device_bytes();
  pool.clear();
  REQUIRE(pool.size() == 0);
  CHECK(free_device_bytes() >= free_pooled + 16 * G - 2 * G);
}

namespace {

// Token rows of K/V for every (slot, layer, kind) in host memory, [len, Hkv, D] each.
struct HostKv {
  std::vector<std::vector<Half>> rows;  // index ((slot * layers + layer) * 2 + kind)
};

void upload_tokens(const VirtualKvCache<CudaVmmBackend>& kv, const HostKv& h, std::int64_t slot, std::int64_t t0,
                   std::int64_t t1) {
  const auto& c = kv.config();
  const std::size_t row = static_cast<std::size_t>(c.kv_heads * c.head_dim) * sizeof(Half);
  for (std::int64_t l = 0; l < c.layers; ++l)
    for (int kind = 0; kind < 2; ++kind) {
      const auto& src = h.rows[static_cast<std::size_t>((slot * c.layers + l) * 2 + kind)];
      Half* dst = (kind == 0 ? kv.k<Half>(slot, l) : kv.v<Half>(slot, l)) + t0 * kv.token_stride();
      CUDA_REQUIRE(cudaMemcpy2D(dst, kv.token_stride() * sizeof(Half), src.data() + t0 * c.kv_heads * c.head_dim, row,
                                row, static_cast<std::size_t>(t1 - t0), cudaMemcpyHostToDevice));
    }
}

}  // namespace

TEST_CASE("CUDA VirtualKvCache: dense decode on the virtual cache == on a plain allocation", "[memory][kv][decode]") {
  for (KvLayout layout : {KvLayout::kPerLayer, KvLayout::kInterleaved}) {
    INFO("layout " << static_cast<int>(layout));
    VirtualKvCacheConfig cfg;
    cfg.slots = 4;
    cfg.layers = 2;
    cfg.kv_heads = 2;
    cfg.head_dim = 128;
    cfg.max_tokens = 8192;
    cfg.elem_bytes = 2;
    cfg.layout = layout;
    VirtualKvCache<CudaVmmBackend> kv;
    REQUIRE(kv.init(cfg) == Status::kSuccess);
    const std::int64_t B = cfg.slots, Hq = 8, Hkv = cfg.kv_heads, D = cfg.head_dim, L = cfg.max_tokens;
    const std::int32_t lens[4] = {4096, 1, 777, 3000};  // 4096: ends on a granule (per-layer, 512 B rows)
    HostKv host;
    for (std::int64_t s = 0; s < B; ++s)
      for (std::int64_t l = 0; l < cfg.layers; ++l)
        for (int kind = 0; kind < 2; ++kind)
          host.rows.push_back(memattn_test::random_vector<Half>(static_cast<std::size_t>(lens[s] * Hkv * D),
                                                                static_cast<std::uint32_t>((s * 16 + l) * 2 + kind)));
    for (std::int64_t s = 0; s < B; ++s) {
      REQUIRE(kv.ensure_tokens(s, lens[s]) == Status::kSuccess);
      upload_tokens(kv, host, s, 0, lens[s]);
    }
    const std::vector<Half> q = memattn_test::random_vector<Half>(static_cast<std::size_t>(B * Hq * D), 99);
    DeviceArray<Half> dq(q.size()), dout(q.size()), dout_plain(q.size());
    DeviceArray<std::int32_t> dlens(B);
    CUDA_REQUIRE(cudaMemcpy(dq.ptr, q.data(), q.size() * sizeof(Half), cudaMemcpyHostToDevice));
    CUDA_REQUIRE(cudaMemcpy(dlens.ptr, lens, sizeof(lens), cudaMemcpyHostToDevice));

    // The same tokens in an ordinary [B, Hkv, L, D] cudaMalloc cache.
    DeviceArray<Half> kplain(static_cast<std::size_t>(B * Hkv * L * D)), vplain(static_cast<std::size_t>(B * Hkv * L * D));
    for (std::int64_t layer = 0; layer < cfg.layers; ++layer) {
      for (std::int64_t s = 0; s < B; ++s)
        for (int kind = 0; kind < 2; ++kind) {
          const auto& src = host.rows[static_cast<std::size_t>((s * cfg.layers + layer) * 2 + kind)];
          Half* dst = (kind == 0 ? kplain.ptr : vplain.ptr) + s * Hkv * L * D;
          for (std::int64_t h = 0; h < Hkv; ++h)  // [len, Hkv, D] -> [Hkv, L, D]
            CUDA_REQUIRE(cudaMemcpy2D(dst + h * L * D, D * sizeof(Half), src.data() + h * D, Hkv * D * sizeof(Half),
                                      D * sizeof(Half), static_cast<std::size_t>(lens[s]), cudaMemcpyHostToDevice));
        }

      memattn::attention::DecodeArgs<Half> a;
      a.q = memattn::make_view<4>(static_cast<const Half*>(dq.ptr), {B, 1, Hq, D});
      REQUIRE(kv.layer_views<const Half>(layer, 0, B, &a.k_cache, &a.v_cache) == Status::kSuccess);
      a.seq_lens = dlens.ptr;
      a.seq_lens_host = lens;
      a.o = memattn::make_view<4>(dout.ptr, {B, 1, Hq, D});
      std::size_t ws_bytes = 0;
      REQUIRE(mc::dense_decode_workspace_size(a, &ws_bytes) == Status::kSuccess);
      DeviceArray<unsigned char> ws(ws_bytes);
      REQUIRE(mc::dense_decode(a, ws.ptr, ws_bytes, cudaStream_t{0}) == Status::kSuccess);

      memattn::attention::DecodeArgs<Half> p = a;
      p.k_cache = memattn::make_view<4>(static_cast<const Half*>(kplain.ptr), {B, Hkv, L, D});
      p.v_cache = memattn::make_view<4>(static_cast<const Half*>(vplain.ptr), {B, Hkv, L, D});
      p.o = memattn::make_view<4>(dout_plain.ptr, {B, 1, Hq, D});
      std::size_t ws_plain = 0;
      REQUIRE(mc::dense_decode_workspace_size(p, &ws_plain) == Status::kSuccess);
      REQUIRE(ws_plain == ws_bytes);
      REQUIRE(mc::dense_decode(p, ws.ptr, ws_bytes, cudaStream_t{0}) == Status::kSuccess);
      CUDA_REQUIRE(cudaDeviceSynchronize());

      std::vector<Half> got(q.size()), want(q.size());
      CUDA_REQUIRE(cudaMemcpy(got.data(), dout.ptr, got.size() * sizeof(Half), cudaMemcpyDeviceToHost));
      CUDA_REQUIRE(cudaMemcpy(want.data(), dout_plain.ptr, want.size() * sizeof(Half), cudaMemcpyDeviceToHost));
      for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i].bits == want[i].bits);

      // And against the CPU path on the host copy.
      std::vector<Half> kh(static_cast<std::size_t>(B * Hkv * L * D)), vh(kh.size()), oh(q.size());
      CUDA_REQUIRE(cudaMemcpy(kh.data(), kplain.ptr, kh.size() * sizeof(Half), cudaMemcpyDeviceToHost));
      CUDA_REQUIRE(cudaMemcpy(vh.data(), vplain.ptr, vh.size() * sizeof(Half), cudaMemcpyDeviceToHost));
      memattn::attention::DecodeArgs<Half> c;
      c.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {B, 1, Hq, D});
      c.k_cache = memattn::make_view<4>(static_cast<const Half*>(kh.data()), {B, Hkv, L, D});
      c.v_cache = memattn::make_view<4>(static_cast<const Half*>(vh.data()), {B, Hkv, L, D});
      c.seq_lens = lens;
      c.o = memattn::make_view<4>(oh.data(), {B, 1, Hq, D});
      REQUIRE(memattn_test::cpu_dense_decode(c) == Status::kSuccess);
      double worst = 0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = memattn::half_to_float(got[i]), w = memattn::half_to_float(oh[i]);
        worst = memattn_gpu_test::worse(worst, std::abs(g - w) / (2e-3 + 2e-3 * std::abs(w)));
      }
      REQUIRE(worst <= 1.0);
    }
  }
}

TEST_CASE("CUDA VirtualKvCache: a captured graph stays valid across commits and trims", "[memory][kv][graph]") {
  VirtualKvCacheConfig cfg;
  cfg.slots = 2;
  cfg.layers = 1;
  cfg.kv_heads = 2;
  cfg.head_dim = 128;
  cfg.max_tokens = 16384;
  cfg.elem_bytes = 2;
  cfg.layout = KvLayout::kPerLayer;
  VirtualKvCache<CudaVmmBackend> kv;
  REQUIRE(kv.init(cfg) == Status::kSuccess);
  const std::int64_t B = cfg.slots, Hq = 4, Hkv = cfg.kv_heads, D = cfg.head_dim;
  HostKv host;
  for (std::int64_t s = 0; s < B; ++s)
    for (int kind = 0; kind < 2; ++kind)
      host.rows.push_back(memattn_test::random_vector<Half>(static_cast<std::size_t>(cfg.max_tokens * Hkv * D),
                                                            static_cast<std::uint32_t>(s * 2 + kind + 500)));
  std::int32_t lens[2] = {100, 2000};
  for (std::int64_t s = 0; s < B; ++s) {
    REQUIRE(kv.ensure_tokens(s, lens[s]) == Status::kSuccess);
    upload_tokens(kv, host, s, 0, lens[s]);
  }
  const std::vector<Half> q = memattn_test::random_vector<Half>(static_cast<std::size_t>(B * Hq * D), 7);
  DeviceArray<Half> dq(q.size()), dout(q.size()), dref(q.size());
  DeviceArray<std::int32_t> dlens(B);
  CUDA_REQUIRE(cudaMemcpy(dq.ptr, q.data(), q.size() * sizeof(Half), cudaMemcpyHostToDevice));
  CUDA_REQUIRE(cudaMemcpy(dlens.ptr, lens, sizeof(lens), cudaMemcpyHostToDevice));

  memattn::attention::DecodeArgs<Half> a;
  a.q = memattn::make_view<4>(static_cast<const Half*>(dq.ptr), {B, 1, Hq, D});
  REQUIRE(kv.layer_views<const Half>(0, 0, B, &a.k_cache, &a.v_cache) == Status::kSuccess);
  a.seq_lens = dlens.ptr;
  a.max_seq_len = static_cast<std::int32_t>(cfg.max_tokens);  // the plan covers any later length
  a.o = memattn::make_view<4>(dout.ptr, {B, 1, Hq, D});
  std::size_t ws_bytes = 0;
  REQUIRE(mc::dense_decode_workspace_size(a, &ws_bytes) == Status::kSuccess);
  DeviceArray<unsigned char> ws(ws_bytes);

  cudaStream_t stream;
  CUDA_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  REQUIRE(mc::dense_decode(a, ws.ptr, ws_bytes, stream) == Status::kSuccess);
  CUDA_REQUIRE(cudaStreamEndCapture(stream, &graph));
  CUDA_REQUIRE(cudaGraphInstantiate(&exec, graph, 0));

  auto check_against_direct = [&]() {
    memattn::attention::DecodeArgs<Half> r = a;
    r.o = memattn::make_view<4>(dref.ptr, {B, 1, Hq, D});
    REQUIRE(mc::dense_decode(r, ws.ptr, ws_bytes, stream) == Status::kSuccess);
    CUDA_REQUIRE(cudaStreamSynchronize(stream));
    std::vector<Half> got(q.size()), want(q.size());
    CUDA_REQUIRE(cudaMemcpy(got.data(), dout.ptr, got.size() * sizeof(Half), cudaMemcpyDeviceToHost));
    CUDA_REQUIRE(cudaMemcpy(want.data(), dref.ptr, want.size() * sizeof(Half), cudaMemcpyDeviceToHost));
    for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i].bits == want[i].bits);
  };

  CUDA_REQUIRE(cudaGraphLaunch(exec, stream));
  CUDA_REQUIRE(cudaStreamSynchronize(stream));
  check_against_direct();

  // Grow both sequences across many granules (new physical memory is mapped), then replay.
  const std::size_t committed_before = kv.committed_bytes();
  const std::int32_t grown[2] = {9000, 16384};
  for (std::int64_t s = 0; s < B; ++s) {
    REQUIRE(kv.ensure_tokens(s, grown[s]) == Status::kSuccess);
    upload_tokens(kv, host, s, lens[s], grown[s]);
  }
  const std::size_t committed_grown = kv.committed_bytes();
  REQUIRE(committed_grown > committed_before);
  CUDA_REQUIRE(cudaMemcpy(dlens.ptr, grown, sizeof(grown), cudaMemcpyHostToDevice));
  CUDA_REQUIRE(cudaGraphLaunch(exec, stream));
  CUDA_REQUIRE(cudaStreamSynchronize(stream));
  check_against_direct();

  // Trim (after the stream is idle: the contract), then replay with the shorter lengths.
  const std::int32_t trimmed[2] = {50, 3000};
  for (std::int64_t s = 0; s < B; ++s) REQUIRE(kv.trim(s, trimmed[s]) == Status::kSuccess);
  REQUIRE(kv.committed_bytes() < committed_grown);
  CUDA_REQUIRE(cudaMemcpy(dlens.ptr, trimmed, sizeof(trimmed), cudaMemcpyHostToDevice));
  CUDA_REQUIRE(cudaGraphLaunch(exec, stream));
  CUDA_REQUIRE(cudaStreamSynchronize(stream));
  check_against_direct();

  CUDA_REQUIRE(cudaGraphExecDestroy(exec));
  CUDA_REQUIRE(cudaGraphDestroy(graph));
  CUDA_REQUIRE(cudaStreamDestroy(stream));
}
