// Merge routines of one eviction segment on the CPU (spec eviction.md §5.6, components in
// evict/merge.hpp). Both run after selection and before the ordered gather (compact_rows): they
// write merged rows in place into kept slots, which the gather then moves like any kept row.
//
//   merge_nearest_cos(...)        D2O: evicted -> most similar kept row (cosine), EMA threshold,
//                                 normalised weighted mean, fp64 accumulation, one row at a time
//                                 (no |E| x |K| matrix).
//   consecutive_sets(...)         KVMerger, before selection: merge sets of consecutive similar
//                                 keys, pivot per set, set scores for the selector.
//   merge_consecutive_gaussian()  KVMerger, after selection: Gaussian-kernel merge of a kept
//                                 pivot's evicted members into the pivot's slot.
// Cosines and norms are fp64 (§0.3.1) over the stored (rounded) rows. Scratch is caller-owned
// (MergeScratch, grown on demand, reused across compactions).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "memattn/core/status.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/evict/merge.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

struct MergeScratch {
  std::vector<double> kept;             // [count][D] normalised kept keys
  std::vector<double> row, acc_k, acc_v, wsum;
  std::vector<std::int32_t> target;     // per evicted entry (NearestCos); per slot pivot (KVMerger)
  std::vector<float> sim, own;
  std::vector<std::uint8_t> flag;
};

namespace merge_detail {
template <class T>
void load_row(const T* src, std::int64_t D, double* dst) {
  for (std::int64_t d = 0; d < D; ++d) dst[d] = static_cast<double>(to_float(src[d]));
}
// Normalises in place; returns the norm (zero rows stay zero: cosine 0 with everything).
inline double normalise(double* x, std::int64_t D) {
  double n = 0;
  for (std::int64_t d = 0; d < D; ++d) n += x[d] * x[d];
  n = std::sqrt(n);
  if (n > 0)
    for (std::int64_t d = 0; d < D; ++d) x[d] /= n;
  return n;
}
template <class T>
double cosine(const T* a, const T* b, std::int64_t D) {
  double ab = 0, aa = 0, bb = 0;
  for (std::int64_t d = 0; d < D; ++d) {
    const double x = to_float(a[d]), y = to_float(b[d]);
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}
// flag[j] = 1 when slot j is kept.
inline void kept_flags(const std::int32_t* keep, std::int64_t count, std::int64_t N, std::vector<std::uint8_t>* flag) {
  flag->assign(static_cast<std::size_t>(N), 0);
  for (std::int64_t i = 0; i < count; ++i) (*flag)[static_cast<std::size_t>(keep[i])] = 1;
}
}  // namespace merge_detail

// D2O merge on a segment of N rows (k, v: [N][D]); keep[count] ascending. Updates the segment's
// threshold. *merged (optional): evicted entries merged.
template <class T>
Status merge_nearest_cos(const evict::NearestCos::Params& p, evict::NearestCos::SegmentState* st, T* k, T* v,
                         std::int64_t D, std::int64_t N, const std::int32_t* keep, std::int64_t count,
                         MergeScratch* s, std::int64_t* merged = nullptr) {
  using namespace merge_detail;
  if (st == nullptr || k == nullptr || v == nullptr || keep == nullptr || s == nullptr) return Status::kErrorNullPointer;
  if (merged != nullptr) *merged = 0;
  if (count <= 0 || count >= N) return Status::kSuccess;
  const std::size_t Dz = static_cast<std::size_t>(D);
  s->kept.resize(static_cast<std::size_t>(count) * Dz);
  for (std::int64_t i = 0; i < count; ++i) {
    double* r = s->kept.data() + static_cast<std::size_t>(i) * Dz;
    load_row(k + static_cast<std::int64_t>(keep[i]) * D, D, r);
    normalise(r, D);
  }
  const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Kn(s->kept.data(),
                                                                                                     count, D);
  kept_flags(keep, count, N, &s->flag);
  const std::int64_t E = N - count;
  s->target.resize(static_cast<std::size_t>(E));
  s->sim.resize(static_cast<std::size_t>(E));
  s->row.resize(Dz);
  Eigen::VectorXd dots(count);
  double sum_sim = 0;
  for (std::int64_t j = 0, e = 0; j < N; ++j) {
    if (s->flag[static_cast<std::size_t>(j)]) continue;
    load_row(k + j * D, D, s->row.data());
    const double n = normalise(s->row.data(), D);
    std::int32_t best = 0;
    double best_sim = 0;
    if (n > 0) {
      dots.noalias() = Kn * Eigen::Map<const Eigen::VectorXd>(s->row.data(), D);
      best_sim = dots[0];
      for (std::int64_t i = 1; i < count; ++i)
        if (dots[i] > best_sim) best_sim = dots[i], best = static_cast<std::int32_t>(i);
    }
    s->target[static_cast<std::size_t>(e)] = best;
    s->sim[static_cast<std::size_t>(e)] = static_cast<float>(best_sim);
    sum_sim += best_sim;
    ++e;
  }
  const float tau = evict::NearestCos::next_tau(p, st, static_cast<float>(sum_sim / static_cast<double>(E)));
  // Accumulate per target: K_t + sum w_e K_e, 1 + sum w_e (fp64), in evicted order.
  s->acc_k.assign(static_cast<std::size_t>(count) * Dz, 0.0);
  s->acc_v.assign(static_cast<std::size_t>(count) * Dz, 0.0);
  s->wsum.assign(static_cast<std::size_t>(count), 0.0);
  std::int64_t m = 0;
  for (std::int64_t j = 0, e = 0; j < N; ++j) {
    if (s->flag[static_cast<std::size_t>(j)]) continue;
    const float sim = s->sim[static_cast<std::size_t>(e)];
    const std::int32_t t = s->target[static_cast<std::size_t>(e++)];
    if (!(sim >= tau)) continue;
    const double w = std::max(static_cast<double>(sim), 0.0);
    double* ak = s->acc_k.data() + static_cast<std::size_t>(t) * Dz;
    double* av = s->acc_v.data() + static_cast<std::size_t>(t) * Dz;
    for (std::int64_t d = 0; d < D; ++d) {
      ak[d] += w * to_float(k[j * D + d]);
      av[d] += w * to_float(v[j * D + d]);
    }
    s->wsum[static_cast<std::size_t>(t)] += w;
    ++m;
  }
  for (std::int64_t i = 0; i < count; ++i) {
    const double w = s->wsum[static_cast<std::size_t>(i)];
    if (w <= 0) continue;
    const std::int64_t slot = keep[i];
    const double* ak = s->acc_k.data() + static_cast<std::size_t>(i) * Dz;
    const double* av = s->acc_v.data() + static_cast<std::size_t>(i) * Dz;
    for (std::int64_t d = 0; d < D; ++d) {
      k[slot * D + d] = from_float<T>(static_cast<float>((to_float(k[slot * D + d]) + ak[d]) / (1.0 + w)));
      v[slot * D + d] = from_float<T>(static_cast<float>((to_float(v[slot * D + d]) + av[d]) / (1.0 + w)));
    }
  }
  if (merged != nullptr) *merged = m;
  return Status::kSuccess;
}

// KVMerger grouping (before selection). scores[N]: the scorer's scores, rewritten for the selector
// (pivot: sum of its set's scores; other members: -inf); pivot (s->target, [N]): the slot of each
// candidate's set pivot (itself for singletons), -1 for protected slots; s->own keeps the original
// scores. pos ascending (slots are chronological).
template <class T>
Status consecutive_sets(const evict::ConsecutiveGaussian::Params& p, const T* k, std::int64_t D,
                        const std::int32_t* pos, std::int64_t N, std::int32_t t_cur, const evict::Protection& pr,
                        float* scores, MergeScratch* s) {
  using namespace merge_detail;
  if (k == nullptr || pos == nullptr || scores == nullptr || s == nullptr) return Status::kErrorNullPointer;
  s->target.assign(static_cast<std::size_t>(N), -1);
  s->own.assign(scores, scores + N);
  std::int64_t j = 0;
  while (j < N) {
    if (evict::is_protected(pos[j], t_cur, pr)) {
      ++j;
      continue;
    }
    std::int64_t end = j + 1;  // set = slots [j, end)
    while (end < N && end - j < p.max_set && !evict::is_protected(pos[end], t_cur, pr) &&
           pos[end] == pos[end - 1] + 1 && cosine(k + end * D, k + (end - 1) * D, D) >= p.theta)
      ++end;
    std::int64_t piv = j;
    double total = 0;
    for (std::int64_t i = j; i < end; ++i) {
      total += s->own[static_cast<std::size_t>(i)];
      if (s->own[static_cast<std::size_t>(i)] > s->own[static_cast<std::size_t>(piv)]) piv = i;
    }
    for (std::int64_t i = j; i < end; ++i) {
      s->target[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(piv);
      scores[i] = i == piv ? static_cast<float>(total) : -std::numeric_limits<float>::infinity();
    }
    j = end;
  }
  return Status::kSuccess;
}

// KVMerger merge (after selection): every kept pivot absorbs its set's evicted members. state
// (optional, [N]): the pivot's becomes its own plus the merged members' original scores.
template <class T, class State>
Status merge_consecutive_gaussian(T* k, T* v, std::int64_t D, std::int64_t N, const std::int32_t* keep,
                                  std::int64_t count, State* state, MergeScratch* s, std::int64_t* merged = nullptr) {
  using namespace merge_detail;
  if (k == nullptr || v == nullptr || keep == nullptr || s == nullptr) return Status::kErrorNullPointer;
  if (s->target.size() < static_cast<std::size_t>(N)) return Status::kErrorInvalidArgument;
  if (merged != nullptr) *merged = 0;
  kept_flags(keep, count, N, &s->flag);
  const std::size_t Dz = static_cast<std::size_t>(D);
  s->row.resize(3 * Dz);
  double* kp = s->row.data();
  double* ak = kp + Dz;
  double* av = ak + Dz;
  std::int64_t m = 0;
  for (std::int64_t j = 0; j < N;) {
    const std::int32_t piv = s->target[static_cast<std::size_t>(j)];
    std::int64_t end = j + 1;
    while (end < N && s->target[static_cast<std::size_t>(end)] == piv) ++end;
    if (piv < 0 || !s->flag[static_cast<std::size_t>(piv)]) {
      j = end;
      continue;
    }
    load_row(k + piv * D, D, kp);
    double sigma2 = 0;
    std::int64_t members = 0;
    for (std::int64_t i = j; i < end; ++i) {
      if (s->flag[static_cast<std::size_t>(i)]) continue;
      for (std::int64_t d = 0; d < D; ++d) {
        const double x = kp[d] - to_float(k[i * D + d]);
        sigma2 += x * x;
      }
      ++members;
    }
    if (members > 0) {
      sigma2 /= static_cast<double>(members);
      double gsum = 1;
      double score = s->own[static_cast<std::size_t>(piv)];
      for (std::int64_t d = 0; d < D; ++d) {
        ak[d] = kp[d];
        av[d] = to_float(v[piv * D + d]);
      }
      for (std::int64_t i = j; i < end; ++i) {
        if (s->flag[static_cast<std::size_t>(i)]) continue;
        double dist = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          const double x = kp[d] - to_float(k[i * D + d]);
          dist += x * x;
        }
        const double g = sigma2 > 0 ? std::exp(-dist / (2 * sigma2)) : 1.0;
        for (std::int64_t d = 0; d < D; ++d) {
          ak[d] += g * to_float(k[i * D + d]);
          av[d] += g * to_float(v[i * D + d]);
        }
        gsum += g;
        score += s->own[static_cast<std::size_t>(i)];
      }
      for (std::int64_t d = 0; d < D; ++d) {
        k[piv * D + d] = from_float<T>(static_cast<float>(ak[d] / gsum));
        v[piv * D + d] = from_float<T>(static_cast<float>(av[d] / gsum));
      }
      if (state != nullptr) state[piv] = static_cast<State>(score);
      m += members;
    }
    j = end;
  }
  if (merged != nullptr) *merged = m;
  return Status::kSuccess;
}

// The cache's entry points per Merger type: group() before selection (kGroupsBeforeSelect),
// merge() after it. A new merger adds a specialisation here.
template <class Merger>
struct CpuMerger;

template <>
struct CpuMerger<evict::NoMerge> {};

template <>
struct CpuMerger<evict::NearestCos> {
  template <class T, class State>
  static Status merge(const evict::NearestCos::Params& p, evict::NearestCos::SegmentState* st, T* k, T* v,
                      std::int64_t D, std::int64_t N, const std::int32_t* keep, std::int64_t count, State*,
                      MergeScratch* s) {
    return merge_nearest_cos(p, st, k, v, D, N, keep, count, s);
  }
};

template <>
struct CpuMerger<evict::ConsecutiveGaussian> {
  template <class T>
  static Status group(const evict::ConsecutiveGaussian::Params& p, const T* k, std::int64_t D, const std::int32_t* pos,
                      std::int64_t N, std::int32_t t_cur, const evict::Protection& pr, float* scores, MergeScratch* s) {
    return consecutive_sets(p, k, D, pos, N, t_cur, pr, scores, s);
  }
  template <class T, class State>
  static Status merge(const evict::ConsecutiveGaussian::Params&, evict::ConsecutiveGaussian::SegmentState*, T* k, T* v,
                      std::int64_t D, std::int64_t N, const std::int32_t* keep, std::int64_t count, State* state,
                      MergeScratch* s) {
    return merge_consecutive_gaussian(k, v, D, N, keep, count, state, s);
  }
};

}  // namespace cpu
MEMATTN_NAMESPACE_END
