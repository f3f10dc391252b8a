// Storage dtypes: fp32, fp16 (Half), bf16 (BFloat16). Half and BFloat16 are 2-byte PODs that are
// layout-compatible with __half / __nv_bfloat16, so kernels reinterpret the same buffers. The
// conversions are written once for host and device: round-to-nearest-even, NaN payload kept
// (quietened, as F16C and the GPU do), Inf kept, overflow to Inf, fp16 subnormals exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN

enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct Half {
  std::uint16_t bits;
};
struct BFloat16 {
  std::uint16_t bits;
};
static_assert(sizeof(Half) == 2 && alignof(Half) == 2, "Half must be 2 bytes");
static_assert(sizeof(BFloat16) == 2 && alignof(BFloat16) == 2, "BFloat16 must be 2 bytes");

MEMATTN_HOST_DEVICE std::uint32_t float_to_bits(float f) {
#if MEMATTN_DEVICE_COMPILE
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

MEMATTN_HOST_DEVICE float bits_to_float(std::uint32_t u) {
#if MEMATTN_DEVICE_COMPILE
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

MEMATTN_HOST_DEVICE Half float_to_half(float f) {
  std::uint32_t x = float_to_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  std::uint16_t out;
  if (x >= 0x7f800000u) {  // Inf or NaN: keep the top payload bits and force a quiet NaN.
    out = static_cast<std::uint16_t>(0x7c00u | (x > 0x7f800000u ? (0x200u | ((x >> 13) & 0x3ffu)) : 0u));
  } else if (x >= 0x477ff000u) {  // >= 65520 rounds (to even) past the largest half: Inf.
    out = 0x7c00u;
  } else if (x >= 0x38800000u) {  // normal half: rebias exponent, round mantissa to even.
    const std::uint32_t odd = (x >> 13) & 1u;
    out = static_cast<std::uint16_t>((x + 0xc8000fffu + odd) >> 13);
  } else {  // subnormal half or zero: adding 0.5 aligns units to 2^-24 and the FPU rounds to even.
    const float r = bits_to_float(x) + 0.5f;
    out = static_cast<std::uint16_t>(float_to_bits(r) - 0x3f000000u);
  }
  return Half{static_cast<std::uint16_t>(sign | out)};
}

MEMATTN_HOST_DEVICE float half_to_float(Half h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  const std::uint32_t em = h.bits & 0x7fffu;
  if (em > 0x7c00u) return bits_to_float(sign | 0x7fc00000u | ((em & 0x3ffu) << 13));  // quiet NaN, payload kept
  if (em == 0x7c00u) return bits_to_float(sign | 0x7f800000u);
  if (em >= 0x0400u) return bits_to_float(sign | ((em << 13) + 0x38000000u));
  const float mag = static_cast<float>(em) * 5.9604644775390625e-8f;  // em * 2^-24, exact
  return bits_to_float(sign | float_to_bits(mag));
}

MEMATTN_HOST_DEVICE BFloat16 float_to_bfloat16(float f) {
  const std::uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<std::uint16_t>((x >> 16) | 0x40u)};
  const std::uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return BFloat16{static_cast<std::uint16_t>(rounded >> 16)};
}

MEMATTN_HOST_DEVICE float bfloat16_to_float(BFloat16 b) {
  return bits_to_float(static_cast<std::uint32_t>(b.bits) << 16);
}

// Generic access for templated code: to_float(x) and from_float<T>(f).
MEMATTN_HOST_DEVICE float to_float(float x) { return x; }
MEMATTN_HOST_DEVICE float to_float(Half x) { return half_to_float(x); }
MEMATTN_HOST_DEVICE float to_float(BFloat16 x) { return bfloat16_to_float(x); }

template <class T>
struct FromFloat;
template <>
struct FromFloat<float> {
  MEMATTN_HOST_DEVICE static float convert(float f) { return f; }
};
template <>
struct FromFloat<Half> {
  MEMATTN_HOST_DEVICE static Half convert(float f) { return float_to_half(f); }
};
template <>
struct FromFloat<BFloat16> {
  MEMATTN_HOST_DEVICE static BFloat16 convert(float f) { return float_to_bfloat16(f); }
};
template <class T>
MEMATTN_HOST_DEVICE T from_float(float f) {
  return FromFloat<T>::convert(f);
}

template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<Half> {
  static constexpr DType value = DType::kF16;
};
template <>
struct DTypeOf<BFloat16> {
  static constexpr DType value = DType::kBF16;
};

constexpr std::size_t dtype_size(DType t) noexcept { return t == DType::kF32 ? 4 : 2; }

inline const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::kF32: return "fp32";
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
  }
  return "unknown";
}

MEMATTN_NAMESPACE_END
