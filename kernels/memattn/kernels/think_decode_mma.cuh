// Tensor-core decode of the composed cache's KIVI region (issue 7's "composed fused decode at
// >= 80% of HBM"): the quantised tokens [0, n_q) of each (sequence, KV head) segment, blocks of
// d_keep kept key channels (partly filled after eviction), 2- or 4-bit K and V codes, written as
// split partials that think_combine_kernel merges with those of the lane-group kernel over the
// fp16 regions (cuda::think_decode, path 3).
//
// Why tensor cores: at K4/V2 a key costs ~100 bytes, so at 80% of an H100's HBM an SM has ~8
// cycles per key for all g query heads of a KV head; the CUDA-core lane-group kernel issues ~84
// warp instructions per key (dequantisation, the dot products, per-lane softmax), ~21 cycles.
// Here a warp turns codes into exact fp16 values (a logic op per code pair: fp16 subnormals,
// think_mma_layout.hpp) and lets mma.m16n8k16 do the products.
//
// Instruction budget (the gate's limit): at 80% of HBM and ~99 bytes per key (K4 / V2, d_keep 80,
// KIVI group 32) an SMSP has ~860 issue cycles per 32-key tile on an H200 (4.8 TB/s), ~1,240 on
// an H100 (3.35 TB/s). The sm_90 SASS of that case (KC = 3, a new block every tile, G = 4) issues
// ~710 warp instructions on a tile's common path: bulk-copy issue and tile bookkeeping ~165, the
// q' set-up ~93 (one per two tiles, paired), QK ~128, softmax and value bound ~55, P·V ~250
// (history and the designs tried: docs/gpu-check-log.md, sessions 6-26). What keeps it there:
// codes enter the MMAs as fp16 subnormals (the masked bits alone, c 2^(k - 24), no offset to
// remove; quantization spec 6.5 removes a 1024 offset with an HFMA2 per pair instead), the key
// scales once per block into q', the value scale and zero point as one HFMA2 per code pair, P·V
// transposed (O^T = V^T P^T, spec 6.4: 8 accumulator tiles, 16 MMAs per tile, 4 CTAs in 128
// registers). This relies on mma.sync and HFMA2 taking fp16 subnormal operands exactly (the
// emulator does; test_composed_cuda checks it on the GPU).
//
// Numerics (quantization spec 6.6, Q-K1: robust relative error 2e-3, |d lse| 1e-3): the logits
// are exact to ~2^-22 (q' and the bias from fp16 hi + lo operands; q' normal down to ~2^-29 of
// the block's largest |q~ s_K|), the values are fp16 c s_v + z_v (2^-12 of |v|), p enters as
// fp16 (2^-12; l sums the fp32 p), accumulation is fp32.
// Power-of-two prescales keep the fp16 operands normal and finite: q~ per head in [1/2, 1), q' =
// q~ s_K 2^(15 - k - sh) < 2^15 with sh = max(0, 1 + floor(log2 max |s_K|)) per block (undone in
// fp32 with the logit scale), the values per warp under 2^-4 (the scale follows the tiles' value
// bound up and, past 2^5, down, with an exact rescale of the accumulators; see the value prescale
// below).
//
// Work: grid (segments, splits), 4 warps; a warp takes whole KIVI blocks of its split (block i of
// the split to warp i % 4) in tiles of 32 keys, staged per warp (K codes, K meta, V codes, V meta;
// kStages deep, no CTA barrier) by bulk copies on an mbarrier per stage (sm_90, aligned regions)
// or cp.async pieces, keeps its own base-2 online softmax, and the warps' states are merged
// through shared memory at the end into the split's partial.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "memattn/kernels/bulk_copy.cuh"
#include "memattn/kernels/dense_decode.cuh"
#include "memattn/kernels/think_decode.cuh"
#include "memattn/kernels/think_decode_lanes.cuh"
#include "memattn/kernels/think_mma_layout.hpp"
#include "memattn/kernels/think_mma_warp.cuh"
#include "memattn/kernels/warp_reduce.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace think_mma {

constexpr int kStages = 3;
// CTAs per SM the kernel is compiled for (__launch_bounds__; 4: <= 128 registers). The H200
// profile of the earlier layout (ncu, B 16 x 64K) showed 3 CTAs (12 warps, 168 registers), 56%
// issue utilisation, mostly fixed-latency dependency stalls: more warps hide them. At 4 the
// instances with KC = 4 at D = 128 spill 0-24 bytes of loop invariants (sm_80 / sm_90; the
// earlier layouts 40-48), the others none; not yet timed on a GPU against 3
// (bench_think_decode_cuda_ctas3 is the same benchmark built with 3).
#ifndef MEMATTN_THINK_MMA_MIN_CTAS
#define MEMATTN_THINK_MMA_MIN_CTAS 4
#endif
constexpr int kMinCtas = MEMATTN_THINK_MMA_MIN_CTAS;

MEMATTN_HOST_DEVICE int round16(int x) { return (x + 15) / 16 * 16; }
// Chunks of 32 kept key channels a block row spans: the kernel's KC (compile-time, so that the
// QK loop has no exits and its addresses fold; 1 .. D / 32).
MEMATTN_HOST_DEVICE constexpr int chunks_of(int d_keep) { return (d_keep + kChunkChannels - 1) / kChunkChannels; }

// One warp's stage (bytes): K codes of 32 rows (+ slack: a padded chunk reads up to 16 bytes past
// the last row), K meta of the block zero-padded to whole chunks, V code rows, V meta rows of
// head_dim / 32 groups (the most there are; the words past the tile's D / v_group groups stay 0,
// so that the tile's value bound reads a fixed count without tests).
struct StageGeom {
  int k_meta, v_codes, v_meta, bytes;
};
MEMATTN_HOST_DEVICE StageGeom stage_geom(int d_keep, int bits_k, int v_row_bytes, int head_dim) {
  StageGeom g;
  const int chunks = chunks_of(d_keep);
  g.k_meta = round16(kTileKeys * d_keep * bits_k / 8 + 16);
  g.v_codes = g.k_meta + chunks * kChunkChannels * 4;
  g.v_meta = g.v_codes + round16(kTileKeys * v_row_bytes);
  g.bytes = g.v_meta + round16(kTileKeys * (head_dim / 32) * 4);
  return g;
}
// KIVI cache records (the kernel's kRec): the stage's V codes, per lane group (D / 8 channels), per
// PV k-step its channels' codes of 16 keys (2 bits_v bytes each), then 16 spare bytes (so that the
// 8 groups start in different banks); as stage_geom's rows of 32 keys.
MEMATTN_HOST_DEVICE int rec_group_bytes(int head_dim, int bits_v) { return head_dim / 8 * 4 * bits_v + 16; }
MEMATTN_HOST_DEVICE int rec_v_row_bytes(int head_dim, int bits_v) { return 8 * rec_group_bytes(head_dim, bits_v) / kTileKeys; }
// The CTA's bulk-copy regions (lanes 0..3 of a warp issue one each: K codes, K meta, V codes, V
// meta): segment base, bytes per block, per row of a block, per token, per row of a copy, stage
// offset.
struct BulkRegion {
  const unsigned char* seg;
  long long per_block;
  int per_block_row, per_token, row_bytes, dst;
};
// What a stage holds (written by lane 0 of the warp that issues its copies, read by the warp when it
// consumes it): the tile's first row, block, and its rows [base, end) in the split.
struct alignas(16) TileInfo {
  int slot, blk, base, end;
};
// Dynamic shared memory of the kernel: a header of kHeader bytes (the warps' stage mbarriers, the
// bulk regions, the warps' stage TileInfos: at fixed offsets, so that their addresses cost little
// in the tile loop),
// then (offsets from the header's end) the stages and the CTA's q region at q_offset (first its 8
// rows of head_dim + 4 floats, the padding putting the rows a quarter-warp reads in different
// banks; then, per lane, q~'s fp16 hi / lo A fragments, 32 D bytes), or the end-of-split merge if
// larger.
constexpr int kBarBytes = kWarps * kStages * 8;
constexpr int kInfoOffset = kBarBytes + 4 * static_cast<int>(sizeof(BulkRegion));
constexpr int kHeader = (kInfoOffset + kWarps * kStages * static_cast<int>(sizeof(TileInfo)) + 127) / 128 * 128;
MEMATTN_HOST_DEVICE int q_offset(const StageGeom& g) { return kWarps * kStages * g.bytes; }
MEMATTN_HOST_DEVICE int q_stride(int head_dim) { return head_dim + 4; }
MEMATTN_HOST_DEVICE int q_region(int head_dim) {
  const int rows = kThinKMaxGroup * q_stride(head_dim) * 4;
  return rows > 32 * head_dim ? rows : 32 * head_dim;
}
MEMATTN_HOST_DEVICE int smem_bytes(const StageGeom& g, int head_dim) {
  const int stages = q_offset(g) + q_region(head_dim);
  const int merge = kWarps * kThinKMaxGroup * (head_dim + 2) * 4;
  return kHeader + (stages > merge ? stages : merge);
}


// A warp's walk over its tiles: the 32-row sub-tiles of blocks b0 + warp, b0 + warp + kWarps, ...
// of its split in order (qgroup / 32 = cpb per block, some empty at the split's edges). Advancing
// looks a block up once per block, not per tile (and never past the segment's blocks).
struct TileCursor {
  int blk, lo, hi, slot;  // block, its tokens [lo, hi), the tile's first row
  MEMATTN_DEVICE void start(const think_lanes::SplitParts& parts, int warp) {
    blk = parts.b0 + warp;
    lo = hi = 0;
    look_up(parts);
    slot = lo;
  }
  MEMATTN_DEVICE void next(const think_lanes::SplitParts& parts) {
    slot += kTileKeys;
    if (slot - lo == parts.cpb * kTileKeys) {
      blk += kWarps;
      look_up(parts);
      slot = lo;
    }
  }
  MEMATTN_DEVICE void look_up(const think_lanes::SplitParts& parts) {
    if (parts.first == nullptr || blk < parts.n_blocks) parts.block(blk, &lo, &hi);
  }
};
// stage of the next item: 0, 1, .., kStages - 1, 0, ..
MEMATTN_DEVICE int next_stage(int stage) { return stage + 1 == kStages ? 0 : stage + 1; }


}  // namespace think_mma

// grid (segments = B * Hkv, splits), think_mma::kThreads threads, think_mma::smem_bytes of dynamic
// shared memory. D = head_dim (64 / 128), KB / VB = key / value bits (2 / 4), KC =
// think_mma::chunks_of(d_keep) (with_mma_chunks picks it). Writes the split's
// partial (m in natural log, l, unnormalised acc) at slot split * gridDim.x + s, and the raw
// logits of its quantised tokens when p.scores is set.
// think_mma::kMinCtas CTAs per SM (4: <= 128 registers; ptxas spills up to 24 bytes of loop
// invariants at D = 128, KC = 4).
// kRec: the KIVI region in KIVI cache records (ThinKDecodeParams::rec_block_bytes; cuda::kivi_decode):
// the stage holds a tile's V codes channel-major (rec_v_row_bytes) and its V meta group-major, and at
// 2 bits the key pair stride is 8 (think_mma_layout.hpp), as one word of a channel pairs keys i, i + 8.
template <int D, int KB, int VB, int KC, bool kRec = false>
MEMATTN_KERNEL void __launch_bounds__(think_mma::kThreads, think_mma::kMinCtas)
    think_decode_mma_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  using namespace think_mma;
  static_assert(KC >= 1 && KC * kChunkChannels <= D, "1 .. D / 32 chunks of kept channels");
  static_assert(!kRec || KC * kChunkChannels == D, "KIVI records hold every key channel");
  constexpr int kPs = kRec && VB == 2 ? 8 : 4;     // key pair stride of the PV B registers
  constexpr int kLaneCh = D / 8;                   // value channels per lane: one per PV n-tile
  constexpr int kNTiles = kLaneCh;                // the lane's value channels: its codes' n-tile order
  constexpr int kMTiles = kNTiles / 2;             // PV m-tiles: rows gi / gi + 8 = the lane's channels 2 mt, 2 mt + 1
  constexpr int kCodeBytes = kLaneCh * VB / 8;     // a lane's value codes of one key: 2, 4 or 8 bytes
  constexpr int kVRow = D * VB / 8;                // a stage's V code row (global rows may be padded)
  constexpr int kCodeWords = kCodeBytes < 4 ? 1 : kCodeBytes / 4;
  constexpr int kHalves = kCodeBytes / 2;          // 16-bit pieces of them, 16 / VB channels each
  constexpr int kPerHalf = 16 / VB;
  constexpr int kRecStep = 2 * VB;                 // kRec: bytes of one channel's codes of a PV k-step (16 keys)
  constexpr int kRecGroup = kLaneCh * 4 * VB + 16; // kRec: a lane group's stage bytes (rec_group_bytes)
  MEMATTN_DYNAMIC_SMEM(unsigned char, smem_all);
  unsigned char* const smem = smem_all + kHeader;  // stages, q region, merge (smem_bytes)

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int gi = row_group(lane), t4 = quad(lane);
  const long long s = blockIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int G = p.q_heads / p.kv_heads, dk = p.d_keep;
  // value groups per token; v_group is a multiple of 32 dividing D (mma_layout), so a lane's
  // kLaneCh channels lie in one group, v_grp
  const int ngv = D / p.v_group, v_grp = gi * kLaneCh / p.v_group;
  const int n_q = p.n_q[s];
  const int t_lo = min(n_q, split * sp.split_keys), t_hi = min(n_q, t_lo + sp.split_keys);

  think_lanes::SplitParts parts{};
  parts.first = p.kq_first != nullptr ? p.kq_first + s * p.kq_first_seg_stride : nullptr;
  parts.n_blocks = p.kq_first != nullptr ? p.n_blocks[s] : 0;
  parts.qgroup = p.qgroup;
  parts.n_q = n_q;
  parts.q0 = t_lo;
  parts.q1 = t_hi;
  parts.cpb = p.qgroup / kTileKeys;
  parts.b0 = t_lo < t_hi ? parts.block_of(t_lo) : 0;
  parts.q_chunks = t_lo < t_hi ? (parts.block_of(t_hi - 1) - parts.b0 + 1) * parts.cpb : 0;
  const int n_blk = parts.q_chunks / parts.cpb;
  const int my_blocks = n_blk > warp ? (n_blk - warp + kWarps - 1) / kWarps : 0;
  const int items = my_blocks * parts.cpb;  // this warp's tiles: its blocks' sub-tiles in order
  // Paired tiles (G <= 4 heads and KIVI groups of 32 tokens, so that every tile starts a block):
  // the QK A fragment's rows 0-3 (lanes gi < 4) hold q' of the warp's even tile, rows 4-7 (lanes
  // gi >= 4, head gi - 4) that of the odd tile after it, so that one q' set-up serves two tiles
  // with every lane busy; a lane's logits count in the tiles of its stream only (-inf in the
  // others), each stream keeps its own softmax state of its head, and the merge joins the two.
  const bool pairs = p.mma_unpaired == 0 && G <= kThinKMaxGroup / 2 && parts.cpb == 1;
  const int stream = pairs ? gi / (kThinKMaxGroup / 2) : 0;
  const int head = pairs ? gi % (kThinKMaxGroup / 2) : gi;  // the lane's query head (of the KV head's G)

  const StageGeom geo = stage_geom(dk, KB, kRec ? rec_v_row_bytes(D, VB) : kVRow, D);
  unsigned char* wstage = smem + warp * kStages * geo.bytes;
  const int k_row = dk * KB / 8, v_row = p.v_words * 4;  // global rows; the stage's V rows are kVRow
  const long long kq_block_bytes = kRec ? p.rec_block_bytes : static_cast<long long>(p.kq_block_words) * 4;
  const long long kqm_block_bytes = kRec ? p.rec_block_bytes : dk * 4;
  // q of the CTA's heads over the kept-channel slots, base-2 domain, in shared memory (read once,
  // into the A fragments below); 0 past d_keep and for heads >= G
  constexpr float kLog2e = 1.4426950408889634f;
  float* const q_s = reinterpret_cast<float*>(smem + q_offset(geo));
  {
    const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
    const std::uint8_t* chl = kRec ? nullptr : p.channels + s * dk;
    for (int i = static_cast<int>(threadIdx.x); i < kThinKMaxGroup * D; i += kThreads) {
      const int r = i / D, slot = i % D;
      q_s[r * q_stride(D) + slot] = r < G && slot < dk ? qg[r * D + (kRec ? slot : chl[slot])] * (p.scale * kLog2e) : 0.f;
    }
  }
  __syncthreads();
  // the K meta padding (channels d_keep.. of the last chunk) reads (scale, zero) = 0 in every
  // stage, and so do the V meta words past the tile's 32 ngv (no copy writes them)
  for (int st = 0; st < kStages; ++st) {
    for (int i = dk + lane; i < KC * kChunkChannels; i += 32)
      reinterpret_cast<std::uint32_t*>(wstage + st * geo.bytes + geo.k_meta)[i] = 0u;
    for (int i = kTileKeys * ngv + lane; i < kTileKeys * (D / 32); i += 32)
      reinterpret_cast<std::uint32_t*>(wstage + st * geo.bytes + geo.v_meta)[i] = 0u;
  }
  __syncwarp();

  // q~ = q 2^e of head gi (max |q~| in [1/2, 1)), fixed for the split, as fp16 hi / lo A fragments
  // parked in shared memory over the q rows (registers are short): uint4 [c][j][lane] is QK k-step
  // 2c + j (slots (8 t4 + 2j, + 4) and (8 t4 + 2j + 1, + 4), qk_channel).
  float q_inv;
  {
    const float* x = q_s + head * q_stride(D);
    float mx = 0.f;
#pragma unroll
    for (int c = 0; c < KC; ++c)
#pragma unroll
      for (int e = 0; e < 8; ++e) mx = fmaxf(mx, fabsf(x[qk_lane_slot(c, t4) + e]));
    float qs;
    pow2_scale<-1>(quad_max(mx), &qs, &q_inv);
    uint4 fr[KC][2];
#pragma unroll
    for (int c = 0; c < KC; ++c) {
      const float* xc = x + qk_lane_slot(c, t4);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        split2(xc[2 * j] * qs, xc[2 * j + 4] * qs, &fr[c][j].x, &fr[c][j].y);
        split2(xc[2 * j + 1] * qs, xc[2 * j + 5] * qs, &fr[c][j].z, &fr[c][j].w);
      }
    }
    __syncthreads();  // every warp has read the q rows
    if (warp == 0)
#pragma unroll
      for (int c = 0; c < KC; ++c)
#pragma unroll
        for (int j = 0; j < 2; ++j) reinterpret_cast<uint4*>(q_s)[(2 * c + j) * 32 + lane] = fr[c][j];
    __syncthreads();
  }
  const uint4* const q_frag = reinterpret_cast<const uint4*>(q_s);

  const long long rec_seg = kRec ? b * p.rec_seq_bytes + static_cast<long long>(h) * p.rec_head_bytes : 0;
  const unsigned char* const kq_seg =
      kRec ? reinterpret_cast<const unsigned char*>(p.kq) + rec_seg : reinterpret_cast<const unsigned char*>(p.kq + s * p.kq_seg_stride);
  const unsigned char* const kqm_seg =
      kRec ? reinterpret_cast<const unsigned char*>(p.kqm) + rec_seg : reinterpret_cast<const unsigned char*>(p.kqm + s * p.kqm_seg_stride);
  const unsigned char* const vq_seg =
      kRec ? reinterpret_cast<const unsigned char*>(p.vq) + rec_seg : reinterpret_cast<const unsigned char*>(p.vq + s * p.vq_seg_stride);
  const unsigned char* const vqm_seg =
      kRec ? reinterpret_cast<const unsigned char*>(p.vqm) + rec_seg : reinterpret_cast<const unsigned char*>(p.vqm + s * p.vqm_seg_stride);
  const bool vqm16 = bulk::aligned16(vqm_seg) && ngv % 4 == 0;  // V meta of a tile in 16-byte pieces
  // sm_90: lanes 0..3 fill each stage with four bulk copies (one region each, their addresses
  // computed side by side) completing on the stage's mbarrier (the cp.async pieces and their
  // address arithmetic were a fifth of a tile's instructions), where every region starts 16-byte
  // aligned (tiles start at multiples of 32 rows of a block); KIVI records (channel-major V codes
  // in lane-group rows) and other alignments take cp.async.
  const bool use_bulk = bulk::available() && !kRec && p.mma_cp_async == 0 && vqm16 && bulk::aligned16(kq_seg) && kq_block_bytes % 16 == 0 &&
                        (kTileKeys * k_row) % 16 == 0 && bulk::aligned16(kqm_seg) && dk % 4 == 0 && bulk::aligned16(vq_seg) &&
                        v_row == kVRow;
  std::uint64_t* const bars = reinterpret_cast<std::uint64_t*>(smem_all) + warp * kStages;
  BulkRegion* const regions = reinterpret_cast<BulkRegion*>(smem_all + kBarBytes);
  if (use_bulk) {
    if (lane == 0) {
      for (int i = 0; i < kStages; ++i) bulk::init(bars + i, 1);
      bulk::fence_init();
    }
    if (threadIdx.x < 4) {  // for every warp (read after the CTA barrier below)
      const int r = static_cast<int>(threadIdx.x);
      BulkRegion g;
      g.seg = r == 0 ? kq_seg : (r == 1 ? kqm_seg : (r == 2 ? vq_seg : vqm_seg));
      g.per_block = r == 0 ? kq_block_bytes : (r == 1 ? kqm_block_bytes : 0);
      g.per_block_row = r == 0 ? k_row : 0;
      g.per_token = r == 2 ? v_row : (r == 3 ? ngv * 4 : 0);
      g.row_bytes = r == 0 ? k_row : (r == 2 ? v_row : (r == 3 ? ngv * 4 : 0));
      g.dst = r == 0 ? 0 : (r == 1 ? geo.k_meta : (r == 2 ? geo.v_codes : geo.v_meta));
      regions[r] = g;
    }
    __syncthreads();
  }
  // The issuing cursor runs kStages - 1 items ahead of the consuming one, and leaves each tile's
  // TileInfo with its stage.
  TileCursor ahead;
  ahead.start(parts, warp);
  TileInfo* const tinfo = reinterpret_cast<TileInfo*>(smem_all + kInfoOffset) + warp * kStages;
  int ahead_stage = 0, stage = 0;
  unsigned parity = 0;  // bulk: of the phase of stage `stage` that the current item waits for
  // One tile's copies: K code rows of at most D kept channels (+ the 16-byte slack of round16),
  // the K meta of d_keep <= D channels only for the first tile of the block the warp reads (where
  // the block's q' is set), V code rows, V meta rows.
  auto issue = [&](int /*item: the cursor's*/) {
    const int base = max(ahead.slot, parts.q0), end = min(min(ahead.slot + kTileKeys, ahead.hi), parts.q1);
    if (lane == 0) tinfo[ahead_stage] = TileInfo{ahead.slot, ahead.blk, base, end};
    if (base < end) {
      const int blk = ahead.blk, lo = ahead.lo, slot = ahead.slot;
      const int rows = min(kTileKeys, ahead.hi - slot);
      unsigned char* const st = wstage + ahead_stage * geo.bytes;
      const long long k_off = static_cast<long long>(blk) * kq_block_bytes + (slot - lo) * k_row;
      warp_copy<16, kTileKeys * KC * kChunkChannels * KB / 8 + 16>(st, kq_seg + k_off, round16(rows * k_row), lane);
      if (slot == lo || slot <= parts.q0)
        warp_copy<16, D * 4>(st + geo.k_meta, kqm_seg + blk * kqm_block_bytes, dk * 4, lane);
      if constexpr (kRec) {
        // channel ch's codes of the tile's two PV k-steps to lane group ch / kLaneCh's k-step rows
        // (rec_group_bytes); the lane copies channels D / 32 lane + i; V meta rows of the kTileKeys
        // keys per value group
        const long long rec = blk * kq_block_bytes;
        const int ch0 = lane * (D / 32);
        unsigned char* const v_dst = st + geo.v_codes + (ch0 / kLaneCh) * kRecGroup + (ch0 % kLaneCh) * kRecStep;
        const unsigned char* const v_src = vq_seg + rec + (slot - lo) * VB / 8 + ch0 * (p.qgroup * VB / 8);
#pragma unroll
        for (int i = 0; i < D / 32; ++i)
#pragma unroll
          for (int ms = 0; ms < 2; ++ms)
            think_lanes::cp_async_ca<kRecStep>(v_dst + ms * (kLaneCh * kRecStep) + i * kRecStep, v_src + i * (p.qgroup * VB / 8) + ms * kRecStep);
        const unsigned char* const vm_src = vqm_seg + rec + (slot - lo) * 4;
        if (lane < ngv * 8)  // 16-byte pieces: 8 per value group
          detail::cp_async_16(st + geo.v_meta + lane * 16, vm_src + static_cast<long long>(lane >> 3) * p.qgroup * 4 + (lane & 7) * 16);
      } else {
        const unsigned char* const v_src = vq_seg + static_cast<long long>(slot) * v_row;
        if (v_row == kVRow) {
          warp_copy<16, kTileKeys * kVRow>(st + geo.v_codes, v_src, rows * kVRow, lane);
        } else {  // padded rows (v_words past the codes): their codes only, to rows of kVRow bytes
          constexpr int kPieces = kVRow / 16;
#pragma unroll 1
          for (int i = lane; i < rows * kPieces; i += 32)
            detail::cp_async_16(st + geo.v_codes + i * 16, v_src + static_cast<long long>(i / kPieces) * v_row + (i % kPieces) * 16);
        }
        const unsigned char* const vm_src = vqm_seg + static_cast<long long>(slot) * (ngv * 4);
        if (vqm16) warp_copy<16, kTileKeys * D / 32 * 4>(st + geo.v_meta, vm_src, rows * ngv * 4, lane);
        else warp_copy<4>(st + geo.v_meta, vm_src, rows * ngv * 4, lane);
      }
    }
    ahead.next(parts);
    ahead_stage = next_stage(ahead_stage);
  };
  // The same by bulk copies: lanes 0..3 each issue one region's copy (their addresses computed side
  // by side), after lane 0's one arrival per item expecting their bytes (none for an empty tile).
  auto issue_bulk = [&]() {
    std::uint64_t* const bar = bars + ahead_stage;
    const int base = max(ahead.slot, parts.q0), end = min(min(ahead.slot + kTileKeys, ahead.hi), parts.q1);
    if (lane == 0) tinfo[ahead_stage] = TileInfo{ahead.slot, ahead.blk, base, end};
    int bytes = 0, dst = 0;
    const unsigned char* src = nullptr;
    if (lane < 4 && base < end) {
      const BulkRegion g = regions[lane];
      const int slot = ahead.slot, rows = min(kTileKeys, ahead.hi - slot);
      // the K meta only with the first tile of the block the warp reads (where q' is set)
      bytes = lane == 1 ? (slot == ahead.lo || slot <= parts.q0 ? dk * 4 : 0) : (rows * g.row_bytes + 15) & ~15;
      src = g.seg + ahead.blk * g.per_block + (slot - ahead.lo) * g.per_block_row + static_cast<long long>(slot) * g.per_token;
      dst = g.dst;
    }
    const int total = static_cast<int>(__reduce_add_sync(0xFFFFFFFFu, static_cast<unsigned>(bytes)));
    if (lane == 0) bulk::arrive_expect_tx(bar, total);
    __syncwarp();
    if (bytes > 0) bulk::copy(wstage + ahead_stage * geo.bytes + dst, src, bytes, bar);
    ahead.next(parts);
    ahead_stage = next_stage(ahead_stage);
  };
  if (use_bulk) {
    for (int i = 0; i < kStages - 1 && i < items; ++i) issue_bulk();
  } else {
    warp_pipeline_prime<kStages>(items, issue);
  }

  // O^T accumulators: m-tile mt, rows = channels pv_channel(2 mt + e / 2, gi), columns = heads 2 t4 + e % 2
  float o[kMTiles][4], m = -INFINITY, l = 0.f;
#pragma unroll
  for (int n = 0; n < kMTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  int v_exp = -99;  // the value bound's exponent ve that sigma follows (-99: none yet)
  float v_inv = 1.f;
  std::uint32_t v_scale2 = 0x3C003C00u;  // the values' prescale as an fp16 pair
  std::uint32_t v_sa2 = 0x3C003C00u;     // 2^(10 - ve) as an fp16 pair
  std::uint32_t qk[KC][2][4];  // q' = q~ s_K 2^(15 - k - sh) of the current block: hi / lo A fragments
  float lg_scale = 0.f, lg_bias = 0.f;  // logit = (QK product) lg_scale + lg_bias (q_inv 2^(9 + sh), q~ . z_K q_inv)
  int meta_blk = -1;
  bool pair_ready = false;  // pairs: the odd tile's q' was set with the even one's
  float* const scores = p.scores != nullptr ? p.scores + s * p.scores_seg_stride + static_cast<long long>(head) * p.scores_row_stride : nullptr;

  for (int item = 0; item < items; ++item) {
    if (use_bulk) {
      __syncwarp();  // every lane is done with the stage item - 1 used, which the next issue refills
      if (item + kStages - 1 < items) issue_bulk();
      bulk::wait(bars + stage, parity);
    } else {
      warp_pipeline_next<kStages>(item, items, issue);
    }
    const TileInfo ti = tinfo[stage];  // lane 0's, a __syncwarp ago at least
    const int slot = ti.slot, blk = ti.blk, base = ti.base, end = ti.end;
    unsigned char* const st = wstage + stage * geo.bytes;
    std::uint32_t* const vm = reinterpret_cast<std::uint32_t*>(st + geo.v_meta);
    // V meta (s, z) of (key, value group j) in the stage: token-major, or group-major (kRec)
    auto vm_index = [ngv](int key, int j) { return kRec ? j * kTileKeys + key : key * ngv + j; };
    stage = next_stage(stage);
    parity ^= stage == 0 ? 1u : 0u;
    const bool even = (item & 1) == 0;
    if (even) pair_ready = false;
    if (base >= end) continue;  // warp-uniform

    // a new block: q' = q~ s_K 2^(15 - k - sh) (fp16 hi / lo), the bias q~ . z_K; paired, both tiles'
    // (stream 1 from the odd tile's stage, which is waited for here), or the odd one's alone when
    // the even tile was empty
    if (pairs ? even || !pair_ready : blk != meta_blk) {
      meta_blk = blk;
      const unsigned char* km = st + geo.k_meta;
      bool partner = false;  // paired, even: the odd tile exists and has keys
      if (pairs && even && item + 1 < items) {
        if (use_bulk) {
          bulk::wait(bars + stage, parity);  // `stage` is the next item's now
        } else {
          detail::cp_async_wait<kStages - 2>();
          __syncwarp();
        }
        const TileInfo tn = tinfo[stage];
        partner = tn.base < tn.end;
        if (stream == 1 && partner) km = wstage + stage * geo.bytes + geo.k_meta;  // else this tile's again
      }
      if (pairs && even) pair_ready = partner;
      // (s, z) pairs of k-step (c, j)'s B registers r = 0, 1 (slots 8 t4 + 2 j + r, + 4), and the
      // block's largest |s|: q' carries the 2^(24 - k) that the subnormal codes at bit k lack
      // (code_pair), times 2^(-9 - sh) so that |q'| < 2^15 (sh > 0 only for |s| >= 1)
      std::uint32_t sk[KC][2][2], zk[KC][2][2];
      __half2 smax2 = __floats2half2_rn(0.f, 0.f);
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        // (s, z) of slots 8 t4 + e, e = 0..7
        const uint4 m0 = *reinterpret_cast<const uint4*>(km + qk_lane_slot(c, t4) * 4);
        const uint4 m1 = *reinterpret_cast<const uint4*>(km + qk_lane_slot(c, t4) * 4 + 16);
        const std::uint32_t w[8] = {m0.x, m0.y, m0.z, m0.w, m1.x, m1.y, m1.z, m1.w};
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            sk[c][j][r] = halves(w[2 * j + r], w[2 * j + r + 4], false);
            zk[c][j][r] = halves(w[2 * j + r], w[2 * j + r + 4], true);
            smax2 = __hmax2(smax2, __habs2(as_h2(sk[c][j][r])));  // NaN drops out (and stays in q')
          }
      }
      // fp16 bits of the largest |s| (non-negative fp16 bits order as their values), the same in
      // every quad (paired: of both blocks, which keeps both q' under 2^15; q' stays exact to ~2^-22
      // of the larger one's products): |s| < 2^(f - 14) for the exponent field f; inf takes 16,
      // like 65504
      const std::uint32_t sb2 = bits_of(smax2);
      const int f = static_cast<int>(__reduce_max_sync(0xFFFFFFFFu, max(sb2 & 0xFFFFu, sb2 >> 16)) >> 10);
      const int sh = f <= 14 ? 0 : (f >= 30 ? 16 : f - 14);
      float cb[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int c = 0; c < KC; ++c)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const uint4 f4 = q_frag[(2 * c + j) * 32 + lane];
          const std::uint32_t a[4] = {f4.x, f4.y, f4.z, f4.w};
          mul_split2(f4.x, f4.y, hmul2_bits(sk[c][j][0], pow2_pair(15 - code_shift<KB>(2 * j) - sh)), &qk[c][j][0], &qk[c][j][1]);
          mul_split2(f4.z, f4.w, hmul2_bits(sk[c][j][1], pow2_pair(15 - code_shift<KB>(2 * j + 1) - sh)), &qk[c][j][2], &qk[c][j][3]);
          mma16816(cb, a, zk[c][j][0], zk[c][j][1]);
        }
      // every key column holds the bias (hi rows + lo rows of head gi); the products carry 2^(-9 - sh).
      // Paired, columns 0-3 hold stream 0's (B from lanes gi < 4), 4-7 stream 1's: a lane whose
      // columns (2 t4, 2 t4 + 1) are the other stream's takes lane ^ 2's
      float bias = cb[0] + cb[2];
      if (pairs) {
        const float other = __shfl_xor_sync(0xFFFFFFFFu, bias, 2);
        if (t4 / 2 != stream) bias = other;
      }
      lg_bias = bias * q_inv;
      lg_scale = q_inv * __uint_as_float(static_cast<std::uint32_t>(127 + 9 + sh) << 23);
    }

    // Logits of the 4 n-tiles (keys qk_key(n, 2 t4 + e)), base 2; -inf outside [base, end).
    // Paired, the other stream's lanes hold q' of the partner block, or of this one without a
    // partner (finite products; NaN only from poisoned metadata of this split's keys, which makes
    // the head's output NaN anyway): their logits are -inf here by the bias.
    const bool mine = !pairs || (item & 1) == stream;
    const float bias_here = mine ? lg_bias : -INFINITY;
    float lg[4][2];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      const unsigned char* row = st + qk_key(n, gi, kPs) * k_row;
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        std::uint32_t w;
        if (KB == 4) w = *reinterpret_cast<const std::uint32_t*>(row + qk_lane_slot(c, t4) / 2);
        else w = *reinterpret_cast<const std::uint16_t*>(row + qk_lane_slot(c, t4) / 4);
        std::uint32_t pr[4];
        codes8_to_pairs<KB>(w, pr);  // fp16 subnormal codes: no HFMA2
#pragma unroll
        for (int j = 0; j < 2; ++j) mma16816(acc, qk[c][j], pr[2 * j], pr[2 * j + 1]);
      }
#pragma unroll
      for (int e = 0; e < 2; ++e) lg[n][e] = fmaf(acc[e] + acc[e + 2], lg_scale, bias_here);  // hi rows + lo rows
    }
    // Keys outside [base, end) (a split's or a partly filled block's edge; warp-uniform test, most
    // tiles are whole) get -inf, and their V meta rows (s, z) = 0, so that their stale or never
    // loaded codes give values 0 (no per-key test below); the raw logits of the others go out when
    // asked.
    if (base != slot || end != slot + kTileKeys) {
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int t = slot + qk_key(n, 2 * t4 + e, kPs);
          if (t < base || t >= end) lg[n][e] = -INFINITY;
        }
      if (slot + lane < base || slot + lane >= end)
#pragma unroll
        for (int j = 0; j < D / 32; ++j)
          if (j < ngv) vm[vm_index(lane, j)] = 0u;
      // each writer orders its (generic) writes before the bulk copy (async proxy) that refills the
      // stage, whichever lane issues it after the warp barrier
      if (use_bulk) bulk::fence_proxy();
      __syncwarp();
    }
    if (scores != nullptr && mine && head < G)
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int t = slot + qk_key(n, 2 * t4 + e, kPs);
          if (t >= base && t < end) scores[t] = lg[n][e] * detail::kLn2;
        }

    // Online softmax of head gi (the quad holds its 32 keys), lazy rescale (warp vote).
    float pk[4][2];
    // The accumulators' columns are heads 2 t4, 2 t4 + 1: their factors from lanes 8 t4, 8 t4 + 4.
    online_softmax_step(lg, m, l, [&](float alpha) {
      const float a0 = __shfl_sync(0xFFFFFFFFu, alpha, 8 * t4), a1 = __shfl_sync(0xFFFFFFFFu, alpha, 8 * t4 + 4);
#pragma unroll
      for (int n = 0; n < kMTiles; ++n) o[n][0] *= a0, o[n][1] *= a1, o[n][2] *= a0, o[n][3] *= a1;
    }, pk);

    // Value prescale, from the largest bound B = max(16 |s_v|, |z_v|) of the tile (its 32 ngv V
    // meta words are contiguous in either layout, then zeros up to 32 D / 32: lane r reads words
    // r, r + 32, ..), 2^ve <= B < 2^(ve + 1): sigma = 2^(-6 - ve) (ve in [-5, 18]), raised as the
    // tiles' bound rises and lowered when it falls 2^5 below (an exact rescale of o each time), so
    // |c s_v + z_v| sigma < 2^-4, and the codes stay fp16 subnormals c 2^(k - 24) that one HFMA2 by
    // s_v sigma 2^(24 - k) = (s_v 2^(10 - ve)) 2^(8 - k) (both factors normal fp16) plus z_v sigma
    // dequantises: full fp16 precision for a tile's values down to 2^-6 of its largest at least
    // (2^-10 when its bound set sigma), and no exact-code HFMA2 of the 1024-offset codes
    // (quantization spec 6.5).
    __half2 szmax = __floats2half2_rn(0.f, 0.f);  // (max |s_v|, max |z_v|) of the lane's words
#pragma unroll
    for (int j = 0; j < D / 32; ++j) szmax = __hmax2(szmax, __habs2(as_h2(vm[lane + kTileKeys * j])));
    const float2 szf = __half22float2(szmax);
    const float vmax = warp_max_nonneg(fmaxf(16.f * szf.x, szf.y));
    const int e_new = static_cast<int>((__float_as_uint(vmax) >> 23) & 0xFFu);
    const int ve = e_new == 255 ? 99 : min(18, max(-5, e_new - 127));  // 99: inf / NaN bounds
    if (ve > v_exp || ve + 4 < v_exp) {  // warp-uniform; kept while the bound falls by less than 2^5
      if (v_exp != -99) {
        const float r = __uint_as_float(static_cast<std::uint32_t>(127 + min(v_exp, 18) - min(ve, 18)) << 23);
#pragma unroll
        for (int n = 0; n < kMTiles; ++n) o[n][0] *= r, o[n][1] *= r, o[n][2] *= r, o[n][3] *= r;
      }
      v_exp = ve;
      v_inv = __uint_as_float(static_cast<std::uint32_t>(127 + 6 + min(ve, 18)) << 23);
      // sigma (2^-24 .. 2^-1, exact in fp16) and 2^(10 - ve) (2^-8 .. 2^15); 0 for poison, so that
      // an inf or NaN scale gives NaN values
      const float sig = ve == 99 ? 0.f : __uint_as_float(static_cast<std::uint32_t>(127 - 6 - ve) << 23);
      const float sa = ve == 99 ? 0.f : __uint_as_float(static_cast<std::uint32_t>(127 + 10 - ve) << 23);
      v_scale2 = bits_of(__floats2half2_rn(sig, sig));
      v_sa2 = bits_of(__floats2half2_rn(sa, sa));
    }

    // Values: two k-steps of 16 keys, O^T (channels x heads) += V^T (channels x keys) P^T (keys x
    // heads). P^T is the QK result as it lies (B: the lane's keys pv_lane_key(ms, t4, 0..3) of head
    // gi, pk[2 ms][0, 1] and pk[2 ms + 1][0, 1], in fp16); V^T's m-tile mt holds the lane's
    // channels 2 mt (row gi) and 2 mt + 1 (row gi + 8) of its 4 keys, dequantised with the
    // prescaled (s, z) of group v_grp: the pairs `pair` gets per channel n, in order.
#pragma unroll
    for (int ms = 0; ms < 2; ++ms) {
      const std::uint32_t pb0 = bits_of(__floats2half2_rn(pk[2 * ms][0], pk[2 * ms][1]));
      const std::uint32_t pb1 = bits_of(__floats2half2_rn(pk[2 * ms + 1][0], pk[2 * ms + 1][1]));
      std::uint32_t va[4];
      // channel n's values of keys (0, 1) and (2, 3): A registers 0, 2 of m-tile n / 2 (even n)
      // or 1, 3 (odd n, which completes the m-tile)
      auto pair = [&](int n, std::uint32_t v01, std::uint32_t v23) {
        va[n & 1] = v01;
        va[2 + (n & 1)] = v23;
        if (n & 1) mma16816(o[n >> 1], va, pb0, pb1);
      };
      std::uint32_t mw[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) mw[k] = vm[vm_index(pv_lane_key(ms, t4, k, kPs), v_grp)];  // (0, 0) for a masked key
      const std::uint32_t s01 = hmul2_bits(halves(mw[0], mw[1], false), v_sa2);
      const std::uint32_t z01 = hmul2_bits(halves(mw[0], mw[1], true), v_scale2);
      const std::uint32_t s23 = hmul2_bits(halves(mw[2], mw[3], false), v_sa2);
      const std::uint32_t z23 = hmul2_bits(halves(mw[2], mw[3], true), v_scale2);
      if constexpr (kRec) {
        // channel n of the lane's group: its codes of this k-step's 16 keys (16-byte loads of 4
        // channels at 2 bits, 2 at 4), shifted so that the lane's first key sits at bit 0 of each
        // 16-bit half: at 2 bits one word, keys (t, t + 8) at bits 0 and (t + 4, t + 12) at bits 8
        // of the halves; at 4 bits two words of 8 keys, (t, t + 4) and (t + 8, t + 12) at bits 0
        const unsigned char* const vrow = st + geo.v_codes + gi * kRecGroup + ms * (kLaneCh * kRecStep);
        const std::uint32_t s01k = hmul2_bits(s01, pow2_pair(8)), s23k = VB == 2 ? s23 : hmul2_bits(s23, pow2_pair(8));
#pragma unroll
        for (int c = 0; c < kLaneCh * kRecStep / 16; ++c) {
          const uint4 w4 = *reinterpret_cast<const uint4*>(vrow + 16 * c);
          const std::uint32_t w[4] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
          for (int e = 0; e < 16 / kRecStep; ++e) {
            std::uint32_t b0, b1;  // subnormal codes: at bits 0 (b0) and 8 (b1, 2 bits) or 0 (4 bits)
            if constexpr (VB == 2) {
              const std::uint32_t x = w[e] >> (2 * t4);
              b0 = x & 0x00030003u;
              b1 = x & 0x03000300u;
            } else {
              b0 = (w[2 * e] >> (4 * t4)) & 0x000F000Fu;
              b1 = (w[2 * e + 1] >> (4 * t4)) & 0x000F000Fu;
            }
            pair(c * (16 / kRecStep) + e, hfma2_bits(b0, s01k, z01), hfma2_bits(b1, s23k, z23));
          }
        }
      } else {
        const unsigned char* vc = st + geo.v_codes + gi * kCodeBytes;
        std::uint32_t cw[4][kCodeWords];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const unsigned char* src = vc + pv_lane_key(ms, t4, k) * kVRow;
          if (kCodeBytes == 2) cw[k][0] = *reinterpret_cast<const std::uint16_t*>(src);
          else if (kCodeBytes == 4) cw[k][0] = *reinterpret_cast<const std::uint32_t*>(src);
          else {
            const uint2 u = *reinterpret_cast<const uint2*>(src);
            cw[k][0] = u.x;
            cw[k][kCodeWords - 1] = u.y;
          }
        }
        // s_v sigma 2^(24 - k) per code bit k (8 / VB of them): times the subnormal codes
        constexpr int kBitsPerByte = 8 / VB;
        std::uint32_t s01k[kBitsPerByte], s23k[kBitsPerByte];
#pragma unroll
        for (int q = 0; q < kBitsPerByte; ++q) {
          s01k[q] = hmul2_bits(s01, pow2_pair(8 - code_shift<VB>(q)));
          s23k[q] = hmul2_bits(s23, pow2_pair(8 - code_shift<VB>(q)));
        }
#pragma unroll
        for (int hf = 0; hf < kHalves; ++hf) {
          const std::uint32_t x01 = halves(cw[0][hf >> 1], cw[1][hf >> 1], hf & 1);
          const std::uint32_t x23 = halves(cw[2][hf >> 1], cw[3][hf >> 1], hf & 1);
#pragma unroll
          for (int i = 0; i < kPerHalf; ++i) {
            const std::uint32_t b0 = hfma2_bits(code_pair<VB>(x01, i), s01k[i % kBitsPerByte], z01);
            const std::uint32_t b1 = hfma2_bits(code_pair<VB>(x23, i), s23k[i % kBitsPerByte], z23);
            pair(hf * kPerHalf + i, b0, b1);
          }
        }
      }
    }
  }
  detail::cp_async_wait<0>();
  __syncthreads();  // the merge reuses the stages

  {  // the transposed accumulators: rows = the lane's channels 2 mt, 2 mt + 1, columns = heads 2 t4, 2 t4 + 1
    float* const acc = stash_warp_ml<D>(smem, warp, lane, m, l);
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[(2 * t4 + (e & 1)) * D + pv_channel(2 * mt + (e >> 1), gi, kLaneCh)] = o[mt][e] * v_inv;
  }
  __syncthreads();
  merge_warp_states<D>(smem, p, sp, s, static_cast<long long>(split) * gridDim.x + s, false, pairs ? 2 : 1);
}

// f(std::integral_constant<int, KC>{}) for KC = think_mma::chunks_of(d_keep) (1 .. D / 32; d_keep
// in [1, D]): the kernel instance a launcher takes.
template <int D, class F>
auto with_mma_chunks(int d_keep, F&& f) {
  static_assert(D == 64 || D == 128, "head_dim 64 / 128");
  const int kc = think_mma::chunks_of(d_keep);
  if constexpr (D == 128) {
    if (kc >= 4) return f(std::integral_constant<int, 4>{});
    if (kc == 3) return f(std::integral_constant<int, 3>{});
  }
  if (kc >= 2) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 1>{});
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
