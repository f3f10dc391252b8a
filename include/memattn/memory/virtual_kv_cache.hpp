// memattn::memory::VirtualKvCache<Backend>: the KV cache of `slots` concurrent sequences x
// `layers` x {K, V}, kept contiguous in virtual memory (one VirtualBuffer) and backed on demand,
// as vAttention does: each slot reserves room for max_tokens up front, ensure_tokens() commits
// physical memory as its sequence grows and trim() gives it back. The pointers never move, so an
// unmodified dense (non-paged) attention kernel -- cpu::dense_decode, cuda::dense_decode -- reads
// the cache through plain strided views, and no block table is needed.
//
//   VirtualKvCacheConfig cfg;  // slots, layers, kv_heads, head_dim, max_tokens, elem_bytes, layout
//   VirtualKvCache<HostVmBackend> kv;                 // or <CudaVmmBackend> (cuda_vmm_backend.cuh)
//   kv.init(cfg);                                     // reserves; nothing is backed yet
//   kv.ensure_tokens(slot, len + 1);                  // before writing token `len` of `slot`
//   kv.k<Half>(slot, layer) + t * kv.token_stride() + h * kv.head_stride()   // K[t, h, :]
//   kv.layer_views<const Half>(layer, 0, B, &k, &v);  // [B, Hkv, max_tokens, D] for DecodeArgs
//   kv.trim(slot, 0);                                 // sequence finished: memory back
//
// Layouts (a token's K (or V) row is [Hkv, D], contiguous, elem_bytes per element):
//  * KvLayout::kPerLayer: a slot holds 2 * layers regions (layer-major, K then V), each
//    [max_tokens, Hkv, D] padded to the granule. A growing sequence commits one granule per
//    region at a time (2 * layers commits); the token stride is Hkv * D, so the regions are also
//    an ordinary paged layout ([pages, page_tokens, Hkv, D] through paged_view()).
//  * KvLayout::kInterleaved: a slot is [max_tokens, layers, {K, V}, Hkv, D] padded to the
//    granule: one granule covers every layer's K and V of its tokens, so growth costs one commit
//    per granule for the whole model (fewer, larger driver calls; less padding per slot), at the
//    price of a token stride of layers * 2 * Hkv * D (the dense kernels take any stride).
//  Slots are granule-aligned and equally spaced (slot_stride()), so the views of one layer cover
//  any run of consecutive slots as one batch.
//
// Contract
//  * ensure_tokens(slot, n) makes tokens [0, n) of the slot backed in every layer, K and V; it
//    never shrinks and commits whole granules (backed_tokens() >= n afterwards). It is
//    all-or-nothing: on failure (kErrorOutOfMemory when physical memory runs out) the slot is
//    backed exactly as before and no data is lost.
//  * trim(slot, n) keeps tokens [0, n) and decommits every granule past them (their contents are
//    discarded; a later ensure_tokens backs them again with zeros). trim(slot, 0) frees the slot.
//  * Errors: kErrorInvalidArgument (slot or layer out of range, n < 0, bad config, element type
//    whose size is not elem_bytes), kErrorCapacityExceeded (n > max_tokens), kErrorNullPointer
//    (not initialised), kErrorOutOfMemory (address space or physical memory), backend errors.
//  * As for VirtualBuffer: no kernel may read a range while it is being decommitted (trim after
//    the stream work that reads it is done); commits and decommits are host calls, made outside
//    stream capture; captured graphs stay valid because the addresses never move. Not
//    thread-safe. init() allocates (the bitmap and per-slot counters); nothing else does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <utility>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/memory/virtual_buffer.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace memory {

enum class KvLayout : int {
  kPerLayer = 0,     // per (layer, K/V) region of [max_tokens, Hkv, D] in each slot
  kInterleaved = 1,  // [max_tokens, layers, 2, Hkv, D] in each slot: one granule spans all layers
};

struct VirtualKvCacheConfig {
  std::int64_t slots = 0;       // concurrent sequences
  std::int64_t layers = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t max_tokens = 0;  // per slot
  std::size_t elem_bytes = 2;   // 2 for fp16 / bf16, 4 for fp32
  KvLayout layout = KvLayout::kPerLayer;
};

// A paged view of the same memory with an identity page table, for kernels that take a block
// table: in the pool of one (layer, K/V) -- base VirtualKvCache::k(0, layer) or v(0, layer) --
// page p starts at element p * page_stride, and page i of slot s is page(s, i). Token t of a page
// is at t * token_stride, head h at h * head_stride. The table is the same for every layer.
struct IdentityPageTable {
  std::int64_t page_tokens = 0;     // tokens per page
  std::int64_t pages_per_slot = 0;  // pool pages between two slots (>= pages a slot can use)
  std::int64_t slot_pages = 0;      // pages one slot can use: ceil(max_tokens / page_tokens)
  std::int64_t num_pages = 0;       // slots * pages_per_slot
  std::int64_t page_stride = 0;     // elements between consecutive pages of a pool
  std::int64_t token_stride = 0;    // elements between consecutive tokens of a page
  std::int64_t head_stride = 0;     // elements between the heads of a token (head_dim)
  bool contiguous_pages = false;    // token_stride == Hkv * D: a page is a dense [page_tokens, Hkv, D]

  MEMATTN_HOST_DEVICE std::int64_t page(std::int64_t slot, std::int64_t i) const { return slot * pages_per_slot + i; }

  // Writes an int32 block table of `rows` slots x `width` entries (row-major, width <=
  // slot_pages): table[s * width + i] = page(first_slot + s, i).
  Status fill(std::int32_t* table, std::int64_t first_slot, std::int64_t rows, std::int64_t width) const noexcept {
    if (table == nullptr) return Status::kErrorNullPointer;
    if (first_slot < 0 || rows < 0 || width < 0 || width > slot_pages || pages_per_slot <= 0)
      return Status::kErrorInvalidArgument;
    if (first_slot > num_pages / pages_per_slot || rows > num_pages / pages_per_slot - first_slot)
      return Status::kErrorInvalidArgument;
    if (rows > 0 && page(first_slot + rows - 1, width) > std::numeric_limits<std::int32_t>::max())
      return Status::kErrorInvalidShape;
    for (std::int64_t s = 0; s < rows; ++s)
      for (std::int64_t i = 0; i < width; ++i) table[s * width + i] = static_cast<std::int32_t>(page(first_slot + s, i));
    return Status::kSuccess;
  }
};

namespace detail {
// a * b into *out; false on overflow or negative operands.
inline bool mul_size(std::size_t a, std::size_t b, std::size_t* out) noexcept {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
  *out = a * b;
  return true;
}
}  // namespace detail

template <class Backend>
class VirtualKvCache {
 public:
  VirtualKvCache() = default;
  VirtualKvCache(VirtualKvCache&&) noexcept = default;
  VirtualKvCache& operator=(VirtualKvCache&&) noexcept = default;
  VirtualKvCache(const VirtualKvCache&) = delete;
  VirtualKvCache& operator=(const VirtualKvCache&) = delete;

  // Validates the geometry and reserves slots * slot_stride bytes through `backend`.
  // kErrorInvalidArgument: a non-positive extent or elem_bytes, an unknown layout, or an
  // already initialised cache; kErrorOutOfMemory: the reservation does not fit the address space.
  Status init(const VirtualKvCacheConfig& cfg, Backend backend = Backend{}) noexcept {
    if (buffer_.reserved()) return Status::kErrorInvalidArgument;
    if (cfg.slots <= 0 || cfg.layers <= 0 || cfg.kv_heads <= 0 || cfg.head_dim <= 0 || cfg.max_tokens <= 0 ||
        cfg.elem_bytes == 0 || (cfg.layout != KvLayout::kPerLayer && cfg.layout != KvLayout::kInterleaved))
      return Status::kErrorInvalidArgument;
    VirtualBuffer<Backend> buf(std::move(backend));
    std::size_t granule = 0;
    MEMATTN_RETURN_IF_ERROR(buf.backend().granularity(&granule));
    if (granule == 0 || granule % cfg.elem_bytes != 0) return Status::kErrorInvalidArgument;

    using detail::mul_size;
    const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };
    std::size_t row = 0, unit = 0, span = 0, region = 0, slot = 0, total = 0;
    if (!mul_size(sz(cfg.kv_heads), sz(cfg.head_dim), &row) || !mul_size(row, cfg.elem_bytes, &row))
      return Status::kErrorOutOfMemory;  // bytes of one token's K (or V) row
    const std::size_t regions = cfg.layout == KvLayout::kPerLayer ? 2 * sz(cfg.layers) : 1;
    if (cfg.layout == KvLayout::kPerLayer) {
      unit = row;
    } else if (!mul_size(row, 2 * sz(cfg.layers), &unit)) {
      return Status::kErrorOutOfMemory;
    }
    if (!mul_size(unit, sz(cfg.max_tokens), &span) || !align_up(span, granule, &region) ||
        !mul_size(region, regions, &slot) || !mul_size(slot, sz(cfg.slots), &total))
      return Status::kErrorOutOfMemory;
    if (total > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()))
      return Status::kErrorOutOfMemory;

    std::unique_ptr<std::size_t[]> backed(new (std::nothrow) std::size_t[sz(cfg.slots)]());
    std::unique_ptr<std::size_t[]> high(new (std::nothrow) std::size_t[sz(cfg.slots)]());
    if (!backed || !high) return Status::kErrorOutOfMemory;
    MEMATTN_RETURN_IF_ERROR(buf.reserve(total));

    cfg_ = cfg;
    buffer_ = std::move(buf);
    row_bytes_ = row;
    unit_bytes_ = unit;
    region_bytes_ = region;
    regions_ = regions;
    slot_bytes_ = slot;
    backed_ = std::move(backed);
    high_ = std::move(high);
    return Status::kSuccess;
  }

  // Backs tokens [0, tokens) of `slot` in every layer, K and V (all-or-nothing).
  Status ensure_tokens(std::int64_t slot, std::int64_t tokens) noexcept {
    std::size_t need = 0;
    MEMATTN_RETURN_IF_ERROR(check_slot_tokens(slot, tokens, &need));
    std::size_t& backed = backed_[static_cast<std::size_t>(slot)];
    std::size_t& high = high_[static_cast<std::size_t>(slot)];
    if (need <= backed) return Status::kSuccess;
    for (std::size_t r = 0; r < regions_; ++r) {
      const Status st = buffer_.commit(region_offset(slot, r) + backed, need - backed);
      if (st != Status::kSuccess) {
        // Undo the regions committed by this call (tokens past `backed` hold nothing promised).
        for (std::size_t u = 0; u < r; ++u) {
          if (buffer_.decommit(region_offset(slot, u) + backed, need - backed) != Status::kSuccess && need > high)
            high = need;
        }
        return st;
      }
    }
    backed = need;
    if (need > high) high = need;
    return Status::kSuccess;
  }

  // Keeps tokens [0, tokens) of `slot` and decommits every granule past them.
  Status trim(std::int64_t slot, std::int64_t tokens) noexcept {
    std::size_t keep = 0;
    MEMATTN_RETURN_IF_ERROR(check_slot_tokens(slot, tokens, &keep));
    std::size_t& backed = backed_[static_cast<std::size_t>(slot)];
    std::size_t& high = high_[static_cast<std::size_t>(slot)];
    if (keep >= high) return Status::kSuccess;
    if (keep < backed) backed = keep;  // whatever happens below, past `keep` is no longer promised
    for (std::size_t r = 0; r < regions_; ++r)
      MEMATTN_RETURN_IF_ERROR(buffer_.decommit(region_offset(slot, r) + keep, high - keep));
    high = keep;
    return Status::kSuccess;
  }

  // Tokens of `slot` backed in every layer (0 for a bad slot). At least the largest n of the
  // ensure_tokens() calls since the last trim, rounded up to whole granules, at most max_tokens.
  std::int64_t backed_tokens(std::int64_t slot) const noexcept {
    if (!buffer_.reserved() || slot < 0 || slot >= cfg_.slots) return 0;
    const std::size_t t = backed_[static_cast<std::size_t>(slot)] / unit_bytes_;
    return t < static_cast<std::size_t>(cfg_.max_tokens) ? static_cast<std::int64_t>(t) : cfg_.max_tokens;
  }

  // Pointer to K (or V) of token 0, head 0 of `slot` in `layer`; nullptr for a bad slot or layer,
  // an uninitialised cache, or sizeof(T) != elem_bytes. Token t, head h: + t * token_stride() +
  // h * head_stride() elements.
  template <class T>
  T* k(std::int64_t slot, std::int64_t layer) const noexcept {
    return element_ptr<T>(slot, layer, 0);
  }
  template <class T>
  T* v(std::int64_t slot, std::int64_t layer) const noexcept {
    return element_ptr<T>(slot, layer, 1);
  }

  // Strides in elements.
  std::int64_t head_stride() const noexcept { return cfg_.head_dim; }
  std::int64_t token_stride() const noexcept { return elems(unit_bytes_); }
  std::int64_t slot_stride() const noexcept { return elems(slot_bytes_); }

  // Views of K and V of `layer` for slots [first_slot, first_slot + count), shaped
  // [count, Hkv, max_tokens, D] as DecodeArgs::k_cache / v_cache take them (T may be const).
  template <class T>
  Status layer_views(std::int64_t layer, std::int64_t first_slot, std::int64_t count, TensorView<T, 4>* k_view,
                     TensorView<T, 4>* v_view) const noexcept {
    if (k_view == nullptr || v_view == nullptr) return Status::kErrorNullPointer;
    if (!buffer_.reserved()) return Status::kErrorNullPointer;
    if (sizeof(T) != cfg_.elem_bytes || layer < 0 || layer >= cfg_.layers || first_slot < 0 || count <= 0 ||
        first_slot > cfg_.slots || count > cfg_.slots - first_slot)
      return Status::kErrorInvalidArgument;
    TensorView<T, 4>* views[2] = {k_view, v_view};
    for (int kv = 0; kv < 2; ++kv) {
      TensorView<T, 4>& view = *views[kv];
      view.data = element_ptr<T>(first_slot, layer, kv);
      view.shape[0] = count;
      view.shape[1] = cfg_.kv_heads;
      view.shape[2] = cfg_.max_tokens;
      view.shape[3] = cfg_.head_dim;
      view.stride[0] = slot_stride();
      view.stride[1] = head_stride();
      view.stride[2] = token_stride();
      view.stride[3] = 1;
    }
    return Status::kSuccess;
  }

  // The identity page table over pages of `page_tokens` tokens. kErrorInvalidArgument when
  // page_tokens <= 0 or the slot stride is not a whole number of pages.
  Status paged_view(std::int64_t page_tokens, IdentityPageTable* out) const noexcept {
    if (out == nullptr || !buffer_.reserved()) return Status::kErrorNullPointer;
    if (page_tokens <= 0 || page_tokens > cfg_.max_tokens) return Status::kErrorInvalidArgument;
    IdentityPageTable t;
    t.page_tokens = page_tokens;
    t.token_stride = token_stride();
    t.head_stride = head_stride();
    t.page_stride = page_tokens * t.token_stride;
    const std::int64_t ss = slot_stride();
    if (ss % t.page_stride != 0) return Status::kErrorInvalidArgument;
    t.pages_per_slot = ss / t.page_stride;
    t.slot_pages = (cfg_.max_tokens + page_tokens - 1) / page_tokens;
    t.num_pages = t.pages_per_slot * cfg_.slots;
    t.contiguous_pages = t.token_stride == cfg_.kv_heads * cfg_.head_dim;
    *out = t;
    return Status::kSuccess;
  }

  const VirtualKvCacheConfig& config() const noexcept { return cfg_; }
  const VirtualBuffer<Backend>& buffer() const noexcept { return buffer_; }
  Backend& backend() noexcept { return buffer_.backend(); }
  bool initialized() const noexcept { return buffer_.reserved(); }
  std::size_t reserved_bytes() const noexcept { return buffer_.size(); }
  std::size_t committed_bytes() const noexcept { return buffer_.committed_bytes(); }
  std::size_t granularity() const noexcept { return buffer_.granularity(); }
  std::size_t slot_bytes() const noexcept { return slot_bytes_; }
  // Tokens one commit step adds to a slot (granule / bytes per token of a region; may be 0 when a
  // token is larger than a granule), and the commits such a step makes.
  std::int64_t tokens_per_granule() const noexcept {
    return unit_bytes_ ? static_cast<std::int64_t>(buffer_.granularity() / unit_bytes_) : 0;
  }
  std::size_t regions_per_slot() const noexcept { return regions_; }

 private:
  Status check_slot_tokens(std::int64_t slot, std::int64_t tokens, std::size_t* bytes) const noexcept {
    if (!buffer_.reserved()) return Status::kErrorNullPointer;
    if (slot < 0 || slot >= cfg_.slots || tokens < 0) return Status::kErrorInvalidArgument;
    if (tokens > cfg_.max_tokens) return Status::kErrorCapacityExceeded;
    // Cannot overflow: tokens * unit_bytes_ <= region_bytes_ (checked in init).
    if (!align_up(static_cast<std::size_t>(tokens) * unit_bytes_, buffer_.granularity(), bytes))
      return Status::kErrorCapacityExceeded;
    return Status::kSuccess;
  }

  std::size_t region_offset(std::int64_t slot, std::size_t region) const noexcept {
    return static_cast<std::size_t>(slot) * slot_bytes_ + region * region_bytes_;
  }

  template <class T>
  T* element_ptr(std::int64_t slot, std::int64_t layer, int kv) const noexcept {
    if (!buffer_.reserved() || sizeof(T) != cfg_.elem_bytes || slot < 0 || slot >= cfg_.slots || layer < 0 ||
        layer >= cfg_.layers)
      return nullptr;
    const std::size_t idx = 2 * static_cast<std::size_t>(layer) + static_cast<std::size_t>(kv);
    std::size_t off = static_cast<std::size_t>(slot) * slot_bytes_;
    off += cfg_.layout == KvLayout::kPerLayer ? idx * region_bytes_ : idx * row_bytes_;
    return reinterpret_cast<T*>(buffer_.bytes() + off);
  }

  std::int64_t elems(std::size_t bytes) const noexcept {
    return cfg_.elem_bytes ? static_cast<std::int64_t>(bytes / cfg_.elem_bytes) : 0;
  }

  VirtualKvCacheConfig cfg_{};
  VirtualBuffer<Backend> buffer_;
  std::size_t row_bytes_ = 0;     // one token's K (or V) row: Hkv * D * elem_bytes
  std::size_t unit_bytes_ = 0;    // bytes per token of a region (row, or 2 * layers rows)
  std::size_t region_bytes_ = 0;  // one region, granule-aligned
  std::size_t regions_ = 0;       // regions per slot: 2 * layers or 1
  std::size_t slot_bytes_ = 0;
  std::unique_ptr<std::size_t[]> backed_;  // per slot: bytes of every region committed
  std::unique_ptr<std::size_t[]> high_;    // per slot: no region is committed past this
};

}  // namespace memory
MEMATTN_NAMESPACE_END
