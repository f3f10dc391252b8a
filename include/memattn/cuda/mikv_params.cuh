// Host side of the MiKV GPU decode apart from the launch (so also usable by tests/emu, the CPU
// emulator that runs the kernels in CI): the argument check. The CUDA wrapper and its contract:
// memattn/cuda/mikv.cuh.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/status.hpp"
#include "memattn/kernels/mikv_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status mikv_check(const kernels::MikvDecodeParams& p) {
  MEMATTN_RETURN_IF_ERROR(p.lo_cfg.validate());
  MEMATTN_RETURN_IF_ERROR(p.hi_cfg.validate());
  if (p.lo_cfg.bits == 8 || p.hi_cfg.bits != 8 || p.hi_cfg.head_dim != p.lo_cfg.head_dim || p.hi_cfg.groups != p.lo_cfg.groups ||
      p.lo_cfg.groups > kernels::kMikvMaxGroups)
    return Status::kErrorInvalidArgument;
  if (p.lo_format != kernels::MikvLowFormat::kRows && p.lo_format != kernels::MikvLowFormat::kBlocks)
    return Status::kErrorInvalidArgument;
  if (p.segments == nullptr || p.q == nullptr || p.o == nullptr || p.probs == nullptr) return Status::kErrorNullPointer;
  if (p.num_segments < 1) return Status::kErrorInvalidShape;
  if (p.group < 1 || p.group > kernels::kMikvMaxGroup) return Status::kErrorGqaRatio;
  return Status::kSuccess;
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
