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

// out[i] = x[i] * first(m)[i] for i < n (a multiple of 8); returns sum_i x[i] * second(m)[i]:
// the folded operand and the zero-point term of one row (8 partial sums, then a horizontal sum).
inline float fold(const float* x, const float* m, int n, float* out) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 sc, ze;
    split_pairs(m + 2 * i, &sc, &ze);
    const __m256 xv = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(xv, sc));
    acc = _mm256_fmadd_ps(xv, ze, acc);
  }
  float sum = hsum(acc);
  for (; i < n; ++i) {  // pruned key widths (ThinK without granularity): the last few channels
    out[i] = x[i] * m[2 * i];
    sum = std::fma(x[i], m[2 * i + 1], sum);
  }
  for (; i % 8 != 0; ++i) out[i] = 0.f;  // the padding the last code vector meets
  return sum;
}

// The 8 B-bit codes at the low end of a word (B = 2 / 4) as floats: broadcast, variable shift, mask.
template <int B>
inline __m256 word_codes(std::uint32_t word) {
  const __m256i shifts = B == 2 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14) : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i codes = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts);
  return _mm256_cvtepi32_ps(_mm256_and_si256(codes, _mm256_set1_epi32((1 << B) - 1)));
}

// Codes e .. e + 7 of a token-major K section (e a multiple of 8) as floats.
template <int B>
inline __m256 key_codes(const std::uint32_t* w, std::int64_t e) {
  if (B == 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint8_t*>(w) + e));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
  }
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

template <int B, bool kAligned>
inline __m256 codes8(const std::uint32_t* w, std::int64_t e, std::int64_t bytes) {
  return kAligned ? key_codes<B>(w, e) : key_codes_any<B>(w, e, bytes);
}

// Rows r0 .. r0 + NR - 1: S[r][t] = qs_r . codes_t + cz[r], two tokens at a time (2 NR
// independent FMA chains). qs rows are D8 = D rounded up to 8 long, zero past D.
template <int B, int NR, bool kAligned>
inline void scores_rows(const std::uint32_t* kc, int G, int D, const float* qs, const float* cz, float* S,
                        std::int64_t lds, std::int64_t bytes) {
  const int D8 = (D + 7) / 8 * 8;
  for (int t = 0; t + 1 < G; t += 2) {
    __m256 a[2][NR];
    MEMATTN_SIMD_UNROLL
    for (int u = 0; u < 2; ++u)
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) a[u][r] = _mm256_setzero_ps();
    for (int c = 0; c < D; c += 8) {
      const __m256 k0 = codes8<B, kAligned>(kc, static_cast<std::int64_t>(t) * D + c, bytes);
      const __m256 k1 = codes8<B, kAligned>(kc, static_cast<std::int64_t>(t + 1) * D + c, bytes);
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) {
        const __m256 q = _mm256_loadu_ps(qs + r * D8 + c);
        a[0][r] = _mm256_fmadd_ps(q, k0, a[0][r]);
        a[1][r] = _mm256_fmadd_ps(q, k1, a[1][r]);
      }
    }
    for (int r = 0; r < NR; ++r) {
      S[r * lds + t] = hsum(a[0][r]) + cz[r];
      S[r * lds + t + 1] = hsum(a[1][r]) + cz[r];
    }
  }
  if (G % 2 != 0) {  // a partly filled block of the composed cache: the last token alone
    const int t = G - 1;
    __m256 a[NR];
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) a[r] = _mm256_setzero_ps();
    for (int c = 0; c < D; c += 8) {
      const __m256 k0 = codes8<B, kAligned>(kc, static_cast<std::int64_t>(t) * D + c, bytes);
      MEMATTN_SIMD_UNROLL
      for (int r = 0; r < NR; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + r * D8 + c), k0, a[r]);
    }
    for (int r = 0; r < NR; ++r) S[r * lds + t] = hsum(a[r]) + cz[r];
  }
}

// Rows r0 .. r0 + NR - 1 of acc += P V over channels [c0, c0 + 8 CG): the channels' code words
// are gathered once per word, then each token is a uniform shift, a mask, a convert and NR FMAs
// with its folded probability pv[r][t] (CG channel vectors at a time: CG NR FMA chains).
template <int B, int NR, int CG>
inline void values_rows(const std::uint32_t* vc, int G, int c0, const float* pv, float zs_add[NR], float* acc,
                        std::int64_t ldacc) {
  constexpr int kPer = 32 / B;
  const int W = G * B / 32;  // words per channel
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(W));
  const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
  __m256 a[CG][NR];
  MEMATTN_SIMD_UNROLL
  for (int g = 0; g < CG; ++g)
    MEMATTN_SIMD_UNROLL
    for (int r = 0; r < NR; ++r) a[g][r] = _mm256_setzero_ps();
  for (int w = 0; w < W; ++w) {
    __m256i words[CG];
    MEMATTN_SIMD_UNROLL
    for (int g = 0; g < CG; ++g)
      words[g] = _mm256_i32gather_epi32(reinterpret_cast<const int*>(vc + static_cast<std::int64_t>(c0 + 8 * g) * W + w), idx, 4);
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
    for (int r = 0; r < NR; ++r) {  // pv[r][t] = p s_tj, zs[r] = sum_t p z_tj
      const float *p = P + r * ldp, *s = sc + j * ldm, *z = ze + j * ldm;
      float* o = pv + r * n;
      __m256 zacc = _mm256_setzero_ps();
      int t = 0;
      for (; t + 8 <= n; t += 8) {
        const __m256 pt = _mm256_loadu_ps(p + t);
        _mm256_storeu_ps(o + t, _mm256_mul_ps(pt, _mm256_loadu_ps(s + t)));
        zacc = _mm256_fmadd_ps(pt, _mm256_loadu_ps(z + t), zacc);
      }
      float zsum = hsum(zacc);
      for (; t < n; ++t) {
        o[t] = p[t] * s[t];
        zsum = std::fma(p[t], z[t], zsum);
      }
      zs[r] = zsum;
    }
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
  float* meta = scratch;            // 2 D: half2 {scale, zero} per channel
  float* qs = meta + 2 * D;         // kRowChunk x D8: q s, zero-padded
  float* cz = qs + kRowChunk * D8;  // kRowChunk: q . z
  to_float_n(reinterpret_cast<const Half*>(km), 2 * D, meta);
  for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int nr = rows - r0 < kRowChunk ? rows - r0 : kRowChunk;
    for (int r = 0; r < nr; ++r) cz[r] = detail::fold(Q + (r0 + r) * ldq, meta, D, qs + r * D8);
    float* Sr = S + r0 * lds;
    detail::with_rows(nr, [&](auto R) {
      detail::with_bits(bits, [&](auto B) {
        if (D % 8 == 0) detail::scores_rows<B, R, true>(kc, n, D, qs, cz, Sr, lds, bytes);
        else detail::scores_rows<B, R, false>(kc, n, D, qs, cz, Sr, lds, bytes);
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
  float* meta = scratch;                // 2 G J: half2 {scale, zero} per (group j, token t)
  float* pv = meta + 2 * G * J;         // [j][r][t]: p s of the row chunk
  float* zs = pv + kRowChunk * J * G;   // [r][j]: sum_t p z
  to_float_n(reinterpret_cast<const Half*>(bv.rec + bv.lay.vm), 2 * G * J, meta);
  for (int r0 = 0; r0 < rows; r0 += kRowChunk) {
    const int nr = rows - r0 < kRowChunk ? rows - r0 : kRowChunk;
    for (int r = 0; r < nr; ++r) {
      const float* p = P + (r0 + r) * ldp;
      for (int j = 0; j < J; ++j) zs[r * J + j] = detail::fold(p, meta + 2 * j * G, G, pv + (static_cast<std::int64_t>(j) * nr + r) * G);
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

}  // namespace kivi_block
}  // namespace cpu
MEMATTN_NAMESPACE_END
