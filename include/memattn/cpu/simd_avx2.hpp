// Small AVX2 pieces shared by the CPU decode kernels (kivi_block_decode.hpp and
// dense_block_decode.hpp): the horizontal sums, the row-count dispatcher that makes accumulator
// counts template constants, and the P·V accumulation loop over one slice of channels. Compiles
// to nothing without AVX2 + FMA (MEMATTN_SIMD_AVX2 undefined); the kernels then report themselves
// unavailable.
#pragma once

#include <cstdint>
#include <type_traits>

#include "memattn/core/config.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MEMATTN_SIMD_AVX2 1
// Full unrolling of the small constant loops keeps the accumulators in registers.
#if defined(__clang__)
#define MEMATTN_SIMD_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define MEMATTN_SIMD_UNROLL _Pragma("GCC unroll 16")
#else
#define MEMATTN_SIMD_UNROLL
#endif
#endif

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace simd {

#if defined(MEMATTN_SIMD_AVX2)

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 8 horizontal sums of v[0..7] as one vector (lane i = sum of v[i]): 6 hadds instead of 8 hsums.
inline __m256 hsum8(const __m256 v[8]) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  // a = [v0 v1 v2 v3 (channels 0-3) | v0 v1 v2 v3 (channels 4-7)], b likewise for v4..v7
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// Calls f(std::integral_constant<int, N>) for N = nr, 1 .. 4 query rows (more: 4).
template <class F>
inline void with_rows(int nr, F&& f) {
  switch (nr) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

// acc[r * ldacc + c0 + 8 g + i] += sum_{t < n} P[r * ldp + t] load(t, g)[i] + add[r] for rows r < NR
// and CG channel vectors g: per token NR broadcasts and CG loaded vectors feed CG NR FMA chains.
template <int NR, int CG, class Load>
inline void accumulate_pv(int n, const float* P, std::int64_t ldp, Load&& load, const float* add, float* acc,
                          std::int64_t ldacc, int c0) {
  __m256 a[CG][NR];
  MEMATTN_SIMD_UNROLL
  for (int g = 0; g < CG; ++g)
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) a[g][r] = _mm256_setzero_ps();
  for (int t = 0; t < n; ++t) {
    __m256 p[NR];
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) p[r] = _mm256_broadcast_ss(P + r * ldp + t);
    MEMATTN_SIMD_UNROLL
    for (int g = 0; g < CG; ++g) {
      const __m256 x = load(t, g);
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) a[g][r] = _mm256_fmadd_ps(p[r], x, a[g][r]);
    }
  }
  for (int g = 0; g < CG; ++g)
    for (int r = 0; r < NR; ++r) {
      float* dst = acc + r * ldacc + c0 + 8 * g;
      const __m256 sum = add ? _mm256_add_ps(a[g][r], _mm256_set1_ps(add[r])) : a[g][r];
      _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), sum));
    }
}

#endif

}  // namespace simd
}  // namespace cpu
MEMATTN_NAMESPACE_END
