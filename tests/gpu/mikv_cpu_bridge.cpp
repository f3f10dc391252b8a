#include "gpu/mikv_cpu_bridge.hpp"

#include <memory>
#include <random>
#include <type_traits>

#include "common/mikv_block_export.hpp"
#include "common/kv_factory.hpp"
#include "memattn/cpu/mikv_kv_cache.hpp"

namespace memattn_test {

namespace {

using namespace memattn;
using RowCache = cpu::MixedKvCache<>;
using BlockCache = cpu::MixedKvCache<evict::AccumAttn, true>;  // lowk=1

template <class C>
Status snapshot(C& c, const cache::CacheShape& s, int sequences, int kill_low, std::mt19937& rng, std::vector<MikvSnapshot>* out) {
  constexpr bool kBlocked = std::is_same<C, BlockCache>::value;
  const int D = s.head_dim, Hkv = s.kv_heads, G = s.q_heads / s.kv_heads;
  if (kill_low > 0 && !kBlocked) return Status::kErrorInvalidArgument;
  std::normal_distribution<float> nd(0.f, 1.f);
  auto chunk = [&](int n, std::vector<float>* q, std::vector<float>* k, std::vector<float>* v) {
    q->resize(static_cast<std::size_t>(n * s.q_heads * D));
    k->resize(static_cast<std::size_t>(n * Hkv * D));
    v->resize(k->size());
    for (float& x : *q) x = 1.5f * nd(rng);
    for (std::size_t i = 0; i < k->size(); ++i) (*k)[i] = (i % static_cast<std::size_t>(D) == 3 ? 10.f : 0.f) + 1.5f * nd(rng);
    for (float& x : *v) x = nd(rng);
  };
  auto step = [&](int seq, int n, std::vector<float>& q, std::vector<float>& k, std::vector<float>& v, std::vector<float>& o) {
    o.assign(q.size(), 0.f);
    return c.attend(seq, 0, make_view<3>(static_cast<const float*>(q.data()), {n, s.q_heads, D}),
                    make_view<3>(static_cast<const float*>(k.data()), {n, Hkv, D}),
                    make_view<3>(static_cast<const float*>(v.data()), {n, Hkv, D}), make_view<3>(o.data(), {n, s.q_heads, D}));
  };
  out->clear();
  for (int seq = 0; seq < sequences; ++seq) {
    std::vector<float> q, k, v, o;
    for (int n : {100 + 13 * seq, 1, 1, 7, 1, 40 + 9 * seq, 1, 1, 1, 1, 3, 1}) {  // ragged over sequences
      chunk(n, &q, &k, &v);
      MEMATTN_RETURN_IF_ERROR(step(seq, n, q, k, v, o));
      MEMATTN_RETURN_IF_ERROR(c.end_chunk(seq, {}));
    }
    // Scores before the decode step, per column [lo | hi | exact-before].
    std::vector<std::vector<float>> before(static_cast<std::size_t>(Hkv));
    for (int h = 0; h < Hkv; ++h) {
      const auto& lo = c.low_pool(seq, 0, h);
      const auto& hi = c.high8_pool(seq, 0, h);
      auto& b = before[static_cast<std::size_t>(h)];
      for (std::int64_t i = 0; i < lo.slots(); ++i) b.push_back(lo.state()[i]);
      for (std::int64_t i = 0; i < hi.slots(); ++i) b.push_back(hi.state()[i]);
      for (std::int64_t i = 0; i < c.exact_rows(seq, 0, h); ++i) b.push_back(c.exact_state(seq, 0, h)[i]);
    }
    chunk(1, &q, &k, &v);
    MEMATTN_RETURN_IF_ERROR(step(seq, 1, q, k, v, o));
    for (int h = 0; h < Hkv; ++h) {
      MikvSnapshot m;
      auto lo = c.low_pool(seq, 0, h);  // a copy: slots may be killed below
      const auto& hi = c.high8_pool(seq, 0, h);
      m.head_dim = D;
      m.group = G;
      m.groups = lo.config().groups;
      m.low_bits = lo.config().bits;
      m.hi_slots = static_cast<int>(hi.slots());
      m.hi_rec.assign(hi.records(), hi.records() + hi.slots() * hi.layout().bytes);
      m.hi_live.assign(hi.live_bits(), hi.live_bits() + (hi.slots() + 31) / 32);
      m.n_exact = static_cast<int>(c.exact_rows(seq, 0, h));
      m.k.assign(c.exact_keys(seq, 0, h), c.exact_keys(seq, 0, h) + m.n_exact * D);
      m.v.assign(c.exact_values(seq, 0, h), c.exact_values(seq, 0, h) + m.n_exact * D);
      m.balancer.assign(c.balancer(seq, 0, h), c.balancer(seq, 0, h) + D);
      m.q.assign(q.begin() + h * G * D, q.begin() + (h + 1) * G * D);
      if constexpr (kBlocked) {
        if (kill_low > 0) {
          std::int64_t live_i = 0;
          for (std::int64_t i = 0; i < lo.slots(); ++i)
            if (lo.is_live(i) && ++live_i % kill_low == 0) lo.kill(i);
          const std::int64_t first_staged = lo.blocks() * decltype(lo)::kBlock;
          if (lo.staged() > 0 && lo.is_live(first_staged)) lo.kill(first_staged);
        }
        const MikvBlockExport e = export_block_pool(lo);
        m.lo_blocked = true;
        m.lo_block = static_cast<int>(decltype(lo)::kBlock);
        m.lo_blocks = e.blocks;
        m.lo_kc = e.kc;
        m.lo_km = e.km;
        m.lo_vc = e.vc;
        m.lo_vm = e.vm;
        m.lo_ks = e.ks;
        m.lo_vs = e.vs;
        m.lo_live = e.live;
      } else {
        m.lo_rec.assign(lo.records(), lo.records() + lo.slots() * lo.layout().bytes);
        m.lo_live.assign(lo.live_bits(), lo.live_bits() + (lo.slots() + 31) / 32);
      }
      m.lo_slots = static_cast<int>(lo.slots());
      m.lo_dead = static_cast<int>(lo.slots() - lo.live());
      if (kill_low > 0) {
        if constexpr (kBlocked) {  // the CPU tier functions over the copy with its dead slots
          std::vector<float> pr;
          MEMATTN_RETURN_IF_ERROR(mikv_block_reference(lo, hi, m.k.data(), m.v.data(), m.n_exact, m.balancer.data(),
                                                       m.q.data(), G, &m.out_cpu, &pr));
          const std::size_t N = static_cast<std::size_t>(m.lo_slots + m.hi_slots + m.n_exact);
          m.pbar_cpu.assign(N, 0.f);
          for (std::size_t u = 0; u < N; ++u) {
            for (int g = 0; g < G; ++g) m.pbar_cpu[u] += pr[static_cast<std::size_t>(g) * N + u];
            m.pbar_cpu[u] /= static_cast<float>(G);
          }
        }
      } else {  // the cache's own output and H2O score updates (GQA mean)
        m.out_cpu.assign(o.begin() + h * G * D, o.begin() + (h + 1) * G * D);
        const auto& b = before[static_cast<std::size_t>(h)];
        std::size_t col = 0;
        for (std::int64_t i = 0; i < lo.slots(); ++i, ++col) m.pbar_cpu.push_back(lo.is_live(i) ? lo.state()[i] - b[col] : 0.f);
        for (std::int64_t i = 0; i < hi.slots(); ++i, ++col) m.pbar_cpu.push_back(hi.is_live(i) ? hi.state()[i] - b[col] : 0.f);
        for (std::int64_t i = 0; i < m.n_exact; ++i, ++col)
          m.pbar_cpu.push_back(c.exact_state(seq, 0, h)[i] - (col < b.size() ? b[col] : 0.f));
      }
      out->push_back(std::move(m));
    }
  }
  return Status::kSuccess;
}

}  // namespace

memattn::Status mikv_cpu_snapshot(const std::string& spec, int D, int G, int kv_heads, unsigned seed,
                                  std::vector<MikvSnapshot>* out, int sequences, int kill_low) {
  using namespace memattn;
  if (out == nullptr || sequences < 1 || kill_low < 0) return Status::kErrorInvalidArgument;
  cache::CacheShape s;
  s.layers = 1;
  s.kv_heads = kv_heads;
  s.q_heads = kv_heads * G;
  s.head_dim = D;
  s.max_tokens = 1024;
  s.max_sequences = sequences;
  std::unique_ptr<cache::KvCache> base;
  std::string err;
  MEMATTN_RETURN_IF_ERROR(memattn_test::make_kv_cache(spec + ",track=1", s, Executor{}, &base, &err));
  std::mt19937 rng(seed);
  if (auto* blocked = dynamic_cast<BlockCache*>(base.get())) return snapshot(*blocked, s, sequences, kill_low, rng, out);
  if (auto* rows = dynamic_cast<RowCache*>(base.get())) return snapshot(*rows, s, sequences, kill_low, rng, out);
  return Status::kErrorInvalidArgument;
}

}  // namespace memattn_test
