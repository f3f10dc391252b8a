#include "evict_signals_cpu_bridge.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <limits>

#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/evict/episode.hpp"

using namespace memattn;

namespace memattn_test {
namespace {

template <class TQ, class TK>
Status episode_scores(const TQ* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G, std::int64_t D,
                      float scale, const TK* k, std::int64_t N, int reduce, float* scores) {
  std::fill(scores, scores + N, 0.f);
  if (P == 0) return Status::kSuccess;
  // As EpiCacheKvCache::compress: the group's rows of each probe row, fp32, then window_colsum.
  std::vector<float> qrows(static_cast<std::size_t>(P * G * D));
  for (std::int64_t i = 0; i < P; ++i)
    for (std::int64_t x = 0; x < G * D; ++x) qrows[static_cast<std::size_t>(i * G * D + x)] = to_float(probe[i * Hq * D + h * G * D + x]);
  std::vector<std::int32_t> qpos(static_cast<std::size_t>(P), std::numeric_limits<std::int32_t>::max());
  std::vector<std::int32_t> kpos(static_cast<std::size_t>(N));
  for (std::int64_t j = 0; j < N; ++j) kpos[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
  std::vector<float> scratch(cpu::window_colsum_scratch_elems(G, P, D, N));
  std::vector<std::int64_t> visible(static_cast<std::size_t>(P * G));
  return cpu::window_colsum(qrows.data(), G * D, D, qpos.data(), P, G, D, scale, k, D, kpos.data(), N,
                            static_cast<evict::GroupReduce>(reduce), scores, scratch.data(), visible.data());
}

}  // namespace

Status cpu_episode_scores(const Half* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G,
                          std::int64_t D, float scale, const Half* k, std::int64_t N, int reduce, float* scores) {
  return episode_scores(probe, P, Hq, h, G, D, scale, k, N, reduce, scores);
}
Status cpu_episode_scores(const BFloat16* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G,
                          std::int64_t D, float scale, const BFloat16* k, std::int64_t N, int reduce, float* scores) {
  return episode_scores(probe, P, Hq, h, G, D, scale, k, N, reduce, scores);
}
Status cpu_episode_scores(const float* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G,
                          std::int64_t D, float scale, const Half* k, std::int64_t N, int reduce, float* scores) {
  return episode_scores(probe, P, Hq, h, G, D, scale, k, N, reduce, scores);
}
Status cpu_episode_scores(const float* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G,
                          std::int64_t D, float scale, const BFloat16* k, std::int64_t N, int reduce, float* scores) {
  return episode_scores(probe, P, Hq, h, G, D, scale, k, N, reduce, scores);
}

bool cpu_route(const std::vector<double>& adds, int n_adds, int dim, int k_max, double open_below,
               const std::vector<double>& queries, int n_queries, RouteReference* out) {
  if (out == nullptr || static_cast<int>(adds.size()) < n_adds * dim || static_cast<int>(queries.size()) < n_queries * dim)
    return false;
  evict::OnlineKMeans km(dim, k_max, open_below);
  for (int a = 0; a < n_adds; ++a) {
    const Eigen::VectorXd x = Eigen::Map<const Eigen::VectorXd>(adds.data() + static_cast<std::ptrdiff_t>(a) * dim, dim);
    bool opened = false;
    km.add(x, &opened);
  }
  out->count = km.size();
  out->centroids.assign(static_cast<std::size_t>(km.size()) * dim, 0.0);
  for (int c = 0; c < km.size(); ++c)
    for (int d = 0; d < dim; ++d) out->centroids[static_cast<std::size_t>(c) * dim + d] = km.centroid(c)[d];
  out->route.assign(static_cast<std::size_t>(n_queries), -1);
  out->sim.assign(static_cast<std::size_t>(n_queries), 0.0);
  for (int q = 0; q < n_queries; ++q) {
    const Eigen::VectorXd x = Eigen::Map<const Eigen::VectorXd>(queries.data() + static_cast<std::ptrdiff_t>(q) * dim, dim);
    out->route[static_cast<std::size_t>(q)] = km.nearest(x, &out->sim[static_cast<std::size_t>(q)]);
  }
  return true;
}

}  // namespace memattn_test
