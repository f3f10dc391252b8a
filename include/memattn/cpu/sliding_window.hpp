// Sliding-window softmax attention (BASED companion) and the BASED layer operation on the CPU.
// Semantics: memattn/linear/window_args.hpp. fp32 scores and softmax (two passes over at most
// W + 1 <= 257 keys), fp32 accumulation; one task per (sequence, query head) through the
// caller's Executor, so results do not depend on the worker count. Nothing is written when the
// arguments are invalid; padding rows are never read or written.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/core/executor.hpp"
#include "memattn/core/status.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/linear_attention.hpp"
#include "memattn/linear/window_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace window_detail {

inline void seq_rows(const linear::SeqDesc& s, const linear::WindowDims& d, std::int64_t n, std::int64_t* b,
                     std::int64_t* len) {
  if (s.cu_seqlens) {
    *b = s.cu_seqlens[n];
    *len = static_cast<std::int64_t>(s.cu_seqlens[n + 1]) - s.cu_seqlens[n];
  } else {
    *b = n * d.t_pad;
    *len = s.seq_lens ? s.seq_lens[n] : d.t_pad;
  }
}

template <class T>
void attend_task(const linear::SlidingWindowArgs<T>& a, const linear::WindowDims& d, std::int64_t task) {
  const std::int64_t n = task / d.q_heads, hq = task % d.q_heads, kh = hq / d.group;
  const std::int64_t slot = d.has_ring ? (a.ring_slot ? a.ring_slot[n] : n) : -1;
  if (d.has_ring && slot < 0) return;
  std::int64_t row0 = 0, len = 0;
  seq_rows(a.seq, d, n, &row0, &len);
  const std::int64_t pos0 = a.seq_pos ? a.seq_pos[n] : 0;
  float q[256], kr[256], vr[256], acc[256], sc[linear::kMaxWindow + 1];
  const std::int64_t D = d.d, Dv = d.dv;
  for (std::int64_t t = 0; t < len; ++t) {
    const std::int64_t p = pos0 + t, lo = std::max<std::int64_t>(0, p - a.window);
    to_float_n(a.q.ptr(row0 + t, hq, 0), D, q);
    auto key_ptr = [&](std::int64_t u, bool value) -> const T* {
      if (u >= pos0) return value ? a.v.ptr(row0 + (u - pos0), kh, 0) : a.k.ptr(row0 + (u - pos0), kh, 0);
      const std::int64_t rr = u % d.ring_len;
      return value ? a.ring_v.ptr(slot, rr, kh, 0) : a.ring_k.ptr(slot, rr, kh, 0);
    };
    float mx = -std::numeric_limits<float>::infinity();
    for (std::int64_t u = lo; u <= p; ++u) {
      to_float_n(key_ptr(u, false), D, kr);
      float s = 0.f;
      for (std::int64_t x = 0; x < D; ++x) s += q[x] * kr[x];
      s *= a.scale;
      sc[u - lo] = s;
      mx = std::max(mx, s);
    }
    float l = 0.f;
    std::fill(acc, acc + Dv, 0.f);
    for (std::int64_t u = lo; u <= p; ++u) {
      const float w = std::exp(sc[u - lo] - mx);
      l += w;
      to_float_n(key_ptr(u, true), Dv, vr);
      for (std::int64_t x = 0; x < Dv; ++x) acc[x] += w * vr[x];
    }
    T* out = a.o.ptr(row0 + t, hq, 0);
    if (a.accumulate) to_float_n(out, Dv, vr);
    for (std::int64_t x = 0; x < Dv; ++x) acc[x] = acc[x] / l + (a.accumulate ? vr[x] : 0.f);
    from_float_n(acc, Dv, out);
  }
}

template <class T>
void store_ring(const linear::SlidingWindowArgs<T>& a, const linear::WindowDims& d, std::int64_t n) {
  const std::int64_t slot = a.ring_slot ? a.ring_slot[n] : n;
  if (slot < 0) return;
  std::int64_t row0 = 0, len = 0;
  seq_rows(a.seq, d, n, &row0, &len);
  const std::int64_t pos0 = a.seq_pos ? a.seq_pos[n] : 0;
  for (std::int64_t t = std::max<std::int64_t>(0, len - d.ring_len); t < len; ++t) {
    const std::int64_t rr = (pos0 + t) % d.ring_len;
    for (std::int64_t h = 0; h < d.kv_heads; ++h) {
      std::copy(a.k.ptr(row0 + t, h, 0), a.k.ptr(row0 + t, h, 0) + d.d, a.ring_k.ptr(slot, rr, h, 0));
      std::copy(a.v.ptr(row0 + t, h, 0), a.v.ptr(row0 + t, h, 0) + d.dv, a.ring_v.ptr(slot, rr, h, 0));
    }
  }
}

template <class T>
Status validate(const linear::SlidingWindowArgs<T>& a, linear::WindowDims* d) {
  return linear::validate_window(a, a.seq.cu_seqlens, a.seq.seq_lens, a.ring_slot, a.seq_pos, d);
}

template <class T>
void run(const linear::SlidingWindowArgs<T>& a, const linear::WindowDims& d, const Executor& ex) {
  ex.for_each(d.num_seqs * d.q_heads, [&](std::int64_t task, int) { attend_task(a, d, task); });
  if (d.has_ring) ex.for_each(d.num_seqs, [&](std::int64_t n, int) { store_ring(a, d, n); });
}

}  // namespace window_detail

template <class T>
Status sliding_window_attention(const linear::SlidingWindowArgs<T>& a, const Executor& ex = {}) {
  linear::WindowDims d;
  MEMATTN_RETURN_IF_ERROR(window_detail::validate(a, &d));
  window_detail::run(a, d, ex);
  return Status::kSuccess;
}

// BASED layer, prefill (or continuation): o = Taylor linear attention + sliding window.
template <class T>
Status based_layer_prefill(const linear::BasedLayerArgs<T>& a, const Executor& ex = {}) {
  linear::SlidingWindowArgs<T> w;
  MEMATTN_RETURN_IF_ERROR(linear::based_window_args(a, &w));
  linear::WindowDims wd;
  MEMATTN_RETURN_IF_ERROR(window_detail::validate(w, &wd));
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(linear_prefill_workspace_size(a.linear, &bytes, ex));  // validates
  HostWorkspace ws(bytes);
  MEMATTN_RETURN_IF_ERROR(linear_prefill(a.linear, ws.data(), bytes, ex));
  window_detail::run(w, wd, ex);
  return Status::kSuccess;
}

// BASED layer, decode / extend (dense, <= 16 tokens per sequence).
template <class T>
Status based_layer_decode(const linear::BasedLayerArgs<T>& a, const Executor& ex = {}) {
  linear::SlidingWindowArgs<T> w;
  MEMATTN_RETURN_IF_ERROR(linear::based_window_args(a, &w));
  linear::WindowDims wd;
  MEMATTN_RETURN_IF_ERROR(window_detail::validate(w, &wd));
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(linear_decode_workspace_size(a.linear, &bytes, ex));
  HostWorkspace ws(bytes);
  MEMATTN_RETURN_IF_ERROR(linear_decode(a.linear, ws.data(), bytes, ex));
  window_detail::run(w, wd, ex);
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
