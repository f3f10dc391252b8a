// Feature maps φ of linear attention (host and device): identity, elu+1, relu and the symmetric
// second-order Taylor map of BASED. φ is applied elementwise (or, for Taylor, per 16-wide row)
// to q and k tiles on the fly; it is never materialised in memory by the kernels.
//
// Taylor map (kTaylor2), feature order (normative, ../shared/specs/linear-attention.md §1.2):
//   [1, √α·x_i (i < d), (α/√2)·x_i² (i < d), α·x_i·x_j (i < j, row-major)]
// so Kφ = 1 + d + d(d+1)/2 (153 at d = 16) and φ(q)·φ(k) = 1 + α q·k + (α q·k)²/2 exactly.
// For α = 1/√d this equals fla's TaylorFeatureMap, so states can be exchanged.
#pragma once

#include <cmath>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace linear {

enum class FeatureMap : int { kIdentity = 0, kEluPlusOne = 1, kRelu = 2, kTaylor2 = 3 };

inline const char* feature_map_name(FeatureMap f) noexcept {
  switch (f) {
    case FeatureMap::kIdentity: return "identity";
    case FeatureMap::kEluPlusOne: return "elu+1";
    case FeatureMap::kRelu: return "relu";
    case FeatureMap::kTaylor2: return "taylor2";
  }
  return "unknown";
}

// Dimension after the feature map (Kφ) for a key/query head dim dk.
MEMATTN_HOST_DEVICE int feature_dim(FeatureMap f, int dk) {
  return f == FeatureMap::kTaylor2 ? 1 + dk + dk * (dk + 1) / 2 : dk;
}

// Elementwise maps (identity, elu+1, relu). Not for kTaylor2.
MEMATTN_HOST_DEVICE float phi_elementwise(FeatureMap f, float x) {
  switch (f) {
    case FeatureMap::kEluPlusOne: return x > 0.f ? x + 1.f : expf(x);
    case FeatureMap::kRelu: return x > 0.f ? x : 0.f;
    default: return x;
  }
}

// One Taylor feature: coef · (a < 0 ? 1 : x[a]) · (b < 0 ? 1 : x[b]).
struct TaylorTerm {
  int a = -1;
  int b = -1;
  float coef = 1.f;
};

// Feature f (0 <= f < feature_dim(kTaylor2, d)) of the symmetric Taylor map.
MEMATTN_HOST_DEVICE TaylorTerm taylor_term(int f, int d, float alpha) {
  TaylorTerm t;
  if (f == 0) return t;
  if (f <= d) {
    t.a = f - 1;
    t.coef = sqrtf(alpha);
    return t;
  }
  if (f <= 2 * d) {
    t.a = t.b = f - 1 - d;
    t.coef = alpha * 0.70710678118654752f;
    return t;
  }
  int p = f - 1 - 2 * d;  // index among the i < j products, row-major
  int i = 0;
  while (p >= d - 1 - i) {
    p -= d - 1 - i;
    ++i;
  }
  t.a = i;
  t.b = i + 1 + p;
  t.coef = alpha;
  return t;
}

MEMATTN_HOST_DEVICE float taylor_feature(const TaylorTerm& t, const float* x) {
  const float xa = t.a < 0 ? 1.f : x[t.a];
  const float xb = t.b < 0 ? 1.f : x[t.b];
  return t.coef * xa * xb;
}

// The kernel trick: φ(q)·φ(k) from s = q·k.
MEMATTN_HOST_DEVICE float taylor_kernel(float s, float alpha) {
  const float as = alpha * s;
  return 1.f + as + 0.5f * as * as;
}

// φ(x) for a whole row: out has feature_dim(f, dk) entries.
MEMATTN_HOST_DEVICE void apply_feature_map(FeatureMap f, const float* x, int dk, float alpha, float* out) {
  if (f == FeatureMap::kTaylor2) {
    const float ra = sqrtf(alpha), r2 = alpha * 0.70710678118654752f;
    int o = 0;
    out[o++] = 1.f;
    for (int i = 0; i < dk; ++i) out[o++] = ra * x[i];
    for (int i = 0; i < dk; ++i) out[o++] = r2 * x[i] * x[i];
    for (int i = 0; i < dk; ++i)
      for (int j = i + 1; j < dk; ++j) out[o++] = alpha * x[i] * x[j];
  } else {
    for (int i = 0; i < dk; ++i) out[i] = phi_elementwise(f, x[i]);
  }
}

}  // namespace linear
MEMATTN_NAMESPACE_END
