// The Low tier of a `lowk=1` MiKV cache (quant::MixedBlockPool) in the device layout the CUDA
// decode reads (kernels::MikvLowBlocks, lo_format = kBlocks), for the GPU test and its CPU-side
// checks:
//   export_block_pool     the pool's raw arrays + live bits per slot;
//   export_decode         slot s read back from the export the way the kernel walks it (its own
//                         bit-stream walk, not qmath's unpack_code), checked == pool.dequant;
//   mikv_block_reference  one decode query group over [Low | INT8 High | exact] built from the
//                         library's CPU tier functions as MixedKvCache::attend_block uses them
//                         (MixedBlockPool::logits/values, cpu::mixed_rows_logits/values, one
//                         softmax), so it also serves copies of the pools with slots killed.
// Host compiler only (Eigen).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/cpu/mikv_decode.hpp"
#include "memattn/quant/mixed_block_store.hpp"
#include "memattn/quant/mixed_store.hpp"

namespace memattn_test {

struct MikvBlockExport {
  int blocks = 0, slots = 0;                 // slots = blocks*32 + staging rows
  std::vector<std::uint32_t> kc, vc, live;   // live: [ceil(slots / 32)] bits, LSB first
  std::vector<std::uint16_t> km, vm;         // fp16 bits {scale, zero} pairs
  std::vector<memattn::Half> ks, vs;         // staging rows [slots - blocks*32][D], keys balanced
};

template <class State, class Codec>
MikvBlockExport export_block_pool(const memattn::quant::MixedBlockPool<State, Codec>& p) {
  using P = memattn::quant::MixedBlockPool<State, Codec>;
  const memattn::quant::MixedRowConfig& cfg = p.config();
  const std::size_t D = static_cast<std::size_t>(cfg.head_dim), nb = static_cast<std::size_t>(p.blocks());
  const std::size_t rows = nb * static_cast<std::size_t>(P::kBlock), staged = static_cast<std::size_t>(p.staged());
  MikvBlockExport e;
  e.blocks = static_cast<int>(nb);
  e.slots = static_cast<int>(p.slots());
  e.kc.assign(p.key_codes(), p.key_codes() + nb * p.key_words());
  e.km.assign(p.key_meta_bits(), p.key_meta_bits() + nb * D * 2);
  e.vc.assign(p.value_codes(), p.value_codes() + rows * static_cast<std::size_t>(cfg.code_words()));
  e.vm.assign(p.value_meta_bits(), p.value_meta_bits() + rows * static_cast<std::size_t>(cfg.groups) * 2);
  if (staged > 0) {
    e.ks.assign(p.staged_keys(), p.staged_keys() + staged * D);
    e.vs.assign(p.staged_values(), p.staged_values() + staged * D);
  }
  e.live.assign((static_cast<std::size_t>(e.slots) + 31) / 32, 0u);
  for (int s = 0; s < e.slots; ++s)
    if (p.is_live(s)) e.live[static_cast<std::size_t>(s) >> 5] |= 1u << (s & 31);
  return e;
}

// Slot s of the export: balanced key k_bal[D] and value v[D], fp32, read as the kernel reads them.
inline void export_decode(const MikvBlockExport& e, const memattn::quant::MixedRowConfig& cfg, int s, float* k_bal, float* v) {
  using memattn::Half;
  constexpr int kBlock = 32;
  const int D = cfg.head_dim, bits = cfg.bits, per = 32 / bits;
  if (s >= e.blocks * kBlock) {
    const std::size_t r = static_cast<std::size_t>(s - e.blocks * kBlock) * static_cast<std::size_t>(D);
    for (int c = 0; c < D; ++c) {
      k_bal[c] = memattn::half_to_float(e.ks[r + static_cast<std::size_t>(c)]);
      v[c] = memattn::half_to_float(e.vs[r + static_cast<std::size_t>(c)]);
    }
    return;
  }
  const int b = s / kBlock, t = s % kBlock;
  const std::uint32_t mask = (1u << bits) - 1u;
  const std::uint32_t* kc = e.kc.data() + static_cast<std::size_t>(b) * static_cast<std::size_t>((kBlock * D + per - 1) / per);
  const std::uint16_t* km = e.km.data() + static_cast<std::size_t>(b) * 2 * static_cast<std::size_t>(D);
  int w = t * D / per, sh = (t * D - w * per) * bits;
  std::uint32_t word = kc[w];
  for (int c = 0; c < D; ++c) {
    const memattn::quant::GroupMeta m{Half{km[2 * c]}, Half{km[2 * c + 1]}};
    k_bal[c] = memattn::quant::decode((word >> sh) & mask, m);
    sh += bits;
    if (sh + bits > 32 && c + 1 < D) {
      word = kc[++w];
      sh = 0;
    }
  }
  const std::uint32_t* vc = e.vc.data() + static_cast<std::size_t>(s) * static_cast<std::size_t>(cfg.code_words());
  const std::uint16_t* vm = e.vm.data() + static_cast<std::size_t>(s) * static_cast<std::size_t>(cfg.groups) * 2;
  for (int c = 0; c < D; ++c) {
    const int j = c / cfg.group_size();
    const std::uint32_t code = (vc[c / per] >> ((c % per) * bits)) & mask;
    v[c] = memattn::quant::decode(code, memattn::quant::GroupMeta{Half{vm[2 * j]}, Half{vm[2 * j + 1]}});
  }
}

// One decode step of one segment: q [G][D] (unscaled, scale 1/sqrt(D)), every exact row visible.
// out [G][D]; p [G][lo + hi + exact] normalised probabilities (dead slots 0).
template <class State, class Codec>
memattn::Status mikv_block_reference(const memattn::quant::MixedBlockPool<State, Codec>& lo,
                                     const memattn::quant::MixedRowPool<State, Codec>& hi,
                                     const memattn::Half* k, const memattn::Half* v, std::int64_t ne, const float* bal,
                                     const float* q, std::int64_t G, std::vector<float>* out, std::vector<float>* p) {
  using namespace memattn;
  const std::int64_t D = lo.config().head_dim, nlo = lo.slots(), nh = hi.slots(), N = nlo + nh + ne;
  const float tau = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<float> Q(static_cast<std::size_t>(G * D)), Qb(Q.size()), S(static_cast<std::size_t>(G * N), 0.f),
      acc(Q.size(), 0.f);
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t c = 0; c < D; ++c) {
      const std::size_t i = static_cast<std::size_t>(g * D + c);
      Q[i] = q[i] * tau;
      Qb[i] = q[i] * tau / bal[c];
    }
  std::vector<float> scratch(std::max(quant::MixedBlockPool<State, Codec>::scratch_elems(lo.config()),
                                      cpu::mixed_rows_scratch_elems(G, hi.config())));
  lo.logits(Qb.data(), G, S.data(), N, scratch.data());
  MEMATTN_RETURN_IF_ERROR(
      cpu::mixed_rows_logits(hi.records(), hi.live_bits(), nh, hi.config(), Qb.data(), G, S.data() + nlo, N, scratch.data()));
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t j = 0; j < ne; ++j) {
      float s = 0.f;
      for (std::int64_t c = 0; c < D; ++c) s += Q[static_cast<std::size_t>(g * D + c)] * half_to_float(k[j * D + c]);
      S[static_cast<std::size_t>(g * N + nlo + nh + j)] = s;
    }
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> l(static_cast<std::size_t>(G));
  for (std::int64_t g = 0; g < G; ++g) {
    float* row = S.data() + g * N;
    float mx = kNegInf, sum = 0.f;
    for (std::int64_t j = 0; j < N; ++j) mx = std::max(mx, row[j]);
    for (std::int64_t j = 0; j < N; ++j) {
      row[j] = row[j] == kNegInf ? 0.f : std::exp(row[j] - mx);
      sum += row[j];
    }
    l[static_cast<std::size_t>(g)] = sum;
  }
  lo.values(S.data(), N, G, acc.data(), scratch.data());
  MEMATTN_RETURN_IF_ERROR(cpu::mixed_rows_values(hi.records(), nh, hi.config(), S.data() + nlo, N, G, acc.data(), scratch.data()));
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t j = 0; j < ne; ++j)
      for (std::int64_t c = 0; c < D; ++c)
        acc[static_cast<std::size_t>(g * D + c)] += S[static_cast<std::size_t>(g * N + nlo + nh + j)] * half_to_float(v[j * D + c]);
  out->assign(static_cast<std::size_t>(G * D), 0.f);
  p->assign(static_cast<std::size_t>(G * N), 0.f);
  for (std::int64_t g = 0; g < G; ++g) {
    const float lg = l[static_cast<std::size_t>(g)];
    for (std::int64_t c = 0; c < D; ++c) (*out)[static_cast<std::size_t>(g * D + c)] = acc[static_cast<std::size_t>(g * D + c)] / lg;
    for (std::int64_t j = 0; j < N; ++j) (*p)[static_cast<std::size_t>(g * N + j)] = S[static_cast<std::size_t>(g * N + j)] / lg;
  }
  return Status::kSuccess;
}

}  // namespace memattn_test
