// Evicting KV caches through the engine-facing interface (issue 5): exact budgets, protected tokens,
// distinct positions (chronological slots where the policy compacts in order; hole filling
// otherwise, checked against ordered compaction), bytes shrink, outputs equal fp64 attention over
// the kept tokens, H2O state equal to fp64 accumulated probabilities of the positions it sits with
// (state moved with K/V), PyramidKV per-layer budgets, bad specs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"

using namespace memattn;

namespace {

cache::CacheShape small_shape() {
  cache::CacheShape s;
  s.layers = 3;
  s.q_heads = 6;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 400;
  s.max_sequences = 2;
  return s;
}

struct Chunk {
  std::vector<float> q, k, v, out;
};

Chunk random_chunk(const cache::CacheShape& s, std::int64_t n, std::uint32_t seed) {
  Chunk c;
  c.q = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.q_heads * s.head_dim), seed, 1.5f);
  c.k = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.kv_heads * s.head_dim), seed + 1, 1.5f);
  c.v = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.kv_heads * s.head_dim), seed + 2);
  c.out.assign(c.q.size(), 0.f);
  return c;
}

// fp64 reference of one chunk for (layer, head h): kept rows (read from the cache before the
// chunk, fp16) + the chunk's rows (rounded to fp16), causal. Returns outputs [n][G][D] and, per
// query token, the GQA-mean probability of every visible position (for H2O).
struct Reference {
  std::vector<double> out;                           // [n][G][D]
  std::vector<std::map<std::int32_t, double>> pbar;  // per query token
};

template <class Cache>
Reference reference(const Cache& c, const cache::CacheShape& s, int seq, int layer, int h, const Chunk& ch,
                    std::int64_t n, std::int64_t len) {
  const std::int64_t D = s.head_dim, G = s.q_heads / s.kv_heads;
  const std::int64_t kept = c.segment_size(seq, layer, h);
  std::vector<std::vector<double>> K, V;
  std::vector<std::int32_t> P;
  for (std::int64_t j = 0; j < kept; ++j) {
    std::vector<double> kr(static_cast<std::size_t>(D)), vr(static_cast<std::size_t>(D));
    for (std::int64_t d = 0; d < D; ++d) {
      kr[static_cast<std::size_t>(d)] = to_float(c.segment_keys(seq, layer, h)[j * D + d]);
      vr[static_cast<std::size_t>(d)] = to_float(c.segment_values(seq, layer, h)[j * D + d]);
    }
    K.push_back(kr);
    V.push_back(vr);
    P.push_back(c.segment_positions(seq, layer, h)[j]);
  }
  for (std::int64_t t = 0; t < n; ++t) {
    std::vector<double> kr(static_cast<std::size_t>(D)), vr(static_cast<std::size_t>(D));
    for (std::int64_t d = 0; d < D; ++d) {
      kr[static_cast<std::size_t>(d)] = to_float(from_float<Half>(ch.k[static_cast<std::size_t>((t * s.kv_heads + h) * D + d)]));
      vr[static_cast<std::size_t>(d)] = to_float(from_float<Half>(ch.v[static_cast<std::size_t>((t * s.kv_heads + h) * D + d)]));
    }
    K.push_back(kr);
    V.push_back(vr);
    P.push_back(static_cast<std::int32_t>(len + t));
  }
  Reference r;
  r.out.assign(static_cast<std::size_t>(n * G * D), 0.0);
  r.pbar.resize(static_cast<std::size_t>(n));
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t vis = kept + t + 1;
    for (std::int64_t g = 0; g < G; ++g) {
      const float* q = ch.q.data() + (t * s.q_heads + h * G + g) * D;
      std::vector<double> sc(static_cast<std::size_t>(vis));
      double m = -INFINITY;
      for (std::int64_t j = 0; j < vis; ++j) {
        double a = 0;
        for (std::int64_t d = 0; d < D; ++d) a += q[d] * K[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)];
        sc[static_cast<std::size_t>(j)] = a * scale;
        m = std::max(m, sc[static_cast<std::size_t>(j)]);
      }
      double l = 0;
      for (double& x : sc) l += (x = std::exp(x - m));
      for (std::int64_t j = 0; j < vis; ++j) {
        const double p = sc[static_cast<std::size_t>(j)] / l;
        r.pbar[static_cast<std::size_t>(t)][P[static_cast<std::size_t>(j)]] += p / static_cast<double>(G);
        for (std::int64_t d = 0; d < D; ++d)
          r.out[static_cast<std::size_t>((t * G + g) * D + d)] += p * V[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)];
      }
    }
  }
  return r;
}

std::unique_ptr<cache::KvCache> make(const std::string& spec, const cache::CacheShape& s) {
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  const Status st = memattn_test::make_kv_cache(spec, s, Executor{}, &c, &err);
  INFO(spec << ": " << err);
  REQUIRE(st == Status::kSuccess);
  return c;
}

// Drives a cache with a prefill chunk then decode steps; checks outputs vs the fp64 reference over
// the kept tokens, and the invariants after each chunk. `state_check` compares H2O's acc.
template <class Policy>
void drive(const std::string& spec, std::int64_t prefill, std::int64_t steps, bool h2o_state_check) {
  const auto s = small_shape();
  auto base = make(spec, s);
  auto* c = dynamic_cast<cpu::EvictKvCache<Policy>*>(base.get());
  REQUIRE(c != nullptr);
  const std::int64_t D = s.head_dim, G = s.q_heads / s.kv_heads;
  std::map<std::int32_t, double> acc[3][2];  // fp64 H2O accumulation per (layer, head) by position
  std::int64_t len = 0;
  std::uint32_t seed = 1000;
  bool unordered = false;  // hole filling ran: some segment is not chronological
  for (std::int64_t step = 0; step <= steps; ++step) {
    const std::int64_t n = step == 0 ? prefill : 1 + (step % 7 == 0 ? 2 : 0);  // a few multi-token chunks
    for (int layer = 0; layer < s.layers; ++layer) {
      Chunk ch = random_chunk(s, n, seed += 3);
      std::vector<Reference> refs;
      for (int h = 0; h < s.kv_heads; ++h) refs.push_back(reference(*c, s, 0, layer, h, ch, n, len));
      auto q = make_view<3>(static_cast<const float*>(ch.q.data()), {n, s.q_heads, D});
      auto k = make_view<3>(static_cast<const float*>(ch.k.data()), {n, s.kv_heads, D});
      auto v = make_view<3>(static_cast<const float*>(ch.v.data()), {n, s.kv_heads, D});
      auto o = make_view<3>(ch.out.data(), {n, s.q_heads, D});
      REQUIRE(c->attend(0, layer, q, k, v, o) == Status::kSuccess);
      for (int h = 0; h < s.kv_heads; ++h) {
        for (std::int64_t t = 0; t < n; ++t)
          for (std::int64_t g = 0; g < G; ++g)
            for (std::int64_t d = 0; d < D; ++d) {
              const double want = refs[static_cast<std::size_t>(h)].out[static_cast<std::size_t>((t * G + g) * D + d)];
              const double got = ch.out[static_cast<std::size_t>((t * s.q_heads + h * G + g) * D + d)];
              REQUIRE(std::abs(got - want) <= 2e-5 + 2e-5 * std::abs(want));
            }
        for (const auto& pb : refs[static_cast<std::size_t>(h)].pbar)
          for (const auto& kv : pb) acc[layer][h][kv.first] += kv.second;
      }
    }
    REQUIRE(c->end_chunk(0, cache::ChunkSignals{}) == Status::kSuccess);
    len += n;
    REQUIRE(c->tokens(0) == len);
    const evict::Protection pr = Policy::protection(c->params());
    for (int layer = 0; layer < s.layers; ++layer) {
      const std::int64_t C = c->budget(layer, len);
      for (int h = 0; h < s.kv_heads; ++h) {
        const std::int64_t N = c->segment_size(0, layer, h);
        const std::int32_t* pos = c->segment_positions(0, layer, h);
        if (Policy::should_compact(c->params(), len, C)) {
          // compaction ran at this chunk end: exact budget
        }
        REQUIRE(N <= len);
        REQUIRE(!Policy::should_compact(c->params(), N, C));
        if (len >= C && !std::is_same<typename Policy::trigger_type, evict::EveryN>::value) REQUIRE(N == C);
        std::vector<std::int32_t> sorted(pos, pos + N);
        std::sort(sorted.begin(), sorted.end());
        for (std::int64_t j = 1; j < N; ++j) REQUIRE(sorted[static_cast<std::size_t>(j)] > sorted[static_cast<std::size_t>(j - 1)]);
        const bool chronological = std::equal(sorted.begin(), sorted.end(), pos);
        if (!cpu::EvictKvCache<Policy>::kCanFillHoles) REQUIRE(chronological);
        unordered = unordered || !chronological;
        // protected positions are present
        std::int64_t found = 0, want = 0;
        for (std::int32_t p = 0; p < len; ++p) {
          if (!evict::is_protected(p, static_cast<std::int32_t>(len - 1), pr)) continue;
          ++want;
          found += std::binary_search(sorted.begin(), sorted.end(), p) ? 1 : 0;
        }
        REQUIRE(found == want);
        if (h2o_state_check) {
          const float* st = reinterpret_cast<const float*>(c->segment_state(0, layer, h));
          for (std::int64_t j = 0; j < N; ++j) {
            const double w = acc[layer][h][pos[j]];
            REQUIRE(std::abs(st[j] - w) <= 1e-4 * w + 1e-6);
          }
        }
      }
    }
  }
  REQUIRE(c->bytes() < cache::full_fp16_bytes(s, len));
  CHECK(unordered == cpu::EvictKvCache<Policy>::kCanFillHoles);  // the hole-filling path ran
}

}  // namespace

TEST_CASE("hole filling (slot replacement, spec 5.5) keeps the same tokens as ordered compaction", "[evict]") {
  // Two H2O caches, one compacting in order, one filling evicted slots from the tail, fed the same
  // chunks (decode steps and multi-token chunks): the same positions per segment after every chunk
  // end, outputs equal up to the summation order of the attention, the same bytes.
  const auto s = small_shape();
  using Cache = cpu::EvictKvCache<evict::H2O>;
  STATIC_REQUIRE(Cache::kCanFillHoles);
  std::unique_ptr<Cache> ordered, filled;
  Cache::Config cfg;
  cfg.policy = evict::h2o_params(24, 6);
  cfg.ordered = true;
  REQUIRE(Cache::create(s, cfg, "h2o", Executor{}, &ordered) == Status::kSuccess);
  cfg.ordered = false;
  REQUIRE(Cache::create(s, cfg, "h2o", Executor{}, &filled) == Status::kSuccess);
  const std::int64_t D = s.head_dim;
  std::uint32_t seed = 77;
  std::int64_t moved_order = 0;
  for (int step = 0; step < 80; ++step) {
    const std::int64_t n = step == 0 ? 30 : (step % 9 == 0 ? 4 : 1);
    for (int layer = 0; layer < s.layers; ++layer) {
      Chunk a = random_chunk(s, n, seed += 3), b = a;
      auto q = make_view<3>(static_cast<const float*>(a.q.data()), {n, s.q_heads, D});
      auto k = make_view<3>(static_cast<const float*>(a.k.data()), {n, s.kv_heads, D});
      auto v = make_view<3>(static_cast<const float*>(a.v.data()), {n, s.kv_heads, D});
      REQUIRE(ordered->attend(0, layer, q, k, v, make_view<3>(a.out.data(), {n, s.q_heads, D})) == Status::kSuccess);
      REQUIRE(filled->attend(0, layer, q, k, v, make_view<3>(b.out.data(), {n, s.q_heads, D})) == Status::kSuccess);
      for (std::size_t i = 0; i < a.out.size(); ++i) REQUIRE(std::abs(a.out[i] - b.out[i]) <= 1e-5f + 1e-5f * std::abs(a.out[i]));
    }
    REQUIRE(ordered->end_chunk(0, {}) == Status::kSuccess);
    REQUIRE(filled->end_chunk(0, {}) == Status::kSuccess);
    CHECK(ordered->bytes() == filled->bytes());
    for (int layer = 0; layer < s.layers; ++layer)
      for (int h = 0; h < s.kv_heads; ++h) {
        const std::int64_t N = ordered->segment_size(0, layer, h);
        REQUIRE(filled->segment_size(0, layer, h) == N);
        const std::int32_t* po = ordered->segment_positions(0, layer, h);
        const std::int32_t* pf = filled->segment_positions(0, layer, h);
        std::vector<std::int32_t> f(pf, pf + N);
        std::sort(f.begin(), f.end());
        REQUIRE(std::equal(f.begin(), f.end(), po));  // the same kept set (po is chronological)
        // rows travel with their positions: K of position p is the same in both caches
        for (std::int64_t j = 0; j < N; ++j) {
          const std::int64_t i = std::lower_bound(po, po + N, pf[j]) - po;
          REQUIRE(std::memcmp(filled->segment_keys(0, layer, h) + j * D, ordered->segment_keys(0, layer, h) + i * D,
                              static_cast<std::size_t>(D) * sizeof(Half)) == 0);
          moved_order += i != j;
        }
      }
  }
  CHECK(moved_order > 0);  // the slot orders did diverge
}

TEST_CASE("h2o: exact budget, outputs over kept tokens, acc == fp64 accumulated probabilities", "[evict]") {
  drive<evict::H2O>("h2o:budget=24,recent=6", 40, 60, true);
  drive<evict::H2O>("h2o:budget=20", 8, 50, true);  // grows into the budget during decode
}

TEST_CASE("streaming: sinks + recent window only", "[evict]") {
  drive<evict::StreamingLLM>("streaming:sink=4,window=12", 30, 40, false);
  const auto s = small_shape();
  auto base = make("streaming:sink=2,window=5", s);
  auto* c = dynamic_cast<cpu::EvictKvCache<evict::StreamingLLM>*>(base.get());
  REQUIRE(c != nullptr);
  Chunk ch = random_chunk(s, 20, 7);
  for (int l = 0; l < s.layers; ++l)
    REQUIRE(c->attend(0, l, make_view<3>(static_cast<const float*>(ch.q.data()), {20, s.q_heads, s.head_dim}),
                      make_view<3>(static_cast<const float*>(ch.k.data()), {20, s.kv_heads, s.head_dim}),
                      make_view<3>(static_cast<const float*>(ch.v.data()), {20, s.kv_heads, s.head_dim}),
                      make_view<3>(ch.out.data(), {20, s.q_heads, s.head_dim})) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  const std::vector<std::int32_t> want = {0, 1, 15, 16, 17, 18, 19};
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h)
      CHECK(std::vector<std::int32_t>(c->segment_positions(0, l, h), c->segment_positions(0, l, h) + 7) == want);
}

TEST_CASE("scissorhands, knorm, snapkv: budgets, protection, outputs over kept tokens", "[evict]") {
  drive<evict::Scissorhands>("scissorhands:budget=24,history=8,recent=8,drop=5", 40, 60, false);
  drive<evict::KNormPolicy>("knorm:budget=16,sink=2,recent=2", 30, 40, false);
  drive<evict::SnapKV>("snapkv:budget=24,window=6,kernel=3", 40, 40, false);
  drive<evict::SnapKV>("snapkv:budget=24,window=6,kernel=5,pool=0,pad=0,gqa=1", 50, 20, false);
}

TEST_CASE("pyramidkv: per-layer budgets sum to layers x budget and save real bytes", "[evict]") {
  drive<evict::PyramidKV>("pyramidkv:budget=40,window=8,kernel=5", 120, 30, false);
  const auto s = small_shape();
  auto base = make("pyramidkv:budget=40,window=8", s);
  auto* c = dynamic_cast<cpu::EvictKvCache<evict::PyramidKV>*>(base.get());
  Chunk ch = random_chunk(s, 200, 11);
  for (int l = 0; l < s.layers; ++l)
    REQUIRE(c->attend(0, l, make_view<3>(static_cast<const float*>(ch.q.data()), {200, s.q_heads, s.head_dim}),
                      make_view<3>(static_cast<const float*>(ch.k.data()), {200, s.kv_heads, s.head_dim}),
                      make_view<3>(static_cast<const float*>(ch.v.data()), {200, s.kv_heads, s.head_dim}),
                      make_view<3>(ch.out.data(), {200, s.q_heads, s.head_dim})) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  std::int64_t total = 0;
  for (int l = 0; l < s.layers; ++l) {
    total += c->segment_size(0, l, 0);
    CHECK(c->segment_size(0, l, 0) == c->budget(l, 200));
    if (l > 0) CHECK(c->segment_size(0, l, 0) < c->segment_size(0, l - 1, 0));
  }
  CHECK(total == 3 * 40);
}

TEST_CASE("evicting caches: bytes shrink, reset frees, bad specs give a Status and a message", "[evict]") {
  const auto s = small_shape();
  auto full = make("full", s);
  auto h2o = make("h2o:budget=32", s);
  for (auto* c : {full.get(), h2o.get()}) {
    Chunk ch = random_chunk(s, 300, 21);
    for (int l = 0; l < s.layers; ++l)
      REQUIRE(c->attend(1, l, make_view<3>(static_cast<const float*>(ch.q.data()), {300, s.q_heads, s.head_dim}),
                        make_view<3>(static_cast<const float*>(ch.k.data()), {300, s.kv_heads, s.head_dim}),
                        make_view<3>(static_cast<const float*>(ch.v.data()), {300, s.kv_heads, s.head_dim}),
                        make_view<3>(ch.out.data(), {300, s.q_heads, s.head_dim})) == Status::kSuccess);
    REQUIRE(c->end_chunk(1, {}) == Status::kSuccess);
  }
  CHECK(h2o->bytes() * 4 < full->bytes());
  CHECK(h2o->peak_bytes() >= h2o->bytes());
  REQUIRE(h2o->reset(1) == Status::kSuccess);
  CHECK(h2o->bytes() == 0);
  CHECK(std::string(h2o->spec()) == "h2o:budget=32,recent=-1,gamma=1,gqa=0");

  std::unique_ptr<cache::KvCache> c;
  std::string err;
  CHECK(memattn_test::make_kv_cache("h2o:budget=1000", s, Executor{}, &c, &err) == Status::kErrorCapacityExceeded);
  CHECK(err.find("larger than the cache capacity") != std::string::npos);
  CHECK(memattn_test::make_kv_cache("h2o:budget=10,recent=11", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("snapkv:budget=16,window=32", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("h2o:budget=0", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("snapkv:budget=64,kernel=4", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("streaming:budget=64", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(c == nullptr);
}

TEST_CASE("batch invariance (P-5, RG-04): a sequence's keep set and outputs do not depend on other sequences",
          "[evict]") {
  const auto s = small_shape();
  for (const char* spec : {"h2o:budget=20,recent=4", "snapkv:budget=20,window=4,kernel=3", "scissorhands:budget=20,history=4,recent=4,drop=3"}) {
    auto alone = make(spec, s);
    auto batched = make(spec, s);
    std::uint32_t seed = 77;
    for (int step = 0; step < 40; ++step) {
      const std::int64_t n = step == 0 ? 30 : 1;
      for (int l = 0; l < s.layers; ++l) {
        Chunk a = random_chunk(s, n, seed += 3), b = random_chunk(s, n + 1, seed += 3), a2 = a;
        auto run = [&](cache::KvCache* c, int seq, Chunk& ch, std::int64_t m) {
          REQUIRE(c->attend(seq, l, make_view<3>(static_cast<const float*>(ch.q.data()), {m, s.q_heads, s.head_dim}),
                            make_view<3>(static_cast<const float*>(ch.k.data()), {m, s.kv_heads, s.head_dim}),
                            make_view<3>(static_cast<const float*>(ch.v.data()), {m, s.kv_heads, s.head_dim}),
                            make_view<3>(ch.out.data(), {m, s.q_heads, s.head_dim})) == Status::kSuccess);
        };
        run(alone.get(), 0, a, n);
        run(batched.get(), 1, b, n + 1);
        run(batched.get(), 0, a2, n);
        REQUIRE(a.out == a2.out);
      }
      REQUIRE(batched->end_chunk(1, {}) == Status::kSuccess);
      REQUIRE(batched->end_chunk(0, {}) == Status::kSuccess);
      REQUIRE(alone->end_chunk(0, {}) == Status::kSuccess);
    }
  }
}

TEST_CASE("once=1 (prefill-only, E1): compaction only at the prompt_end chunk, then append without eviction",
          "[evict]") {
  const auto s = small_shape();
  auto attend_all = [&](cache::KvCache* c, int seq, std::int64_t n, std::uint32_t seed) {
    Chunk ch = random_chunk(s, n, seed);
    for (int l = 0; l < s.layers; ++l)
      REQUIRE(c->attend(seq, l, make_view<3>(static_cast<const float*>(ch.q.data()), {n, s.q_heads, s.head_dim}),
                        make_view<3>(static_cast<const float*>(ch.k.data()), {n, s.kv_heads, s.head_dim}),
                        make_view<3>(static_cast<const float*>(ch.v.data()), {n, s.kv_heads, s.head_dim}),
                        make_view<3>(ch.out.data(), {n, s.q_heads, s.head_dim})) == Status::kSuccess);
    return ch;
  };
  for (const char* spec : {"snapkv:budget=16,window=4,kernel=3,once=1", "h2o:budget=16,once=1"}) {
    INFO(spec);
    auto base = make(spec, s);
    CHECK(std::string(base->spec()).find(",once=1") != std::string::npos);
    CHECK((base->wanted_signals() & cache::kSignalPromptEnd) != 0);
    cache::ChunkSignals plain, end;
    end.prompt_end = true;
    // a 40-token prompt in 5 chunks: nothing is evicted before its last chunk
    for (int c = 0; c < 4; ++c) {
      attend_all(base.get(), 0, 8, 100u + static_cast<std::uint32_t>(c));
      REQUIRE(base->end_chunk(0, plain) == Status::kSuccess);
    }
    auto held = [&](int l, int h) -> std::int64_t {
      if (auto* e = dynamic_cast<cpu::EvictKvCache<evict::SnapKV>*>(base.get())) return e->segment_size(0, l, h);
      if (auto* e = dynamic_cast<cpu::EvictKvCache<evict::H2O>*>(base.get())) return e->segment_size(0, l, h);
      return -1;
    };
    for (int l = 0; l < s.layers; ++l) CHECK(held(l, 1) == 32);
    attend_all(base.get(), 0, 8, 200u);
    REQUIRE(base->end_chunk(0, end) == Status::kSuccess);
    for (int l = 0; l < s.layers; ++l) CHECK(held(l, 1) == 16);  // compressed to the budget at the prompt's end
    // 12 decode steps (one marked prompt_end again: a sequence compresses once) grow the cache
    for (int t = 0; t < 12; ++t) {
      attend_all(base.get(), 0, 1, 300u + static_cast<std::uint32_t>(t));
      REQUIRE(base->end_chunk(0, t == 5 ? end : plain) == Status::kSuccess);
    }
    CHECK(base->tokens(0) == 52);
    for (int l = 0; l < s.layers; ++l)
      for (int h = 0; h < s.kv_heads; ++h) CHECK(held(l, h) == 16 + 12);
    // reset: the next prompt compresses again; without prompt_end nothing is ever evicted
    REQUIRE(base->reset(0) == Status::kSuccess);
    attend_all(base.get(), 0, 40, 400u);
    REQUIRE(base->end_chunk(0, plain) == Status::kSuccess);
    for (int l = 0; l < s.layers; ++l) CHECK(held(l, 0) == 40);
    attend_all(base.get(), 0, 1, 401u);
    REQUIRE(base->end_chunk(0, end) == Status::kSuccess);
    for (int l = 0; l < s.layers; ++l) CHECK(held(l, 0) == 16);
  }
  // without once, prompt_end changes nothing; compositions reject once=1
  auto h2o = make("h2o:budget=16", s);
  CHECK(std::string(h2o->spec()).find("once") == std::string::npos);
  CHECK((h2o->wanted_signals() & cache::kSignalPromptEnd) == 0);
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  CHECK(memattn_test::make_kv_cache("h2o:budget=16,once=1+kivi:kbits=4,vbits=4", s, Executor{}, &c, &err) ==
        Status::kErrorNotSupported);
  CHECK(err.find("once=1") != std::string::npos);
  CHECK(memattn_test::make_kv_cache("h2o:budget=16,once=2", s, Executor{}, &c, &err) != Status::kSuccess);
}
