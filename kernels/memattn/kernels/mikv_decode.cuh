// MiKV fused mixed-precision decode attention on the GPU (specs/quantization.md §6.1, §8.2;
// eviction.md §4.3): one query token per (sequence, KV head) segment over
//   [Low slots | High INT8 slots | exact fp16 rows],
// ONE online softmax over all three tiers, fp32 accumulation, the same token order as the CPU cache
// (cpu/mikv_kv_cache.hpp). The Low tier comes in one of two formats (MikvDecodeParams::lo_format):
//   kRows    2/3/4-bit per-token records (quant/mixed_format.hpp, `lowk=0`);
//   kBlocks  quant::MixedBlockPool's per-channel format (`lowk=1`, MikvLowBlocks): slot s <
//            blocks*32 is row s % 32 of block s / 32 (K codes per channel over the block's 32 rows,
//            V codes per row in groups), the slots after them are exact fp16 staging rows.
// On per-token records the scales are folded out of the products,
//   λ_t = Σ_j s^K_{t,j} (q'_{Gj} · code^K_{t,Gj}) + z^K_{t,j} Σ q'_{Gj},   q' = τ q / b (balancer),
//   o_c += Σ_t (p_t s^V_{t,j(c)}) code^V_{t,c} + Σ_t p_t z^V_{t,j(c)},
// so codes enter the products as exact small integers. Block slots are read as the CPU pool reads
// them: λ_t = Σ_c q'_c (z^K_c + code^K_{t,c} s^K_c), o_c += p_t (z^V + code^V_{t,c} s^V) (each
// dequantised value exact in fp32), staging rows λ_t = q' · k^bal_t, o_c += p_t v_{t,c}.
// Dead slots (live bit clear) get λ = -inf.
// The raw logits are stashed (fp32, "precise" mode of §4.3) and rewritten at the end as normalised
// probabilities p_{g,t} = exp(λ - lse_g), the input of the H2O score epilogue.
//
// CUDA-core version: one CTA of kThreads per segment, all G query heads in the CTA (GQA read-once),
// tiles of up to kMikvTile tokens; no split-KV, no tensor cores. NaN is never laundered.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/kernels/quant_codes.cuh"
#include "memattn/quant/mixed_format.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kMikvMaxGroup = 8;   // query heads per KV head
constexpr int kMikvMaxDim = 256;
constexpr int kMikvMaxGroups = 8;  // quantisation groups per token
constexpr int kMikvTile = 64;      // tokens per tile
constexpr int kMikvBlock = 32;     // rows per Low block in the kBlocks format (quant::MixedBlockPool::kBlock)

// Format of the Low tier of every segment of a launch.
enum class MikvLowFormat : int {
  kRows = 0,    // per-token records (MikvSegment::lo_rec)
  kBlocks = 1,  // quant::MixedBlockPool's per-channel blocks + staging rows (MikvSegment::lo_blk)
};

// The Low tier of one segment in quant::MixedBlockPool's format, device pointers (the pool's raw
// arrays as they are, see MixedBlockPool::key_codes() etc.). Slots: s < blocks*32 is row s % 32 of
// block s / 32, s in [blocks*32, lo_slots) is staging row s - blocks*32. Packing as qmath.hpp
// (LSB-first in uint32 words, 32/b codes per word, 10 at 3 bits).
struct MikvLowBlocks {
  const std::uint32_t* kc;  // [blocks][ceil(32 D / (32/b))] K codes, block element t*D + c = row t, channel c
  const std::uint16_t* km;  // [blocks][D][2] fp16 bits {scale, zero} per channel
  const std::uint32_t* vc;  // [blocks*32][lo_cfg.code_words()] V codes per row, channel c at element c
  const std::uint16_t* vm;  // [blocks*32][lo_cfg.groups][2] fp16 bits {scale, zero} per V group
  const Half* k_stage;      // [lo_slots - blocks*32][D] exact staging keys, balanced (k_c b_c)
  const Half* v_stage;      // [lo_slots - blocks*32][D] exact staging values
  int blocks;
};

// One (sequence, KV head) segment of the mixed cache, device pointers.
struct MikvSegment {
  const std::uint8_t* lo_rec;    // kRows: [lo_slots] records (quant::mixed_row_layout(lo_cfg).bytes each)
  const std::uint32_t* lo_live;  // [ceil(lo_slots / 32)] live bits (both formats)
  int lo_slots;                  // kBlocks: blocks*32 + staging rows
  const std::uint8_t* hi_rec;    // INT8 High records (hi_cfg), may be null when hi_slots = 0
  const std::uint32_t* hi_live;
  int hi_slots;
  const Half* k_exact;           // [n_exact][D] fp16
  const Half* v_exact;
  int n_exact;                   // every exact row is visible to the query (decode)
  const float* balancer;         // [D] b_c
  long long stash_offset;        // first float of this segment's stash: [G][lo + hi + exact]
  MikvLowBlocks lo_blk;          // kBlocks only (lo_rec unused)
};

struct MikvDecodeParams {
  const MikvSegment* segments;   // [num_segments]
  int num_segments;
  int group;                     // G query heads per KV head
  quant::MixedRowConfig lo_cfg, hi_cfg;
  const float* q;                // [num_segments][G][D]
  float* o;                      // [num_segments][G][D]
  float* lse;                    // [num_segments][G] natural log, or null
  float* probs;                  // stash; on exit p_{g,t} (normalised) per segment
  float scale;                   // τ
  MikvLowFormat lo_format = MikvLowFormat::kRows;
};

MEMATTN_DEVICE float mikv_nan_max(float a, float b) { return (a != a) ? a : ((b != b) ? b : (b > a ? b : a)); }

// λ of Low slot `slot` in the kBlocks format: qb (τ q / b, shared) against the dequantised balanced
// key of a block row (fmaf(code, s, z) per channel, as MixedBlockPool::logits) or a staging row.
MEMATTN_DEVICE float mikv_block_logit(const MikvLowBlocks& lb, const quant::MixedRowConfig& cfg, int slot, const float* qb) {
  const int D = cfg.head_dim;
  float s = 0.f;
  if (slot < lb.blocks * kMikvBlock) {
    const int b = slot / kMikvBlock, t = slot % kMikvBlock, bits = cfg.bits, per = 32 / bits;
    const std::uint32_t mask = (1u << bits) - 1u;
    const std::uint32_t* kc = lb.kc + static_cast<std::size_t>(b) * ((kMikvBlock * D + per - 1) / per);
    const std::uint16_t* km = lb.km + static_cast<std::size_t>(b) * 2 * D;
    int w = t * D / per, sh = (t * D - w * per) * bits;  // element t*D + ch walks the bit stream
    std::uint32_t word = kc[w];
    for (int ch = 0; ch < D; ++ch) {
      const quant::GroupMeta m{Half{km[2 * ch]}, Half{km[2 * ch + 1]}};
      s += qb[ch] * quant::decode((word >> sh) & mask, m);
      sh += bits;
      if (sh + bits > 32 && ch + 1 < D) {
        word = kc[++w];
        sh = 0;
      }
    }
  } else {
    const Half* kr = lb.k_stage + static_cast<std::size_t>(slot - lb.blocks * kMikvBlock) * D;
    for (int ch = 0; ch < D; ++ch) s += qb[ch] * half_to_float(kr[ch]);
  }
  return s;
}

// Value of channel ch of Low slot `slot` in the kBlocks format (fp32, as MixedBlockPool::values).
MEMATTN_DEVICE float mikv_block_value(const MikvLowBlocks& lb, const quant::MixedRowConfig& cfg, int slot, int ch) {
  if (slot < lb.blocks * kMikvBlock) {
    const std::uint32_t* vc = lb.vc + static_cast<std::size_t>(slot) * cfg.code_words();
    const std::uint16_t* vm = lb.vm + (static_cast<std::size_t>(slot) * cfg.groups + ch / cfg.group_size()) * 2;
    return quant::decode(quant::unpack_code(vc, ch, cfg.bits), quant::GroupMeta{Half{vm[0]}, Half{vm[1]}});
  }
  return half_to_float(lb.v_stage[static_cast<std::size_t>(slot - lb.blocks * kMikvBlock) * cfg.head_dim + ch]);
}

template <int kThreads = 128>
MEMATTN_KERNEL void __launch_bounds__(kThreads) mikv_decode_kernel(const MikvDecodeParams p) {
  const MikvSegment sg = p.segments[blockIdx.x];
  const MikvLowBlocks& lob = p.segments[blockIdx.x].lo_blk;  // read in place (no register copy: no spills)
  const int D = p.lo_cfg.head_dim, G = p.group;
  const int n_lo = sg.lo_slots, n_hi = sg.hi_slots, n_ex = sg.n_exact, N = n_lo + n_hi + n_ex;
  const quant::MixedRowLayout lay_lo = quant::mixed_row_layout(p.lo_cfg), lay_hi = quant::mixed_row_layout(p.hi_cfg);
  const bool lo_blocks = p.lo_format == MikvLowFormat::kBlocks;
  float* stash = p.probs + sg.stash_offset;
  MEMATTN_SHARED(float, q_s, [kMikvMaxGroup][kMikvMaxDim]);   // τ q
  MEMATTN_SHARED(float, qb_s, [kMikvMaxGroup][kMikvMaxDim]);  // τ q / b
  MEMATTN_SHARED(float, qsum_s, [kMikvMaxGroup][kMikvMaxGroups]);
  MEMATTN_SHARED(float, acc, [kMikvMaxGroup][kMikvMaxDim]);
  MEMATTN_SHARED(float, pr, [kMikvMaxGroup][kMikvTile]);
  MEMATTN_SHARED(float, m_s, [kMikvMaxGroup]);
  MEMATTN_SHARED(float, l_s, [kMikvMaxGroup]);
  MEMATTN_SHARED(float, alpha, [kMikvMaxGroup]);
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int gi = i / D, ch = i % D;
    const float x = p.q[(static_cast<std::size_t>(blockIdx.x) * G + gi) * D + ch] * p.scale;
    q_s[gi][ch] = x;
    qb_s[gi][ch] = x / sg.balancer[ch];
    acc[gi][ch] = 0.f;
  }
  if (static_cast<int>(threadIdx.x) < G) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * p.lo_cfg.groups; i += kThreads) {
    const int gi = i / p.lo_cfg.groups, j = i % p.lo_cfg.groups, gs = p.lo_cfg.group_size();
    float s = 0.f;
    for (int ch = j * gs; ch < (j + 1) * gs; ++ch) s += qb_s[gi][ch];
    qsum_s[gi][j] = s;
  }
  __syncthreads();
  for (int t0 = 0; t0 < N; t0 += kMikvTile) {
    const int T = N - t0 < kMikvTile ? N - t0 : kMikvTile;
    // 1. logits of the tile (token index u in [0, N): Low slots, INT8 slots, exact rows)
    for (int i = threadIdx.x; i < G * T; i += kThreads) {
      const int gi = i / T, t = i % T, u = t0 + t;
      float s;
      if (u < n_lo + n_hi) {
        const bool lo = u < n_lo;
        const int slot = lo ? u : u - n_lo;
        const std::uint32_t* live = lo ? sg.lo_live : sg.hi_live;
        if (!((live[slot >> 5] >> (slot & 31)) & 1u)) {
          s = -INFINITY;
        } else if (lo && lo_blocks) {
          s = mikv_block_logit(lob, p.lo_cfg, slot, qb_s[gi]);
        } else {
          const quant::MixedRowConfig& cfg = lo ? p.lo_cfg : p.hi_cfg;
          const quant::MixedRowLayout& lay = lo ? lay_lo : lay_hi;
          const quant::MixedRowView r{(lo ? sg.lo_rec : sg.hi_rec) + static_cast<std::size_t>(slot) * lay.bytes, cfg, lay};
          const int gs = cfg.group_size();
          s = 0.f;
          for (int j = 0; j < cfg.groups; ++j) {
            float dot = 0.f;
            for (int ch = j * gs; ch < (j + 1) * gs; ++ch) dot += qb_s[gi][ch] * code_to_float(r.k_code(ch));
            const quant::GroupMeta m = r.k_meta(j);
            s += half_to_float(m.scale) * dot + half_to_float(m.zero) * qsum_s[gi][j];
          }
        }
      } else {
        const Half* kr = sg.k_exact + static_cast<std::size_t>(u - n_lo - n_hi) * D;
        s = 0.f;
        for (int ch = 0; ch < D; ++ch) s += q_s[gi][ch] * half_to_float(kr[ch]);
      }
      pr[gi][t] = s;
      stash[static_cast<std::size_t>(gi) * N + u] = s;
    }
    __syncthreads();
    // 2. online softmax update, one thread per query head
    if (static_cast<int>(threadIdx.x) < G) {
      const int gi = threadIdx.x;
      float mx = m_s[gi];
      for (int t = 0; t < T; ++t) mx = mikv_nan_max(mx, pr[gi][t]);
      const float a = mx == -INFINITY ? 1.f : expf(m_s[gi] - mx);
      float sum = 0.f;
      for (int t = 0; t < T; ++t) {
        const float e = pr[gi][t] == -INFINITY ? 0.f : expf(pr[gi][t] - mx);
        pr[gi][t] = e;
        sum += e;
      }
      l_s[gi] = l_s[gi] * a + sum;
      m_s[gi] = mx;
      alpha[gi] = a;
    }
    __syncthreads();
    // 3. values
    for (int i = threadIdx.x; i < G * D; i += kThreads) {
      const int gi = i / D, ch = i % D;
      float s = 0.f, z = 0.f;
      for (int t = 0; t < T; ++t) {
        const float w = pr[gi][t];
        if (w == 0.f) continue;
        const int u = t0 + t;
        if (u < n_lo && lo_blocks) {
          s += w * mikv_block_value(lob, p.lo_cfg, u, ch);
        } else if (u < n_lo + n_hi) {
          const bool lo = u < n_lo;
          const int slot = lo ? u : u - n_lo;
          const quant::MixedRowConfig& cfg = lo ? p.lo_cfg : p.hi_cfg;
          const quant::MixedRowLayout& lay = lo ? lay_lo : lay_hi;
          const quant::MixedRowView r{(lo ? sg.lo_rec : sg.hi_rec) + static_cast<std::size_t>(slot) * lay.bytes, cfg, lay};
          const quant::GroupMeta m = r.v_meta(ch / cfg.group_size());
          s += w * half_to_float(m.scale) * code_to_float(r.v_code(ch));
          z += w * half_to_float(m.zero);
        } else {
          s += w * half_to_float(sg.v_exact[static_cast<std::size_t>(u - n_lo - n_hi) * D + ch]);
        }
      }
      acc[gi][ch] = acc[gi][ch] * alpha[gi] + s + z;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int gi = i / D, ch = i % D;
    p.o[(static_cast<std::size_t>(blockIdx.x) * G + gi) * D + ch] = l_s[gi] > 0.f ? acc[gi][ch] / l_s[gi] : 0.f;
  }
  if (p.lse != nullptr && static_cast<int>(threadIdx.x) < G)  // an empty segment: out = 0, lse = -inf
    p.lse[static_cast<std::size_t>(blockIdx.x) * G + threadIdx.x] =
        l_s[threadIdx.x] > 0.f ? m_s[threadIdx.x] + logf(l_s[threadIdx.x]) : -INFINITY;
  // 4. stash -> normalised probabilities (the score epilogue's input)
  for (int i = threadIdx.x; i < G * N; i += kThreads) {
    const int gi = i / N;
    float& x = stash[i];
    x = x == -INFINITY ? 0.f : expf(x - m_s[gi]) / l_s[gi];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
