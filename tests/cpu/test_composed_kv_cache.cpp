// The composed evict + prune + quant cache (issue 7): ThinK two-segment decode against fp64 dense
// attention whose old keys have the pruned channels zeroed (P-12), ThinK's channel choice against
// an independent fp64 computation, real byte savings (RG-08), compositions against fp64 attention
// over the dequantised/pruned cache contents, exact eviction budgets, the --kv '+' grammar.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/composed_oracle.hpp"
#include "common/kv_factory.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/composed_kv_cache.hpp"

using namespace memattn;
using namespace memattn_test::composed;

namespace {

cache::CacheShape shape_of(int D, int max_tokens = 400) {
  cache::CacheShape s;
  s.layers = 2;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = D;
  s.max_tokens = max_tokens;
  s.max_sequences = 2;
  return s;
}

std::unique_ptr<cache::KvCache> make(const std::string& spec, const cache::CacheShape& s, std::string* err = nullptr) {
  std::unique_ptr<cache::KvCache> c;
  std::string e;
  const Status st = memattn_test::make_kv_cache(spec, s, Executor{}, &c, &e);
  if (err) *err = e;
  if (st != Status::kSuccess) c.reset();
  return c;
}

}  // namespace

TEST_CASE("ThinK two-segment decode = dense attention with the pruned channels zeroed (P-12)", "[think]") {
  const auto s = shape_of(16);
  using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::NoQuant>;
  Cache::Config cfg;
  cfg.prune.prune = 0.5f;
  cfg.prune.window = 8;
  cfg.prune.recent = 8;
  std::unique_ptr<Cache> c;
  REQUIRE(Cache::create(s, cfg, "think", Executor{}, &c) == Status::kSuccess);
  REQUIRE(c->d_keep() == 8);
  const std::int64_t D = s.head_dim, G = 2;
  // all tokens of layer 0, fp16-rounded, [pos][h][D]; queries of the first chunk (for the channel check)
  std::vector<std::vector<double>> K, V;
  std::vector<int> chunks = {20, 1, 1, 1, 5, 1, 12, 1};
  std::uint32_t sd = 5;
  bool checked_channels = false;
  for (int n : chunks) {
    Chunk ch = random_chunk(s, n, sd += 10);
    const std::int64_t N0 = static_cast<std::int64_t>(K.size());
    // old tokens (pruned) before this chunk, per head
    REQUIRE(attend(*c, 0, 0, s, ch, n) == Status::kSuccess);
    Chunk other = random_chunk(s, n, sd + 5);
    REQUIRE(attend(*c, 0, 1, s, other, n) == Status::kSuccess);
    for (int t = 0; t < n; ++t) {
      std::vector<double> kr, vr;
      for (std::int64_t x = 0; x < 2 * D; ++x) {
        kr.push_back(f16(ch.k[static_cast<std::size_t>(t * 2 * D + x)]));
        vr.push_back(f16(ch.v[static_cast<std::size_t>(t * 2 * D + x)]));
      }
      K.push_back(kr);
      V.push_back(vr);
    }
    double worst = 0;
    for (int h = 0; h < 2; ++h) {
      REQUIRE(c->old_tokens(0, 0, h) == (N0 > 8 ? N0 - 8 : 0));  // the newest r = 8 stay full width, the chunk is full width
      worst = memattn_test::worse(worst, chunk_error(ch.q, ch.out, zeroed_pruned(*c, h, N0 + n, K, V, D), N0, n, h, G, D, 1e-5));
    }
    CHECK(worst <= 2e-4);
    REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
    if (!checked_channels) {
      // the first chunk (20 > r) chose the channels: qn over its last w = 8 queries (GQA mean),
      // kn over its 20 fp16 keys, keep the 8 largest, ties to the lower index
      checked_channels = true;
      for (int h = 0; h < 2; ++h) {
        std::vector<std::pair<double, int>> score;
        for (std::int64_t x = 0; x < D; ++x) {
          double qn = 0, kn = 0;
          for (int t = 12; t < 20; ++t)
            for (std::int64_t g = 0; g < G; ++g) {
              const double qv = ch.q[static_cast<std::size_t>((t * 4 + h * G + g) * D + x)];
              qn += qv * qv;
            }
          for (int j = 0; j < 20; ++j) kn += K[static_cast<std::size_t>(j)][static_cast<std::size_t>(h * D + x)] * K[static_cast<std::size_t>(j)][static_cast<std::size_t>(h * D + x)];
          score.push_back({-(qn / 16) * (kn / 20), static_cast<int>(x)});
        }
        std::sort(score.begin(), score.end());
        std::vector<int> want;
        for (int i = 0; i < 8; ++i) want.push_back(score[static_cast<std::size_t>(i)].second);
        std::sort(want.begin(), want.end());
        CHECK(c->channels(0, 0, h) == want);
      }
    }
  }
}

using ThinKCache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::NoQuant>;

TEST_CASE("ThinK saves real bytes: >= 95% of the nominal key saving (RG-08), reference mode prunes only once",
          "[think]") {
  auto s = shape_of(64, 600);
  auto dense = make("think:prune=0", s);
  auto half = make("think:prune=0.5", s);
  auto ref = make("think:prune=0.5,migrate=0", s);
  REQUIRE(dense);
  REQUIRE(half);
  REQUIRE(ref);
  std::uint32_t sd = 1;
  for (int step = 0; step < 20; ++step) {
    const int n = step == 0 ? 64 : 16;
    for (auto* c : {dense.get(), half.get(), ref.get()}) {
      for (int l = 0; l < s.layers; ++l) {
        Chunk ch = random_chunk(s, n, sd + 3 * static_cast<std::uint32_t>(l));
        REQUIRE(attend(*c, 0, l, s, ch, n) == Status::kSuccess);
      }
      REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
    }
    sd += 11;
  }
  const std::int64_t N = half->tokens(0), old = N - 32;
  const double nominal = static_cast<double>(old) * (64 - 32) * 2 * s.layers * s.kv_heads;
  const double saved = static_cast<double>(dense->bytes()) - static_cast<double>(half->bytes());
  INFO("tokens " << N << " dense " << dense->bytes() << " think " << half->bytes());
  CHECK(saved >= 0.95 * nominal);
  CHECK(saved <= 1.05 * nominal + 4096);
  CHECK(half->peak_bytes() >= half->bytes());
  // reference mode: only the first 64 - 32 tokens are pruned
  const double saved_ref = static_cast<double>(dense->bytes()) - static_cast<double>(ref->bytes());
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h) CHECK(static_cast<ThinKCache*>(ref.get())->old_tokens(0, l, h) == 32);
  CHECK(saved_ref < 0.6 * nominal);  // 32 of ~340 tokens pruned (~0.1), plus capacity granules of 4 regions
  CHECK(ref->bytes() > half->bytes());
  CHECK(std::string(half->spec()) == "think:prune=0.5,window=32,recent=32,granularity=1,migrate=1");
}

TEST_CASE("composed h2o+think+kivi decode = fp64 attention over the dequantised pruned cache", "[compose]") {
  const auto s = shape_of(32);
  using Cache = cpu::ComposedKvCache<evict::H2O, prune::ThinK, quant::KiviQuant>;
  Cache::Config cfg;
  cfg.evict = evict::h2o_params(96, 24);
  cfg.prune.prune = 0.4f;
  cfg.prune.window = 8;
  cfg.prune.recent = 16;
  cfg.quant.bits_k = 4;
  cfg.quant.bits_v = 2;
  cfg.quant.group = 32;
  cfg.quant.residual = 0;
  std::unique_ptr<Cache> c;
  REQUIRE(Cache::create(s, cfg, "h2o+think+kivi", Executor{}, &c) == Status::kSuccess);
  std::vector<int> chunks = {70, 1, 1, 40, 1, 1, 1, 33, 1, 1, 20, 1};
  check_against_contents(*c, s, chunks, 3, 2e-5);
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h) {
      CHECK(c->segment_size(0, l, h) == 96);  // exact budget
      CHECK(c->quantized_tokens(0, l, h) > 0);
      CHECK(c->tail_tokens(0, l, h) == 16);
      const std::int32_t* pos = c->segment_positions(0, l, h);
      for (std::int64_t j = 1; j < 96; ++j) CHECK(pos[j] > pos[j - 1]);  // chronological
    }
}

// check_against_contents follows the cache's own contents, so it cannot see a compaction that
// keeps the wrong codes. This pins them: a token that was already quantised keeps its dequantised
// key and value bit for bit through every later eviction (codes move inside their block, never
// requantised), for 2/4/8-bit keys at a pruned width (ThinK, 19 of 32 channels) and full width.
TEMPLATE_TEST_CASE("eviction from quantised blocks keeps every kept token's codes (by position)", "[compose]", prune::ThinK,
                   prune::NoPrune) {
  const auto s = shape_of(32);
  using Cache = cpu::ComposedKvCache<evict::H2O, TestType, quant::KiviQuant>;
  for (int bits : {2, 4, 8}) {
    INFO("bits_k " << bits);
    typename Cache::Config cfg;
    cfg.evict = evict::h2o_params(96, 8);
    if constexpr (std::is_same<TestType, prune::ThinK>::value) {
      cfg.prune.prune = 0.4f;
      cfg.prune.window = 8;
      cfg.prune.recent = 8;
    }
    cfg.quant.bits_k = bits;
    cfg.quant.bits_v = 2;
    cfg.quant.group = 32;
    cfg.quant.residual = 0;
    std::unique_ptr<Cache> c;
    REQUIRE(Cache::create(s, cfg, "h2o+kivi", Executor{}, &c) == Status::kSuccess);
    std::map<std::int32_t, std::vector<float>> seen[2][2];  // [layer][head]: position -> key ++ value
    std::int64_t compared = 0, moved = 0;
    std::uint32_t seed = 50;
    for (int n : {90, 1, 1, 1, 1, 40, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
      for (int layer = 0; layer < s.layers; ++layer) {
        Chunk ch = random_chunk(s, n, seed += 10);
        REQUIRE(attend(*c, 0, layer, s, ch, n) == Status::kSuccess);
      }
      REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
      for (int layer = 0; layer < s.layers; ++layer)
        for (int h = 0; h < s.kv_heads; ++h) {
          auto& prev = seen[layer][h];
          std::map<std::int32_t, std::vector<float>> now;
          const std::int32_t* pos = c->segment_positions(0, layer, h);
          for (std::int64_t j = 0; j < c->quantized_tokens(0, layer, h); ++j) {
            std::vector<float> kv(64);
            const std::int64_t w = c->key(0, layer, h, j, kv.data());
            c->value(0, layer, h, j, kv.data() + w);
            kv.resize(static_cast<std::size_t>(w + 32));
            const auto it = prev.find(pos[j]);
            if (it != prev.end()) {
              ++compared;
              REQUIRE(std::memcmp(it->second.data(), kv.data(), kv.size() * sizeof(float)) == 0);
              moved += std::distance(prev.begin(), it) != j;  // an earlier quantised token was evicted
            }
            now[pos[j]] = kv;
          }
          prev.swap(now);
        }
    }
    CHECK(compared > 1000);
    CHECK(moved > 20);
  }
}

TEST_CASE("composed knorm+kivi, scissorhands+think, think+kivi, streaming+think+kivi decode = fp64 over contents",
          "[compose]") {
  const auto s = shape_of(32);
  {
    using Cache = cpu::ComposedKvCache<evict::KNormPolicy, prune::NoPrune, quant::KiviQuant>;
    Cache::Config cfg;
    cfg.evict = evict::knorm_params(80);
    cfg.quant.residual = 32;
    std::unique_ptr<Cache> c;
    REQUIRE(Cache::create(s, cfg, "knorm+kivi", Executor{}, &c) == Status::kSuccess);
    check_against_contents(*c, s, {50, 1, 60, 1, 1, 40, 1}, 7, 2e-5);
    CHECK(c->segment_size(0, 0, 0) == 80);
  }
  {
    using Cache = cpu::ComposedKvCache<evict::Scissorhands, prune::ThinK, quant::NoQuant>;
    Cache::Config cfg;
    cfg.evict = evict::scissorhands_params(64);
    cfg.evict.trigger.m = 8;
    cfg.evict.selector.n_recent = 8;
    cfg.prune.recent = 8;
    cfg.prune.window = 4;
    std::unique_ptr<Cache> c;
    REQUIRE(Cache::create(s, cfg, "scissorhands+think", Executor{}, &c) == Status::kSuccess);
    check_against_contents(*c, s, {40, 1, 1, 30, 1, 1, 1, 9, 1}, 9, 2e-5);
  }
  {
    auto c = make("think:prune=0.5,recent=8+kivi:kbits=2,vbits=2,residual=0", s);
    REQUIRE(c);
    using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::KiviQuant>;
    auto* cc = dynamic_cast<Cache*>(c.get());
    REQUIRE(cc != nullptr);
    check_against_contents(*cc, s, {45, 1, 1, 40, 1}, 11, 2e-5);
    CHECK(cc->quantized_tokens(0, 0, 0) == 64);  // 88 - 8 full-width = 80 old -> 2 blocks + 16 staging
    CHECK(cc->old_tokens(0, 0, 0) == 16);
  }
  {
    auto c = make("streaming:sink=4,window=60+think+kivi:kbits=4,vbits=4,residual=0", s);
    REQUIRE(c);
    using Cache = cpu::ComposedKvCache<evict::StreamingLLM, prune::ThinK, quant::KiviQuant>;
    auto* cc = dynamic_cast<Cache*>(c.get());
    REQUIRE(cc != nullptr);
    check_against_contents(*cc, s, {70, 1, 1, 40, 1}, 13, 2e-5);
    CHECK(cc->segment_size(0, 1, 1) == 64);
  }
}

TEST_CASE("quantised keys and values stay within half a quantisation step of the stored fp16", "[compose]") {
  const auto s = shape_of(32);
  using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::NoPrune, quant::KiviQuant>;
  Cache::Config cfg;
  cfg.quant.bits_k = 4;
  cfg.quant.bits_v = 4;
  cfg.quant.residual = 0;
  std::unique_ptr<Cache> c;
  REQUIRE(Cache::create(s, cfg, "kivi", Executor{}, &c) == Status::kSuccess);
  Chunk ch = random_chunk(s, 64, 21);
  Chunk ch2 = random_chunk(s, 64, 22);
  REQUIRE(attend(*c, 0, 0, s, ch, 64) == Status::kSuccess);
  REQUIRE(attend(*c, 0, 1, s, ch2, 64) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  REQUIRE(c->quantized_tokens(0, 0, 1) == 64);
  std::vector<float> buf(32);
  double worst_k = 0, worst_v = 0, kmax = 0, vmax = 0;
  for (std::int64_t j = 0; j < 64; ++j) {
    c->key(0, 0, 1, j, buf.data());
    for (int x = 0; x < 32; ++x) {
      const double want = f16(ch.k[static_cast<std::size_t>((j * 2 + 1) * 32 + x)]);
      worst_k = memattn_test::worse(worst_k, std::abs(buf[static_cast<std::size_t>(x)] - want));
      kmax = std::max(kmax, std::abs(want));
    }
    c->value(0, 0, 1, j, buf.data());
    for (int x = 0; x < 32; ++x) {
      const double want = f16(ch.v[static_cast<std::size_t>((j * 2 + 1) * 32 + x)]);
      worst_v = memattn_test::worse(worst_v, std::abs(buf[static_cast<std::size_t>(x)] - want));
      vmax = std::max(vmax, std::abs(want));
    }
  }
  CHECK(worst_k <= 2 * kmax / 15 / 2 * 1.01);
  CHECK(worst_v <= 2 * vmax / 15 / 2 * 1.01);
  CHECK(worst_k > 0);
}

TEST_CASE("--kv compositions: accepted, canonical, and invalid ones rejected with a message", "[compose]") {
  const auto s = shape_of(64);
  std::string err;
  auto c = make("h2o:budget=128+think:prune=0.4+kivi:kbits=4,vbits=2", s, &err);
  REQUIRE(c);
  CHECK(std::string(c->spec()) ==
        "h2o:budget=128,recent=-1,gamma=1,gqa=0+think:prune=0.4,window=32,recent=32,granularity=1,migrate=1+"
        "kivi:kbits=4,vbits=2,group=32,residual=128");
  CHECK(make("think:prune=0.4", s));
  CHECK(make("h2o:budget=64+think", s));
  CHECK(make("knorm:budget=64+kivi", s));
  CHECK(make("scissorhands:budget=96+think+kivi", s));
  CHECK(make("streaming+think", s));
  struct Bad {
    const char* spec;
    const char* says;
  };
  for (const Bad& b : {Bad{"h2o+knorm", "two eviction policies"}, Bad{"kivi+kivi", "two quantisers"},
                       Bad{"think+think", "two channel pruners"}, Bad{"think+h2o", "out of order"},
                       Bad{"kivi+think", "out of order"}, Bad{"full+think", "does not compose"},
                       Bad{"snapkv+think", "window eviction scorers"}, Bad{"think:prune=1.5", "must be in"},
                       Bad{"think:lambda=0.4", "has no parameter"}, Bad{"h2o:budget=1000+think", "capacity"},
                       Bad{"think+kivi:kbits=3", "kivi bits"}}) {
    INFO(b.spec);
    CHECK_FALSE(make(b.spec, s, &err));
    INFO(err);
    CHECK(err.find(b.says) != std::string::npos);
  }
}

TEST_CASE("composed cache: bad input leaves it unchanged", "[compose]") {
  const auto s = shape_of(16);
  auto c = make("h2o:budget=32+think", s);
  REQUIRE(c);
  Chunk ch = random_chunk(s, 4, 1);
  REQUIRE(attend(*c, 0, 0, s, ch, 4) == Status::kSuccess);
  const std::size_t b = c->bytes();
  Chunk bad = random_chunk(s, 4, 2);
  bad.k[5] = NAN;
  CHECK(attend(*c, 0, 1, s, bad, 4) == Status::kErrorNonFinite);
  bad = random_chunk(s, 4, 2);
  bad.q[7] = INFINITY;
  CHECK(attend(*c, 0, 1, s, bad, 4) == Status::kErrorNonFinite);
  CHECK(c->bytes() == b);
  CHECK(attend(*c, 0, 0, s, ch, 4) == Status::kErrorInvalidArgument);  // layer 0 already took the chunk
  CHECK(c->end_chunk(0, {}) == Status::kErrorInvalidArgument);          // layer 1 missing
  CHECK(attend(*c, 2, 0, s, ch, 4) == Status::kErrorInvalidArgument);
  Chunk ok = random_chunk(s, 4, 3);
  REQUIRE(attend(*c, 0, 1, s, ok, 4) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  CHECK(c->tokens(0) == 4);
  REQUIRE(c->reset(0) == Status::kSuccess);
  CHECK(c->tokens(0) == 0);
}

TEST_CASE("ThinK value extension (vprune): old values keep the channels with the largest window-output energy",
          "[think]") {
  const auto s = shape_of(16);
  using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::NoQuant>;
  Cache::Config cfg;
  cfg.prune.prune = 0.25f;
  cfg.prune.vprune = 0.5f;
  cfg.prune.window = 8;
  cfg.prune.recent = 8;
  std::unique_ptr<Cache> c;
  REQUIRE(Cache::create(s, cfg, "think", Executor{}, &c) == Status::kSuccess);
  REQUIRE(c->d_keep() == 12);
  REQUIRE(c->dv_keep() == 8);
  const std::int64_t D = s.head_dim, G = 2;
  std::vector<std::vector<double>> K, V;
  std::uint32_t sd = 7;
  bool checked = false;
  for (int n : {20, 1, 3, 1, 9, 1}) {
    Chunk ch = random_chunk(s, n, sd += 10);
    const std::int64_t N0 = static_cast<std::int64_t>(K.size());
    REQUIRE(attend(*c, 0, 0, s, ch, n) == Status::kSuccess);
    Chunk other = random_chunk(s, n, sd + 5);
    REQUIRE(attend(*c, 0, 1, s, other, n) == Status::kSuccess);
    for (int t = 0; t < n; ++t) {
      std::vector<double> kr, vr;
      for (std::int64_t x = 0; x < 2 * D; ++x) {
        kr.push_back(f16(ch.k[static_cast<std::size_t>(t * 2 * D + x)]));
        vr.push_back(f16(ch.v[static_cast<std::size_t>(t * 2 * D + x)]));
      }
      K.push_back(kr);
      V.push_back(vr);
    }
    double worst = 0;
    for (int h = 0; h < 2; ++h) {
      if (c->old_tokens(0, 0, h) > 0) REQUIRE(c->value_channels(0, 0, h).size() == 8u);
      const std::vector<Key> keys = zeroed_pruned(*c, h, N0 + n, K, V, D);
      for (std::int64_t j = 0; j < N0 + n; ++j) {
        float got[16];
        c->value(0, 0, h, j, got);  // inspection reads what the attention uses
        for (std::int64_t x = 0; x < D; ++x)
          CHECK(got[x] == static_cast<float>(keys[static_cast<std::size_t>(j)].v[static_cast<std::size_t>(x)]));
      }
      worst = memattn_test::worse(worst, chunk_error(ch.q, ch.out, keys, N0, n, h, G, D, 1e-3));
    }
    CHECK(worst <= 2e-4);
    REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
    if (!checked) {
      // chosen at the end of the first chunk: vscore[c] = sum over its last w = 8 tokens and the
      // group of out[c]^2 (the attention outputs the cache wrote), keep the 8 largest
      checked = true;
      for (int h = 0; h < 2; ++h) {
        std::vector<std::pair<double, int>> score;
        for (std::int64_t x = 0; x < D; ++x) {
          double e = 0;
          for (int t = 12; t < 20; ++t)
            for (std::int64_t g = 0; g < G; ++g) {
              const double o = ch.out[static_cast<std::size_t>((t * 4 + h * G + g) * D + x)];
              e += o * o;
            }
          score.push_back({-e, static_cast<int>(x)});
        }
        std::sort(score.begin(), score.end());
        std::vector<int> want;
        for (int i = 0; i < 8; ++i) want.push_back(score[static_cast<std::size_t>(i)].second);
        std::sort(want.begin(), want.end());
        CHECK(c->value_channels(0, 0, h) == want);
      }
    }
  }
}

TEST_CASE("ThinK vprune saves real value bytes; spec grammar and rejections", "[think]") {
  auto s = shape_of(64, 600);
  auto keys_only = make("think:prune=0.5", s);
  auto both = make("think:prune=0.5,vprune=0.5", s);
  REQUIRE(keys_only);
  REQUIRE(both);
  std::uint32_t sd = 3;
  for (int step = 0; step < 12; ++step) {
    const int n = step == 0 ? 64 : 16;
    for (auto* c : {keys_only.get(), both.get()}) {
      for (int l = 0; l < s.layers; ++l) {
        Chunk ch = random_chunk(s, n, sd + 3 * static_cast<std::uint32_t>(l));
        REQUIRE(attend(*c, 0, l, s, ch, n) == Status::kSuccess);
      }
      REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
    }
    sd += 11;
  }
  const std::int64_t old = keys_only->tokens(0) - 32;
  const double nominal = static_cast<double>(old) * 32 * 2 * s.layers * s.kv_heads;  // 32 value channels x fp16
  const double saved = static_cast<double>(keys_only->bytes()) - static_cast<double>(both->bytes());
  INFO("keys only " << keys_only->bytes() << " keys+values " << both->bytes());
  CHECK(saved >= 0.95 * nominal);
  CHECK(saved <= 1.05 * nominal + 4096);
  CHECK(std::string(both->spec()) == "think:prune=0.5,window=32,recent=32,granularity=1,migrate=1,vprune=0.5");
  CHECK(std::string(keys_only->spec()).find("vprune") == std::string::npos);  // unchanged canonical spec
  std::unique_ptr<cache::KvCache> c;
  std::string why;
  CHECK(memattn_test::make_kv_cache("think:vprune=0.5+kivi:kbits=4,vbits=2", s, Executor{}, &c, &why) ==
        Status::kErrorNotSupported);
  CHECK(why.find("vprune") != std::string::npos);
  CHECK(memattn_test::make_kv_cache("think:vprune=1", s, Executor{}, &c, &why) == Status::kErrorInvalidArgument);
  CHECK(c == nullptr);
  REQUIRE(memattn_test::make_kv_cache("h2o:budget=64+think:prune=0.4,vprune=0.25", s, Executor{}, &c, &why) ==
          Status::kSuccess);
  using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::KiviQuant>;
  Cache::Config cfg;
  cfg.prune.vprune = 0.5f;
  std::unique_ptr<Cache> direct;
  CHECK(Cache::create(s, cfg, "think+kivi", Executor{}, &direct) == Status::kErrorNotSupported);
}

namespace {

// Decodes a segment from ComposedKvCache::regions() with the layout the GPU decode reads
// (cuda/think.cuh, kernels/think_decode.cuh: code (t, c) of a block at index t * d_keep + c,
// LSB-first in uint32 words; (scale, zero) fp16 bit pairs) and checks every key and value against
// the cache's own key() / value(), bit for bit.
// Returns the number of partly filled blocks (eviction inside a block).
template <class Cache>
int check_regions(const Cache& c, const cache::CacheShape& s, int bits_k, int bits_v, int group) {
  int partial = 0;
  const std::int64_t D = s.head_dim;
  auto code = [](const std::uint32_t* w, std::int64_t i, int bits) {
    const int per = 32 / bits;
    return static_cast<float>((w[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1u));
  };
  auto h = [](std::uint16_t bits) { return half_to_float(Half{bits}); };
  std::int64_t quantised = 0;
  for (int l = 0; l < s.layers; ++l)
    for (int hk = 0; hk < s.kv_heads; ++hk) {
      const auto r = c.regions(0, l, hk);
      const std::int64_t dk = r.d_keep, N = r.nq + r.n_old + r.n_tail;
      REQUIRE(N == c.segment_size(0, l, hk));
      const std::int64_t nb = static_cast<std::int64_t>(r.k_codes.size());
      REQUIRE(static_cast<std::int64_t>(r.k_first.size()) == nb);
      REQUIRE((nb == 0 ? 0 : r.k_first[0]) == 0);
      for (std::int64_t i = 0; i < nb; ++i) {
        const std::int64_t end = i + 1 < nb ? r.k_first[static_cast<std::size_t>(i + 1)] : r.nq;
        REQUIRE(end > r.k_first[static_cast<std::size_t>(i)]);  // no empty block
        REQUIRE(end - r.k_first[static_cast<std::size_t>(i)] <= group);
        partial += end - r.k_first[static_cast<std::size_t>(i)] < group;
      }
      REQUIRE(r.k_block_words == (group * dk * bits_k + 31) / 32);
      quantised += r.nq;
      std::vector<float> want(static_cast<std::size_t>(D)), got(static_cast<std::size_t>(D));
      for (std::int64_t j = 0; j < N; ++j) {
        const std::int64_t width = c.key(0, l, hk, j, want.data());
        if (j < r.nq) {
          std::int64_t blk = nb - 1;
          while (r.k_first[static_cast<std::size_t>(blk)] > j) --blk;
          const std::int64_t tb = j - r.k_first[static_cast<std::size_t>(blk)];
          for (std::int64_t x = 0; x < dk; ++x)
            got[static_cast<std::size_t>(x)] = std::fma(code(r.k_codes[static_cast<std::size_t>(blk)], tb * dk + x, bits_k),
                                                        h(r.k_meta[static_cast<std::size_t>(blk)][2 * x]),
                                                        h(r.k_meta[static_cast<std::size_t>(blk)][2 * x + 1]));
        } else if (j < r.nq + r.n_old) {
          for (std::int64_t x = 0; x < dk; ++x) got[static_cast<std::size_t>(x)] = half_to_float(r.k_old[(j - r.nq) * dk + x]);
        } else {
          for (std::int64_t x = 0; x < D; ++x)
            got[static_cast<std::size_t>(x)] = half_to_float(r.k_tail[(j - r.nq - r.n_old) * D + x]);
        }
        REQUIRE(width == (j < r.nq + r.n_old ? dk : D));
        for (std::int64_t x = 0; x < width; ++x) REQUIRE(got[static_cast<std::size_t>(x)] == want[static_cast<std::size_t>(x)]);
        c.value(0, l, hk, j, want.data());
        if (j < r.nq) {
          const std::int64_t gv = D / r.v_groups;
          for (std::int64_t x = 0; x < D; ++x)
            got[static_cast<std::size_t>(x)] = std::fma(code(r.v_codes + j * r.v_words, x, bits_v), h(r.v_meta[j * 2 * r.v_groups + 2 * (x / gv)]),
                                                        h(r.v_meta[j * 2 * r.v_groups + 2 * (x / gv) + 1]));
        } else if (j < r.nq + r.n_old) {
          for (std::int64_t x = 0; x < D; ++x) got[static_cast<std::size_t>(x)] = half_to_float(r.v_old[(j - r.nq) * D + x]);
        } else {
          for (std::int64_t x = 0; x < D; ++x)
            got[static_cast<std::size_t>(x)] = half_to_float(r.v_tail[(j - r.nq - r.n_old) * D + x]);
        }
        for (std::int64_t x = 0; x < D; ++x) REQUIRE(got[static_cast<std::size_t>(x)] == want[static_cast<std::size_t>(x)]);
      }
    }
  CHECK(quantised > 0);
  return partial;
}

template <class Cache>
int fill_and_check_regions(typename Cache::Config cfg, int D, std::uint32_t seed) {
  const auto s = shape_of(D);
  std::unique_ptr<Cache> c;
  REQUIRE(Cache::create(s, cfg, "regions", Executor{}, &c) == Status::kSuccess);
  for (int n : {70, 1, 1, 40, 1, 1, 33, 1}) {
    for (int layer = 0; layer < s.layers; ++layer) {
      Chunk ch = random_chunk(s, n, seed += 10);
      REQUIRE(attend(*c, 0, layer, s, ch, n) == Status::kSuccess);
    }
    REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  }
  return check_regions(*c, s, cfg.quant.bits_k, cfg.quant.bits_v, cfg.quant.group);
}

}  // namespace

TEST_CASE("composed regions(): the GPU decode's layout decodes to the cache contents bit for bit", "[compose]") {
  quant::KvQuantConfig q;
  q.bits_k = 4;
  q.bits_v = 2;
  q.group = 32;
  q.residual = 32;
  {
    using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::NoPrune, quant::KiviQuant>;
    Cache::Config cfg;
    cfg.quant = q;
    CHECK(fill_and_check_regions<Cache>(cfg, 64, 100) == 0);
  }
  {
    using Cache = cpu::ComposedKvCache<evict::H2O, prune::ThinK, quant::KiviQuant>;
    Cache::Config cfg;
    cfg.quant = q;
    cfg.quant.bits_k = 2;
    cfg.quant.bits_v = 4;
    cfg.prune.prune = 0.4f;
    cfg.prune.window = 8;
    cfg.prune.recent = 16;
    cfg.evict = evict::h2o_params(112, 24);
    CHECK(fill_and_check_regions<Cache>(cfg, 128, 200) > 0);  // H2O evicted inside blocks
  }
  {
    using Cache = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::KiviQuant>;
    Cache::Config cfg;
    cfg.quant = q;
    cfg.quant.bits_k = 8;
    cfg.quant.bits_v = 8;
    cfg.quant.group = 64;
    cfg.quant.residual = 0;
    CHECK(fill_and_check_regions<Cache>(cfg, 64, 300) == 0);
  }
}
