// Host side of cuda::decode_accumulate (decode attention + H2O / A2SF score accumulation in one
// launch sequence, memattn/cuda/decode_accumulate.cuh) apart from the launches, so tests/emu runs
// the same logic on the CPU emulator: the state argument, the checks, the workspace carving and
// the launch sequence over a caller-given launcher.
//
// Why fused: with DecodeArgs::scores the decode writes 2-4 bytes of logits per (row, key) to
// memory and the epilogue kernel reads them back; at B = 16, L = 64K that traffic cost +16.7% of
// the decode on an H200 (the gate is 10%), while the same stores kept in L2 cost +3%. Here the
// logits go to workspace scratch (fp16), K and V are streamed evict-first so the scratch stays in
// L2, the last split CTA of each (sequence, KV head) accumulates the whole sequence and discards
// the scratch lines (never written back). Where that does not apply (more than one row tile:
// Tq * G > 8; state or capacity not 4-key aligned) the same call runs decode, merge and the
// epilogue kernel over the same scratch: one result either way, bit for bit.
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

// The fused call's scratch: logits rows padded to whole 128-byte lines.
inline std::int64_t logit_row_elems(std::int64_t capacity) { return (capacity + 63) / 64 * 64; }

struct AccumulateBuffers {
  float* part_o = nullptr;
  float* part_lse = nullptr;
  Half* logits = nullptr;     // [B, Hkv, Tq * G, logit_row_elems(Lcap)]
  float* lse = nullptr;       // [B, Tq, Hq]: the unfused epilogue's LSE when args.lse is absent
  unsigned* tickets = nullptr;  // [B * Hkv]
};

// The one carving of decode_accumulate's workspace (sizing and running).
inline AccumulateBuffers carve_accumulate(Workspace& ws, const attention::AttentionDims& d, const DenseDecodePlan& pl) {
  AccumulateBuffers buf;
  const std::size_t rows = static_cast<std::size_t>(d.batch * d.q_tokens * d.q_heads);
  const std::size_t S = static_cast<std::size_t>(pl.num_splits);
  if (S > 1) buf.part_o = ws.take<float>(rows * S * static_cast<std::size_t>(d.head_dim));
  buf.part_lse = ws.take<float>(rows * S);
  buf.logits = ws.take<Half>(static_cast<std::size_t>(d.batch * d.kv_heads * d.q_tokens * d.group() *
                                                      logit_row_elems(d.kv_capacity)));
  buf.lse = ws.take<float>(rows);
  buf.tickets = ws.take<unsigned>(static_cast<std::size_t>(d.batch * d.kv_heads));
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

// Decode params with the scratch logits, and the epilogue params over them.
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
    for (int i = 0; i < 3; ++i) p->lse_stride[i] = 0;
    p->lse_stride[0] = d.q_tokens * d.q_heads;
    p->lse_stride[1] = d.q_heads;
    p->lse_stride[2] = 1;
  }
  kernels::EvictScoreParams e;
  e.scores_half = buf.logits;
  for (int i = 0; i < 3; ++i) {
    e.scores_stride[i] = p->scores_stride[i];
    e.lse_stride[i] = p->lse_stride[i];
  }
  e.lse = p->lse;
  e.seq_lens = a.seq_lens;
  e.acc = st.acc;
  e.state_stride[0] = st.stride[0];
  e.state_stride[1] = st.stride[1];
  e.batch = static_cast<int>(d.batch);
  e.kv_heads = static_cast<int>(d.kv_heads);
  e.group = static_cast<int>(d.group());
  e.q_tokens = static_cast<int>(d.q_tokens);
  e.kv_capacity = static_cast<int>(d.kv_capacity);
  e.window = a.window;
  e.gamma = st.gamma;
  e.reduce = st.reduce;
  *ep = e;
}

// Whether the launch fuses the accumulation into the decode (see the top of this file).
inline bool accumulate_fused(const DenseDecodePlan& pl, const kernels::EvictScoreParams& ep) {
  return pl.row_tiles == 1 && evict_scores_vec4(ep);
}

// The launches: fused, the ticket reset (several splits), the decode with its tail, the merge;
// otherwise the decode into the scratch, the merge, the epilogue kernel.
template <class T, class Launch>
Status accumulate_phases(kernels::DenseDecodeParams p, const kernels::EvictScoreParams& ep, const DenseDecodePlan& pl,
                         const AccumulateBuffers& buf, Launch&& launch) {
  MEMATTN_RETURN_IF_ERROR(evict_accumulate_can_implement(ep, kernels::EvictScoreMode::kAccumulate));
  if (!accumulate_fused(pl, ep)) {
    MEMATTN_RETURN_IF_ERROR(decode_phases<T>(p, pl, launch));
    return evict_score_launch(ep, kernels::EvictScoreMode::kAccumulate, launch);
  }
  p.fuse = ep;
  p.tickets = buf.tickets;
  if (pl.num_splits > 1) {
    const int n = ep.batch * ep.kv_heads;
    MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::decode_tickets_reset_kernel>{}, dim3(static_cast<unsigned>((n + 255) / 256)),
                                   dim3(256), 0, buf.tickets, n));
  }
  return decode_phases<T>(p, pl, launch);
}

}  // namespace detail
}  // namespace cuda
MEMATTN_NAMESPACE_END
