// Linear / Lightning attention on the GPU: chunked prefill (single pass or sequence-parallel),
// decode / extend, sliding-window softmax, the BASED layer, and the mixture-of-memories steps.
// Semantics and argument contract: memattn/linear/*.hpp (the same structs as the CPU path);
// kernels: memattn/kernels/linear_{prefill,decode,window}.cuh.
//
//   std::size_t bytes = 0;
//   memattn::cuda::linear_prefill_workspace_size(args, &bytes);     // phase 1 (host only)
//   memattn::cuda::linear_prefill(args, workspace, bytes, stream);  // phase 2 (async)
//   memattn::cuda::linear_decode(args, stream);                     // no workspace
//
// Supported (else kErrorUnsupportedDtype / kErrorUnsupportedHeadDim): q/k/v/o in bf16 or fp16;
// identity, elu+1, relu with Dk in {64, 128}; Taylor with Dk = 16 (Kφ = 153); Dv a multiple of
// 16 up to 256 (window attention: D a multiple of 8 up to 256, Dv a multiple of 16 up to 256).
// fp32 inputs run on the CPU path only for now.
//
// Contract
//  * Every argument is checked before anything is launched; on error nothing is written.
//    Device arrays (cu_seqlens, seq_lens, slots, decay) are checked through the host mirrors in
//    args.host when given; without them the kernels skip a sequence whose length or slot is out
//    of range (its outputs and slots stay untouched) instead of reading out of bounds.
//  * Base pointers and row/head strides of q, k, v, o are 16-byte aligned; the pool is 16-byte
//    aligned with slot_stride a multiple of 4 floats.
//  * Plans depend on the current device's SM count: call both phases on the same device.
//  * Never allocates, never synchronises, never reads device memory on the host: capturable in a
//    CUDA graph. Deterministic for a fixed plan (no atomics).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>
#include <limits>
#include <type_traits>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/linear_params.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"
#include "memattn/kernels/linear_decode.cuh"
#include "memattn/kernels/linear_prefill.cuh"
#include "memattn/kernels/linear_window.cuh"
#include "memattn/linear/linear_args.hpp"
#include "memattn/linear/linear_plan.hpp"
#include "memattn/linear/mom.hpp"
#include "memattn/linear/window_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

namespace linear_detail {

template <class T, class Tag>
Status launch_prefill(const kernels::LinearPrefillParams& p, const LinearPlan& pl, cudaStream_t stream) {
  return prefill_phases<T, Tag>(p, pl, stream_launch(stream));
}

}  // namespace linear_detail

// ---- prefill --------------------------------------------------------------------------------

template <class T>
Status linear_prefill_plan(const linear::LinearArgs<T>& a, LinearPlan* plan) {
  if (plan == nullptr) return Status::kErrorNullPointer;
  linear::LinearDims d;
  return linear_detail::plan_current(a, &d, plan);
}

template <class T>
Status linear_prefill_workspace_size(const linear::LinearArgs<T>& a, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  linear::LinearDims d;
  LinearPlan pl;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_current(a, &d, &pl));
  *bytes = pl.workspace_bytes;
  return Status::kSuccess;
}

template <class T>
Status linear_prefill(const linear::LinearArgs<T>& a, void* workspace, std::size_t workspace_bytes,
                      cudaStream_t stream) {
  linear::LinearDims d;
  LinearPlan pl;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_current(a, &d, &pl));
  if constexpr (!linear_detail::IsKernelDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    kernels::LinearPrefillParams p = linear_detail::prefill_params(a, d);
    Workspace ws(workspace, workspace_bytes);
    linear::plan_workspace(ws, pl, d, a.normalize, &p.seg_prefix, &p.ws_S, &p.ws_z, &p.z0);
    MEMATTN_RETURN_IF_ERROR(ws.status());
    if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
    return linear_detail::dispatch_fm(a.feature_map, d.dk, [&](auto tag) {
      return linear_detail::launch_prefill<T, decltype(tag)>(p, pl, stream);
    });
  }
}

// ---- decode / extend ------------------------------------------------------------------------

template <class T>
Status linear_decode(const linear::LinearArgs<T>& a, cudaStream_t stream) {
  linear::LinearDims d;
  MEMATTN_RETURN_IF_ERROR(linear_detail::check_linear(a, true, &d));
  if constexpr (!linear_detail::IsKernelDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    const kernels::LinearDecodeParams p = linear_detail::decode_params(a, d);
    if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
    return linear_detail::dispatch_fm(a.feature_map, d.dk, [&](auto tag) {
      return linear_detail::decode_phases<T, decltype(tag)>(p, stream_launch(stream));
    });
  }
}

// ---- sliding window -------------------------------------------------------------------------

namespace linear_detail {

template <class T>
Status launch_window(const linear::SlidingWindowArgs<T>& a, const linear::WindowDims& d, cudaStream_t stream) {
  const kernels::SlidingWindowParams p = window_params(a, d);
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  return window_phases<T>(p, d, stream_launch(stream));
}

}  // namespace linear_detail

template <class T>
Status sliding_window_attention(const linear::SlidingWindowArgs<T>& a, cudaStream_t stream) {
  linear::WindowDims d;
  MEMATTN_RETURN_IF_ERROR(linear_detail::check_window(a, &d));
  if constexpr (!linear_detail::IsKernelDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    return linear_detail::launch_window(a, d, stream);
  }
}

// ---- BASED layer: linear (Taylor) branch into o, then the window branch added to it ----------

template <class T>
Status based_layer_prefill_workspace_size(const linear::BasedLayerArgs<T>& a, std::size_t* bytes) {
  return linear_prefill_workspace_size(a.linear, bytes);
}

template <class T>
Status based_layer_prefill(const linear::BasedLayerArgs<T>& a, void* workspace, std::size_t bytes,
                           cudaStream_t stream) {
  linear::SlidingWindowArgs<T> w;
  MEMATTN_RETURN_IF_ERROR(linear::based_window_args(a, &w));
  w.cu_seqlens_host = a.linear.host.cu_seqlens;
  w.seq_lens_host = a.linear.host.seq_lens;
  linear::WindowDims wd;
  MEMATTN_RETURN_IF_ERROR(linear_detail::check_window(w, &wd));
  linear::LinearDims d;
  LinearPlan pl;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_current(a.linear, &d, &pl));
  if (bytes < pl.workspace_bytes) return Status::kErrorWorkspaceTooSmall;
  MEMATTN_RETURN_IF_ERROR(linear_prefill(a.linear, workspace, bytes, stream));
  if constexpr (!linear_detail::IsKernelDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    return linear_detail::launch_window(w, wd, stream);
  }
}

template <class T>
Status based_layer_decode(const linear::BasedLayerArgs<T>& a, cudaStream_t stream) {
  linear::SlidingWindowArgs<T> w;
  MEMATTN_RETURN_IF_ERROR(linear::based_window_args(a, &w));
  w.cu_seqlens_host = a.linear.host.cu_seqlens;
  w.seq_lens_host = a.linear.host.seq_lens;
  linear::WindowDims wd;
  MEMATTN_RETURN_IF_ERROR(linear_detail::check_window(w, &wd));
  linear::LinearDims d;
  MEMATTN_RETURN_IF_ERROR(linear_detail::check_linear(a.linear, true, &d));
  MEMATTN_RETURN_IF_ERROR(linear_decode(a.linear, stream));
  if constexpr (!linear_detail::IsKernelDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    return linear_detail::launch_window(w, wd, stream);
  }
}

// ---- mixture of memories ----------------------------------------------------------------------

namespace linear_detail {

inline int key_bits(std::int64_t max_key) {
  int b = 1;
  while ((std::int64_t{1} << b) <= max_key) ++b;
  return b;
}

inline Status mom_carve(Workspace& ws, const linear::MomRouteArgs& a, kernels::MomRouteParams* p, void** temp,
                        std::size_t* temp_bytes) {
  const std::size_t n = static_cast<std::size_t>(a.rows * a.topk);
  p->keys_in = ws.take<std::uint32_t>(n);
  p->keys_out = ws.take<std::uint32_t>(n);
  p->vals_in = ws.take<std::int32_t>(n);
  p->vals_out = ws.take<std::int32_t>(n);
  std::size_t tb = 0;
  MEMATTN_RETURN_IF_ERROR(status_from(cub::DeviceRadixSort::SortPairs(
      nullptr, tb, static_cast<const std::uint32_t*>(nullptr), static_cast<std::uint32_t*>(nullptr),
      static_cast<const std::int32_t*>(nullptr), static_cast<std::int32_t*>(nullptr), static_cast<int>(n), 0,
      key_bits(static_cast<std::int64_t>(a.num_memories) * a.seq.num_seqs))));
  *temp = ws.take<unsigned char>(tb);
  *temp_bytes = tb;
  return Status::kSuccess;
}

}  // namespace linear_detail

inline Status mom_route_workspace_size(const linear::MomRouteArgs& a, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(linear::validate_mom_route(a, a.cu_seqlens_host, a.seq_lens_host));
  Workspace ws;
  kernels::MomRouteParams p;
  void* temp = nullptr;
  std::size_t tb = 0;
  MEMATTN_RETURN_IF_ERROR(linear_detail::mom_carve(ws, a, &p, &temp, &tb));
  *bytes = ws.required();
  return Status::kSuccess;
}

// Routing on the device: top-k per token, then a stable radix sort (CUB) of the memory-major
// keys m·N + n, so routed rows of a segment stay in token order (deterministic).
inline Status mom_route(const linear::MomRouteArgs& a, void* workspace, std::size_t bytes, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_mom_route(a, a.cu_seqlens_host, a.seq_lens_host));
  if (!a.seq.cu_seqlens && a.rows % a.seq.num_seqs != 0) return Status::kErrorInvalidShape;
  Workspace ws(workspace, bytes);
  kernels::MomRouteParams p;
  void* temp = nullptr;
  std::size_t tb = 0;
  MEMATTN_RETURN_IF_ERROR(linear_detail::mom_carve(ws, a, &p, &temp, &tb));
  MEMATTN_RETURN_IF_ERROR(ws.status());
  p.logits = a.router_logits;
  p.logits_stride = a.logits_stride > 0 ? a.logits_stride : a.num_memories;
  p.rows = static_cast<int>(a.rows);
  p.M = a.num_memories;
  p.K = a.topk;
  p.num_seqs = static_cast<int>(a.seq.num_seqs);
  p.t_pad = a.seq.cu_seqlens ? 0 : static_cast<int>(a.rows / a.seq.num_seqs);
  p.cu_seqlens = a.seq.cu_seqlens;
  p.seq_lens = a.seq.seq_lens;
  p.mem_slots = a.mem_slots;
  p.topk_idx = a.topk_idx;
  p.topk_w = a.topk_w;
  p.perm = a.perm;
  p.pos = a.pos;
  p.seg_cu = a.seg_cu;
  p.seg_slot = a.seg_slot;
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  kernels::mom_topk_kernel<<<static_cast<unsigned>((a.rows + 255) / 256), 256, 0, stream>>>(p);
  MEMATTN_RETURN_IF_ERROR(launch_status());
  const int n = static_cast<int>(a.rows * a.topk);
  MEMATTN_RETURN_IF_ERROR(status_from(cub::DeviceRadixSort::SortPairs(
      temp, tb, p.keys_in, p.keys_out, p.vals_in, p.vals_out, n, 0,
      linear_detail::key_bits(static_cast<std::int64_t>(a.num_memories) * a.seq.num_seqs), stream)));
  const std::int64_t threads = std::max<std::int64_t>(n, static_cast<std::int64_t>(a.num_memories) * a.seq.num_seqs + 1);
  kernels::mom_scatter_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(p);
  return launch_status();
}

template <class T>
Status gather_rows(const linear::GatherRowsArgs<T>& a, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_gather(a));
  if (!linear_detail::IsKernelDtype<T>::value) return Status::kErrorUnsupportedDtype;
  if (a.src.shape[2] % 8 != 0 || !is_aligned(a.src, 16) || !is_aligned(a.dst, 16)) return Status::kErrorInvalidStride;
  kernels::GatherParams p;
  p.src = a.src.data;
  p.dst = a.dst.data;
  p.s_rs = a.src.stride[0];
  p.s_hs = a.src.stride[1];
  p.d_rs = a.dst.stride[0];
  p.d_hs = a.dst.stride[1];
  p.heads = static_cast<int>(a.src.shape[1]);
  p.dim = static_cast<int>(a.src.shape[2]);
  p.cap = static_cast<int>(a.dst.shape[0]);
  p.src_rows = static_cast<int>(a.src.shape[0]);
  p.perm = a.perm;
  p.count = a.count_ptr;
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  const std::int64_t pieces = a.dst.shape[0] * a.src.shape[1] * (a.src.shape[2] / 8);
  kernels::gather_rows_kernel<<<static_cast<unsigned>((pieces + 255) / 256), 256, 0, stream>>>(p);
  return launch_status();
}

template <class T>
Status mom_combine(const linear::MomCombineArgs<T>& a, cudaStream_t stream) {
  std::int64_t rows = 0;
  MEMATTN_RETURN_IF_ERROR(linear::validate_mom_combine(a, &rows));
  if constexpr (!linear_detail::IsKernelDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    if (a.o.shape[2] % 2 != 0) return Status::kErrorUnsupportedHeadDim;
    kernels::CombineParams p;
    p.routed = a.o_routed.data;
    p.shared = a.o_shared.data;
    p.o = a.o.data;
    p.r_rs = a.o_routed.stride[0];
    p.r_hs = a.o_routed.stride[1];
    if (a.o_shared.data) {
      p.s_rs = a.o_shared.stride[0];
      p.s_hs = a.o_shared.stride[1];
    }
    p.o_rs = a.o.stride[0];
    p.o_hs = a.o.stride[1];
    p.rows = static_cast<int>(rows);
    p.heads = static_cast<int>(a.o.shape[1]);
    p.dv = static_cast<int>(a.o.shape[2]);
    p.K = a.topk;
    p.routed_rows = static_cast<int>(a.o_routed.shape[0]);
    p.w = a.topk_w;
    p.pos = a.pos;
    if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
    const std::int64_t items = rows * p.heads * (p.dv / 2);
    kernels::mom_combine_kernel<T><<<static_cast<unsigned>((items + 255) / 256), 256, 0, stream>>>(p);
    return launch_status();
  }
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
