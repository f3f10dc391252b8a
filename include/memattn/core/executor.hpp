// Caller-supplied parallelism. memattn owns no threads: CPU operations that can split work into
// independent tasks take an Executor, and the engine decides how tasks run (its own pool,
// OpenMP, or serially). Results never depend on the number of workers: each task writes its
// own outputs and uses the scratch slot of the worker that runs it.
#pragma once

#include <cstdint>
#include <type_traits>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN

struct Executor {
  using TaskFn = void (*)(void* ctx, std::int64_t task, int worker);
  // Runs fn(ctx, task, worker) for every task in [0, n) and returns when all are done; `worker`
  // is in [0, workers) and no two concurrent calls share a worker index. nullptr: serial.
  void (*parallel_for)(void* self, std::int64_t n, TaskFn fn, void* ctx) = nullptr;
  void* self = nullptr;
  int workers = 1;

  void run(std::int64_t n, TaskFn fn, void* ctx) const {
    if (parallel_for == nullptr || workers <= 1) {
      for (std::int64_t i = 0; i < n; ++i) fn(ctx, i, 0);
    } else {
      parallel_for(self, n, fn, ctx);
    }
  }

  // Convenience for lambdas: ex.for_each(n, [&](std::int64_t task, int worker) { ... }).
  template <class F>
  void for_each(std::int64_t n, F&& f) const {
    using Fn = std::remove_reference_t<F>;
    run(n, [](void* c, std::int64_t task, int worker) { (*static_cast<Fn*>(c))(task, worker); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

  int concurrency() const { return parallel_for == nullptr || workers < 1 ? 1 : workers; }
};

MEMATTN_NAMESPACE_END
