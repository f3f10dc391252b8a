// A small blocking thread pool for the example engine. Workers sleep on a condition variable
// between jobs (no spinning: on a 2-core machine shared with other work, spin-waiting OpenMP
// barriers made decoding 6x slower). It also serves memattn as its Executor: memattn owns no
// threads, the engine lends it these.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memattn/core/executor.hpp>
#include <mutex>
#include <thread>
#include <vector>

namespace memattn_llama {

class ThreadPool {
 public:
  explicit ThreadPool(int threads = 0) {
    int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int w = 1; w < n; ++w) workers_.emplace_back([this, w] { loop(w); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(ctx, task, worker) for task in [0, n); the caller is worker 0. Blocks until done.
  void run(std::int64_t n, memattn::Executor::TaskFn fn, void* ctx) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
      for (std::int64_t i = 0; i < n; ++i) fn(ctx, i, 0);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);  // one job at a time
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = fn;
      ctx_ = ctx;
      n_ = n;
      next_.store(0);
      busy_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return busy_ == 0; });
  }

  template <class F>
  void parallel_for(std::int64_t n, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run(n, [](void* c, std::int64_t i, int) { (*static_cast<Fn*>(c))(i); }, &f);
  }

  memattn::Executor executor() {
    memattn::Executor e;
    e.self = this;
    e.workers = size();
    e.parallel_for = [](void* self, std::int64_t n, memattn::Executor::TaskFn fn, void* ctx) {
      static_cast<ThreadPool*>(self)->run(n, fn, ctx);
    };
    return e;
  }

 private:
  void work(int worker) {
    for (std::int64_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) fn_(ctx_, i, worker);
  }

  void loop(int worker) {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work(worker);
      std::lock_guard<std::mutex> lock(mu_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable wake_, done_;
  memattn::Executor::TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::int64_t n_ = 0;
  std::atomic<std::int64_t> next_{0};
  int busy_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace memattn_llama
