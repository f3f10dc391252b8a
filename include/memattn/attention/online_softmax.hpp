// Online-softmax state and the log-sum-exp merge, shared by the CPU path and the CUDA kernels.
// A partial result over a key subset is (o, lse) with o already normalised; two partials merge as
//   lse = log(exp(lse_a) + exp(lse_b)),  o = o_a * exp(lse_a - lse) + o_b * exp(lse_b - lse).
// An empty subset has lse = -inf and contributes nothing.
#pragma once

#include <cmath>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace attention {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Weights for merging two normalised partials; returns the merged lse. Safe for -inf inputs.
MEMATTN_HOST_DEVICE float lse_merge_weights(float lse_a, float lse_b, float* w_a, float* w_b) {
  const float m = lse_a > lse_b ? lse_a : lse_b;
  if (m == -INFINITY) {
    *w_a = 0.f;
    *w_b = 0.f;
    return -INFINITY;
  }
  const float ea = expf(lse_a - m);
  const float eb = expf(lse_b - m);
  const float s = ea + eb;
  *w_a = ea / s;
  *w_b = eb / s;
  return m + logf(s);
}

}  // namespace attention
MEMATTN_NAMESPACE_END
