// memattn::memory::VirtualBuffer<Backend>: a reserved, contiguous virtual address range with a
// stable base pointer whose physical backing is committed and decommitted on demand, one granule
// at a time (vAttention's primitive, without its framework ties, globals or process exits).
//
//   memattn::memory::VirtualBuffer<memattn::memory::HostVmBackend> buf;     // or CudaVmmBackend
//   Status st = buf.reserve(std::size_t{1} << 30);    // address space only: nothing is backed
//   st = buf.commit(0, 4 * buf.granularity());        // granules [0, 4) usable now
//   ... buf.data() never moves: kernels, page tables and captured CUDA graphs keep it ...
//   st = buf.decommit(2 * buf.granularity(), 2 * buf.granularity());   // memory back to the OS
//
// Contract
//  * offset and bytes of commit()/decommit() are multiples of granularity(); otherwise
//    kErrorInvalidArgument. A range that does not lie inside [0, size()) gives
//    kErrorCapacityExceeded. Calls on a buffer that holds no reservation give kErrorNullPointer.
//    Nothing changes when a call returns one of these.
//  * commit() and decommit() are idempotent: granules already in the requested state are skipped
//    (a double decommit is a successful no-op). A per-granule bitmap records the state.
//  * commit() is all-or-nothing: if the backend cannot back every granule (kErrorOutOfMemory when
//    physical memory or the commit limit runs out), the granules this call committed are
//    decommitted again and the buffer is exactly as before the call -- nothing committed earlier
//    is lost or moved, and the buffer stays usable.
//  * decommit() discards the contents of the granules (they read as zero when committed again).
//    A backend failure part-way (rare: e.g. the kernel's mapping-count limit on the host) leaves
//    the granules before the failing run decommitted; is_committed() tells the state.
//  * Decommitting a range that a kernel or another thread may still touch is the caller's
//    error: on the GPU, map/unmap are host calls, not stream-ordered (synchronise first), and are
//    made outside stream capture. Because the address never moves, captured CUDA graphs that
//    read the buffer stay valid across commits.
//  * Not thread-safe (like std::vector): one thread at a time per buffer.
//  * reserve() allocates the bitmap (one bit per granule); commit()/decommit() allocate nothing.
//
// Backend concept (HostVmBackend, CudaVmmBackend; tests use fault-injecting ones). A backend is
// move-constructible and owns one reservation after reserve():
//   Status granularity(std::size_t* bytes);   // commit unit (> 0); called first; may fail (e.g.
//                                             // no device, bad options)
//   Status reserve(std::size_t bytes, void** base);   // bytes: a positive multiple of the unit
//   Status commit(std::size_t first, std::size_t count);    // granules, all decommitted now;
//                                                           // all-or-nothing on failure
//   Status decommit(std::size_t first, std::size_t count);  // granules, all committed now
//   void release();                           // frees the reservation (all decommitted first)
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <utility>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace memory {

// Smallest multiple of `unit` that is >= bytes; false on overflow.
inline bool align_up(std::size_t bytes, std::size_t unit, std::size_t* out) noexcept {
  if (unit == 0) return false;
  const std::size_t rem = bytes % unit;
  if (rem == 0) {
    *out = bytes;
    return true;
  }
  if (bytes > std::numeric_limits<std::size_t>::max() - (unit - rem)) return false;
  *out = bytes + (unit - rem);
  return true;
}

template <class Backend>
class VirtualBuffer {
 public:
  using backend_type = Backend;

  VirtualBuffer() = default;
  explicit VirtualBuffer(Backend backend) noexcept : backend_(std::move(backend)) {}
  ~VirtualBuffer() { reset(); }

  VirtualBuffer(const VirtualBuffer&) = delete;
  VirtualBuffer& operator=(const VirtualBuffer&) = delete;
  VirtualBuffer(VirtualBuffer&& o) noexcept
      : backend_(std::move(o.backend_)),
        base_(o.base_),
        size_(o.size_),
        granule_(o.granule_),
        granules_(o.granules_),
        committed_(o.committed_),
        bits_(std::move(o.bits_)) {
    o.forget();
  }
  VirtualBuffer& operator=(VirtualBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = std::move(o.backend_);
      base_ = o.base_;
      size_ = o.size_;
      granule_ = o.granule_;
      granules_ = o.granules_;
      committed_ = o.committed_;
      bits_ = std::move(o.bits_);
      o.forget();
    }
    return *this;
  }

  // Reserves `bytes` of address space, rounded up to the granularity; nothing is committed.
  // Errors: kErrorInvalidArgument (bytes == 0, or this buffer already holds a reservation),
  // kErrorOutOfMemory (larger than the address space: rounding overflows or the backend cannot
  // reserve it; also when the bitmap cannot be allocated), and the backend's granularity errors
  // (kErrorNoDevice, kErrorNotSupported, ...).
  Status reserve(std::size_t bytes) noexcept {
    if (base_ != nullptr || bytes == 0) return Status::kErrorInvalidArgument;
    std::size_t unit = 0;
    MEMATTN_RETURN_IF_ERROR(backend_.granularity(&unit));
    if (unit == 0) return Status::kErrorInvalidArgument;
    std::size_t rounded = 0;
    if (!align_up(bytes, unit, &rounded)) return Status::kErrorOutOfMemory;
    const std::size_t n = rounded / unit;
    // Address space first: a reservation too large for it fails here, before the bitmap is sized.
    void* base = nullptr;
    MEMATTN_RETURN_IF_ERROR(backend_.reserve(rounded, &base));
    if (base == nullptr) return Status::kErrorOutOfMemory;
    std::unique_ptr<std::uint64_t[]> bits(new (std::nothrow) std::uint64_t[(n + 63) / 64]());
    if (!bits) {
      backend_.release();
      return Status::kErrorOutOfMemory;
    }
    base_ = static_cast<unsigned char*>(base);
    size_ = rounded;
    granule_ = unit;
    granules_ = n;
    committed_ = 0;
    bits_ = std::move(bits);
    return Status::kSuccess;
  }

  // Backs [offset, offset + bytes) with physical memory (see the contract above).
  Status commit(std::size_t offset, std::size_t bytes) noexcept {
    std::size_t first = 0, count = 0;
    MEMATTN_RETURN_IF_ERROR(check_range(offset, bytes, &first, &count));
    const std::size_t end = first + count;
    std::size_t g = first;
    Status failed = Status::kSuccess;
    std::size_t failed_at = end;
    while (g < end) {  // runs of decommitted granules
      g = next_with(g, end, false);
      if (g >= end) break;
      const std::size_t run_end = next_with(g, end, true);
      failed = backend_.commit(g, run_end - g);
      if (failed != Status::kSuccess) {
        failed_at = g;
        break;
      }
      g = run_end;
    }
    if (failed != Status::kSuccess) {
      // Roll back: the bitmap is untouched so far, so the runs before failed_at are exactly the
      // ones this call committed.
      for (std::size_t r = first; r < failed_at;) {
        r = next_with(r, failed_at, false);
        if (r >= failed_at) break;
        const std::size_t run_end = next_with(r, failed_at, true);
        if (backend_.decommit(r, run_end - r) != Status::kSuccess) {
          set_bits(r, run_end, true);  // could not undo: record the truth (still committed)
        }
        r = run_end;
      }
      return failed;
    }
    set_bits(first, end, true);
    return Status::kSuccess;
  }

  // Returns the backing of [offset, offset + bytes) to the system; contents are discarded.
  Status decommit(std::size_t offset, std::size_t bytes) noexcept {
    std::size_t first = 0, count = 0;
    MEMATTN_RETURN_IF_ERROR(check_range(offset, bytes, &first, &count));
    return decommit_granules(first, first + count);
  }

  // Decommits every granule (the reservation stays).
  Status decommit_all() noexcept {
    if (base_ == nullptr) return Status::kErrorNullPointer;
    return decommit_granules(0, granules_);
  }

  // Decommits everything and releases the reservation; the buffer is empty afterwards (a
  // decommit failure here cannot be reported: the backend's release() unmaps what is left).
  void reset() noexcept {
    if (base_ == nullptr) return;
    (void)decommit_granules(0, granules_);
    backend_.release();
    forget();
  }

  void* data() const noexcept { return base_; }
  unsigned char* bytes() const noexcept { return base_; }
  bool reserved() const noexcept { return base_ != nullptr; }
  std::size_t size() const noexcept { return size_; }             // reserved bytes
  std::size_t granularity() const noexcept { return granule_; }   // commit unit in bytes
  std::size_t granule_count() const noexcept { return granules_; }
  std::size_t committed_bytes() const noexcept { return committed_ * granule_; }
  std::size_t committed_granules() const noexcept { return committed_; }

  // State of granule g (false when out of range).
  bool granule_committed(std::size_t g) const noexcept { return g < granules_ && test(g); }

  // True when every granule overlapping [offset, offset + bytes) is committed (bytes == 0: true
  // for any offset <= size()). Any offsets (not only granule multiples).
  bool is_committed(std::size_t offset, std::size_t bytes) const noexcept {
    if (base_ == nullptr || offset > size_ || bytes > size_ - offset) return false;
    if (bytes == 0) return true;
    const std::size_t first = offset / granule_, end = (offset + bytes - 1) / granule_ + 1;
    return next_with(first, end, false) >= end;
  }

  Backend& backend() noexcept { return backend_; }
  const Backend& backend() const noexcept { return backend_; }

 private:
  Status check_range(std::size_t offset, std::size_t bytes, std::size_t* first, std::size_t* count) const noexcept {
    if (base_ == nullptr) return Status::kErrorNullPointer;
    if (offset % granule_ != 0 || bytes % granule_ != 0) return Status::kErrorInvalidArgument;
    if (offset > size_ || bytes > size_ - offset) return Status::kErrorCapacityExceeded;
    *first = offset / granule_;
    *count = bytes / granule_;
    return Status::kSuccess;
  }

  Status decommit_granules(std::size_t first, std::size_t end) noexcept {
    for (std::size_t g = first; g < end;) {  // runs of committed granules
      g = next_with(g, end, true);
      if (g >= end) break;
      const std::size_t run_end = next_with(g, end, false);
      MEMATTN_RETURN_IF_ERROR(backend_.decommit(g, run_end - g));
      set_bits(g, run_end, false);
      g = run_end;
    }
    return Status::kSuccess;
  }

  bool test(std::size_t g) const noexcept { return (bits_[g / 64] >> (g % 64)) & 1u; }

  // First granule in [g, end) whose state is `state`, or end. Skips whole words.
  std::size_t next_with(std::size_t g, std::size_t end, bool state) const noexcept {
    while (g < end) {
      const std::uint64_t word = state ? bits_[g / 64] : ~bits_[g / 64];
      const std::uint64_t masked = word >> (g % 64);
      if (masked == 0) {
        g = (g / 64 + 1) * 64;
        continue;
      }
      std::size_t k = 0;
      std::uint64_t m = masked;
      while ((m & 1u) == 0) {
        m >>= 1;
        ++k;
      }
      g += k;
      return g < end ? g : end;
    }
    return end;
  }

  // Sets [first, end) to `state`, keeping the committed count exact.
  void set_bits(std::size_t first, std::size_t end, bool state) noexcept {
    for (std::size_t g = first; g < end; ++g) {
      const std::uint64_t bit = std::uint64_t{1} << (g % 64);
      const bool was = (bits_[g / 64] & bit) != 0;
      if (was == state) continue;
      if (state) {
        bits_[g / 64] |= bit;
        ++committed_;
      } else {
        bits_[g / 64] &= ~bit;
        --committed_;
      }
    }
  }

  void forget() noexcept {
    base_ = nullptr;
    size_ = 0;
    granule_ = 0;
    granules_ = 0;
    committed_ = 0;
    bits_.reset();
  }

  Backend backend_{};
  unsigned char* base_ = nullptr;
  std::size_t size_ = 0;
  std::size_t granule_ = 0;
  std::size_t granules_ = 0;
  std::size_t committed_ = 0;
  std::unique_ptr<std::uint64_t[]> bits_;
};

}  // namespace memory
MEMATTN_NAMESPACE_END
