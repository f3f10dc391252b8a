// ThinK: query-driven key-channel pruning (spec eviction.md §3.6, ICLR'25, arXiv 2407.21018).
// Pure policy math (no execution); the CPU cache (cpu/composed_kv_cache.hpp) and the CUDA
// two-segment decode (cuda/think.cuh) use it.
//
// Per segment (sequence, layer, KV head), channel c in [0, d):
//   qn[c] = 1/(G*w) sum_{g in group} sum_{i < w} Q_w[g,i,c]^2      (GQA mean over the group, §2.4)
//   kn[c] = 1/N'    sum_j K[j,c]^2                                  (retained keys, window included)
//   score[c] = qn[c] * kn[c]
// score[c] * w * N' = ||Q_w[:,c] K[:,c]^T||_F^2 (G = 1), the per-channel Frobenius contribution of
// the paper's objective min_S ||Q_w K^T - Q_w S (K S)^T||_F, exact when the channel cross-terms
// vanish (T-THINK-2). lambda is the PRUNED fraction: floor(lambda*d) smallest-score channels go,
// d_keep = d - floor(lambda*d) (RG-01: lambda = 0.4, d = 128 -> 77); `granularity` > 1 rounds
// d_keep up to a multiple of it (80 at granularity 8; changes lambda's meaning, default 1 = parity).
// Ties: the higher channel index is pruned first [lib] -- the selection key is evict::select_key
// (score, channel) with kPreferEarlier, so selection is deterministic and NaN scores rank lowest.
//
// Value channels ([lib] extension; spec §3.6 "Value channels": the released code prunes keys only):
// with vprune = lambda_v > 0, old tokens also keep only dv_keep = keep_count(d, lambda_v) value
// channels, the highest of vscore[c] = 1/(G*w) sum_{g, i < w} O_w[g,i,c]^2 where O_w = A_w V is the
// attention output of the observation-window queries (so ||(A_w V)[:,c]||^2, GQA mean), chosen
// together with the key channels. A pruned value channel of an old token contributes 0 to the
// output; the full-width tail keeps every channel. Ties and order as for keys.
//
// NoPrune is the identity component of the composed cache (cache/compose.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/key.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace prune {

constexpr int kMaxHeadDim = 256;  // channel lists are uint8

struct ThinKParams {
  float prune = 0.4f;    // lambda: pruned fraction of the key channels
  int window = 32;       // w: observation-window queries scoring the channels
  int recent = 32;       // r_full: newest tokens kept full width
  int granularity = 1;   // d_keep rounded up to a multiple of this (1 = reference parity)
  bool migrate = true;   // [lib] streaming: tokens leaving the full-width tail are pruned with the
                         // frozen channel list (false = reference: only the prompt is pruned)
  float vprune = 0.f;    // [lib] extension: pruned fraction of the value channels (0 = keys only)
};

inline Status check(const ThinKParams& p, int head_dim) {
  if (!(p.prune >= 0.f && p.prune < 1.f) || !(p.vprune >= 0.f && p.vprune < 1.f) || p.window < 1 || p.recent < 0 ||
      p.granularity < 1)
    return Status::kErrorInvalidArgument;
  if (head_dim < 1 || head_dim > kMaxHeadDim) return Status::kErrorUnsupportedHeadDim;
  return Status::kSuccess;
}

// Channels kept out of d.
MEMATTN_HOST_DEVICE int keep_count(int d, float lambda, int granularity = 1) {
  const int pruned = static_cast<int>(floor(static_cast<double>(lambda) * d));
  int keep = d - pruned;
  if (keep < 1) keep = 1;
  if (granularity > 1) keep = (keep + granularity - 1) / granularity * granularity;
  return keep < d ? keep : d;
}

// qn accumulation: adds sum_g q_g[c]^2 of one query token's G heads (rows `q_stride` apart).
MEMATTN_HOST_DEVICE void accumulate_sq(const float* q, std::int64_t q_stride, int G, int d, double* acc) {
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < d; ++c) {
      const double x = q[g * q_stride + c];
      acc[c] += x * x;
    }
}

// score[c] = (qsq[c] / q_count) * (ksq[c] / k_count), fp64 sums in, fp32 scores out.
inline void channel_scores(const double* qsq, std::int64_t q_count, const double* ksq, std::int64_t k_count, int d,
                           float* score) {
  for (int c = 0; c < d; ++c) {
    const double qn = q_count > 0 ? qsq[c] / static_cast<double>(q_count) : 0.0;
    const double kn = k_count > 0 ? ksq[c] / static_cast<double>(k_count) : 0.0;
    score[c] = static_cast<float>(qn * kn);
  }
}

// Kept channels: the d_keep highest scores (ties keep the lower index), ascending in ch[0..d_keep).
// key: scratch of d entries.
inline Status select_channels(const float* score, int d, int d_keep, std::uint64_t* key, std::uint8_t* ch) {
  if (score == nullptr || key == nullptr || ch == nullptr) return Status::kErrorNullPointer;
  if (d < 1 || d > kMaxHeadDim || d_keep < 1 || d_keep > d) return Status::kErrorInvalidArgument;
  for (int c = 0; c < d; ++c) key[c] = evict::select_key(score[c], c, evict::TieBreak::kPreferEarlier);
  std::nth_element(key, key + (d_keep - 1), key + d, std::greater<std::uint64_t>());
  const std::uint64_t theta = key[d_keep - 1];
  int n = 0;
  for (int c = 0; c < d; ++c)
    if (evict::select_key(score[c], c, evict::TieBreak::kPreferEarlier) >= theta) ch[n++] = static_cast<std::uint8_t>(c);
  return n == d_keep ? Status::kSuccess : Status::kErrorInvalidArgument;
}

// ---- components of the composed cache (§2.1 ChannelPruner) ----
struct NoPrune {
  static constexpr bool kPrunes = false;
  struct Params {};
};
struct ThinK {
  static constexpr bool kPrunes = true;
  using Params = ThinKParams;
};

}  // namespace prune
MEMATTN_NAMESPACE_END
