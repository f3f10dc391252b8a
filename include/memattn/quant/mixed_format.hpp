// MiKV mixed-precision storage format (specs/quantization.md §8.1, §8.5): one record per token and
// KV head, K and V quantised per token in `groups` groups of D/groups channels (default 2: groups
// of head_dim/2, so a group never straddles a rotate_half RoPE pair c, c + D/2), asymmetric
// min/max with fp16 half2{scale, zero} per group and the directed rounding of quant/qmath.hpp.
// Used by the low tier (2, 3 or 4 bits) and by the INT8 high tier of the mixed cache; the same
// record is read by the CPU decode (cpu/mikv_decode.hpp) and the CUDA kernel (mikv_decode.cuh).
//
// Record, sections in this order, each 4-B aligned:
//   Kc  K codes of channels 0..D-1 as one LSB-first bit stream in uint32 words: element c in word
//       c / (32/b) at bit (c mod (32/b))*b   ceil(D / (32/b)) words
//   Vc  V codes, same stream                 ceil(D / (32/b)) words
//   Km  half2{scale, zero} per K group       groups*4 bytes
//   Vm  half2{scale, zero} per V group       groups*4 bytes
// 3-bit codes pack 10 per word (2 bits per word unused): 28 B per D = 64 row instead of 24 [lib].
// Bytes per token at D = 64: 2-bit 48, 3-bit 72, 4-bit 80, 8-bit 144 (fp16: 256).
//
// Channel balancer (§8.5, MiKV Eqs. 2-4): K is stored as Q(k_c * b_c) and read as decode / b_c, so
// the decode folds 1/b_c into the query (q_c / b_c, exact for power-of-two b). V is never balanced.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/quant/qmath.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace quant {

struct MixedRowConfig {
  int head_dim = 0;
  int bits = 2;    // 2, 3, 4 or 8
  int groups = 2;  // per-token groups of head_dim / groups channels (MiKV: 2)

  MEMATTN_HOST_DEVICE int group_size() const { return head_dim / groups; }
  MEMATTN_HOST_DEVICE int levels() const { return (1 << bits) - 1; }
  MEMATTN_HOST_DEVICE int per_word() const { return 32 / bits; }
  MEMATTN_HOST_DEVICE int code_words() const { return (head_dim + per_word() - 1) / per_word(); }

  Status validate() const {
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8) return Status::kErrorInvalidArgument;
    if (head_dim < 8 || head_dim > 256 || head_dim % 8 != 0) return Status::kErrorUnsupportedHeadDim;
    if (groups < 1 || head_dim % groups != 0) return Status::kErrorInvalidArgument;
    return Status::kSuccess;
  }
};

struct MixedRowLayout {
  std::size_t kc, vc, km, vm, bytes;
};

MEMATTN_HOST_DEVICE MixedRowLayout mixed_row_layout(const MixedRowConfig& c) {
  MixedRowLayout l{};
  const std::size_t words = static_cast<std::size_t>(c.code_words());
  l.kc = 0;
  l.vc = l.kc + 4 * words;
  l.km = l.vc + 4 * words;
  l.vm = l.km + 4 * static_cast<std::size_t>(c.groups);
  l.bytes = l.vm + 4 * static_cast<std::size_t>(c.groups);
  return l;
}

// Read-only view of one token record.
struct MixedRowView {
  const std::uint8_t* rec;
  MixedRowConfig cfg;
  MixedRowLayout lay;

  MEMATTN_HOST_DEVICE const std::uint32_t* kc() const { return reinterpret_cast<const std::uint32_t*>(rec + lay.kc); }
  MEMATTN_HOST_DEVICE const std::uint32_t* vc() const { return reinterpret_cast<const std::uint32_t*>(rec + lay.vc); }
  MEMATTN_HOST_DEVICE GroupMeta meta(std::size_t off, int j) const {
    const std::uint16_t* m = reinterpret_cast<const std::uint16_t*>(rec + off) + 2 * j;
    return GroupMeta{Half{m[0]}, Half{m[1]}};
  }
  MEMATTN_HOST_DEVICE GroupMeta k_meta(int j) const { return meta(lay.km, j); }
  MEMATTN_HOST_DEVICE GroupMeta v_meta(int j) const { return meta(lay.vm, j); }
  MEMATTN_HOST_DEVICE std::uint32_t k_code(int c) const { return unpack_code(kc(), c, cfg.bits); }
  MEMATTN_HOST_DEVICE std::uint32_t v_code(int c) const { return unpack_code(vc(), c, cfg.bits); }
  // Canonical fp32 values; k is in the balanced domain (divide by b_c for the key itself).
  MEMATTN_HOST_DEVICE float k_balanced(int c) const { return decode(k_code(c), k_meta(c / cfg.group_size())); }
  MEMATTN_HOST_DEVICE float v(int c) const { return decode(v_code(c), v_meta(c / cfg.group_size())); }
};

// Quantises one token: k_bal[c] = k_c * b_c and v[c] (fp16, D values each) into rec (record bytes,
// 4-B aligned). Returns the OR of QuantFlags (a non-finite group is written poisoned). Codec:
// quant::ScalarCodec or one that writes the same bits (cpu::quant_codes::Codec).
template <class Codec = ScalarCodec>
MEMATTN_HOST_DEVICE std::uint32_t quantize_row(const MixedRowConfig& cfg, const Half* k_bal, const Half* v,
                                               std::uint8_t* rec) {
  const MixedRowLayout lay = mixed_row_layout(cfg);
  std::uint32_t* kc = reinterpret_cast<std::uint32_t*>(rec + lay.kc);
  std::uint32_t* vc = reinterpret_cast<std::uint32_t*>(rec + lay.vc);
  for (int i = 0; i < cfg.code_words(); ++i) kc[i] = vc[i] = 0;
  const int D = cfg.head_dim, GS = cfg.group_size();
  return Codec::tokens(k_bal, D, GS, cfg.bits, reinterpret_cast<std::uint16_t*>(rec + lay.km), kc) |
         Codec::tokens(v, D, GS, cfg.bits, reinterpret_cast<std::uint16_t*>(rec + lay.vm), vc);
}

// ---- channel balancer (§8.5) ----------------------------------------------------------------
// b_c = clamp(sqrt(max|q_c| / max|k_c|), 2^-8, 2^8), 1 when either max is 0; rounded to a power of
// two unless exact_sqrt. [lib] guard: b_c is lowered (halved, or set to 2^14 / max|k_c| when exact)
// until max|k_c| * b_c <= 2^14, so balanced keys stay far inside the fp16 range of the codes' input.
MEMATTN_HOST_DEVICE float balancer_factor(float qmax, float kmax, bool exact_sqrt) {
  if (!(qmax > 0.f) || !(kmax > 0.f)) return 1.f;
  double b = sqrt(static_cast<double>(qmax) / static_cast<double>(kmax));
  b = b < 0x1p-8 ? 0x1p-8 : (b > 0x1p8 ? 0x1p8 : b);
  if (!exact_sqrt) b = exp2(rint_half_even(log2(b)));
  const double limit = 0x1p14 / static_cast<double>(kmax);
  if (b > limit) {
    if (exact_sqrt) {
      b = limit;
    } else {
      while (b > limit && b > 0x1p-8) b *= 0.5;
    }
  }
  return static_cast<float>(b);
}

}  // namespace quant
MEMATTN_NAMESPACE_END
