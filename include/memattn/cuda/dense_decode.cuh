// Dense decode attention on the GPU: split-KV ("flash-decoding") kernel + LSE merge.
//
//   std::size_t bytes = 0;
//   memattn::cuda::dense_decode_workspace_size(args, &bytes);       // phase 1: size
//   memattn::cuda::dense_decode(args, workspace, bytes, stream);    // phase 2: run (async)
//
// Semantics are those of memattn/attention/dense_args.hpp (DecodeArgs); the kernel design is
// described in memattn/kernels/dense_decode.cuh. Supported: K/V/q/o in fp16 (Half) or bf16
// (BFloat16), head_dim 64, 128 or 256, any Hq / Hkv ratio, any Tq <= Lcap, sliding window,
// per-sequence lengths (device array `seq_lens`), optional fp32 LSE output (natural log), optional
// raw-logit output for token-eviction scores (DecodeArgs::scores; cuda/evict_scores.cuh turns it
// into per-token probabilities and accumulates them).
//
// Contract
//  * Every argument is checked before anything is launched; on any error nothing is written.
//    Errors: those of attention::validate_decode (run on seq_lens_host when given), then
//    kErrorUnsupportedDtype (fp32), kErrorUnsupportedHeadDim (D not in {64, 128, 256}),
//    kErrorInvalidStride (q, k_cache, v_cache or o base pointer or a non-inner stride not a
//    multiple of 16 bytes: rows are read/written with 16-byte vectors; lse not 4-byte aligned),
//    kErrorInvalidArgument (seq_lens_host given without the device seq_lens), kErrorInvalidShape
//    (extents beyond 32-bit indexing or the launch grid), kErrorWorkspaceTooSmall (workspace
//    smaller than dense_decode_workspace_size() said, or not 256-byte aligned), kErrorNoDevice /
//    kErrorCudaRuntime (no current device, a CUDA error already pending on this host thread --
//    nothing is launched then -- or a failed launch).
//  * seq_lens is read on the device only. Without seq_lens_host the host cannot check it: a
//    sequence with L_b < Tq, L_b <= 0 or L_b > Lcap then leaves its rows of o and lse untouched.
//    max_seq_len (0: the largest host length if seq_lens_host is given, else Lcap) only sizes the
//    split grid; a sequence longer than it is still computed exactly, just with longer splits.
//  * The split count depends on the current device's SM count: call both phases with the same
//    current device (and the same tuning). The launch goes to `stream`, on the current device.
//  * Never allocates, never synchronises; capturable in a CUDA graph. Deterministic: the same
//    inputs give bitwise the same outputs (fixed reduction order, no atomics).
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
#include "memattn/cuda/dense_decode_params.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"
#include "memattn/kernels/dense_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

namespace detail {

// The checked params and plan of one decode, its partials carved from `workspace`
// (benchmarks/gpu/bench_dense_decode.cu edits the params before launch_params for a diagnostic).
template <class T>
Status prepare(const attention::DecodeArgs<T>& a, void* workspace, std::size_t workspace_bytes,
               const DenseDecodeTuning& tuning, kernels::DenseDecodeParams* params, DenseDecodePlan* pl) {
  attention::AttentionDims d;
  MEMATTN_RETURN_IF_ERROR(plan_for_current_device(a, tuning, &d, pl));
  Workspace ws(workspace, workspace_bytes);
  float* part_o = nullptr;
  float* part_lse = nullptr;
  plan_workspace(ws, d, pl->num_splits, &part_o, &part_lse);
  MEMATTN_RETURN_IF_ERROR(ws.status());
  *params = decode_params(a, d, *pl, part_o, part_lse);
  return Status::kSuccess;
}

// The kernels of one decode, from its checked params.
template <class T>
Status launch_params(const kernels::DenseDecodeParams& params, const DenseDecodePlan& pl, cudaStream_t stream) {
  // An error already pending on this thread would be reported by the launch check below although
  // the kernel ran: refuse to launch instead (the pending error stays for its owner to see).
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  return decode_phases<T>(params, pl, stream_launch(stream));
}

}  // namespace detail

// The launch configuration for `args` on the current device (validates the arguments first).
template <class T>
Status dense_decode_plan(const attention::DecodeArgs<T>& args, DenseDecodePlan* plan,
                         const DenseDecodeTuning& tuning = DenseDecodeTuning{}) {
  if (plan == nullptr) return Status::kErrorNullPointer;
  attention::AttentionDims d;
  return detail::plan_for_current_device(args, tuning, &d, plan);
}

// Phase 1: bytes of scratch dense_decode needs (0 when one split suffices).
template <class T>
Status dense_decode_workspace_size(const attention::DecodeArgs<T>& args, std::size_t* bytes,
                                   const DenseDecodeTuning& tuning) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  attention::AttentionDims d;
  DenseDecodePlan pl;
  MEMATTN_RETURN_IF_ERROR(detail::plan_for_current_device(args, tuning, &d, &pl));
  *bytes = pl.workspace_bytes;
  return Status::kSuccess;
}

template <class T>
Status dense_decode_workspace_size(const attention::DecodeArgs<T>& args, std::size_t* bytes) {
  return dense_decode_workspace_size(args, bytes, DenseDecodeTuning{});
}

// Phase 2: enqueue the decode on `stream` (asynchronous; no allocation, no synchronisation).
// `workspace` may be null when the size asked for is 0.
template <class T>
Status dense_decode(const attention::DecodeArgs<T>& args, void* workspace, std::size_t workspace_bytes,
                    cudaStream_t stream, const DenseDecodeTuning& tuning) {
  DenseDecodePlan pl;
  if constexpr (!detail::IsDecodeDtype<T>::value) {
    attention::AttentionDims d;
    MEMATTN_RETURN_IF_ERROR(detail::plan_for_current_device(args, tuning, &d, &pl));
    return Status::kErrorUnsupportedDtype;  // (check_args already said so; no kernel for T)
  } else {
    kernels::DenseDecodeParams params;
    MEMATTN_RETURN_IF_ERROR(detail::prepare(args, workspace, workspace_bytes, tuning, &params, &pl));
    return detail::launch_params<T>(params, pl, stream);
  }
}

template <class T>
Status dense_decode(const attention::DecodeArgs<T>& args, void* workspace, std::size_t workspace_bytes,
                    cudaStream_t stream) {
  return dense_decode(args, workspace, workspace_bytes, stream, DenseDecodeTuning{});
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
