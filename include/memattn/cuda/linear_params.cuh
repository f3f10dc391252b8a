// Host side of the GPU linear-attention prefill, decode and sliding window, apart from the launches
// (and so also usable by tests/emu, the CPU emulator that runs the kernels in CI): which (feature
// map, Dk) pairs are compiled, the argument checks, the plan, the kernel parameters, and each
// operation's launch sequence over a caller-given launcher. The CUDA wrappers:
// memattn/cuda/linear_attention.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/linear_decode.cuh"
#include "memattn/kernels/linear_prefill.cuh"
#include "memattn/kernels/linear_window.cuh"
#include "memattn/linear/linear_args.hpp"
#include "memattn/linear/linear_plan.hpp"
#include "memattn/linear/window_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// The launch configuration linear_prefill uses (benchmarks, logs, tests); planned on the host by
// linear::make_plan (memattn/linear/linear_plan.hpp).
using LinearPlan = linear::LinearPlan;

namespace linear_detail {

using linear::FeatureMap;

template <class T>
struct IsKernelDtype : std::integral_constant<bool, std::is_same<T, Half>::value || std::is_same<T, BFloat16>::value> {};

template <FeatureMap F, int D>
struct FmTag {
  static constexpr FeatureMap kFm = F;
  static constexpr int kDk = D;
};

// Calls f(FmTag<fm, dk>{}) for the compiled (feature map, Dk) pairs.
template <class F>
Status dispatch_fm(FeatureMap fm, std::int64_t dk, F&& f) {
  switch (fm) {
    case FeatureMap::kIdentity:
      if (dk == 64) return f(FmTag<FeatureMap::kIdentity, 64>{});
      if (dk == 128) return f(FmTag<FeatureMap::kIdentity, 128>{});
      break;
    case FeatureMap::kEluPlusOne:
      if (dk == 64) return f(FmTag<FeatureMap::kEluPlusOne, 64>{});
      if (dk == 128) return f(FmTag<FeatureMap::kEluPlusOne, 128>{});
      break;
    case FeatureMap::kRelu:
      if (dk == 64) return f(FmTag<FeatureMap::kRelu, 64>{});
      if (dk == 128) return f(FmTag<FeatureMap::kRelu, 128>{});
      break;
    case FeatureMap::kTaylor2:
      if (dk == 16) return f(FmTag<FeatureMap::kTaylor2, 16>{});
      break;
  }
  return Status::kErrorUnsupportedHeadDim;
}

inline bool aligned(const void* p, std::size_t b) { return reinterpret_cast<std::uintptr_t>(p) % b == 0; }

template <class T>
Status check_linear(const linear::LinearArgs<T>& a, bool decode, linear::LinearDims* d) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_linear(a, a.host.cu_seqlens, a.host.seq_lens, a.host.slot_in,
                                                  a.host.slot_out, a.host.step_slots, a.host.decay_rate, decode, d));
  if (!IsKernelDtype<T>::value) return Status::kErrorUnsupportedDtype;
  const Status fm_ok = dispatch_fm(a.feature_map, d->dk, [](auto) { return Status::kSuccess; });
  if (fm_ok != Status::kSuccess) return fm_ok;
  if (d->dv % 16 != 0 || d->dv > 256) return Status::kErrorUnsupportedHeadDim;
  if (!is_aligned(a.k, 16) || !is_aligned(a.v, 16)) return Status::kErrorInvalidStride;
  if ((a.q.data || d->has_output) && !is_aligned(a.q, 16)) return Status::kErrorInvalidStride;
  if (d->has_output && !is_aligned(a.o, 16)) return Status::kErrorInvalidStride;
  if (d->has_state) {
    if (!aligned(a.state.pool, 16) || d->slot_stride % 4 != 0) return Status::kErrorInvalidStride;
    if (a.normalize && !aligned(a.state.z_pool, 4)) return Status::kErrorInvalidStride;
    if (a.state.num_slots > std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;
  }
  if (d->heads_per_state() > 64) return Status::kErrorGqaRatio;  // decode keeps G query heads in shared memory
  if (a.seq.cu_seqlens == nullptr && a.host.cu_seqlens != nullptr) return Status::kErrorInvalidArgument;
  if (d->num_seqs * d->state_heads * ((d->dv + 31) / 32) > std::numeric_limits<std::int32_t>::max())
    return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

template <class T>
Status make_plan(const linear::LinearArgs<T>& a, const linear::LinearDims& d, int sms, LinearPlan* plan) {
  LinearPlan pl;
  MEMATTN_RETURN_IF_ERROR(linear::make_plan(a.schedule, a.seg_len, a.normalize, d, sms, &pl));
  MEMATTN_RETURN_IF_ERROR(dispatch_fm(a.feature_map, d.dk, [&](auto tag) {
    using Tag = decltype(tag);
    pl.smem_bytes = kernels::LinearPrefillConfig<Tag::kFm, Tag::kDk>::kSmemBytes;
    return Status::kSuccess;
  }));
  *plan = pl;
  return Status::kSuccess;
}

template <class T>
Status plan_current(const linear::LinearArgs<T>& a, linear::LinearDims* d, LinearPlan* plan) {
  MEMATTN_RETURN_IF_ERROR(check_linear(a, false, d));
  int sms = 0;
  MEMATTN_RETURN_IF_ERROR(sm_count(&sms));
  return make_plan(a, *d, sms, plan);
}

// The q, k, v, o bases with their row and head strides, and the sequence arrays, into kernel
// parameters (the prefill's and the sliding window's share these field names); q and o may be
// absent (state-only calls), their strides then stay 0.
template <class P, class Args>
void set_rows(const Args& a, P* p) {
  p->q = a.q.data;
  p->k = a.k.data;
  p->v = a.v.data;
  p->o = a.o.data;
  if (a.q.data) {
    p->q_rs = a.q.stride[0];
    p->q_hs = a.q.stride[1];
  }
  p->k_rs = a.k.stride[0];
  p->k_hs = a.k.stride[1];
  p->v_rs = a.v.stride[0];
  p->v_hs = a.v.stride[1];
  if (a.o.data) {
    p->o_rs = a.o.stride[0];
    p->o_hs = a.o.stride[1];
  }
  p->cu_seqlens = a.seq.cu_seqlens;
  p->seq_lens = a.seq.seq_lens;
}

template <class T>
kernels::LinearPrefillParams prefill_params(const linear::LinearArgs<T>& a, const linear::LinearDims& d) {
  kernels::LinearPrefillParams p;
  set_rows(a, &p);
  p.t_pad = static_cast<int>(d.t_pad);
  p.rows = static_cast<int>(d.rows);
  p.num_seqs = static_cast<int>(d.num_seqs);
  p.state_heads = static_cast<int>(d.state_heads);
  p.group = static_cast<int>(d.group);
  p.qps = static_cast<int>(d.heads_per_state());
  p.per_kv = d.state_heads == d.kv_heads ? 1 : 0;
  p.dv = static_cast<int>(d.dv);
  p.kphi = static_cast<int>(d.kphi);
  p.pool = a.state.pool;
  p.slot_stride = d.slot_stride;
  p.slot_in = a.state.slot_in;
  p.slot_out = a.state.slot_out;
  p.has_init = a.state.has_init;
  p.z_pool = a.state.z_pool;
  p.z_slot_stride = d.z_slot_stride;
  p.num_slots = static_cast<int>(a.state.num_slots);
  p.stateful = d.has_state ? 1 : 0;
  p.decay = a.decay_rate;
  p.scale = a.scale;
  p.alpha = a.feature_map == FeatureMap::kTaylor2 ? a.alpha : 0.f;
  p.eps = a.normalize ? a.eps : 0.f;
  p.normalize = a.normalize ? 1 : 0;
  // The lo half of the update operand is zero when X is exact in 16 bits: identity map, no decay.
  p.need_lo = (a.feature_map == FeatureMap::kIdentity && a.decay_rate == nullptr) ? 0 : 1;
  return p;
}

// The prefill's launches in order: the copy of the initial z when the plan has one (z0); single
// pass, one prefill launch; sequence-parallel, the segment table, phase 1 (summaries of non-last
// segments), the scan, phase 3 (outputs + state). Tag = FmTag. launch(KernelRef<kernel>{}, grid,
// block, dynamic smem bytes, params) returns the launch's Status (cuda/stream_launch.cuh; tests/emu
// passes the emulator's).
template <class T, class Tag, class Launch>
Status prefill_phases(kernels::LinearPrefillParams p, const LinearPlan& pl, Launch&& launch) {
  using Prefill = KernelRef<kernels::linear_prefill_kernel<T, Tag::kFm, Tag::kDk>>;
  p.vtiles = pl.vtiles;
  const dim3 ctas(static_cast<unsigned>(pl.ctas));
  if (p.z0 != nullptr)
    MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::linear_z0_kernel>{}, dim3(static_cast<unsigned>(p.num_seqs * p.state_heads)),
                                   dim3(128), 0, p));
  if (pl.path == linear::Schedule::kSequenceParallel) {
    p.seg_len = pl.seg_len;
    MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::linear_segments_kernel>{}, dim3(1), dim3(1024), 0, p));
    p.mode = 1;
    MEMATTN_RETURN_IF_ERROR(launch(Prefill{}, ctas, dim3(128), pl.smem_bytes, p));
    const int per = p.kphi * p.dv + (p.normalize ? p.kphi : 0);
    const dim3 grid(static_cast<unsigned>(p.num_seqs * p.state_heads), static_cast<unsigned>((per + 255) / 256));
    MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::linear_scan_kernel>{}, grid, dim3(256), 0, p));
    p.mode = 0;
  }
  return launch(Prefill{}, ctas, dim3(128), pl.smem_bytes, p);
}

// ---- decode / extend ----

template <class T>
kernels::LinearDecodeParams decode_params(const linear::LinearArgs<T>& a, const linear::LinearDims& d) {
  kernels::LinearDecodeParams p;
  const kernels::LinearPrefillParams pp = prefill_params(a, d);
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
  return p;
}

// The decode's launches (Tag = FmTag) over a caller-given launcher launch(KernelRef<kernel>{},
// grid, block, dynamic smem bytes, params) that returns the launch's Status: one CTA per
// (sequence, state head, 32-column V slice); then, for a stateful normalised call, the z writes,
// one CTA per (sequence, state head), after every V slice has read the initial z (linear_decode.cuh).
template <class T, class Tag, class Launch>
Status decode_phases(const kernels::LinearDecodeParams& p, Launch&& launch) {
  const std::int64_t heads = static_cast<std::int64_t>(p.num_seqs) * p.state_heads;
  const int smem = kernels::LinearDecodeConfig<Tag::kFm, Tag::kDk>::smem_bytes(p.qps);
  const dim3 ctas(static_cast<unsigned>(heads * p.vslices));
  MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::linear_decode_kernel<T, Tag::kFm, Tag::kDk>>{}, ctas,
                                 dim3(kernels::kLinearDecodeThreads), smem, p));
  if (!p.normalize || !p.stateful) return Status::kSuccess;
  return launch(KernelRef<kernels::linear_decode_z_kernel<T, Tag::kFm, Tag::kDk>>{}, dim3(static_cast<unsigned>(heads)),
                dim3(128), 0, p);
}

// ---- sliding window ----

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
kernels::SlidingWindowParams window_params(const linear::SlidingWindowArgs<T>& a, const linear::WindowDims& d) {
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
  return p;
}

// The sliding window's launches: the attention (four (token, query head) items per CTA), then,
// with a ring, the ring store (after every query has read the ring rows it overwrites), over a
// launcher as prefill_phases' (no dynamic shared memory).
template <class T, class Launch>
Status window_phases(const kernels::SlidingWindowParams& p, const linear::WindowDims& d, Launch&& launch) {
  const std::int64_t items = d.rows * d.q_heads;
  const dim3 ctas(static_cast<unsigned>((items + 3) / 4));
  MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::sliding_window_kernel<T>>{}, ctas, dim3(kernels::kWindowThreads), 0, p));
  if (!d.has_ring) return Status::kSuccess;
  const std::int64_t pieces = d.rows * d.kv_heads * (d.d / 8 + d.dv / 8);
  return launch(KernelRef<kernels::ring_store_kernel<T>>{}, dim3(static_cast<unsigned>((pieces + 255) / 256)), dim3(256), 0, p);
}

}  // namespace linear_detail
}  // namespace cuda
MEMATTN_NAMESPACE_END
