// Bulk dtype conversion on the CPU (rows of a strided tensor into dense fp32 scratch and back).
// Bit-identical to the element conversions in core/dtype.hpp; fp16 uses F16C when the build
// enables it, else SSE2 (tests/cpu/test_core_dtype.cpp checks every encoding).
#pragma once

#include <cstdint>

#include "memattn/core/dtype.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline void to_float_n(const float* src, std::int64_t n, float* dst) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

inline void to_float_n(const BFloat16* src, std::int64_t n, float* dst) {
  // Plain integer shifts: the compiler vectorises this loop.
  const std::uint16_t* s = reinterpret_cast<const std::uint16_t*>(src);
  for (std::int64_t i = 0; i < n; ++i) dst[i] = bits_to_float(static_cast<std::uint32_t>(s[i]) << 16);
}

inline void to_float_n(const Half* src, std::int64_t n, float* dst) {
  std::int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#elif defined(__SSE2__)
  // Baseline x86-64: shift the exponent/mantissa into place and rescale by 2^112 (this also
  // normalises fp16 subnormals); Inf/NaN get the all-ones exponent. Bit-identical to half_to_float.
  const __m128i mag_mask = _mm_set1_epi32(0x7fff), sign_mask = _mm_set1_epi32(0x8000);
  const __m128i inf_bits = _mm_set1_epi32(0x7c00 << 13), special_min = _mm_set1_epi32((0x7c00 << 13) - 1);
  const __m128i exp_all = _mm_set1_epi32(0x7f800000), quiet = _mm_set1_epi32(0x400000);
  const __m128 rescale = _mm_set1_ps(0x1p112f);
  const __m128i zero = _mm_setzero_si128();
  for (; i + 4 <= n; i += 4) {
    const __m128i h = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)), zero);
    const __m128i sign = _mm_slli_epi32(_mm_and_si128(h, sign_mask), 16);
    const __m128i em = _mm_slli_epi32(_mm_and_si128(h, mag_mask), 13);
    const __m128i scaled = _mm_castps_si128(_mm_mul_ps(_mm_castsi128_ps(em), rescale));
    const __m128i special = _mm_cmpgt_epi32(em, special_min);
    const __m128i nan_quiet = _mm_and_si128(_mm_cmpgt_epi32(em, inf_bits), quiet);
    const __m128i special_bits = _mm_or_si128(_mm_or_si128(em, exp_all), nan_quiet);
    const __m128i mag = _mm_or_si128(_mm_and_si128(special, special_bits), _mm_andnot_si128(special, scaled));
    _mm_storeu_ps(dst + i, _mm_castsi128_ps(_mm_or_si128(mag, sign)));
  }
#endif
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

// fp32 -> fp16, round to nearest even, bit-identical to float_to_half: F16C (whose NaN rule is
// the one float_to_half copies), else the same branch-free in SSE2 integer lanes.
inline void from_float_n(const float* src, std::int64_t n, Half* dst) {
  std::int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__SSE2__)
  auto four = [](const float* s) {  // 4 results in the low 16 bits of 32-bit lanes
    const __m128i x = _mm_castps_si128(_mm_loadu_ps(s));
    const __m128i sign = _mm_and_si128(_mm_srli_epi32(x, 16), _mm_set1_epi32(0x8000));
    const __m128i a = _mm_and_si128(x, _mm_set1_epi32(0x7fffffff));  // signed compares are safe
    const __m128i odd = _mm_and_si128(_mm_srli_epi32(a, 13), _mm_set1_epi32(1));
    const __m128i normal = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(a, _mm_set1_epi32(static_cast<int>(0xc8000fffu))), odd), 13);
    const __m128 r = _mm_add_ps(_mm_castsi128_ps(a), _mm_set1_ps(0.5f));  // subnormal: units of 2^-24, FPU rounds
    const __m128i sub = _mm_sub_epi32(_mm_castps_si128(r), _mm_set1_epi32(0x3f000000));
    const __m128i is_sub = _mm_cmplt_epi32(a, _mm_set1_epi32(0x38800000));
    const __m128i is_big = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x477fefff));  // Inf after rounding, Inf, NaN
    const __m128i is_nan = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x7f800000));
    const __m128i nan = _mm_and_si128(is_nan, _mm_or_si128(_mm_set1_epi32(0x200), _mm_and_si128(_mm_srli_epi32(a, 13), _mm_set1_epi32(0x3ff))));
    __m128i out = _mm_or_si128(_mm_and_si128(is_sub, sub), _mm_andnot_si128(is_sub, normal));
    out = _mm_or_si128(_mm_and_si128(is_big, _mm_or_si128(_mm_set1_epi32(0x7c00), nan)), _mm_andnot_si128(is_big, out));
    out = _mm_or_si128(out, sign);
    return _mm_srai_epi32(_mm_slli_epi32(out, 16), 16);  // sign-extended: packs keeps the 16 bits
  };
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_packs_epi32(four(src + i), four(src + i + 4)));
#endif
  for (; i < n; ++i) dst[i] = float_to_half(src[i]);
}

template <class T>
void from_float_n(const float* src, std::int64_t n, T* dst) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = from_float<T>(src[i]);
}

// n rows of `cols` elements, `row_stride` apart in the source, into dense row-major fp32.
template <class T>
void load_rows(const T* src, std::int64_t row_stride, std::int64_t n, std::int64_t cols, float* dst) {
  for (std::int64_t r = 0; r < n; ++r) to_float_n(src + r * row_stride, cols, dst + r * cols);
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
