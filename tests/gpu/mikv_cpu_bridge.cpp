#include "gpu/mikv_cpu_bridge.hpp"

#include <memory>
#include <random>

#include "memattn/cpu/kv_cache_factory.hpp"
#include "memattn/cpu/mikv_kv_cache.hpp"

namespace memattn_test {

memattn::Status mikv_cpu_snapshot(const std::string& spec, int D, int G, int kv_heads, unsigned seed,
                                  std::vector<MikvSnapshot>* out) {
  using namespace memattn;
  cache::CacheShape s;
  s.layers = 1;
  s.kv_heads = kv_heads;
  s.q_heads = kv_heads * G;
  s.head_dim = D;
  s.max_tokens = 1024;
  std::unique_ptr<cache::KvCache> base;
  std::string err;
  MEMATTN_RETURN_IF_ERROR(cpu::make_kv_cache(spec + ",track=1", s, Executor{}, &base, &err));
  auto& c = static_cast<cpu::MixedKvCache<>&>(*base);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto chunk = [&](int n, std::vector<float>* q, std::vector<float>* k, std::vector<float>* v) {
    q->resize(static_cast<std::size_t>(n * s.q_heads * D));
    k->resize(static_cast<std::size_t>(n * kv_heads * D));
    v->resize(k->size());
    for (float& x : *q) x = 1.5f * nd(rng);
    for (std::size_t i = 0; i < k->size(); ++i) (*k)[i] = (i % static_cast<std::size_t>(D) == 3 ? 10.f : 0.f) + 1.5f * nd(rng);
    for (float& x : *v) x = nd(rng);
  };
  auto step = [&](int n, std::vector<float>& q, std::vector<float>& k, std::vector<float>& v, std::vector<float>& o) {
    o.assign(q.size(), 0.f);
    return c.attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {n, s.q_heads, D}),
                    make_view<3>(static_cast<const float*>(k.data()), {n, kv_heads, D}),
                    make_view<3>(static_cast<const float*>(v.data()), {n, kv_heads, D}), make_view<3>(o.data(), {n, s.q_heads, D}));
  };
  std::vector<float> q, k, v, o;
  for (int n : {100, 1, 1, 7, 1, 40, 1, 1, 1, 1, 3, 1}) {
    chunk(n, &q, &k, &v);
    MEMATTN_RETURN_IF_ERROR(step(n, q, k, v, o));
    MEMATTN_RETURN_IF_ERROR(c.end_chunk(0, {}));
  }
  // Scores before the decode step, per column [lo | hi | exact-before].
  std::vector<std::vector<float>> before(static_cast<std::size_t>(kv_heads));
  for (int h = 0; h < kv_heads; ++h) {
    const auto& lo = c.low_pool(0, 0, h);
    const auto& hi = c.high8_pool(0, 0, h);
    auto& b = before[static_cast<std::size_t>(h)];
    for (std::int64_t i = 0; i < lo.slots(); ++i) b.push_back(lo.state()[i]);
    for (std::int64_t i = 0; i < hi.slots(); ++i) b.push_back(hi.state()[i]);
    for (std::int64_t i = 0; i < c.exact_rows(0, 0, h); ++i) b.push_back(c.exact_state(0, 0, h)[i]);
  }
  chunk(1, &q, &k, &v);
  MEMATTN_RETURN_IF_ERROR(step(1, q, k, v, o));
  out->clear();
  for (int h = 0; h < kv_heads; ++h) {
    MikvSnapshot m;
    const auto& lo = c.low_pool(0, 0, h);
    const auto& hi = c.high8_pool(0, 0, h);
    m.head_dim = D;
    m.group = G;
    m.groups = lo.config().groups;
    m.low_bits = lo.config().bits;
    m.lo_slots = static_cast<int>(lo.slots());
    m.hi_slots = static_cast<int>(hi.slots());
    m.lo_rec.assign(lo.records(), lo.records() + lo.slots() * lo.layout().bytes);
    m.hi_rec.assign(hi.records(), hi.records() + hi.slots() * hi.layout().bytes);
    m.lo_live.assign(lo.live_bits(), lo.live_bits() + (lo.slots() + 31) / 32);
    m.hi_live.assign(hi.live_bits(), hi.live_bits() + (hi.slots() + 31) / 32);
    m.n_exact = static_cast<int>(c.exact_rows(0, 0, h));
    m.k.assign(c.exact_keys(0, 0, h), c.exact_keys(0, 0, h) + m.n_exact * D);
    m.v.assign(c.exact_values(0, 0, h), c.exact_values(0, 0, h) + m.n_exact * D);
    m.balancer.assign(c.balancer(0, 0, h), c.balancer(0, 0, h) + D);
    m.q.assign(q.begin() + h * G * D, q.begin() + (h + 1) * G * D);
    m.out_cpu.assign(o.begin() + h * G * D, o.begin() + (h + 1) * G * D);
    const auto& b = before[static_cast<std::size_t>(h)];
    std::size_t col = 0;
    for (std::int64_t i = 0; i < lo.slots(); ++i, ++col) m.pbar_cpu.push_back(lo.is_live(i) ? lo.state()[i] - b[col] : 0.f);
    for (std::int64_t i = 0; i < hi.slots(); ++i, ++col) m.pbar_cpu.push_back(hi.is_live(i) ? hi.state()[i] - b[col] : 0.f);
    for (std::int64_t i = 0; i < m.n_exact; ++i, ++col)
      m.pbar_cpu.push_back(c.exact_state(0, 0, h)[i] - (col < b.size() ? b[col] : 0.f));
    out->push_back(std::move(m));
  }
  return Status::kSuccess;
}

}  // namespace memattn_test
