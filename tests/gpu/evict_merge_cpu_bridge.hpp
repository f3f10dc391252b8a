// The CPU merge routines (cpu/evict_merge.hpp, Eigen) behind plain functions, so the GPU merge
// test compares against them without compiling Eigen through nvcc. One segment per call.
#pragma once

#include <cstdint>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"

namespace memattn_test {

// D2O: merge_nearest_cos on rows k, v [N][D]; tau/has_tau: the segment's threshold state.
memattn::Status cpu_merge_nearest_cos(float alpha, float beta, float* tau, bool* has_tau, memattn::Half* k,
                                      memattn::Half* v, std::int64_t D, std::int64_t N, const std::int32_t* keep,
                                      std::int64_t count);
// KVMerger: consecutive_sets (scores rewritten, pivot[N] out), select_keep on the set scores
// (keep[N], *count out), merge_consecutive_gaussian (state[N] updated).
memattn::Status cpu_kvmerger_compact(float theta, int max_set, memattn::Half* k, memattn::Half* v, std::int64_t D,
                                     const std::int32_t* pos, std::int64_t N, std::int64_t budget, std::int32_t t_cur,
                                     const memattn::evict::Protection& pr, float* scores, float* state,
                                     std::int32_t* pivot, std::int32_t* keep, std::int64_t* count);

}  // namespace memattn_test
