// KIVI block quantisation on the CPU: the record quant::quantize_block writes, bit for bit, from
// the vector pieces of quantize_codes.hpp (keys per channel in the token-major stream, values per
// token through a transpose into the channel-major one). Builds without AVX2 + FMA + F16C, and
// value groups that are not a multiple of 8 channels, call quant::quantize_block.
#pragma once

#include <cstddef>
#include <cstdint>

#include "memattn/cpu/quantize_codes.hpp"
#include "memattn/quant/kivi.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace kivi_quant {

// Bytes of scratch quantize_block needs (one block's codes, one byte each).
inline std::size_t scratch_bytes(const quant::KvQuantConfig& cfg) {
  return static_cast<std::size_t>(cfg.group) * static_cast<std::size_t>(cfg.head_dim);
}

// quant::quantize_block's record and flags (cfg valid; rec 4-B aligned; scratch: scratch_bytes).
inline std::uint32_t quantize_block(const quant::KvQuantConfig& cfg, const Half* const* k_rows, const Half* const* v_rows,
                                    std::uint8_t* rec, std::uint8_t* scratch) {
#if defined(MEMATTN_QUANT_AVX2)
  if (cfg.vg() % 8 == 0) {
    const quant::BlockLayout lay = quant::block_layout(cfg);
    const int G = cfg.group, D = cfg.head_dim;
    std::uint32_t flags = quant_codes::channel_groups(k_rows, G, D, cfg.levels_k(), reinterpret_cast<std::uint16_t*>(rec + lay.km), scratch);
    quant_codes::pack_stream(scratch, static_cast<std::int64_t>(G) * D, cfg.bits_k, rec + lay.kc);
    auto vm = reinterpret_cast<std::uint16_t*>(rec + lay.vm);
    for (int t = 0; t < G; ++t) {
      alignas(16) std::uint16_t m[2 * 256 / 8];  // D / GV <= 32 groups
      flags |= quant_codes::token_groups(v_rows[t], D, cfg.vg(), cfg.levels_v(), m, scratch + static_cast<std::ptrdiff_t>(t) * D);
      for (int j = 0; j < D / cfg.vg(); ++j) {  // V meta is group-major: index j G + t
        vm[2 * (j * G + t)] = m[2 * j];
        vm[2 * (j * G + t) + 1] = m[2 * j + 1];
      }
    }
    quant_codes::with_bits(cfg.bits_v, [&](auto b) { quant_codes::pack_transposed<decltype(b)::value>(scratch, G, D, rec + lay.vc); });
    return flags;
  }
#endif
  (void)scratch;
  return quant::quantize_block(cfg, k_rows, v_rows, rec);
}

}  // namespace kivi_quant
}  // namespace cpu
MEMATTN_NAMESPACE_END
