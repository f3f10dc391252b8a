// Fragment bookkeeping of the tensor-core decode over the composed cache's KIVI region
// (think_decode_mma.cuh): which key, channel and code each register of a lane holds in the
// mma.m16n8k16 (fp16 inputs, fp32 accumulation) products, and the bit tricks that turn packed
// 2- / 4-bit codes into fp16 pairs. Host-compilable, so that a CPU test can emulate a warp
// (tests/cpu/test_think_mma_layout.cpp) with the PTX ISA's fragment layout:
//   A (16x16, row): lane holds rows g, g+8 x cols 2t, 2t+1 (regs 0, 1) and 2t+8, 2t+9 (regs 2, 3)
//   B (16x8, col):  lane holds rows 2t, 2t+1 (reg 0) and 2t+8, 2t+9 (reg 1) x col g
//   C (16x8):       lane holds rows g (c0, c1), g+8 (c2, c3) x cols 2t, 2t+1
// with g = lane / 4, t = lane % 4.
//
// The products (per KV head, g <= 8 query heads, a tile of 32 keys):
//   logits  S[16 x 8 keys]  = A[16 x 16 slots] * B[16 slots x 8 keys]: A rows 0-7 hold the hi
//           fp16 half of q' = q~ s 2^(15 - k - sh), the product of q~ = tau log2(e) q 2^e (per
//           head, set once per split), the key scale of the kept channel (per block) and the
//           power of two that the code at bit k of its half lacks (sh: per block, for |s| >= 1),
//           rows 8-15 the lo half (the product's exact rounding error + q~'s lo half times it), so
//           a lane's c0 + c2 is 2^(-9 - sh) times a head's logit to ~2^-22; B = the codes as fp16
//           subnormals c 2^(k - 24) (code_pair: the masked bits, nothing else). The zero
//           points enter as one more product per block, q~ (hi / lo) times B = z of the slots, the
//           same for every key column.
//   values  O^T[16 ch x 8 heads] += V^T[16 ch x 16 keys] * P^T[16 keys x 8 heads]: V^T = the
//           fp16 values c s_v + z_v of the keys (one HFMA2 per pair on the subnormal codes, with
//           the warp's power-of-two prescale in s_v and z_v), rows g / g + 8 of m-tile mt = the
//           lane's value channels 2 mt / 2 mt + 1 (pv_channel); P^T = fp16 p, column g = head g
// The QK result is P^T's B fragment without any data movement (the C layout of two n-tiles, head
// g x keys 2t, 2t + 1, is the B layout of one k-step) because the key columns of the QK n-tiles
// are permuted (qk_key) to the order the PV k-step wants (pv_key); channels are permuted freely
// inside the reductions (the sums do not care) so that each lane reads contiguous codes: 8
// kept-key slots per chunk, and D / 8 consecutive value channels (inside one value group) per key.
//
// Codes to fp16: the masked bits of a code at bit k of a 16-bit half are, with the half's exponent
// field zero, the fp16 subnormal 2^(k - 24) c, exact; the power of two goes into q' (keys) or into
// the scale of the one HFMA2 that dequantises a value pair. (Quantization spec 6.5 ORs the fp16
// 1024 in and removes it with an HFMA2 per pair instead; that HFMA2 is gone.) Codes past the
// first byte of a half take one shift by 8 per word.
#pragma once

#include <cstdint>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace think_mma {

constexpr int kTileKeys = 32;        // keys per tile: 4 QK n-tiles, 2 PV k-steps
constexpr int kChunkChannels = 32;   // kept key channels per chunk: 2 QK k-steps, 8 per lane

MEMATTN_HOST_DEVICE int row_group(int lane) { return lane >> 2; }
MEMATTN_HOST_DEVICE int quad(int lane) { return lane & 3; }

// Key (0..31 in the tile) of column `col` of QK n-tile n (0..3). A lane's 4 PV keys are 4 apart
// (pv_lane_key), so that the 4 lanes of a quad read rows in different shared-memory banks.
// ps (the key pair stride) is the distance of the two keys in a PV B register: 4, or 8 for the
// channel-major 2-bit value codes of KIVI cache records (a code word of one channel holds 16 keys,
// and one mask picks keys i and i + 8 out of its two 16-bit halves): the B registers of lane quad
// t hold keys (t, t + ps) and (t + 12 - ps, t + 12) of the k-step.
MEMATTN_HOST_DEVICE int qk_key(int n, int col, int ps = 4) {
  return 16 * (n >> 1) + (col >> 1) + (12 - ps) * (n & 1) + ps * (col & 1);
}
// Kept-channel slot of k-slot k (0..15) of QK k-step j: chunk j / 2, lane quad t = (k % 8) / 2
// owns slots [32 (j / 2) + 8 t, + 8), in the order codes8_to_pairs produces them.
MEMATTN_HOST_DEVICE int qk_channel(int j, int k) {
  return kChunkChannels * (j >> 1) + 8 * ((k & 7) >> 1) + 2 * (j & 1) + (k >> 3) + 4 * (k & 1);
}
// Key (0..31) of k-slot k of PV k-step m (0, 1): the QK C columns of n-tiles 2m, 2m + 1.
MEMATTN_HOST_DEVICE int pv_key(int m, int k, int ps = 4) { return 16 * m + ((k & 7) >> 1) + (12 - ps) * (k >> 3) + ps * (k & 1); }
// Value channel n (0 .. lane_ch - 1) of lane row group col: it owns the D / 8 = lane_ch
// consecutive channels [lane_ch col, + lane_ch); in PV m-tile mt, channels 2 mt and 2 mt + 1 are
// its rows col and col + 8.
MEMATTN_HOST_DEVICE int pv_channel(int n, int col, int lane_ch) { return lane_ch * col + n; }

// What a lane reads: the first of its 8 kept-channel slots in chunk c (QK), its key i (0..3: A
// slots 2t, 2t + 1, 2t + 8, 2t + 9) in PV k-step m; the layout functions above name the same
// elements (tests/cpu/test_think_mma_layout.cpp checks it).
MEMATTN_HOST_DEVICE int qk_lane_slot(int c, int t) { return kChunkChannels * c + 8 * t; }
MEMATTN_HOST_DEVICE int pv_lane_key(int m, int t, int i, int ps = 4) { return 16 * m + t + ps * (i & 1) + (12 - ps) * (i >> 1); }

// Bit position kBits i' (i' = i mod (8 / kBits)) at which code_pair leaves position i's codes.
template <int kBits>
MEMATTN_HOST_DEVICE constexpr int code_shift(int i) {
  return kBits * (i % (8 / kBits));
}
// Position i of the kBits codes in the two 16-bit halves of x, masked where they lie: the fp16
// subnormals (2^(k - 24) c_lo, 2^(k - 24) c_hi), k = code_shift(i) (bit k of a half with a zero
// exponent field is 2^(k - 24)), exact; positions in the second byte of a half read x >> 8. The
// power of two goes into the other factor (think_decode_mma.cuh: q', or the values' scale).
template <int kBits>
MEMATTN_HOST_DEVICE std::uint32_t code_pair(std::uint32_t x, int i) {
  static_assert(kBits == 2 || kBits == 4, "2- or 4-bit codes");
  constexpr int kPerByte = 8 / kBits;
  constexpr std::uint32_t mask = kBits == 2 ? 0x00030003u : 0x000F000Fu;
  const std::uint32_t src = i < kPerByte ? x : x >> 8;
  return src & (mask << code_shift<kBits>(i));
}
// The fp16 pair (2^e, 2^e) for e in [-14, 15] (a normal power of two).
MEMATTN_HOST_DEVICE constexpr std::uint32_t pow2_pair(int e) {
  return static_cast<std::uint32_t>(e + 15) << 10 | static_cast<std::uint32_t>(e + 15) << 26;
}

// 8 key codes of kBits packed LSB-first in the low 8 * kBits bits of w -> 4 subnormal pairs:
// out[i] = code_pair of (code i, code i + 4). QK k-step 2c takes out[0], out[1] as its B
// registers, k-step 2c + 1 out[2], out[3] (qk_channel).
template <int kBits>
MEMATTN_HOST_DEVICE void codes8_to_pairs(std::uint32_t w, std::uint32_t (&out)[4]) {
  static_assert(kBits == 2 || kBits == 4, "2- or 4-bit codes");
  if (kBits == 2) w = (w & 0xFFFFu) | ((w & 0xFF00u) << 8);  // codes 4..7 to bits 16.. of the high half
  for (int i = 0; i < 4; ++i) out[i] = code_pair<kBits>(w, i);
}

// The 16-bit half `upper` of a and of b in one word (a low): PV B pairs of keys a and b.
MEMATTN_HOST_DEVICE std::uint32_t halves(std::uint32_t a, std::uint32_t b, bool upper) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, upper ? 0x7632u : 0x5410u);  // one PRMT (the C form compiles to two ops)
#else
  return upper ? (a >> 16) | (b & 0xFFFF0000u) : (a & 0xFFFFu) | (b << 16);
#endif
}

}  // namespace think_mma
}  // namespace kernels
MEMATTN_NAMESPACE_END
