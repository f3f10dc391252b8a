// The KV-cache interface with the "full" policy: chunked appends against the fp64 reference,
// chunk-size invariance, worker-count invariance, byte accounting, the spec registry, bad input.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/naive_attention.hpp"
#include "common/test_data.hpp"

using namespace memattn;
using namespace memattn_test;

namespace {

// A two-thread executor over std::thread: tasks are dealt round-robin, worker = thread index.
struct TwoThreads {
  static void parallel_for(void*, std::int64_t n, Executor::TaskFn fn, void* ctx) {
    std::thread t([&] {
      for (std::int64_t i = 1; i < n; i += 2) fn(ctx, i, 1);
    });
    for (std::int64_t i = 0; i < n; i += 2) fn(ctx, i, 0);
    t.join();
  }
  static Executor executor() {
    Executor e;
    e.parallel_for = &parallel_for;
    e.workers = 2;
    return e;
  }
};

cache::CacheShape small_shape() {
  cache::CacheShape s;
  s.layers = 2;
  s.q_heads = 6;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 300;
  s.max_sequences = 2;
  return s;
}

// Feeds `total` tokens of random q/k/v per layer into the cache in the given chunk sizes and
// returns every output (layer-major, then token, head, dim).
std::vector<float> run_chunks(cache::KvCache& c, int seq, const std::vector<int>& chunks, std::uint32_t seed,
                              std::vector<float>* k_all, std::vector<float>* v_all, std::vector<float>* q_all) {
  const auto& s = c.shape();
  int total = 0;
  for (int n : chunks) total += n;
  const std::size_t qrow = static_cast<std::size_t>(s.q_heads) * s.head_dim, krow = static_cast<std::size_t>(s.kv_heads) * s.head_dim;
  *q_all = random_vector<float>(static_cast<std::size_t>(s.layers) * total * qrow, seed);
  *k_all = random_vector<float>(static_cast<std::size_t>(s.layers) * total * krow, seed + 1);
  *v_all = random_vector<float>(static_cast<std::size_t>(s.layers) * total * krow, seed + 2);
  std::vector<float> out(q_all->size(), -1.f);
  int t0 = 0;
  for (int n : chunks) {
    for (int l = 0; l < s.layers; ++l) {
      const std::size_t base = static_cast<std::size_t>(l) * total;
      auto q = make_view<3>(static_cast<const float*>(q_all->data()) + (base + t0) * qrow, {n, s.q_heads, s.head_dim});
      auto k = make_view<3>(static_cast<const float*>(k_all->data()) + (base + t0) * krow, {n, s.kv_heads, s.head_dim});
      auto v = make_view<3>(static_cast<const float*>(v_all->data()) + (base + t0) * krow, {n, s.kv_heads, s.head_dim});
      auto o = make_view<3>(out.data() + (base + t0) * qrow, {n, s.q_heads, s.head_dim});
      REQUIRE(c.attend(seq, l, q, k, v, o) == Status::kSuccess);
    }
    REQUIRE(c.end_chunk(seq, cache::ChunkSignals{}) == Status::kSuccess);
    t0 += n;
  }
  REQUIRE(c.tokens(seq) == total);
  return out;
}

std::unique_ptr<cache::KvCache> make(const std::string& spec, const cache::CacheShape& s, const Executor& ex = Executor{}) {
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  REQUIRE(memattn_test::make_kv_cache(spec, s, ex, &c, &err) == Status::kSuccess);
  return c;
}

// One spec of every policy and composition (small budgets for small_shape()).
std::vector<std::string> every_policy_spec() {
  return {"full", "full:fp32=1", "kivi:kbits=4,vbits=2,residual=32", "streaming:sink=4,window=28",
          "h2o:budget=32,recent=8", "scissorhands:budget=32", "snapkv:budget=32,window=8", "pyramidkv:budget=32,window=8",
          "knorm:budget=32", "mikv:budget=16", "epicache:budget=32,segment=16,probe=8", "sentencekv:budget=32",
          "d2o:budget=32", "kvmerger:budget=32", "lazy:budget=32", "sirllm:budget=32", "windowkv:budget=32,shared=2",
          "h2o:budget=32+pin:start=0,end=8,ttl=100", "think:prune=0.5,window=8,recent=8",
          "h2o:budget=32+think:prune=0.5,window=8,recent=8+kivi:kbits=4,residual=32"};
}

}  // namespace

TEST_CASE("full cache: chunked prefill + decode equals causal attention over the whole history", "[kv-cache]") {
  for (const char* spec : {"full:fp32=1", "full"}) {
    const auto s = small_shape();
    auto c = make(spec, s);
    std::vector<float> q, k, v;
    const std::vector<int> chunks = {7, 64, 1, 1, 100, 3, 1};
    const auto out = run_chunks(*c, 1, chunks, 5, &k, &v, &q);
    int total = 0;
    for (int n : chunks) total += n;
    const bool fp16 = std::string(spec) == "full";
    for (int l = 0; l < s.layers; ++l) {
      // Reference: causal prefill over all tokens of the layer, K/V rounded as the cache stores them.
      std::vector<float> kl(k.begin() + static_cast<std::ptrdiff_t>(l) * total * s.kv_heads * s.head_dim,
                            k.begin() + static_cast<std::ptrdiff_t>(l + 1) * total * s.kv_heads * s.head_dim);
      std::vector<float> vl(v.begin() + static_cast<std::ptrdiff_t>(l) * total * s.kv_heads * s.head_dim,
                            v.begin() + static_cast<std::ptrdiff_t>(l + 1) * total * s.kv_heads * s.head_dim);
      if (fp16) {
        for (auto& x : kl) x = to_float(from_float<Half>(x));
        for (auto& x : vl) x = to_float(from_float<Half>(x));
      }
      attention::PrefillArgs<float> a;
      a.q = make_view<4>(static_cast<const float*>(q.data()) + static_cast<std::size_t>(l) * total * s.q_heads * s.head_dim,
                         {1, total, s.q_heads, s.head_dim});
      a.k = make_view<4>(static_cast<const float*>(kl.data()), {1, total, s.kv_heads, s.head_dim});
      a.v = make_view<4>(static_cast<const float*>(vl.data()), {1, total, s.kv_heads, s.head_dim});
      const NaiveResult ref = naive_prefill(a);
      CHECK(max_scaled_error(out.data() + static_cast<std::size_t>(l) * total * s.q_heads * s.head_dim, ref.o, 2e-5,
                             2e-5) <= 1.0);
    }
  }
}

TEST_CASE("full cache: outputs do not depend on the chunk size or the number of workers", "[kv-cache]") {
  const auto s = small_shape();
  std::vector<float> q, k, v;
  auto one = make("full", s);
  const auto by_token = run_chunks(*one, 0, std::vector<int>(150, 1), 9, &k, &v, &q);
  auto chunked = make("full", s);
  const auto by_chunk = run_chunks(*chunked, 0, {150}, 9, &k, &v, &q);
  auto mixed = make("full", s, TwoThreads::executor());
  const auto by_mixed = run_chunks(*mixed, 0, {33, 1, 64, 52}, 9, &k, &v, &q);
  auto chunked2 = make("full", s, TwoThreads::executor());
  const auto by_chunk2 = run_chunks(*chunked2, 0, {150}, 9, &k, &v, &q);
  REQUIRE(by_token.size() == by_chunk.size());
  for (std::size_t i = 0; i < by_token.size(); ++i) {
    REQUIRE(by_chunk[i] == Approx(by_token[i]).margin(1e-5));
    REQUIRE(by_mixed[i] == Approx(by_token[i]).margin(1e-5));
    REQUIRE(by_chunk2[i] == by_chunk[i]);  // same chunking, 1 vs 2 workers: bitwise
  }
}

TEST_CASE("append without attention restores a prefix: later outputs are bit-identical", "[kv-cache]") {
  auto s = small_shape();
  s.head_dim = 32;  // KIVI's value groups need head_dim >= 32 at group 32
  const std::size_t krow = static_cast<std::size_t>(s.kv_heads) * s.head_dim;
  const std::size_t qrow = static_cast<std::size_t>(s.q_heads) * s.head_dim;
  for (const char* spec : {"full", "full:fp32=1", "kivi:kbits=2,vbits=2,group=32,residual=32"}) {
    // A: attend 100 prompt tokens, then 5 decode steps. B: append the same prompt, then the same steps.
    auto a = make(spec, s), b = make(spec, s);
    const int P = 100, steps = 5;
    const auto k = random_vector<float>(static_cast<std::size_t>(s.layers) * (P + steps) * krow, 11);
    const auto v = random_vector<float>(k.size(), 12);
    const auto q = random_vector<float>(static_cast<std::size_t>(s.layers) * (P + steps) * qrow, 13);
    std::vector<float> oa(static_cast<std::size_t>(P) * qrow), ob(qrow);
    auto kv = [&](const std::vector<float>& x, int l, int t0, int n) {
      return make_view<3>(x.data() + (static_cast<std::size_t>(l) * (P + steps) + t0) * krow, {n, s.kv_heads, s.head_dim});
    };
    auto qv = [&](int l, int t0, int n) {
      return make_view<3>(q.data() + (static_cast<std::size_t>(l) * (P + steps) + t0) * qrow, {n, s.q_heads, s.head_dim});
    };
    for (int l = 0; l < s.layers; ++l) {
      REQUIRE(a->attend(0, l, qv(l, 0, P), kv(k, l, 0, P), kv(v, l, 0, P), make_view<3>(oa.data(), {P, s.q_heads, s.head_dim})) ==
              Status::kSuccess);
      REQUIRE(b->append(0, l, kv(k, l, 0, P), kv(v, l, 0, P)) == Status::kSuccess);
    }
    REQUIRE(a->end_chunk(0, {}) == Status::kSuccess);
    REQUIRE(b->end_chunk(0, {}) == Status::kSuccess);
    CHECK(b->tokens(0) == P);
    CHECK(b->bytes() == a->bytes());
    for (int t = P; t < P + steps; ++t) {
      for (int l = 0; l < s.layers; ++l) {
        std::vector<float> o1(qrow), o2(qrow);
        REQUIRE(a->attend(0, l, qv(l, t, 1), kv(k, l, t, 1), kv(v, l, t, 1), make_view<3>(o1.data(), {1, s.q_heads, s.head_dim})) ==
                Status::kSuccess);
        REQUIRE(b->attend(0, l, qv(l, t, 1), kv(k, l, t, 1), kv(v, l, t, 1), make_view<3>(o2.data(), {1, s.q_heads, s.head_dim})) ==
                Status::kSuccess);
        CHECK(std::memcmp(o1.data(), o2.data(), qrow * sizeof(float)) == 0);
      }
      REQUIRE(a->end_chunk(0, {}) == Status::kSuccess);
      REQUIRE(b->end_chunk(0, {}) == Status::kSuccess);
    }
    // Bad calls: wrong layer/sequence or a second append of the same layer change nothing.
    const auto before = b->bytes();
    CHECK(b->append(0, s.layers, kv(k, 0, 0, 1), kv(v, 0, 0, 1)) == Status::kErrorInvalidArgument);
    CHECK(b->append(5, 0, kv(k, 0, 0, 1), kv(v, 0, 0, 1)) == Status::kErrorInvalidArgument);
    REQUIRE(b->append(0, 0, kv(k, 0, 0, 1), kv(v, 0, 0, 1)) == Status::kSuccess);
    CHECK(b->append(0, 0, kv(k, 0, 0, 1), kv(v, 0, 0, 1)) == Status::kErrorInvalidArgument);
    CHECK(b->tokens(0) == P + steps);
    CHECK(b->bytes() >= before);
  }
  // A policy that needs every token's attention does not take appended tokens.
  auto h = make("h2o:budget=64", s);
  const auto k = random_vector<float>(krow, 3);
  CHECK(h->append(0, 0, make_view<3>(k.data(), {1, s.kv_heads, s.head_dim}), make_view<3>(k.data(), {1, s.kv_heads, s.head_dim})) ==
        Status::kErrorNotSupported);
  CHECK(h->tokens(0) == 0);
}

TEST_CASE("full cache: real bytes, reserve, reset", "[kv-cache]") {
  const auto s = small_shape();
  auto c = make("full", s);
  CHECK(c->bytes() == 0);
  std::vector<float> q, k, v;
  run_chunks(*c, 0, {10}, 1, &k, &v, &q);
  const std::size_t per_token = static_cast<std::size_t>(s.layers) * s.kv_heads * s.head_dim * 2 * sizeof(Half);
  CHECK(c->bytes() == 64 * per_token);  // one 64-token granule per layer
  CHECK(c->peak_bytes() == c->bytes());
  CHECK(cache::full_fp16_bytes(s, 64) == 64 * per_token);
  REQUIRE(c->reserve(1, 200) == Status::kSuccess);
  CHECK(c->bytes() == 264 * per_token);
  REQUIRE(c->reset(0) == Status::kSuccess);
  CHECK(c->bytes() == 200 * per_token);
  CHECK(c->peak_bytes() == 264 * per_token);
  CHECK(c->tokens(0) == 0);
  CHECK(c->reserve(1, 301) == Status::kErrorCapacityExceeded);
}

TEST_CASE("full cache: bad calls get a Status and change nothing", "[kv-cache][bad-input]") {
  auto s = small_shape();
  s.max_tokens = 20;
  auto c = make("full", s);
  std::vector<float> q(30 * 6 * 16, 0.5f), k(30 * 2 * 16, 0.5f), v(30 * 2 * 16, 0.5f), o(30 * 6 * 16, -3.f);
  auto qv = [&](int n) { return make_view<3>(static_cast<const float*>(q.data()), {n, 6, 16}); };
  auto kv = [&](int n) { return make_view<3>(static_cast<const float*>(k.data()), {n, 2, 16}); };
  auto vv = [&](int n) { return make_view<3>(static_cast<const float*>(v.data()), {n, 2, 16}); };
  auto ov = [&](int n) { return make_view<3>(o.data(), {n, 6, 16}); };
  CHECK(c->attend(2, 0, qv(1), kv(1), vv(1), ov(1)) == Status::kErrorInvalidArgument);   // bad sequence
  CHECK(c->attend(0, 2, qv(1), kv(1), vv(1), ov(1)) == Status::kErrorInvalidArgument);   // bad layer
  CHECK(c->attend(0, 0, qv(2), kv(1), vv(1), ov(2)) == Status::kErrorInvalidShape);      // k tokens != q tokens
  CHECK(c->attend(0, 0, qv(21), kv(21), vv(21), ov(21)) == Status::kErrorCapacityExceeded);
  auto bad_heads = make_view<3>(static_cast<const float*>(k.data()), {1, 3, 16});
  CHECK(c->attend(0, 0, qv(1), bad_heads, vv(1), ov(1)) == Status::kErrorInvalidShape);
  for (float x : o) REQUIRE(x == -3.f);
  CHECK(c->bytes() == 0);
  REQUIRE(c->attend(0, 0, qv(4), kv(4), vv(4), ov(4)) == Status::kSuccess);
  CHECK(c->attend(0, 0, qv(4), kv(4), vv(4), ov(4)) == Status::kErrorInvalidArgument);  // same layer twice
  CHECK(c->attend(0, 1, qv(3), kv(3), vv(3), ov(3)) == Status::kErrorInvalidShape);     // chunk size changed
  CHECK(c->end_chunk(0, {}) == Status::kErrorInvalidArgument);                           // layer 1 skipped
  REQUIRE(c->attend(0, 1, qv(4), kv(4), vv(4), ov(4)) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  CHECK(c->tokens(0) == 4);
}

TEST_CASE("kv spec parser and registry", "[kv-spec]") {
  std::vector<cache::PolicySpec> parts;
  std::string err;
  REQUIRE(cache::parse_kv_spec("h2o:budget=512,recent=64+kivi:kbits=4", &parts, &err) == Status::kSuccess);
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].name == "h2o");
  CHECK(parts[0].params[1].first == "recent");
  CHECK(parts[0].params[1].second == "64");
  CHECK(parts[1].name == "kivi");
  for (const char* bad : {"", "Full", "full:", "full:fp32", "full:=1", "a+", "+a", "x:a=1,a=2", "x:a=1,,b=2"}) {
    INFO(bad);
    CHECK(cache::parse_kv_spec(bad, &parts, &err) == Status::kErrorParse);
    CHECK(!err.empty());
  }
  const auto s = small_shape();
  std::unique_ptr<cache::KvCache> c;
  CHECK(memattn_test::make_kv_cache("nope", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(err.find("available: full") != std::string::npos);
  CHECK(memattn_test::make_kv_cache("full:bits=3", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(err.find("fp32=0") != std::string::npos);
  CHECK(memattn_test::make_kv_cache("full:fp32=2", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("full:fp32=0.5", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("full+full", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);  // issue 7: + composes evict+think+kivi only
  CHECK(err.find("does not compose") != std::string::npos);
  cache::CacheShape bad = s;
  bad.kv_heads = 4;
  CHECK(memattn_test::make_kv_cache("full", bad, Executor{}, &c, &err) == Status::kErrorGqaRatio);
  CHECK(c == nullptr);
  REQUIRE(memattn_test::make_kv_cache("full:fp32=1", s, Executor{}, &c, &err) == Status::kSuccess);
  CHECK(std::string(c->spec()) == "full:fp32=1");
}

// Every policy of the registry: a chunk whose K or V the cache cannot store (NaN, inf, or beyond
// fp16's range) or whose query is NaN is rejected with kErrorNonFinite on whichever layer it
// arrives, and the cache is exactly as before: after the good retry, every later output, byte
// count and token count equals that of a twin cache that never saw the bad call.
TEST_CASE("every policy: calls out of the chunk protocol get a Status and change nothing", "[kv-cache][bad-input]") {
  const auto s = small_shape();
  const int Hq = s.q_heads, Hkv = s.kv_heads, D = s.head_dim, n = 5;
  std::vector<float> lp(n, -2.f);
  std::vector<std::int32_t> ids(n, 7);
  std::vector<std::uint8_t> ends(n, 0);
  cache::ChunkSignals sig;
  sig.token_ids = ids.data();
  sig.token_logprobs = lp.data();
  sig.sentence_ends = ends.data();
  sig.count = n;
  const auto q = random_vector<float>(static_cast<std::size_t>(n) * Hq * D, 11);
  const auto k = random_vector<float>(static_cast<std::size_t>(n) * Hkv * D, 12);
  const auto v = random_vector<float>(static_cast<std::size_t>(n) * Hkv * D, 13);
  std::vector<float> o(q.size());
  auto call = [&](cache::KvCache& c, int layer, int tokens) {
    return c.attend(0, layer, make_view<3>(q.data(), {tokens, Hq, D}), make_view<3>(k.data(), {tokens, Hkv, D}),
                    make_view<3>(v.data(), {tokens, Hkv, D}), make_view<3>(o.data(), {tokens, Hq, D}));
  };
  for (const auto& spec : every_policy_spec()) {
    INFO(spec);
    auto c = make(spec, s);
    for (int chunk = 0; chunk < 2; ++chunk) {
      REQUIRE(call(*c, 0, n) == Status::kSuccess);
      const std::size_t bytes = c->bytes();
      const std::int64_t tokens = c->tokens(0);
      CHECK(call(*c, 0, n) != Status::kSuccess);      // layer 0 took this chunk already
      CHECK(call(*c, 1, n - 2) != Status::kSuccess);  // another size within the chunk
      CHECK(c->end_chunk(0, sig) != Status::kSuccess);  // layer 1 has not taken it
      CHECK(c->bytes() == bytes);
      CHECK(c->tokens(0) == tokens);
      REQUIRE(call(*c, 1, n) == Status::kSuccess);
      REQUIRE(c->end_chunk(0, sig) == Status::kSuccess);
      CHECK(c->tokens(0) == (chunk + 1) * n);
    }
    CHECK(c->end_chunk(0, {}) == Status::kSuccess);  // no chunk open: nothing to close
    CHECK(c->tokens(0) == 2 * n);
    REQUIRE(c->reset(0) == Status::kSuccess);
    CHECK(c->tokens(0) == 0);
    REQUIRE(call(*c, 0, n) == Status::kSuccess);  // a fresh chunk after the reset
    REQUIRE(call(*c, 1, n) == Status::kSuccess);
    REQUIRE(c->end_chunk(0, sig) == Status::kSuccess);
    CHECK(c->tokens(0) == n);
  }
}

TEST_CASE("every policy: a non-storable chunk is rejected and changes nothing", "[kv-cache][bad-input]") {
  const auto s = small_shape();
  const std::vector<std::string> specs = every_policy_spec();
  const int Hq = s.q_heads, Hkv = s.kv_heads, D = s.head_dim, n = 5, before = 7, after = 5;
  std::vector<float> lp(n, -2.f);
  std::vector<std::int32_t> ids(n, 7);
  std::vector<std::uint8_t> ends(n, 0);
  ends[n - 1] = 1;
  cache::ChunkSignals sig;
  sig.token_ids = ids.data();
  sig.token_logprobs = lp.data();
  sig.sentence_ends = ends.data();
  sig.count = n;
  const float poison[4] = {std::nanf(""), INFINITY, 70000.f, std::nanf("")};  // k, v, k, q
  for (const auto& spec : specs)
    for (int what = 0; what < 4; ++what)
      for (int bad_layer = 0; bad_layer < s.layers; ++bad_layer) {
        INFO(spec << ", poison " << what << ", layer " << bad_layer);
        if (what == 2 && spec == "full:fp32=1") continue;  // 70000 is a valid fp32 value
        auto a = make(spec, s), b = make(spec, s);
        for (int c = 0; c < before + 1 + after; ++c) {
          const auto q = random_vector<float>(static_cast<std::size_t>(s.layers) * n * Hq * D, 100 + c);
          const auto k = random_vector<float>(static_cast<std::size_t>(s.layers) * n * Hkv * D, 200 + c);
          const auto v = random_vector<float>(static_cast<std::size_t>(s.layers) * n * Hkv * D, 300 + c);
          std::vector<float> oa(q.size(), 0.f), ob(q.size(), 0.f);
          auto qv = [&](const std::vector<float>& x, int l) { return make_view<3>(x.data() + l * n * Hq * D, {n, Hq, D}); };
          auto kv = [&](const std::vector<float>& x, int l) { return make_view<3>(x.data() + l * n * Hkv * D, {n, Hkv, D}); };
          auto ov = [&](std::vector<float>& x, int l) { return make_view<3>(x.data() + l * n * Hq * D, {n, Hq, D}); };
          for (int l = 0; l < s.layers; ++l) {
            if (c == before && l == bad_layer) {
              std::vector<float> bq = q, bk = k, bv = v;
              if (what == 3)
                bq[static_cast<std::size_t>((l * n + 3) * Hq * D + 5)] = poison[what];
              else
                (what == 1 ? bv : bk)[static_cast<std::size_t>((l * n + 2) * Hkv * D + 17)] = poison[what];
              const std::size_t bytes = a->bytes();
              const std::int64_t tokens = a->tokens(0);
              const Status st = a->attend(0, l, qv(bq, l), kv(bk, l), kv(bv, l), ov(oa, l));
              // full and kivi do not score with the query: a NaN query only makes its own output NaN.
              if (what == 3 && st == Status::kSuccess && (spec.rfind("full", 0) == 0 || spec.rfind("kivi", 0) == 0)) {
                a = nullptr;
                break;
              }
              REQUIRE(st == Status::kErrorNonFinite);
              CHECK(a->bytes() == bytes);
              CHECK(a->tokens(0) == tokens);
            }
            REQUIRE(a->attend(0, l, qv(q, l), kv(k, l), kv(v, l), ov(oa, l)) == Status::kSuccess);
            REQUIRE(b->attend(0, l, qv(q, l), kv(k, l), kv(v, l), ov(ob, l)) == Status::kSuccess);
          }
          if (a == nullptr) break;
          REQUIRE(a->end_chunk(0, sig) == Status::kSuccess);
          REQUIRE(b->end_chunk(0, sig) == Status::kSuccess);
          REQUIRE(a->tokens(0) == b->tokens(0));
          REQUIRE(a->bytes() == b->bytes());
          REQUIRE(std::memcmp(oa.data(), ob.data(), oa.size() * sizeof(float)) == 0);
        }
      }
}
