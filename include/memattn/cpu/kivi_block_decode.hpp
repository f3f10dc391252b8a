// Decode-sized attention over one KIVI block record, straight from its codes (quantisation spec
// §7's optimised CPU decode): scales and zeros are folded into the float operands (§6.1) and the
// codes become floats inside AVX2 registers, so nothing is dequantised to memory.
//   keys:   s(t) = sum_c q_c (code_tc s_c + z_c) = sum_c (q_c s_c) code_tc + sum_c q_c z_c
//   values: o_c += sum_t p_t (code_ct s_tj + z_tj) = sum_t (p_t s_tj) code_ct + sum_t p_t z_tj
// The tiled path of KiviKvCache (dequantise 256 tokens to fp32, then Eigen products with their
// packing) writes and rereads ~1.3 MB of fp32 per tile (by its buffer sizes); this path reads each
// code once: K2V2 decode at 16K tokens, 1 thread, 17.3 -> 7.7-7.9 ms. Both compute the same
// canonical values in fp32 in a different summation order (the tests bound the difference from
// fp64 by 2e-6 of the folded terms' magnitudes).
//
// Used for up to kMaxRows query rows (a decode step's GQA group) when the build has AVX2 and FMA
// (available()) by KiviKvCache (block records: scores(), values()) and ComposedKvCache (kept-
// channel key blocks of any width: scores_codes(); per-token value codes: values_tokens()); other
// builds and prefill keep the caches' tiled paths.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/simd_avx2.hpp"
#include "memattn/quant/kivi.hpp"

#if defined(MEMATTN_SIMD_AVX2)
#define MEMATTN_KIVI_FUSED_AVX2 1
#endif

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace kivi_block {

constexpr int kMaxRows = 16;  // query rows per call (processed 4 at a time)
constexpr int kRowChunk = 4;

// True when this build has the vector path and the config suits it (8-channel vectors must not
// straddle a value group).
inline bool available(const quant::KvQuantConfig& c) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  return c.vg() % 8 == 0 && c.head_dim % 8 == 0;
#else
  (void)c;
  return false;
#endif
}

constexpr int kTokenTile = 256;  // most tokens per values_tokens() call

// The half2 {scale, zero} of J groups of n tokens (token t's at m + t * stride_halves) as
// per-group float rows sc[j * ld + t], ze[j * ld + t], the layout the KIVI token kernels fold.
inline void transpose_meta(const std::uint16_t* m, std::size_t stride_halves, std::int64_t n, std::int64_t J, float* sc,
                           float* ze, std::int64_t ld) {
  for (std::int64_t t = 0; t < n; ++t) {
    const std::uint16_t* row = m + static_cast<std::size_t>(t) * stride_halves;
    std::int64_t j = 0;
#if defined(__F16C__)
    for (; j + 2 <= J; j += 2) {  // two groups' half2 in one conversion (the software one was 10% of a step)
      alignas(16) float f[4];
      _mm_store_ps(f, _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 2 * j))));
      sc[j * ld + t] = f[0];
      ze[j * ld + t] = f[1];
      sc[(j + 1) * ld + t] = f[2];
      ze[(j + 1) * ld + t] = f[3];
    }
#endif
    for (; j < J; ++j) {
      sc[j * ld + t] = half_to_float(Half{row[2 * j]});
      ze[j * ld + t] = half_to_float(Half{row[2 * j + 1]});
    }
  }
}

// Floats of scratch that scores(), scores_codes(), values() and values_tokens() need.
inline std::int64_t scratch_floats(const quant::KvQuantConfig& c) {
  const std::int64_t D = c.head_dim, G = c.group, J = D / c.vg();
  const std::int64_t blocks = kRowChunk * D + 2 * D + 2 * G * J + kRowChunk * J * G + kRowChunk * J;
  const std::int64_t tokens = kRowChunk * kTokenTile + kRowChunk;
  return (blocks > tokens ? blocks : tokens) + 16;
}

#if defined(MEMATTN_KIVI_FUSED_AVX2)
namespace detail {

using simd::hsum;
using simd::with_rows;

// Pairs m[2i], m[2i + 1] (i < 8: half2 {scale, zero} metadata as floats) split into two vectors.
inline void split_pairs(const float* m, __m256* first, __m256* second) {
  const __m256 a = _mm256_loadu_ps(m), b = _mm256_loadu_ps(m + 8);
  // per 128-bit half: (a0 a2 b0 b2 | a4 a6 b4 b6); the 64-bit permute restores element order
  *first = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  *second = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

// n half2 {scale, zero} metadata entries as two float arrays: split once per record instead of
// once per query row and fold.
inline void split_meta(const Half* m, int n, float* scale, float* zero) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    alignas(32) float f[16];
    to_float_n(m + 2 * i, 16, f);
    __m256 sc, ze;
    split_pairs(f, &sc, &ze);
    _mm256_storeu_ps(scale + i, sc);
    _mm256_storeu_ps(zero + i, ze);
  }
  for (; i < n; ++i) {  // pruned key widths (ThinK without granularity): the last few channels
    scale[i] = half_to_float(m[2 * i]);
    zero[i] = half_to_float(m[2 * i + 1]);
  }
}

// out[i] = x[i] sc[i] for i < n; returns sum_i x[i] ze[i]: the folded operand and the zero-point
// term of one row (8 partial sums, then a horizontal sum).
inline float fold(const float* x, const float* sc, const float* ze, int n, float* out) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(xv, _mm256_loadu_ps(sc + i)));
    acc = _mm256_fmadd_ps(xv, _mm256_loadu_ps(ze + i), acc);
  }
  float sum = hsum(acc);
  for (; i < n; ++i) {
    out[i] = x[i] * sc[i];
    sum = std::fma(x[i], ze[i], sum);
  }
  return sum;
}

// The 8 B-bit codes of a word starting at bit kFrom (B = 2 / 4) as floats: broadcast, variable
// shift, mask, convert. The word comes straight from memory where the compiler sees a load.
template <int B, int kFrom = 0>
inline __m256 word_codes(std::uint32_t word) {
  const __m256i shifts = B == 2 ? _mm256_setr_epi32(kFrom, kFrom + 2, kFrom + 4, kFrom + 6, kFrom + 8, kFrom + 10, kFrom + 12, kFrom + 14)
                                : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i codes = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts);
  return _mm256_cvtepi32_ps(_mm256_and_si256(codes, _mm256_set1_epi32((1 << B) - 1)));
}

// How scores_rows addresses a call's token-major key codes:
//   kTokenWords: every token starts on a word (D B % 32 == 0, D % 8 == 0): each 8-code vector is
//                a whole word (B = 4), half of one (B = 2: one load serves 16 channels) or two
//                (B = 8), at an offset known at compile time. Every full-width KIVI block but
//                B = 2 with D % 16 == 8.
//   kVector:     D % 8 == 0: a vector's 8 codes lie within one word, at a shift found at run time.
//   kAny:        any width (the composed cache's pruned blocks): the codes may straddle words.
enum class KeyWidth { kTokenWords, kVector, kAny };

inline KeyWidth key_width(int D, int B) {
  if (D % 8 != 0) return KeyWidth::kAny;
  return D * B % 32 == 0 ? KeyWidth::kTokenWords : KeyWidth::kVector;
}

// Codes e .. e + 7 of a token-major K section (e a multiple of 8; D % 8 == 0) as floats.
template <int B>
inline __m256 key_codes(const std::uint32_t* w, std::int64_t e) {
  if (B == 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint8_t*>(w) + e));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
  }
  if (B == 4) return word_codes<4>(w[e >> 3]);  // 8 codes per word: e a multiple of 8 is word-aligned
  const std::int64_t bit = e * B;
  return word_codes<B>(w[bit >> 5] >> (bit & 31));
}

// The same for any e (a key width that is not a multiple of 8): the 8 codes may straddle words,
// so they come from an unaligned 8-byte load (a partial copy at the end of the `bytes` codes).
// Codes past the width belong to the next token or are 0: finite, and their q is 0.
template <int B>
inline __m256 key_codes_any(const std::uint32_t* w, std::int64_t e, std::int64_t bytes) {
  const std::int64_t bit = e * B, at = bit >> 3;
  const std::uint8_t* src = reinterpret_cast<const std::uint8_t*>(w) + at;
  std::uint64_t u = 0;
  if (at + 8 <= bytes) {
    std::memcpy(&u, src, 8);  // constant size: one load (a variable size is a libc call)
  } else {
    std::memcpy(&u, src, static_cast<std::size_t>(bytes - at));
  }
  u >>= bit & 7;
  if (B == 8) return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(u))));
  return word_codes<B>(static_cast<std::uint32_t>(u));
}

template <int B, KeyWidth kMode>
inline __m256 codes8(const std::uint32_t* w, std::int64_t e, std::int64_t bytes) {
  return kMode == KeyWidth::kAny ? key_codes_any<B>(w, e, bytes) : key_codes<B>(w, e);
}

// Rows r0 .. r0 + NR - 1: S[r][t] = qs_r . codes_t + cz[r], two tokens at a time (2 NR
// independent FMA chains, reduced by one hadd tree for 4 rows). qs rows are D8 = D rounded up to
// 8 long, zero past D.
template <int B, int NR, KeyWidth kMode>
inline void scores_rows(const std::uint32_t* kc, int G, int D, const float* qs, const float* cz, float* S,
                        std::int64_t lds, std::int64_t bytes) {
  const int D8 = (D + 7) / 8 * 8;
  __m256 czv = _mm256_setzero_ps();  // 4 rows: cz in the hadd tree's lane order
  if constexpr (NR == 4) czv = _mm256_setr_ps(cz[0], cz[0], cz[1], cz[1], cz[2], cz[2], cz[3], cz[3]);
  (void)czv;
  for (int t = 0; t + 1 < G; t += 2) {
    __m256 a[2 * NR];  // a[2 r + u]: row r, token t + u
    MEMATTN_SIMD_UNROLL
    for (int i = 0; i < 2 * NR; ++i) a[i] = _mm256_setzero_ps();
    auto step = [&](int c, __m256 k0, __m256 k1) {
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) {
        const __m256 q = _mm256_loadu_ps(qs + r * D8 + c);
        a[2 * r] = _mm256_fmadd_ps(q, k0, a[2 * r]);
        a[2 * r + 1] = _mm256_fmadd_ps(q, k1, a[2 * r + 1]);
      }
    };
    if constexpr (kMode == KeyWidth::kTokenWords && B == 2) {  // one word: 16 channels of a token
      const std::uint32_t* w0 = kc + static_cast<std::int64_t>(t) * (D / 16);
      const std::uint32_t* w1 = w0 + D / 16;
      for (int c = 0; c < D; c += 16) {
        const std::uint32_t x0 = w0[c / 16], x1 = w1[c / 16];
        step(c, word_codes<2>(x0), word_codes<2>(x1));
        step(c + 8, word_codes<2, 16>(x0), word_codes<2, 16>(x1));
      }
    } else {
      for (int c = 0; c < D; c += 8)
        step(c, codes8<B, kMode>(kc, static_cast<std::int64_t>(t) * D + c, bytes),
             codes8<B, kMode>(kc, static_cast<std::int64_t>(t + 1) * D + c, bytes));
    }
    if constexpr (NR == 4) {  // lanes 2 r, 2 r + 1: row r's two tokens, one 8-byte store per row
      const __m256 v = _mm256_add_ps(simd::hsum8(a), czv);
      const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
      _mm_storel_pi(reinterpret_cast<__m64*>(S + t), lo);
      _mm_storeh_pi(reinterpret_cast<__m64*>(S + lds + t), lo);
      _mm_storel_pi(reinterpret_cast<__m64*>(S + 2 * lds + t), hi);
      _mm_storeh_pi(reinterpret_cast<__m64*>(S + 3 * lds + t), hi);
    } else {
      for (int r = 0; r < NR; ++r) {
        S[r * lds + t] = hsum(a[2 * r]) + cz[r];
        S[r * lds + t + 1] = hsum(a[2 * r + 1]) + cz[r];
      }
    }
  }
  if (G % 2 != 0) {  // a partly filled block of the composed cache: the last token alone
    const int t = G - 1;
    __m256 a[NR];
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) a[r] = _mm256_setzero_ps();
    for (int c = 0; c < D; c += 8) {
      const __m256 k0 = codes8<B, kMode>(kc, static_cast<std::int64_t>(t) * D + c, bytes);
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + r * D8 + c), k0, a[r]);
    }
    for (int r = 0; r < NR; ++r) S[r * lds + t] = hsum(a[r]) + cz[r];
  }
}

// Rows 0..3 (q: 4 x D, zero rows past the caller's count): out lanes 2 r + u = Q_r . k(t + u) for
// the tokens t, t + 1 of token-major per-token key codes (token t's words at kc + t wpt) with a
// scale and zero per (token, group of GV channels): sum_j s_j (q_Gj . code_Gj) + z_j qsum_rj.
// Each group's 8 dot products come out of one hadd tree and take their scale as one FMA.
template <int B>
inline __m256 token_pair_scores(const std::uint32_t* w0, const std::uint32_t* w1, int J, int GV, const float* q, int D,
                                const float* qsum, const float* s0, const float* s1, const float* z0, const float* z1,
                                std::int64_t ldm) {
  __m256 total = _mm256_setzero_ps();
  for (int j = 0; j < J; ++j) {
    __m256 a[8];
    MEMATTN_SIMD_UNROLL
    for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
    auto step = [&](int c, __m256 k0, __m256 k1) {
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < 4; ++r) {
        const __m256 qv = _mm256_loadu_ps(q + r * D + c);
        a[2 * r] = _mm256_fmadd_ps(qv, k0, a[2 * r]);
        a[2 * r + 1] = _mm256_fmadd_ps(qv, k1, a[2 * r + 1]);
      }
    };
    if (B == 2 && GV % 16 == 0) {  // one word: 16 channels of a token (groups start on words)
      for (int c = j * GV; c < (j + 1) * GV; c += 16) {
        const std::uint32_t x0 = w0[c / 16], x1 = w1[c / 16];
        step(c, word_codes<2>(x0), word_codes<2>(x1));
        step(c + 8, word_codes<2, 16>(x0), word_codes<2, 16>(x1));
      }
    } else {
      for (int c = j * GV; c < (j + 1) * GV; c += 8) step(c, key_codes<B>(w0, c), key_codes<B>(w1, c));
    }
    const float sa = s0[j * ldm], sb = s1[j * ldm], za = z0[j * ldm], zb = z1[j * ldm];
    const float* qs = qsum + 4 * j;  // qsum[4 j + r]
    const __m256 scale = _mm256_setr_ps(sa, sb, sa, sb, sa, sb, sa, sb);
    const __m256 zero = _mm256_setr_ps(za * qs[0], zb * qs[0], za * qs[1], zb * qs[1], za * qs[2], zb * qs[2], za * qs[3], zb * qs[3]);
    total = _mm256_add_ps(_mm256_fmadd_ps(simd::hsum8(a), scale, total), zero);
  }
  return total;
}

// The W code words of channels c0 .. c0 + 7 (channel-major: channel c's words at c W .. c W + W - 1,
// W = G B / 32 = 2 .. 32) as W vectors: out[w * 8 + i] = word w of channel c0 + i. The 8 W words
// are contiguous, so they come from W plain loads and a transpose in registers; the gathers this
// replaces (one per word vector) were 28% of the value pass (perf).
inline void channel_words(const std::uint32_t* base, int W, std::uint32_t* out) {
  auto ld = [&](int i) { return _mm256_loadu_ps(reinterpret_cast<const float*>(base) + 8 * i); };
  auto st = [&](int w, __m256 x) { _mm256_store_ps(reinterpret_cast<float*>(out) + 8 * w, x); };
  if (W == 2) {  // [c0w0 c0w1 c1w0 c1w1 | c2.. c3..], [c4.. | c6..]: even words, then odd ones
    __m256 w0, w1;
    split_pairs(reinterpret_cast<const float*>(base), &w0, &w1);
    st(0, w0);
    st(1, w1);
    return;
  }
  if (W == 4) {  // rows: channel pairs; unpacks give lanes in channel order 0 2 4 6 | 1 3 5 7
    const __m256 r0 = ld(0), r1 = ld(1), r2 = ld(2), r3 = ld(3);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    auto fix = [&](__m256 x) { return _mm256_permutevar8x32_ps(x, order); };
    st(0, fix(_mm256_shuffle_ps(t0, t2, 0x44)));
    st(1, fix(_mm256_shuffle_ps(t0, t2, 0xEE)));
    st(2, fix(_mm256_shuffle_ps(t1, t3, 0x44)));
    st(3, fix(_mm256_shuffle_ps(t1, t3, 0xEE)));
    return;
  }
  for (int k = 0; k < W / 8; ++k) {  // W >= 8: an 8 x 8 transpose per 8 words of each channel
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(base) + i * W + 8 * k);
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      st(8 * k + i, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
      st(8 * k + i + 4, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
    }
  }
}

// Rows r0 .. r0 + NR - 1 of acc += P V over channels [c0, c0 + 8 CG): the channels' code words
// are transposed once (channel_words), then each token is a uniform shift, a mask, a convert and
// NR FMAs with its folded probability pv[r][t] (CG channel vectors at a time: CG NR FMA chains).
template <int B, int NR, int CG>
inline void values_rows(const std::uint32_t* vc, int G, int c0, const float* pv, float zs_add[NR], float* acc,
                        std::int64_t ldacc) {
  constexpr int kPer = 32 / B;
  const int W = G * B / 32;  // words per channel
  alignas(32) std::uint32_t tw[CG][32 * 8];  // W <= 32
  MEMATTN_SIMD_UNROLL
  for (int g = 0; g < CG; ++g) channel_words(vc + static_cast<std::int64_t>(c0 + 8 * g) * W, W, tw[g]);
  const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
  __m256 a[CG][NR];
  MEMATTN_SIMD_UNROLL
  for (int g = 0; g < CG; ++g)
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) a[g][r] = _mm256_setzero_ps();
  for (int w = 0; w < W; ++w) {
    __m256i words[CG];
    MEMATTN_SIMD_UNROLL
    for (int g = 0; g < CG; ++g) words[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tw[g] + 8 * w));
    const float* pt = pv + w * kPer;
    MEMATTN_SIMD_UNROLL
    for (int u = 0; u < kPer; ++u) {
      __m256 p[NR];
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) p[r] = _mm256_broadcast_ss(pt + r * G + u);
      MEMATTN_SIMD_UNROLL
      for (int g = 0; g < CG; ++g) {
        const __m256 f = _mm256_cvtepi32_ps(_mm256_and_si256(words[g], mask));
        words[g] = _mm256_srli_epi32(words[g], B);
        MEMATTN_SIMD_UNROLL
        for (int r = 0; r < NR; ++r) a[g][r] = _mm256_fmadd_ps(p[r], f, a[g][r]);
      }
    }
  }
  for (int g = 0; g < CG; ++g)
    for (int r = 0; r < NR; ++r) {
      float* dst = acc + r * ldacc + c0 + 8 * g;
      const __m256 z = _mm256_set1_ps(zs_add[r]);
      _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), _mm256_add_ps(a[g][r], z)));
    }
}

// Rows r0 .. r0 + NR - 1 of acc += P V over channels [c0, c0 + 8 CG) for n tokens of token-major
// codes (token t's codes from word t * wpt): per token a key-style unpack and NR FMAs with its
// folded probability pv[r][t].
template <int B, int NR, int CG>
inline void values_tokens_rows(const std::uint32_t* vc, std::int64_t wpt, int n, int c0, const float* pv, const float* zs,
                               float* acc, std::int64_t ldacc) {
  simd::accumulate_pv<NR, CG>(
      n, pv, n, [&](int t, int g) { return key_codes<B>(vc + t * wpt, c0 + 8 * g); }, zs, acc, ldacc, c0);
}

template <int B, int NR>
inline void values_tokens_chunk(const std::uint32_t* vc, std::int64_t wpt, int n, int D, int GV, const float* sc,
                                const float* ze, std::int64_t ldm, const float* P, std::int64_t ldp, float* acc,
                                std::int64_t ldacc, float* pv, float* zs) {
  for (int j = 0; j < D / GV; ++j) {
    for (int r = 0; r < NR; ++r)  // pv[r][t] = p s_tj, zs[r] = sum_t p z_tj
      zs[r] = fold(P + r * ldp, sc + j * ldm, ze + j * ldm, n, pv + r * n);
    for (int c0 = j * GV; c0 < (j + 1) * GV;) {
      if (c0 + 16 <= (j + 1) * GV) {
        values_tokens_rows<B, NR, 2>(vc, wpt, n, c0, pv, zs, acc, ldacc);
        c0 += 16;
      } else {
        values_tokens_rows<B, NR, 1>(vc, wpt, n, c0, pv, zs, acc, ldacc);
        c0 += 8;
      }
    }
  }
}

template <int B, int NR>
inline void values_chunk_bits(const std::uint32_t* vc, int G, int D, int GV, const float* pv, const float* zs, float* acc,
                              std::int64_t ldacc) {
  const int J = D / GV;
  for (int c0 = 0; c0 < D;) {
    const int j = c0 / GV;
    float z[NR];
    for (int r = 0; r < NR; ++r) z[r] = zs[r * J + j];
    const float* pj = pv + static_cast<std::int64_t>(j) * NR * G;
    if (c0 + 16 <= (j + 1) * GV) {
      values_rows<B, NR, 2>(vc, G, c0, pj, z, acc, ldacc);
      c0 += 16;
    } else {
      values_rows<B, NR, 1>(vc, G, c0, pj, z, acc, ldacc);
      c0 += 8;
    }
  }
}


// Calls f(std::integral_constant<int, N>) for N = bits (2 / 4 / 8); with_rows (simd_avx2.hpp)
// does the same for the row count.
template <class F>
inline void with_bits(int bits, F&& f) {
  if (bits == 2) f(std::integral_constant<int, 2>{});
  else if (bits == 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

}  // namespace detail
#endif

// Asks for a block record ahead of its use (a hint; no effect on results). A head's records are
// Hkv records apart, a stride the hardware prefetchers do not follow, so without it every block
// started with cache misses on its metadata and codes.
inline void prefetch(const quant::BlockView& bv) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  const char* p = reinterpret_cast<const char*>(bv.rec);
  for (std::size_t b = 0; b < bv.lay.bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
#else
  (void)bv;
#endif
}

// S[r * lds + t] = Q_r . k(t) for n tokens of token-major K codes (kc: element t * D + c, `bytes`
// of them) with half2 {scale, zero} per channel (km), rows r < rows <= kMaxRows (Q rows ldq
// apart, already scaled by tau). D up to the scratch's head_dim, any width (the composed cache's
// pruned blocks: kept channels only, possibly partly filled, come here directly).
inline void scores_codes(const std::uint32_t* kc, std::int64_t bytes, const std::uint16_t* km, int n, int D, int bits,
                         const float* Q, int rows, std::int64_t ldq, float* S, std::int64_t lds, float* scratch) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  const int D8 = (D + 7) / 8 * 8;
  float* sc = scratch;              // D: per-channel scale
  float* ze = sc + D;               // D: per-channel zero
  float* qs = ze + D;               // kRowChunk x D8: q s, zero-padded
  float* cz = qs + kRowChunk * D8;  // kRowChunk: q . z
  detail::split_meta(reinterpret_cast<const Half*>(km), D, sc, ze);
  for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int nr = rows - r0 < kRowChunk ? rows - r0 : kRowChunk;
    for (int r = 0; r < nr; ++r) {
      cz[r] = detail::fold(Q + (r0 + r) * ldq, sc, ze, D, qs + r * D8);
      for (int c = D; c < D8; ++c) qs[r * D8 + c] = 0.f;  // the padding the last code vector meets
    }
    float* Sr = S + r0 * lds;
    detail::with_rows(nr, [&](auto R) {
      detail::with_bits(bits, [&](auto B) {
        switch (detail::key_width(D, B)) {
          case detail::KeyWidth::kTokenWords:
            detail::scores_rows<B, R, detail::KeyWidth::kTokenWords>(kc, n, D, qs, cz, Sr, lds, bytes);
            break;
          case detail::KeyWidth::kVector:
            detail::scores_rows<B, R, detail::KeyWidth::kVector>(kc, n, D, qs, cz, Sr, lds, bytes);
            break;
          default: detail::scores_rows<B, R, detail::KeyWidth::kAny>(kc, n, D, qs, cz, Sr, lds, bytes);
        }
      });
    });
  }
#else
  (void)kc, (void)bytes, (void)km, (void)n, (void)D, (void)bits, (void)Q, (void)rows, (void)ldq, (void)S, (void)lds, (void)scratch;
#endif
}

// The same for one KIVI block record's G tokens. Requires available(bv.cfg).
inline void scores(const quant::BlockView& bv, const float* Q, int rows, std::int64_t ldq, float* S, std::int64_t lds,
                   float* scratch) {
  scores_codes(bv.kc(), static_cast<std::int64_t>(bv.lay.km - bv.lay.kc), reinterpret_cast<const std::uint16_t*>(bv.rec + bv.lay.km),
               bv.cfg.group, bv.cfg.head_dim, bv.cfg.bits_k, Q, rows, ldq, S, lds, scratch);
}

// acc[r * ldacc + c] += sum_t P[r * ldp + t] v(t, c) for the block's G tokens, rows r < rows <=
// kMaxRows. Requires available(bv.cfg).
inline void values(const quant::BlockView& bv, const float* P, int rows, std::int64_t ldp, float* acc, std::int64_t ldacc,
                   float* scratch) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  const int G = bv.cfg.group, D = bv.cfg.head_dim, GV = bv.cfg.vg(), J = D / GV;
  float* sc = scratch;                  // G J: scale per (group j, token t)
  float* ze = sc + G * J;               // G J: zero per (group j, token t)
  float* pv = ze + G * J;               // [j][r][t]: p s of the row chunk
  float* zs = pv + kRowChunk * J * G;   // [r][j]: sum_t p z
  detail::split_meta(reinterpret_cast<const Half*>(bv.rec + bv.lay.vm), G * J, sc, ze);
  for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int nr = rows - r0 < kRowChunk ? rows - r0 : kRowChunk;
    for (int r = 0; r < nr; ++r) {
      const float* p = P + (r0 + r) * ldp;
      for (int j = 0; j < J; ++j)
        zs[r * J + j] = detail::fold(p, sc + j * G, ze + j * G, G, pv + (static_cast<std::int64_t>(j) * nr + r) * G);
    }
    float* ar = acc + r0 * ldacc;
    detail::with_rows(nr, [&](auto R) {
      detail::with_bits(bv.cfg.bits_v, [&](auto B) { detail::values_chunk_bits<B, R>(bv.vc(), G, D, GV, pv, zs, ar, ldacc); });
    });
  }
#else
  (void)bv, (void)P, (void)rows, (void)ldp, (void)acc, (void)ldacc, (void)scratch;
#endif
}

// acc[r * ldacc + c] += sum_t P[r * ldp + t] (code(t, c) sc[j * ldm + t] + ze[j * ldm + t]) for
// n <= kTokenTile tokens of token-major value codes (token t's D codes from word t * wpt;
// j = c / GV, GV a multiple of 8): the composed cache's per-token value rows, with their
// metadata transposed to per-group float rows by the caller. rows <= kMaxRows.
inline void values_tokens(const std::uint32_t* vc, std::int64_t wpt, int n, int D, int GV, int bits, const float* sc,
                          const float* ze, std::int64_t ldm, const float* P, int rows, std::int64_t ldp, float* acc,
                          std::int64_t ldacc, float* scratch) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  float* pv = scratch;                  // kRowChunk x n
  float* zs = pv + kRowChunk * kTokenTile;  // kRowChunk
  for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int nr = rows - r0 < kRowChunk ? rows - r0 : kRowChunk;
    const float* Pr = P + r0 * ldp;
    float* ar = acc + r0 * ldacc;
    detail::with_rows(nr, [&](auto R) {
      detail::with_bits(bits, [&](auto B) {
        detail::values_tokens_chunk<B, R>(vc, wpt, n, D, GV, sc, ze, ldm, Pr, ldp, ar, ldacc, pv, zs);
      });
    });
  }
#else
  (void)vc, (void)wpt, (void)n, (void)D, (void)GV, (void)bits, (void)sc, (void)ze, (void)ldm, (void)P, (void)rows, (void)ldp,
      (void)acc, (void)ldacc, (void)scratch;
#endif
}

// Floats of scratch scores_tokens() needs at head_dim D with J groups.
inline std::int64_t scores_tokens_scratch(int D, int J) { return 4 * static_cast<std::int64_t>(D) + 4 * J; }

// S[r * lds + t] = sum_j (sc[j * ldm + t] (Q_r,Gj . code(t, Gj)) + ze[j * ldm + t] sum(Q_r,Gj)) for
// n tokens of token-major key codes quantised per (token, group of GV channels): MiKV's per-token
// rows (token t's D codes from word t * wpt), their metadata transposed to per-group float rows
// by the caller. D % 8 == 0, GV % 8 == 0, bits 2 / 4 / 8, rows <= kMaxRows (4 at a time).
inline void scores_tokens(const std::uint32_t* kc, std::int64_t wpt, int n, int D, int GV, int bits, const float* sc,
                          const float* ze, std::int64_t ldm, const float* Q, int rows, std::int64_t ldq, float* S,
                          std::int64_t lds, float* scratch) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  const int J = D / GV;
  float* q = scratch;         // 4 x D, rows past nr zero
  float* qsum = q + 4 * D;    // [j][r]
  for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int nr = rows - r0 < kRowChunk ? rows - r0 : kRowChunk;
    for (int r = 0; r < kRowChunk; ++r)
      for (int c = 0; c < D; ++c) q[r * D + c] = r < nr ? Q[(r0 + r) * ldq + c] : 0.f;
    for (int j = 0; j < J; ++j)
      for (int r = 0; r < kRowChunk; ++r) {
        float t = 0.f;
        for (int c = j * GV; c < (j + 1) * GV; ++c) t += q[r * D + c];
        qsum[4 * j + r] = t;
      }
    float* Sr = S + r0 * lds;
    detail::with_bits(bits, [&](auto B) {
      for (int t = 0; t < n; t += 2) {
        const int u = t + 1 < n ? t + 1 : t;  // an odd last token pairs with itself
        alignas(32) float out[8];
        _mm256_store_ps(out, detail::token_pair_scores<B>(kc + t * wpt, kc + u * wpt, J, GV, q, D, qsum, sc + t, sc + u,
                                                          ze + t, ze + u, ldm));
        for (int r = 0; r < nr; ++r) {
          Sr[r * lds + t] = out[2 * r];
          if (u != t) Sr[r * lds + u] = out[2 * r + 1];
        }
      }
    });
  }
#else
  (void)kc, (void)wpt, (void)n, (void)D, (void)GV, (void)bits, (void)sc, (void)ze, (void)ldm, (void)Q, (void)rows, (void)ldq,
      (void)S, (void)lds, (void)scratch;
#endif
}

}  // namespace kivi_block
}  // namespace cpu
MEMATTN_NAMESPACE_END
