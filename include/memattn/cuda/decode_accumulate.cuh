// Decode attention + H2O / A2SF score accumulation in one call (issue 5, spec eviction.md §4.3):
// cuda::dense_decode writing fp16 logits into the workspace, then evict_accumulate_scores
// (kAccumulate): bit for bit what those two calls give with DecodeArgs::scores_half, without the
// caller managing the logits.
//
//   cuda::DecodeScoreState st{acc, {Hkv * Lcap, Lcap}, /*gamma*/ 1.f, /*reduce: mean*/ 0};
//   std::size_t bytes = 0;
//   cuda::decode_accumulate_workspace_size(args, &bytes);          // args.scores* left empty
//   cuda::decode_accumulate(args, st, workspace, bytes, stream);
//
// Contract: dense_decode's (errors, seq_lens, device, no allocation, no synchronisation,
// deterministic), plus kErrorInvalidArgument when args.scores / scores_half are set (the call
// owns its logits) or gamma / reduce are out of range, kErrorNullPointer without acc. The
// workspace is scratch: any content on entry. Keys of acc that no row sees are left unchanged.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/decode_accumulate_params.cuh"
#include "memattn/cuda/dense_decode.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

template <class T>
Status decode_accumulate_workspace_size(const attention::DecodeArgs<T>& args, std::size_t* bytes,
                                        const DenseDecodeTuning& tuning = DenseDecodeTuning{}) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  if (args.scores.data != nullptr || args.scores_half.data != nullptr) return Status::kErrorInvalidArgument;
  attention::AttentionDims d;
  DenseDecodePlan pl;
  MEMATTN_RETURN_IF_ERROR(detail::plan_for_current_device(args, tuning, &d, &pl));
  Workspace sizing;
  detail::carve_accumulate(sizing, d, pl);
  *bytes = sizing.required();
  return Status::kSuccess;
}

template <class T>
Status decode_accumulate(const attention::DecodeArgs<T>& args, const DecodeScoreState& state, void* workspace,
                         std::size_t workspace_bytes, cudaStream_t stream, const DenseDecodeTuning& tuning = DenseDecodeTuning{}) {
  attention::AttentionDims d;
  MEMATTN_RETURN_IF_ERROR(detail::check_accumulate(args, state, &d));
  if constexpr (!detail::IsDecodeDtype<T>::value) {
    return Status::kErrorUnsupportedDtype;
  } else {
    DenseDecodePlan pl;
    int sms = 0;  // (check_accumulate ran check_args: plan without repeating it)
    MEMATTN_RETURN_IF_ERROR(sm_count(&sms));
    MEMATTN_RETURN_IF_ERROR(detail::make_plan(args, d, sms, tuning, &pl));
    Workspace ws(workspace, workspace_bytes);
    const detail::AccumulateBuffers buf = detail::carve_accumulate(ws, d, pl);
    MEMATTN_RETURN_IF_ERROR(ws.status());
    kernels::DenseDecodeParams p;
    kernels::EvictScoreParams ep;
    detail::accumulate_params(args, d, pl, state, buf, &p, &ep);
    if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
    return detail::accumulate_phases<T>(p, ep, pl, stream_launch(stream));
  }
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
