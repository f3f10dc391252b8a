// Butterfly reductions over a warp (all 32 lanes get the result) and over the 4 lanes of a quad
// (lanes 4g..4g+3: the threadID_in_group of an mma fragment row). Full-warp masks: every lane
// of the warp must call them.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

MEMATTN_DEVICE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
MEMATTN_DEVICE float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
MEMATTN_DEVICE float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
MEMATTN_DEVICE float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// max over the warp of floats >= 0 (NaN above +inf), compared as bit patterns: one REDUX (sm_80+)
MEMATTN_DEVICE float warp_max_nonneg(float x) { return __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(x))); }

}  // namespace kernels
MEMATTN_NAMESPACE_END
