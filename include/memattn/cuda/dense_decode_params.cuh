// Host side of the GPU dense decode apart from the launches (so also usable by tests/emu, the
// CPU emulator that runs the kernels in CI): tuning and plan types, argument checks, the split
// plan, the workspace carving, the kernel parameters and the launch sequence over a caller-given
// launcher. The CUDA wrapper and its contract: memattn/cuda/dense_decode.cuh.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "memattn/attention/dense_args.hpp"
#include "memattn/attention/online_softmax.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/dense_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// Knobs of the split heuristic (the defaults are what dense_decode uses). Exposed for
// benchmarks and tuning; pass the same tuning to both phases.
struct DenseDecodeTuning {
  int num_splits = 0;            // > 0: force this many splits (still capped by max_splits and by
                                 // one chunk of keys per split); 0: heuristic below
  int target_ctas_per_sm = 8;    // heuristic: aim for about this many CTAs per SM in total
  int min_keys_per_split = 256;  // heuristic: no split shorter than this (amortises the epilogue)
  int max_splits = 256;          // hard cap (bounds the workspace and the merge; at most 4096)
  bool kv_evict_first = false;   // stream K and V with an L2 evict-first policy (benchmarked
                                 // against none: bench_dense_decode_cuda's "_ef" rows)
};

// The launch configuration dense_decode would use (for benchmarks, logs and tests).
struct DenseDecodePlan {
  int head_dim = 0;
  int row_tile = 0;          // rows (query token x head of one KV group) per CTA: 1, 2, 4 or 8
  int row_tiles = 0;         // ceil(Tq * G / row_tile): KV is read once per row tile
  int num_splits = 0;        // splits of the key range per (b, kv head, row tile)
  int keys_per_split = 0;    // for the longest sequence (a multiple of the chunk)
  int chunk_keys = 0;        // keys per CTA iteration
  int sm_count = 0;
  std::int64_t decode_ctas = 0;
  std::int64_t merge_ctas = 0;  // 0 when num_splits == 1 (no merge launch)
  std::size_t workspace_bytes = 0;
  bool kv_evict_first = false;  // from the tuning
};

namespace detail {

template <class T>
struct IsDecodeDtype : std::integral_constant<bool, std::is_same<T, Half>::value || std::is_same<T, BFloat16>::value> {};

inline int pick_row_tile(std::int64_t rows) {
  if (rows >= kernels::kDecodeMaxRowTile) return kernels::kDecodeMaxRowTile;
  int r = 1;
  while (r < rows) r *= 2;
  return r;
}

template <int D>
inline int chunk_keys_for(int row_tile) {
  switch (row_tile) {
    case 1: return kernels::DenseDecodeConfig<D, 1>::kChunk;
    case 2: return kernels::DenseDecodeConfig<D, 2>::kChunk;
    case 4: return kernels::DenseDecodeConfig<D, 4>::kChunk;
    default: return kernels::DenseDecodeConfig<D, 8>::kChunk;
  }
}

inline int chunk_keys(int head_dim, int row_tile) {
  switch (head_dim) {
    case 64: return chunk_keys_for<64>(row_tile);
    case 128: return chunk_keys_for<128>(row_tile);
    default: return chunk_keys_for<256>(row_tile);
  }
}

// The one carving of the workspace, used for sizing and for running.
inline void plan_workspace(Workspace& ws, const attention::AttentionDims& d, int num_splits, float** part_o,
                           float** part_lse) {
  *part_o = nullptr;
  *part_lse = nullptr;
  if (num_splits <= 1) return;
  const std::size_t rows = static_cast<std::size_t>(d.batch * d.q_tokens * d.q_heads);
  *part_o = ws.take<float>(rows * static_cast<std::size_t>(num_splits) * static_cast<std::size_t>(d.head_dim));
  *part_lse = ws.take<float>(rows * static_cast<std::size_t>(num_splits));
}

// All argument checks (no device access). On success fills dims.
template <class T>
Status check_args(const attention::DecodeArgs<T>& a, attention::AttentionDims* dims) {
  attention::AttentionDims d;
  MEMATTN_RETURN_IF_ERROR(attention::validate_decode(a, a.seq_lens_host, &d));
  if (!IsDecodeDtype<T>::value) return Status::kErrorUnsupportedDtype;
  if (d.head_dim != 64 && d.head_dim != 128 && d.head_dim != 256) return Status::kErrorUnsupportedHeadDim;
  if (!is_aligned(a.q, 16) || !is_aligned(a.k_cache, 16) || !is_aligned(a.v_cache, 16) || !is_aligned(a.o, 16))
    return Status::kErrorInvalidStride;
  if (a.lse.data != nullptr && reinterpret_cast<std::uintptr_t>(a.lse.data) % alignof(float) != 0)
    return Status::kErrorInvalidStride;
  if (a.scores.data != nullptr && reinterpret_cast<std::uintptr_t>(a.scores.data) % alignof(float) != 0)
    return Status::kErrorInvalidStride;
  if (a.scores_half.data != nullptr && reinterpret_cast<std::uintptr_t>(a.scores_half.data) % alignof(Half) != 0)
    return Status::kErrorInvalidStride;
  if (a.seq_lens_host != nullptr && a.seq_lens == nullptr) return Status::kErrorInvalidArgument;
  // 32-bit indices in the kernels (positions, heads, rows of one sequence).
  constexpr std::int64_t kIntMax = std::numeric_limits<std::int32_t>::max();
  if (d.kv_capacity > kIntMax - 4096 || d.batch > kIntMax || d.q_heads > kIntMax || d.kv_heads > kIntMax ||
      d.q_tokens * d.group() > kIntMax)
    return Status::kErrorInvalidShape;
  *dims = d;
  return Status::kSuccess;
}

// Split heuristic. `sms` is the SM count of the device that will run it.
template <class T>
Status make_plan(const attention::DecodeArgs<T>& a, const attention::AttentionDims& d, int sms,
                 const DenseDecodeTuning& tuning, DenseDecodePlan* plan) {
  DenseDecodePlan pl;
  pl.head_dim = static_cast<int>(d.head_dim);
  pl.sm_count = sms;
  const std::int64_t rows = d.q_tokens * d.group();
  pl.row_tile = pick_row_tile(rows);
  pl.row_tiles = static_cast<int>((rows + pl.row_tile - 1) / pl.row_tile);
  pl.chunk_keys = chunk_keys(pl.head_dim, pl.row_tile);

  // Longest key range one CTA tile may need: bounded by the longest sequence, and by the window
  // (a tile's rows span at most Tq positions).
  std::int64_t max_len = d.kv_capacity;
  if (a.max_seq_len > 0) {
    max_len = a.max_seq_len;
  } else if (a.seq_lens_host != nullptr) {
    max_len = 0;
    for (std::int64_t b = 0; b < d.batch; ++b) max_len = std::max<std::int64_t>(max_len, a.seq_lens_host[b]);
  }
  std::int64_t n_max = max_len;
  if (a.window > 0) n_max = std::min<std::int64_t>(n_max, static_cast<std::int64_t>(a.window) + d.q_tokens - 1);
  n_max = std::max<std::int64_t>(n_max, 1);

  const std::int64_t base_ctas = d.batch * d.kv_heads * pl.row_tiles;
  const std::int64_t max_splits = std::min(std::max(1, tuning.max_splits), 4096);
  std::int64_t s;
  if (tuning.num_splits > 0) {
    s = tuning.num_splits;
  } else {
    const std::int64_t target = static_cast<std::int64_t>(sms) * std::max(1, tuning.target_ctas_per_sm);
    s = (target + base_ctas - 1) / base_ctas;
    const std::int64_t min_keys = std::max(1, tuning.min_keys_per_split);
    s = std::min(s, (n_max + min_keys - 1) / min_keys);
  }
  s = std::max<std::int64_t>(1, std::min(s, max_splits));
  // Whole chunks per split; then drop splits the rounding left empty.
  std::int64_t per = (n_max + s - 1) / s;
  per = (per + pl.chunk_keys - 1) / pl.chunk_keys * pl.chunk_keys;
  s = (n_max + per - 1) / per;
  pl.num_splits = static_cast<int>(s);
  pl.keys_per_split = static_cast<int>(std::min<std::int64_t>(per, n_max));

  pl.decode_ctas = base_ctas * s;
  if (pl.decode_ctas > std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;
  if (s > 1) {
    pl.merge_ctas = d.batch * d.q_tokens * d.q_heads;  // one CTA per output row
    if (pl.merge_ctas > std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;
  }
  Workspace sizing;
  float* po = nullptr;
  float* pls = nullptr;
  plan_workspace(sizing, d, pl.num_splits, &po, &pls);
  pl.workspace_bytes = sizing.required();
  pl.kv_evict_first = tuning.kv_evict_first;
  *plan = pl;
  return Status::kSuccess;
}

template <class T>
Status plan_for_current_device(const attention::DecodeArgs<T>& a, const DenseDecodeTuning& tuning,
                               attention::AttentionDims* dims, DenseDecodePlan* plan) {
  MEMATTN_RETURN_IF_ERROR(check_args(a, dims));
  int sms = 0;
  MEMATTN_RETURN_IF_ERROR(sm_count(&sms));
  return make_plan(a, *dims, sms, tuning, plan);
}

// The kernel parameters of a planned call (part_o / part_lse: the carved workspace).
template <class T>
kernels::DenseDecodeParams decode_params(const attention::DecodeArgs<T>& a, const attention::AttentionDims& d,
                                         const DenseDecodePlan& pl, float* part_o, float* part_lse) {
  kernels::DenseDecodeParams p;
  p.q = a.q.data;
  p.k = a.k_cache.data;
  p.v = a.v_cache.data;
  p.o = a.o.data;
  p.lse = a.lse.data;
  p.part_o = part_o;
  p.part_lse = part_lse;
  p.seq_lens = a.seq_lens;
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = a.q.stride[i];
    p.k_stride[i] = a.k_cache.stride[i];
    p.v_stride[i] = a.v_cache.stride[i];
    p.o_stride[i] = a.o.stride[i];
    p.lse_stride[i] = a.lse.data != nullptr ? a.lse.stride[i] : 0;
    p.scores_stride[i] = a.scores.data != nullptr ? a.scores.stride[i] : (a.scores_half.data != nullptr ? a.scores_half.stride[i] : 0);
  }
  p.scores = a.scores.data != nullptr ? static_cast<void*>(a.scores.data) : static_cast<void*>(a.scores_half.data);
  p.scores_half = a.scores_half.data != nullptr;
  p.batch = static_cast<int>(d.batch);
  p.q_tokens = static_cast<int>(d.q_tokens);
  p.q_heads = static_cast<int>(d.q_heads);
  p.kv_heads = static_cast<int>(d.kv_heads);
  p.group = static_cast<int>(d.group());
  p.kv_capacity = static_cast<int>(d.kv_capacity);
  p.row_tiles = pl.row_tiles;
  p.num_splits = pl.num_splits;
  p.window = a.window;
  p.scale_log2 = attention::resolve_scale(a.scale, d.head_dim) * attention::kLog2e;
  p.kv_evict_first = pl.kv_evict_first;
  return p;
}

// The launches in order, over a caller-given launcher launch(KernelRef<kernel>{}, grid, block,
// dynamic smem bytes, params) that returns the launch's Status (cuda/stream_launch.cuh; tests/emu
// passes the emulator's): the split kernel, then (several splits) the merge.
template <class T, class Launch>
Status decode_phases(const kernels::DenseDecodeParams& p, const DenseDecodePlan& pl, Launch&& launch) {
  auto phases = [&](auto dim, auto rows) {
    constexpr int D = decltype(dim)::value, R = decltype(rows)::value;
    MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::dense_decode_split_kernel<T, D, R>>{},
                                   dim3(static_cast<unsigned>(pl.decode_ctas)), dim3(kernels::kDecodeThreads), 0, p));
    if (pl.num_splits == 1) return Status::kSuccess;
    return launch(KernelRef<kernels::dense_decode_merge_kernel<T, D>>{}, dim3(static_cast<unsigned>(pl.merge_ctas)),
                  dim3(kernels::kMergeThreads), 0, p);
  };
  auto rows = [&](auto dim) {
    switch (pl.row_tile) {
      case 1: return phases(dim, std::integral_constant<int, 1>{});
      case 2: return phases(dim, std::integral_constant<int, 2>{});
      case 4: return phases(dim, std::integral_constant<int, 4>{});
      default: return phases(dim, std::integral_constant<int, 8>{});
    }
  };
  switch (pl.head_dim) {
    case 64: return rows(std::integral_constant<int, 64>{});
    case 128: return rows(std::integral_constant<int, 128>{});
    default: return rows(std::integral_constant<int, 256>{});
  }
}

}  // namespace detail
}  // namespace cuda
MEMATTN_NAMESPACE_END
