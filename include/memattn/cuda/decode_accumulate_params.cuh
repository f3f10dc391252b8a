// Host side of cuda::decode_accumulate (decode attention + H2O / A2SF score accumulation in one
// call, memattn/cuda/decode_accumulate.cuh) apart from the launches, so tests/emu runs the same
// logic on the CPU emulator: the state argument, the checks, the workspace carving (the decode's
// partials, fp16 logits, the LSE when the caller wants none) and the launch sequence over a
// caller-given launcher: the decode writing fp16 logits into the workspace, then the epilogue.
// Row-major logits: a blocked layout (8 keys x all rows per block, whole 32-byte sectors per warp
// store) and a fused last-split tail were both slower on an H200 (docs/gpu-check-log.md).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/dense_decode_params.cuh"
#include "memattn/cuda/evict_scores_params.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// The policy state decode_accumulate updates: acc[b * stride[0] + h * stride[1] + j] for key j of
// (sequence b, KV head h), acc_j <- gamma * acc_j + R_g exp(s - lse) (R: evict::GroupReduce, 0
// mean, 1 max, 2 sum), as evict_accumulate_scores(kAccumulate) does.
struct DecodeScoreState {
  float* acc = nullptr;
  std::int64_t stride[2] = {};
  float gamma = 1.f;
  int reduce = 0;
};

namespace detail {

struct AccumulateBuffers {
  float* part_o = nullptr;
  float* part_lse = nullptr;
  Half* logits = nullptr;  // [B, Hkv, Tq * G, Lcap4]: rows of Lcap rounded up to 4 keys
  float* lse = nullptr;    // [B, Tq, Hq]: used when args.lse is absent
};

inline std::int64_t logit_row_elems(std::int64_t capacity) { return (capacity + 3) / 4 * 4; }

// The one carving of decode_accumulate's workspace (sizing and running).
inline AccumulateBuffers carve_accumulate(Workspace& ws, const attention::AttentionDims& d, const DenseDecodePlan& pl) {
  AccumulateBuffers buf;
  plan_workspace(ws, d, pl.num_splits, &buf.part_o, &buf.part_lse);
  buf.logits = ws.take<Half>(static_cast<std::size_t>(d.batch * d.kv_heads * d.q_tokens * d.group() * logit_row_elems(d.kv_capacity)));
  buf.lse = ws.take<float>(static_cast<std::size_t>(d.batch * d.q_tokens * d.q_heads));
  return buf;
}

template <class T>
Status check_accumulate(const attention::DecodeArgs<T>& a, const DecodeScoreState& st, attention::AttentionDims* d) {
  if (a.scores.data != nullptr || a.scores_half.data != nullptr) return Status::kErrorInvalidArgument;  // ours
  MEMATTN_RETURN_IF_ERROR(check_args(a, d));
  if (st.acc == nullptr) return Status::kErrorNullPointer;
  if (!(st.gamma >= 0.f && st.gamma <= 1.f) || st.reduce < 0 || st.reduce > 2) return Status::kErrorInvalidArgument;
  if (st.stride[0] < 0 || st.stride[1] < 0) return Status::kErrorInvalidStride;
  return Status::kSuccess;
}

// The decode's params writing the workspace logits, and the epilogue's over them.
template <class T>
void accumulate_params(const attention::DecodeArgs<T>& a, const attention::AttentionDims& d, const DenseDecodePlan& pl,
                       const DecodeScoreState& st, const AccumulateBuffers& buf, kernels::DenseDecodeParams* p,
                       kernels::EvictScoreParams* ep) {
  *p = decode_params(a, d, pl, buf.part_o, buf.part_lse);
  const std::int64_t row = logit_row_elems(d.kv_capacity), rows = d.q_tokens * d.group();
  p->scores = buf.logits;
  p->scores_half = true;
  p->scores_stride[0] = d.kv_heads * rows * row;
  p->scores_stride[1] = rows * row;
  p->scores_stride[2] = row;
  if (p->lse == nullptr) {
    p->lse = buf.lse;
    p->lse_stride[0] = d.q_tokens * d.q_heads;
    p->lse_stride[1] = d.q_heads;
    p->lse_stride[2] = 1;
  }
  kernels::EvictScoreParams e = evict_score_params(a, st.gamma, st.reduce);  // shape, lengths, window
  e.scores_half = buf.logits;
  for (int i = 0; i < 3; ++i) {
    e.scores_stride[i] = p->scores_stride[i];
    e.lse_stride[i] = p->lse_stride[i];
  }
  e.lse = p->lse;
  e.acc = st.acc;
  e.state_stride[0] = st.stride[0];
  e.state_stride[1] = st.stride[1];
  *ep = e;
}

// The launches: the decode (and merge), then the epilogue. The epilogue's checks run first.
template <class T, class Launch>
Status accumulate_phases(const kernels::DenseDecodeParams& p, const kernels::EvictScoreParams& ep, const DenseDecodePlan& pl,
                         Launch&& launch) {
  MEMATTN_RETURN_IF_ERROR(evict_accumulate_can_implement(ep, kernels::EvictScoreMode::kAccumulate));
  MEMATTN_RETURN_IF_ERROR(decode_phases<T>(p, pl, launch));
  return evict_score_launch(ep, kernels::EvictScoreMode::kAccumulate, launch);
}

}  // namespace detail
}  // namespace cuda
MEMATTN_NAMESPACE_END
