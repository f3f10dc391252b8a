#include "evict_merge_cpu_bridge.hpp"

#include <vector>

#include "memattn/cpu/evict_merge.hpp"
#include "memattn/cpu/evict_select.hpp"

namespace memattn_test {

memattn::Status cpu_merge_nearest_cos(float alpha, float beta, float* tau, bool* has_tau, memattn::Half* k,
                                      memattn::Half* v, std::int64_t D, std::int64_t N, const std::int32_t* keep,
                                      std::int64_t count) {
  memattn::evict::NearestCos::Params p;
  p.alpha = alpha;
  p.beta = beta;
  memattn::evict::NearestCos::SegmentState st;
  st.tau = *tau;
  st.has_tau = *has_tau;
  memattn::cpu::MergeScratch s;
  const memattn::Status r = memattn::cpu::merge_nearest_cos(p, &st, k, v, D, N, keep, count, &s);
  *tau = st.tau;
  *has_tau = st.has_tau;
  return r;
}

memattn::Status cpu_kvmerger_compact(float theta, int max_set, memattn::Half* k, memattn::Half* v, std::int64_t D,
                                     const std::int32_t* pos, std::int64_t N, std::int64_t budget, std::int32_t t_cur,
                                     const memattn::evict::Protection& pr, float* scores, float* state,
                                     std::int32_t* pivot, std::int32_t* keep, std::int64_t* count) {
  memattn::evict::ConsecutiveGaussian::Params p;
  p.theta = theta;
  p.max_set = max_set;
  memattn::cpu::MergeScratch s;
  MEMATTN_RETURN_IF_ERROR(memattn::cpu::consecutive_sets(p, k, D, pos, N, t_cur, pr, scores, &s));
  for (std::int64_t j = 0; j < N; ++j) pivot[j] = s.target[static_cast<std::size_t>(j)];
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(N));
  MEMATTN_RETURN_IF_ERROR(memattn::cpu::select_keep(scores, pos, N, budget, t_cur, pr,
                                                    memattn::evict::TieBreak::kPreferEarlier, keys.data(), keep, count));
  return memattn::cpu::merge_consecutive_gaussian(k, v, D, N, keep, *count, state, &s);
}

}  // namespace memattn_test
