// Bulk quantisation on the CPU, bit-identical to the scalar fp64 quantiser the GPU shares
// (quant/qmath.hpp), with AVX2 lanes instead of one element at a time: ranges from fp32 min / max
// (fp16 values are exact in fp32), metadata from the shared quant::range_params, and each code
// from quant::encode's IEEE fp64 steps: an exact difference, a correctly rounded division (4
// lanes per instruction), round-half-even by the rounding instruction (= rint_half_even for every
// |u| < 2^52) and the clamp. Codes are produced one byte each in stream order, then packed 8 at a
// time into the LSB-first bit stream (pack_stream), or through 8 x 8 byte transposes for KIVI's
// channel-major value section (pack_transposed).
//
// The stream packing (pack_stream / unpack_stream, 2/4/8-bit codes) is plain integer code for every
// build; the quantising pieces exist when MEMATTN_QUANT_AVX2 is defined (AVX2 + FMA + F16C
// builds). Codec, the interface the storage classes take (quant::ScalarCodec's), uses them there
// and the scalar functions elsewhere. tests/cpu/test_kivi_quantize.cpp compares both with the
// scalar code.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "memattn/cpu/simd_avx2.hpp"
#include "memattn/quant/qmath.hpp"

#if defined(MEMATTN_SIMD_AVX2) && defined(__F16C__)
#define MEMATTN_QUANT_AVX2 1
#endif

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace quant_codes {

// ---- Code streams <-> one byte per code (plain integer code, every build) ----
namespace detail {

// 8 B-bit codes, one per byte, as the 8 B bits of the LSB-first stream.
template <int B>
inline std::uint64_t squeeze(std::uint64_t x) {
  if (B == 4) {
    x = (x | x >> 4) & 0x00FF00FF00FF00FFull;
    x = (x | x >> 8) & 0x0000FFFF0000FFFFull;
    x = (x | x >> 16) & 0xFFFFFFFFull;
  } else if (B == 2) {
    x = (x | x >> 6) & 0x000F000F000F000Full;
    x = (x | x >> 12) & 0x000000FF000000FFull;
    x = (x | x >> 24) & 0xFFFFull;
  }
  return x;
}

// Stores the 8 codes of elements e .. e + 7 (e a multiple of 8) of a bit stream.
template <int B>
inline void store8(std::uint8_t* section, std::int64_t e, std::uint64_t code_bytes8) {
  const std::uint64_t bits = squeeze<B>(code_bytes8);
  std::memcpy(section + e * B / 8, &bits, B);  // B bytes = 8 codes (little-endian)
}

// The inverse: 8 B bits of the stream -> one code per byte.
template <int B>
inline std::uint64_t spread(std::uint64_t x) {
  if (B == 4) {
    x = (x | x << 16) & 0x0000FFFF0000FFFFull;
    x = (x | x << 8) & 0x00FF00FF00FF00FFull;
    x = (x | x << 4) & 0x0F0F0F0F0F0F0F0Full;
  } else if (B == 2) {
    x = (x | x << 24) & 0x000000FF000000FFull;
    x = (x | x << 12) & 0x000F000F000F000Full;
    x = (x | x << 6) & 0x0303030303030303ull;
  }
  return x;
}

}  // namespace detail

// The n codes of bytes[] as elements 0 .. n - 1 of the bit stream at `section`. Whole bytes are
// written; a tail of n B % 8 bits is written with zero bits after it, as the scalar packer leaves
// a zeroed stream. Bytes past ceil(n B / 8) are untouched.
template <int B>
inline void pack_stream(const std::uint8_t* bytes, std::int64_t n, std::uint8_t* section) {
  std::int64_t e = 0;
  for (; e + 8 <= n; e += 8) {
    std::uint64_t b;
    std::memcpy(&b, bytes + e, 8);
    detail::store8<B>(section, e, b);
  }
  if (e < n) {
    std::uint64_t b = 0;
    std::memcpy(&b, bytes + e, static_cast<std::size_t>(n - e));
    const std::uint64_t bits = detail::squeeze<B>(b);
    std::memcpy(section + e * B / 8, &bits, static_cast<std::size_t>(((n - e) * B + 7) / 8));
  }
}

// Elements 0 .. n - 1 of the B-bit stream at `section` as one code per byte (reads the
// ceil(n B / 8) bytes that hold them).
template <int B>
inline void unpack_stream(const std::uint8_t* section, std::int64_t n, std::uint8_t* bytes) {
  std::int64_t e = 0;
  for (; e + 8 <= n; e += 8) {
    std::uint64_t bits = 0;
    std::memcpy(&bits, section + e * B / 8, B);
    const std::uint64_t b = detail::spread<B>(bits);
    std::memcpy(bytes + e, &b, 8);
  }
  if (e < n) {
    std::uint64_t bits = 0;
    std::memcpy(&bits, section + e * B / 8, static_cast<std::size_t>(((n - e) * B + 7) / 8));
    const std::uint64_t b = detail::spread<B>(bits);
    std::memcpy(bytes + e, &b, static_cast<std::size_t>(n - e));
  }
}

// f(std::integral_constant<int, B>{}) for bits = 2, 4 or 8.
template <class F>
inline auto with_bits(int bits, F&& f) {
  switch (bits) {
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

// n codes of bytes[] packed at `section` with a run-time bit width.
inline void pack_stream(const std::uint8_t* bytes, std::int64_t n, int bits, std::uint8_t* section) {
  with_bits(bits, [&](auto b) { pack_stream<decltype(b)::value>(bytes, n, section); });
}
// The same with a run-time bit width.
inline void unpack_stream(const std::uint8_t* section, std::int64_t n, int bits, std::uint8_t* bytes) {
  with_bits(bits, [&](auto b) { unpack_stream<decltype(b)::value>(section, n, bytes); });
}

#if defined(MEMATTN_QUANT_AVX2)
namespace detail {

inline __m256 load8(const Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// 16-bit lanes of all ones where the fp16 value is Inf or NaN.
inline __m128i nonfinite8(const Half* p) {
  const __m128i e = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), _mm_set1_epi16(0x7C00));
  return _mm_cmpeq_epi16(e, _mm_set1_epi16(0x7C00));
}

inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}
inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// Four codes clamp(rne((x - z) / s), 0, L) in fp64, as quant::encode computes them.
inline __m128i codes4(__m256d x, __m256d z, __m256d s, __m256d L) {
  __m256d u = _mm256_div_pd(_mm256_sub_pd(x, z), s);
  u = _mm256_round_pd(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  u = _mm256_min_pd(_mm256_max_pd(u, _mm256_setzero_pd()), L);
  return _mm256_cvtpd_epi32(u);  // an integer in [0, L]: exact
}

// Codes of 8 values (z, s per lane as two halves) as 8 bytes, lane i in byte i.
inline std::uint64_t code_bytes(__m256 x, const __m256d z[2], const __m256d s[2], __m256d L) {
  const __m128i lo = codes4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), z[0], s[0], L);
  const __m128i hi = codes4(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), z[1], s[1], L);
  const __m128i w = _mm_packus_epi32(lo, hi);
  return static_cast<std::uint64_t>(_mm_cvtsi128_si64(_mm_packus_epi16(w, w)));
}

// rows[i] (8 bytes each) -> out[k] = byte k of every row (an 8 x 8 byte transpose).
inline void transpose8x8(const std::uint64_t rows[8], std::uint64_t out[8]) {
  auto r = [&](int i) { return _mm_cvtsi64_si128(static_cast<long long>(rows[i])); };
  const __m128i a0 = _mm_unpacklo_epi8(r(0), r(1)), a1 = _mm_unpacklo_epi8(r(2), r(3));
  const __m128i a2 = _mm_unpacklo_epi8(r(4), r(5)), a3 = _mm_unpacklo_epi8(r(6), r(7));
  const __m128i b0 = _mm_unpacklo_epi16(a0, a1), b1 = _mm_unpackhi_epi16(a0, a1);  // bytes 0-3 | 4-7, rows 0-3
  const __m128i b2 = _mm_unpacklo_epi16(a2, a3), b3 = _mm_unpackhi_epi16(a2, a3);  // rows 4-7
  const __m128i c[4] = {_mm_unpacklo_epi32(b0, b2), _mm_unpackhi_epi32(b0, b2), _mm_unpacklo_epi32(b1, b3),
                        _mm_unpackhi_epi32(b1, b3)};
  for (int k = 0; k < 4; ++k) {
    out[2 * k] = static_cast<std::uint64_t>(_mm_cvtsi128_si64(c[k]));
    out[2 * k + 1] = static_cast<std::uint64_t>(_mm_extract_epi64(c[k], 1));
  }
}

}  // namespace detail

// Per-channel groups (KIVI keys): channel c of rows[t], t < G, for c < width (any width). Codes
// to bytes[t * width + c] (the token-major stream order), {scale, zero} bits to meta[2 c], [2 c + 1].
// Returns the OR of QuantFlags; a non-finite group gets the poison meta and codes 0.
inline std::uint32_t channel_groups(const Half* const* rows, int G, int width, int L, std::uint16_t* meta, std::uint8_t* bytes) {
  const __m256d Lv = _mm256_set1_pd(static_cast<double>(L));
  std::uint32_t flags = quant::kQuantOk;
  alignas(16) Half pad[8];
  for (int c0 = 0; c0 < width; c0 += 8) {
    const int n = width - c0 < 8 ? width - c0 : 8;
    auto at = [&](int t) -> const Half* {  // channels c0 .. c0 + 7 of token t (zero past width)
      if (n == 8) return rows[t] + c0;
      std::memset(pad, 0, sizeof(pad));
      std::memcpy(pad, rows[t] + c0, static_cast<std::size_t>(n) * sizeof(Half));
      return pad;
    };
    const Half* x0 = at(0);
    __m256 mn = detail::load8(x0), mx = mn;
    __m128i bad = detail::nonfinite8(x0);
    for (int t = 1; t < G; ++t) {
      const Half* xt = at(t);
      const __m256 x = detail::load8(xt);
      mn = _mm256_min_ps(mn, x);
      mx = _mm256_max_ps(mx, x);
      bad = _mm_or_si128(bad, detail::nonfinite8(xt));
    }
    alignas(32) float mn8[8], mx8[8];
    alignas(32) double z8[8], s8[8];
    alignas(16) std::uint16_t bad8[8];
    _mm256_store_ps(mn8, mn);
    _mm256_store_ps(mx8, mx);
    _mm_store_si128(reinterpret_cast<__m128i*>(bad8), bad);
    std::uint64_t keep = ~0ull;  // byte i: 0xFF unless channel c0 + i is poisoned (codes 0)
    for (int i = 0; i < 8; ++i) {
      z8[i] = 0.0;
      s8[i] = 1.0;
      if (i >= n) continue;
      quant::GroupMeta m;
      if (bad8[i] != 0) {
        m.scale.bits = m.zero.bits = quant::kPoisonMeta;
        flags |= quant::kQuantNonFinite;
        keep &= ~(0xFFull << (8 * i));
      } else {
        m = quant::range_params(mn8[i], mx8[i], L);
        z8[i] = quant::half_to_double(m.zero);
        s8[i] = quant::half_to_double(m.scale);
      }
      meta[2 * (c0 + i)] = m.scale.bits;
      meta[2 * (c0 + i) + 1] = m.zero.bits;
    }
    const __m256d z[2] = {_mm256_load_pd(z8), _mm256_load_pd(z8 + 4)};
    const __m256d s[2] = {_mm256_load_pd(s8), _mm256_load_pd(s8 + 4)};
    for (int t = 0; t < G; ++t) {
      const std::uint64_t b = detail::code_bytes(detail::load8(at(t)), z, s, Lv) & keep;
      std::memcpy(bytes + static_cast<std::int64_t>(t) * width + c0, &b, static_cast<std::size_t>(n));
    }
  }
  return flags;
}

// Per-token groups (KIVI / MiKV values): x[0 .. n) in groups of GV channels (GV a multiple of 8).
// Codes to bytes[0 .. n), meta of group j to meta[2 j], [2 j + 1]. Flags as channel_groups.
inline std::uint32_t token_groups(const Half* x, int n, int GV, int L, std::uint16_t* meta, std::uint8_t* bytes) {
  const __m256d Lv = _mm256_set1_pd(static_cast<double>(L));
  std::uint32_t flags = quant::kQuantOk;
  for (int j = 0; j < n / GV; ++j) {
    const Half* g = x + j * GV;
    __m256 mn = detail::load8(g), mx = mn;
    __m128i bad = detail::nonfinite8(g);
    for (int c = 8; c < GV; c += 8) {
      const __m256 v = detail::load8(g + c);
      mn = _mm256_min_ps(mn, v);
      mx = _mm256_max_ps(mx, v);
      bad = _mm_or_si128(bad, detail::nonfinite8(g + c));
    }
    quant::GroupMeta m;
    std::uint8_t* out = bytes + j * GV;
    if (!_mm_testz_si128(bad, bad)) {
      m.scale.bits = m.zero.bits = quant::kPoisonMeta;
      flags |= quant::kQuantNonFinite;
      std::memset(out, 0, static_cast<std::size_t>(GV));
    } else {
      m = quant::range_params(detail::hmin(mn), detail::hmax(mx), L);
      const __m256d zv = _mm256_set1_pd(quant::half_to_double(m.zero)), sv = _mm256_set1_pd(quant::half_to_double(m.scale));
      const __m256d z[2] = {zv, zv}, s[2] = {sv, sv};
      for (int c = 0; c < GV; c += 8) {
        const std::uint64_t b = detail::code_bytes(detail::load8(g + c), z, s, Lv);
        std::memcpy(out + c, &b, 8);
      }
    }
    meta[2 * j] = m.scale.bits;
    meta[2 * j + 1] = m.zero.bits;
  }
  return flags;
}

// bytes[] as G x D codes (token-major) into a channel-major stream (element c G + t); G, D
// multiples of 8.
template <int B>
inline void pack_transposed(const std::uint8_t* bytes, int G, int D, std::uint8_t* section) {
  for (int t0 = 0; t0 < G; t0 += 8)
    for (int c0 = 0; c0 < D; c0 += 8) {
      std::uint64_t tile[8], cols[8];
      for (int i = 0; i < 8; ++i) std::memcpy(&tile[i], bytes + static_cast<std::int64_t>(t0 + i) * D + c0, 8);
      detail::transpose8x8(tile, cols);
      for (int k = 0; k < 8; ++k) detail::store8<B>(section, static_cast<std::int64_t>(c0 + k) * G + t0, cols[k]);
    }
}

#endif

// quant::ScalarCodec's interface and bits on the pieces above; the scalar functions for 3-bit
// codes (10 per word, not one stream), value groups that are not whole vectors, or non-AVX2 builds.
struct Codec {
  static std::uint32_t channels(const Half* const* rows, int G, int width, int bits, std::uint16_t* meta, std::uint32_t* words) {
#if defined(MEMATTN_QUANT_AVX2)
    if (bits == 2 || bits == 4 || bits == 8) {
      thread_local std::vector<std::uint8_t> codes;
      codes.resize(static_cast<std::size_t>(G) * static_cast<std::size_t>(width));
      const std::uint32_t flags = channel_groups(rows, G, width, (1 << bits) - 1, meta, codes.data());
      pack_stream(codes.data(), static_cast<std::int64_t>(codes.size()), bits, reinterpret_cast<std::uint8_t*>(words));
      return flags;
    }
#endif
    return quant::quantize_channels(rows, G, width, bits, meta, words);
  }
  static std::uint32_t tokens(const Half* x, int n, int GV, int bits, std::uint16_t* meta, std::uint32_t* words) {
#if defined(MEMATTN_QUANT_AVX2)
    if ((bits == 2 || bits == 4 || bits == 8) && GV % 8 == 0 && n <= 256) {
      std::uint8_t codes[256];
      const std::uint32_t flags = token_groups(x, n, GV, (1 << bits) - 1, meta, codes);
      pack_stream(codes, n, bits, reinterpret_cast<std::uint8_t*>(words));
      return flags;
    }
#endif
    return quant::quantize_tokens(x, n, GV, bits, meta, words);
  }
};

}  // namespace quant_codes
}  // namespace cpu
MEMATTN_NAMESPACE_END
