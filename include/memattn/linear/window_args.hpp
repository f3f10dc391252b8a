// Sliding-window softmax attention (the BASED companion, spec P3) and the BASED layer operation
// (Taylor linear attention + sliding window, summed), shared by the CPU and CUDA back-ends.
//
// Sliding window: causal softmax attention in which the query at absolute position p sees the
// keys at positions max(0, p - W) .. p, i.e. the previous W tokens plus itself (BASED's "window
// 64" is W = 64; its configs' window_size 128 handed to FlashAttention as (64, 0) is the same).
// Scores are scale·q·k in fp32, softmax in fp32. GQA: query head hq reads kv head hq / G.
// Continuation and decode use a ring of past keys/values per sequence: ring_k / ring_v
// [P_ring, R, Hk, D] in the input dtype, sequence n uses ring slot ring_slot[n] (-1: skip the
// sequence, outputs untouched), its first new token sits at absolute position seq_pos[n], and
// position p lives in ring row p mod R. Keys of this call are read from k/v; keys before
// seq_pos come from the ring (so R >= W suffices). After attending, the call stores its last
// min(len, R) tokens in the ring.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/linear/linear_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace linear {

constexpr int kMaxWindow = 256;

template <class T>
struct SlidingWindowArgs {
  TensorView<const T, 3> q;  // [rows, Hq, D]
  TensorView<const T, 3> k;  // [rows, Hk, D]
  TensorView<const T, 3> v;  // [rows, Hk, Dv]
  TensorView<T, 3> o;        // [rows, Hq, Dv]
  SeqDesc seq;
  int window = 0;             // W in [1, 256]
  float scale = kUnset;       // required
  bool accumulate = false;    // o = o + window attention (one extra read of o)
  // Optional ring (decode / continuation); both or neither.
  TensorView<T, 4> ring_k;    // [P_ring, R, Hk, D]
  TensorView<T, 4> ring_v;    // [P_ring, R, Hk, Dv]
  const std::int32_t* ring_slot = nullptr;  // [N]; nullptr: slot n; -1: skip
  const std::int32_t* seq_pos = nullptr;    // [N] absolute position of the first new token; nullptr: 0
  // CUDA: host mirrors for validation (optional).
  const std::int32_t* ring_slot_host = nullptr;
  const std::int32_t* seq_pos_host = nullptr;
  const std::int32_t* cu_seqlens_host = nullptr;
  const std::int32_t* seq_lens_host = nullptr;
};

struct WindowDims {
  std::int64_t rows = 0, num_seqs = 0, t_pad = 0, q_heads = 0, kv_heads = 0, group = 1, d = 0, dv = 0;
  std::int64_t ring_slots = 0, ring_len = 0;
  bool varlen = false, has_ring = false;
};

template <class T>
Status validate_window(const SlidingWindowArgs<T>& a, const std::int32_t* cu, const std::int32_t* lens,
                       const std::int32_t* ring_slot, const std::int32_t* seq_pos, WindowDims* dims) {
  if (dims == nullptr) return Status::kErrorNullPointer;
  WindowDims d;
  MEMATTN_RETURN_IF_ERROR(check_present(a.q));
  MEMATTN_RETURN_IF_ERROR(check_present(a.k));
  MEMATTN_RETURN_IF_ERROR(check_present(a.v));
  MEMATTN_RETURN_IF_ERROR(check_present(a.o));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.q));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.k));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.v));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.o));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.o));
  d.rows = a.q.shape[0];
  d.q_heads = a.q.shape[1];
  d.d = a.q.shape[2];
  d.kv_heads = a.k.shape[1];
  d.dv = a.v.shape[2];
  MEMATTN_RETURN_IF_ERROR(check_shape(a.k, {d.rows, d.kv_heads, d.d}));
  MEMATTN_RETURN_IF_ERROR(check_shape(a.v, {d.rows, d.kv_heads, d.dv}));
  MEMATTN_RETURN_IF_ERROR(check_shape(a.o, {d.rows, d.q_heads, d.dv}));
  if (d.q_heads % d.kv_heads != 0) return Status::kErrorGqaRatio;
  d.group = d.q_heads / d.kv_heads;
  if (d.d > 256 || d.dv > 256) return Status::kErrorUnsupportedHeadDim;
  if (a.window < 1 || a.window > kMaxWindow) return Status::kErrorInvalidArgument;
  if (!std::isfinite(a.scale)) return Status::kErrorInvalidArgument;
  if (d.rows >= std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;

  const SeqDesc& s = a.seq;
  if (s.num_seqs <= 0 || s.num_seqs > (std::int64_t{1} << 24)) return Status::kErrorInvalidShape;
  d.num_seqs = s.num_seqs;
  d.varlen = s.cu_seqlens != nullptr;
  if (d.varlen) {
    if (s.seq_lens) return Status::kErrorInvalidArgument;
    if (cu) {
      if (cu[0] != 0 || cu[s.num_seqs] > d.rows || cu[s.num_seqs] == 0) return Status::kErrorInvalidShape;
      for (std::int64_t n = 0; n < s.num_seqs; ++n)
        if (cu[n + 1] < cu[n]) return Status::kErrorInvalidShape;
    }
  } else {
    if (d.rows % s.num_seqs != 0) return Status::kErrorInvalidShape;
    d.t_pad = d.rows / s.num_seqs;
    if (lens) {
      std::int64_t total = 0;
      for (std::int64_t n = 0; n < s.num_seqs; ++n) {
        if (lens[n] < 0 || lens[n] > d.t_pad) return Status::kErrorInvalidShape;
        total += lens[n];
      }
      if (total == 0) return Status::kErrorEmptyCache;
    }
  }

  d.has_ring = a.ring_k.data != nullptr || a.ring_v.data != nullptr;
  if (d.has_ring) {
    MEMATTN_RETURN_IF_ERROR(check_present(a.ring_k));
    MEMATTN_RETURN_IF_ERROR(check_present(a.ring_v));
    MEMATTN_RETURN_IF_ERROR(check_layout(a.ring_k));
    MEMATTN_RETURN_IF_ERROR(check_layout(a.ring_v));
    MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.ring_k));
    MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.ring_v));
    d.ring_slots = a.ring_k.shape[0];
    d.ring_len = a.ring_k.shape[1];
    MEMATTN_RETURN_IF_ERROR(check_shape(a.ring_k, {d.ring_slots, d.ring_len, d.kv_heads, d.d}));
    MEMATTN_RETURN_IF_ERROR(check_shape(a.ring_v, {d.ring_slots, d.ring_len, d.kv_heads, d.dv}));
    if (d.ring_len < a.window) return Status::kErrorCapacityExceeded;
    if (a.ring_slot == nullptr && d.ring_slots < s.num_seqs) return Status::kErrorCapacityExceeded;
    if (ring_slot)
      for (std::int64_t n = 0; n < s.num_seqs; ++n)
        if (ring_slot[n] < -1 || ring_slot[n] >= d.ring_slots) return Status::kErrorCapacityExceeded;
    if (seq_pos)
      for (std::int64_t n = 0; n < s.num_seqs; ++n)
        if (seq_pos[n] < 0) return Status::kErrorInvalidArgument;
  } else if (a.ring_slot != nullptr || a.seq_pos != nullptr) {
    return Status::kErrorInvalidArgument;  // history positions without a ring to read them from
  }
  *dims = d;
  return Status::kSuccess;
}

// The BASED layer: o = linear-attention branch (Taylor feature map, normally normalised) +
// sliding-window branch, over the same sequences. `linear.o` is the layer output and
// `linear.seq` the sequences; `window.o` and `window.seq` must be left empty (they are taken
// from `linear`). Each branch has its own q/k (BASED: feature dim 16 for the linear branch) and
// v; the window branch's ring, when given, continues across calls like the linear state.
template <class T>
struct BasedLayerArgs {
  LinearArgs<T> linear;
  SlidingWindowArgs<T> window;
};

template <class T>
Status based_window_args(const BasedLayerArgs<T>& a, SlidingWindowArgs<T>* w) {
  if (a.window.o.data != nullptr || a.window.seq.num_seqs != 0 || a.window.seq.cu_seqlens != nullptr ||
      a.window.seq.seq_lens != nullptr || a.window.accumulate)
    return Status::kErrorInvalidArgument;
  if (a.linear.o.data == nullptr) return Status::kErrorNullPointer;
  *w = a.window;
  w->o = a.linear.o;
  w->seq = a.linear.seq;
  w->accumulate = true;
  return Status::kSuccess;
}

}  // namespace linear
MEMATTN_NAMESPACE_END
