// memattn/memory/cuda_vmm_backend.cuh compiled by the HOST compiler (no nvcc; it holds no device
// code, only the CUDA toolkit headers are needed), linked against the static CUDA runtime only.
// Run as a test it checks that such a binary starts on a machine without a driver or GPU and
// that every entry point then returns kErrorNoDevice (the driver functions are resolved through
// cudaGetDriverEntryPointByVersion, never linked from libcuda). With a device it runs a short
// reserve / commit / decommit smoke instead. Exit 0 on success; the failing check otherwise.
#include <cuda_runtime.h>

#include <cstdio>

#include "memattn/memory/cuda_vmm_backend.cuh"
#include "memattn/memory/virtual_buffer.hpp"
#include "memattn/memory/virtual_kv_cache.hpp"

// Every member instantiated, so the host compiler checks all of it.
template class memattn::memory::VirtualBuffer<memattn::memory::CudaVmmBackend>;
template class memattn::memory::VirtualKvCache<memattn::memory::CudaVmmBackend>;

namespace {

using memattn::Status;
namespace mem = memattn::memory;

int fail(int code, const char* what, Status st) {
  std::printf("FAILED (%d): %s -> %s\n", code, what, memattn::status_message(st));
  return code;
}

}  // namespace

int main() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  const bool device = e == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  std::printf("CUDA device: %s (%s)\n", device ? "yes" : "no", e == cudaSuccess ? "ok" : cudaGetErrorString(e));

  mem::VirtualBuffer<mem::CudaVmmBackend> buf;
  const Status reserve = buf.reserve(std::size_t{64} << 20);
  mem::CudaHandlePool pool;
  const Status pool_init = pool.init(-1, 0, 4);
  mem::VirtualKvCacheConfig cfg;
  cfg.slots = 2;
  cfg.layers = 2;
  cfg.kv_heads = 2;
  cfg.head_dim = 64;
  cfg.max_tokens = 1024;
  mem::VirtualKvCache<mem::CudaVmmBackend> kv;
  const Status kv_init = kv.init(cfg);

  if (!device) {
    if (reserve != Status::kErrorNoDevice) return fail(1, "VirtualBuffer<CudaVmmBackend>::reserve", reserve);
    if (pool_init != Status::kErrorNoDevice) return fail(2, "CudaHandlePool::init", pool_init);
    if (kv_init != Status::kErrorNoDevice) return fail(3, "VirtualKvCache<CudaVmmBackend>::init", kv_init);
    if (buf.reserved() || kv.initialized()) return fail(4, "state after a failed reserve", Status::kSuccess);
    if (buf.commit(0, 0) != Status::kErrorNullPointer) return fail(5, "commit without a reservation", buf.commit(0, 0));
    std::printf("no device: every entry point returned '%s'\n", memattn::status_message(Status::kErrorNoDevice));
    return 0;
  }
  if (reserve != Status::kSuccess) return fail(10, "reserve", reserve);
  if (pool_init != Status::kSuccess) return fail(11, "pool init", pool_init);
  if (kv_init != Status::kSuccess) return fail(12, "kv init", kv_init);
  const std::size_t g = buf.granularity();
  Status st = buf.commit(0, 2 * g);
  if (st != Status::kSuccess) return fail(13, "commit", st);
  if (cudaMemset(buf.data(), 1, 2 * g) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess)
    return fail(14, "memset on committed memory", Status::kErrorCudaRuntime);
  st = buf.decommit(0, 2 * g);
  if (st != Status::kSuccess) return fail(15, "decommit", st);
  st = kv.ensure_tokens(1, 1024);
  if (st != Status::kSuccess) return fail(16, "ensure_tokens", st);
  std::printf("device: reserve/commit/decommit and ensure_tokens ok (granularity %zu KiB)\n", g / 1024);
  return 0;
}
