// A memattn::Executor over OpenMP threads (the engine's choice; memattn itself owns no threads).
#pragma once

#include <memattn/core/executor.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace memattn_llama {

inline memattn::Executor openmp_executor() {
  memattn::Executor e;
#if defined(_OPENMP)
  e.workers = omp_get_max_threads();
  e.parallel_for = [](void*, std::int64_t n, memattn::Executor::TaskFn fn, void* ctx) {
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < n; ++i) fn(ctx, i, omp_get_thread_num());
  };
#endif
  return e;
}

}  // namespace memattn_llama
