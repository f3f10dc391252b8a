// LazyEviction's per-step recurrence update and score (spec eviction.md §3.7, §4.3) on the GPU:
// the decode epilogue's GQA-reduced probabilities p̄[seg][slot] of one query at position
// t_query[seg] update (last_hit, mri, acc) per slot with the host/device function of
// evict/lazy.hpp, so the GPU state is bit-identical to the CPU cache's; the score kernel writes
// s = mri - idle (+ the acc tie) for the selection kernel (evict_select.cuh). One thread per slot,
// grid = (slot chunks, segments); slots >= len[seg] are left untouched.
#pragma once

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/evict/lazy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct RecurrenceParams {
  evict::RecurrenceState* state = nullptr;  // [segments][stride]
  const float* pbar = nullptr;              // [segments][stride] (update) or unused (score)
  float* scores = nullptr;                  // [segments][stride] (score)
  const std::int32_t* len = nullptr;        // [segments]
  const std::int32_t* t = nullptr;          // [segments]: query position (update) / newest position (score)
  std::int64_t stride = 0;
  int segments = 0;
  float alpha = 1e-4f;
  bool acc_tie = true;
  bool raw = false;  // the spec's unclamped margin (evict/lazy.hpp)
};

constexpr int kRecurrenceThreads = 256;

// Templates (on the block size) so the header can be included by several translation units.
template <int kThreads>
__global__ void MEMATTN_HIDDEN __launch_bounds__(kThreads) recurrence_update_kernel(const RecurrenceParams p) {
  const int seg = blockIdx.y;
  const int n = p.len[seg];
  const std::int32_t t = p.t[seg];
  const std::int64_t base = static_cast<std::int64_t>(seg) * p.stride;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
    evict::recurrence_update(p.state[base + j], p.pbar[base + j], t, p.alpha);
}

template <int kThreads>
__global__ void MEMATTN_HIDDEN __launch_bounds__(kThreads) recurrence_score_kernel(const RecurrenceParams p) {
  const int seg = blockIdx.y;
  const int n = p.len[seg];
  const std::int32_t t = p.t[seg];
  const std::int64_t base = static_cast<std::int64_t>(seg) * p.stride;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x)
    p.scores[base + j] = evict::recurrence_score(p.state[base + j], t, p.acc_tie, p.raw);
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
