// Host-compiled bridge for the SirLLM / EpiCache GPU test: the Eigen-based CPU references
// (EpiCache's probe scores through cpu::window_colsum, OnlineKMeans routing) behind plain
// functions, so Eigen never goes through nvcc.
#pragma once

#include <cstdint>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"

namespace memattn_test {

// The scores cpu::EpiCacheKvCache::compress computes for KV head h: probe rows [P][Hq][D] (h's
// group is heads h*G .. h*G + G - 1), converted to fp32, every key visible (probe positions
// INT_MAX), cpu::window_colsum over keys [N][D] (contiguous) with tau = scale and the group
// reduction `reduce`; P == 0: every score 0.
memattn::Status cpu_episode_scores(const memattn::Half* probe, std::int64_t P, std::int64_t Hq, std::int64_t h,
                                   std::int64_t G, std::int64_t D, float scale, const memattn::Half* k, std::int64_t N,
                                   int reduce, float* scores);
memattn::Status cpu_episode_scores(const memattn::BFloat16* probe, std::int64_t P, std::int64_t Hq, std::int64_t h,
                                   std::int64_t G, std::int64_t D, float scale, const memattn::BFloat16* k,
                                   std::int64_t N, int reduce, float* scores);
memattn::Status cpu_episode_scores(const float* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G,
                                   std::int64_t D, float scale, const memattn::Half* k, std::int64_t N, int reduce,
                                   float* scores);
memattn::Status cpu_episode_scores(const float* probe, std::int64_t P, std::int64_t Hq, std::int64_t h, std::int64_t G,
                                   std::int64_t D, float scale, const memattn::BFloat16* k, std::int64_t N, int reduce,
                                   float* scores);

// evict::OnlineKMeans(dim, k_max, open_below) fed `adds` (n_adds rows of dim, in order); exports
// its centroids (count x dim) and, for each of the n_queries query rows, nearest() and its
// similarity.
struct RouteReference {
  int count = 0;
  std::vector<double> centroids;
  std::vector<int> route;
  std::vector<double> sim;
};
bool cpu_route(const std::vector<double>& adds, int n_adds, int dim, int k_max, double open_below,
               const std::vector<double>& queries, int n_queries, RouteReference* out);

}  // namespace memattn_test
