// Lane-group ThinK / composed decode (the fast path of cuda::think_decode for aligned layouts):
// the same attention as think_decode_kernel -- one query token per (sequence, KV head) segment
// over [quantised: KIVI blocks of d_keep key channels | old: d_keep kept key channels | new:
// full-width keys], one softmax, tau of the full d, raw logits and LSE for the eviction epilogue --
// computed the way the dense decode computes it (dense_decode.cuh, within 3-14% of cuDNN on the
// H100), instead of CUDA-core tiles staged as fp32:
//   * D / 8 lanes share a key, each lane owns 8 consecutive slots (one 16-byte piece of fp16 K and
//     V; at 2 / 4 / 8 bits its 8 codes, a 4- or 8-byte piece); a quantised or old row's slots are
//     its kept channels, so the lanes past ceil(d_keep / 8) hold zeros and their q slots are 0,
//     and lane l's q registers hold tau * log2(e) * q[ch[8l + i]] over those rows, q[8l + i] over
//     new rows (reloaded once, when a split crosses into the new region);
//   * a multi-stage cp.async pipeline per thread (no barrier), lazy rescaling, base-2 softmax: the
//     dense decode's detail::decode_chunk, which also writes the raw logits (natural log) when
//     asked; KIVI pieces decode as fma(code, scale, zero) (KiviPieces: the block's key meta in
//     registers, loaded when a chunk starts a new block; the token's value meta in the piece; codes
//     become floats by code_to_float, not I2F);
//   * a chunk never crosses a region or KIVI block boundary (the chunk index alone says where it is).
// With one split the CTA writes o and lse; with several it writes the (m, l, acc) partials of
// think_combine_kernel (m in natural log, acc and l relative to it), which merges them.
// Not here (the tile kernel does them): the value extension (v_channels), unaligned rows,
// head_dim other than 64 / 128 / 256.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "memattn/kernels/dense_decode.cuh"
#include "memattn/kernels/quant_codes.cuh"
#include "memattn/kernels/think_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

namespace think_lanes {

enum Region : int { kQuantised = 0, kOld = 1, kNew = 2 };

// The chunks of a split, in token order: the quantised part [q0, q1) chunked per block (cpb chunk
// slots of kChunk keys per block of at most qgroup tokens, blocks b0..; a slot outside the split
// or past a partly filled block's end is empty), then the old part [o0, o1) and the new part
// [n0, n1), each chunked from its start. A chunk never crosses a region or block boundary.
struct SplitParts {
  int q0, q1, b0, cpb, q_chunks;
  int o0, o1, n0, n1, old_chunks, chunks;
  // KIVI blocks: first token of each (nullptr: full blocks of qgroup), count, region end
  const int* first;
  int n_blocks, qgroup, n_q;
  MEMATTN_DEVICE void block(int blk, int* lo, int* hi) const {
    if (first != nullptr) {
      *lo = first[blk];
      *hi = blk + 1 < n_blocks ? first[blk + 1] : n_q;
    } else {
      *lo = blk * qgroup;
      *hi = min(*lo + qgroup, n_q);
    }
  }
  // Block holding token t < n_q (the last block starting at or before t).
  MEMATTN_DEVICE int block_of(int t) const {
    if (first == nullptr) return t / qgroup;
    int lo = 0, hi = n_blocks - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (first[mid] <= t) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
  // Chunk c: region, first key, mask bound (keys at or past it do not exist), and for a quantised
  // chunk its block and the block's first token. base >= end: an empty chunk.
  MEMATTN_DEVICE void chunk(int c, int kChunk, Region* region, int* base, int* end, int* blk, int* blk_lo) const {
    if (c < q_chunks) {
      *region = kQuantised;
      *blk = b0 + c / cpb;
      int lo, hi;
      block(*blk, &lo, &hi);
      *blk_lo = lo;
      const int slot = lo + (c % cpb) * kChunk;
      *base = max(slot, q0);
      *end = min(min(slot + kChunk, hi), q1);
      return;
    }
    c -= q_chunks;
    *blk = 0;
    *blk_lo = 0;
    *region = c < old_chunks ? kOld : kNew;
    *base = c < old_chunks ? o0 + c * kChunk : n0 + (c - old_chunks) * kChunk;
    *end = c < old_chunks ? o1 : n1;
  }
};

// 4- or 8-byte asynchronous copy global -> shared (cp.async.ca: the sizes below 16 bytes).
template <int N>
MEMATTN_DEVICE void cp_async_ca(void* smem, const void* gmem) {
#if defined(MEMATTN_SIMT_EMULATION)
  memattn_emu::async_copy(smem, gmem, N);
#else
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(sa), "l"(gmem), "n"(N) : "memory");
#endif
}

// A lane's KIVI pieces (decode_chunk's Pieces): its 8 kept key channels' codes (the aligned 32-bit
// word holding them at 2 bits, one word at 4, two at 8) decoded as fma(code, scale, zero) with the
// block's per-channel meta held in registers; its 8 value channels' codes (same packing, within
// the token's row) and the token's (scale, zero) of their group in the piece's third word.
struct KiviPieces {
  float ks[8], kz[8];
  int kbits, vbits, dk, lane, blk_lo;
  MEMATTN_DEVICE static void codes(const uint4& u, int bits, int shift, float (&c)[8]) {
    if (bits == 8) {
#pragma unroll
      for (int i = 0; i < 8; ++i) c[i] = code_to_float(((i < 4 ? u.x : u.y) >> (8 * (i & 3))) & 255u);
    } else {
      const std::uint32_t mask = (1u << bits) - 1u;
#pragma unroll
      for (int i = 0; i < 8; ++i) c[i] = code_to_float((u.x >> (shift + bits * i)) & mask);
    }
  }
  MEMATTN_DEVICE void key(const uint4& u, int j, float (&f)[8]) const {
    // 2 bits: the piece starts at bit ((j - blk_lo) * dk + 8 lane) * 2 of the block, inside the
    // copied aligned word at that offset mod 32
    const int shift = kbits == 2 ? (((j - blk_lo) * dk + 8 * lane) * 2) & 31 : 0;
    float c[8];
    codes(u, kbits, shift, c);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = fmaf(c[i], ks[i], kz[i]);
  }
  MEMATTN_DEVICE void value(const uint4& u, int, float (&f)[8]) const {
    float c[8];
    codes(u, vbits, vbits == 2 ? (lane & 1) * 16 : 0, c);
    const float2 sz = __half22float2(*reinterpret_cast<const __half2*>(&u.z));
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = fmaf(c[i], sz.x, sz.y);
  }
};

// Copies chunk [base, base + kChunk) (keys at or past `end` clamped to end - 1, masked later) of
// one lane group into a pipeline stage: K and V pieces of the lane, at slot (u, 0 / 1) as
// decode_chunk reads them. Old K pieces past the kept channels are zeros (plain shared store: the
// thread itself reads the slot, after the pipeline's wait).
template <int D, int R>
MEMATTN_DEVICE void issue(uint4* stage, const Half* krow0, const Half* vrow0, long long ks, long long vs, int region_lo,
                          int base, int end, bool k_piece, int group, int tid) {
  using Cfg = DenseDecodeConfig<D, R>;
#pragma unroll
  for (int u = 0; u < Cfg::kUnroll; ++u) {
    int j = base + group * Cfg::kUnroll + u;
    j = (j < end ? j : end - 1) - region_lo;
    if (k_piece) {
      detail::cp_async_16(stage + (u * 2 + 0) * Cfg::kThreads + tid, krow0 + static_cast<long long>(j) * ks);
    } else {
      stage[(u * 2 + 0) * Cfg::kThreads + tid] = make_uint4(0u, 0u, 0u, 0u);
    }
    detail::cp_async_16(stage + (u * 2 + 1) * Cfg::kThreads + tid, vrow0 + static_cast<long long>(j) * vs);
  }
}

// Quantised chunk: per key, the lane's K code piece (zeros past the kept channels) into the K slot
// and its V code piece + V group meta into bytes 0-7 / 8-11 of the V slot.
template <int D, int R>
MEMATTN_DEVICE void issue_quantised(uint4* stage, const ThinKDecodeParams& p, long long s, int base, int end, int blk,
                                    int blk_lo, int lane, int group, int tid) {
  using Cfg = DenseDecodeConfig<D, R>;
  const char* kblock = reinterpret_cast<const char*>(p.kq + s * p.kq_seg_stride + static_cast<long long>(blk) * p.kq_block_words);
  const char* vseg = reinterpret_cast<const char*>(p.vq + s * p.vq_seg_stride);
  const std::uint16_t* mseg = p.vqm + s * p.vqm_seg_stride;
  const int ngv = p.head_dim / p.v_group;
  const bool k_piece = lane * 8 < p.d_keep;
#pragma unroll
  for (int u = 0; u < Cfg::kUnroll; ++u) {
    int j = base + group * Cfg::kUnroll + u;
    j = j < end ? j : end - 1;
    uint4* ks = stage + (u * 2 + 0) * Cfg::kThreads + tid;
    uint4* vs = stage + (u * 2 + 1) * Cfg::kThreads + tid;
    if (k_piece) {
      const int byte = ((j - blk_lo) * p.d_keep + 8 * lane) * p.bits_k / 8;
      if (p.bits_k == 8) cp_async_ca<8>(ks, kblock + byte);
      else cp_async_ca<4>(ks, kblock + (byte & ~3));
    } else {
      *ks = make_uint4(0u, 0u, 0u, 0u);
    }
    const char* vrow = vseg + static_cast<long long>(j) * p.v_words * 4;
    const int vbyte = 8 * lane * p.bits_v / 8;
    if (p.bits_v == 8) cp_async_ca<8>(vs, vrow + vbyte);
    else cp_async_ca<4>(vs, vrow + (vbyte & ~3));
    cp_async_ca<4>(reinterpret_cast<char*>(vs) + 8, mseg + static_cast<long long>(j) * 2 * ngv + 2 * (8 * lane / p.v_group));
  }
}

}  // namespace think_lanes

// grid (segments = B * Hkv, splits), block kDecodeThreads; R: query heads per KV head rounded up
// to a power of two (the rows of the tile); kQuant: the KIVI region is read (n_q set).
template <int D, int R, bool kQuant>
MEMATTN_KERNEL void __launch_bounds__(kDecodeThreads, (DenseDecodeConfig<D, R>::kMinBlocksPerSm))
think_decode_lanes_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  using Cfg = DenseDecodeConfig<D, R>;
  constexpr int kLanes = Cfg::kLanes;
  constexpr int kChunk = Cfg::kChunk;
  constexpr int kStages = Cfg::kStages;
  constexpr int kStageVecs = Cfg::kUnroll * 2 * kDecodeThreads;

  MEMATTN_SHARED(__align__(16) unsigned char, smem, [Cfg::kSmemBytes]);
  uint4* pipe = reinterpret_cast<uint4*>(smem);

  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / kLanes;
  const int lane = tid % kLanes;  // owns slots [lane * 8, lane * 8 + 8)
  const long long s = blockIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int G = p.q_heads / p.kv_heads, dk = p.d_keep;
  const int n_q = kQuant ? p.n_q[s] : 0;
  const int n_k = n_q + p.n_old[s], total = n_k + p.n_new[s];
  const int t0 = sp.after_quantised ? n_q : 0;
  const int t_lo = sp.split_keys > 0 ? min(total, t0 + split * sp.split_keys) : t0;
  const int t_hi = sp.split_keys > 0 ? min(total, t_lo + sp.split_keys) : total;
  think_lanes::SplitParts parts;
  parts.first = kQuant && p.kq_first != nullptr ? p.kq_first + s * p.kq_first_seg_stride : nullptr;
  parts.n_blocks = kQuant && p.kq_first != nullptr ? p.n_blocks[s] : 0;
  parts.qgroup = kQuant ? p.qgroup : 1;
  parts.n_q = n_q;
  parts.q0 = min(t_lo, n_q);
  parts.q1 = min(t_hi, n_q);
  parts.cpb = (parts.qgroup + kChunk - 1) / kChunk;
  parts.b0 = parts.q0 < parts.q1 ? parts.block_of(parts.q0) : 0;
  parts.q_chunks = parts.q0 < parts.q1 ? (parts.block_of(parts.q1 - 1) - parts.b0 + 1) * parts.cpb : 0;
  parts.o0 = min(max(t_lo, n_q), n_k);
  parts.o1 = min(max(t_hi, n_q), n_k);
  parts.n0 = max(t_lo, n_k);
  parts.n1 = max(t_hi, n_k);
  parts.old_chunks = (parts.o1 - parts.o0 + kChunk - 1) / kChunk;
  parts.chunks = parts.q_chunks + parts.old_chunks + (parts.n1 - parts.n0 + kChunk - 1) / kChunk;

  const Half* k_old = p.k_old + s * p.old_seg_stride + lane * 8;
  const Half* k_new = p.k_new + s * p.new_seg_stride + lane * 8;
  const bool split_v = p.v_old != nullptr;
  // old values: v_old's rows (apart), or v's first n_old rows with the new tokens' rows after them
  const Half* v_old = (split_v ? p.v_old + s * p.v_old_seg_stride : p.v + s * p.v_seg_stride) + lane * 8;
  const long long v_old_rs = split_v ? p.old_v_row_stride : p.head_dim;
  const Half* v_new = p.v + s * p.v_seg_stride + (split_v ? 0 : static_cast<long long>(n_k - n_q) * D) + lane * 8;
  const bool old_k_piece = lane * 8 < dk;

  auto issue = [&](int c) {
    think_lanes::Region region;
    int base, end, blk, blk_lo;
    parts.chunk(c, kChunk, &region, &base, &end, &blk, &blk_lo);
    if (base >= end) return;  // empty slot of a partly filled block
    uint4* stage = pipe + (c % kStages) * kStageVecs;
    if (kQuant && region == think_lanes::kQuantised) {
      think_lanes::issue_quantised<D, R>(stage, p, s, base, end, blk, blk_lo, lane, group, tid);
    } else if (region == think_lanes::kOld) {
      think_lanes::issue<D, R>(stage, k_old, v_old, p.old_row_stride, v_old_rs, n_q, base, end, old_k_piece, group, tid);
    } else {
      think_lanes::issue<D, R>(stage, k_new, v_new, D, D, n_k, base, end, true, group, tid);
    }
  };
#pragma unroll
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < parts.chunks) issue(c);
    detail::cp_async_commit();
  }

  // q of the region being read, in the base-2 domain: gathered kept channels (quantised, old) or
  // all (new).
  constexpr float kLog2e = 1.4426950408889634f;
  const float qscale = p.scale * kLog2e;
  const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
  const std::uint8_t* chl = p.channels + s * dk;
  float q[R][8];
  auto load_q = [&](bool kept) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int slot = lane * 8 + i;
        float x = 0.f;
        if (r < G && (!kept || slot < dk)) x = qg[r * D + (kept ? chl[slot] : slot)] * qscale;
        q[r][i] = x;
      }
  };
  bool q_kept = parts.q_chunks + parts.old_chunks > 0;
  load_q(q_kept);

  float m[R], l[R], acc[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[r][i] = 0.f;
  }
  // Rows = the G query heads (padding rows R > G are masked); every key is visible (decode).
  const detail::RowBounds rb{total - 1, 0, G, G, 0};
  detail::ScoreRows srow;
  if (p.scores != nullptr) {
    srow.ptr = p.scores + s * p.scores_seg_stride;
    srow.row_stride = p.scores_row_stride;
  }
  // KIVI: this lane's key meta (scale, zero of its 8 kept channels) of block meta_blk; zeros past
  // the kept channels (their codes are zero pieces, their q slots 0)
  think_lanes::KiviPieces kp{};
  int meta_blk = -1;
  if (kQuant) {
    kp.kbits = p.bits_k, kp.vbits = p.bits_v, kp.dk = dk, kp.lane = lane;
  }

  for (int c = 0; c < parts.chunks; ++c) {
    const int next = c + kStages - 1;
    if (next < parts.chunks) issue(next);
    detail::cp_async_commit();
    detail::cp_async_wait<kStages - 1>();
    think_lanes::Region region;
    int base, end, blk, blk_lo;
    parts.chunk(c, kChunk, &region, &base, &end, &blk, &blk_lo);
    if (base >= end) continue;  // empty slot (uniform over the CTA)
    const bool kept = region != think_lanes::kNew;
    if (kept != q_kept) {  // the split crossed into the new region (once)
      q_kept = kept;
      load_q(kept);
    }
    const uint4* stage = pipe + (c % kStages) * kStageVecs;
    const bool full = base + kChunk <= end;  // every key of the chunk exists (padding rows R > G are never written)
    if (kQuant && region == think_lanes::kQuantised) {
      if (blk != meta_blk) {  // a new block: its per-channel key meta (L2-resident, 32 bytes per lane)
        meta_blk = blk;
        if (old_k_piece) {
          const uint4* mp = reinterpret_cast<const uint4*>(p.kqm + s * p.kqm_seg_stride + static_cast<long long>(blk) * 2 * dk + 16 * lane);
          const uint4 m0 = __ldg(mp), m1 = __ldg(mp + 1);
          const std::uint32_t w[8] = {m0.x, m0.y, m0.z, m0.w, m1.x, m1.y, m1.z, m1.w};
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const float2 sz = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
            kp.ks[i] = sz.x;
            kp.kz[i] = sz.y;
          }
        }
      }
      kp.blk_lo = blk_lo;
      if (full) {
        detail::decode_chunk<Half, D, R, false>(stage, tid, base, group, end, rb, q, m, l, acc, srow, kp);
      } else {
        detail::decode_chunk<Half, D, R, true>(stage, tid, base, group, end, rb, q, m, l, acc, srow, kp);
      }
    } else if (full) {
      detail::decode_chunk<Half, D, R, false>(stage, tid, base, group, end, rb, q, m, l, acc, srow);
    } else {
      detail::decode_chunk<Half, D, R, true>(stage, tid, base, group, end, rb, q, m, l, acc, srow);
    }
  }
  detail::cp_async_wait<0>();
  __syncthreads();  // the epilogue reuses the pipeline's shared memory

  // Merge the lane groups' streams (fixed order: deterministic), as the dense decode does.
  detail::stash_group_state<D, R>(smem, group, lane, m, l, acc);
  __syncthreads();
  constexpr float kLn2 = 0.6931471805599453f;
  const long long slot = static_cast<long long>(sp.slot0 + split) * gridDim.x + s;  // split partials (think_combine_kernel)
  for (int item = tid; item < R * kLanes; item += kDecodeThreads) {
    const int r = item / kLanes, cp = item % kLanes;
    if (r >= G) continue;
    float o[8], mx, lsum;
    detail::merge_group_states<D, R>(smem, r, cp, o, &mx, &lsum);
    if (sp.splits == 1) {
      const bool some = detail::keys_or_poison(lsum);
      const float inv = some ? 1.f / lsum : 0.f;
      float* op = p.o + (static_cast<long long>(b) * p.q_heads + h * G + r) * D + cp * 8;
#pragma unroll
      for (int i = 0; i < 8; ++i) op[i] = o[i] * inv;
      if (p.lse != nullptr && cp == 0)
        p.lse[static_cast<long long>(b) * p.q_heads + h * G + r] = some ? (mx + log2f(lsum)) * kLn2 : -INFINITY;
    } else {
      float* ap = sp.acc + (slot * G + r) * D + cp * 8;
#pragma unroll
      for (int i = 0; i < 8; ++i) ap[i] = o[i];
      if (cp == 0) {
        sp.ml[(slot * G + r) * 2] = mx * kLn2;  // -inf for an empty split: ignored by the combine; NaN for poison: kept
        sp.ml[(slot * G + r) * 2 + 1] = lsum;
      }
    }
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
