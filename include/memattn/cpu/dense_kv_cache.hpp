// The "full" KV policy on the CPU: every token kept, K and V stored in fp16 (default), bf16 or
// fp32, attention by cpu::dense_decode. Implements cache::KvCache.
//
// Storage per (sequence, layer) is head-major [Hkv][capacity][D]: each KV head's keys are one
// contiguous run that the decode streams (token-major rows, D elements every Hkv * D, made the
// fp16 decode at 16K tokens 2x slower: the hardware prefetchers lose such strided streams).
// Capacity grows by half its size in 64-token granules (or is set by reserve()); bytes() reports
// the allocated capacity, which is what the process really holds.
//
// attend() splits the work into tasks (KV head x block of query tokens), run through the
// caller's Executor with one scratch workspace per worker; the result does not depend on the
// number of workers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

template <class T = Half>
class DenseKvCache final : public cache::KvCache {
 public:
  static constexpr std::int64_t kGranule = 64;

  static Status create(const cache::CacheShape& shape, const Executor& executor, std::unique_ptr<DenseKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    out->reset(new DenseKvCache(shape, executor));
    return Status::kSuccess;
  }

  const char* spec() const override { return spec_.c_str(); }
  const cache::CacheShape& shape() const override { return shape_; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_tensor(q, {k.shape[0], shape_.q_heads, shape_.head_dim}));
    MEMATTN_RETURN_IF_ERROR(check_tensor(out, {k.shape[0], shape_.q_heads, shape_.head_dim}));
    const std::int64_t len = seq >= 0 && seq < shape_.max_sequences ? len_[seq] : 0;
    MEMATTN_RETURN_IF_ERROR(append(seq, layer, k, v));
    return attend_stored(segment(seq, layer), len, q, out);
  }

  Status append(int seq, int layer, TensorView<const float, 3> k, TensorView<const float, 3> v) override {
    if (seq < 0 || seq >= shape_.max_sequences || layer < 0 || layer >= shape_.layers)
      return Status::kErrorInvalidArgument;
    const std::int64_t n = k.shape[0];
    MEMATTN_RETURN_IF_ERROR(check_tensor(k, {-1, shape_.kv_heads, shape_.head_dim}));
    MEMATTN_RETURN_IF_ERROR(check_tensor(v, {n, shape_.kv_heads, shape_.head_dim}));
    Segment& sg = segment(seq, layer);
    const std::int64_t len = len_[seq];
    // Every layer of a chunk appends the same number of tokens, once.
    if (sg.size != len) return Status::kErrorInvalidArgument;
    if (pending_[seq] != 0 && pending_[seq] != n) return Status::kErrorInvalidShape;
    if (len + n > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    if (!storable<T>(k) || !storable<T>(v)) return Status::kErrorNonFinite;  // fp16 would store inf

    grow(sg, len + n);
    const std::int64_t D = shape_.head_dim;
    for (std::int64_t h = 0; h < shape_.kv_heads; ++h) {
      T* kh = sg.k.data() + (h * sg.capacity + len) * D;
      T* vh = sg.v.data() + (h * sg.capacity + len) * D;
      for (std::int64_t t = 0; t < n; ++t) {
        from_float_n(k.ptr(t, h), D, kh + t * D);
        from_float_n(v.ptr(t, h), D, vh + t * D);
      }
    }
    sg.size = len + n;
    pending_[seq] = n;
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals&) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    const std::int64_t n = pending_[seq];
    for (int l = 0; l < shape_.layers; ++l) {
      if (segment(seq, l).size != len_[seq] + n) return Status::kErrorInvalidArgument;  // a layer was skipped
    }
    len_[seq] += n;
    pending_[seq] = 0;
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    for (int l = 0; l < shape_.layers; ++l) {
      Segment& sg = segment(seq, l);
      bytes_ -= sg.bytes();
      sg = Segment{};
    }
    len_[seq] = 0;
    pending_[seq] = 0;
    return Status::kSuccess;
  }

  Status reserve(int seq, int tokens) override {
    if (seq < 0 || seq >= shape_.max_sequences || tokens < 0) return Status::kErrorInvalidArgument;
    if (tokens > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    for (int l = 0; l < shape_.layers; ++l) set_capacity(segment(seq, l), std::max<std::int64_t>(tokens, segment(seq, l).size));
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override {
    return seq >= 0 && seq < shape_.max_sequences ? len_[seq] : 0;
  }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }

 private:
  struct Segment {
    std::vector<T> k, v;  // [Hkv][capacity][D]
    std::int64_t size = 0;
    std::int64_t capacity = 0;
    std::size_t bytes() const { return (k.size() + v.size()) * sizeof(T); }
  };

  DenseKvCache(const cache::CacheShape& shape, const Executor& executor)
      : shape_(shape),
        executor_(executor),
        segments_(static_cast<std::size_t>(shape.max_sequences) * shape.layers),
        len_(static_cast<std::size_t>(shape.max_sequences), 0),
        pending_(static_cast<std::size_t>(shape.max_sequences), 0),
        scratch_(static_cast<std::size_t>(executor.concurrency())) {
    spec_ = std::is_same<T, float>::value ? "full:fp32=1" : "full:fp32=0";
  }

  Segment& segment(int seq, int layer) { return segments_[static_cast<std::size_t>(seq) * shape_.layers + layer]; }

  void set_capacity(Segment& sg, std::int64_t tokens) {
    if (tokens == sg.capacity) return;
    const std::size_t elems = static_cast<std::size_t>(tokens) * shape_.kv_heads * shape_.head_dim;
    bytes_ -= sg.bytes();
    std::vector<T> k(elems), v(elems);
    const std::ptrdiff_t D = shape_.head_dim, keep = static_cast<std::ptrdiff_t>(std::min(sg.size, tokens)) * D;
    for (std::ptrdiff_t h = 0; h < shape_.kv_heads; ++h) {  // each head's run moves to its new place
      const std::ptrdiff_t from = h * sg.capacity * D, to = h * tokens * D;
      std::copy(sg.k.begin() + from, sg.k.begin() + from + keep, k.begin() + to);
      std::copy(sg.v.begin() + from, sg.v.begin() + from + keep, v.begin() + to);
    }
    sg.k.swap(k);
    sg.v.swap(v);
    sg.capacity = tokens;
    bytes_ += sg.bytes();
    peak_ = std::max(peak_, bytes_);
  }

  void grow(Segment& sg, std::int64_t need) {
    if (need <= sg.capacity) return;
    std::int64_t cap = std::max(need, sg.capacity + sg.capacity / 2);
    cap = (cap + kGranule - 1) / kGranule * kGranule;
    set_capacity(sg, std::min<std::int64_t>(cap, shape_.max_tokens));
  }

  // Attention of the n chunk queries over the segment's first len + n tokens.
  Status attend_stored(const Segment& sg, std::int64_t len, TensorView<const float, 3> q, TensorView<float, 3> out) {
    const std::int64_t n = q.shape[0], D = shape_.head_dim, Hkv = shape_.kv_heads;
    const std::int64_t G = shape_.q_heads / Hkv;
    // Tasks: KV head x block of query tokens; blocks small enough to keep every worker busy.
    const std::int64_t want_tasks = 4 * executor_.concurrency();
    std::int64_t block = std::min<std::int64_t>(n, 64);
    while (block > 16 && Hkv * ((n + block - 1) / block) < want_tasks) block /= 2;
    const std::int64_t blocks = (n + block - 1) / block;

    auto args_for = [&](std::int64_t task, std::int32_t* seq_len) {
      const std::int64_t h = task / blocks, t0 = (task % blocks) * block, t1 = std::min(n, t0 + block);
      *seq_len = static_cast<std::int32_t>(len + t1);
      attention::DecodeArgs<T, float> a;
      a.q = make_strided_view<4>(q.ptr(t0, h * G), {1, t1 - t0, G, D}, {0, q.stride[0], q.stride[1], 1});
      a.o = make_strided_view<4>(out.ptr(t0, h * G), {1, t1 - t0, G, D}, {0, out.stride[0], out.stride[1], 1});
      const std::int64_t run = sg.capacity * D;  // one head's keys
      a.k_cache = make_strided_view<4>(static_cast<const T*>(sg.k.data()) + h * run, {1, 1, sg.capacity, D}, {0, 0, D, 1});
      a.v_cache = make_strided_view<4>(static_cast<const T*>(sg.v.data()) + h * run, {1, 1, sg.capacity, D}, {0, 0, D, 1});
      a.seq_lens = seq_len;
      return a;
    };
    // Size every worker's scratch for the largest task (the first block is a full one).
    std::int32_t probe_len = 0;
    std::size_t need = 0;
    MEMATTN_RETURN_IF_ERROR(dense_decode_workspace_size(args_for(0, &probe_len), &need));
    for (auto& s : scratch_) s.resize(need);
    std::vector<Status> status(static_cast<std::size_t>(Hkv * blocks), Status::kSuccess);
    executor_.for_each(Hkv * blocks, [&](std::int64_t task, int worker) {
      std::int32_t seq_len = 0;
      const auto a = args_for(task, &seq_len);
      status[static_cast<std::size_t>(task)] = dense_decode(a, scratch_[static_cast<std::size_t>(worker)].data(), need);
    });
    for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    return Status::kSuccess;
  }

  cache::CacheShape shape_;
  Executor executor_;
  std::string spec_;
  std::vector<Segment> segments_;        // [seq][layer]
  std::vector<std::int64_t> len_;        // closed tokens per sequence
  std::vector<std::int64_t> pending_;    // tokens of the open chunk per sequence
  std::vector<HostWorkspace> scratch_;   // one workspace per worker
  std::size_t bytes_ = 0;
  std::size_t peak_ = 0;
};

}  // namespace cpu
MEMATTN_NAMESPACE_END
