// Sliding-window softmax attention (the BASED companion, spec P3) and the mixture-of-memories
// helper kernels (routing, gather, combine): the kernels behind memattn/cuda/linear_attention.cuh.
//
// Sliding window: one warp per (token, query head), four per CTA. Lanes split the <= W + 1 keys
// (scores in fp32 registers, warp-reduced max and sum, exact expf), then split the value columns
// (8 per lane) to accumulate Σ p·v in fp32. Keys at absolute positions before the call's first
// token come from the ring (row p mod R); the ring is written by a second launch after every
// query has read it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/kernels/linear_common.cuh"
#include "memattn/linear/mom.hpp"
#include "memattn/linear/window_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct SlidingWindowParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  std::int64_t q_rs = 0, q_hs = 0, k_rs = 0, k_hs = 0, v_rs = 0, v_hs = 0, o_rs = 0, o_hs = 0;
  const std::int32_t* cu_seqlens = nullptr;
  const std::int32_t* seq_lens = nullptr;
  int t_pad = 0, rows = 0, num_seqs = 0, q_heads = 0, kv_heads = 0, group = 1, d = 0, dv = 0, window = 0;
  float scale = 0.f;
  int accumulate = 0;
  void* ring_k = nullptr;
  void* ring_v = nullptr;
  std::int64_t rk_s[3] = {}, rv_s[3] = {};  // slot, row, head strides
  int ring_len = 0, ring_slots = 0;
  const std::int32_t* ring_slot = nullptr;
  const std::int32_t* seq_pos = nullptr;
};

constexpr int kWindowThreads = 128;

namespace lin {

// Sequence n owning row `row` (binary search over cu_seqlens, or the dense form); -1 if none.
MEMATTN_DEVICE int seq_of_row(const std::int32_t* cu, const std::int32_t* lens, int t_pad, int num_seqs, int row,
                              int* t) {
  if (cu == nullptr) {
    const int n = row / t_pad;
    *t = row - n * t_pad;
    const int len = lens ? lens[n] : t_pad;
    return *t < len ? n : -1;
  }
  if (row >= cu[num_seqs]) return -1;
  int lo = 0, hi = num_seqs - 1;  // largest n with cu[n] <= row
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= row) lo = mid;
    else hi = mid - 1;
  }
  // Skip empty sequences that share the start row.
  while (lo + 1 <= num_seqs - 1 && cu[lo + 1] <= row) ++lo;
  *t = row - cu[lo];
  return lo;
}

}  // namespace lin

template <class T>
MEMATTN_KERNEL void __launch_bounds__(kWindowThreads) sliding_window_kernel(const SlidingWindowParams p) {
  using P2 = lin::Pair<T>;
  MEMATTN_SHARED(float, qs, [4][256]);
  MEMATTN_SHARED(float, ps, [4][linear::kMaxWindow + 1]);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t item = static_cast<std::int64_t>(blockIdx.x) * 4 + warp;
  if (item >= static_cast<std::int64_t>(p.rows) * p.q_heads) return;
  const int row = static_cast<int>(item / p.q_heads), hq = static_cast<int>(item % p.q_heads);
  int t = 0;
  const int n = lin::seq_of_row(p.cu_seqlens, p.seq_lens, p.t_pad, p.num_seqs, row, &t);
  if (n < 0) return;  // padding row
  const bool ring = p.ring_k != nullptr;
  const int slot = ring ? (p.ring_slot ? p.ring_slot[n] : n) : -1;
  if (ring && (slot < 0 || slot >= p.ring_slots)) return;
  const int pos0 = p.seq_pos ? p.seq_pos[n] : 0;
  const int pos = pos0 + t, lo = pos - p.window > 0 ? pos - p.window : 0, nk = pos - lo + 1;
  const int kh = hq / p.group, row0 = row - t;
  const std::uint16_t* qg = static_cast<const std::uint16_t*>(p.q);
  for (int x = lane; x < p.d; x += 32) qs[warp][x] = P2::one(qg[row * p.q_rs + hq * p.q_hs + x]);
  __syncwarp();
  auto kptr = [&](int u, bool value) -> const std::uint16_t* {
    if (u >= pos0) {
      const std::int64_t r = row0 + (u - pos0);
      return value ? static_cast<const std::uint16_t*>(p.v) + r * p.v_rs + kh * p.v_hs
                   : static_cast<const std::uint16_t*>(p.k) + r * p.k_rs + kh * p.k_hs;
    }
    const int rr = u % p.ring_len;
    return value ? static_cast<const std::uint16_t*>(p.ring_v) + slot * p.rv_s[0] + rr * p.rv_s[1] + kh * p.rv_s[2]
                 : static_cast<const std::uint16_t*>(p.ring_k) + slot * p.rk_s[0] + rr * p.rk_s[1] + kh * p.rk_s[2];
  };
  float mx = -INFINITY;
  for (int u = lane; u < nk; u += 32) {
    const std::uint16_t* kr = kptr(lo + u, false);
    float s = 0.f;
    for (int x = 0; x < p.d; x += 8) {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(kr + x));
      const std::uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = P2::unpack(ws[e]);
        s += qs[warp][x + 2 * e] * f.x + qs[warp][x + 2 * e + 1] * f.y;
      }
    }
    s *= p.scale;
    ps[warp][u] = s;
    mx = fmaxf(mx, s);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float l = 0.f;
  for (int u = lane; u < nk; u += 32) {
    const float w = expf(ps[warp][u] - mx);
    ps[warp][u] = w;
    l += w;
  }
  l = lin::warp_sum(l);
  __syncwarp();
  std::uint16_t* og = static_cast<std::uint16_t*>(p.o);
  for (int c0 = lane * 8; c0 < p.dv; c0 += 256) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int u = 0; u < nk; ++u) {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(kptr(lo + u, true) + c0));
      const std::uint32_t ws[4] = {w.x, w.y, w.z, w.w};
      const float pu = ps[warp][u];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = P2::unpack(ws[e]);
        acc[2 * e] += pu * f.x;
        acc[2 * e + 1] += pu * f.y;
      }
    }
    std::uint16_t* out = og + static_cast<std::int64_t>(row) * p.o_rs + hq * p.o_hs + c0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float a0 = acc[2 * e] / l, a1 = acc[2 * e + 1] / l;
      if (p.accumulate) {
        const float2 prev = P2::unpack(lin::ld32(out + 2 * e));
        a0 += prev.x;
        a1 += prev.y;
      }
      lin::st32(out + 2 * e, P2::pack(a0, a1));
    }
  }
}

// Stores the last min(len, R) tokens of each sequence in its ring (after sliding_window_kernel).
// One thread per 16-byte piece of (row, kv head) k and v.
template <class T>
MEMATTN_KERNEL void __launch_bounds__(256) ring_store_kernel(const SlidingWindowParams p) {
  const int kp = p.d / 8, vp = p.dv / 8, per_row = p.kv_heads * (kp + vp);
  const std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= static_cast<std::int64_t>(p.rows) * per_row) return;
  const int row = static_cast<int>(idx / per_row), rem = static_cast<int>(idx % per_row);
  int t = 0;
  const int n = lin::seq_of_row(p.cu_seqlens, p.seq_lens, p.t_pad, p.num_seqs, row, &t);
  if (n < 0) return;
  const int slot = p.ring_slot ? p.ring_slot[n] : n;
  if (slot < 0 || slot >= p.ring_slots) return;
  int len = 0, row0 = 0;
  lin::seq_rows(p.cu_seqlens, p.seq_lens, p.t_pad, n, &row0, &len);
  if (t < len - p.ring_len) return;
  const int rr = ((p.seq_pos ? p.seq_pos[n] : 0) + t) % p.ring_len;
  const int h = rem / (kp + vp), piece = rem % (kp + vp);
  if (piece < kp) {
    const uint4 x = __ldg(reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(p.k) + row * p.k_rs + h * p.k_hs + piece * 8));
    *reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.ring_k) + slot * p.rk_s[0] + rr * p.rk_s[1] + h * p.rk_s[2] + piece * 8) = x;
  } else {
    const int pc = piece - kp;
    const uint4 x = __ldg(reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(p.v) + row * p.v_rs + h * p.v_hs + pc * 8));
    *reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.ring_v) + slot * p.rv_s[0] + rr * p.rv_s[1] + h * p.rv_s[2] + pc * 8) = x;
  }
}

// ---- mixture of memories ------------------------------------------------------------------------

struct MomRouteParams {
  const float* logits = nullptr;
  std::int64_t logits_stride = 0;
  int rows = 0, M = 0, K = 0, num_seqs = 0, t_pad = 0;
  const std::int32_t* cu_seqlens = nullptr;
  const std::int32_t* seq_lens = nullptr;
  const std::int32_t* mem_slots = nullptr;
  std::int32_t* topk_idx = nullptr;
  float* topk_w = nullptr;
  std::int32_t* perm = nullptr;
  std::int32_t* pos = nullptr;
  std::int32_t* seg_cu = nullptr;
  std::int32_t* seg_slot = nullptr;
  std::uint32_t* keys_in = nullptr;   // [rows·K] sort keys m·N + n (M·N for unrouted rows)
  std::uint32_t* keys_out = nullptr;
  std::int32_t* vals_in = nullptr;    // [rows·K] t·K + r
  std::int32_t* vals_out = nullptr;
};

// Per token: top-k, weights, sort keys.
MEMATTN_KERNEL void __launch_bounds__(256) mom_topk_kernel(const MomRouteParams p) {
  const int t = static_cast<int>(blockIdx.x) * 256 + threadIdx.x;
  if (t >= p.rows) return;
  int tt = 0;
  const int n = lin::seq_of_row(p.cu_seqlens, p.seq_lens, p.t_pad, p.num_seqs, t, &tt);
  // mom_topk writes straight to the outputs (no per-thread arrays: nothing in local memory).
  if (n >= 0) linear::mom_topk(p.logits + t * p.logits_stride, p.M, p.K, p.topk_idx + t * p.K, p.topk_w + t * p.K);
  const std::uint32_t none = static_cast<std::uint32_t>(p.M) * p.num_seqs;
  for (int r = 0; r < p.K; ++r) {
    const int i = t * p.K + r;
    if (n < 0) {
      p.topk_idx[i] = -1;
      p.topk_w[i] = 0.f;
    }
    p.pos[i] = -1;
    p.keys_in[i] = n >= 0 ? static_cast<std::uint32_t>(p.topk_idx[i]) * p.num_seqs + n : none;
    p.vals_in[i] = i;
  }
}

// After the stable radix sort: perm, pos, seg_cu (lower bounds), seg_slot.
MEMATTN_KERNEL void __launch_bounds__(256) mom_scatter_kernel(const MomRouteParams p) {
  const int i = static_cast<int>(blockIdx.x) * 256 + threadIdx.x;
  const int total = p.rows * p.K, segs = p.M * p.num_seqs;
  if (i < total) {
    const std::uint32_t key = p.keys_out[i];
    if (key < static_cast<std::uint32_t>(segs)) {
      p.perm[i] = p.vals_out[i] / p.K;
      p.pos[p.vals_out[i]] = i;
    }
  }
  if (i <= segs) {
    int lo = 0, hi = total;  // first sorted index with key >= i
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (p.keys_out[mid] < static_cast<std::uint32_t>(i)) lo = mid + 1;
      else hi = mid;
    }
    p.seg_cu[i] = lo;
    if (i < segs) {
      const int m = i / p.num_seqs, n = i % p.num_seqs;
      p.seg_slot[i] = p.mem_slots ? p.mem_slots[n * p.M + m] : i;
    }
  }
}

struct GatherParams {
  const void* src = nullptr;
  void* dst = nullptr;
  std::int64_t s_rs = 0, s_hs = 0, d_rs = 0, d_hs = 0;
  int heads = 0, dim = 0, cap = 0, src_rows = 0;
  const std::int32_t* perm = nullptr;
  const std::int32_t* count = nullptr;
};

// dst[i] = src[perm[i]], one thread per 16-byte piece; i < *count (device) or cap.
MEMATTN_KERNEL void __launch_bounds__(256) gather_rows_kernel(const GatherParams p) {
  const int pieces = p.dim / 8, per_row = p.heads * pieces;
  const std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * 256 + threadIdx.x;
  const int i = static_cast<int>(idx / per_row);
  const int limit = p.count ? *p.count : p.cap;
  if (i >= p.cap || i >= limit) return;
  const int rem = static_cast<int>(idx % per_row), h = rem / pieces, pc = rem % pieces;
  const int s = p.perm[i];
  if (s < 0 || s >= p.src_rows) return;
  const uint4 x = __ldg(reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(p.src) + s * p.s_rs + h * p.s_hs + pc * 8));
  *reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.dst) + i * p.d_rs + h * p.d_hs + pc * 8) = x;
}

struct CombineParams {
  const void* routed = nullptr;
  const void* shared = nullptr;
  void* o = nullptr;
  std::int64_t r_rs = 0, r_hs = 0, s_rs = 0, s_hs = 0, o_rs = 0, o_hs = 0;
  int rows = 0, heads = 0, dv = 0, K = 0, routed_rows = 0;
  const float* w = nullptr;
  const std::int32_t* pos = nullptr;
};

// o[t] = Σ_r w[t,r]·routed[pos[t,r]] (+ shared[t]); one thread per output pair, fp32, no atomics.
template <class T>
MEMATTN_KERNEL void __launch_bounds__(256) mom_combine_kernel(const CombineParams p) {
  using P2 = lin::Pair<T>;
  const int pairs = p.dv / 2, per_row = p.heads * pairs;
  const std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= static_cast<std::int64_t>(p.rows) * per_row) return;
  const int t = static_cast<int>(idx / per_row), rem = static_cast<int>(idx % per_row);
  const int h = rem / pairs, c = 2 * (rem % pairs);
  bool any = false;
  for (int r = 0; r < p.K; ++r) any |= p.pos[t * p.K + r] >= 0;
  if (!any) return;
  float2 acc = make_float2(0.f, 0.f);
  if (p.shared) acc = P2::unpack(lin::ld32(static_cast<const std::uint16_t*>(p.shared) + t * p.s_rs + h * p.s_hs + c));
  for (int r = 0; r < p.K; ++r) {
    const int ps = p.pos[t * p.K + r];
    if (ps < 0 || ps >= p.routed_rows) continue;
    const float2 x = P2::unpack(lin::ld32(static_cast<const std::uint16_t*>(p.routed) + ps * p.r_rs + h * p.r_hs + c));
    const float wt = p.w[t * p.K + r];
    acc.x += wt * x.x;
    acc.y += wt * x.y;
  }
  lin::st32(static_cast<std::uint16_t*>(p.o) + t * p.o_rs + h * p.o_hs + c, P2::pack(acc.x, acc.y));
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
