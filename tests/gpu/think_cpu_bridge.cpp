#include "think_cpu_bridge.hpp"

#include <algorithm>
#include <memory>
#include <random>

#include "memattn/cpu/composed_kv_cache.hpp"

using namespace memattn;

bool think_cpu_case(int B, int Hq, int Hkv, int D, float prune, int prefill, int steps, unsigned seed, ThinKCase* out,
                    float vprune) {
  using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::NoQuant>;
  cache::CacheShape s;
  s.layers = 1;
  s.q_heads = Hq;
  s.kv_heads = Hkv;
  s.head_dim = D;
  s.max_tokens = prefill + 5 * B + steps + 1;
  s.max_sequences = B;
  Cache::Config cfg;
  cfg.prune.prune = prune;
  cfg.prune.vprune = vprune;
  std::unique_ptr<Cache> c;
  if (Cache::create(s, cfg, "think", Executor{}, &c) != Status::kSuccess) return false;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  ThinKCase& r = *out;
  r = ThinKCase{};
  r.B = B, r.Hq = Hq, r.Hkv = Hkv, r.D = D, r.d_keep = static_cast<int>(c->d_keep());
  const bool compact_v = vprune > 0.f;
  r.dv_keep = compact_v ? static_cast<int>(c->dv_keep()) : 0;
  r.q.resize(static_cast<std::size_t>(B) * Hq * D);
  r.out_cpu.resize(r.q.size());
  for (int b = 0; b < B; ++b) {
    const int P = prefill + 5 * b;
    for (int step = -1; step < steps; ++step) {
      const int n = step < 0 ? P : 1;
      std::vector<float> q(static_cast<std::size_t>(n) * Hq * D), k(static_cast<std::size_t>(n) * Hkv * D), v(k.size()), o(q.size());
      for (auto& x : q) x = nd(rng);
      for (std::size_t i = 0; i < k.size(); ++i) k[i] = nd(rng) * (i % static_cast<std::size_t>(D) < 4 ? 5.f : 1.f);
      for (auto& x : v) x = nd(rng);
      if (c->attend(b, 0, make_view<3>(static_cast<const float*>(q.data()), {n, Hq, D}),
                    make_view<3>(static_cast<const float*>(k.data()), {n, Hkv, D}),
                    make_view<3>(static_cast<const float*>(v.data()), {n, Hkv, D}), make_view<3>(o.data(), {n, Hq, D})) !=
          Status::kSuccess)
        return false;
      if (step == steps - 1) {  // the exported decode step: keep the chunk open (its token is in the tail)
        std::copy(q.begin(), q.end(), r.q.begin() + static_cast<std::ptrdiff_t>(b) * Hq * D);
        std::copy(o.begin(), o.end(), r.out_cpu.begin() + static_cast<std::ptrdiff_t>(b) * Hq * D);
      } else if (c->end_chunk(b, {}) != Status::kSuccess) {
        return false;
      }
    }
  }
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h) {
      r.n_old.push_back(static_cast<int>(c->old_tokens(b, 0, h)));
      r.n_new.push_back(static_cast<int>(c->tail_tokens(b, 0, h)));
    }
  r.cap_old = std::max(1, *std::max_element(r.n_old.begin(), r.n_old.end()));
  r.cap_new = *std::max_element(r.n_new.begin(), r.n_new.end());
  const int S = B * Hkv, dk = r.d_keep;
  r.k_old.assign(static_cast<std::size_t>(S) * r.cap_old * dk, Half{0});
  r.k_new.assign(static_cast<std::size_t>(S) * r.cap_new * D, Half{0});
  const int v_rows = compact_v ? r.cap_new : r.cap_old + r.cap_new;
  r.v.assign(static_cast<std::size_t>(S) * v_rows * D, Half{0});
  r.channels.assign(static_cast<std::size_t>(S) * dk, 0);
  r.v_old.assign(static_cast<std::size_t>(S) * r.cap_old * std::max(1, r.dv_keep), Half{0});
  r.v_channels.assign(static_cast<std::size_t>(S) * std::max(1, r.dv_keep), 0);
  std::vector<float> buf(static_cast<std::size_t>(D));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h) {
      const int sg = b * Hkv + h, no = r.n_old[static_cast<std::size_t>(sg)], nn = r.n_new[static_cast<std::size_t>(sg)];
      const std::vector<int> ch = c->channels(b, 0, h);
      if (no > 0 && static_cast<int>(ch.size()) != dk) return false;
      for (int i = 0; i < static_cast<int>(ch.size()); ++i) r.channels[static_cast<std::size_t>(sg * dk + i)] = static_cast<std::uint8_t>(ch[static_cast<std::size_t>(i)]);
      for (int j = 0; j < no + nn; ++j) {
        const std::int64_t w = c->key(b, 0, h, j, buf.data());
        Half* dst = j < no ? &r.k_old[(static_cast<std::size_t>(sg) * r.cap_old + j) * dk]
                           : &r.k_new[(static_cast<std::size_t>(sg) * r.cap_new + (j - no)) * D];
        for (std::int64_t x = 0; x < w; ++x) dst[x] = from_float<Half>(buf[static_cast<std::size_t>(x)]);
        c->value(b, 0, h, j, buf.data());  // pruned value channels of old tokens read 0
        if (compact_v && j < no) {
          const std::vector<int> vch = c->value_channels(b, 0, h);
          if (static_cast<int>(vch.size()) != r.dv_keep) return false;
          for (int i = 0; i < r.dv_keep; ++i)
            r.v_old[(static_cast<std::size_t>(sg) * r.cap_old + j) * r.dv_keep + i] = from_float<Half>(buf[static_cast<std::size_t>(vch[static_cast<std::size_t>(i)])]);
          continue;
        }
        const int row = compact_v ? j - no : j;
        for (int x = 0; x < D; ++x)
          r.v[(static_cast<std::size_t>(sg) * v_rows + row) * D + x] = from_float<Half>(buf[static_cast<std::size_t>(x)]);
      }
      if (compact_v) {
        const std::vector<int> vch = c->value_channels(b, 0, h);
        for (int i = 0; i < static_cast<int>(vch.size()) && i < r.dv_keep; ++i)
          r.v_channels[static_cast<std::size_t>(sg * r.dv_keep + i)] = static_cast<std::uint8_t>(vch[static_cast<std::size_t>(i)]);
      }
    }
  return true;
}
