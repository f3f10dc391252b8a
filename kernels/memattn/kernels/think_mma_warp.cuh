// The warp-level pieces the two tensor-core decodes share (think_decode_mma.cuh: path 3 over the
// KIVI region; think_decode_mma16.cuh: path 4 over the fp16 regions): the CTA shape, the
// mma.m16n8k16 call, fp16-pair bit helpers (exact hi / lo splits), power-of-two prescales, a
// warp's cp.async copy and pipeline, the base-2 online softmax of a quad's head, and the end of a
// split (the warps' states through shared memory, merged into the split's partial).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/kernels/dense_decode.cuh"
#include "memattn/kernels/think_decode.cuh"
#include "memattn/kernels/think_decode_lanes.cuh"
#include "memattn/kernels/think_mma_layout.hpp"
#include "memattn/kernels/warp_reduce.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace think_mma {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

MEMATTN_DEVICE void mma16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
#if defined(MEMATTN_SIMT_EMULATION)
  memattn_emu::mma16816<false>(c, a, b0, b1);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
MEMATTN_DEVICE __half2 as_h2(std::uint32_t x) { return *reinterpret_cast<const __half2*>(&x); }
MEMATTN_DEVICE std::uint32_t bits_of(__half2 h) { return *reinterpret_cast<const std::uint32_t*>(&h); }
// fp16 pairs x a + b, rounded once (HFMA2)
MEMATTN_DEVICE std::uint32_t hfma2_bits(std::uint32_t x, std::uint32_t a, std::uint32_t b) {
#if defined(MEMATTN_SIMT_EMULATION)
  const float2 fx = __half22float2(as_h2(x)), fa = __half22float2(as_h2(a)), fb = __half22float2(as_h2(b));
  return bits_of(__floats2half2_rn(fmaf(fx.x, fa.x, fb.x), fmaf(fx.y, fa.y, fb.y)));
#else
  return bits_of(__hfma2(as_h2(x), as_h2(a), as_h2(b)));
#endif
}
// fp16 pairs x a - b, rounded once
MEMATTN_DEVICE std::uint32_t hfms2_bits(std::uint32_t x, std::uint32_t a, std::uint32_t b) {
#if defined(MEMATTN_SIMT_EMULATION)
  const float2 fx = __half22float2(as_h2(x)), fa = __half22float2(as_h2(a)), fb = __half22float2(as_h2(b));
  return bits_of(__floats2half2_rn(fmaf(fx.x, fa.x, -fb.x), fmaf(fx.y, fa.y, -fb.y)));
#else
  return bits_of(__hfma2(as_h2(x), as_h2(a), __hneg2(as_h2(b))));
#endif
}
MEMATTN_DEVICE std::uint32_t hmul2_bits(std::uint32_t x, std::uint32_t a) { return bits_of(__hmul2(as_h2(x), as_h2(a))); }
// (hi, lo) fp16 pairs of x s for x = x_hi + x_lo (hi / lo pairs) and fp16 s: hi = rn(x_hi s), lo =
// the exact rounding error of that product (an FMA's, representable in fp16) + x_lo s; ~2^-22.
MEMATTN_DEVICE void mul_split2(std::uint32_t x_hi, std::uint32_t x_lo, std::uint32_t s, std::uint32_t* hi, std::uint32_t* lo) {
  *hi = hmul2_bits(x_hi, s);
  *lo = hfma2_bits(x_lo, s, hfms2_bits(x_hi, s, *hi));
}
// x0, x1 -> fp16 pairs hi = rn(x), lo = rn(x - hi)
MEMATTN_DEVICE void split2(float x0, float x1, std::uint32_t* hi, std::uint32_t* lo) {
  const __half2 h = __floats2half2_rn(x0, x1);
  const float2 f = __half22float2(h);
  *hi = bits_of(h);
  *lo = bits_of(__floats2half2_rn(x0 - f.x, x1 - f.y));
}
// 2^(kTarget - floor(log2 m)) (and its inverse) for m >= 0: scales m into [2^kTarget, 2^(kTarget+1)),
// with floor(log2 m) clamped to [kMinLog2, kMaxLog2] (tiny m, zero; NaN and inf stay what they
// are after scaling) so that both are normal floats.
template <int kTarget, int kMinLog2 = kTarget - 126>
MEMATTN_DEVICE void pow2_scale(float m, float* scale, float* inv) {
  constexpr int kMaxLog2 = kTarget + 126 < 127 ? kTarget + 126 : 127;
  static_assert(kMinLog2 >= kTarget - 126 && kMinLog2 <= kMaxLog2, "scale and inverse must be normal floats");
  int e = static_cast<int>((__float_as_uint(m) >> 23) & 0xFFu) - 127;  // m in [2^e, 2^(e + 1))
  e = e < kMinLog2 ? kMinLog2 : (e > kMaxLog2 ? kMaxLog2 : e);
  *scale = __uint_as_float(static_cast<std::uint32_t>(kTarget - e + 127) << 23);
  *inv = __uint_as_float(static_cast<std::uint32_t>(e - kTarget + 127) << 23);
}
// A warp's cp.async of `bytes` (a multiple of N) in N-byte pieces: fully unrolled and predicated
// when at most kMaxBytes, else a plain loop (no unrolled remainder code in the tile loop).
template <int N, int kMaxBytes = 0>
MEMATTN_DEVICE void warp_copy(unsigned char* dst, const unsigned char* src, int bytes, int lane) {
  auto piece = [&](int off) {
    if (N == 16) detail::cp_async_16(dst + off, src + off);
    else think_lanes::cp_async_ca<N>(dst + off, src + off);
  };
  if (kMaxBytes > 0) {
#pragma unroll
    for (int i = 0; i < (kMaxBytes + 32 * N - 1) / (32 * N); ++i)
      if ((i * 32 + lane) * N < bytes) piece((i * 32 + lane) * N);
  } else {
#pragma unroll 1
    for (int off = lane * N; off < bytes; off += 32 * N) piece(off);
  }
}

// A warp's cp.async pipeline over its items (tiles), kS stages deep, no CTA barrier:
// warp_pipeline_prime issues the first kS - 1 items; warp_pipeline_next, at the top of item i,
// issues item i + kS - 1 into the stage item i - 1 used (every lane is done with it) and waits
// until item i's stage is in place for the whole warp.
template <int kS, class Issue>
MEMATTN_DEVICE void warp_pipeline_prime(int items, Issue&& issue) {
#pragma unroll
  for (int i = 0; i < kS - 1; ++i) {
    if (i < items) issue(i);
    detail::cp_async_commit();
  }
}
template <int kS, class Issue>
MEMATTN_DEVICE void warp_pipeline_next(int item, int items, Issue&& issue) {
  __syncwarp();
  if (item + kS - 1 < items) issue(item + kS - 1);
  detail::cp_async_commit();
  detail::cp_async_wait<kS - 1>();
  __syncwarp();
}

// One tile's online-softmax step of a warp (head gi's keys in the quad, base 2): the running max
// m moves with a lazy rescale of l and of the accumulators (rescale(alpha), alpha = head gi's
// factor; a warp vote), and pk gets 2^(lg - m) (0 for a masked key, lg = -inf), summed into l.
template <int kN, class Rescale>
MEMATTN_DEVICE void online_softmax_step(const float (&lg)[kN][2], float& m, float& l, Rescale&& rescale, float (&pk)[kN][2]) {
  float tmax = -INFINITY;
#pragma unroll
  for (int n = 0; n < kN; ++n) tmax = fmaxf(tmax, fmaxf(lg[n][0], lg[n][1]));
  const float m_new = fmaxf(m, quad_max(tmax));
  if (__any_sync(0xFFFFFFFFu, m_new > m)) {
    const float alpha = m_new > m ? detail::fast_exp2(m - m_new) : 1.f;  // 0 when m = -inf
    l *= alpha;
    rescale(alpha);
    m = m_new;
  }
  const float m_use = m == -INFINITY ? 0.f : m;
#pragma unroll
  for (int n = 0; n < kN; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      pk[n][e] = detail::fast_exp2(lg[n][e] - m_use);
      l += pk[n][e];
    }
}
// The same with kNT accumulator n-tiles o whose rows are head gi (hi and lo rows).
template <int kN, int kNT>
MEMATTN_DEVICE void online_softmax_tile(const float (&lg)[kN][2], float& m, float& l, float (&o)[kNT][4], float (&pk)[kN][2]) {
  online_softmax_step(lg, m, l, [&](float alpha) {
#pragma unroll
    for (int n = 0; n < kNT; ++n) o[n][0] *= alpha, o[n][1] *= alpha, o[n][2] *= alpha, o[n][3] *= alpha;
  }, pk);
}

// A warp's state at the end of its split, for merge_warp_states (after a __syncthreads that frees
// the stages): sm_acc = smem [warp][8 heads][D] floats, then sm_ml [warp][8][2] (m, quad sum of l
// of head gi); stash_warp_ml writes the latter and returns the warp's sm_acc rows.
// stash_warp_state: accumulators whose rows are head gi (hi rows + lo rows, times out_scale) at
// channel(n, column).
template <int D>
MEMATTN_DEVICE float* stash_warp_ml(unsigned char* smem, int warp, int lane, float m, float l) {
  const int gi = row_group(lane);
  l = quad_sum(l);
  float* sm_acc = reinterpret_cast<float*>(smem);
  float* sm_ml = sm_acc + kWarps * kThinKMaxGroup * D;
  if (quad(lane) == 0) {
    sm_ml[(warp * kThinKMaxGroup + gi) * 2] = m;
    sm_ml[(warp * kThinKMaxGroup + gi) * 2 + 1] = l;
  }
  return sm_acc + warp * kThinKMaxGroup * D;
}
template <int D, int kNT, class Channel>
MEMATTN_DEVICE void stash_warp_state(unsigned char* smem, int warp, int lane, const float (&o)[kNT][4], float m, float l,
                                     float out_scale, Channel channel) {
  const int gi = row_group(lane), t4 = quad(lane);
  float* const acc = stash_warp_ml<D>(smem, warp, lane, m, l);
#pragma unroll
  for (int n = 0; n < kNT; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) acc[gi * D + channel(n, 2 * t4 + e)] = (o[n][e] + o[n][e + 2]) * out_scale;
}

// End of a split: merges the kWarps warps' states of the CTA's G heads (stash_warp_state's, after
// a __syncthreads) in a fixed order, into the split partial at slot slot_id (m in natural log;
// -inf for an empty split, which the combine ignores) or, when `final` (the only split), into o
// and lse. NaN is never laundered: a warp whose logits were all NaN keeps m = -inf (the running
// max drops NaN) but l = NaN, and that makes the head's whole partial NaN (m included, so that the
// combine keeps it). streams = 2: each warp kept two states of head r, in rows r and r + 4
// (path 3's paired tiles, G <= 4), merged alike.
template <int D>
MEMATTN_DEVICE void merge_warp_states(const unsigned char* smem, const ThinKDecodeParams& p, const ThinKSplit& sp,
                                      long long s, long long slot_id, bool final, int streams = 1) {
  const float* sm_acc = reinterpret_cast<const float*>(smem);
  const float* sm_ml = sm_acc + kWarps * kThinKMaxGroup * D;
  const int G = p.q_heads / p.kv_heads;
  const long long row0 = (s / p.kv_heads) * p.q_heads + (s % p.kv_heads) * G;  // [B][Hq] row of head 0
  for (int i = static_cast<int>(threadIdx.x); i < G * D; i += kThreads) {
    const int r = i / D, ch = i % D;
    float mx = -INFINITY;
    bool poisoned = false;
    for (int k = 0; k < kWarps * streams; ++k) {
      const int row = (k / streams) * kThinKMaxGroup + r + (k % streams) * (kThinKMaxGroup / 2);
      const float lw = sm_ml[row * 2 + 1];
      mx = fmaxf(mx, sm_ml[row * 2]);
      poisoned = poisoned || lw != lw;
    }
    float acc = 0.f, lsum = 0.f;
    if (poisoned) {
      mx = acc = lsum = __int_as_float(0x7FC00000);
    } else if (mx != -INFINITY) {
      for (int k = 0; k < kWarps * streams; ++k) {
        const int row = (k / streams) * kThinKMaxGroup + r + (k % streams) * (kThinKMaxGroup / 2);
        const float mw = sm_ml[row * 2];
        if (mw == -INFINITY) continue;
        const float wt = detail::fast_exp2(mw - mx);
        acc = fmaf(wt, sm_acc[row * D + ch], acc);
        lsum = fmaf(wt, sm_ml[row * 2 + 1], lsum);
      }
    }
    if (final) {
      const bool some = detail::keys_or_poison(lsum);
      p.o[(row0 + r) * D + ch] = some ? acc / lsum : 0.f;
      if (p.lse != nullptr && ch == 0) p.lse[row0 + r] = some ? (mx + log2f(lsum)) * detail::kLn2 : -INFINITY;
      continue;
    }
    sp.acc[(slot_id * G + r) * D + ch] = acc;
    if (ch == 0) {
      sp.ml[(slot_id * G + r) * 2] = mx * detail::kLn2;  // -inf: an empty split, ignored by the combine
      sp.ml[(slot_id * G + r) * 2 + 1] = lsum;
    }
  }
}

}  // namespace think_mma
}  // namespace kernels
MEMATTN_NAMESPACE_END
