// Arguments of dense (uncompressed) attention and their validation, shared by the CPU and CUDA
// back-ends so both accept and reject exactly the same inputs.
//
// Conventions
//  * Activations are tokens-major [B, T, H, D]; the cache is [B, Hkv, Lcap, D] (any strides with
//    a contiguous head_dim, so [B, Lcap, Hkv, D] storage works through strides).
//  * GQA: query head h reads KV head h / (Hq / Hkv); Hq must be a multiple of Hkv.
//  * lse[b, t, h] = ln sum_j exp(scale * q.k_j) over the keys the query sees (natural log).
//  * Decode: seq_lens[b] = L_b counts the cached tokens of sequence b, the Tq new ones included
//    (they were appended before the call). Query t sits at position p = L_b - Tq + t and sees
//    keys j <= p; with window W > 0 only keys p - W < j <= p.
//  * Prefill: query t sees keys j <= t (and t - W < j with a window).
#pragma once

#include <cmath>
#include <cstdint>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace attention {

// T: cache (K/V) dtype. TQ: query/output dtype (defaults to T; the CPU path also takes fp32
// queries over an fp16/bf16 cache, as an fp32 engine with a compact cache needs).
template <class T, class TQ = T>
struct DecodeArgs {
  TensorView<const TQ, 4> q;       // [B, Tq, Hq, D]
  TensorView<const T, 4> k_cache;  // [B, Hkv, Lcap, D]
  TensorView<const T, 4> v_cache;  // [B, Hkv, Lcap, D]
  // [B] tokens per sequence, in the memory of the executing back-end (host for CPU, device for
  // CUDA). nullptr: every sequence holds Lcap tokens.
  const std::int32_t* seq_lens = nullptr;
  // CUDA only, optional: a host copy of seq_lens, validated before launch. Without it the device
  // leaves the rows of a sequence with L_b < Tq or L_b > Lcap untouched.
  const std::int32_t* seq_lens_host = nullptr;
  // CUDA: an upper bound of seq_lens that sizes the split grid without reading device memory;
  // 0 means Lcap. Must not be smaller than any L_b.
  std::int32_t max_seq_len = 0;
  TensorView<TQ, 4> o;         // [B, Tq, Hq, D]
  TensorView<float, 3> lse;    // [B, Tq, Hq], optional
  float scale = 0.f;           // 0: 1/sqrt(D)
  std::int32_t window = 0;     // 0: no sliding window
  // Optional (token-eviction scores, spec eviction.md §4.3): the raw logits scale * q.k the
  // decode computes, [B, Hkv, Tq * G, Lcap] fp32 with keys contiguous, row f = t * G + g; -inf
  // for keys a row does not see; keys outside every row's range are not written. Needs lse.
  // Both back-ends write it (the CPU one bit-identical to the logits its own softmax used).
  TensorView<float, 4> scores;
  // Alternative to `scores` (at most one of the two): the same logits rounded to fp16, half the
  // bytes written by the decode and read by the eviction epilogue; the rounding (2^-11 of |s|)
  // moves p = exp(s - lse) by up to |s| * 2^-11 relative, so near-ties may rank differently
  // than with fp32 logits.
  TensorView<Half, 4> scores_half;
};

template <class T>
struct PrefillArgs {
  TensorView<const T, 4> q;  // [B, T, Hq, D]
  TensorView<const T, 4> k;  // [B, T, Hkv, D]
  TensorView<const T, 4> v;  // [B, T, Hkv, D]
  TensorView<T, 4> o;        // [B, T, Hq, D]
  TensorView<float, 3> lse;  // [B, T, Hq], optional
  float scale = 0.f;
  std::int32_t window = 0;
};

struct AttentionDims {
  std::int64_t batch = 0, q_tokens = 0, q_heads = 0, kv_heads = 0, head_dim = 0, kv_capacity = 0;
  std::int64_t group() const { return q_heads / kv_heads; }
};

MEMATTN_HOST_DEVICE float resolve_scale(float scale, std::int64_t head_dim) {
  return scale != 0.f ? scale : 1.f / sqrtf(static_cast<float>(head_dim));
}

inline Status check_heads(std::int64_t q_heads, std::int64_t kv_heads) {
  if (kv_heads <= 0 || q_heads <= 0 || q_heads % kv_heads != 0) return Status::kErrorGqaRatio;
  return Status::kSuccess;
}

inline Status check_scale_window(float scale, std::int32_t window) {
  if (!(scale == scale) || scale < 0.f || scale > 1e30f) return Status::kErrorInvalidArgument;
  if (window < 0) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

// Validates decode arguments. `lens` is a host-readable copy of the lengths or nullptr.
template <class T, class TQ>
Status validate_decode(const DecodeArgs<T, TQ>& a, const std::int32_t* lens, AttentionDims* dims) {
  MEMATTN_RETURN_IF_ERROR(check_present(a.q));
  MEMATTN_RETURN_IF_ERROR(check_present(a.k_cache));
  MEMATTN_RETURN_IF_ERROR(check_present(a.v_cache));
  MEMATTN_RETURN_IF_ERROR(check_present(a.o));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.q));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.k_cache));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.v_cache));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.o));
  AttentionDims d;
  d.batch = a.q.shape[0];
  d.q_tokens = a.q.shape[1];
  d.q_heads = a.q.shape[2];
  d.head_dim = a.q.shape[3];
  d.kv_heads = a.k_cache.shape[1];
  d.kv_capacity = a.k_cache.shape[2];
  MEMATTN_RETURN_IF_ERROR(check_shape(a.k_cache, {d.batch, d.kv_heads, d.kv_capacity, d.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_shape(a.v_cache, {d.batch, d.kv_heads, d.kv_capacity, d.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_shape(a.o, {d.batch, d.q_tokens, d.q_heads, d.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_optional_tensor(a.lse, {d.batch, d.q_tokens, d.q_heads}));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.o));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.lse));
  MEMATTN_RETURN_IF_ERROR(check_heads(d.q_heads, d.kv_heads));
  MEMATTN_RETURN_IF_ERROR(check_scale_window(a.scale, a.window));
  MEMATTN_RETURN_IF_ERROR(
      check_optional_tensor(a.scores, {d.batch, d.kv_heads, d.q_tokens * d.group(), d.kv_capacity}));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.scores));
  MEMATTN_RETURN_IF_ERROR(
      check_optional_tensor(a.scores_half, {d.batch, d.kv_heads, d.q_tokens * d.group(), d.kv_capacity}));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.scores_half));
  if (a.scores.data != nullptr && a.scores_half.data != nullptr) return Status::kErrorInvalidArgument;
  if ((a.scores.data != nullptr || a.scores_half.data != nullptr) && a.lse.data == nullptr)
    return Status::kErrorInvalidArgument;
  if (d.q_tokens > d.kv_capacity) return Status::kErrorInvalidShape;
  if (a.max_seq_len < 0 || a.max_seq_len > d.kv_capacity) return Status::kErrorInvalidArgument;
  if (a.max_seq_len > 0 && a.max_seq_len < d.q_tokens) return Status::kErrorEmptyCache;
  if (lens) {
    for (std::int64_t b = 0; b < d.batch; ++b) {
      if (lens[b] < d.q_tokens || lens[b] <= 0 || lens[b] > d.kv_capacity) return Status::kErrorEmptyCache;
      if (a.max_seq_len > 0 && lens[b] > a.max_seq_len) return Status::kErrorInvalidArgument;
    }
  }
  *dims = d;
  return Status::kSuccess;
}

template <class T>
Status validate_prefill(const PrefillArgs<T>& a, AttentionDims* dims) {
  MEMATTN_RETURN_IF_ERROR(check_present(a.q));
  MEMATTN_RETURN_IF_ERROR(check_present(a.k));
  MEMATTN_RETURN_IF_ERROR(check_present(a.v));
  MEMATTN_RETURN_IF_ERROR(check_present(a.o));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.q));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.k));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.v));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.o));
  AttentionDims d;
  d.batch = a.q.shape[0];
  d.q_tokens = a.q.shape[1];
  d.q_heads = a.q.shape[2];
  d.head_dim = a.q.shape[3];
  d.kv_heads = a.k.shape[2];
  d.kv_capacity = d.q_tokens;
  MEMATTN_RETURN_IF_ERROR(check_shape(a.k, {d.batch, d.q_tokens, d.kv_heads, d.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_shape(a.v, {d.batch, d.q_tokens, d.kv_heads, d.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_shape(a.o, {d.batch, d.q_tokens, d.q_heads, d.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_optional_tensor(a.lse, {d.batch, d.q_tokens, d.q_heads}));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.o));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.lse));
  MEMATTN_RETURN_IF_ERROR(check_heads(d.q_heads, d.kv_heads));
  MEMATTN_RETURN_IF_ERROR(check_scale_window(a.scale, a.window));
  *dims = d;
  return Status::kSuccess;
}

}  // namespace attention
MEMATTN_NAMESPACE_END
