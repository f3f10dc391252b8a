// ThinK two-segment decode attention on the GPU (spec eviction.md §3.6, §5.7), and the decode of
// the composed cache Cache<Evict, ThinK, KIVI> (issue 7, cpu/composed_kv_cache.hpp): one query
// token per sequence over the regions of a (sequence, KV head) segment, one online softmax,
//   [quantised: KIVI blocks, d_keep key channels | old: fp16, d_keep key channels | new: full width]
// values full width (quantised per token in the first region), tau = 1/sqrt(d) of the full d. The
// CTA gathers q[ch] of its group into shared memory once; quantised and old logits use d_keep
// channels, new logits all d. Same token order and math as the CPU composed cache (codes decode as
// fma(code, scale, zero) in fp32, as cpu::ComposedKvCache's attend does).
//
// Split-KV CUDA-core kernel: grid (segments = B * Hkv, splits), 128 threads; a split walks its
// token range in tiles of up to 32 tokens (a tile never crosses the quantised region's end or a
// block boundary, nor the old/new boundary when old values are apart):
//   * K rows of the tile -> shared memory as fp32 (one warp per row, lanes over channels: coalesced
//     whatever d_keep is; quantised rows dequantised on the way), zero-padded to a multiple of 4
//     channels: float4 dot products with four independent accumulators; the row stride is an odd
//     number of float4 (no bank conflicts);
//   * V: thread c loads column c of the tile's 32 rows into registers (fp32) at the start of the
//     tile (coalesced, each element read once per CTA), overlapping the K staging and the scores;
//   * scores: one (head, token) per thread (warp = one head: q[ch] is a broadcast), online softmax
//     per head by one warp (shuffle max/sum), then acc[g][c] += p[g][t] * v[t][c] in registers
//     (p read as float4 broadcasts).
// GQA read-once: all g query heads of a KV head share each K/V row. With one split the kernel
// writes o; with several it writes (m, l, acc) partials and think_combine_kernel merges them.
// Eviction (optional): the raw logits tau * q.k of every (head, token) and each row's LSE are
// written as they are computed, the input of evict_score_epilogue_kernel (H2O / Scissorhands
// state update, spec §4.3) -- no second pass over K.
// Value layout: without v_old, `v` holds the old tokens' values then the new tokens'; with v_old,
// old values are in v_old (full width, or with v_channels the dv_keep kept channels of ThinK's
// value extension, a pruned channel reading 0) and `v` holds the new tokens only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/kernels/quant_codes.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct ThinKDecodeParams {
  // per segment s = b * kv_heads + h:
  const Half* k_old;              // rows of old_row_stride (>= d_keep) halves, at k_old + s * old_seg_stride
  long long old_seg_stride;
  int old_row_stride;
  const std::uint8_t* channels;   // [segments][d_keep] kept channels
  int d_keep;
  const Half* k_new;              // rows of head_dim halves, at k_new + s * new_seg_stride
  long long new_seg_stride;
  const Half* v;                  // rows of head_dim halves (old tokens, then new; only new with v_old),
  long long v_seg_stride;         // at v + s * v_seg_stride
  const int* n_old;               // [segments]
  const int* n_new;               // [segments]
  const float* q;                 // [B][Hq][D]
  float* o;                       // [B][Hq][D]
  int batch, q_heads, kv_heads, head_dim;
  float scale;                    // tau (of the full head_dim)
  // old values apart (optional, nullptr = old values in v): rows of old_v_row_stride halves at
  // v_old + s * v_old_seg_stride, full width, or (value extension) dv_keep kept channels listed in
  // v_channels
  const Half* v_old;
  long long v_old_seg_stride;
  int old_v_row_stride;
  const std::uint8_t* v_channels; // [segments][dv_keep] kept value channels, or nullptr
  int dv_keep;
  // KIVI region (optional, n_q = nullptr: none): the first n_q[s] tokens of a segment, in blocks
  // of at most qgroup tokens, codes packed LSB-first in uint32 words (qmath.hpp).
  //   blocks: full (kq_first = nullptr: block i = tokens [i * qgroup, (i + 1) * qgroup)), or
  //      partly filled after eviction: n_blocks[s] blocks, block i = tokens [first[i], first[i + 1])
  //      (the last ends at n_q) with first = kq_first + s * kq_first_seg_stride, first[0] = 0
  //   K: block i at kq + s * kq_seg_stride + i * kq_block_words, code of (its token r, kept channel
  //      c) at index r * d_keep + c; (scale, zero) fp16 bits per channel at kqm + s * kqm_seg_stride + i * 2 * d_keep
  //   V: token t's head_dim codes at vq + s * vq_seg_stride + t * v_words; (scale, zero) per group
  //      of v_group channels at vqm + s * vqm_seg_stride + t * 2 * (head_dim / v_group)
  const int* n_q;
  const int* kq_first;
  long long kq_first_seg_stride;
  const int* n_blocks;
  const std::uint32_t* kq;
  long long kq_seg_stride;
  int kq_block_words;
  const std::uint16_t* kqm;
  long long kqm_seg_stride;
  const std::uint32_t* vq;
  long long vq_seg_stride;
  int v_words;
  const std::uint16_t* vqm;
  long long vqm_seg_stride;
  int qgroup, bits_k, bits_v, v_group;
  // eviction epilogue inputs (optional): raw logit of (head g of segment s, token t) at
  // scores[s * scores_seg_stride + g * scores_row_stride + t]; lse [B][Hq] natural log
  float* scores;
  long long scores_seg_stride;
  int scores_row_stride;
  float* lse;
  // kernel: 0 = auto (split-KV with a long bound: path 3 where its layout holds; else the
  // lane-group kernel of think_decode_lanes.cuh where the layout allows it, else this tile kernel),
  // 1 = tile kernel, 2 = lane-group kernel, 3 = tensor-core KIVI region + lane-group rest,
  // 4 = tensor cores over every region (think_decode_mma16.cuh for the fp16 ones)
  // (kErrorNotSupported where the layout does not fit)
  int path;
  // KIVI cache records (path 3's kernel only, set by cuda::kivi_decode; rec_block_bytes = 0: the
  // layout above): the KIVI region is the full blocks of a kernels::KiviCacheView (qgroup tokens
  // each, d_keep = head_dim, channels unused), kq / kqm / vq / vqm point at the sections of the
  // first record, segment (b, h) starts b * rec_seq_bytes + h * rec_head_bytes bytes on, its
  // block i i * rec_block_bytes bytes later; in a block, V codes are channel-major (qgroup codes
  // per channel) and V meta group-major (index j * qgroup + token), as quant::BlockView reads them.
  int rec_block_bytes;
  int rec_head_bytes;
  long long rec_seq_bytes;
  // path 3's stage copies: 0 = bulk copies on mbarriers where the device has them (sm_90) and
  // every region is 16-byte aligned, else cp.async pieces; 1 = cp.async pieces (benchmark A/B)
  int mma_cp_async;
  // path 3's paired tiles (one q' set-up per two tiles where G <= 4 and qgroup = 32): 0 = where
  // they apply, 1 = never (benchmark A/B)
  int mma_unpaired;
};

constexpr int kThinKMaxGroup = 8;
constexpr int kThinKMaxDim = 256;
constexpr int kThinKTile = 32;     // tokens per tile (= warp size: lane r holds token r's score)
constexpr int kThinKThreads = 128;

// Split-KV partials, [splits][segments][group][head_dim] and [splits][segments][group][2] (m, l).
struct ThinKSplit {
  int splits = 1;
  int split_keys = 0;  // tokens per split (a multiple of kThinKTile); 0: all
  float* acc = nullptr;
  float* ml = nullptr;
  // the lane-group kernel after the tensor-core one (path 3): its splits cover the tokens from n_q
  // on (the KIVI region is the other kernel's) and write partial slots from slot0 on
  bool after_quantised = false;
  int slot0 = 0;
};

MEMATTN_DEVICE float think_nan_max(float a, float b) { return (a != a) ? a : ((b != b) ? b : (b > a ? b : a)); }

// Shared-memory geometry (fp32): q [G][Dp], q[ch] [G][dk4], K tile [T][kstride], p [G][T], with
// Dp = D and dk4 = d_keep rounded up to 4 (zero padding, so float4 dot products need no tail) and
// an odd number of float4 per K row (16-byte reads of 8 consecutive rows hit distinct banks).
struct ThinKSmem {
  int dp, dk4, kstride;
  MEMATTN_HOST_DEVICE ThinKSmem(int head_dim, int d_keep)
      : dp((head_dim + 3) / 4 * 4), dk4((d_keep + 3) / 4 * 4), kstride(((dp / 4) % 2 == 0 ? dp / 4 + 1 : dp / 4 + 2) * 4) {}
  MEMATTN_HOST_DEVICE int bytes(int group) const {
    return 4 * (group * dp + group * dk4 + kThinKTile * kstride + group * kThinKTile);
  }
};

// kCh: value channels per thread (1 for head_dim <= 128, 2 up to 256); kQuant: the KIVI region is
// read (n_q set), a separate instantiation so that ThinK alone keeps its registers.
template <int kCh, bool kQuant>
MEMATTN_KERNEL void __launch_bounds__(kThinKThreads, kCh == 1 ? 4 : 3)
think_decode_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  MEMATTN_DYNAMIC_SMEM(float4, think_smem4);
  MEMATTN_SHARED(float, m_s, [kThinKMaxGroup]);
  MEMATTN_SHARED(float, l_s, [kThinKMaxGroup]);
  MEMATTN_SHARED(float, alpha_s, [kThinKMaxGroup]);
  MEMATTN_SHARED(short, vslot_s, [kThinKMaxDim]);  // value extension: channel c's slot in the kept list (-1: pruned)
  const long long s = blockIdx.x;
  const int split = blockIdx.y;
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int D = p.head_dim, dk = p.d_keep, G = p.q_heads / p.kv_heads;
  const ThinKSmem geo(D, dk);
  const int Dp = geo.dp, dk4 = geo.dk4, ks = geo.kstride;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  float* q_s = reinterpret_cast<float*>(think_smem4);  // [G][Dp], scaled by tau
  float* qc_s = q_s + G * Dp;                           // [G][dk4]
  float* kt = qc_s + G * dk4;                           // [T][ks]
  float* p_s = kt + kThinKTile * ks;                    // [G][T]
  const int n_q = kQuant ? p.n_q[s] : 0;
  const int n_k = n_q + p.n_old[s];  // end of the d_keep-wide regions
  const int total = n_k + p.n_new[s];
  const int t_lo = sp.split_keys > 0 ? split * sp.split_keys : 0;
  const int t_hi = sp.split_keys > 0 ? min(total, t_lo + sp.split_keys) : total;
  const std::uint8_t* ch = p.channels + s * dk;
  const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
  for (int i = tid; i < G * Dp; i += kThinKThreads) {
    const int g = i / Dp, c = i % Dp;
    q_s[i] = c < D ? qg[g * D + c] * p.scale : 0.f;
  }
  if (tid < G) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  __syncthreads();
  for (int i = tid; i < G * dk4; i += kThinKThreads) {
    const int g = i / dk4, c = i % dk4;
    qc_s[i] = c < dk ? q_s[g * Dp + ch[c]] : 0.f;
  }
  const Half* k_old = p.k_old + s * p.old_seg_stride;
  const Half* k_new = p.k_new + s * p.new_seg_stride;
  const Half* v = p.v + s * p.v_seg_stride;
  const bool split_v = p.v_old != nullptr;
  const int v0 = split_v ? n_k : n_q;  // token index of v's first row
  if (p.v_channels != nullptr) {  // block-uniform
    for (int c = tid; c < D; c += kThinKThreads) vslot_s[c] = -1;
    __syncthreads();
    for (int i = tid; i < p.dv_keep; i += kThinKThreads) vslot_s[p.v_channels[s * p.dv_keep + i]] = static_cast<short>(i);
    __syncthreads();
  }
  float acc[kThinKMaxGroup][kCh];
#pragma unroll
  for (int g = 0; g < kThinKMaxGroup; ++g)
#pragma unroll
    for (int u = 0; u < kCh; ++u) acc[g][u] = 0.f;

  for (int t0 = t_lo; t0 < t_hi;) {
    // A quantised tile stays inside one block; an old tile stays old when old values are apart.
    const bool q_tile = kQuant && t0 < n_q, old_tile = !q_tile && t0 < n_k;
    int blk = 0, blk_lo = 0, blk_hi = 0;  // quantised tile: its block and the block's tokens
    if (q_tile) {
      if (p.kq_first != nullptr) {  // last block starting at or before t0 (uniform over the CTA)
        const int* first = p.kq_first + s * p.kq_first_seg_stride;
        int lo = 0, hi = p.n_blocks[s] - 1;
        while (lo < hi) {
          const int mid = (lo + hi + 1) >> 1;
          if (first[mid] <= t0) lo = mid;
          else hi = mid - 1;
        }
        blk = lo;
        blk_lo = first[lo];
        blk_hi = lo + 1 < p.n_blocks[s] ? first[lo + 1] : n_q;
      } else {
        blk = t0 / p.qgroup;
        blk_lo = blk * p.qgroup;
        blk_hi = blk_lo + p.qgroup;
      }
    }
    const int nt = min(kThinKTile, min(t_hi, q_tile ? min(n_q, blk_hi) : (split_v && old_tile ? n_k : t_hi)) - t0);
    // V column(s) of this thread for the tile, in flight while K is staged and scored.
    float vv[kCh][kThinKTile];
#pragma unroll
    for (int u = 0; u < kCh; ++u) {
      const int c = tid + u * kThinKThreads;
      if (q_tile) {
        const int per = 32 / p.bits_v, ngv = D / p.v_group;
        const std::uint32_t mask = (1u << p.bits_v) - 1u;
        const std::uint32_t* vw = p.vq + s * p.vq_seg_stride + static_cast<long long>(t0) * p.v_words + (c < D ? c / per : 0);
        const std::uint16_t* vm = p.vqm + s * p.vqm_seg_stride + static_cast<long long>(t0) * 2 * ngv + 2 * (c < D ? c / p.v_group : 0);
        const int shift = (c % per) * p.bits_v;
#pragma unroll
        for (int r = 0; r < kThinKTile; ++r) {
          float x = 0.f;
          if (c < D && r < nt) {
            const float code = code_to_float((vw[static_cast<long long>(r) * p.v_words] >> shift) & mask);
            x = fmaf(code, half_to_float(Half{vm[static_cast<long long>(r) * 2 * ngv]}),
                     half_to_float(Half{vm[static_cast<long long>(r) * 2 * ngv + 1]}));
          }
          vv[u][r] = x;
        }
      } else {
        const bool apart = old_tile && split_v;
        const int slot = apart ? (c < D ? (p.v_channels != nullptr ? vslot_s[c] : c) : -1) : c;
        const Half* vb = apart ? p.v_old + s * p.v_old_seg_stride + static_cast<long long>(t0 - n_q) * p.old_v_row_stride + slot
                               : v + static_cast<long long>(t0 - v0) * D + c;
        const int vs = apart ? p.old_v_row_stride : D;
        const bool ok = apart ? slot >= 0 : c < D;
#pragma unroll
        for (int r = 0; r < kThinKTile; ++r) vv[u][r] = (ok && r < nt) ? half_to_float(vb[static_cast<long long>(r) * vs]) : 0.f;
      }
    }
    // K rows -> shared fp32, zero-padded (quantised / old rows: d_keep channels, new rows: D).
#pragma unroll
    for (int rr = 0; rr < kThinKTile / 4; ++rr) {
      const int r = warp + 4 * rr, t = t0 + r;
      if (r >= nt) continue;
      float* row = kt + r * ks;
      if (q_tile) {
        const int tb = t - blk_lo, per = 32 / p.bits_k;
        const std::uint32_t mask = (1u << p.bits_k) - 1u;
        const std::uint32_t* kw = p.kq + s * p.kq_seg_stride + static_cast<long long>(blk) * p.kq_block_words;
        const std::uint16_t* km = p.kqm + s * p.kqm_seg_stride + static_cast<long long>(blk) * 2 * dk;
        for (int c = lane; c < dk4; c += 32) {
          float x = 0.f;
          if (c < dk) {
            const int i = tb * dk + c;
            const float code = code_to_float((kw[i / per] >> ((i % per) * p.bits_k)) & mask);
            x = fmaf(code, half_to_float(Half{km[2 * c]}), half_to_float(Half{km[2 * c + 1]}));
          }
          row[c] = x;
        }
      } else if (t < n_k) {
        const Half* kr = k_old + static_cast<long long>(t - n_q) * p.old_row_stride;
        for (int c = lane; c < dk4; c += 32) row[c] = c < dk ? half_to_float(kr[c]) : 0.f;
      } else {
        const Half* kr = k_new + static_cast<long long>(t - n_k) * D;
        for (int c = lane; c < Dp; c += 32) row[c] = c < D ? half_to_float(kr[c]) : 0.f;
      }
    }
    __syncthreads();
    // Scores: warp w takes heads w, w + 4; lane = token of the tile.
    for (int g = warp; g < G; g += 4) {
      float sc = -INFINITY;
      if (lane < nt) {
        const bool old = t0 + lane < n_k;
        const float4* kr = reinterpret_cast<const float4*>(kt + lane * ks);
        const float4* qv = reinterpret_cast<const float4*>(old ? qc_s + g * dk4 : q_s + g * Dp);
        const int n4 = (old ? dk4 : Dp) / 4;
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        for (int i = 0; i < n4; ++i) {
          const float4 x = qv[i], y = kr[i];
          a0 = fmaf(x.x, y.x, a0);
          a1 = fmaf(x.y, y.y, a1);
          a2 = fmaf(x.z, y.z, a2);
          a3 = fmaf(x.w, y.w, a3);
        }
        sc = (a0 + a1) + (a2 + a3);
        if (p.scores != nullptr) p.scores[s * p.scores_seg_stride + static_cast<long long>(g) * p.scores_row_stride + t0 + lane] = sc;
      }
      float mx = sc;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = think_nan_max(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_old = m_s[g];
      const float m_new = think_nan_max(m_old, mx);
      const float e = lane < nt ? expf(sc - m_new) : 0.f;
      float sum = e;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      p_s[g * kThinKTile + lane] = e;
      __syncwarp();
      if (lane == 0) {
        const float a = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
        l_s[g] = l_s[g] * a + sum;
        m_s[g] = m_new;
        alpha_s[g] = a;
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < kThinKMaxGroup; ++g)
#pragma unroll
      for (int u = 0; u < kCh; ++u)
        if (g < G) acc[g][u] *= alpha_s[g];
#pragma unroll
    for (int r4 = 0; r4 < kThinKTile / 4; ++r4) {
      float vf[kCh][4];
#pragma unroll
      for (int u = 0; u < kCh; ++u)
#pragma unroll
        for (int i = 0; i < 4; ++i) vf[u][i] = vv[u][r4 * 4 + i];
#pragma unroll
      for (int g = 0; g < kThinKMaxGroup; ++g) {
        if (g >= G) break;
        const float4 pp = reinterpret_cast<const float4*>(p_s + g * kThinKTile)[r4];
#pragma unroll
        for (int u = 0; u < kCh; ++u) {
          float a = acc[g][u];
          a = fmaf(pp.x, vf[u][0], a);
          a = fmaf(pp.y, vf[u][1], a);
          a = fmaf(pp.z, vf[u][2], a);
          a = fmaf(pp.w, vf[u][3], a);
          acc[g][u] = a;
        }
      }
    }
    __syncthreads();
    t0 += nt;
  }
  if (sp.splits == 1) {
#pragma unroll
    for (int u = 0; u < kCh; ++u) {
      const int c = tid + u * kThinKThreads;
      if (c >= D) continue;
#pragma unroll
      for (int g = 0; g < kThinKMaxGroup; ++g)  // constant indices: acc stays in registers
        if (g < G) p.o[(static_cast<long long>(b) * p.q_heads + h * G + g) * D + c] = acc[g][u] / l_s[g];
    }
    if (p.lse != nullptr && tid < G) p.lse[static_cast<long long>(b) * p.q_heads + h * G + tid] = m_s[tid] + logf(l_s[tid]);
    return;
  }
  const long long slot = static_cast<long long>(split) * gridDim.x + s;
#pragma unroll
  for (int u = 0; u < kCh; ++u) {
    const int c = tid + u * kThinKThreads;
    if (c >= D) continue;
#pragma unroll
    for (int g = 0; g < kThinKMaxGroup; ++g)
      if (g < G) sp.acc[(slot * G + g) * D + c] = acc[g][u];
  }
  if (tid < G) {
    sp.ml[(slot * G + tid) * 2] = m_s[tid];
    sp.ml[(slot * G + tid) * 2 + 1] = l_s[tid];
  }
}

// o[g][c] = sum_i acc_i[g][c] w_i / sum_i l_i w_i, w_i = exp(m_i - max m) (empty splits: w = 0).
// grid = segments, block = kThinKThreads.
MEMATTN_KERNEL void __launch_bounds__(kThinKThreads) think_combine_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  const long long s = blockIdx.x, S = gridDim.x;
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int D = p.head_dim, G = p.q_heads / p.kv_heads;
  for (int i = threadIdx.x; i < G * D; i += kThinKThreads) {
    const int g = i / D, c = i % D;
    float m = -INFINITY;
    for (int k = 0; k < sp.splits; ++k) m = think_nan_max(m, sp.ml[((k * S + s) * G + g) * 2]);
    float num = 0.f, den = 0.f;
    for (int k = 0; k < sp.splits; ++k) {
      const float mk = sp.ml[((k * S + s) * G + g) * 2];
      if (mk == -INFINITY) continue;
      const float w = expf(mk - m);
      num = fmaf(sp.acc[((k * S + s) * G + g) * D + c], w, num);
      den = fmaf(sp.ml[((k * S + s) * G + g) * 2 + 1], w, den);
    }
    p.o[(static_cast<long long>(b) * p.q_heads + h * G + g) * D + c] = num / den;
    if (p.lse != nullptr && c == 0) p.lse[static_cast<long long>(b) * p.q_heads + h * G + g] = m + logf(den);
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
