// Tensor-core decode of the fp16 regions of a ThinK / composed segment (path 4 of
// cuda::think_decode): the old tokens (pruned keys: d_keep kept channels, padded to a multiple of
// 8) and the new tokens (full width), values full width (or, with ThinK's value extension, the old
// values' dv_keep kept channels, padded alike), written as split partials that
// think_combine_kernel merges (with those of think_decode_mma_kernel over a KIVI region, if any),
// or as o and lse when a call has one split.
//
// Why: the lane-group kernel (think_decode_lanes.cuh) issues the same CUDA-core work per key
// whatever d_keep is (lanes past the kept channels multiply zeros), ~90-100 warp instructions
// per key at D = 128, about what an H200 SM issues while HBM delivers a 416-byte lambda = 0.4
// key + value (~120 for a 512-byte lambda = 0 one): measured at B 16 x 64K, 1042 us at lambda 0
// (4.12 TB/s) but 1013 us at lambda 0.4 (0.97x for -19% bytes). Here both products run as mma.m16n8k16 (the path-3 fragment
// maps of think_mma_layout.hpp), ~19 warp instructions per key at D = 128 (static count of the
// tile loop, ~7 of them the copies), so the time can follow the bytes.
//
// Numerics: q~ = tau log2(e) q 2^e per head (max |q~| in [1/2, 1)) enters as fp16 hi (A rows
// 0-7) and lo (rows 8-15) halves, the keys are exact fp16 B operands, so a logit is fp32-exact to
// ~2^-22; p 2^15 enters as hi / lo halves (normal down to p ~ 2^-18), the values are exact fp16,
// accumulation is fp32: outputs agree with the fp32 lane-group kernel to ~1e-6.
//
// Work: grid (segments, splits), 4 warps; the split's fp16 tokens in tiles of 16 keys (old tiles,
// then new ones; a tile never crosses the old / new boundary), tile i to warp i % 4, staged per
// warp by cp.async (kStages deep, no CTA barrier; rows past a tile's end repeat its last row, so
// every staged value is finite data and masked keys get p = 0). A warp keeps its own base-2 online
// softmax over heads gi = lane / 4; the warps' states merge at the end (merge_warp_states).
//   QK: n-tile n (keys qk_key(n, col), col = B column = lane / 4) x k-step (chunk c of 32 slots,
//       j): lane t = lane % 4 reads the 16 bytes of slots [32 c + 8 t, + 8) of its key and uses
//       words 2j, 2j + 1 as b0, b1 (slots 32 c + 8 t + 4 j + {0, 1} / {2, 3}; the A fragments
//       hold q~ of the same slots);
//   PV: k-step of the 16 keys, the lane's keys t + 4 i (pv_lane_key), n-tile n: B column col is
//       channel mma16_channel(n, col) = 8 (col + 8 (n / 8)) + n % 8, so a lane reads its keys'
//       16-byte pieces col, col + 8 and pairs the keys' halves with one PRMT per B register.
// Shared-memory row strides 2D + 16 (K: the two key rows a quarter-warp reads are 4 apart) and
// 2D + 32 (V: 4 consecutive rows x 2 pieces) keep the 16-byte reads free of bank conflicts.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/kernels/dense_decode.cuh"
#include "memattn/kernels/think_decode.cuh"
#include "memattn/kernels/think_mma_layout.hpp"
#include "memattn/kernels/think_mma_warp.cuh"
#include "memattn/kernels/warp_reduce.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace think_mma16 {

constexpr int kTileKeys = 16;  // 2 QK n-tiles = 1 PV k-step
constexpr int kStages = 2;
constexpr float kPScale = 32768.f;  // p 2^15 in fp16: the lo half stays normal down to p ~ 2^-18
constexpr float kPInv = 1.f / 32768.f;

// CTAs per SM the launch bounds ask for (registers; shared memory allows them on sm_90).
MEMATTN_HOST_DEVICE constexpr int ctas_per_sm(int head_dim) { return head_dim == 128 ? 2 : 4; }
MEMATTN_HOST_DEVICE int k_stride(int head_dim) { return 2 * head_dim + 16; }
MEMATTN_HOST_DEVICE int v_stride(int head_dim) { return 2 * head_dim + 32; }
MEMATTN_HOST_DEVICE int stage_bytes(int head_dim) { return kTileKeys * (k_stride(head_dim) + v_stride(head_dim)); }
// q~ A fragments of the two slot sets (kept channels, all channels): [set][k-step][lane] uint4
MEMATTN_HOST_DEVICE int frag_bytes(int head_dim) { return 2 * (head_dim / 16) * 32 * 16; }
// value extension (vprune): per warp 8 x D floats to move its outputs from compact value slots to
// channels, and the kept value channel list
MEMATTN_HOST_DEVICE int vprune_bytes(int head_dim) { return think_mma::kWarps * kThinKMaxGroup * head_dim * 4 + head_dim; }
MEMATTN_HOST_DEVICE int stages_bytes(int head_dim) { return think_mma::kWarps * kStages * stage_bytes(head_dim); }
// The stage area (q rows (8 x (D + 4) floats) and the key channel list are read there once, before
// the stages are used; the end-of-split merge reuses it), then the fragments, then (vprune) the
// value-extension region.
MEMATTN_HOST_DEVICE int area_bytes(int head_dim) {
  const int setup = kThinKMaxGroup * (head_dim + 4) * 4 + head_dim;
  const int merge = think_mma::kWarps * kThinKMaxGroup * (head_dim + 2) * 4;
  int a = stages_bytes(head_dim);
  a = a > setup ? a : setup;
  return a > merge ? a : merge;
}
MEMATTN_HOST_DEVICE int smem_bytes(int head_dim, bool vprune) {
  return area_bytes(head_dim) + frag_bytes(head_dim) + (vprune ? vprune_bytes(head_dim) : 0);
}
// Value channel of column col of PV n-tile n (see above).
MEMATTN_HOST_DEVICE int mma16_channel(int n, int col) { return 8 * (col + 8 * (n >> 3)) + (n & 7); }

}  // namespace think_mma16

// grid (segments = B * Hkv, splits), think_mma::kThreads threads, think_mma16::smem_bytes(D,
// p.v_channels != nullptr) of dynamic shared memory; D = head_dim (64 / 128). Reads tokens
// [n_q, n_q + n_old + n_new) of each segment (n_q = 0 without a KIVI region); split k covers
// sp.split_keys of them from n_q on (all when split_keys = 0) and writes partial slot
// (sp.slot0 + k) * gridDim.x + s, or o and lse when sp.splits = 1; raw logits when p.scores is set.
template <int D>
MEMATTN_KERNEL void __launch_bounds__(think_mma::kThreads, think_mma16::ctas_per_sm(D))
    think_decode_mma16_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  using namespace think_mma;
  using think_mma16::kStages;
  using think_mma16::kTileKeys;
  constexpr int kChunks = D / kChunkChannels;  // 32-slot chunks of a full-width key
  constexpr int kKSteps = D / 16;
  constexpr int kNTiles = D / 8;
  constexpr int kPieces = D / 64;  // 16-byte value pieces of a lane per key
  constexpr int KS = 2 * D + 16, VS = 2 * D + 32;
  MEMATTN_DYNAMIC_SMEM(unsigned char, smem);

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int gi = row_group(lane), t4 = quad(lane);
  const long long s = blockIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int G = p.q_heads / p.kv_heads, dk = p.d_keep;
  const int dk8 = (dk + 7) / 8 * 8;  // old rows are read in whole 16-byte pieces (padding: finite, q = 0)
  const int n_q = p.n_q != nullptr ? p.n_q[s] : 0;
  const int n_k = n_q + p.n_old[s], total = n_k + p.n_new[s];
  const int t_lo = sp.split_keys > 0 ? min(total, n_q + split * sp.split_keys) : n_q;
  const int t_hi = sp.split_keys > 0 ? min(total, t_lo + sp.split_keys) : total;
  const int o0 = min(t_lo, n_k), o1 = min(t_hi, n_k), n0 = max(t_lo, n_k), n1 = max(t_hi, n_k);
  const int old_tiles = (o1 - o0 + kTileKeys - 1) / kTileKeys;
  const int tiles = old_tiles + (n1 - n0 + kTileKeys - 1) / kTileKeys;
  const int items = tiles > warp ? (tiles - warp + kWarps - 1) / kWarps : 0;  // tiles warp, warp + 4, ...

  unsigned char* const frag_s = smem + think_mma16::area_bytes(D);
  // value extension: old values hold dv_keep kept channels (rows of dv8 halves, read in whole
  // pieces); the warp accumulates old tiles in compact slots and moves them to channels (to_full)
  // before its first new tile
  const bool vpr = p.v_channels != nullptr;
  const int dvk = vpr ? p.dv_keep : D, dv8 = (dvk + 7) / 8 * 8;
  float* const conv_s = reinterpret_cast<float*>(frag_s + think_mma16::frag_bytes(D)) + warp * kThinKMaxGroup * D;
  std::uint8_t* const vch_s = reinterpret_cast<std::uint8_t*>(frag_s + think_mma16::frag_bytes(D)) + kWarps * kThinKMaxGroup * D * 4;
  if (vpr)
    for (int i = static_cast<int>(threadIdx.x); i < dvk; i += kThreads) vch_s[i] = p.v_channels[s * dvk + i];
  // q~ of the CTA's heads as fp16 hi / lo A fragments, for the kept slots (old tokens) and all
  // slots (new tokens): warp 0 builds the first set, warp 1 the second, from q rows staged in the
  // (not yet used) stage area; both use the exponent of the full row, >= that of the kept slots.
  constexpr float kLog2e = 1.4426950408889634f;
  float q_inv;
  {
    float* const q_s = reinterpret_cast<float*>(smem);
    std::uint8_t* const chl_s = smem + kThinKMaxGroup * (D + 4) * 4;
    const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
    for (int i = static_cast<int>(threadIdx.x); i < kThinKMaxGroup * D; i += kThreads) {
      const int r = i / D, c = i % D;
      q_s[r * (D + 4) + c] = r < G ? qg[r * D + c] * (p.scale * kLog2e) : 0.f;
    }
    for (int i = static_cast<int>(threadIdx.x); i < dk; i += kThreads) chl_s[i] = p.channels[s * dk + i];
    __syncthreads();
    const float* x = q_s + gi * (D + 4);
    float mx = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
#pragma unroll
      for (int e = 0; e < 8; ++e) mx = fmaxf(mx, fabsf(x[qk_lane_slot(c, t4) + e]));
    float qs;
    pow2_scale<-1>(quad_max(mx), &qs, &q_inv);
    if (warp < 2) {
      const bool kept = warp == 0;
      auto qv = [&](int slot) { return kept ? (slot < dk ? x[chl_s[slot]] : 0.f) * qs : x[slot] * qs; };
      uint4* dst = reinterpret_cast<uint4*>(frag_s) + (kept ? 0 : kKSteps * 32);
#pragma unroll
      for (int c = 0; c < kChunks; ++c)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int sl = qk_lane_slot(c, t4) + 4 * j;
          uint4 f;
          split2(qv(sl), qv(sl + 1), &f.x, &f.y);
          split2(qv(sl + 2), qv(sl + 3), &f.z, &f.w);
          dst[(2 * c + j) * 32 + lane] = f;
        }
    }
    __syncthreads();  // the stage area is free again, the fragments are in place
  }

  unsigned char* const wstage = smem + warp * kStages * think_mma16::stage_bytes(D);
  // K padding (slots dk8.. of the old rows' last chunk) reads 0 in every stage: old tiles write
  // slots [0, dk8) only, and they all come before the first new tile.
  {
    const int pad_end = (dk8 + kChunkChannels - 1) / kChunkChannels * kChunkChannels;
    const int per_row = (pad_end - dk8) / 2;  // 32-bit words
    for (int st = 0; st < kStages; ++st)
      for (int i = lane; i < kTileKeys * per_row; i += 32) {
        const int r = i / per_row, w = i % per_row;
        reinterpret_cast<std::uint32_t*>(wstage + st * think_mma16::stage_bytes(D) + r * KS + dk8 * 2)[w] = 0u;
      }
    __syncwarp();
  }

  const Half* const k_old = p.k_old + s * p.old_seg_stride;
  const Half* const k_new = p.k_new + s * p.new_seg_stride;
  const bool split_v = p.v_old != nullptr;
  const Half* const v_old = split_v ? p.v_old + s * p.v_old_seg_stride : p.v + s * p.v_seg_stride;
  const int v_old_rs = split_v ? p.old_v_row_stride : D;
  const Half* const v_new = p.v + s * p.v_seg_stride + (split_v ? 0 : static_cast<long long>(n_k - n_q) * D);
  // Copies: lane = (row group, piece) of a 16 x (D / 8) grid of 16-byte pieces, the same for K and
  // V; old K rows have dk8 / 8 pieces (the lanes past them idle). Past a region's end the rows
  // repeat its last token.
  constexpr int kRowPieces = D / 8, kRowStep = 32 / kRowPieces;
  const int pc = lane % kRowPieces, r_lane = lane / kRowPieces;
  const bool k_piece_old = pc * 8 < dk8, v_piece_old = pc * 8 < dv8;

  // Tile of item i: old (tokens from o0) or new (from n0); keys [base, end).
  auto tile_of = [&](int item, bool* old, int* base, int* end) {
    const int t = warp + kWarps * item;
    *old = t < old_tiles;
    *base = *old ? o0 + t * kTileKeys : n0 + (t - old_tiles) * kTileKeys;
    *end = *old ? o1 : n1;
  };
  auto issue = [&](int item) {
    bool old;
    int base, end;
    tile_of(item, &old, &base, &end);
    unsigned char* st = wstage + (item % kStages) * think_mma16::stage_bytes(D) + pc * 16;
    const int r0 = old ? n_q : n_k;  // first token of the region
    const int krs = old ? p.old_row_stride : D, vrs = old ? v_old_rs : D;  // halves (row strides fit an int)
    const Half* ksrc = (old ? k_old : k_new) + static_cast<long long>(base - r0) * krs + pc * 8;
    const Half* vsrc = (old ? v_old : v_new) + static_cast<long long>(base - r0) * vrs + pc * 8;
    const bool k_on = !old || k_piece_old, v_on = !old || v_piece_old;  // pieces past them: unused slots
    if (end - base >= kTileKeys) {  // a whole tile (warp-uniform): the lane's rows kRowStep apart
      const Half* kp = ksrc + r_lane * krs;
      const Half* vp = vsrc + r_lane * vrs;
#pragma unroll
      for (int u = 0; u < kTileKeys / kRowStep; ++u) {
        const int r = r_lane + kRowStep * u;
        if (k_on) detail::cp_async_16(st + r * KS, kp);
        if (v_on) detail::cp_async_16(st + kTileKeys * KS + r * VS, vp);
        kp += kRowStep * krs;
        vp += kRowStep * vrs;
      }
      return;
    }
    const int last = end - 1 - base;  // rows past it repeat it
#pragma unroll
    for (int u = 0; u < kTileKeys / kRowStep; ++u) {
      const int r = r_lane + kRowStep * u, row = min(r, last);
      if (k_on) detail::cp_async_16(st + r * KS, ksrc + row * krs);
      if (v_on) detail::cp_async_16(st + kTileKeys * KS + r * VS, vsrc + row * vrs);
    }
  };
  warp_pipeline_prime<kStages>(items, issue);

  float o[kNTiles][4], m = -INFINITY, l = 0.f;
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float* const scores = p.scores != nullptr ? p.scores + s * p.scores_seg_stride + static_cast<long long>(gi) * p.scores_row_stride : nullptr;
  // Value extension: o's columns are compact value slots (mma16_channel) until the warp's first
  // new tile; then each head's slot sums (hi + lo rows) go to their channels through conv_s and o
  // holds channels (pruned ones 0). Slots past dv_keep hold garbage of unread pieces: dropped.
  bool full_width = !vpr;
  auto to_full = [&] {
    for (int i = lane; i < kThinKMaxGroup * D; i += 32) conv_s[i] = 0.f;
    __syncwarp();
#pragma unroll
    for (int n = 0; n < kNTiles; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int slot = think_mma16::mma16_channel(n, 2 * t4 + e);
        if (slot < dvk) conv_s[gi * D + vch_s[slot]] = o[n][e] + o[n][e + 2];
      }
    __syncwarp();
#pragma unroll
    for (int n = 0; n < kNTiles; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        o[n][e] = conv_s[gi * D + think_mma16::mma16_channel(n, 2 * t4 + e)];
        o[n][e + 2] = 0.f;
      }
    full_width = true;
  };

  for (int item = 0; item < items; ++item) {
    warp_pipeline_next<kStages>(item, items, issue);
    bool old;
    int base, end;
    tile_of(item, &old, &base, &end);
    if (!old && !full_width) to_full();  // warp-uniform, once
    const unsigned char* st = wstage + (item % kStages) * think_mma16::stage_bytes(D);
    const int chunks = old ? (dk8 + kChunkChannels - 1) / kChunkChannels : kChunks;
    const uint4* qf = reinterpret_cast<const uint4*>(frag_s) + (old ? 0 : kKSteps * 32) + lane;

    // Logits of the 2 n-tiles (keys qk_key(n, 2 t4 + e)), base 2; -inf past end.
    float lg[2][2];
    {
      float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        if (c >= chunks) break;
        const uint4 f0 = qf[(2 * c) * 32], f1 = qf[(2 * c + 1) * 32];
        const std::uint32_t a0[4] = {f0.x, f0.y, f0.z, f0.w}, a1[4] = {f1.x, f1.y, f1.z, f1.w};
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          const uint4 kw = *reinterpret_cast<const uint4*>(st + qk_key(n, gi) * KS + qk_lane_slot(c, t4) * 2);
          mma16816(acc[n], a0, kw.x, kw.y);
          mma16816(acc[n], a1, kw.z, kw.w);
        }
      }
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) lg[n][e] = (acc[n][e] + acc[n][e + 2]) * q_inv;  // hi rows + lo rows
    }
    if (end - base < kTileKeys)  // warp-uniform: only a region's last tile
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (base + qk_key(n, 2 * t4 + e) >= end) lg[n][e] = -INFINITY;
    if (scores != nullptr && gi < G)
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int t = base + qk_key(n, 2 * t4 + e);
          if (t < end) scores[t] = lg[n][e] * detail::kLn2;
        }

    // Online softmax of head gi (the quad holds its 16 keys), lazy rescale (warp vote).
    float pk[2][2];
    online_softmax_tile(lg, m, l, o, pk);
    std::uint32_t pa[4];  // P 2^15: keys t4, t4 + 4 (a0, a1) and t4 + 8, t4 + 12 (a2, a3), hi / lo rows
    split2(pk[0][0] * think_mma16::kPScale, pk[0][1] * think_mma16::kPScale, &pa[0], &pa[1]);
    split2(pk[1][0] * think_mma16::kPScale, pk[1][1] * think_mma16::kPScale, &pa[2], &pa[3]);

    // Values: the lane's keys t4 + 4 i, pieces gi + 8 pc (channels mma16_channel(8 pc + w, gi)).
    const unsigned char* sv = st + kTileKeys * KS + gi * 16;
#pragma unroll
    for (int pc = 0; pc < kPieces; ++pc) {
      uint4 vw[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) vw[i] = *reinterpret_cast<const uint4*>(sv + pv_lane_key(0, t4, i) * VS + pc * 128);
      const std::uint32_t w[4][4] = {{vw[0].x, vw[0].y, vw[0].z, vw[0].w}, {vw[1].x, vw[1].y, vw[1].z, vw[1].w},
                                     {vw[2].x, vw[2].y, vw[2].z, vw[2].w}, {vw[3].x, vw[3].y, vw[3].z, vw[3].w}};
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const std::uint32_t b0 = halves(w[0][e >> 1], w[1][e >> 1], e & 1);
        const std::uint32_t b1 = halves(w[2][e >> 1], w[3][e >> 1], e & 1);
        mma16816(o[8 * pc + e], pa, b0, b1);
      }
    }
  }
  detail::cp_async_wait<0>();
  if (!full_width) to_full();  // a warp that read old tiles only
  __syncthreads();  // the merge reuses the stages

  stash_warp_state<D>(smem, warp, lane, o, m, l, think_mma16::kPInv, [](int n, int col) { return think_mma16::mma16_channel(n, col); });
  __syncthreads();
  merge_warp_states<D>(smem, p, sp, s, static_cast<long long>(sp.slot0 + split) * gridDim.x + s, sp.splits == 1);
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
