// Scalar quantizer math shared by the CPU and the CUDA paths (specs/quantization.md §3), written
// once as MEMATTN_HOST_DEVICE functions so both produce bit-identical codes and metadata:
//   z = largest fp16 <= min(x), s = smallest fp16 >= (max(x) - z) / L (2^-24 when that is 0),
//   code = clamp(rint_half_even((x - z) / s), 0, L), all in IEEE binary64.
// The formulas contain no multiply-add (dequantisation z + code*s has an exact product), so FMA
// contraction (nvcc --fmad, GCC -ffp-contract=fast) cannot change a result, and fp64 division is
// untouched by nvcc's fast-math flags. Directed rounding of z and s guarantees |x - x^| <= s/2.
// Non-finite inputs are found by bit tests (finite-math modes delete x != x) and poison the group:
// scale = zero = 0x7E00 (fp16 quiet NaN), codes 0.
#pragma once

#include <cmath>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"

#if defined(__FAST_MATH__) && !defined(MEMATTN_ALLOW_FAST_MATH)
#error "memattn/quant: -ffast-math breaks the bit-exact quantizer (define MEMATTN_ALLOW_FAST_MATH to override)"
#endif

MEMATTN_NAMESPACE_BEGIN
namespace quant {

constexpr std::uint16_t kPoisonMeta = 0x7E00u;  // canonical fp16 quiet NaN
constexpr std::uint16_t kHalfMinSubnormal = 0x0001u;  // 2^-24

// Group quantisation outcome (bit flags, sticky when OR-ed).
enum QuantFlags : std::uint32_t { kQuantOk = 0, kQuantNonFinite = 1u << 0, kQuantMetaOverflow = 1u << 1 };

MEMATTN_HOST_DEVICE bool half_is_nonfinite(Half h) { return (h.bits & 0x7C00u) == 0x7C00u; }

// Exact: every fp16 value is an fp32 value is an fp64 value.
MEMATTN_HOST_DEVICE double half_to_double(Half h) { return static_cast<double>(half_to_float(h)); }

MEMATTN_HOST_DEVICE Half half_next_up(Half h) {
  if (h.bits == 0x8000u) return Half{0x0001u};  // -0 -> smallest positive subnormal
  return (h.bits & 0x8000u) ? Half{static_cast<std::uint16_t>(h.bits - 1u)} : Half{static_cast<std::uint16_t>(h.bits + 1u)};
}
MEMATTN_HOST_DEVICE Half half_next_down(Half h) {
  if (h.bits == 0x0000u) return Half{0x8001u};  // +0 -> smallest negative subnormal
  return (h.bits & 0x8000u) ? Half{static_cast<std::uint16_t>(h.bits + 1u)} : Half{static_cast<std::uint16_t>(h.bits - 1u)};
}

// Largest fp16 <= v (|v| <= 65504). Round to nearest via fp32 (within one fp16 ulp, double
// rounding included), then step once if on the wrong side. A zero result is +0.
MEMATTN_HOST_DEVICE Half f16_round_down(double v) {
  Half h = float_to_half(static_cast<float>(v));
  if (half_to_double(h) > v) h = half_next_down(h);
  if (h.bits == 0x8000u) h.bits = 0;
  return h;
}
// Smallest fp16 >= v (0 <= v <= 65504).
MEMATTN_HOST_DEVICE Half f16_round_up(double v) {
  Half h = float_to_half(static_cast<float>(v));
  if (half_to_double(h) < v) h = half_next_up(h);
  if (h.bits == 0x8000u) h.bits = 0;
  return h;
}

// Round half to even, independent of the floating-point environment (std::round rounds ties away).
MEMATTN_HOST_DEVICE double rint_half_even(double u) {
  const double f = floor(u);
  const double r = u - f;  // exact for |u| < 2^52
  const double half_f = f * 0.5;
  const bool odd = floor(half_f) != half_f;
  return (r > 0.5 || (r == 0.5 && odd)) ? f + 1.0 : f;
}

struct GroupMeta {
  Half scale;
  Half zero;
};

// Scale and zero for codes 0..L of a finite group of fp16 values whose minimum is mn and maximum
// mx (fp16 inputs are at most 65504 in magnitude, so fp16 metadata cannot overflow). Bulk CPU
// quantisers that find the range with vector min / max share this step.
MEMATTN_HOST_DEVICE GroupMeta range_params(double mn, double mx, int L) {
  const Half z = f16_round_down(mn);
  Half s = f16_round_up((mx - half_to_double(z)) / static_cast<double>(L));
  if ((s.bits & 0x7FFFu) == 0) s.bits = kHalfMinSubnormal;
  return GroupMeta{s, z};
}

// Scale and zero of a group of n fp16 values x[i * stride] for codes 0..L. Returns kQuantOk or
// kQuantNonFinite (then meta is the poison pair).
MEMATTN_HOST_DEVICE std::uint32_t group_params(const Half* x, int n, int stride, int L, GroupMeta* meta) {
  bool bad = false;
  double mn = 0, mx = 0;
  for (int i = 0; i < n; ++i) {
    const Half h = x[static_cast<std::int64_t>(i) * stride];
    if (half_is_nonfinite(h)) bad = true;
    const double d = half_to_double(h);
    if (i == 0 || d < mn) mn = d;
    if (i == 0 || d > mx) mx = d;
  }
  if (bad) {
    meta->scale.bits = kPoisonMeta;
    meta->zero.bits = kPoisonMeta;
    return kQuantNonFinite;
  }
  *meta = range_params(mn, mx, L);
  return kQuantOk;
}

// Code of x under (s, z); 0 for a poisoned group.
MEMATTN_HOST_DEVICE std::uint32_t encode(Half x, GroupMeta meta, int L) {
  if (meta.scale.bits == kPoisonMeta) return 0;
  const double u = (half_to_double(x) - half_to_double(meta.zero)) / half_to_double(meta.scale);
  double k = rint_half_even(u);
  k = k < 0.0 ? 0.0 : k;
  k = k > static_cast<double>(L) ? static_cast<double>(L) : k;
  return static_cast<std::uint32_t>(k);
}

// Canonical fp32 value of a code (the product is exact in fp32 with fp16 metadata).
MEMATTN_HOST_DEVICE float decode(std::uint32_t code, GroupMeta meta) {
  return fmaf(static_cast<float>(code), half_to_float(meta.scale), half_to_float(meta.zero));
}

// ---- Packing: LSB-first inside little-endian uint32 words, codes as one linear bit stream. ----
// Element e of a section sits in word e / (32/b) at bit offset (e mod (32/b)) * b.
MEMATTN_HOST_DEVICE void pack_code(std::uint32_t* words, std::int64_t e, int bits, std::uint32_t code) {
  const int per = 32 / bits;
  const std::uint32_t mask = (bits == 32) ? 0xFFFFFFFFu : ((1u << bits) - 1u);
  std::uint32_t& w = words[e / per];
  const int sh = static_cast<int>(e % per) * bits;
  w = (w & ~(mask << sh)) | ((code & mask) << sh);
}
MEMATTN_HOST_DEVICE std::uint32_t unpack_code(const std::uint32_t* words, std::int64_t e, int bits) {
  const int per = 32 / bits;
  const std::uint32_t mask = (1u << bits) - 1u;
  return (words[e / per] >> (static_cast<int>(e % per) * bits)) & mask;
}

// ---- Group-and-pack of whole sections (every format here is built from these two) ----
// `words` must be zeroed by the caller (the packers write the stream's codes, not the bits after
// it). Both return the OR of QuantFlags.
// Per-channel groups: channel c of rows[t] over t < G, for c < width; code of (t, c) at element
// t * width + c, {scale, zero} bits at meta[2 c], [2 c + 1].
MEMATTN_HOST_DEVICE std::uint32_t quantize_channels(const Half* const* rows, int G, int width, int bits, std::uint16_t* meta,
                                                    std::uint32_t* words) {
  const int L = (1 << bits) - 1;
  std::uint32_t flags = kQuantOk;
  Half col[128];  // G <= 128
  for (int c = 0; c < width; ++c) {
    for (int t = 0; t < G; ++t) col[t] = rows[t][c];
    GroupMeta m;
    flags |= group_params(col, G, 1, L, &m);
    meta[2 * c] = m.scale.bits;
    meta[2 * c + 1] = m.zero.bits;
    for (int t = 0; t < G; ++t) pack_code(words, static_cast<std::int64_t>(t) * width + c, bits, encode(col[t], m, L));
  }
  return flags;
}
// Per-token groups: x[0 .. n) in groups of GV; code of x[c] at element c, meta of group j at
// meta[2 j], [2 j + 1].
MEMATTN_HOST_DEVICE std::uint32_t quantize_tokens(const Half* x, int n, int GV, int bits, std::uint16_t* meta,
                                                  std::uint32_t* words) {
  const int L = (1 << bits) - 1;
  std::uint32_t flags = kQuantOk;
  for (int j = 0; j < n / GV; ++j) {
    GroupMeta m;
    flags |= group_params(x + j * GV, GV, 1, L, &m);
    meta[2 * j] = m.scale.bits;
    meta[2 * j + 1] = m.zero.bits;
    for (int c = j * GV; c < (j + 1) * GV; ++c) pack_code(words, c, bits, encode(x[c], m, L));
  }
  return flags;
}

// The codec the storage classes are templated on (quant/mixed_store.hpp, mixed_block_store.hpp,
// the composed cache): these scalar functions, or cpu::quant_codes::Codec (AVX2), which writes
// the same bits.
struct ScalarCodec {
  static MEMATTN_HOST_DEVICE std::uint32_t channels(const Half* const* rows, int G, int width, int bits, std::uint16_t* meta, std::uint32_t* words) {
    return quantize_channels(rows, G, width, bits, meta, words);
  }
  static MEMATTN_HOST_DEVICE std::uint32_t tokens(const Half* x, int n, int GV, int bits, std::uint16_t* meta, std::uint32_t* words) {
    return quantize_tokens(x, n, GV, bits, meta, words);
  }
};

}  // namespace quant
MEMATTN_NAMESPACE_END
