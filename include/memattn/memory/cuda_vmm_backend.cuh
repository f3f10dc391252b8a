// memattn::memory::CudaVmmBackend: the VirtualBuffer backend for device memory, on the CUDA
// virtual memory management (VMM) driver API:
//   reserve   cuMemAddressReserve                           (address space only)
//   commit    cuMemCreate (or a handle from a CudaHandlePool) + cuMemMap + cuMemSetAccess
//   decommit  cuMemUnmap, then cuMemRelease (or the handle goes back to the pool)
//   release   cuMemAddressFree
//
//   memattn::memory::CudaVmmOptions opt;      // device (-1: current), chunk_bytes, pool
//   memattn::memory::VirtualBuffer<memattn::memory::CudaVmmBackend> buf{memattn::memory::CudaVmmBackend{opt}};
//   Status st = buf.reserve(std::size_t{64} << 30);   // 64 GiB of device address space
//   st = buf.commit(0, buf.granularity());            // one chunk of physical memory behind it
//
// Why .cuh: this header needs the CUDA toolkit's headers (cuda.h for the driver types,
// cuda_runtime.h) but no device code, so it compiles with nvcc and also with a plain host
// compiler given the toolkit's include directory (tests/compile checks both); memattn.hpp stays
// free of CUDA headers. Link: memattn::cuda (cudart only). The driver functions are resolved
// through the runtime (cudaGetDriverEntryPointByVersion), never linked from libcuda, so a binary
// starts on machines without a driver and reserve() then returns kErrorNoDevice.
//
// Costs (measured on an H200, driver 580, CUDA 13.0; see DESIGN.md): per 2 MiB handle cuMemCreate
// ~9 us, cuMemMap ~1 us, cuMemSetAccess ~24 us, cuMemUnmap ~16 us, cuMemRelease ~10 us; a 128 MiB
// handle ~160 us in all. The cost is per handle, not per byte, so:
//  * chunk_bytes (a multiple of the allocation granularity, 2 MiB on H100/H200) is the commit
//    unit and the size of every handle: larger chunks mean fewer driver calls per byte but more
//    memory committed past what a sequence needs. It is also the VirtualBuffer's granularity:
//    a handle is always mapped and unmapped whole.
//  * A CudaHandlePool keeps pre-created handles (create them off the critical path with
//    prefill()); commit takes from it before calling cuMemCreate and decommit gives back to it
//    before calling cuMemRelease, so the create/release share of the cost leaves the hot path.
//    Pooled handles hold physical memory while unmapped.
//
// Contract (see VirtualBuffer for the rest): commit/decommit are host calls, not stream-ordered:
// the caller guarantees that no kernel is touching a range being decommitted (synchronise the
// streams that use it first) and makes these calls outside stream capture. Captured CUDA graphs
// that read the buffer stay valid across commits because the virtual address never moves. The
// mapping is read-write for `device` only. A commit that runs out of device memory returns
// kErrorOutOfMemory, with everything it mapped undone; what was committed before is untouched.
// Every call makes `device` current for its duration and restores the caller's device.
// Not thread-safe; the pool neither (share one only between buffers used by one thread).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/memory/virtual_buffer.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace memory {

// Maps a driver result to a Status (CUDA_SUCCESS -> kSuccess).
inline Status status_from_cu(CUresult r) noexcept {
  switch (r) {
    case CUDA_SUCCESS: return Status::kSuccess;
    case CUDA_ERROR_OUT_OF_MEMORY: return Status::kErrorOutOfMemory;
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_DEINITIALIZED:
    case CUDA_ERROR_INVALID_DEVICE: return Status::kErrorNoDevice;
    case CUDA_ERROR_NOT_SUPPORTED: return Status::kErrorNotSupported;
    case CUDA_ERROR_INVALID_VALUE: return Status::kErrorInvalidArgument;
    default: return Status::kErrorCudaRuntime;
  }
}

namespace detail {

inline Status status_from_cudart(cudaError_t e) noexcept {
  switch (e) {
    case cudaSuccess: return Status::kSuccess;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice: return Status::kErrorNoDevice;
    case cudaErrorMemoryAllocation: return Status::kErrorOutOfMemory;
    default: return Status::kErrorCudaRuntime;
  }
}

// The VMM driver entry points, resolved through the runtime (no link against libcuda). Each
// backend and pool holds its own table: no process-wide state.
struct CudaVmmDriver {
  CUresult(CUDAAPI* device_get)(CUdevice*, int) = nullptr;
  CUresult(CUDAAPI* device_get_attribute)(int*, CUdevice_attribute, CUdevice) = nullptr;
  CUresult(CUDAAPI* mem_get_allocation_granularity)(std::size_t*, const CUmemAllocationProp*,
                                                    CUmemAllocationGranularity_flags) = nullptr;
  CUresult(CUDAAPI* mem_address_reserve)(CUdeviceptr*, std::size_t, std::size_t, CUdeviceptr,
                                         unsigned long long) = nullptr;
  CUresult(CUDAAPI* mem_address_free)(CUdeviceptr, std::size_t) = nullptr;
  CUresult(CUDAAPI* mem_create)(CUmemGenericAllocationHandle*, std::size_t, const CUmemAllocationProp*,
                                unsigned long long) = nullptr;
  CUresult(CUDAAPI* mem_release)(CUmemGenericAllocationHandle) = nullptr;
  CUresult(CUDAAPI* mem_map)(CUdeviceptr, std::size_t, std::size_t, CUmemGenericAllocationHandle,
                             unsigned long long) = nullptr;
  CUresult(CUDAAPI* mem_unmap)(CUdeviceptr, std::size_t) = nullptr;
  CUresult(CUDAAPI* mem_set_access)(CUdeviceptr, std::size_t, const CUmemAccessDesc*, std::size_t) = nullptr;

  bool loaded() const noexcept { return mem_set_access != nullptr; }

  // kErrorNoDevice without a driver or device; kErrorNotSupported when the driver lacks a symbol.
  Status load() noexcept {
    if (loaded()) return Status::kSuccess;
    CudaVmmDriver t;
    MEMATTN_RETURN_IF_ERROR(resolve("cuDeviceGet", &t.device_get));
    MEMATTN_RETURN_IF_ERROR(resolve("cuDeviceGetAttribute", &t.device_get_attribute));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemGetAllocationGranularity", &t.mem_get_allocation_granularity));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemAddressReserve", &t.mem_address_reserve));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemAddressFree", &t.mem_address_free));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemCreate", &t.mem_create));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemRelease", &t.mem_release));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemMap", &t.mem_map));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemUnmap", &t.mem_unmap));
    MEMATTN_RETURN_IF_ERROR(resolve("cuMemSetAccess", &t.mem_set_access));
    *this = t;
    return Status::kSuccess;
  }

 private:
  template <class Fn>
  static Status resolve(const char* symbol, Fn* fn) noexcept {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    // 12000: the ABI these prototypes have had since CUDA 10.2 / 12.0.
    const cudaError_t e = cudaGetDriverEntryPointByVersion(symbol, &p, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // leave no sticky last error behind
      return status_from_cudart(e);
    }
    if (q != cudaDriverEntryPointSuccess || p == nullptr) return Status::kErrorNotSupported;
    *fn = reinterpret_cast<Fn>(p);
    return Status::kSuccess;
  }
};

// Makes `device` current for a scope (driver VMM calls need a current context on the thread) and
// restores the caller's device.
class ScopedDevice {
 public:
  ScopedDevice() = default;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  Status enter(int device) noexcept {
    int prev = 0;
    MEMATTN_RETURN_IF_ERROR(status_from_cudart(cudaGetDevice(&prev)));
    MEMATTN_RETURN_IF_ERROR(status_from_cudart(cudaSetDevice(device)));  // binds the primary context
    prev_ = prev;
    restore_ = prev != device;
    return Status::kSuccess;
  }
  ~ScopedDevice() {
    if (restore_) (void)cudaSetDevice(prev_);
  }

 private:
  int prev_ = 0;
  bool restore_ = false;
};

inline CUmemAllocationProp device_allocation_prop(int device) noexcept {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

// Resolves the driver, checks that `device` supports VMM and validates chunk_bytes (0: the
// recommended granularity). Outputs the chunk and the minimum granularity.
inline Status prepare_vmm_device(CudaVmmDriver& drv, int* device, std::size_t chunk_request, std::size_t* chunk,
                                 std::size_t* min_granularity) noexcept {
  MEMATTN_RETURN_IF_ERROR(drv.load());
  if (*device < 0) MEMATTN_RETURN_IF_ERROR(status_from_cudart(cudaGetDevice(device)));
  int count = 0;
  MEMATTN_RETURN_IF_ERROR(status_from_cudart(cudaGetDeviceCount(&count)));
  if (*device >= count) return Status::kErrorInvalidArgument;
  ScopedDevice guard;
  MEMATTN_RETURN_IF_ERROR(guard.enter(*device));
  CUdevice cu_dev = 0;
  MEMATTN_RETURN_IF_ERROR(status_from_cu(drv.device_get(&cu_dev, *device)));
  int vmm = 0;
  MEMATTN_RETURN_IF_ERROR(
      status_from_cu(drv.device_get_attribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, cu_dev)));
  if (vmm == 0) return Status::kErrorNotSupported;
  const CUmemAllocationProp prop = device_allocation_prop(*device);
  std::size_t min_g = 0, rec_g = 0;
  MEMATTN_RETURN_IF_ERROR(
      status_from_cu(drv.mem_get_allocation_granularity(&min_g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)));
  MEMATTN_RETURN_IF_ERROR(
      status_from_cu(drv.mem_get_allocation_granularity(&rec_g, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)));
  if (min_g == 0) return Status::kErrorCudaRuntime;
  if (rec_g == 0 || rec_g % min_g != 0) rec_g = min_g;
  const std::size_t c = chunk_request == 0 ? rec_g : chunk_request;
  if (c % min_g != 0) return Status::kErrorInvalidArgument;
  *chunk = c;
  *min_granularity = min_g;
  return Status::kSuccess;
}

}  // namespace detail

// Pre-created physical handles of one size on one device, shared by the backends that name it
// (they must be on the same device with the same chunk_bytes). Move-only; releases its handles
// when destroyed, so it must outlive the buffers that use it.
class CudaHandlePool {
 public:
  CudaHandlePool() = default;
  ~CudaHandlePool() { clear(); }
  CudaHandlePool(const CudaHandlePool&) = delete;
  CudaHandlePool& operator=(const CudaHandlePool&) = delete;
  CudaHandlePool(CudaHandlePool&& o) noexcept { take_from(o); }
  CudaHandlePool& operator=(CudaHandlePool&& o) noexcept {
    if (this != &o) {
      clear();
      take_from(o);
    }
    return *this;
  }

  // Sets the device (-1: current), the handle size (0: the recommended granularity) and the most
  // handles the pool keeps. Errors: kErrorInvalidArgument (already initialised, capacity 0, or
  // chunk_bytes not a multiple of the granularity), kErrorNoDevice, kErrorNotSupported.
  Status init(int device, std::size_t chunk_bytes, std::size_t capacity) noexcept {
    if (handles_ != nullptr || capacity == 0) return Status::kErrorInvalidArgument;
    std::size_t chunk = 0, min_g = 0;
    MEMATTN_RETURN_IF_ERROR(detail::prepare_vmm_device(drv_, &device, chunk_bytes, &chunk, &min_g));
    handles_.reset(new (std::nothrow) CUmemGenericAllocationHandle[capacity]);
    if (handles_ == nullptr) return Status::kErrorOutOfMemory;
    device_ = device;
    chunk_ = chunk;
    capacity_ = capacity;
    size_ = 0;
    return Status::kSuccess;
  }

  // Creates handles until the pool holds min(count, capacity). kErrorOutOfMemory when the device
  // runs out first (the handles created so far stay in the pool).
  Status prefill(std::size_t count) noexcept {
    if (handles_ == nullptr) return Status::kErrorNullPointer;
    if (count > capacity_) count = capacity_;
    if (size_ >= count) return Status::kSuccess;
    detail::ScopedDevice guard;
    MEMATTN_RETURN_IF_ERROR(guard.enter(device_));
    const CUmemAllocationProp prop = detail::device_allocation_prop(device_);
    while (size_ < count) {
      CUmemGenericAllocationHandle h{};
      MEMATTN_RETURN_IF_ERROR(status_from_cu(drv_.mem_create(&h, chunk_, &prop, 0)));
      handles_[size_++] = h;
      ++created_;
    }
    return Status::kSuccess;
  }

  // Releases every pooled handle (their memory goes back to the device).
  void clear() noexcept {
    if (handles_ == nullptr || size_ == 0) return;
    detail::ScopedDevice guard;
    (void)guard.enter(device_);
    while (size_ > 0) (void)drv_.mem_release(handles_[--size_]);
  }

  int device() const noexcept { return device_; }
  std::size_t chunk_bytes() const noexcept { return chunk_; }
  std::size_t size() const noexcept { return size_; }          // handles held now
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t created() const noexcept { return created_; }    // cuMemCreate calls by prefill()
  bool initialized() const noexcept { return handles_ != nullptr; }

  // For backends: take one handle (false when empty) / keep one (false when full).
  bool take(CUmemGenericAllocationHandle* h) noexcept {
    if (size_ == 0) return false;
    *h = handles_[--size_];
    return true;
  }
  bool give(CUmemGenericAllocationHandle h) noexcept {
    if (handles_ == nullptr || size_ >= capacity_) return false;
    handles_[size_++] = h;
    return true;
  }

 private:
  void take_from(CudaHandlePool& o) noexcept {
    drv_ = o.drv_;
    handles_ = std::move(o.handles_);
    device_ = o.device_;
    chunk_ = o.chunk_;
    capacity_ = o.capacity_;
    size_ = o.size_;
    created_ = o.created_;
    o.capacity_ = o.size_ = 0;
  }

  detail::CudaVmmDriver drv_{};
  std::unique_ptr<CUmemGenericAllocationHandle[]> handles_;
  int device_ = -1;
  std::size_t chunk_ = 0;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  std::size_t created_ = 0;
};

struct CudaVmmOptions {
  int device = -1;                  // -1: the current device when granularity() is first called
  std::size_t chunk_bytes = 0;      // commit unit and handle size; 0: recommended granularity
  CudaHandlePool* pool = nullptr;   // optional, not owned; same device and chunk_bytes
};

// Driver calls made by one backend (for tests and benchmarks).
struct CudaVmmStats {
  std::size_t creates = 0, releases = 0, maps = 0, unmaps = 0, set_access = 0;
  std::size_t pool_takes = 0, pool_gives = 0;
};

class CudaVmmBackend {
 public:
  CudaVmmBackend() = default;
  explicit CudaVmmBackend(const CudaVmmOptions& options) noexcept : options_(options) {}
  ~CudaVmmBackend() { release(); }
  CudaVmmBackend(const CudaVmmBackend&) = delete;
  CudaVmmBackend& operator=(const CudaVmmBackend&) = delete;
  CudaVmmBackend(CudaVmmBackend&& o) noexcept { take_from(o); }
  CudaVmmBackend& operator=(CudaVmmBackend&& o) noexcept {
    if (this != &o) {
      release();
      take_from(o);
    }
    return *this;
  }

  // Resolves the driver and checks the device on first use. Errors: kErrorNoDevice (no driver or
  // device), kErrorNotSupported (no VMM on this device, or a driver without the entry points),
  // kErrorInvalidArgument (device out of range, chunk_bytes not a multiple of the minimum
  // granularity, or a pool of another device or chunk size).
  Status granularity(std::size_t* bytes) noexcept {
    if (bytes == nullptr) return Status::kErrorNullPointer;
    if (chunk_ == 0) {
      int device = options_.device;
      std::size_t chunk = 0, min_g = 0;
      MEMATTN_RETURN_IF_ERROR(detail::prepare_vmm_device(drv_, &device, options_.chunk_bytes, &chunk, &min_g));
      if (options_.pool != nullptr &&
          (!options_.pool->initialized() || options_.pool->device() != device || options_.pool->chunk_bytes() != chunk))
        return Status::kErrorInvalidArgument;
      device_ = device;
      chunk_ = chunk;
      min_granularity_ = min_g;
    }
    *bytes = chunk_;
    return Status::kSuccess;
  }

  // kErrorOutOfMemory when the device's address space cannot hold `bytes`.
  Status reserve(std::size_t bytes, void** base) noexcept {
    if (base == nullptr) return Status::kErrorNullPointer;
    if (base_ != 0) return Status::kErrorInvalidArgument;
    std::size_t unit = 0;
    MEMATTN_RETURN_IF_ERROR(granularity(&unit));
    if (bytes == 0 || bytes % unit != 0) return Status::kErrorInvalidArgument;
    detail::ScopedDevice guard;
    MEMATTN_RETURN_IF_ERROR(guard.enter(device_));
    CUdeviceptr p = 0;
    const CUresult r = drv_.mem_address_reserve(&p, bytes, unit, 0, 0);
    if (r != CUDA_SUCCESS) {
      const Status st = status_from_cu(r);
      // A reservation with valid arguments fails only for lack of address space.
      return st == Status::kErrorInvalidArgument || st == Status::kErrorCudaRuntime ? Status::kErrorOutOfMemory : st;
    }
    // The per-chunk handle table only once the range exists (an absurd size failed above).
    std::unique_ptr<CUmemGenericAllocationHandle[]> handles(new (std::nothrow) CUmemGenericAllocationHandle[bytes / unit]());
    if (handles == nullptr) {
      (void)drv_.mem_address_free(p, bytes);
      return Status::kErrorOutOfMemory;
    }
    base_ = p;
    size_ = bytes;
    handles_ = std::move(handles);
    *base = reinterpret_cast<void*>(p);
    return Status::kSuccess;
  }

  // All-or-nothing over the run: on failure every chunk this call mapped is unmapped again.
  Status commit(std::size_t first, std::size_t count) noexcept {
    MEMATTN_RETURN_IF_ERROR(check_run(first, count));
    detail::ScopedDevice guard;
    MEMATTN_RETURN_IF_ERROR(guard.enter(device_));
    const CUmemAllocationProp prop = detail::device_allocation_prop(device_);
    std::size_t done = 0;
    Status st = Status::kSuccess;
    for (; done < count; ++done) {
      const std::size_t g = first + done;
      CUmemGenericAllocationHandle h{};
      if (options_.pool != nullptr && options_.pool->take(&h)) {
        ++stats_.pool_takes;
      } else {
        st = status_from_cu(drv_.mem_create(&h, chunk_, &prop, 0));
        if (st != Status::kSuccess) break;
        ++stats_.creates;
      }
      st = status_from_cu(drv_.mem_map(addr(g), chunk_, 0, h, 0));
      if (st != Status::kSuccess) {
        drop_handle(h);
        break;
      }
      ++stats_.maps;
      handles_[g] = h;
    }
    if (st == Status::kSuccess) {
      // One access call for the run (same cost per handle as one call each; fewer calls).
      CUmemAccessDesc access{};
      access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      access.location.id = device_;
      access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      st = status_from_cu(drv_.mem_set_access(addr(first), count * chunk_, &access, 1));
      if (st == Status::kSuccess) {
        ++stats_.set_access;
        return Status::kSuccess;
      }
    }
    for (std::size_t i = 0; i < done; ++i) (void)unmap_one(first + i);  // roll back
    return st;
  }

  Status decommit(std::size_t first, std::size_t count) noexcept {
    MEMATTN_RETURN_IF_ERROR(check_run(first, count));
    detail::ScopedDevice guard;
    MEMATTN_RETURN_IF_ERROR(guard.enter(device_));
    for (std::size_t i = 0; i < count; ++i) MEMATTN_RETURN_IF_ERROR(unmap_one(first + i));
    return Status::kSuccess;
  }

  // Unmaps whatever is still mapped (VirtualBuffer decommits everything first) and frees the
  // address range.
  void release() noexcept {
    if (base_ == 0) return;
    detail::ScopedDevice guard;
    (void)guard.enter(device_);
    const std::size_t n = size_ / chunk_;
    for (std::size_t g = 0; g < n; ++g)
      if (handles_[g] != 0) (void)unmap_one(g);
    (void)drv_.mem_address_free(base_, size_);
    base_ = 0;
    size_ = 0;
    handles_.reset();
  }

  int device() const noexcept { return device_; }
  std::size_t chunk_bytes() const noexcept { return chunk_; }
  std::size_t min_granularity() const noexcept { return min_granularity_; }
  const CudaVmmOptions& options() const noexcept { return options_; }
  const CudaVmmStats& stats() const noexcept { return stats_; }
  void reset_stats() noexcept { stats_ = CudaVmmStats{}; }

 private:
  CUdeviceptr addr(std::size_t g) const noexcept { return base_ + static_cast<CUdeviceptr>(g * chunk_); }

  Status check_run(std::size_t first, std::size_t count) const noexcept {
    if (base_ == 0) return Status::kErrorNullPointer;
    const std::size_t n = size_ / chunk_;
    if (first > n || count > n - first) return Status::kErrorCapacityExceeded;
    return Status::kSuccess;
  }

  void drop_handle(CUmemGenericAllocationHandle h) noexcept {
    if (options_.pool != nullptr && options_.pool->give(h)) {
      ++stats_.pool_gives;
      return;
    }
    (void)drv_.mem_release(h);
    ++stats_.releases;
  }

  // Unmaps granule g (a whole handle) and returns its handle to the pool or releases it.
  Status unmap_one(std::size_t g) noexcept {
    MEMATTN_RETURN_IF_ERROR(status_from_cu(drv_.mem_unmap(addr(g), chunk_)));
    ++stats_.unmaps;
    drop_handle(handles_[g]);
    handles_[g] = 0;
    return Status::kSuccess;
  }

  void take_from(CudaVmmBackend& o) noexcept {
    options_ = o.options_;
    drv_ = o.drv_;
    device_ = o.device_;
    chunk_ = o.chunk_;
    min_granularity_ = o.min_granularity_;
    base_ = o.base_;
    size_ = o.size_;
    handles_ = std::move(o.handles_);
    stats_ = o.stats_;
    o.base_ = 0;
    o.size_ = 0;
  }

  CudaVmmOptions options_{};
  detail::CudaVmmDriver drv_{};
  int device_ = -1;
  std::size_t chunk_ = 0;  // 0 until granularity() succeeded
  std::size_t min_granularity_ = 0;
  CUdeviceptr base_ = 0;
  std::size_t size_ = 0;
  std::unique_ptr<CUmemGenericAllocationHandle[]> handles_;  // per granule; 0 = not mapped
  CudaVmmStats stats_{};
};

}  // namespace memory
MEMATTN_NAMESPACE_END
