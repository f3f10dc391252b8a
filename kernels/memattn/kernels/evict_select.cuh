// Token-eviction selection and compaction kernels (spec eviction.md §5.1-§5.4).
//
// evict_select_kernel: one CTA per segment, kV (1 or 4) consecutive slots per thread per step.
// Candidates (non-protected slots) carry the unique 64-bit key of evict/key.hpp; the threshold
// theta is found by an MSD radix select with 8-bit digits (at most 8 passes, 256-bin shared
// histogram with integer atomics: counts are exact, so the result does not depend on thread
// timing; the digit is picked by a block scan over the bins).
// A pass whose chosen bin is taken whole ends the search early: theta is then that bin's prefix
// with zero low bits, which admits exactly the same keys (keys are unique), so distinct scores
// typically need 3-4 passes instead of 8. Then flags (protected, or key >= theta) are compacted in
// slot order with a block scan: kept slots ascending, bit-identical to cpu::select_keep.
// evict_gather_kernel: out-of-place gather dst[seg][i] = src[seg][keep[seg][i]] (K, V, positions,
// policy state), so there is no in-place race. Rows are copied as 2^lanes_log2 lanes per row of
// V-sized words (the host wrapper picks the widest V the row bytes and pointers allow: 16 B for
// K/V rows), no division per element.
// evict_fill_holes_kernel: in-place hole filling (§5.5 slot replacement, cpu::fill_holes): only
// the kept rows at slots >= count move, into the evicted slots below count. Sources (>= count) and
// destinations (< count) are disjoint, so every copy runs in parallel without a race.
#pragma once

#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "memattn/core/config.hpp"
#include "memattn/evict/key.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/retention.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct EvictSelectParams {
  const float* scores = nullptr;       // [segments][stride]
  const std::int32_t* pos = nullptr;   // [segments][stride], distinct within a segment
  const std::int32_t* len = nullptr;   // [segments] live slots (<= stride)
  const std::int32_t* budget = nullptr;  // [segments] C >= 1
  const std::int32_t* t_cur = nullptr;   // [segments] position of the newest token
  std::int64_t stride = 0;
  int segments = 0;
  evict::Protection protect;
  evict::TieBreak tie = evict::TieBreak::kPreferEarlier;
  std::int32_t* keep = nullptr;        // [segments][stride] kept slots, ascending
  std::int32_t* keep_count = nullptr;  // [segments]; -1 when the segment's input was invalid
  std::int32_t* error = nullptr;       // set to 1 on NaN candidate scores, budget < 1 or len > stride
  // Retention ranges (§2.10), optional: [segments][stride] priorities, 255 = hard pin (protected),
  // 1..254 soft (major part of the key, evict/retention.hpp select_key_prio), 0 = none.
  const std::uint8_t* prio = nullptr;
};

// kV consecutive slots [j0, j0 + kV) of a segment, as one thread reads them: with kV = 4 one
// 16-byte load of scores and one of positions (the host wrapper picks kV = 4 only when the stride
// is a multiple of 4 and both arrays are 16-byte aligned), element loads for a segment's tail.
// cand: a live, unprotected slot (a candidate for the top-k); prot: a live, protected one.
template <int kV>
struct EvictSlots {
  unsigned long long key[kV];
  float score[kV];
  bool cand[kV], prot[kV];

  MEMATTN_DEVICE void load(const EvictSelectParams& p, std::int64_t base, int j0, int n, std::int32_t t_cur) {
    std::int32_t pos[kV];
    bool whole = false;
    if constexpr (kV == 4) {
      whole = j0 + 4 <= n;
      if (whole) {
        const float4 s4 = *reinterpret_cast<const float4*>(p.scores + base + j0);
        const int4 p4 = *reinterpret_cast<const int4*>(p.pos + base + j0);
        score[0] = s4.x, score[1] = s4.y, score[2] = s4.z, score[3] = s4.w;
        pos[0] = p4.x, pos[1] = p4.y, pos[2] = p4.z, pos[3] = p4.w;
      }
    }
    if (!whole) {
#pragma unroll
      for (int e = 0; e < kV; ++e) {
        score[e] = j0 + e < n ? p.scores[base + j0 + e] : 0.f;
        pos[e] = j0 + e < n ? p.pos[base + j0 + e] : 0;
      }
    }
#pragma unroll
    for (int e = 0; e < kV; ++e) {
      const bool live = j0 + e < n;
      const std::uint8_t pr = (p.prio != nullptr && live) ? p.prio[base + j0 + e] : std::uint8_t{0};
      const bool pinned = live && (evict::is_protected(pos[e], t_cur, p.protect) || pr == evict::kHardPin);
      prot[e] = pinned;
      cand[e] = live && !pinned;
      key[e] = p.prio == nullptr ? evict::select_key(score[e], pos[e], p.tie) : evict::select_key_prio(score[e], pos[e], pr, p.tie);
    }
  }
};

// One CTA per segment streams over the segment 4-6 times: 1024 threads keep enough loads in
// flight for a 64K-token segment on one SM. Measured on an H100 (B = 16, L = 64K, 128 segments,
// select + gather of K, V, positions, scores): 1197 us with 1024 threads, 1417 us with 512, with
// one slot per thread per step. Each pass is a chain of dependent load round trips per thread, so
// kV = 4 slots per thread per step (16-byte loads) cuts the round trips of every pass by 4.
constexpr int kEvictSelectThreads = 1024;

template <int kThreads, int kV>
__global__ void __launch_bounds__(kThreads) MEMATTN_HIDDEN evict_select_kernel(const EvictSelectParams p) {
  static_assert(kThreads >= 256, "one thread per histogram bin");
  static_assert(kV == 1 || kV == 4, "1 or 4 slots per thread per step");
  constexpr int kStep = kThreads * kV;
  using BlockScan = cub::BlockScan<int, kThreads>;
  MEMATTN_SHARED(typename BlockScan::TempStorage, scan, );
  MEMATTN_SHARED(int, hist, [256]);
  MEMATTN_SHARED(unsigned long long, s_prefix, );
  MEMATTN_SHARED(int, s_need, );
  MEMATTN_SHARED(int, s_cand, );
  MEMATTN_SHARED(int, s_bad, );
  MEMATTN_SHARED(int, s_offset, );
  MEMATTN_SHARED(int, s_done, );
  const int seg = blockIdx.x;
  const int tid = threadIdx.x;
  const std::int64_t base = static_cast<std::int64_t>(seg) * p.stride;
  const int n = p.len[seg];
  const int budget = p.budget[seg];
  const std::int32_t t_cur = p.t_cur[seg];
  if (tid == 0) {
    s_cand = 0;
    s_bad = (budget < 1 || n < 0 || n > p.stride) ? 1 : 0;
    s_offset = 0;
  }
  __syncthreads();
  if (s_bad == 0) {
    int local = 0, nan = 0;
    for (int j0 = tid * kV; j0 < n; j0 += kStep) {
      EvictSlots<kV> sl;
      sl.load(p, base, j0, n, t_cur);
#pragma unroll
      for (int e = 0; e < kV; ++e) {
        local += sl.cand[e];
        if (sl.cand[e] && sl.score[e] != sl.score[e]) nan = 1;
      }
    }
    atomicAdd(&s_cand, local);
    if (nan) atomicOr(&s_bad, 1);
  }
  __syncthreads();
  if (s_bad != 0) {
    if (tid == 0) {
      p.keep_count[seg] = -1;
      atomicExch(p.error, 1);
    }
    return;
  }
  const int cand = s_cand, prot = n - cand;
  const int target = min(n, max(budget, prot));
  const int k = target - prot;
  const bool admit_all = k == cand, admit_none = k == 0;
  unsigned long long theta = 0;
  if (!admit_all && !admit_none) {
    if (tid == 0) {
      s_prefix = 0;
      s_need = k;
      s_done = 0;
    }
    for (int pass = 0; pass < 8; ++pass) {
      const int shift = 56 - 8 * pass;
      const unsigned long long hi_mask = pass == 0 ? 0ull : (~0ull << (shift + 8));
      for (int b = tid; b < 256; b += kThreads) hist[b] = 0;
      __syncthreads();
      const unsigned long long prefix = s_prefix;
      const int need = s_need;
      for (int j0 = tid * kV; j0 < n; j0 += kStep) {
        EvictSlots<kV> sl;
        sl.load(p, base, j0, n, t_cur);
#pragma unroll
        for (int e = 0; e < kV; ++e)
          if (sl.cand[e] && (sl.key[e] & hi_mask) == prefix) atomicAdd(&hist[(sl.key[e] >> shift) & 255u], 1);
      }
      __syncthreads();
      // Bins from the top: thread t holds bin 255 - t; the chosen bin b has
      // (keys in bins above b) < need <= (keys in bins >= b).
      const int bin = 255 - tid;
      const int cnt = tid < 256 ? hist[bin] : 0;
      int above = 0;
      BlockScan(scan).ExclusiveSum(cnt, above);
      if (tid < 256 && above < need && above + cnt >= need) {
        s_prefix = prefix | (static_cast<unsigned long long>(bin) << shift);
        s_need = need - above;
        s_done = above + cnt == need;  // the whole bin is kept: no lower digit matters
      }
      __syncthreads();
      if (s_done) break;
    }
    theta = s_prefix;  // the k-th largest key itself, or a bin prefix that admits the same keys
  }
  // Kept slots in slot order: thread t's slots follow those of threads < t within a step.
  for (int b0 = 0; b0 < n; b0 += kStep) {
    const int j0 = b0 + tid * kV;
    bool f[kV];
    int cnt = 0;
    {
      EvictSlots<kV> sl;
      sl.load(p, base, j0, n, t_cur);
#pragma unroll
      for (int e = 0; e < kV; ++e) {
        f[e] = sl.prot[e] || (sl.cand[e] && (admit_all || (!admit_none && sl.key[e] >= theta)));
        cnt += f[e];
      }
    }
    int excl = 0, total = 0;
    BlockScan(scan).ExclusiveSum(cnt, excl, total);
    std::int32_t* out = p.keep + base + s_offset + excl;
#pragma unroll
    for (int e = 0; e < kV; ++e)
      if (f[e]) *out++ = j0 + e;
    __syncthreads();
    if (tid == 0) s_offset += total;
    __syncthreads();
  }
  if (tid == 0) p.keep_count[seg] = s_offset;
}

// dst[seg][i][:] = src[seg][keep[seg][i]][:] for i < keep_count[seg]; rows of row_words words
// (V: the copy word), src/dst segment strides in rows; 2^lanes_log2 threads per row;
// grid = (chunks of rows, segments).
template <class V>
__global__ void MEMATTN_HIDDEN evict_gather_kernel(const V* __restrict__ src, std::int64_t src_rows, V* __restrict__ dst,
                                                   std::int64_t dst_rows, int row_words, int lanes_log2,
                                                   const std::int32_t* __restrict__ keep, std::int64_t keep_stride,
                                                   const std::int32_t* __restrict__ keep_count) {
  const int seg = blockIdx.y;
  const int count = keep_count[seg];
  if (count <= 0) return;
  const int lanes = 1 << lanes_log2, lane = static_cast<int>(threadIdx.x) & (lanes - 1);
  const int rows_per_block = static_cast<int>(blockDim.x) >> lanes_log2;
  for (int r = static_cast<int>(blockIdx.x) * rows_per_block + (static_cast<int>(threadIdx.x) >> lanes_log2); r < count;
       r += static_cast<int>(gridDim.x) * rows_per_block) {
    const std::int64_t s = keep[seg * keep_stride + r];
    const V* from = src + (seg * src_rows + s) * row_words;
    V* to = dst + (seg * dst_rows + r) * row_words;
    for (int c = lane; c < row_words; c += lanes) to[c] = from[c];
  }
}

// Hole i of a segment (the i-th slot below count missing from keep[0, stay)): the largest j with
// keep[j] - j <= i (slots missing before keep[j]) gives i + j + 1; none gives i.
MEMATTN_DEVICE int evict_hole_slot(const std::int32_t* keep, int stay, int i) {
  int lo = 0, hi = stay;  // first j with keep[j] - j > i
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (keep[mid] - mid <= i)
      lo = mid + 1;
    else
      hi = mid;
  }
  return i + lo;
}

// data[seg][hole_i][:] = data[seg][keep[stay + i]][:] for the count - stay holes of each segment
// (stay = kept slots below count); rows as in evict_gather_kernel; grid = (chunks of rows, segments).
template <class V>
__global__ void MEMATTN_HIDDEN evict_fill_holes_kernel(V* __restrict__ data, std::int64_t rows, int row_words,
                                                       int lanes_log2, const std::int32_t* __restrict__ keep,
                                                       std::int64_t keep_stride,
                                                       const std::int32_t* __restrict__ keep_count) {
  const int seg = blockIdx.y;
  const int count = keep_count[seg];
  if (count <= 0) return;
  const std::int32_t* k = keep + seg * keep_stride;
  int lo = 0, hi = count;  // stay = lower_bound(keep, count)
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (k[mid] < count)
      lo = mid + 1;
    else
      hi = mid;
  }
  const int stay = lo;
  const int lanes = 1 << lanes_log2, lane = static_cast<int>(threadIdx.x) & (lanes - 1);
  const int rows_per_block = static_cast<int>(blockDim.x) >> lanes_log2;
  for (int i = static_cast<int>(blockIdx.x) * rows_per_block + (static_cast<int>(threadIdx.x) >> lanes_log2);
       i < count - stay; i += static_cast<int>(gridDim.x) * rows_per_block) {
    const std::int64_t to = evict_hole_slot(k, stay, i), from = k[stay + i];
    V* d = data + (seg * rows + to) * row_words;
    const V* f = data + (seg * rows + from) * row_words;
    for (int c = lane; c < row_words; c += lanes) d[c] = f[c];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
