// ggml tensor types and their dequantization to fp32, for the GGUF reader (gguf.hpp).
//
// Written from the block layouts of ggml's quantization formats (little-endian, packed):
//
//   type   block  bytes  layout (per block)                         value of element j
//   F32       1     4    float                                      x
//   F16       1     2    IEEE half                                  x
//   BF16      1     2    bfloat16 (top half of a float)             x
//   F64       1     8    double                                     (float)x
//   I8/16/32  1  1/2/4   signed integer                             (float)x
//   Q4_0     32    18    half d; u8 qs[16]                          d * (nibble - 8)
//   Q4_1     32    20    half d, m; u8 qs[16]                       d * nibble + m
//   Q5_0     32    22    half d; u8 qh[4]; u8 qs[16]                d * (nibble | hbit<<4) - 16 d
//   Q5_1     32    24    half d, m; u8 qh[4]; u8 qs[16]             d * (nibble | hbit<<4) + m
//   Q8_0     32    34    half d; i8 qs[32]                          d * qs[j]
//   Q2_K    256    84    u8 scales[16]; u8 qs[64]; half d, dmin     2-bit, 16 sub-blocks of 16
//   Q3_K    256   110    u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d  3-bit, 6-bit scales
//   Q4_K    256   144    half d, dmin; u8 scales[12]; u8 qs[128]    4-bit, 8 sub-blocks of 32
//   Q5_K    256   176    half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
//   Q6_K    256   210    u8 ql[128]; u8 qh[64]; i8 scales[16]; half d
//   Q8_K    256   292    float d; i8 qs[256]; i16 bsums[16]        d * qs[j]
//
// In the 32-element formats, element j < 16 comes from the low nibble of qs[j] and element
// j + 16 from its high nibble; the fifth bit of element j is bit j of the 32-bit qh.
// The K formats are documented at their decoder below.
//
// Other ggml types (IQ*, TQ*, MXFP4, NVFP4, Q1_0, Q8_1, I64) are known by name and size, so a
// file that holds them parses, but dequantizing them fails with an error naming the type.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace memattn_llama {

// ggml_type numbers as stored in GGUF tensor infos (gaps are retired types).
enum GgmlType : uint32_t {
  kGgmlF32 = 0,
  kGgmlF16 = 1,
  kGgmlQ4_0 = 2,
  kGgmlQ4_1 = 3,
  kGgmlQ5_0 = 6,
  kGgmlQ5_1 = 7,
  kGgmlQ8_0 = 8,
  kGgmlQ8_1 = 9,
  kGgmlQ2_K = 10,
  kGgmlQ3_K = 11,
  kGgmlQ4_K = 12,
  kGgmlQ5_K = 13,
  kGgmlQ6_K = 14,
  kGgmlQ8_K = 15,
  kGgmlIQ2_XXS = 16,
  kGgmlIQ2_XS = 17,
  kGgmlIQ3_XXS = 18,
  kGgmlIQ1_S = 19,
  kGgmlIQ4_NL = 20,
  kGgmlIQ3_S = 21,
  kGgmlIQ2_S = 22,
  kGgmlIQ4_XS = 23,
  kGgmlI8 = 24,
  kGgmlI16 = 25,
  kGgmlI32 = 26,
  kGgmlI64 = 27,
  kGgmlF64 = 28,
  kGgmlIQ1_M = 29,
  kGgmlBF16 = 30,
  kGgmlTQ1_0 = 34,
  kGgmlTQ2_0 = 35,
  kGgmlMXFP4 = 39,
  kGgmlNVFP4 = 40,
  kGgmlQ1_0 = 41,
};

struct GgmlTypeTraits {
  const char* name;     // "Q4_1"; nullptr for a number ggml does not define
  int64_t block_size;   // elements per block (row lengths must be a multiple)
  uint64_t type_size;   // bytes per block
  bool dequantizable;   // dequantize_row() supports it
};

// Traits of a ggml type number; .name == nullptr when the number is not a ggml type.
inline GgmlTypeTraits ggml_type_traits(uint32_t type) {
  switch (type) {
    case kGgmlF32: return {"F32", 1, 4, true};
    case kGgmlF16: return {"F16", 1, 2, true};
    case kGgmlQ4_0: return {"Q4_0", 32, 18, true};
    case kGgmlQ4_1: return {"Q4_1", 32, 20, true};
    case kGgmlQ5_0: return {"Q5_0", 32, 22, true};
    case kGgmlQ5_1: return {"Q5_1", 32, 24, true};
    case kGgmlQ8_0: return {"Q8_0", 32, 34, true};
    // ggml's block_q8_1 is {half d, half s, int8 qs[32]}; it is an activation format that
    // files do not hold, so it is sized but not decoded.
    case kGgmlQ8_1: return {"Q8_1", 32, 36, false};
    case kGgmlQ2_K: return {"Q2_K", 256, 84, true};
    case kGgmlQ3_K: return {"Q3_K", 256, 110, true};
    case kGgmlQ4_K: return {"Q4_K", 256, 144, true};
    case kGgmlQ5_K: return {"Q5_K", 256, 176, true};
    case kGgmlQ6_K: return {"Q6_K", 256, 210, true};
    case kGgmlQ8_K: return {"Q8_K", 256, 292, true};
    case kGgmlIQ2_XXS: return {"IQ2_XXS", 256, 66, false};
    case kGgmlIQ2_XS: return {"IQ2_XS", 256, 74, false};
    case kGgmlIQ3_XXS: return {"IQ3_XXS", 256, 98, false};
    case kGgmlIQ1_S: return {"IQ1_S", 256, 50, false};
    case kGgmlIQ4_NL: return {"IQ4_NL", 32, 18, false};
    case kGgmlIQ3_S: return {"IQ3_S", 256, 110, false};
    case kGgmlIQ2_S: return {"IQ2_S", 256, 82, false};
    case kGgmlIQ4_XS: return {"IQ4_XS", 256, 136, false};
    case kGgmlI8: return {"I8", 1, 1, true};
    case kGgmlI16: return {"I16", 1, 2, true};
    case kGgmlI32: return {"I32", 1, 4, true};
    case kGgmlI64: return {"I64", 1, 8, false};
    case kGgmlF64: return {"F64", 1, 8, true};
    case kGgmlIQ1_M: return {"IQ1_M", 256, 56, false};
    case kGgmlBF16: return {"BF16", 1, 2, true};
    case kGgmlTQ1_0: return {"TQ1_0", 256, 54, false};
    case kGgmlTQ2_0: return {"TQ2_0", 256, 66, false};
    case kGgmlMXFP4: return {"MXFP4", 32, 17, false};
    case kGgmlNVFP4: return {"NVFP4", 64, 36, false};
    case kGgmlQ1_0: return {"Q1_0", 128, 18, false};
    default: return {nullptr, 0, 0, false};
  }
}

// "Q4_1 (3)", or "unknown (5)".
inline std::string ggml_type_label(uint32_t type) {
  const GgmlTypeTraits t = ggml_type_traits(type);
  return std::string(t.name ? t.name : "unknown") + " (" + std::to_string(type) + ")";
}

namespace gguf_detail {

inline uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t load_u64(const uint8_t* p) {
  return static_cast<uint64_t>(load_u32(p)) | (static_cast<uint64_t>(load_u32(p + 4)) << 32);
}
inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float load_f32(const uint8_t* p) { return bits_to_f32(load_u32(p)); }
inline double load_f64(const uint8_t* p) {
  const uint64_t u = load_u64(p);
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

// IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
inline float half_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_to_f32(sign);
  // Subnormal half: value = mant * 2^-24, exactly representable as a normal float.
  const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;  // 2^-24
  return sign ? -v : v;
}
inline float load_half(const uint8_t* p) { return half_to_f32(load_u16(p)); }
inline float bf16_to_f32(uint16_t b) { return bits_to_f32(static_cast<uint32_t>(b) << 16); }

// Q2_K..Q5_K pack 6-bit (scale, min) pairs for 8 sub-blocks into 12 bytes: pairs 0..3 are the
// low 6 bits of bytes 0..3 (scale) and 4..7 (min); pairs 4..7 take their low 4 bits from the
// nibbles of bytes 8..11 (scale: low nibble, min: high nibble) and their top 2 bits from the
// top 2 bits of bytes 0..3 (scale) and 4..7 (min).
inline void k4_scale_min(int j, const uint8_t* s, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

inline void deq_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((qs[j] & 0x0f) - 8);
    y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

inline void deq_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float m = load_half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
    y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

inline void deq_q5_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint32_t qh = load_u32(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = static_cast<int>((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4));
    const int hi = static_cast<int>((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = d * static_cast<float>(lo - 16);
    y[j + 16] = d * static_cast<float>(hi - 16);
  }
}

inline void deq_q5_1(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float m = load_half(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = static_cast<int>((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4));
    const int hi = static_cast<int>((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = d * static_cast<float>(lo) + m;
    y[j + 16] = d * static_cast<float>(hi) + m;
  }
}

inline void deq_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(b[2 + j]));
}

// Q2_K: 16 sub-blocks of 16. Byte scales[i]: low nibble scales, high nibble mins (times d and
// dmin). Each 128-element half uses 32 qs bytes; element 32*s + l of the half (s = 0..3
// shift step, l = 0..31) is bits 2s..2s+1 of qs[l], with sub-block 2s + (l >= 16).
inline void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = load_half(b + 80);
  const float dmin = load_half(b + 82);
  int is = 0;
  for (int half = 0; half < 2; ++half) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0x0f);
        const float ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[16 * part + l] >> shift) & 3) - ml;
      }
    }
    q += 32;
  }
}

// Q3_K: 16 sub-blocks of 16 with signed 6-bit scales (stored + 32): scale k has its low 4 bits
// in the nibble (k / 8) of byte k % 8 and its top 2 bits at bits 2*(k / 4) of byte 8 + k % 4.
// Element values: 2 low bits from qs as in Q2_K, minus 4 when the element's hmask bit is clear.
inline void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* q = b + 32;
  const uint8_t* s = b + 96;
  const float d = load_half(b + 108);
  int scale[16];
  for (int k = 0; k < 16; ++k) {
    const int low = (k < 8) ? (s[k] & 0x0f) : (s[k - 8] >> 4);
    const int high = (s[8 + (k % 4)] >> (2 * (k / 4))) & 3;
    scale[k] = (low | (high << 4)) - 32;
  }
  int is = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d * static_cast<float>(scale[is++]);
        for (int l = 0; l < 16; ++l) {
          const int idx = 16 * part + l;
          const int v = ((q[idx] >> shift) & 3) - ((hmask[idx] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      m = static_cast<uint8_t>(m << 1);
    }
    q += 32;
  }
}

// Q4_K: 8 sub-blocks of 32, (scale, min) pairs from k4_scale_min; each 64 elements use 32 qs
// bytes: the first 32 elements their low nibbles, the next 32 their high nibbles.
inline void deq_q4_k(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int g = 0; g < 4; ++g) {
    int sc, mn;
    k4_scale_min(2 * g, scales, &sc, &mn);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
    k4_scale_min(2 * g + 1, scales, &sc, &mn);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
  }
}

// Q5_K: Q4_K plus a fifth bit: for 64-element group g, bit 2g (first 32) or 2g+1 (next 32)
// of qh[l].
inline void deq_q5_k(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + 48;
  for (int g = 0; g < 4; ++g) {
    int sc, mn;
    k4_scale_min(2 * g, scales, &sc, &mn);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
    k4_scale_min(2 * g + 1, scales, &sc, &mn);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
    for (int l = 0; l < 32; ++l) {
      const int v = (q[l] & 0x0f) | (((qh[l] >> (2 * g)) & 1) << 4);
      *y++ = d1 * static_cast<float>(v) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int v = (q[l] >> 4) | (((qh[l] >> (2 * g + 1)) & 1) << 4);
      *y++ = d2 * static_cast<float>(v) - m2;
    }
    q += 32;
  }
}

// Q6_K: 16 sub-blocks of 16 with int8 scales; 6-bit values minus 32. In each 128-element half
// (ql advancing by 64, qh by 32, scales by 8), element l + 32 r (r = 0..3, l = 0..31) takes
// its low nibble from ql[l + 32 (r & 1)] (low nibble for r < 2, high for r >= 2), its top two
// bits from bits 2r..2r+1 of qh[l], and uses scale l / 16 + 2 r.
inline void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  for (int half = 0; half < 2; ++half) {
    for (int r = 0; r < 4; ++r) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lowbyte = ql[l + 32 * (r & 1)];
        const int low = (r < 2) ? (lowbyte & 0x0f) : (lowbyte >> 4);
        const int high = (qh[l] >> (2 * r)) & 3;
        const int v = (low | (high << 4)) - 32;
        y[32 * r + l] = d * static_cast<float>(sc[l / 16 + 2 * r]) * static_cast<float>(v);
      }
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

inline void deq_q8_k(const uint8_t* b, float* y) {
  const float d = load_f32(b);
  for (int j = 0; j < 256; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(b[4 + j]));
}

}  // namespace gguf_detail

// Dequantizes n elements of ggml type `type` from src (n / block_size blocks, packed) into out.
// Returns false, writing nothing, when the type cannot be dequantized or n is not a multiple
// of the type's block size. The caller guarantees src holds n / block_size * type_size bytes.
inline bool dequantize_row(uint32_t type, const uint8_t* src, int64_t n, float* out) {
  namespace d = gguf_detail;
  const GgmlTypeTraits t = ggml_type_traits(type);
  if (!t.name || !t.dequantizable || n < 0 || n % t.block_size != 0) return false;
  const int64_t nb = n / t.block_size;
  switch (type) {
    case kGgmlF32:
      for (int64_t i = 0; i < n; ++i) out[i] = d::load_f32(src + 4 * i);
      return true;
    case kGgmlF16:
      for (int64_t i = 0; i < n; ++i) out[i] = d::load_half(src + 2 * i);
      return true;
    case kGgmlBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = d::bf16_to_f32(d::load_u16(src + 2 * i));
      return true;
    case kGgmlF64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(d::load_f64(src + 8 * i));
      return true;
    case kGgmlI8:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int8_t>(src[i]));
      return true;
    case kGgmlI16:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int16_t>(d::load_u16(src + 2 * i)));
      return true;
    case kGgmlI32:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int32_t>(d::load_u32(src + 4 * i)));
      return true;
    default: break;
  }
  void (*block_fn)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case kGgmlQ4_0: block_fn = d::deq_q4_0; break;
    case kGgmlQ4_1: block_fn = d::deq_q4_1; break;
    case kGgmlQ5_0: block_fn = d::deq_q5_0; break;
    case kGgmlQ5_1: block_fn = d::deq_q5_1; break;
    case kGgmlQ8_0: block_fn = d::deq_q8_0; break;
    case kGgmlQ2_K: block_fn = d::deq_q2_k; break;
    case kGgmlQ3_K: block_fn = d::deq_q3_k; break;
    case kGgmlQ4_K: block_fn = d::deq_q4_k; break;
    case kGgmlQ5_K: block_fn = d::deq_q5_k; break;
    case kGgmlQ6_K: block_fn = d::deq_q6_k; break;
    case kGgmlQ8_K: block_fn = d::deq_q8_k; break;
    default: return false;
  }
  for (int64_t i = 0; i < nb; ++i) block_fn(src + i * t.type_size, out + i * t.block_size);
  return true;
}

}  // namespace memattn_llama
