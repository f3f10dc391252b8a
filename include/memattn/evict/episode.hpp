// Episodic KV pieces of EpiCache (spec eviction.md §3.12): the clustering of history segments
// into episodes, nearest-centroid routing, and the sensitivity-driven layer budgets.
//
//   OnlineKMeans       sequential (MacQueen) k-means on L2-normalised segment embeddings with
//                      furthest-point seeding: a segment opens a new cluster while fewer than
//                      `k_max` exist and its best cosine similarity is below `open_below`;
//                      otherwise it joins the nearest centroid, which moves to the running mean
//                      of its members. Assignments are final, so the episode cache a segment
//                      scored stays the cache of that episode ([lib]: the reference clusters the
//                      whole conversation offline; a streaming cache with bounded memory cannot
//                      wait for the whole history).
//   nearest()          routing: the centroid of highest cosine similarity (ties: lower index).
//   power_sensitivity_budgets()  C_l ∝ (1 - minmax(score_l))^p with mean C, int truncation and
//                      a floor max(1, C/4) (reference, RG-19), then by default re-normalised to
//                      Σ C_l = L·C exactly (memattn's PowerSensitivity): ±1 in order of weight.
// Host-only, Eigen, fp64 where norms and means accumulate (§0.3.1).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

class OnlineKMeans {
 public:
  OnlineKMeans() = default;
  OnlineKMeans(int dim, int k_max, double open_below) : dim_(dim), k_max_(k_max), open_below_(open_below) {}

  int size() const { return static_cast<int>(counts_.size()); }
  int dim() const { return dim_; }
  const Eigen::VectorXd& centroid(int c) const { return centroids_[static_cast<std::size_t>(c)]; }
  std::int64_t count(int c) const { return counts_[static_cast<std::size_t>(c)]; }
  void clear() {
    centroids_.clear();
    counts_.clear();
  }
  std::size_t bytes() const { return counts_.size() * (static_cast<std::size_t>(dim_) * sizeof(double) + sizeof(std::int64_t)); }

  // Cosine-nearest centroid of x (any norm); -1 when there is none. *sim: its similarity.
  int nearest(const Eigen::VectorXd& x, double* sim = nullptr) const {
    const double nx = x.norm();
    int best = -1;
    double bs = -2.0;
    for (int c = 0; c < size(); ++c) {
      const double nc = centroids_[static_cast<std::size_t>(c)].norm();
      const double s = nx > 0 && nc > 0 ? x.dot(centroids_[static_cast<std::size_t>(c)]) / (nx * nc) : 0.0;
      if (s > bs) {
        bs = s;
        best = c;
      }
    }
    if (sim) *sim = bs;
    return best;
  }

  // Adds one segment embedding; returns its cluster and sets *opened when it founded a new one.
  int add(const Eigen::VectorXd& x, bool* opened) {
    const double n = x.norm();
    const Eigen::VectorXd u = n > 0 ? Eigen::VectorXd(x / n) : x;
    double sim = 0;
    const int c = nearest(u, &sim);
    if (c < 0 || (size() < k_max_ && sim < open_below_)) {
      centroids_.push_back(u);
      counts_.push_back(1);
      if (opened) *opened = true;
      return size() - 1;
    }
    if (opened) *opened = false;
    std::int64_t& m = counts_[static_cast<std::size_t>(c)];
    ++m;
    centroids_[static_cast<std::size_t>(c)] += (u - centroids_[static_cast<std::size_t>(c)]) / static_cast<double>(m);
    return c;
  }

 private:
  int dim_ = 0;
  int k_max_ = 1;
  double open_below_ = 0.5;
  std::vector<Eigen::VectorXd> centroids_;
  std::vector<std::int64_t> counts_;
};

// Layer budgets from per-layer sensitivity scores (higher score = the layer's output changes less
// under block-masked attention = needs fewer tokens). exact: re-normalise to L·C.
inline Status power_sensitivity_budgets(const std::vector<double>& score, std::int64_t C, double p, bool exact,
                                        std::vector<std::int64_t>* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  const std::size_t L = score.size();
  if (L == 0 || C < 1 || !(p > 0) || !std::isfinite(p)) return Status::kErrorInvalidArgument;
  for (double s : score)
    if (!std::isfinite(s)) return Status::kErrorNonFinite;
  const double lo = *std::min_element(score.begin(), score.end()), hi = *std::max_element(score.begin(), score.end());
  std::vector<double> w(L);
  for (std::size_t l = 0; l < L; ++l) {
    const double mm = hi > lo ? (score[l] - lo) / (hi - lo) : 0.0;
    w[l] = std::pow(1.0 - mm, p);
  }
  const double mean = std::accumulate(w.begin(), w.end(), 0.0) / static_cast<double>(L);
  const std::int64_t floor_c = std::max<std::int64_t>(1, C / 4);
  std::vector<std::int64_t> b(L);
  for (std::size_t l = 0; l < L; ++l) {
    const double share = mean > 0 ? w[l] / mean : 1.0;
    b[l] = std::max<std::int64_t>(floor_c, static_cast<std::int64_t>(static_cast<double>(C) * share));
  }
  if (exact) {
    // ±1 corrections, most important layers first on the way up, least important first on the
    // way down (ties by layer index); the floor is never crossed.
    std::vector<std::size_t> order(L);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t c) { return w[a] > w[c]; });
    std::int64_t diff = static_cast<std::int64_t>(L) * C - std::accumulate(b.begin(), b.end(), std::int64_t{0});
    for (std::size_t i = 0; diff > 0; i = (i + 1) % L, --diff) ++b[order[i]];
    for (std::size_t guard = 0; diff < 0 && guard < 64 * L * static_cast<std::size_t>(C); ++guard) {
      const std::size_t l = order[L - 1 - guard % L];
      if (b[l] > floor_c) {
        --b[l];
        ++diff;
      }
    }
    if (diff != 0) return Status::kErrorInvalidArgument;  // L·C below the floors
  }
  *out = std::move(b);
  return Status::kSuccess;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
