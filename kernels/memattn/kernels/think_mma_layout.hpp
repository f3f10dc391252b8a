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
//           fp16 half of q~ = tau log2(e) q[ch] s[ch] 2^e per head, rows 8-15 the lo half
//           (q~ - hi), so a lane's c0 + c2 is a head's logit with ~22 bits of q~ while the codes
//           enter exactly (small integers are exact in fp16); B = codes of the kept channels
//   values  O[16 x 8 ch]  += P[16 x 16 keys] * V[16 keys x 8 ch]: P rows 0-7 / 8-15 the hi / lo
//           halves of p * s_v * 2^e of a value group, V = value codes
// The QK result is P's A fragment without any data movement (the C layout of two n-tiles is the
// A layout of one k-step) because the key columns of the QK n-tiles are permuted (qk_key) to the
// order the PV k-step wants (pv_key); channels are permuted freely inside the reductions (the
// sums do not care) so that each lane reads contiguous codes.
#pragma once

#include <cstdint>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace think_mma {

constexpr int kTileKeys = 32;        // keys per tile: 4 QK n-tiles, 2 PV k-steps
constexpr int kChunkChannels = 32;   // kept key channels per chunk: 2 QK k-steps, 8 per lane
constexpr int kUnitChannels = 32;    // value channels per unit: 4 PV n-tiles, 4 per lane
constexpr std::uint32_t kMagic = 0x64006400u;  // fp16 pair (1024, 1024): 1024 + c for c < 1024 in the mantissa

MEMATTN_HOST_DEVICE int row_group(int lane) { return lane >> 2; }
MEMATTN_HOST_DEVICE int quad(int lane) { return lane & 3; }

// Key (0..31 in the tile) of column `col` of QK n-tile n (0..3). A lane's 4 PV keys are 4 apart
// (pv_lane_key), so that the 4 lanes of a quad read rows in different shared-memory banks.
MEMATTN_HOST_DEVICE int qk_key(int n, int col) { return 16 * (n >> 1) + (col >> 1) + 8 * (n & 1) + 4 * (col & 1); }
// Kept-channel slot of k-slot k (0..15) of QK k-step j: chunk j / 2, lane quad t = (k % 8) / 2
// owns slots [32 (j / 2) + 8 t, + 8), in the order codes8_to_pairs produces them.
MEMATTN_HOST_DEVICE int qk_channel(int j, int k) {
  return kChunkChannels * (j >> 1) + 8 * ((k & 7) >> 1) + 2 * (j & 1) + (k >> 3) + 4 * (k & 1);
}
// Key (0..31) of k-slot k of PV k-step m (0, 1): the QK C columns of n-tiles 2m, 2m + 1.
MEMATTN_HOST_DEVICE int pv_key(int m, int k) { return 16 * m + ((k & 7) >> 1) + 8 * (k >> 3) + 4 * (k & 1); }
// Value channel of column col of PV n-tile n (0..D/8): unit n / 4 (32 channels, one value group
// or part of one), lane row group col owns channels [32 (n / 4) + 4 col, + 4).
MEMATTN_HOST_DEVICE int pv_channel(int n, int col) { return kUnitChannels * (n >> 2) + 4 * col + (n & 3); }

// What a lane reads: the first of its 8 kept-channel slots in chunk c (QK), its key i (0..3: A
// slots 2t, 2t + 1, 2t + 8, 2t + 9) in PV k-step m, the first of its 4 value channels in unit u;
// the layout functions above name the same elements (tests/cpu/test_think_mma_layout.cpp checks it).
MEMATTN_HOST_DEVICE int qk_lane_slot(int c, int t) { return kChunkChannels * c + 8 * t; }
MEMATTN_HOST_DEVICE int pv_lane_key(int m, int t, int i) { return 16 * m + t + 4 * i; }
MEMATTN_HOST_DEVICE int pv_lane_channel(int u, int g) { return kUnitChannels * u + 4 * g; }

// 8 codes of kBits (2 or 4) packed LSB-first in the low 8 * kBits bits of w -> 4 magic-biased fp16
// pairs: out[i] = (1024 + code i, 1024 + code i + 4). QK k-step 2c takes out[0], out[1] as its B
// registers, k-step 2c + 1 out[2], out[3] (qk_channel).
template <int kBits>
MEMATTN_HOST_DEVICE void codes8_to_pairs(std::uint32_t w, std::uint32_t (&out)[4]) {
  static_assert(kBits == 2 || kBits == 4, "2- or 4-bit codes");
  if (kBits == 2) w = (w & 0xFFFFu) | ((w & 0xFF00u) << 8);  // codes 4..7 to bits 16.. of the high half
  constexpr std::uint32_t mask = kBits == 2 ? 0x00030003u : 0x000F000Fu;
  for (int i = 0; i < 4; ++i) out[i] = ((w >> (kBits * i)) & mask) | kMagic;
}

// Pieces of 4 codes (4 * kBits bits, LSB-first, zero-extended) of two keys a, b -> out[i] = (1024 +
// code i of a, 1024 + code i of b): PV n-tile 4u + i's B register for those two keys.
template <int kBits>
MEMATTN_HOST_DEVICE void pieces_to_pairs(std::uint32_t a, std::uint32_t b, std::uint32_t (&out)[4]) {
  static_assert(kBits == 2 || kBits == 4, "2- or 4-bit codes");
  const std::uint32_t x = (a & 0xFFFFu) | (b << 16);
  constexpr std::uint32_t mask = kBits == 2 ? 0x00030003u : 0x000F000Fu;
  for (int i = 0; i < 4; ++i) out[i] = ((x >> (kBits * i)) & mask) | kMagic;
}

}  // namespace think_mma
}  // namespace kernels
MEMATTN_NAMESPACE_END
