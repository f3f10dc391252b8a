// Bulk dtype conversion on the CPU (rows of a strided tensor into dense fp32 scratch and back).
// The element conversions are the ones in core/dtype.hpp; F16C is used for fp16 when the build
// enables it (bit-identical: both round to nearest even).
#pragma once

#include <cstdint>

#include "memattn/core/dtype.hpp"

#if defined(__F16C__)
#include <immintrin.h>
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
#endif
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
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
