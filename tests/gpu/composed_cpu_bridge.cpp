#include "composed_cpu_bridge.hpp"

#include <algorithm>
#include <memory>
#include <random>

#include "memattn/cpu/composed_kv_cache.hpp"

using namespace memattn;

namespace {

template <class Cache>
bool run_and_export(Cache& c, int B, int Hq, int Hkv, int D, int prefill, int steps, unsigned seed, ComposedCase* out) {
  ComposedCase& r = *out;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  r.q.resize(static_cast<std::size_t>(B) * Hq * D);
  r.out_cpu.resize(r.q.size());
  const int S = B * Hkv;
  std::vector<std::vector<float>> before(static_cast<std::size_t>(S));
  for (int b = 0; b < B; ++b) {
    const int P = prefill + 7 * b;
    for (int step = -2; step < steps; ++step) {
      const int n = step == -2 ? P : (step == -1 ? 40 : 1);  // a 40-token chunk evicts inside quantised blocks
      std::vector<float> q(static_cast<std::size_t>(n) * Hq * D), k(static_cast<std::size_t>(n) * Hkv * D), v(k.size()), o(q.size());
      for (auto& x : q) x = nd(rng);
      for (std::size_t i = 0; i < k.size(); ++i) k[i] = nd(rng) * (i % static_cast<std::size_t>(D) < 4 ? 4.f : 1.f);
      for (auto& x : v) x = nd(rng);
      const bool last = step == steps - 1;
      if (last && Cache::kHasState)
        for (int h = 0; h < Hkv; ++h) {  // accumulators before the step; its new token starts at 0
          const auto* st = c.segment_state(b, 0, h);
          before[static_cast<std::size_t>(b * Hkv + h)].assign(st, st + c.segment_size(b, 0, h));
          before[static_cast<std::size_t>(b * Hkv + h)].push_back(0.f);
        }
      if (c.attend(b, 0, make_view<3>(static_cast<const float*>(q.data()), {n, Hq, D}),
                   make_view<3>(static_cast<const float*>(k.data()), {n, Hkv, D}),
                   make_view<3>(static_cast<const float*>(v.data()), {n, Hkv, D}), make_view<3>(o.data(), {n, Hq, D})) !=
          Status::kSuccess)
        return false;
      if (last) {
        std::copy(q.begin(), q.end(), r.q.begin() + static_cast<std::ptrdiff_t>(b) * Hq * D);
        std::copy(o.begin(), o.end(), r.out_cpu.begin() + static_cast<std::ptrdiff_t>(b) * Hq * D);
      } else if (c.end_chunk(b, {}) != Status::kSuccess) {
        return false;
      }
    }
  }
  std::vector<typename Cache::Regions> regs;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h) {
      regs.push_back(c.regions(b, 0, h));
      const auto& g = regs.back();
      r.n_q.push_back(static_cast<int>(g.nq));
      r.n_old.push_back(static_cast<int>(g.n_old));
      r.n_new.push_back(static_cast<int>(g.n_tail));
      r.n_total.push_back(static_cast<int>(g.nq + g.n_old + g.n_tail));
      r.cap_blocks = std::max(r.cap_blocks, static_cast<int>(g.k_codes.size()));
      r.cap_q = std::max(r.cap_q, static_cast<int>(g.nq));
      r.cap_old = std::max(r.cap_old, static_cast<int>(g.n_old));
      r.cap_new = std::max(r.cap_new, static_cast<int>(g.n_tail));
      r.cap_total = std::max(r.cap_total, r.n_total.back());
    }
  const auto& g0 = regs.front();
  r.B = B, r.Hq = Hq, r.Hkv = Hkv, r.D = D, r.d_keep = static_cast<int>(g0.d_keep);
  r.k_block_words = static_cast<int>(g0.k_block_words), r.v_words = static_cast<int>(g0.v_words);
  r.v_groups = static_cast<int>(g0.v_groups);
  const int dk = r.d_keep, kw = std::max(1, r.k_block_words), vw = std::max(1, r.v_words), ng = std::max(1, r.v_groups);
  r.kq_first.assign(static_cast<std::size_t>(S) * r.cap_blocks, 0);
  r.kq.assign(static_cast<std::size_t>(S) * r.cap_blocks * kw, 0u);
  r.kqm.assign(static_cast<std::size_t>(S) * r.cap_blocks * 2 * dk, 0);
  r.vq.assign(static_cast<std::size_t>(S) * r.cap_q * vw, 0u);
  r.vqm.assign(static_cast<std::size_t>(S) * r.cap_q * 2 * ng, 0);
  r.k_old.assign(static_cast<std::size_t>(S) * r.cap_old * dk, Half{0});
  r.v_old.assign(static_cast<std::size_t>(S) * r.cap_old * D, Half{0});
  r.k_new.assign(static_cast<std::size_t>(S) * r.cap_new * D, Half{0});
  r.v_new.assign(r.k_new.size(), Half{0});
  r.channels.assign(static_cast<std::size_t>(S) * dk, 0);
  r.evicts = Cache::kHasState;
  if (r.evicts) {
    r.state_before.assign(static_cast<std::size_t>(S) * r.cap_total, 0.f);
    r.state_after.assign(r.state_before.size(), 0.f);
  }
  for (int s = 0; s < S; ++s) {
    const auto& g = regs[static_cast<std::size_t>(s)];
    const std::size_t us = static_cast<std::size_t>(s);
    r.n_blocks.push_back(static_cast<int>(g.k_codes.size()));
    for (std::size_t i = 0; i < g.k_codes.size(); ++i) {
      r.kq_first[us * r.cap_blocks + i] = static_cast<int>(g.k_first[i]);
      const std::int64_t tokens = (i + 1 < g.k_codes.size() ? g.k_first[i + 1] : g.nq) - g.k_first[i];
      std::copy(g.k_codes[i], g.k_codes[i] + g.k_words(tokens), r.kq.begin() + static_cast<std::ptrdiff_t>((us * r.cap_blocks + i) * kw));
      std::copy(g.k_meta[i], g.k_meta[i] + 2 * dk, r.kqm.begin() + static_cast<std::ptrdiff_t>((us * r.cap_blocks + i) * 2 * dk));
    }
    if (g.nq > 0) {
      std::copy(g.v_codes, g.v_codes + g.nq * r.v_words, r.vq.begin() + static_cast<std::ptrdiff_t>(us * r.cap_q * vw));
      std::copy(g.v_meta, g.v_meta + g.nq * 2 * r.v_groups, r.vqm.begin() + static_cast<std::ptrdiff_t>(us * r.cap_q * 2 * ng));
    }
    if (g.dv_keep != D) return false;  // no value extension with KIVI
    std::copy(g.k_old, g.k_old + g.n_old * dk, r.k_old.begin() + static_cast<std::ptrdiff_t>(us * r.cap_old * dk));
    std::copy(g.v_old, g.v_old + g.n_old * D, r.v_old.begin() + static_cast<std::ptrdiff_t>(us * r.cap_old * D));
    std::copy(g.k_tail, g.k_tail + g.n_tail * D, r.k_new.begin() + static_cast<std::ptrdiff_t>(us * r.cap_new * D));
    std::copy(g.v_tail, g.v_tail + g.n_tail * D, r.v_new.begin() + static_cast<std::ptrdiff_t>(us * r.cap_new * D));
    const std::vector<int> ch = c.channels(s / Hkv, 0, s % Hkv);
    if (g.nq + g.n_old > 0 && static_cast<int>(ch.size()) != dk) return false;
    for (std::size_t i = 0; i < ch.size(); ++i) r.channels[us * dk + i] = static_cast<std::uint8_t>(ch[i]);
    if (r.evicts) {
      const auto* st = c.segment_state(s / Hkv, 0, s % Hkv);
      const auto& bf = before[us];
      if (static_cast<int>(bf.size()) != r.n_total[us]) return false;  // no eviction inside the step
      for (int j = 0; j < r.n_total[us]; ++j) {
        r.state_before[us * r.cap_total + static_cast<std::size_t>(j)] = bf[static_cast<std::size_t>(j)];
        r.state_after[us * r.cap_total + static_cast<std::size_t>(j)] = static_cast<float>(st[j]);
      }
    }
  }
  return true;
}

cache::CacheShape shape_of(int B, int Hq, int Hkv, int D, int tokens) {
  cache::CacheShape s;
  s.layers = 1;
  s.q_heads = Hq;
  s.kv_heads = Hkv;
  s.head_dim = D;
  s.max_tokens = tokens;
  s.max_sequences = B;
  return s;
}

template <class Cache>
bool build(const typename Cache::Config& cfg, int B, int Hq, int Hkv, int D, int prefill, int steps, unsigned seed,
           ComposedCase* out) {
  std::unique_ptr<Cache> c;
  if (Cache::create(shape_of(B, Hq, Hkv, D, prefill + 7 * B + 40 + steps + 1), cfg, "composed", Executor{}, &c) != Status::kSuccess)
    return false;
  *out = ComposedCase{};
  out->bits_k = cfg.quant.bits_k, out->bits_v = cfg.quant.bits_v, out->qgroup = cfg.quant.group;
  quant::KvQuantConfig q = cfg.quant;
  q.head_dim = D;
  out->v_group = q.vg();
  return run_and_export(*c, B, Hq, Hkv, D, prefill, steps, seed, out);
}

}  // namespace

bool composed_cpu_case(ComposedKind kind, int B, int Hq, int Hkv, int D, int bits_k, int bits_v, int prefill, int steps,
                       unsigned seed, ComposedCase* out, int granularity, float prune, int v_group) {
  quant::KvQuantConfig q;
  q.bits_k = bits_k;
  q.bits_v = bits_v;
  q.group = v_group > 32 ? v_group : 32;  // G_V <= G
  q.v_group = v_group;
  q.residual = q.group;
  prune::ThinKParams t;
  t.prune = prune;
  t.window = 8;
  t.recent = 16;
  t.granularity = granularity;
  const auto h2o = evict::h2o_params(prefill - 8, 24);  // budget below the prompt: evicts at prefill and while decoding
  switch (kind) {
    case ComposedKind::kKivi: {
      using C = cpu::ComposedKvCache<evict::NoEvict, prune::NoPrune, quant::KiviQuant>;
      C::Config cfg;
      cfg.quant = q;
      return build<C>(cfg, B, Hq, Hkv, D, prefill, steps, seed, out);
    }
    case ComposedKind::kThinkKivi: {
      using C = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::KiviQuant>;
      C::Config cfg;
      cfg.quant = q;
      cfg.prune = t;
      return build<C>(cfg, B, Hq, Hkv, D, prefill, steps, seed, out);
    }
    case ComposedKind::kH2oThinkKivi: {
      using C = cpu::ComposedKvCache<evict::H2O, prune::ThinK, quant::KiviQuant>;
      C::Config cfg;
      cfg.quant = q;
      cfg.prune = t;
      cfg.evict = h2o;
      return build<C>(cfg, B, Hq, Hkv, D, prefill, steps, seed, out);
    }
    case ComposedKind::kH2oKivi: {
      using C = cpu::ComposedKvCache<evict::H2O, prune::NoPrune, quant::KiviQuant>;
      C::Config cfg;
      cfg.quant = q;
      cfg.evict = h2o;
      return build<C>(cfg, B, Hq, Hkv, D, prefill, steps, seed, out);
    }
  }
  return false;
}
