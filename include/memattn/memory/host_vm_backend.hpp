// memattn::memory::HostVmBackend: the VirtualBuffer backend for host memory, built on the POSIX
// virtual-memory calls, so the CPU path and the CPU tests use the same primitive as the GPU:
//   reserve   mmap(PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS), aligned to the granule
//   commit    mprotect(PROT_READ | PROT_WRITE)   (+ MADV_POPULATE_WRITE with `populate`)
//   decommit  mprotect(PROT_NONE) + madvise(MADV_DONTNEED): the pages go back to the OS at once
//   release   munmap
//
//   memattn::memory::VirtualBuffer<memattn::memory::HostVmBackend> buf;   // 2 MiB granules
//   memattn::memory::HostVmOptions opt; opt.granule_bytes = 64 << 10;      // or choose them
//   memattn::memory::VirtualBuffer<memattn::memory::HostVmBackend> small{memattn::memory::HostVmBackend{opt}};
//
// What a commit guarantees. The reservation is PROT_NONE and not accounted; mprotect() to
// read-write makes the range count against the process's commit charge (checked strictly under
// vm.overcommit_memory = 2) and its RLIMIT_DATA, so a commit beyond either fails with
// kErrorOutOfMemory and changes nothing. Pages are still allocated on first touch unless
// `populate` is set: then commit faults every page in (MADV_POPULATE_WRITE, Linux >= 5.14; older
// kernels get a write per page, which cannot report failure) and an allocation failure is a
// kErrorOutOfMemory from commit instead of the OOM killer later. Decommitted pages are returned
// (the resident set shrinks) and read as zero when committed again.
//
// Granule: a multiple of the page size (default 2 MiB, the CUDA VMM granularity on H100/H200, so
// the same KV-cache geometry commits the same ranges on both). With `huge_pages` the reservation
// is madvise(MADV_HUGEPAGE)d, so a 2 MiB-aligned granule can be one transparent huge page.
//
// POSIX only (Linux, macOS, BSDs); elsewhere granularity() returns kErrorNotSupported. The
// backend keeps no global state; every call is a few system calls, no allocation.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <utility>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/memory/virtual_buffer.hpp"

#if defined(__unix__) || defined(__unix) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define MEMATTN_HOST_VM_POSIX 1
#else
#define MEMATTN_HOST_VM_POSIX 0
#endif

MEMATTN_NAMESPACE_BEGIN
namespace memory {

struct HostVmOptions {
  std::size_t granule_bytes = std::size_t{2} << 20;  // a multiple of the page size
  bool populate = false;    // commit faults the pages in (allocation failure -> kErrorOutOfMemory)
  bool huge_pages = false;  // madvise(MADV_HUGEPAGE) on the reservation (Linux THP)
};

// The system page size (4096 when it cannot be queried).
inline std::size_t host_page_size() noexcept {
#if MEMATTN_HOST_VM_POSIX
  const long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? static_cast<std::size_t>(p) : 4096;
#else
  return 4096;
#endif
}

// Resident set size of the calling process in bytes (Linux: /proc/self/statm); for reports and
// tests that check memory really goes back to the OS. kErrorNotSupported elsewhere.
inline Status host_resident_bytes(std::size_t* bytes) noexcept {
  if (bytes == nullptr) return Status::kErrorNullPointer;
#if defined(__linux__)
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return Status::kErrorNotSupported;
  unsigned long long size_pages = 0, resident_pages = 0;
  const int n = std::fscanf(f, "%llu %llu", &size_pages, &resident_pages);
  std::fclose(f);
  if (n != 2) return Status::kErrorNotSupported;
  *bytes = static_cast<std::size_t>(resident_pages) * host_page_size();
  return Status::kSuccess;
#else
  return Status::kErrorNotSupported;
#endif
}

class HostVmBackend {
 public:
  HostVmBackend() = default;
  explicit HostVmBackend(const HostVmOptions& options) noexcept : options_(options) {}
  ~HostVmBackend() { release(); }

  HostVmBackend(const HostVmBackend&) = delete;
  HostVmBackend& operator=(const HostVmBackend&) = delete;
  HostVmBackend(HostVmBackend&& o) noexcept : options_(o.options_), base_(o.base_), size_(o.size_) {
    o.base_ = nullptr;
    o.size_ = 0;
  }
  HostVmBackend& operator=(HostVmBackend&& o) noexcept {
    if (this != &o) {
      release();
      options_ = o.options_;
      base_ = o.base_;
      size_ = o.size_;
      o.base_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }

  const HostVmOptions& options() const noexcept { return options_; }

  // kErrorInvalidArgument when granule_bytes is 0 or not a multiple of the page size.
  Status granularity(std::size_t* bytes) noexcept {
    if (bytes == nullptr) return Status::kErrorNullPointer;
#if MEMATTN_HOST_VM_POSIX
    const std::size_t page = host_page_size();
    if (options_.granule_bytes == 0 || options_.granule_bytes % page != 0) return Status::kErrorInvalidArgument;
    *bytes = options_.granule_bytes;
    return Status::kSuccess;
#else
    return Status::kErrorNotSupported;
#endif
  }

  // kErrorOutOfMemory when the address space cannot hold `bytes` (plus one granule of alignment).
  Status reserve(std::size_t bytes, void** base) noexcept {
    if (base == nullptr) return Status::kErrorNullPointer;
    if (base_ != nullptr) return Status::kErrorInvalidArgument;
#if MEMATTN_HOST_VM_POSIX
    std::size_t unit = 0;
    MEMATTN_RETURN_IF_ERROR(granularity(&unit));
    if (bytes == 0 || bytes % unit != 0) return Status::kErrorInvalidArgument;
    const std::size_t page = host_page_size();
    const std::size_t slack = unit > page ? unit : 0;  // over-reserve, then trim to an aligned range
    if (bytes > SIZE_MAX - slack) return Status::kErrorOutOfMemory;
    void* p = mmap(nullptr, bytes + slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return Status::kErrorOutOfMemory;
    unsigned char* raw = static_cast<unsigned char*>(p);
    unsigned char* aligned = raw;
    if (slack != 0) {
      const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(raw);
      aligned = raw + (unit - a % unit) % unit;
      const std::size_t head = static_cast<std::size_t>(aligned - raw);
      const std::size_t tail = slack - head;
      if (head != 0) munmap(raw, head);
      if (tail != 0) munmap(aligned + bytes, tail);
    }
#if defined(MADV_HUGEPAGE)
    if (options_.huge_pages) (void)madvise(aligned, bytes, MADV_HUGEPAGE);
#endif
    base_ = aligned;
    size_ = bytes;
    *base = aligned;
    return Status::kSuccess;
#else
    (void)bytes;
    return Status::kErrorNotSupported;
#endif
  }

  Status commit(std::size_t first, std::size_t count) noexcept {
#if MEMATTN_HOST_VM_POSIX
    unsigned char* p = nullptr;
    std::size_t n = 0;
    MEMATTN_RETURN_IF_ERROR(range(first, count, &p, &n));
    if (mprotect(p, n, PROT_READ | PROT_WRITE) != 0) {
      // ENOMEM: commit charge / RLIMIT_DATA / mapping count. mprotect may have changed a prefix
      // of the range: put all of it back (these pages were never written).
      (void)mprotect(p, n, PROT_NONE);
      return Status::kErrorOutOfMemory;
    }
    if (options_.populate) {
      const Status st = populate(p, n);
      if (st != Status::kSuccess) {
        (void)decommit_bytes(p, n);
        return st;
      }
    }
    return Status::kSuccess;
#else
    (void)first;
    (void)count;
    return Status::kErrorNotSupported;
#endif
  }

  Status decommit(std::size_t first, std::size_t count) noexcept {
#if MEMATTN_HOST_VM_POSIX
    unsigned char* p = nullptr;
    std::size_t n = 0;
    MEMATTN_RETURN_IF_ERROR(range(first, count, &p, &n));
    return decommit_bytes(p, n);
#else
    (void)first;
    (void)count;
    return Status::kErrorNotSupported;
#endif
  }

  void release() noexcept {
#if MEMATTN_HOST_VM_POSIX
    if (base_ != nullptr) munmap(base_, size_);
#endif
    base_ = nullptr;
    size_ = 0;
  }

 private:
#if MEMATTN_HOST_VM_POSIX
  Status range(std::size_t first, std::size_t count, unsigned char** p, std::size_t* n) const noexcept {
    const std::size_t unit = options_.granule_bytes;
    if (base_ == nullptr) return Status::kErrorNullPointer;
    if (first > size_ / unit || count > size_ / unit - first) return Status::kErrorCapacityExceeded;
    *p = base_ + first * unit;
    *n = count * unit;
    return Status::kSuccess;
  }

  // PROT_NONE first (a failure -- the mapping-count limit when the range splits a mapping --
  // changes nothing and keeps the data), then drop the pages. MADV_DONTNEED is refused on
  // mlock()ed ranges: replacing the mapping frees them too.
  static Status decommit_bytes(unsigned char* p, std::size_t n) noexcept {
    if (mprotect(p, n, PROT_NONE) != 0) return Status::kErrorOutOfMemory;
    if (madvise(p, n, MADV_DONTNEED) != 0) {
      void* q = mmap(p, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (q == MAP_FAILED) return Status::kErrorOutOfMemory;
    }
    return Status::kSuccess;
  }

  static Status populate(unsigned char* p, std::size_t n) noexcept {
#if defined(__linux__)
#if defined(MADV_POPULATE_WRITE)
    constexpr int kPopulateWrite = MADV_POPULATE_WRITE;
#else
    constexpr int kPopulateWrite = 23;  // Linux >= 5.14 uapi value; older kernels say EINVAL
#endif
    if (madvise(p, n, kPopulateWrite) == 0) return Status::kSuccess;
    if (errno != EINVAL) return Status::kErrorOutOfMemory;  // ENOMEM, EFAULT (SIGBUS), EINTR...
#endif
    // Older kernel or another system: touch one byte per page (fresh pages are zero, so writing
    // zero changes no contents; an allocation failure here is the OOM killer's, not a Status).
    const std::size_t page = host_page_size();
    for (std::size_t off = 0; off < n; off += page) static_cast<volatile unsigned char*>(p)[off] = 0;
    return Status::kSuccess;
  }
#endif

  HostVmOptions options_{};
  unsigned char* base_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace memory
MEMATTN_NAMESPACE_END
