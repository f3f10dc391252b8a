// Mixture of Memories on the CPU: routing (top-k, memory-major segments), row gather and the
// weighted combine. The memories themselves run through linear_prefill / linear_decode with
// seq.cu_seqlens = seg_cu and state.slot_in = seg_slot. Semantics: memattn/linear/mom.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "memattn/core/status.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/linear/mom.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

// Routes every token of every sequence. Rows outside the sequences get topk_idx -1, weight 0,
// pos -1. kErrorNonFinite if a routed token's logits are not all finite (nothing written).
inline Status mom_route(const linear::MomRouteArgs& a) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_mom_route(a, a.seq.cu_seqlens, a.seq.seq_lens));
  const std::int64_t N = a.seq.num_seqs, M = a.num_memories, K = a.topk;
  const std::int64_t ls = a.logits_stride > 0 ? a.logits_stride : M;
  const std::int64_t t_pad = a.seq.cu_seqlens ? 0 : a.rows / N;
  auto rows_of = [&](std::int64_t n, std::int64_t* b, std::int64_t* len) {
    if (a.seq.cu_seqlens) {
      *b = a.seq.cu_seqlens[n];
      *len = a.seq.cu_seqlens[n + 1] - a.seq.cu_seqlens[n];
    } else {
      *b = n * t_pad;
      *len = a.seq.seq_lens ? a.seq.seq_lens[n] : t_pad;
    }
  };
  for (std::int64_t n = 0; n < N; ++n) {  // check before writing anything
    std::int64_t b = 0, len = 0;
    rows_of(n, &b, &len);
    for (std::int64_t t = b; t < b + len; ++t)
      for (std::int64_t m = 0; m < M; ++m)
        if (!std::isfinite(a.router_logits[t * ls + m])) return Status::kErrorNonFinite;
  }
  for (std::int64_t i = 0; i < a.rows * K; ++i) {
    a.topk_idx[i] = -1;
    a.topk_w[i] = 0.f;
    a.pos[i] = -1;
  }
  std::vector<std::int64_t> count(static_cast<std::size_t>(M * N), 0);
  for (std::int64_t n = 0; n < N; ++n) {
    std::int64_t b = 0, len = 0;
    rows_of(n, &b, &len);
    for (std::int64_t t = b; t < b + len; ++t) {
      linear::mom_topk(a.router_logits + t * ls, static_cast<int>(M), static_cast<int>(K), a.topk_idx + t * K,
                       a.topk_w + t * K);
      for (std::int64_t r = 0; r < K; ++r) ++count[static_cast<std::size_t>(a.topk_idx[t * K + r] * N + n)];
    }
  }
  a.seg_cu[0] = 0;
  for (std::int64_t s = 0; s < M * N; ++s) {
    a.seg_cu[s + 1] = static_cast<std::int32_t>(a.seg_cu[s] + count[static_cast<std::size_t>(s)]);
    const std::int64_t m = s / N, n = s % N;
    a.seg_slot[s] = a.mem_slots ? a.mem_slots[n * M + m] : static_cast<std::int32_t>(s);
  }
  // Stable order: segment (m·N + n), then token, then rank.
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      std::int64_t cursor = a.seg_cu[m * N + n], b = 0, len = 0;
      rows_of(n, &b, &len);
      for (std::int64_t t = b; t < b + len; ++t)
        for (std::int64_t r = 0; r < K; ++r)
          if (a.topk_idx[t * K + r] == m) {
            a.perm[cursor] = static_cast<std::int32_t>(t);
            a.pos[t * K + r] = static_cast<std::int32_t>(cursor++);
          }
    }
  return Status::kSuccess;
}

template <class T>
Status gather_rows(const linear::GatherRowsArgs<T>& a) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_gather(a));
  const std::int64_t count = a.count_ptr ? *a.count_ptr : a.dst.shape[0];
  if (count < 0 || count > a.dst.shape[0]) return Status::kErrorInvalidShape;
  for (std::int64_t i = 0; i < count; ++i)
    if (a.perm[i] < 0 || a.perm[i] >= a.src.shape[0]) return Status::kErrorInvalidArgument;
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t h = 0; h < a.src.shape[1]; ++h)
      std::copy(a.src.ptr(a.perm[i], h, 0), a.src.ptr(a.perm[i], h, 0) + a.src.shape[2], a.dst.ptr(i, h, 0));
  return Status::kSuccess;
}

template <class T>
Status mom_combine(const linear::MomCombineArgs<T>& a) {
  std::int64_t rows = 0;
  MEMATTN_RETURN_IF_ERROR(linear::validate_mom_combine(a, &rows));
  const std::int64_t H = a.o.shape[1], Dv = a.o.shape[2], K = a.topk;
  for (std::int64_t i = 0; i < rows * K; ++i)
    if (a.pos[i] < -1 || a.pos[i] >= a.o_routed.shape[0]) return Status::kErrorInvalidArgument;
  std::vector<float> acc(static_cast<std::size_t>(Dv)), tmp(static_cast<std::size_t>(Dv));
  for (std::int64_t t = 0; t < rows; ++t) {
    bool routed = false;
    for (std::int64_t r = 0; r < K; ++r) routed |= a.pos[t * K + r] >= 0;
    if (!routed) continue;
    for (std::int64_t h = 0; h < H; ++h) {
      if (a.o_shared.data) to_float_n(a.o_shared.ptr(t, h, 0), Dv, acc.data());
      else std::fill(acc.begin(), acc.end(), 0.f);
      for (std::int64_t r = 0; r < K; ++r) {
        const std::int32_t p = a.pos[t * K + r];
        if (p < 0) continue;
        to_float_n(a.o_routed.ptr(p, h, 0), Dv, tmp.data());
        const float w = a.topk_w[t * K + r];
        for (std::int64_t x = 0; x < Dv; ++x) acc[static_cast<std::size_t>(x)] += w * tmp[static_cast<std::size_t>(x)];
      }
      from_float_n(acc.data(), Dv, a.o.ptr(t, h, 0));
    }
  }
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
