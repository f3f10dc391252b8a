// memattn::Status: the one error channel of every host entry point (no exceptions cross the API).
#pragma once

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN

enum class Status : int {
  kSuccess = 0,
  kErrorNullPointer,
  kErrorInvalidShape,
  kErrorInvalidStride,
  kErrorUnsupportedHeadDim,
  kErrorGqaRatio,
  kErrorEmptyCache,
  kErrorWorkspaceTooSmall,
  kErrorUnsupportedDtype,
  kErrorInvalidArgument,
  kErrorNonFinite,
  kErrorCapacityExceeded,
  kErrorOutOfMemory,
  kErrorNotSupported,
  kErrorCudaRuntime,
  kErrorNoDevice,
  kErrorParse,
};

inline const char* status_message(Status s) noexcept {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kErrorNullPointer: return "a required pointer is null";
    case Status::kErrorInvalidShape: return "tensor shapes do not match or are out of range";
    case Status::kErrorInvalidStride: return "tensor strides are invalid (inner dimension must be contiguous, no negative strides)";
    case Status::kErrorUnsupportedHeadDim: return "unsupported head_dim";
    case Status::kErrorGqaRatio: return "query heads must be a positive integer multiple of KV heads";
    case Status::kErrorEmptyCache: return "cache length is 0 (or a sequence length is out of range)";
    case Status::kErrorWorkspaceTooSmall: return "workspace is smaller than workspace_size() asked for, or misaligned";
    case Status::kErrorUnsupportedDtype: return "unsupported dtype";
    case Status::kErrorInvalidArgument: return "invalid argument";
    case Status::kErrorNonFinite: return "input contains NaN or Inf where the method cannot define a result";
    case Status::kErrorCapacityExceeded: return "capacity exceeded";
    case Status::kErrorOutOfMemory: return "out of memory";
    case Status::kErrorNotSupported: return "operation not supported for this configuration";
    case Status::kErrorCudaRuntime: return "CUDA runtime error";
    case Status::kErrorNoDevice: return "no CUDA device available";
    case Status::kErrorParse: return "input could not be parsed (truncated or corrupt)";
  }
  return "unknown status";
}

inline bool ok(Status s) noexcept { return s == Status::kSuccess; }

MEMATTN_NAMESPACE_END

#define MEMATTN_RETURN_IF_ERROR(expr)                         \
  do {                                                        \
    const ::memattn::Status memattn_status_ = (expr);         \
    if (memattn_status_ != ::memattn::Status::kSuccess) return memattn_status_; \
  } while (0)
