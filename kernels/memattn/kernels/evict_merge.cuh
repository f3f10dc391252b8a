// Token-merging kernels (spec eviction.md §5.6; the math of evict/merge.hpp, the CPU twin
// cpu/evict_merge.hpp). Merges run after evict_select and before evict_gather; they write merged
// rows in place into kept slots (kept and evicted rows are disjoint, so no aliasing).
//
// Simple and deterministic rather than clever: one CTA per segment, one warp per row, cosines,
// norms and merge accumulators in fp64 (§0.3.1), every reduction in a fixed order (warp lanes
// over channels with a fixed shuffle tree, runs reduced in slot order). No atomics.
//
//   evict_nearest_cos_kernel   D2O: target = argmax_k cos(K_e, K_k) over kept rows (ties: lowest
//                              keep index), threshold EMA per segment (tau in global state),
//                              K_t <- (K_t + sum w_e K_e)/(1 + sum w_e), w_e = max(sim_e, 0).
//   evict_consecutive_sets_kernel  KVMerger before selection: links (consecutive positions and
//                              cos >= theta) in parallel, then sets (cap max_set), pivots and set
//                              scores in one ordered pass.
//   evict_gaussian_merge_kernel    KVMerger after selection: kept pivots absorb their evicted
//                              members with Gaussian-kernel weights.
#pragma once

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kEvictMergeThreads = 256;
constexpr int kEvictMergeMaxDim = 256;  // Gaussian merge: per-lane accumulators for D / 32 chunks

template <class T>
struct EvictNearestCosParams {
  T* k = nullptr;                        // [segments][stride][D]
  T* v = nullptr;                        // [segments][stride][D]
  const std::int32_t* len = nullptr;     // [segments] live slots
  const std::int32_t* keep = nullptr;    // [segments][stride] kept slots ascending (evict_select)
  const std::int32_t* keep_count = nullptr;  // [segments]; < 0: invalid segment, skipped
  float* tau = nullptr;                  // [segments] threshold state
  std::int32_t* has_tau = nullptr;       // [segments] 0 until the first eviction
  std::int32_t* target = nullptr;        // workspace [segments][stride]: keep index of each evicted slot, -1 kept
  double* sim = nullptr;                 // workspace [segments][stride]
  std::int64_t stride = 0;
  int D = 0;
  int segments = 0;
  float alpha = 0.5f;
  float beta = 0.5f;
};

template <class T>
struct EvictConsecutiveSetsParams {
  const T* k = nullptr;                  // [segments][stride][D]
  const std::int32_t* pos = nullptr;     // [segments][stride] ascending
  const std::int32_t* len = nullptr;     // [segments]
  const std::int32_t* t_cur = nullptr;   // [segments]
  float* scores = nullptr;               // [segments][stride]: in: scorer scores; out: set scores
  float* own = nullptr;                  // [segments][stride]: the input scores
  std::int32_t* pivot = nullptr;         // [segments][stride]: pivot slot, -1 protected
  std::int64_t stride = 0;
  int D = 0;
  int segments = 0;
  evict::Protection protect;
  float theta = 0.95f;
  int max_set = 8;
};

template <class T, class State>
struct EvictGaussianMergeParams {
  T* k = nullptr;
  T* v = nullptr;
  const std::int32_t* len = nullptr;
  const std::int32_t* keep = nullptr;
  const std::int32_t* keep_count = nullptr;
  const std::int32_t* pivot = nullptr;   // from evict_consecutive_sets_kernel
  const float* own = nullptr;
  State* state = nullptr;                // optional [segments][stride]: pivot's state = merged score sum
  std::int64_t stride = 0;
  int D = 0;
  int segments = 0;
};

namespace merge_detail {
__device__ inline double warp_sum(double x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
// Is slot j in the ascending keep list [0, count)?
__device__ inline bool is_kept(const std::int32_t* keep, int count, int j) {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (keep[mid] < j) lo = mid + 1;
    else hi = mid;
  }
  return lo < count && keep[lo] == j;
}
template <class T>
__device__ inline double dot_rows(const T* a, const T* b, int D, int lane) {
  double s = 0;
  for (int d = lane; d < D; d += 32) s += static_cast<double>(to_float(a[d])) * static_cast<double>(to_float(b[d]));
  return warp_sum(s);
}
}  // namespace merge_detail

template <class T>
__global__ void MEMATTN_HIDDEN evict_nearest_cos_kernel(const EvictNearestCosParams<T> p) {
  using namespace merge_detail;
  const int seg = blockIdx.x;
  const int count = p.keep_count[seg], n = p.len[seg];
  if (count <= 0 || count >= n) return;
  const std::int64_t base = static_cast<std::int64_t>(seg) * p.stride;
  T* k = p.k + base * p.D;
  T* v = p.v + base * p.D;
  const std::int32_t* keep = p.keep + base;
  std::int32_t* target = p.target + base;
  double* sim = p.sim + base;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // 1. best kept row per evicted slot
  for (int j = warp; j < n; j += warps) {
    if (is_kept(keep, count, j)) {
      if (lane == 0) target[j] = -1;
      continue;
    }
    const T* e = k + static_cast<std::int64_t>(j) * p.D;
    const double ne = sqrt(dot_rows(e, e, p.D, lane));
    double best = 0;
    int bt = 0;
    if (ne > 0) {
      for (int i = 0; i < count; ++i) {
        const T* t = k + static_cast<std::int64_t>(keep[i]) * p.D;
        const double nt = sqrt(dot_rows(t, t, p.D, lane));
        const double c = nt > 0 ? dot_rows(e, t, p.D, lane) / ne / nt : 0.0;
        if (i == 0 || c > best) best = c, bt = i;
      }
    }
    if (lane == 0) target[j] = bt, sim[j] = best;
  }
  __syncthreads();
  // 2. threshold: mean best similarity in slot order (one thread, deterministic)
  MEMATTN_SHARED(float, s_tau, );
  if (threadIdx.x == 0) {
    double sum = 0;
    for (int j = 0; j < n; ++j)
      if (target[j] >= 0) sum += sim[j];
    const float mean = static_cast<float>(sum / static_cast<double>(n - count));
    const float tau = p.has_tau[seg] ? p.alpha * p.tau[seg] + p.beta * mean : mean;
    p.tau[seg] = tau;
    p.has_tau[seg] = 1;
    s_tau = tau;
  }
  __syncthreads();
  const float tau = s_tau;
  // 3. each kept row absorbs its evicted entries (slot order), lanes over channels
  for (int i = warp; i < count; i += warps) {
    const std::int64_t t = keep[i];
    double wsum = 0;
    for (int j = 0; j < n; ++j) {
      if (target[j] != i) continue;
      const float sj = static_cast<float>(sim[j]);
      if (!(sj >= tau)) continue;
      wsum += sj > 0.f ? static_cast<double>(sj) : 0.0;
    }
    if (!(wsum > 0)) continue;
    for (int d = lane; d < p.D; d += 32) {
      double ak = 0, av = 0;
      for (int j = 0; j < n; ++j) {
        if (target[j] != i) continue;
        const float sj = static_cast<float>(sim[j]);
        if (!(sj >= tau)) continue;
        const double w = sj > 0.f ? static_cast<double>(sj) : 0.0;
        ak += w * to_float(k[static_cast<std::int64_t>(j) * p.D + d]);
        av += w * to_float(v[static_cast<std::int64_t>(j) * p.D + d]);
      }
      const std::int64_t o = t * p.D + d;
      k[o] = from_float<T>(static_cast<float>((to_float(k[o]) + ak) / (1.0 + wsum)));
      v[o] = from_float<T>(static_cast<float>((to_float(v[o]) + av) / (1.0 + wsum)));
    }
  }
}

template <class T>
__global__ void MEMATTN_HIDDEN evict_consecutive_sets_kernel(const EvictConsecutiveSetsParams<T> p) {
  using namespace merge_detail;
  const int seg = blockIdx.x;
  const int n = p.len[seg];
  const std::int64_t base = static_cast<std::int64_t>(seg) * p.stride;
  const T* k = p.k + base * p.D;
  const std::int32_t* pos = p.pos + base;
  float* scores = p.scores + base;
  float* own = p.own + base;
  std::int32_t* pivot = p.pivot + base;
  const std::int32_t t_cur = p.t_cur[seg];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // links: pivot[j] = 1 when j may join j-1's set (both candidates, consecutive, similar)
  for (int j = warp; j < n; j += warps) {
    const bool cand = !evict::is_protected(pos[j], t_cur, p.protect);
    bool link = false;
    if (cand && j > 0 && !evict::is_protected(pos[j - 1], t_cur, p.protect) && pos[j] == pos[j - 1] + 1) {
      const T* a = k + static_cast<std::int64_t>(j) * p.D;
      const T* b = k + static_cast<std::int64_t>(j - 1) * p.D;
      const double ab = dot_rows(a, b, p.D, lane), aa = dot_rows(a, a, p.D, lane), bb = dot_rows(b, b, p.D, lane);
      const double c = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
      link = c >= static_cast<double>(p.theta);
    }
    if (lane == 0) {
      own[j] = scores[j];
      pivot[j] = !cand ? -2 : (link ? 1 : 0);
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  // ordered pass: sets [j, end), pivot = largest own score (ties: earliest)
  for (int j = 0; j < n;) {
    if (pivot[j] == -2) {
      pivot[j] = -1;
      ++j;
      continue;
    }
    int end = j + 1;
    while (end < n && end - j < p.max_set && pivot[end] == 1) ++end;
    int piv = j;
    double total = 0;
    for (int i = j; i < end; ++i) {
      total += own[i];
      if (own[i] > own[piv]) piv = i;
    }
    for (int i = j; i < end; ++i) {
      pivot[i] = piv;
      scores[i] = i == piv ? static_cast<float>(total) : -__int_as_float(0x7f800000);
    }
    j = end;
  }
}

template <class T, class State>
__global__ void MEMATTN_HIDDEN evict_gaussian_merge_kernel(const EvictGaussianMergeParams<T, State> p) {
  using namespace merge_detail;
  const int seg = blockIdx.x;
  const int count = p.keep_count[seg], n = p.len[seg];
  if (count <= 0) return;
  const std::int64_t base = static_cast<std::int64_t>(seg) * p.stride;
  T* k = p.k + base * p.D;
  T* v = p.v + base * p.D;
  const std::int32_t* keep = p.keep + base;
  const std::int32_t* pivot = p.pivot + base;
  const float* own = p.own + base;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int i = warp; i < count; i += warps) {
    const int piv = keep[i];
    if (pivot[piv] != piv) continue;
    int lo = piv, hi = piv + 1;  // the set is the run of slots sharing this pivot
    while (lo > 0 && pivot[lo - 1] == piv) --lo;
    while (hi < n && pivot[hi] == piv) ++hi;
    const T* kp = k + static_cast<std::int64_t>(piv) * p.D;
    double sigma2 = 0;
    int members = 0;
    for (int j = lo; j < hi; ++j) {
      if (is_kept(keep, count, j)) continue;
      double s = 0;
      for (int d = lane; d < p.D; d += 32) {
        const double x = static_cast<double>(to_float(kp[d])) - to_float(k[static_cast<std::int64_t>(j) * p.D + d]);
        s += x * x;
      }
      sigma2 += warp_sum(s);
      ++members;
    }
    if (members == 0) continue;
    sigma2 /= members;
    // accumulators: lane owns channels lane + 32*c; every member's weight is warp-uniform.
    // The pivot row is read until all lanes are done, then written (no read-after-write race).
    constexpr int kChunks = kEvictMergeMaxDim / 32;
    double ak[kChunks], av[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      ak[c] = d < p.D ? static_cast<double>(to_float(kp[d])) : 0.0;
      av[c] = d < p.D ? static_cast<double>(to_float(v[static_cast<std::int64_t>(piv) * p.D + d])) : 0.0;
    }
    double gsum = 1, score = own[piv];
    for (int j = lo; j < hi; ++j) {
      if (is_kept(keep, count, j)) continue;
      const T* kj = k + static_cast<std::int64_t>(j) * p.D;
      const T* vj = v + static_cast<std::int64_t>(j) * p.D;
      double s = 0;
      for (int d = lane; d < p.D; d += 32) {
        const double x = static_cast<double>(to_float(kp[d])) - to_float(kj[d]);
        s += x * x;
      }
      const double dist = warp_sum(s);
      const double g = sigma2 > 0 ? exp(-dist / (2 * sigma2)) : 1.0;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const int d = lane + 32 * c;
        if (d < p.D) {
          ak[c] += g * to_float(kj[d]);
          av[c] += g * to_float(vj[d]);
        }
      }
      gsum += g;
      score += own[j];
    }
    __syncwarp();
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < p.D) {
        k[static_cast<std::int64_t>(piv) * p.D + d] = from_float<T>(static_cast<float>(ak[c] / gsum));
        v[static_cast<std::int64_t>(piv) * p.D + d] = from_float<T>(static_cast<float>(av[c] / gsum));
      }
    }
    if (p.state != nullptr && lane == 0) p.state[base + piv] = static_cast<State>(score);
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
