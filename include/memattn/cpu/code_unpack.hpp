// Packed quantisation codes (quant/qmath.hpp layout: one LSB-first bit stream in little-endian
// uint32 words) as exact small-integer floats, for the CPU decodes of the KIVI, MiKV and composed
// caches. 2-, 4- and 8-bit codes go through a byte -> floats table (one 16/8-byte copy per code
// byte instead of a shift, mask and convert per code: unpacking was most of the KIVI decode time);
// other widths (3 bits: 10 codes per word) and big-endian hosts take the per-code path.
#pragma once

#include <cstdint>
#include <cstring>

#include "memattn/quant/qmath.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace unpack_detail {

template <int kBits>
struct ByteTable {
  static constexpr int kPer = 8 / kBits;
  float v[256][kPer];
  ByteTable() {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < kPer; ++j) v[b][j] = static_cast<float>((b >> (j * kBits)) & ((1 << kBits) - 1));
  }
};

template <int kBits>
void bytes_to_floats(const std::uint8_t* src, std::int64_t n_bytes, float* dst) {
  static const ByteTable<kBits> table;
  constexpr int kPer = 8 / kBits;
  for (std::int64_t i = 0; i < n_bytes; ++i) std::memcpy(dst + i * kPer, table.v[src[i]], sizeof(table.v[0]));
}

inline bool little_endian() {
  const std::uint32_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

}  // namespace unpack_detail

// Codes [0, count) of the stream that starts at word w, into dst[0, count).
inline void unpack_codes(const std::uint32_t* w, std::int64_t count, int bits, float* dst) {
  std::int64_t done = 0;
  if ((bits == 2 || bits == 4 || bits == 8) && unpack_detail::little_endian()) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(w);
    const int per = 8 / bits;
    const std::int64_t full = count / per;
    if (bits == 2) unpack_detail::bytes_to_floats<2>(bytes, full, dst);
    if (bits == 4) unpack_detail::bytes_to_floats<4>(bytes, full, dst);
    if (bits == 8)
      for (std::int64_t i = 0; i < full; ++i) dst[i] = static_cast<float>(bytes[i]);
    done = full * per;
  }
  for (std::int64_t i = done; i < count; ++i) dst[i] = static_cast<float>(quant::unpack_code(w, i, bits));
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
