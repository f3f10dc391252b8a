// SirLLM's per-step device work (spec eviction.md §3.9, §4.5); the CPU twins are
// cpu/token_logprobs.hpp and evict::Surprisal::on_chunk (evict/sirllm.hpp).
//
// token_logprob_kernel: one CTA per output row. out = logit[next] - logsumexp(row) with an online
// max-shifted sum: each thread keeps (m, s) in fp32 over its strided part of the row (one expf per
// logit, a rescale only when its maximum grows), the CTA combines the partial sums in fp64 and
// forms the result in fp64 like the CPU, so any finite logit gap (1e4 and more) stays finite.
// A row with a non-finite logit or an id outside [0, vocab) gets NaN and sets a bit of *error
// (the CPU returns kErrorNonFinite / kErrorInvalidArgument instead; a stream-ordered call can only
// report it on the device). Reference alignment (RG-23): out[0] = NaN, out[i] = row i-1 at id i-1.
//
// sirllm_update_kernel: one CTA per segment, the per-chunk score update of Surprisal::on_chunk:
// surviving slots [0, size - count) are multiplied by decay^turns (float(pow(double, double)) as
// the CPU), the chunk's slots [size - count, size) get -log p of their position's token, or the
// chunk's largest surprisal where the engine passed a non-finite log-prob (no predictor: the
// sequence's first token). The state is SirLLM's selection score as it is (score(s) = s), so
// evict_select runs on it directly.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kTokenLogprobThreads = 512;
constexpr int kSirllmUpdateThreads = 256;

// Bits of TokenLogprobParams::error (the kernels only ever set bits; the caller clears it).
constexpr std::int32_t kLogprobNonFinite = 1;  // a logit of the row is NaN or +-inf
constexpr std::int32_t kLogprobBadId = 2;      // next id outside [0, vocab)

struct TokenLogprobParams {
  const float* logits = nullptr;      // rows read: [.][stride], vocab used
  const std::int32_t* next = nullptr;  // id per logits row
  float* out = nullptr;               // [outputs]
  std::int64_t vocab = 0;
  std::int64_t stride = 0;
  std::int32_t* error = nullptr;      // kLogprob* bits, or-ed
  int shift = 0;                      // 1: reference alignment (out[i] from row i - 1, out[0] = NaN)
};

namespace sirllm_detail {

// Online (max, sum) update with one value known finite.
MEMATTN_DEVICE void lse_push(float x, float& m, float& s) {
  if (x > m) {
    s = s * expf(m - x) + 1.f;  // m = -inf: s = 0 * 0 + 1
    m = x;
  } else {
    s += expf(x - m);
  }
}

MEMATTN_DEVICE bool finite4(const float4& a) {
  return isfinite(a.x) && isfinite(a.y) && isfinite(a.z) && isfinite(a.w);
}

}  // namespace sirllm_detail

// grid = outputs (rows, or n for the reference alignment); block = kTokenLogprobThreads.
// kVec4: the row base and stride allow 16-byte loads (stride % 4 == 0, logits 16-byte aligned).
template <bool kVec4>
MEMATTN_KERNEL void __launch_bounds__(kTokenLogprobThreads) token_logprob_kernel(const TokenLogprobParams p) {
  constexpr int kWarps = kTokenLogprobThreads / 32;
  MEMATTN_SHARED(float, s_m, [kWarps]);
  MEMATTN_SHARED(double, s_s, [kWarps]);
  const int tid = static_cast<int>(threadIdx.x);
  std::int64_t r = blockIdx.x;
  if (p.shift) {
    if (r == 0) {
      if (tid == 0) p.out[0] = __int_as_float(0x7fffffff);
      return;
    }
    --r;
  }
  const float* row = p.logits + r * p.stride;
  float m = -INFINITY, s = 0.f;
  bool bad = false;
  if (kVec4) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const std::int64_t n4 = p.vocab / 4;
    for (std::int64_t v = tid; v < n4; v += kTokenLogprobThreads) {
      const float4 a = __ldg(row4 + v);
      if (!sirllm_detail::finite4(a)) {
        bad = true;
        continue;
      }
      const float mx = fmaxf(fmaxf(a.x, a.y), fmaxf(a.z, a.w));
      if (mx > m) {
        s *= expf(m - mx);
        m = mx;
      }
      s += ((expf(a.x - m) + expf(a.y - m)) + expf(a.z - m)) + expf(a.w - m);
    }
    for (std::int64_t v = n4 * 4 + tid; v < p.vocab; v += kTokenLogprobThreads) {
      const float x = __ldg(row + v);
      if (!isfinite(x)) bad = true;
      else sirllm_detail::lse_push(x, m, s);
    }
  } else {
    for (std::int64_t v = tid; v < p.vocab; v += kTokenLogprobThreads) {
      const float x = __ldg(row + v);
      if (!isfinite(x)) bad = true;
      else sirllm_detail::lse_push(x, m, s);
    }
  }
  // Combine in fp64: warp max, each partial sum rescaled to it, warp sum; then across warps.
  float wm = m;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, o));
  double ws = s > 0.f ? static_cast<double>(s) * exp(static_cast<double>(m) - static_cast<double>(wm)) : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ws += __shfl_xor_sync(0xffffffffu, ws, o);
  const int warp = tid >> 5, lane = tid & 31;
  if (lane == 0) {
    s_m[warp] = wm;
    s_s[warp] = ws;
  }
  bad = __syncthreads_or(bad) != 0;
  if (tid != 0) return;
  const std::int32_t id = p.next[r];
  std::int32_t err = bad ? kLogprobNonFinite : 0;
  if (id < 0 || id >= p.vocab) err |= kLogprobBadId;
  if (err != 0) {
    p.out[blockIdx.x] = __int_as_float(0x7fffffff);
    atomicOr(p.error, err);
    return;
  }
  float bm = s_m[0];
  for (int w = 1; w < kWarps; ++w) bm = fmaxf(bm, s_m[w]);
  double bs = 0.0;
  for (int w = 0; w < kWarps; ++w)
    if (s_s[w] > 0.0) bs += s_s[w] * exp(static_cast<double>(s_m[w]) - static_cast<double>(bm));
  p.out[blockIdx.x] = static_cast<float>(static_cast<double>(row[id]) - static_cast<double>(bm) - log(bs));
}

struct SirllmUpdateParams {
  float* state = nullptr;              // [segments][stride] surprisal e per slot (= selection score)
  const std::int32_t* pos = nullptr;   // [segments][stride] positions, the chunk's tokens last
  const std::int32_t* size = nullptr;  // [segments] live slots, the chunk's `count` tokens included
  std::int64_t stride = 0;
  int segments = 0;
  int segments_per_sequence = 1;       // segment s belongs to sequence s / segments_per_sequence
  const float* logprobs = nullptr;     // [sequences][logprob_stride] log p(x_j | x_<j) of the chunk's tokens
  std::int64_t logprob_stride = 0;
  const std::int32_t* count = nullptr;      // [sequences] chunk tokens (0: nothing happens, as the CPU)
  const std::int32_t* first_pos = nullptr;  // [sequences] position of the chunk's first token
  float decay = 1.f;                   // Surprisal::Params::decay, per turn
  std::int64_t turn = 0;               // Surprisal::Params::turn (0: every chunk is a turn)
  std::int32_t* error = nullptr;       // set to 1 when a segment's input is inconsistent (nothing written)
};

// grid = segments; block = kSirllmUpdateThreads.
MEMATTN_KERNEL void __launch_bounds__(kSirllmUpdateThreads) sirllm_update_kernel(const SirllmUpdateParams p) {
  constexpr int kThreads = kSirllmUpdateThreads, kWarps = kThreads / 32;
  MEMATTN_SHARED(float, s_max, [kWarps]);
  const int tid = static_cast<int>(threadIdx.x);
  const int seg = static_cast<int>(blockIdx.x);
  const int b = seg / p.segments_per_sequence;
  const std::int32_t n = p.size[seg], c = p.count[b], fp = p.first_pos[b];
  const std::int64_t first_new = static_cast<std::int64_t>(n) - c;
  float* st = p.state + static_cast<std::int64_t>(seg) * p.stride;
  const std::int32_t* pos = p.pos + static_cast<std::int64_t>(seg) * p.stride;
  const float* lp = p.logprobs + static_cast<std::int64_t>(b) * p.logprob_stride;
  // Validate the whole segment before anything is written: the chunk's slots must map into the
  // chunk's log-probs (the CPU indexes logprobs[pos - first_pos] unchecked).
  bool bad = c < 0 || c > p.logprob_stride || first_new < 0 || n > p.stride || fp < 0;
  bool need_max = false;
  if (!bad) {
    for (std::int64_t j = first_new + tid; j < n; j += kThreads) {
      const std::int64_t k = static_cast<std::int64_t>(pos[j]) - fp;
      if (k < 0 || k >= c) {
        bad = true;
      } else if (!isfinite(lp[k])) {
        need_max = true;
      }
    }
  }
  if (__syncthreads_or(bad)) {
    if (tid == 0) atomicExch(p.error, 1);
    return;
  }
  if (c == 0) return;
  // The chunk's largest finite surprisal (0 if none), only when some slot needs it.
  float mx = 0.f;
  if (__syncthreads_or(need_max)) {
    float m = -INFINITY;
    for (int i = tid; i < c; i += kThreads) {
      const float x = lp[i];
      if (isfinite(x)) m = fmaxf(m, -x);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((tid & 31) == 0) s_max[tid >> 5] = m;
    __syncthreads();
    m = s_max[0];
    for (int w = 1; w < kWarps; ++w) m = fmaxf(m, s_max[w]);
    mx = isfinite(m) ? m : 0.f;
  }
  // Surprisal::turns_crossed and the decay factor, as on the CPU.
  const std::int64_t turns = p.turn <= 0 ? 1 : (static_cast<std::int64_t>(fp) + c) / p.turn - fp / p.turn;
  if (turns > 0 && p.decay != 1.f) {
    const float f = static_cast<float>(pow(static_cast<double>(p.decay), static_cast<double>(turns)));
    for (std::int64_t j = tid; j < first_new; j += kThreads) st[j] *= f;
  }
  for (std::int64_t j = first_new + tid; j < n; j += kThreads) {
    const float x = lp[pos[j] - fp];
    st[j] = isfinite(x) ? -x : mx;
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
