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
Status launch_prefill(kernels::LinearPrefillParams p, const LinearPlan& pl, cudaStream_t stream) {
  auto kernel = kernels::linear_prefill_kernel<T, Tag::kFm, Tag::kDk>;
  MEMATTN_RETURN_IF_ERROR(status_from(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, pl.smem_bytes)));
  return prefill_phases(p, pl, [&](PrefillStep step, dim3 grid, dim3 block, int smem, const kernels::LinearPrefillParams& q) {
    if (step == PrefillStep::kSegments) kernels::linear_segments_kernel<<<grid, block, smem, stream>>>(q);
    else if (step == PrefillStep::kZ0) kernels::linear_z0_kernel<<<grid, block, smem, stream>>>(q);
    else if (step == PrefillStep::kScan) kernels::linear_scan_kernel<<<grid, block, smem, stream>>>(q);
    else kernel<<<grid, block, smem, stream>>>(q);
    return launch_status();
  });
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
    kernels::LinearDecodeParams p;
    const kernels::LinearPrefillParams pp = linear_detail::prefill_params(a, d);
    p.q = pp.q;
    p.k = pp.k;
    p.v = pp.v;
    p.o = pp.o;
    p.q_rs = pp.q_rs;
    p.q_hs = pp.q_hs;
    p.k_rs = pp.k_rs;
    p.k_hs = pp.k_hs;
    p.v_rs = pp.v_rs;
    p.v_hs = pp.v_hs;
    p.o_rs = pp.o_rs;
    p.o_hs = pp.o_hs;
    p.seq_lens = a.seq.seq_lens;
    p.t_pad = pp.t_pad;
    p.num_seqs = pp.num_seqs;
    p.state_heads = pp.state_heads;
    p.group = pp.group;
    p.qps = pp.qps;
    p.per_kv = pp.per_kv;
    p.dv = pp.dv;
    p.kphi = pp.kphi;
    p.vslices = static_cast<int>((d.dv + kernels::kLinearDecodeCols - 1) / kernels::kLinearDecodeCols);
    p.pool = pp.pool;
    p.slot_stride = pp.slot_stride;
    p.slot_in = pp.slot_in;
    p.slot_out = pp.slot_out;
    p.has_init = pp.has_init;
    p.z_pool = pp.z_pool;
    p.z_slot_stride = pp.z_slot_stride;
    p.num_slots = pp.num_slots;
    p.stateful = pp.stateful;
    p.decay = pp.decay;
    p.scale = pp.scale;
    p.alpha = pp.alpha;
    p.eps = pp.eps;
    p.normalize = pp.normalize;
    p.step_slots = a.step_slots;
    p.write_final = a.write_final ? 1 : 0;
    const std::int64_t ctas = d.num_seqs * d.state_heads * p.vslices;
    if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
    return linear_detail::dispatch_fm(a.feature_map, d.dk, [&](auto tag) {
      using Tag = decltype(tag);
      const int smem = kernels::LinearDecodeConfig<Tag::kFm, Tag::kDk>::smem_bytes(p.qps);
      auto kernel = kernels::linear_decode_kernel<T, Tag::kFm, Tag::kDk>;
      MEMATTN_RETURN_IF_ERROR(status_from(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)));
      kernel<<<static_cast<unsigned>(ctas), kernels::kLinearDecodeThreads, smem, stream>>>(p);
      return launch_status();
    });
  }
}

// ---- sliding window -------------------------------------------------------------------------

namespace linear_detail {

template <class T>
Status check_window(const linear::SlidingWindowArgs<T>& a, linear::WindowDims* d) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_window(a, a.cu_seqlens_host, a.seq_lens_host, a.ring_slot_host,
                                                  a.seq_pos_host, d));
  if (!IsKernelDtype<T>::value) return Status::kErrorUnsupportedDtype;
  if (d->d % 8 != 0 || d->dv % 16 != 0) return Status::kErrorUnsupportedHeadDim;
  if (!is_aligned(a.q, 16) || !is_aligned(a.k, 16) || !is_aligned(a.v, 16) || !is_aligned(a.o, 16))
    return Status::kErrorInvalidStride;
  if (d->has_ring && (!is_aligned(a.ring_k, 16) || !is_aligned(a.ring_v, 16))) return Status::kErrorInvalidStride;
  if (d->rows * d->q_heads > std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

template <class T>
Status launch_window(const linear::SlidingWindowArgs<T>& a, const linear::WindowDims& d, cudaStream_t stream) {
  kernels::SlidingWindowParams p;
  set_rows(a, &p);  // q and o are present (check_window)
  p.t_pad = static_cast<int>(d.t_pad);
  p.rows = static_cast<int>(d.rows);
  p.num_seqs = static_cast<int>(d.num_seqs);
  p.q_heads = static_cast<int>(d.q_heads);
  p.kv_heads = static_cast<int>(d.kv_heads);
  p.group = static_cast<int>(d.group);
  p.d = static_cast<int>(d.d);
  p.dv = static_cast<int>(d.dv);
  p.window = a.window;
  p.scale = a.scale;
  p.accumulate = a.accumulate ? 1 : 0;
  if (d.has_ring) {
    p.ring_k = a.ring_k.data;
    p.ring_v = a.ring_v.data;
    for (int i = 0; i < 3; ++i) {
      p.rk_s[i] = a.ring_k.stride[i];
      p.rv_s[i] = a.ring_v.stride[i];
    }
    p.ring_len = static_cast<int>(d.ring_len);
    p.ring_slots = static_cast<int>(d.ring_slots);
    p.ring_slot = a.ring_slot;
    p.seq_pos = a.seq_pos;
  }
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  const std::int64_t items = d.rows * d.q_heads;
  kernels::sliding_window_kernel<T><<<static_cast<unsigned>((items + 3) / 4), kernels::kWindowThreads, 0, stream>>>(p);
  MEMATTN_RETURN_IF_ERROR(launch_status());
  if (d.has_ring) {
    const std::int64_t pieces = d.rows * d.kv_heads * (d.d / 8 + d.dv / 8);
    kernels::ring_store_kernel<T><<<static_cast<unsigned>((pieces + 255) / 256), 256, 0, stream>>>(p);
    MEMATTN_RETURN_IF_ERROR(launch_status());
  }
  return Status::kSuccess;
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
