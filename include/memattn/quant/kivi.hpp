// KIVI-style KV quantisation (specs/quantization.md §3, §5): keys per channel over blocks of G
// tokens, values per token over groups of G_V channels; asymmetric min/max with fp16 scale and
// zero, 2, 4 or 8 bits chosen independently for K and V.
//
// Storage: one block record per (G tokens x one KV head), sections in this order, each 16-B aligned:
//   Kc  K codes, token-major: element e = t*D + c          G*D*b_K/8 bytes
//   Km  K meta, half2{scale, zero} per channel c           D*4 bytes
//   Vc  V codes, channel-major: element e = c*G + t        D*G*b_V/8 bytes
//   Vm  V meta, half2{scale, zero} at index j*G + t        (D/G_V)*G*4 bytes
// Codes are packed LSB-first into little-endian uint32 words as one bit stream per section (for
// D*b_K a multiple of 32 this is exactly "word t*(D*b/32) + c/(32/b)"; for D = 8 at 2 bits two
// tokens share a word). Bytes per token per KV head = record / G
//   = D*(b_K + b_V)/8 + 4*D/G + 4*D/G_V   (96 B at D = 128, K2V2, G = G_V = 32; 48 B at D = 64).
#pragma once

#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/quant/qmath.hpp"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "memattn/quant packing assumes a little-endian host");
#endif

MEMATTN_NAMESPACE_BEGIN
namespace quant {

struct KvQuantConfig {
  int head_dim = 0;
  int bits_k = 2;
  int bits_v = 2;
  int group = 32;     // G: tokens per K group and per block
  int v_group = 0;    // G_V: channels per V group; 0 = min(G, D)
  int residual = 128; // R: exact recent tokens, a multiple of G

  MEMATTN_HOST_DEVICE int vg() const { return v_group > 0 ? v_group : (group < head_dim ? group : head_dim); }
  MEMATTN_HOST_DEVICE int levels_k() const { return (1 << bits_k) - 1; }
  MEMATTN_HOST_DEVICE int levels_v() const { return (1 << bits_v) - 1; }

  // kErrorInvalidArgument for bits/group/residual/v_group, kErrorUnsupportedHeadDim for D.
  Status validate() const {
    auto bits_ok = [](int b) { return b == 2 || b == 4 || b == 8; };
    if (!bits_ok(bits_k) || !bits_ok(bits_v)) return Status::kErrorInvalidArgument;
    if (group != 32 && group != 64 && group != 128) return Status::kErrorInvalidArgument;
    if (residual < 0 || residual > 4096 || residual % group != 0) return Status::kErrorInvalidArgument;
    if (head_dim < 8 || head_dim > 256 || head_dim % 8 != 0) return Status::kErrorUnsupportedHeadDim;
    const int gv = vg();
    if (gv < 8 || gv > group || head_dim % gv != 0) return Status::kErrorInvalidArgument;
    return Status::kSuccess;
  }
};

struct BlockLayout {
  std::size_t kc, km, vc, vm, bytes;
};

MEMATTN_HOST_DEVICE BlockLayout block_layout(const KvQuantConfig& c) {
  const std::size_t G = static_cast<std::size_t>(c.group), D = static_cast<std::size_t>(c.head_dim);
  BlockLayout l{};
  l.kc = 0;
  l.km = l.kc + G * D * static_cast<std::size_t>(c.bits_k) / 8;
  l.vc = l.km + D * 4;
  l.vm = l.vc + D * G * static_cast<std::size_t>(c.bits_v) / 8;
  l.bytes = l.vm + (D / static_cast<std::size_t>(c.vg())) * G * 4;
  return l;
}

// Quantised bytes per token per KV head, metadata included.
inline double bytes_per_token(const KvQuantConfig& c) {
  return static_cast<double>(block_layout(c).bytes) / static_cast<double>(c.group);
}

// Read-only view of one block record.
struct BlockView {
  const std::uint8_t* rec;
  KvQuantConfig cfg;
  BlockLayout lay;

  MEMATTN_HOST_DEVICE const std::uint32_t* kc() const { return reinterpret_cast<const std::uint32_t*>(rec + lay.kc); }
  MEMATTN_HOST_DEVICE const std::uint32_t* vc() const { return reinterpret_cast<const std::uint32_t*>(rec + lay.vc); }
  MEMATTN_HOST_DEVICE GroupMeta k_meta(int c) const {
    const std::uint16_t* m = reinterpret_cast<const std::uint16_t*>(rec + lay.km) + 2 * c;
    return GroupMeta{Half{m[0]}, Half{m[1]}};
  }
  // V meta of token t, channel group j.
  MEMATTN_HOST_DEVICE GroupMeta v_meta(int t, int j) const {
    const std::uint16_t* m = reinterpret_cast<const std::uint16_t*>(rec + lay.vm) + 2 * (j * cfg.group + t);
    return GroupMeta{Half{m[0]}, Half{m[1]}};
  }
  MEMATTN_HOST_DEVICE std::uint32_t k_code(int t, int c) const {
    return unpack_code(kc(), static_cast<std::int64_t>(t) * cfg.head_dim + c, cfg.bits_k);
  }
  MEMATTN_HOST_DEVICE std::uint32_t v_code(int t, int c) const {
    return unpack_code(vc(), static_cast<std::int64_t>(c) * cfg.group + t, cfg.bits_v);
  }
  // Canonical fp32 values.
  MEMATTN_HOST_DEVICE float k(int t, int c) const { return decode(k_code(t, c), k_meta(c)); }
  MEMATTN_HOST_DEVICE float v(int t, int c) const { return decode(v_code(t, c), v_meta(t, c / cfg.vg())); }
};

// Quantises one block: G tokens of one KV head. k_rows[t] / v_rows[t] point at token t's D fp16
// values. Writes the whole record (rec must hold block_layout(cfg).bytes, 4-B aligned). Returns
// the OR of QuantFlags; a non-finite group is written poisoned (codes 0, meta 0x7E00).
MEMATTN_HOST_DEVICE std::uint32_t quantize_block(const KvQuantConfig& cfg, const Half* const* k_rows,
                                                 const Half* const* v_rows, std::uint8_t* rec) {
  const BlockLayout lay = block_layout(cfg);
  const int G = cfg.group, D = cfg.head_dim, GV = cfg.vg();
  const int Lv = cfg.levels_v();
  std::uint32_t flags = 0;
  std::uint32_t* kc = reinterpret_cast<std::uint32_t*>(rec + lay.kc);
  std::uint32_t* vc = reinterpret_cast<std::uint32_t*>(rec + lay.vc);
  std::uint16_t* km = reinterpret_cast<std::uint16_t*>(rec + lay.km);
  std::uint16_t* vm = reinterpret_cast<std::uint16_t*>(rec + lay.vm);
  for (std::size_t i = 0; i < (lay.km - lay.kc) / 4; ++i) kc[i] = 0;
  for (std::size_t i = 0; i < (lay.vm - lay.vc) / 4; ++i) vc[i] = 0;
  flags |= quantize_channels(k_rows, G, D, cfg.bits_k, km, kc);  // K per channel, token-major codes
  for (int t = 0; t < G; ++t) {
    for (int j = 0; j < D / GV; ++j) {
      GroupMeta m;
      flags |= group_params(v_rows[t] + j * GV, GV, 1, Lv, &m);
      vm[2 * (j * G + t)] = m.scale.bits;
      vm[2 * (j * G + t) + 1] = m.zero.bits;
      for (int c = j * GV; c < (j + 1) * GV; ++c)
        pack_code(vc, static_cast<std::int64_t>(c) * G + t, cfg.bits_v, encode(v_rows[t][c], m, Lv));
    }
  }
  return flags;
}

// Compile-time KIVI policy: Kivi<2, 2, 32> is KIVI-2, Kivi<4, 4, 32> KIVI-4.
template <int KBits, int VBits, int Group = 32>
struct Kivi {
  static_assert(KBits == 2 || KBits == 4 || KBits == 8, "K bits must be 2, 4 or 8");
  static_assert(VBits == 2 || VBits == 4 || VBits == 8, "V bits must be 2, 4 or 8");
  static_assert(Group == 32 || Group == 64 || Group == 128, "group must be 32, 64 or 128");
  static constexpr int kBitsK = KBits;
  static constexpr int kBitsV = VBits;
  static constexpr int kGroup = Group;

  static KvQuantConfig config(int head_dim, int residual = 128) {
    KvQuantConfig c;
    c.head_dim = head_dim;
    c.bits_k = KBits;
    c.bits_v = VBits;
    c.group = Group;
    c.residual = residual;
    return c;
  }
  static MEMATTN_HOST_DEVICE std::uint32_t quantize(const KvQuantConfig& cfg, const Half* const* k_rows,
                                                    const Half* const* v_rows, std::uint8_t* rec) {
    return quantize_block(cfg, k_rows, v_rows, rec);
  }
};

inline KvQuantConfig kivi2(int D) { return Kivi<2, 2>::config(D); }
inline KvQuantConfig k4v2(int D) { return Kivi<4, 2>::config(D); }
inline KvQuantConfig kivi4(int D) { return Kivi<4, 4>::config(D); }
inline KvQuantConfig k8v8(int D) { return Kivi<8, 8>::config(D); }

}  // namespace quant
MEMATTN_NAMESPACE_END
