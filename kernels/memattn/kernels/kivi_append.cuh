// KIVI quantize-append on the GPU (specs/quantization.md §4.3, §6.8): one decode token per
// sequence and KV head is written to the fp16 ring slot N mod (R + G); when the ring then holds
// R + G tokens its oldest G are flushed as one block record. The ring write, the non-finite check
// and the flush are one launch. The quantiser is memattn/quant/qmath.hpp, shared with the CPU, so
// the block bytes equal the CPU cache's (memattn/cpu/kivi_kv_cache.hpp) bit for bit.
//
// One CTA (128 threads) per (sequence, KV head). The flush is spread over the CTA through shared
// memory (the first version, one thread per K channel / V group over strided global loads and
// fp64 divisions, OR-ing codes into zeroed global words, took ~56 us per flushing step on an
// H200 at every shape, latency of serial loads):
//   1. stage: the block's G fp16 rows of K and V go to shared memory in coalesced 16-byte loads,
//      issued together with the ring write's (the new token's row, in the block when R = 0, is
//      read from k / v, so the flush does not wait for the ring write);
//   2. metadata: K per channel (a thread each), V per (token, value group), by group_params' own
//      min / max scan and quant::range_params, to the record and to shared memory with 1 / s;
//   3. codes: one thread per output word builds the 32-bit word in registers (32 / b consecutive
//      codes of the LSB-first stream: K element t*D + c is staged element t*D + c, a V word is
//      32 / b tokens of one channel) and stores it once: no zeroing pass, no atomics. A code is
//      rint((x - z) * (1/s)) in fp32 (error < 2^-14 over the codes 0..255); quant::encode itself
//      (fp64) where that lands within 2^-12 of a rounding boundary, ties included: encode's code
//      always, its fp64 division for ~0.1% of codes.
// K and V fit the 32 KiB stage together for G*D <= 8192 (head_dim 128 at G 32 / 64, 256 at 32):
// one load round, two barriers. Else K, then V, in chunks of tokens (K's scan carried across its
// chunks in registers).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/quant/kivi.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

// Device view of a KIVI cache: records [seq][max_blocks][Hkv], ring [seq][R + G][Hkv][D] fp16.
struct KiviCacheView {
  quant::KvQuantConfig cfg;
  quant::BlockLayout layout;
  std::uint8_t* blocks;
  Half* ring_k;
  Half* ring_v;
  int num_kv_heads;
  int max_blocks;
  MEMATTN_HOST_DEVICE int ring_rows() const { return cfg.residual + cfg.group; }
  MEMATTN_HOST_DEVICE std::uint8_t* record(int seq, int j, int h) const {
    return blocks + ((static_cast<std::size_t>(seq) * max_blocks + j) * num_kv_heads + h) * layout.bytes;
  }
  MEMATTN_HOST_DEVICE std::size_t ring_offset(int seq, long long pos, int h) const {
    return ((static_cast<std::size_t>(seq) * ring_rows() + static_cast<std::size_t>(pos % ring_rows())) * num_kv_heads + h) *
           static_cast<std::size_t>(cfg.head_dim);
  }
};

struct KiviAppendParams {
  KiviCacheView cache;
  const Half* k;           // [B][Hkv][D] the new token
  const Half* v;
  const int* n_before;     // [B] tokens held before this append
  std::uint32_t* flags;    // [B] sticky QuantFlags (OR-ed)
  int batch;
};

namespace kivi_append_detail {

constexpr int kMaxDim = 256;         // quant::KvQuantConfig::validate's bound on head_dim
constexpr int kStageHalves = 16384;  // 32 KiB of staged fp16 rows
constexpr int kMaxVMeta = 1536;      // V groups of a chunk (12 KiB); + 2 KiB of K meta: 46 KiB static

MEMATTN_DEVICE float h2f(std::uint16_t bits) { return __half2float(__ushort_as_half(bits)); }  // exact

// A group's metadata in shared memory: x = the record's {scale, zero} fp16 pair, y = fp32 bits of
// 1 / scale (0 for a poisoned group, whose zero is a NaN).
MEMATTN_DEVICE uint2 smem_meta(std::uint32_t packed) {
  const float s = h2f(static_cast<std::uint16_t>(packed & 0xFFFFu));
  const bool poison = (packed & 0xFFFFu) == quant::kPoisonMeta;
  return make_uint2(packed, __float_as_uint(poison ? 0.f : 1.f / s));
}

// quant::encode(x, meta, L) for a value x of the group of `m` (smem_meta): the fp32 estimate of
// rint((x - z) / s) clamped to [0, L]; *near set where it lies within 2^-12 of a rounding boundary,
// where the caller takes quant::encode's code. Elsewhere it is encode's code: x - z, 1 / s and the
// product are 3 fp32 roundings (relative 2^-24 each, exact fp16 inputs, no subnormal), so
// |error| <= 3 * 2^-24 * 256 < 2^-14 (< 2^-13 with a 2-ulp approximate 1 / s) while |(x - z) / s| <= L + 1 (beyond, both sides clamp alike),
// and encode's fp64 quotient is within 2^-44: both round to the same integer. A poisoned group's
// NaN zero gives 0, as encode. (tests: exhaustive sweeps of x over random groups agree.)
template <int L>
MEMATTN_DEVICE std::uint32_t fast_code(std::uint16_t x, uint2 m, bool* near) {
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23: adding it rounds [0, 2^22) to integers, ties to even
  float q = (h2f(x) - h2f(static_cast<std::uint16_t>(m.x >> 16))) * __uint_as_float(m.y);
  q = q >= 0.f ? q : 0.f;  // NaN -> 0
  q = q <= static_cast<float>(L) ? q : static_cast<float>(L);
  const float y = q + kMagic;
  *near = fabsf(q - (y - kMagic)) > 0.5f - 0x1p-12f;
  return __float_as_uint(y) - 0x4B400000u;
}

// quant::group_params split into value-by-value steps (its scan compares the exact fp64 images of
// the halves, which order as their fp32 images do), so a group can be scanned across chunks.
struct RangeScan {
  float mn = INFINITY, mx = -INFINITY;
  bool bad = false;
  MEMATTN_DEVICE void add(std::uint16_t h) {
    bad = bad || quant::half_is_nonfinite(Half{h});
    const float d = h2f(h);
    mn = d < mn ? d : mn;
    mx = d > mx ? d : mx;
  }
  MEMATTN_DEVICE void add8(uint4 u) {
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      add(static_cast<std::uint16_t>(w[i] & 0xFFFFu));
      add(static_cast<std::uint16_t>(w[i] >> 16));
    }
  }
  // group_params' {scale, zero} bits packed (the poison pair, and kQuantNonFinite in *flags, for a
  // non-finite group).
  MEMATTN_DEVICE std::uint32_t meta(int L, std::uint32_t* flags) const {
    if (bad) {
      *flags |= quant::kQuantNonFinite;
      return quant::kPoisonMeta | (static_cast<std::uint32_t>(quant::kPoisonMeta) << 16);
    }
    const quant::GroupMeta m = quant::range_params(static_cast<double>(mn), static_cast<double>(mx), L);
    return static_cast<std::uint32_t>(m.scale.bits) | (static_cast<std::uint32_t>(m.zero.bits) << 16);
  }
};

MEMATTN_DEVICE quant::GroupMeta group_meta(uint2 m) {
  return quant::GroupMeta{Half{static_cast<std::uint16_t>(m.x & 0xFFFFu)}, Half{static_cast<std::uint16_t>(m.x >> 16)}};
}

// Where the block's rows are: row t of K (sel 0) / V (sel 1) at ring[sel] + t * row, except row
// tnew (the new token, inside the block only for R = 0), read from fresh[sel].
struct StageSrc {
  const Half* ring[2];
  const Half* fresh[2];
  std::size_t row;
  int tnew;
  bool vec;  // every row 16-byte aligned
  // (selects, not indexing: an indexed pointer array would live in local memory)
  MEMATTN_DEVICE const Half* row_ptr(int sel, int t) const {
    if (t == tnew) return sel ? fresh[1] : fresh[0];
    return (sel ? ring[1] : ring[0]) + static_cast<std::size_t>(t) * row;
  }
};

// Rows [t0, t0 + nt) of tensors sel0 .. sel0 + count - 1 into dst, [count][nt][D]. 16-byte loads,
// kBatch in flight per thread.
template <int kThreads>
MEMATTN_DEVICE void stage_rows(Half* dst, const StageSrc& s, int D, int t0, int nt, int sel0, int count) {
  if (s.vec) {
    constexpr int kBatch = 8;
    const int per_row = D / 8, n = count * nt * per_row;
    const int step_r = kThreads / per_row, step_c = kThreads % per_row;
    int r = static_cast<int>(threadIdx.x) / per_row, c8 = static_cast<int>(threadIdx.x) % per_row;
    uint4* d = reinterpret_cast<uint4*>(dst);
    for (int base = static_cast<int>(threadIdx.x); base < n; base += kThreads * kBatch) {
      uint4 x[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (base + u * kThreads < n) {
          const int sel = r >= nt ? 1 : 0;
          x[u] = *reinterpret_cast<const uint4*>(s.row_ptr(sel0 + sel, t0 + r - sel * nt) + c8 * 8);
        }
        c8 += step_c;
        r += step_r;
        if (c8 >= per_row) {
          c8 -= per_row;
          ++r;
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (base + u * kThreads < n) d[base + u * kThreads] = x[u];
    }
  } else {
    const int n = count * nt * D;
    for (int i = static_cast<int>(threadIdx.x); i < n; i += kThreads) {
      const int r = i / D, c = i - r * D, sel = r >= nt ? 1 : 0;
      dst[i] = s.row_ptr(sel0 + sel, t0 + r - sel * nt)[c];
    }
  }
}

// n (4, 8 or 16) fp16 bit patterns from 16-byte aligned shared memory (8-byte for n = 4), two a word.
template <int kN>
MEMATTN_DEVICE void load_halves(const Half* p, std::uint32_t (&w)[kN / 2]) {
  if constexpr (kN == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    w[0] = u.x;
    w[1] = u.y;
  } else {
#pragma unroll
    for (int i = 0; i < kN / 8; ++i) {
      const uint4 u = reinterpret_cast<const uint4*>(p)[i];
      w[4 * i] = u.x;
      w[4 * i + 1] = u.y;
      w[4 * i + 2] = u.z;
      w[4 * i + 3] = u.w;
    }
  }
}
// n consecutive metas from 16-byte aligned shared memory (n even).
template <int kN>
MEMATTN_DEVICE void load_metas(const uint2* p, uint2 (&m)[kN]) {
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) {
    const uint4 u = reinterpret_cast<const uint4*>(p)[i];
    m[2 * i] = make_uint2(u.x, u.y);
    m[2 * i + 1] = make_uint2(u.z, u.w);
  }
}

// word with the codes flagged in near_mask (fast_code's *near) replaced by enc(i), quant::encode's.
template <int kBits, class Encode>
MEMATTN_DEVICE std::uint32_t encode_near(std::uint32_t word, std::uint32_t near_mask, const Encode& enc) {
  constexpr std::uint32_t L = (1u << kBits) - 1u;
  while (near_mask != 0u) {  // rare
    const int i = __ffs(static_cast<int>(near_mask)) - 1;
    near_mask &= near_mask - 1u;
    word = (word & ~(L << (i * kBits))) | (enc(i) << (i * kBits));
  }
  return word;
}

// K code words of staged rows [0, nt) (xs: [nt][D]; km: meta per channel): word w of the chunk holds
// stream elements w*P .. w*P + P - 1, P = 32 / kBits, element e = t*D + c being xs[e].
template <int kBits, int kThreads>
MEMATTN_DEVICE void k_words(const Half* xs, const uint2* km, int D, int nt, std::uint32_t* out) {
  constexpr int P = 32 / kBits, L = (1 << kBits) - 1;
  const int n = nt * D / P;
  const bool aligned = D % P == 0;  // a word is P channels of one token: P consecutive metas
  for (int w = static_cast<int>(threadIdx.x); w < n; w += kThreads) {
    std::uint32_t x[P / 2];
    load_halves<P>(xs + w * P, x);
    const int c0 = w * P % D;
    uint2 m[P];
    if (aligned) {
      load_metas<P>(km + c0, m);
    } else {  // 2-bit, D = 8 mod 16: the word crosses a token boundary once
#pragma unroll
      for (int i = 0; i < P; ++i) m[i] = km[c0 + i < D ? c0 + i : c0 + i - D];
    }
    std::uint32_t word = 0, near_mask = 0;
#pragma unroll
    for (int i = 0; i < P; ++i) {
      bool near;
      word |= fast_code<L>(static_cast<std::uint16_t>(x[i / 2] >> (16 * (i % 2))), m[i], &near) << (i * kBits);
      near_mask |= static_cast<std::uint32_t>(near) << i;
    }
    out[w] = encode_near<kBits>(word, near_mask, [&](int i) {  // metas from shared memory, not m[i]:
      const int c = c0 + i < D ? c0 + i : c0 + i - D;            // a run-time index would put m in local memory
      return quant::encode(xs[w * P + i], group_meta(km[c]), L);
    });
  }
}

// V code words of staged rows [c0, c0 + nt) of the block (xs: [nt][D]; vm: meta [D/GV][nt]):
// stream element e = c*G + t, so a word is P consecutive tokens of one channel. Channel fastest
// across threads (conflict-free shared reads).
template <int kBits, int kThreads>
MEMATTN_DEVICE void v_words(const Half* xs, const uint2* vm, int D, int GV, int G, int c0, int nt, std::uint32_t* out) {
  constexpr int P = 32 / kBits, L = (1 << kBits) - 1;
  const int n = D * (nt / P);
  for (int task = static_cast<int>(threadIdx.x); task < n; task += kThreads) {
    const int q = task / D, c = task - q * D, t = q * P;
    const uint2* mp = vm + (c / GV) * nt + t;  // 16-byte aligned: nt, t multiples of P >= 4
    uint2 m[P];
    load_metas<P>(mp, m);
    std::uint32_t word = 0, near_mask = 0;
#pragma unroll
    for (int i = 0; i < P; ++i) {
      bool near;
      word |= fast_code<L>(xs[(t + i) * D + c].bits, m[i], &near) << (i * kBits);
      near_mask |= static_cast<std::uint32_t>(near) << i;
    }
    out[static_cast<std::size_t>(c) * (G / P) + (c0 + t) / P] = encode_near<kBits>(word, near_mask, [&](int i) {
      return quant::encode(xs[(t + i) * D + c], group_meta(mp[i]), L);
    });
  }
}

// V metadata of staged rows [c0, c0 + nt): one thread per (token, value group), group fastest.
template <int kThreads>
MEMATTN_DEVICE std::uint32_t v_meta(const Half* xs, int D, int GV, int G, int c0, int nt, int L, uint2* vm_s, std::uint32_t* vm) {
  std::uint32_t f = 0;
  const int ng = D / GV;
  for (int task = static_cast<int>(threadIdx.x); task < nt * ng; task += kThreads) {
    const int t = task / ng, j = task - t * ng;
    const Half* x = xs + t * D + j * GV;
    RangeScan r;
    if (GV % 8 == 0) {
      for (int i = 0; i < GV / 8; ++i) r.add8(reinterpret_cast<const uint4*>(x)[i]);
    } else {
      for (int i = 0; i < GV; ++i) r.add(x[i].bits);
    }
    const std::uint32_t m = r.meta(L, &f);
    vm_s[j * nt + t] = smem_meta(m);
    vm[static_cast<std::size_t>(j) * G + c0 + t] = m;
  }
  return f;
}

template <int kThreads>
MEMATTN_DEVICE void k_words_bits(int bits, const Half* xs, const uint2* km, int D, int nt, std::uint32_t* out) {
  if (bits == 2) k_words<2, kThreads>(xs, km, D, nt, out);
  else if (bits == 4) k_words<4, kThreads>(xs, km, D, nt, out);
  else k_words<8, kThreads>(xs, km, D, nt, out);
}
template <int kThreads>
MEMATTN_DEVICE void v_words_bits(int bits, const Half* xs, const uint2* vm, int D, int GV, int G, int c0, int nt, std::uint32_t* out) {
  if (bits == 2) v_words<2, kThreads>(xs, vm, D, GV, G, c0, nt, out);
  else if (bits == 4) v_words<4, kThreads>(xs, vm, D, GV, G, c0, nt, out);
  else v_words<8, kThreads>(xs, vm, D, GV, G, c0, nt, out);
}

}  // namespace kivi_append_detail

template <int kThreads = 128>
MEMATTN_KERNEL void __launch_bounds__(kThreads) kivi_append_decode_kernel(const KiviAppendParams p) {
  namespace ka = kivi_append_detail;
  static_assert(kThreads % 32 == 0, "whole warps");
  constexpr int kNew = (ka::kMaxDim + kThreads - 1) / kThreads;
  MEMATTN_SHARED(__align__(16) Half, xs, [ka::kStageHalves]);
  MEMATTN_SHARED(__align__(16) uint2, km_s, [ka::kMaxDim]);
  MEMATTN_SHARED(__align__(16) uint2, vm_s, [ka::kMaxVMeta]);
  const int b = blockIdx.x, h = blockIdx.y;
  const int tid = static_cast<int>(threadIdx.x);
  const KiviCacheView& c = p.cache;
  const int D = c.cfg.head_dim, G = c.cfg.group, R = c.cfg.residual, GV = c.cfg.vg();
  const long long N = p.n_before[b];
  // n_q before; the ring after the write holds N + 1 - nq tokens.
  const long long nq = N - R > 0 ? (N - R) / G * G : 0;
  const bool flush = N + 1 - nq == R + G;  // block-uniform
  const Half* k = p.k + (static_cast<std::size_t>(b) * c.num_kv_heads + h) * D;
  const Half* v = p.v + (static_cast<std::size_t>(b) * c.num_kv_heads + h) * D;
  Half kn[kNew], vn[kNew];
#pragma unroll
  for (int u = 0; u < kNew; ++u)
    if (tid + u * kThreads < D) {
      kn[u] = k[tid + u * kThreads];
      vn[u] = v[tid + u * kThreads];
    }

  // Token chunks: K and V staged together when both fit, else K in chunks of Tk, V of Tv tokens
  // (powers of two, >= 32: multiples of every word's 32 / b tokens).
  const bool both = 2 * G * D <= ka::kStageHalves && G * (D / GV) <= ka::kMaxVMeta;
  int Tk = G, Tv = G;
  while (Tk * D > ka::kStageHalves) Tk /= 2;
  while (Tv * D > ka::kStageHalves || Tv * (D / GV) > ka::kMaxVMeta) Tv /= 2;
  ka::StageSrc src{};
  if (flush) {  // the first stage is issued before the ring write: the loads overlap
    src.ring[0] = c.ring_k + c.ring_offset(b, nq, h);  // block rows are contiguous slots
    src.ring[1] = c.ring_v + c.ring_offset(b, nq, h);
    src.fresh[0] = k;
    src.fresh[1] = v;
    src.row = static_cast<std::size_t>(c.num_kv_heads) * D;
    src.tnew = static_cast<int>(N - nq);  // < G only for R = 0
    src.vec = ((reinterpret_cast<std::uintptr_t>(src.ring[0]) | reinterpret_cast<std::uintptr_t>(src.ring[1]) |
                reinterpret_cast<std::uintptr_t>(k) | reinterpret_cast<std::uintptr_t>(v)) & 15u) == 0;
    ka::stage_rows<kThreads>(xs, src, D, 0, Tk, 0, both ? 2 : 1);
  }

  Half* rk = c.ring_k + c.ring_offset(b, N, h);
  Half* rv = c.ring_v + c.ring_offset(b, N, h);
  bool bad = false;
#pragma unroll
  for (int u = 0; u < kNew; ++u)
    if (tid + u * kThreads < D) {
      rk[tid + u * kThreads] = kn[u];
      rv[tid + u * kThreads] = vn[u];
      bad |= quant::half_is_nonfinite(kn[u]) || quant::half_is_nonfinite(vn[u]);
    }
  if (bad) atomicOr(p.flags + b, static_cast<std::uint32_t>(quant::kQuantNonFinite));
  if (!flush) return;  // block-uniform: no flush at this step

  const int j = static_cast<int>(nq / G);
  std::uint8_t* rec = c.record(b, j, h);
  std::uint32_t* kc = reinterpret_cast<std::uint32_t*>(rec + c.layout.kc);
  std::uint32_t* vc = reinterpret_cast<std::uint32_t*>(rec + c.layout.vc);
  std::uint32_t* km = reinterpret_cast<std::uint32_t*>(rec + c.layout.km);  // {scale, zero} fp16 pairs
  std::uint32_t* vm = reinterpret_cast<std::uint32_t*>(rec + c.layout.vm);
  const int Lk = c.cfg.levels_k(), Lv = c.cfg.levels_v();
  const int kchunks = G / Tk;
  std::uint32_t f = 0;

  // K metadata: one thread per channel, its scan carried across the chunks.
  ka::RangeScan scan[kNew];
  for (int q = 0; q < kchunks; ++q) {
    if (q > 0) {
      __syncthreads();
      ka::stage_rows<kThreads>(xs, src, D, q * Tk, Tk, 0, 1);
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kNew; ++u)
      if (tid + u * kThreads < D)
        for (int t = 0; t < Tk; ++t) scan[u].add(xs[t * D + tid + u * kThreads].bits);
  }
#pragma unroll
  for (int u = 0; u < kNew; ++u)
    if (tid + u * kThreads < D) {
      const std::uint32_t m = scan[u].meta(Lk, &f);
      km_s[tid + u * kThreads] = ka::smem_meta(m);
      km[tid + u * kThreads] = m;
    }
  if (both) f |= ka::v_meta<kThreads>(xs + G * D, D, GV, G, 0, G, Lv, vm_s, vm);
  __syncthreads();

  // K codes, the staged chunk (the last) first.
  for (int q = kchunks - 1; q >= 0; --q) {
    if (q < kchunks - 1) {
      __syncthreads();
      ka::stage_rows<kThreads>(xs, src, D, q * Tk, Tk, 0, 1);
      __syncthreads();
    }
    ka::k_words_bits<kThreads>(c.cfg.bits_k, xs, km_s, D, Tk, kc + static_cast<std::size_t>(q) * Tk * D / (32 / c.cfg.bits_k));
  }

  // V: metadata and codes.
  if (both) {
    ka::v_words_bits<kThreads>(c.cfg.bits_v, xs + G * D, vm_s, D, GV, G, 0, G, vc);
  } else {
    for (int q = 0; q < G / Tv; ++q) {
      __syncthreads();
      ka::stage_rows<kThreads>(xs, src, D, q * Tv, Tv, 1, 1);
      __syncthreads();
      f |= ka::v_meta<kThreads>(xs, D, GV, G, q * Tv, Tv, Lv, vm_s, vm);
      __syncthreads();
      ka::v_words_bits<kThreads>(c.cfg.bits_v, xs, vm_s, D, GV, G, q * Tv, Tv, vc);
    }
  }
  if (f) atomicOr(p.flags + b, f);
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
