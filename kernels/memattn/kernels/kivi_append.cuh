// KIVI quantize-append on the GPU (specs/quantization.md §4.3, §6.8): one decode token per
// sequence and KV head is written to the fp16 ring slot N mod (R + G); when the ring then holds
// R + G tokens its oldest G are flushed as one block record. The ring write, the non-finite check
// and the flush are one launch. The quantiser is memattn/quant/qmath.hpp, shared with the CPU, so
// the block bytes equal the CPU cache's (memattn/cpu/kivi_kv_cache.hpp) bit for bit.
//
// One CTA (128 threads) per (sequence, KV head). Flush: zero the code sections, then K groups
// (one thread per channel) and V groups (one thread per (token, channel group)) encode and OR
// their codes into the words (LSB-first bit stream), metadata written directly.
#pragma once

#include <cuda_runtime.h>

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

MEMATTN_DEVICE void kivi_or_code(std::uint32_t* words, long long e, int bits, std::uint32_t code) {
  const int per = 32 / bits;
  atomicOr(words + e / per, code << (static_cast<int>(e % per) * bits));
}

template <int kThreads = 128>
MEMATTN_KERNEL void __launch_bounds__(kThreads) kivi_append_decode_kernel(const KiviAppendParams p) {
  const int b = blockIdx.x, h = blockIdx.y;
  const KiviCacheView& c = p.cache;
  const int D = c.cfg.head_dim, G = c.cfg.group, R = c.cfg.residual;
  const long long N = p.n_before[b];
  // n_q before; the ring after the write holds N + 1 - nq tokens.
  const long long nq = N - R > 0 ? (N - R) / G * G : 0;
  Half* rk = c.ring_k + c.ring_offset(b, N, h);
  Half* rv = c.ring_v + c.ring_offset(b, N, h);
  const Half* k = p.k + (static_cast<std::size_t>(b) * c.num_kv_heads + h) * D;
  const Half* v = p.v + (static_cast<std::size_t>(b) * c.num_kv_heads + h) * D;
  bool bad = false;
  for (int i = threadIdx.x; i < D; i += kThreads) {
    rk[i] = k[i];
    rv[i] = v[i];
    bad |= quant::half_is_nonfinite(k[i]) || quant::half_is_nonfinite(v[i]);
  }
  if (bad) atomicOr(p.flags + b, static_cast<std::uint32_t>(quant::kQuantNonFinite));
  if (N + 1 - nq != R + G) return;  // block-uniform: no flush at this step
  __syncthreads();
  const int j = static_cast<int>(nq / G);
  std::uint8_t* rec = c.record(b, j, h);
  std::uint32_t* kc = reinterpret_cast<std::uint32_t*>(rec + c.layout.kc);
  std::uint32_t* vc = reinterpret_cast<std::uint32_t*>(rec + c.layout.vc);
  std::uint16_t* km = reinterpret_cast<std::uint16_t*>(rec + c.layout.km);
  std::uint16_t* vm = reinterpret_cast<std::uint16_t*>(rec + c.layout.vm);
  for (std::size_t i = threadIdx.x; i < (c.layout.km - c.layout.kc) / 4; i += kThreads) kc[i] = 0;
  for (std::size_t i = threadIdx.x; i < (c.layout.vm - c.layout.vc) / 4; i += kThreads) vc[i] = 0;
  __syncthreads();
  const Half* ring_k_h = c.ring_k + c.ring_offset(b, nq, h);  // block rows are contiguous slots
  const Half* ring_v_h = c.ring_v + c.ring_offset(b, nq, h);
  const int row = c.num_kv_heads * D;
  const int Lk = c.cfg.levels_k(), Lv = c.cfg.levels_v(), GV = c.cfg.vg();
  std::uint32_t f = 0;
  for (int ch = threadIdx.x; ch < D; ch += kThreads) {
    quant::GroupMeta m;
    f |= quant::group_params(ring_k_h + ch, G, row, Lk, &m);
    km[2 * ch] = m.scale.bits;
    km[2 * ch + 1] = m.zero.bits;
    for (int t = 0; t < G; ++t) {
      const std::uint32_t code = quant::encode(ring_k_h[static_cast<std::size_t>(t) * row + ch], m, Lk);
      if (code) kivi_or_code(kc, static_cast<long long>(t) * D + ch, c.cfg.bits_k, code);
    }
  }
  for (int task = threadIdx.x; task < G * (D / GV); task += kThreads) {
    const int t = task / (D / GV), jj = task % (D / GV);
    const Half* x = ring_v_h + static_cast<std::size_t>(t) * row + jj * GV;
    quant::GroupMeta m;
    f |= quant::group_params(x, GV, 1, Lv, &m);
    vm[2 * (jj * G + t)] = m.scale.bits;
    vm[2 * (jj * G + t) + 1] = m.zero.bits;
    for (int ch = 0; ch < GV; ++ch) {
      const std::uint32_t code = quant::encode(x[ch], m, Lv);
      if (code) kivi_or_code(vc, static_cast<long long>(jj * GV + ch) * G + t, c.cfg.bits_v, code);
    }
  }
  if (f) atomicOr(p.flags + b, f);
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
