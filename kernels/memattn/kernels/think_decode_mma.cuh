// Tensor-core decode of the composed cache's KIVI region (issue 7's "composed fused decode at
// >= 80% of HBM"): the quantised tokens [0, n_q) of each (sequence, KV head) segment, blocks of
// d_keep kept key channels (partly filled after eviction), 2- or 4-bit K and V codes, written as
// split partials that think_combine_kernel merges with those of the lane-group kernel over the
// fp16 regions (cuda::think_decode, path 3).
//
// Why tensor cores: at K4/V2 a key costs ~100 bytes, so at 80% of an H100's HBM an SM has ~8
// cycles per key for all g query heads of a KV head; the CUDA-core lane-group kernel issues ~84
// warp instructions per key (dequantisation, the dot products, per-lane softmax), ~21 cycles.
// Here a warp turns codes into fp16 integers (a shift, a logic op and a sub.f16x2 per code pair,
// think_mma_layout.hpp) and lets mma.m16n8k16 do the products. Planned at ~20 warp instructions
// per key by a count of the source; measured (H200, Nsight Compute, B 16 x 64K, K4/V2, d_keep 80):
// ~80 per key, 1.3 ms = 15-21% of copy bandwidth, 1.8x the lane-group kernel. Most of it is the
// value side (p s_v A fragments per value group and key, 33%) and the per-block q~ set-up (16%,
// run every tile since KIVI key groups are 32 tokens); HMMA is 2%.
//
// Numerics (think_mma_layout.hpp): codes are exact in fp16; the float operands q~ = tau log2(e) q s
// (per block) and p s_v (per value group) enter as fp16 hi + lo pairs in the two halves of the
// 16 A rows (g <= 8 heads), with power-of-two scales that keep them normal fp16 (q~ per head and
// block, p s_v per warp, raised as larger value scales arrive), fp32 accumulation; key / value
// zero points are added in fp32 (the per-block bias sum_c q~ z, and sum_t p z_v per group). So the
// result is that of fp32 dequantisation to ~2^-22 per operand.
//
// Work: grid (segments, splits), 4 warps; a warp takes whole KIVI blocks of its split (block i of
// the split to warp i % 4) in tiles of 32 keys, staged per warp by cp.async (K codes, K meta,
// V codes, V meta; kStages deep, no CTA barrier), keeps its own base-2 online softmax, and the
// warps' states are merged through shared memory at the end into the split's partial.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "memattn/kernels/dense_decode.cuh"
#include "memattn/kernels/think_decode.cuh"
#include "memattn/kernels/think_decode_lanes.cuh"
#include "memattn/kernels/think_mma_layout.hpp"
#include "memattn/kernels/warp_reduce.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace think_mma {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kStages = 3;

MEMATTN_HOST_DEVICE int round16(int x) { return (x + 15) / 16 * 16; }

// One warp's stage (bytes): K codes of 32 rows (+ slack: a padded chunk reads up to 16 bytes past
// the last row), K meta of the block zero-padded to whole chunks, V code rows, V meta rows.
struct StageGeom {
  int k_meta, v_codes, v_meta, bytes;
};
MEMATTN_HOST_DEVICE StageGeom stage_geom(int d_keep, int bits_k, int v_row_bytes, int v_groups) {
  StageGeom g;
  const int chunks = (d_keep + kChunkChannels - 1) / kChunkChannels;
  g.k_meta = round16(kTileKeys * d_keep * bits_k / 8 + 16);
  g.v_codes = g.k_meta + chunks * kChunkChannels * 4;
  g.v_meta = g.v_codes + round16(kTileKeys * v_row_bytes);
  g.bytes = g.v_meta + round16(kTileKeys * v_groups * 4);
  return g;
}
// Dynamic shared memory of the kernel: the stages and the CTA's query rows (8 rows of head_dim + 4
// floats at q_offset: the padding puts the two rows a quarter-warp's float4 reads touch in
// different banks), or the end-of-split merge if larger.
MEMATTN_HOST_DEVICE int q_offset(const StageGeom& g) { return kWarps * kStages * g.bytes; }
MEMATTN_HOST_DEVICE int q_stride(int head_dim) { return head_dim + 4; }
MEMATTN_HOST_DEVICE int smem_bytes(const StageGeom& g, int head_dim) {
  const int stages = q_offset(g) + kThinKMaxGroup * q_stride(head_dim) * 4;
  const int merge = kWarps * kThinKMaxGroup * (head_dim + 2) * 4;
  return stages > merge ? stages : merge;
}

MEMATTN_DEVICE void mma16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
#if defined(MEMATTN_SIMT_EMULATION)
  memattn_emu::mma16816<false>(c, a, b0, b1);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
// (1024 + c) pairs -> exact (c) pairs
MEMATTN_DEVICE std::uint32_t unbias(std::uint32_t x) {
  std::uint32_t r;
#if defined(MEMATTN_SIMT_EMULATION)
  const __half2 d = __hsub2(*reinterpret_cast<const __half2*>(&x), *reinterpret_cast<const __half2*>(&kMagic));
  std::memcpy(&r, &d, 4);
#else
  asm("sub.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(x), "r"(kMagic));
#endif
  return r;
}
// x0, x1 -> fp16 pairs hi = rn(x), lo = rn(x - hi)
MEMATTN_DEVICE void split2(float x0, float x1, std::uint32_t* hi, std::uint32_t* lo) {
  const __half2 h = __floats2half2_rn(x0, x1);
  const float2 f = __half22float2(h);
  const __half2 l = __floats2half2_rn(x0 - f.x, x1 - f.y);
  *hi = *reinterpret_cast<const std::uint32_t*>(&h);
  *lo = *reinterpret_cast<const std::uint32_t*>(&l);
}
// 2^(kTarget - floor(log2 m)) (and its inverse) for m >= 0: scales m into [2^kTarget, 2^(kTarget+1))
// (clamped for tiny / huge m; NaN and inf stay what they are after scaling).
template <int kTarget>
MEMATTN_DEVICE void pow2_scale(float m, float* scale, float* inv) {
  int e = static_cast<int>((__float_as_uint(m) >> 23) & 0xFFu);  // m in [2^(e - 127), 2^(e - 126))
  e = e < kTarget + 1 ? kTarget + 1 : (e > 254 ? 254 : e);
  *scale = __uint_as_float(static_cast<std::uint32_t>(kTarget + 254 - e) << 23);  // 2^(kTarget - (e - 127))
  *inv = __uint_as_float(static_cast<std::uint32_t>(e - kTarget) << 23);
}
template <int N>
MEMATTN_DEVICE void warp_copy(unsigned char* dst, const unsigned char* src, int bytes, int lane) {
  for (int off = lane * N; off < bytes; off += 32 * N) {
    if (N == 16) detail::cp_async_16(dst + off, src + off);
    else think_lanes::cp_async_ca<N>(dst + off, src + off);
  }
}

}  // namespace think_mma

// grid (segments = B * Hkv, splits), think_mma::kThreads threads, think_mma::smem_bytes of dynamic
// shared memory. D = head_dim (64 / 128), KB / VB = key / value bits (2 / 4). Writes the split's
// partial (m in natural log, l, unnormalised acc) at slot split * gridDim.x + s, and the raw
// logits of its quantised tokens when p.scores is set.
// 3 CTAs (12 warps) per SM at D = 128, 4 at D = 64: <= 168 / 128 registers (ptxas: 167 / 122).
template <int D, int KB, int VB>
MEMATTN_KERNEL void __launch_bounds__(think_mma::kThreads, (D == 128 ? 3 : 4))
    think_decode_mma_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  using namespace think_mma;
  constexpr int kChunksMax = D / kChunkChannels;  // d_keep <= D
  constexpr int kUnits = D / kUnitChannels;
  constexpr int kNTiles = D / 8;
  MEMATTN_DYNAMIC_SMEM(unsigned char, smem);

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int gi = row_group(lane), t4 = quad(lane);
  const long long s = blockIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int G = p.q_heads / p.kv_heads, dk = p.d_keep;
  // value groups: v_group is a power of two >= 32 dividing D (mma_layout), so the group of value
  // unit u is u >> ug_shift and shifts replace the divisions (ngv = groups per token)
  const int ug_shift = __ffs(p.v_group / kUnitChannels) - 1, ngv = D / kUnitChannels >> ug_shift;
  const int chunks = (dk + kChunkChannels - 1) / kChunkChannels;
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

  const StageGeom geo = stage_geom(dk, KB, p.v_words * 4, ngv);
  unsigned char* wstage = smem + warp * kStages * geo.bytes;
  const int k_row = dk * KB / 8, v_row = p.v_words * 4;
  // q of the CTA's heads over the kept-channel slots, base-2 domain, in shared memory (not in
  // registers: 32 fewer per thread); 0 past d_keep and for heads >= G
  constexpr float kLog2e = 1.4426950408889634f;
  float* const q_s = reinterpret_cast<float*>(smem + q_offset(geo));
  {
    const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
    const std::uint8_t* chl = p.channels + s * dk;
    for (int i = static_cast<int>(threadIdx.x); i < kThinKMaxGroup * D; i += kThreads) {
      const int r = i / D, slot = i % D;
      q_s[r * q_stride(D) + slot] = r < G && slot < dk ? qg[r * D + chl[slot]] * (p.scale * kLog2e) : 0.f;
    }
  }
  __syncthreads();
  // the K meta padding (channels d_keep.. of the last chunk) reads (scale, zero) = 0 in every stage
  for (int st = 0; st < kStages; ++st)
    for (int i = dk + lane; i < chunks * kChunkChannels; i += 32)
      reinterpret_cast<std::uint32_t*>(wstage + st * geo.bytes + geo.k_meta)[i] = 0u;
  __syncwarp();

  // Item i of this warp: sub-tile i % cpb of the warp's block i / cpb (cpb = qgroup / 32 is a power
  // of two); its keys [base, end) of rows [slot, slot + 32) of block blk, whose tokens are [lo, hi).
  const int cpb_shift = __ffs(parts.cpb) - 1;
  auto tile_of = [&](int item, int* slot, int* base, int* end, int* blk, int* lo, int* hi) {
    *blk = parts.b0 + warp + kWarps * (item >> cpb_shift);
    parts.block(*blk, lo, hi);
    *slot = *lo + (item & (parts.cpb - 1)) * kTileKeys;
    *base = max(*slot, parts.q0);
    *end = min(min(*slot + kTileKeys, *hi), parts.q1);
  };
  auto issue = [&](int item) {
    int slot, base, end, blk, lo, hi;
    tile_of(item, &slot, &base, &end, &blk, &lo, &hi);
    if (base >= end) return;
    const int rows = min(kTileKeys, hi - slot);
    unsigned char* st = wstage + (item % kStages) * geo.bytes;
    const unsigned char* kblock =
        reinterpret_cast<const unsigned char*>(p.kq + s * p.kq_seg_stride + static_cast<long long>(blk) * p.kq_block_words);
    warp_copy<16>(st, kblock + (slot - lo) * k_row, round16(rows * k_row), lane);
    warp_copy<16>(st + geo.k_meta,
                  reinterpret_cast<const unsigned char*>(p.kqm + s * p.kqm_seg_stride + static_cast<long long>(blk) * 2 * dk),
                  dk * 4, lane);
    warp_copy<16>(st + geo.v_codes,
                  reinterpret_cast<const unsigned char*>(p.vq + s * p.vq_seg_stride + static_cast<long long>(slot) * p.v_words),
                  rows * v_row, lane);
    warp_copy<4>(st + geo.v_meta,
                 reinterpret_cast<const unsigned char*>(p.vqm + s * p.vqm_seg_stride + static_cast<long long>(slot) * 2 * ngv),
                 rows * ngv * 4, lane);
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < items) issue(i);
    detail::cp_async_commit();
  }

  float o[kNTiles][4], z[kUnits], m = -INFINITY, l = 0.f;
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
#pragma unroll
  for (int u = 0; u < kUnits; ++u) z[u] = 0.f;  // sum_t p z_v of the group of unit u (lane-partial)
  int v_exp = -1;                                // exponent of the largest value scale seen (warp)
  float v_scale = 1.f, v_inv = 1.f;
  std::uint32_t afr[kChunksMax][2][4];  // QK A fragments of the current block
  float beta = 0.f, q_inv = 1.f;
  int meta_blk = -1;
  float* const scores = p.scores != nullptr ? p.scores + s * p.scores_seg_stride + static_cast<long long>(gi) * p.scores_row_stride : nullptr;

  for (int item = 0; item < items; ++item) {
    __syncwarp();  // every lane is done with the stage the next issue overwrites
    if (item + kStages - 1 < items) issue(item + kStages - 1);
    detail::cp_async_commit();
    detail::cp_async_wait<kStages - 1>();
    __syncwarp();
    int slot, base, end, blk, lo_unused, hi_unused;
    tile_of(item, &slot, &base, &end, &blk, &lo_unused, &hi_unused);
    if (base >= end) continue;  // warp-uniform
    const unsigned char* st = wstage + (item % kStages) * geo.bytes;

    if (blk != meta_blk) {  // a new block: q~ = q s (scaled per head), its hi / lo A fragments, the bias
      meta_blk = blk;
      const float* qrow = q_s + gi * q_stride(D);
      // pass 1: q s per slot, parked as fp32 bits in the chunk's A fragment registers (8 slots, 8
      // registers), with the bias sum_c q z and max |q s|; pass 2 scales and splits them in place
      float mx = 0.f, bsum = 0.f;
#pragma unroll
      for (int c = 0; c < kChunksMax; ++c) {
        if (c >= chunks) break;
        const int slot = qk_lane_slot(c, t4);
        const float4 q0 = *reinterpret_cast<const float4*>(qrow + slot), q1 = *reinterpret_cast<const float4*>(qrow + slot + 4);
        const uint4 m0 = *reinterpret_cast<const uint4*>(st + geo.k_meta + slot * 4);
        const uint4 m1 = *reinterpret_cast<const uint4*>(st + geo.k_meta + slot * 4 + 16);
        const std::uint32_t w[8] = {m0.x, m0.y, m0.z, m0.w, m1.x, m1.y, m1.z, m1.w};
        const float qv[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float2 sz = __half22float2(*reinterpret_cast<const __half2*>(&w[e]));
          const float x = qv[e] * sz.x;
          bsum = fmaf(qv[e], sz.y, bsum);
          mx = fmaxf(mx, fabsf(x));
          afr[c][e >> 2][e & 3] = __float_as_uint(x);
        }
      }
      beta = quad_sum(bsum);
      float qs;
      pow2_scale<14>(quad_max(mx), &qs, &q_inv);
#pragma unroll
      for (int c = 0; c < kChunksMax; ++c) {
        if (c >= chunks) break;
        float x[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = __uint_as_float(afr[c][e >> 2][e & 3]) * qs;
#pragma unroll
        for (int j = 0; j < 2; ++j) {  // k-step 2c + j: slots (e, e + 4) for e = 2j, 2j + 1
          split2(x[2 * j], x[2 * j + 4], &afr[c][j][0], &afr[c][j][1]);
          split2(x[2 * j + 1], x[2 * j + 5], &afr[c][j][2], &afr[c][j][3]);
        }
      }
    }

    // Logits of the 4 n-tiles (keys qk_key(n, 2 t4 + e)), base 2; -inf outside [base, end).
    float lg[4][2];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      const unsigned char* row = st + qk_key(n, gi) * k_row;
#pragma unroll
      for (int c = 0; c < kChunksMax; ++c) {
        if (c >= chunks) break;
        std::uint32_t w;
        if (KB == 4) w = *reinterpret_cast<const std::uint32_t*>(row + qk_lane_slot(c, t4) / 2);
        else w = *reinterpret_cast<const std::uint16_t*>(row + qk_lane_slot(c, t4) / 4);
        std::uint32_t pr[4];
        codes8_to_pairs<KB>(w, pr);
        mma16816(acc, afr[c][0], unbias(pr[0]), unbias(pr[1]));
        mma16816(acc, afr[c][1], unbias(pr[2]), unbias(pr[3]));
      }
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = slot + qk_key(n, 2 * t4 + e);
        const float v = fmaf(acc[e] + acc[e + 2], q_inv, beta);
        lg[n][e] = t >= base && t < end ? v : -INFINITY;
        if (scores != nullptr && gi < G && t >= base && t < end) scores[t] = v * detail::kLn2;
      }
    }

    // Online softmax of head gi (the quad holds its 32 keys), lazy rescale (warp vote).
    float tmax = -INFINITY;
#pragma unroll
    for (int n = 0; n < 4; ++n) tmax = fmaxf(tmax, fmaxf(lg[n][0], lg[n][1]));
    const float m_new = fmaxf(m, quad_max(tmax));
    if (__any_sync(0xFFFFFFFFu, m_new > m)) {
      const float alpha = m_new > m ? detail::fast_exp2(m - m_new) : 1.f;  // 0 when m = -inf
      l *= alpha;
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) o[n][0] *= alpha, o[n][1] *= alpha, o[n][2] *= alpha, o[n][3] *= alpha;
#pragma unroll
      for (int u = 0; u < kUnits; ++u) z[u] *= alpha;
      m = m_new;
    }
    const float m_use = m == -INFINITY ? 0.f : m;
    float pk[4][2];
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        pk[n][e] = detail::fast_exp2(lg[n][e] - m_use);  // 0 for a masked key
        l += pk[n][e];
      }

    // Value scale exponent: raise it (and rescale o exactly) when this tile has a larger s_v.
    const std::uint32_t* vm = reinterpret_cast<const std::uint32_t*>(st + geo.v_meta);
    float smax = 0.f;  // lane r reads key r's scales
    if (slot + lane >= base && slot + lane < end)
      for (int j = 0; j < ngv; ++j) {
        const std::uint32_t w = vm[lane * ngv + j];
        smax = fmaxf(smax, fabsf(__half2float(*reinterpret_cast<const __half*>(&w))));
      }
    smax = warp_max(smax);
    const int e_new = static_cast<int>((__float_as_uint(smax) >> 23) & 0xFFu);
    if (e_new > v_exp) {  // warp-uniform
      float ns, ni;
      pow2_scale<14>(smax, &ns, &ni);
      const float r = ns * v_inv;  // new scale / old scale: an exact power of two (<= 1)
      if (v_exp >= 0)
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) o[n][0] *= r, o[n][1] *= r, o[n][2] *= r, o[n][3] *= r;
      v_exp = e_new, v_scale = ns, v_inv = ni;
    }

    // Values: two k-steps of 16 keys; per value group an A fragment of p s_v; per unit the codes.
    const unsigned char* vc = st + geo.v_codes;
#pragma unroll
    for (int ms = 0; ms < 2; ++ms) {
      // this lane's keys: pv_lane_key(ms, t4, k) holds pk[2 ms][0, 1], pk[2 ms + 1][0, 1]
      const float pkey[4] = {pk[2 * ms][0], pk[2 * ms][1], pk[2 * ms + 1][0], pk[2 * ms + 1][1]};
      // per key: validity, its meta row and its code row at this lane's channels of unit 0
      const std::uint32_t* vmk[4];
      const unsigned char* vrk[4];
      bool valid[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int key = pv_lane_key(ms, t4, k);
        valid[k] = slot + key >= base && slot + key < end;
        vmk[k] = vm + key * ngv;
        vrk[k] = vc + key * v_row + pv_lane_channel(0, gi) * VB / 8;
      }
      std::uint32_t pa[4] = {0u, 0u, 0u, 0u};
      int a_group = -1;
#pragma unroll
      for (int u = 0; u < kUnits; ++u) {
        const int j = u >> ug_shift;  // the unit's value group
        if (j != a_group) {
          a_group = j;
          float y[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            float sv = 0.f, zv = 0.f;
            if (valid[k]) {
              const std::uint32_t w = vmk[k][j];
              const float2 sz = __half22float2(*reinterpret_cast<const __half2*>(&w));
              sv = sz.x, zv = sz.y;
            }
            y[k] = pkey[k] * sv * v_scale;
            z[u] = fmaf(pkey[k], zv, z[u]);
          }
          split2(y[0], y[1], &pa[0], &pa[1]);
          split2(y[2], y[3], &pa[2], &pa[3]);
        }  // (a group's zero-point sum is kept in its first unit's z)
        std::uint32_t pc[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const unsigned char* vr = vrk[k] + u * kUnitChannels * VB / 8;
          pc[k] = VB == 4 ? static_cast<std::uint32_t>(*reinterpret_cast<const std::uint16_t*>(vr)) : static_cast<std::uint32_t>(*vr);
        }
        std::uint32_t b01[4], b23[4];
        pieces_to_pairs<VB>(pc[0], pc[1], b01);
        pieces_to_pairs<VB>(pc[2], pc[3], b23);
#pragma unroll
        for (int i = 0; i < 4; ++i) mma16816(o[4 * u + i], pa, unbias(b01[i]), unbias(b23[i]));
      }
    }
  }
  detail::cp_async_wait<0>();
  __syncthreads();  // the merge reuses the stages

  // This warp's state: head gi's l and zero-point sums over the quad, its channels' outputs.
  l = quad_sum(l);
  float zg[kUnits];
#pragma unroll
  for (int u = 0; u < kUnits; ++u) zg[u] = quad_sum(z[u]);
  float* sm_acc = reinterpret_cast<float*>(smem);                         // [warp][8][D]
  float* sm_ml = sm_acc + kWarps * kThinKMaxGroup * D;                     // [warp][8][2]
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) {
    const int u = n >> 2;
    const int first_u = (u >> ug_shift) << ug_shift;  // the group's first unit
    float zz = 0.f;
#pragma unroll
    for (int w = 0; w < kUnits; ++w) zz = w == first_u ? zg[w] : zz;
#pragma unroll
    for (int e = 0; e < 2; ++e)
      sm_acc[(warp * kThinKMaxGroup + gi) * D + pv_channel(n, 2 * t4 + e)] = fmaf(o[n][e] + o[n][e + 2], v_inv, zz);
  }
  if (t4 == 0) {
    sm_ml[(warp * kThinKMaxGroup + gi) * 2] = m;
    sm_ml[(warp * kThinKMaxGroup + gi) * 2 + 1] = l;
  }
  __syncthreads();
  const long long slot_id = static_cast<long long>(split) * gridDim.x + s;
  for (int i = static_cast<int>(threadIdx.x); i < G * D; i += kThreads) {
    const int r = i / D, ch = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm_ml[(w * kThinKMaxGroup + r) * 2]);
    float acc = 0.f, lsum = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float mw = sm_ml[(w * kThinKMaxGroup + r) * 2];
        if (mw == -INFINITY) continue;
        const float wt = detail::fast_exp2(mw - mx);
        acc = fmaf(wt, sm_acc[(w * kThinKMaxGroup + r) * D + ch], acc);
        lsum = fmaf(wt, sm_ml[(w * kThinKMaxGroup + r) * 2 + 1], lsum);
      }
    }
    sp.acc[(slot_id * G + r) * D + ch] = acc;
    if (ch == 0) {
      sp.ml[(slot_id * G + r) * 2] = mx * detail::kLn2;  // -inf: an empty split, ignored by the combine
      sp.ml[(slot_id * G + r) * 2 + 1] = lsum;
    }
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
