// Decode-sized Q·Kᵀ and P·V over one key block of a dense fp16 / bf16 / fp32 KV head, read
// straight from the cache rows (AVX2 + FMA; F16C for fp16). The portable path of
// dense_attention.hpp converts each block of K and V to fp32 scratch (load_rows), then runs an
// Eigen lazy product for Q·Kᵀ and a packed GEMM for P·V: three extra passes over the block and a
// horizontal sum per (row, key). Here each K/V vector is converted in a register and used by
// every query row of the GQA group (4 rows at a time), and the per-(row, key) sums of two keys x
// four rows are reduced together. Same values in fp32 as the portable path, in a different
// summation order (tests bound both against fp64).
//
// Used for up to kMaxRows rows (one decode token's GQA group, or a few tokens of it) by
// cpu::detail::attend_rows (dense decode, when available<T>(D)), the composed cache's fp16
// regions, the KIVI cache's ring and the eviction decode probabilities; prefill-sized row counts
// keep their Eigen paths.
#pragma once

#include <cstdint>
#include <type_traits>

#include "memattn/core/dtype.hpp"
#include "memattn/cpu/simd_avx2.hpp"

#if defined(MEMATTN_SIMD_AVX2)
#define MEMATTN_DENSE_FUSED_AVX2 1
#endif

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace dense_block {

constexpr int kMaxRows = 16;    // query rows per call (processed 4 at a time)
constexpr int kValueTile = 32;  // value rows per pass of values()

// True when this build has the vector path for element type T (scores() of any width).
template <class T>
constexpr bool supported() {
#if defined(MEMATTN_DENSE_FUSED_AVX2) && defined(__F16C__)
  return std::is_same<T, float>::value || std::is_same<T, BFloat16>::value || std::is_same<T, Half>::value;
#elif defined(MEMATTN_DENSE_FUSED_AVX2)
  return std::is_same<T, float>::value || std::is_same<T, BFloat16>::value;
#else
  return false;
#endif
}

// ... and for both scores() and values() at head_dim D (values() takes whole 8-lane vectors).
template <class T>
constexpr bool available(std::int64_t D) {
  return supported<T>() && D % 8 == 0 && D > 0;
}

#if defined(MEMATTN_DENSE_FUSED_AVX2)
namespace detail {

constexpr int kAhead = 16;  // keys ahead that scores_rows() prefetches (16-bit rows)

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const BFloat16* p) {  // bf16 = the high half of fp32
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
#if defined(__F16C__)
inline __m256 load8(const Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#endif

// The first m < 8 elements, zeros after (a row's last partial vector: no read past it).
template <class T>
inline __m256 load_part(const T* p, int m) {
  T tmp[8];
  for (int i = 0; i < 8; ++i) tmp[i] = i < m ? p[i] : T{};
  return load8(tmp);
}

using simd::hsum;
using simd::hsum8;
using simd::with_rows;

// Rows 0 .. NR - 1: S[r * lds + t] = Q_r . k_t, two keys at a time (2 NR independent FMA chains).
template <class T, int NR>
inline void scores_rows(const T* k, std::int64_t ks, int n, int D, const float* Q, std::int64_t ldq, float* S,
                        std::int64_t lds) {
  const int Df = D / 8 * 8;  // channels in whole vectors
  int t = 0;
  for (; t + 1 < n; t += 2) {
    __m256 a[2 * NR];
    MEMATTN_SIMD_UNROLL
    for (int i = 0; i < 2 * NR; ++i) a[i] = _mm256_setzero_ps();
    const T *k0 = k + t * ks, *k1 = k0 + ks;
    // Keys kAhead rows ahead, 16-bit rows only: fp16 at 16K tokens 8.4-9.2 -> 7.6-8.0 ms, while
    // fp32 rows (twice the bytes per FMA) were 0-10% slower with it (the hardware prefetch suffices).
    if (sizeof(T) == 2 && t + kAhead + 1 < n) {
      const char* a0 = reinterpret_cast<const char*>(k0 + kAhead * ks);
      const char* a1 = reinterpret_cast<const char*>(k1 + kAhead * ks);
      for (int b = 0; b < D * static_cast<int>(sizeof(T)); b += 64) {
        _mm_prefetch(a0 + b, _MM_HINT_T0);
        _mm_prefetch(a1 + b, _MM_HINT_T0);
      }
    }
    auto step = [&](int c, __m256 x0, __m256 x1) {
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) {
        const __m256 q = _mm256_loadu_ps(Q + r * ldq + c);
        a[2 * r] = _mm256_fmadd_ps(q, x0, a[2 * r]);
        a[2 * r + 1] = _mm256_fmadd_ps(q, x1, a[2 * r + 1]);
      }
    };
    int c = 0;
    for (; c < Df; c += 8) step(c, load8(k0 + c), load8(k1 + c));
    if (c < D) step(c, load_part(k0 + c, D - c), load_part(k1 + c, D - c));  // a width not a multiple of 8
    if constexpr (NR == 4) {  // lane 2r + u = row r, key t + u
      alignas(32) float s[8];
      _mm256_store_ps(s, hsum8(a));
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) {
        S[r * lds + t] = s[2 * r];
        S[r * lds + t + 1] = s[2 * r + 1];
      }
    } else {
      for (int r = 0; r < NR; ++r) {
        S[r * lds + t] = hsum(a[2 * r]);
        S[r * lds + t + 1] = hsum(a[2 * r + 1]);
      }
    }
  }
  if (t < n) {  // an odd last key
    __m256 a[NR];
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) a[r] = _mm256_setzero_ps();
    const T* k0 = k + t * ks;
    for (int c = 0; c < D; c += 8) {
      const __m256 x0 = c < Df ? load8(k0 + c) : load_part(k0 + c, D - c);
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(Q + r * ldq + c), x0, a[r]);
    }
    for (int r = 0; r < NR; ++r) S[r * lds + t] = hsum(a[r]);
  }
}

// Rows 0 .. NR - 1 of acc += P V over channels [c0, c0 + 8 CG): per key NR broadcasts of its
// probabilities, CG converted value vectors, CG NR FMAs.
template <class T, int NR, int CG>
inline void values_rows(const T* v, std::int64_t vs, int n, int c0, const float* P, std::int64_t ldp, float* acc,
                        std::int64_t ldacc) {
  simd::accumulate_pv<NR, CG>(
      n, P, ldp, [&](int t, int g) { return load8(v + t * vs + c0 + 8 * g); }, nullptr, acc, ldacc, c0);
}

}  // namespace detail
#endif

// S[r * lds + t] = Q[r * ldq ..] . k[t * ks ..] for t < n, r < rows <= kMaxRows, over D channels,
// any D >= 1 (ThinK's pruned keys: 77 of 128). Q rows are read for D rounded up to 8 columns:
// those past D meet zero keys and must be finite. Requires supported<T>().
template <class T>
inline void scores(const T* k, std::int64_t ks, int n, int D, const float* Q, int rows, std::int64_t ldq, float* S,
                   std::int64_t lds) {
#if defined(MEMATTN_DENSE_FUSED_AVX2)
  for (int r0 = 0; r0 < rows; r0 += 4) {
    const int nr = rows - r0 < 4 ? rows - r0 : 4;
    detail::with_rows(nr, [&](auto R) { detail::scores_rows<T, R>(k, ks, n, D, Q + r0 * ldq, ldq, S + r0 * lds, lds); });
  }
#else
  (void)k, (void)ks, (void)n, (void)D, (void)Q, (void)rows, (void)ldq, (void)S, (void)lds;
#endif
}

// acc[r * ldacc + c] += sum_{t < n} P[r * ldp + t] v[t * vs + c] for r < rows <= kMaxRows, c < D.
// Requires available<T>(D).
template <class T>
inline void values(const T* v, std::int64_t vs, int n, int D, const float* P, int rows, std::int64_t ldp, float* acc,
                   std::int64_t ldacc) {
#if defined(MEMATTN_DENSE_FUSED_AVX2)
  // Each pass over a channel slice touches one cache line per row: kValueTile rows at a time stay
  // in L1 across the slices (a whole 128-row block of fp32 rows, 64 KiB at D = 128, does not, and
  // the strided passes then reread it from L2 or memory: fp32 at 16K tokens was 10% slower).
  for (int t0 = 0; t0 < n; t0 += kValueTile) {
    const int nt = n - t0 < kValueTile ? n - t0 : kValueTile;
    const T* vt = v + t0 * vs;
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const int nr = rows - r0 < 4 ? rows - r0 : 4;
      detail::with_rows(nr, [&](auto R) {
        const float* p = P + r0 * ldp + t0;
        float* a = acc + r0 * ldacc;
        int c0 = 0;
        for (; c0 + 16 <= D; c0 += 16) detail::values_rows<T, R, 2>(vt, vs, nt, c0, p, ldp, a, ldacc);
        if (c0 < D) detail::values_rows<T, R, 1>(vt, vs, nt, c0, p, ldp, a, ldacc);
      });
    }
  }
#else
  (void)v, (void)vs, (void)n, (void)D, (void)P, (void)rows, (void)ldp, (void)acc, (void)ldacc;
#endif
}

}  // namespace dense_block
}  // namespace cpu
MEMATTN_NAMESPACE_END
