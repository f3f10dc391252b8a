// SirLLM (§3.9), WindowKV (§3.10) and retention ranges / TTL pinning (§2.10, §3.15):
//  * token log-probs vs fp64, finite at a logit gap of 120 (RG-16), textbook alignment vs the
//    reference alignment on a hand-computed 6-token example (RG-23);
//  * SirLLM keeps sinks + the top surprisal (+ recent), NaN gets the chunk maximum, per-turn decay,
//    and the log-probs are required (wanted_signals());
//  * WindowKV window scores vs a naive definition, the keep set = whole best windows then the best
//    tokens of the next (exact C, RG-17), group budgets (golden table), one index set per group,
//    segments aligned with the suffix queries kept (G-g);
//  * a pinned range survives pressure and is released after its TTL; soft priorities; bad specs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/cpu/token_logprobs.hpp"
#include "memattn/evict/sirllm.hpp"
#include "memattn/evict/windowkv.hpp"

using namespace memattn;

namespace {

std::unique_ptr<cache::KvCache> make(const std::string& spec, const cache::CacheShape& s) {
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  const Status st = memattn_test::make_kv_cache(spec, s, Executor{}, &c, &err);
  INFO(spec << ": " << err);
  REQUIRE(st == Status::kSuccess);
  return c;
}

cache::CacheShape shape(int layers, int hq, int hkv, int d, int max_tokens) {
  cache::CacheShape s;
  s.layers = layers;
  s.q_heads = hq;
  s.kv_heads = hkv;
  s.head_dim = d;
  s.max_tokens = max_tokens;
  return s;
}

// Appends n tokens to every layer (same q/k/v) and closes the chunk with `sig`.
Status feed(cache::KvCache& c, const cache::CacheShape& s, const std::vector<float>& q, const std::vector<float>& k,
            const std::vector<float>& v, std::int64_t n, const cache::ChunkSignals& sig = {}) {
  std::vector<float> out(static_cast<std::size_t>(n * s.q_heads * s.head_dim));
  for (int l = 0; l < s.layers; ++l) {
    const Status st = c.attend(0, l, make_view<3>(q.data(), {n, s.q_heads, s.head_dim}),
                               make_view<3>(k.data(), {n, s.kv_heads, s.head_dim}),
                               make_view<3>(v.data(), {n, s.kv_heads, s.head_dim}),
                               make_view<3>(out.data(), {n, s.q_heads, s.head_dim}));
    if (st != Status::kSuccess) return st;
  }
  return c.end_chunk(0, sig);
}

// The kept positions of a segment, ascending.
template <class Policy>
std::vector<std::int32_t> positions(cache::KvCache& c, int layer, int head) {
  auto* e = dynamic_cast<cpu::EvictKvCache<Policy>*>(&c);
  REQUIRE(e != nullptr);
  const std::int32_t* p = e->segment_positions(0, layer, head);
  std::vector<std::int32_t> v(p, p + e->segment_size(0, layer, head));
  std::sort(v.begin(), v.end());  // hole filling leaves slots out of chronological order
  return v;
}

}  // namespace

// ---- token log-probs -----------------------------------------------------------------------------

TEST_CASE("token_logprobs: fp64 oracle, finite at a logit gap of 120 (RG-16), bad input", "[evict][sirllm]") {
  const std::int64_t rows = 5, V = 37;
  auto logits = memattn_test::random_vector<float>(static_cast<std::size_t>(rows * V), 3, 4.f);
  std::vector<std::int32_t> next = {0, 36, 5, 17, 9};
  std::vector<float> out(rows);
  REQUIRE(cpu::token_logprobs(logits.data(), rows, V, V, next.data(), out.data()) == Status::kSuccess);
  for (std::int64_t i = 0; i < rows; ++i) {
    double m = -INFINITY, s = 0;
    for (std::int64_t v = 0; v < V; ++v) m = std::max(m, static_cast<double>(logits[static_cast<std::size_t>(i * V + v)]));
    for (std::int64_t v = 0; v < V; ++v) s += std::exp(logits[static_cast<std::size_t>(i * V + v)] - m);
    const double want = logits[static_cast<std::size_t>(i * V + next[static_cast<std::size_t>(i)])] - m - std::log(s);
    CHECK(std::abs(out[static_cast<std::size_t>(i)] - want) <= 1e-6 * std::abs(want) + 1e-7);
  }
  std::vector<float> gap = {120.f, 0.f, 0.f};
  const std::int32_t id = 1;
  float lp = 0;
  REQUIRE(cpu::token_logprobs(gap.data(), 1, 3, 3, &id, &lp) == Status::kSuccess);
  CHECK(std::isfinite(lp));
  CHECK(lp == Approx(-120.f).epsilon(1e-6));
  float sentinel = 7.f;
  const std::int32_t bad = 3;
  CHECK(cpu::token_logprobs(gap.data(), 1, 3, 3, &bad, &sentinel) == Status::kErrorInvalidArgument);
  gap[2] = NAN;
  CHECK(cpu::token_logprobs(gap.data(), 1, 3, 3, &id, &sentinel) == Status::kErrorNonFinite);
  CHECK(sentinel == 7.f);
}

TEST_CASE("surprisal alignment: textbook vs the SirLLM reference list on 6 tokens (RG-23)", "[evict][sirllm]") {
  // vocab 3; row i predicts token i + 1; logits chosen so that the softmax is easy to write down
  const float L = std::log(2.f);
  const std::vector<float> logits = {L, 0, 0,  0, L, 0,  0, 0, L,  L, 0, 0,  0, L, 0,  0, 0, 0};
  const std::vector<std::int32_t> ids = {0, 1, 1, 2, 0, 2};
  const double p2 = std::log(2.0 / 4.0), p1 = std::log(1.0 / 4.0);
  // textbook: token j >= 1 gets log softmax(row j - 1)[ids[j]]
  std::vector<float> tb(6);
  tb[0] = NAN;
  REQUIRE(cpu::token_logprobs(logits.data(), 5, 3, 3, ids.data() + 1, tb.data() + 1) == Status::kSuccess);
  const double want_tb[6] = {NAN, p1, p2, p2, p2, p1};
  // reference: token i gets log softmax(row i - 1)[ids[i - 1]]
  std::vector<float> ref(6);
  REQUIRE(cpu::reference_alignment(logits.data(), 6, 3, 3, ids.data(), ref.data()) == Status::kSuccess);
  const double want_ref[6] = {NAN, p2, p2, p1, p1, p1};
  for (int i = 1; i < 6; ++i) {
    CHECK(tb[static_cast<std::size_t>(i)] == Approx(want_tb[i]).epsilon(1e-6));
    CHECK(ref[static_cast<std::size_t>(i)] == Approx(want_ref[i]).epsilon(1e-6));
  }
  CHECK(std::isnan(ref[0]));
}

// ---- SirLLM --------------------------------------------------------------------------------------

TEST_CASE("sirllm: sinks + top surprisal + recent, NaN = chunk max, decay per turn, log-probs required",
          "[evict][sirllm]") {
  const auto s = shape(2, 4, 2, 8, 200);
  auto c = make("sirllm:budget=12,start=2,recent=3", s);
  CHECK((c->wanted_signals() & cache::kSignalTokenLogProbs) != 0);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.f, 8.f);
  std::vector<double> e(100, 0.0);  // expected surprisal by position
  std::int64_t len = 0;
  std::uint32_t seed = 9;
  while (len < 60) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 4);
    std::vector<float> lp(static_cast<std::size_t>(n));
    for (auto& x : lp) x = -u(rng);
    if (len == 0) lp[0] = NAN;  // the sequence's first token has no predictor
    double mx = 0;
    for (float x : lp)
      if (std::isfinite(x)) mx = std::max(mx, -static_cast<double>(x));
    for (std::int64_t i = 0; i < n; ++i)
      e[static_cast<std::size_t>(len + i)] = std::isfinite(lp[static_cast<std::size_t>(i)]) ? -lp[static_cast<std::size_t>(i)] : mx;
    auto q = memattn_test::random_vector<float>(static_cast<std::size_t>(n * 4 * 8), seed++);
    auto k = memattn_test::random_vector<float>(static_cast<std::size_t>(n * 2 * 8), seed++);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n), 1);
    cache::ChunkSignals sig;
    sig.token_ids = ids.data();
    sig.token_logprobs = lp.data();
    sig.count = static_cast<int>(n);
    // expected keep set: every position seen so far, protected + top by e
    const auto before = positions<evict::SirLLM>(*c, 0, 0);
    REQUIRE(feed(*c, s, q, k, k, n, sig) == Status::kSuccess);
    len += n;
    std::vector<std::int32_t> cand(before);
    for (std::int64_t i = 0; i < n; ++i) cand.push_back(static_cast<std::int32_t>(len - n + i));
    std::set<std::int32_t> want;
    std::vector<std::int32_t> rest;
    for (std::int32_t p : cand) (p < 2 || p > len - 1 - 3 ? want.insert(p), 0 : (rest.push_back(p), 0));
    std::stable_sort(rest.begin(), rest.end(), [&](std::int32_t a, std::int32_t b) {
      return e[static_cast<std::size_t>(a)] > e[static_cast<std::size_t>(b)];
    });
    for (std::int32_t p : rest)
      if (static_cast<std::int64_t>(want.size()) < 12) want.insert(p);
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h) {
        const auto got = positions<evict::SirLLM>(*c, l, h);
        REQUIRE(std::vector<std::int32_t>(want.begin(), want.end()) == got);  // same set in every segment
      }
  }
  // the first token (NaN) got the chunk's max; the state is the surprisal
  auto* ec = dynamic_cast<cpu::EvictKvCache<evict::SirLLM>*>(c.get());
  const std::int32_t* pos = ec->segment_positions(0, 1, 1);  // slot order: state[j] belongs to pos[j]
  for (std::int64_t j = 0; j < ec->segment_size(0, 1, 1); ++j)
    CHECK(ec->segment_state(0, 1, 1)[j] == Approx(e[static_cast<std::size_t>(pos[j])]).epsilon(1e-6));
  // log-probs missing: a Status, the chunk stays open
  auto q = memattn_test::random_vector<float>(32, 1), k = memattn_test::random_vector<float>(16, 2);
  CHECK(feed(*c, s, q, k, k, 1) == Status::kErrorInvalidArgument);
  CHECK(c->tokens(0) == len);

  // decay: per turn of 4 tokens, e <- e * 0.5 for the surviving older entries
  evict::Surprisal::Params dp;
  dp.decay = 0.5f;
  dp.turn = 4;
  CHECK(evict::Surprisal::turns_crossed(dp, 2, 3) == 1);
  CHECK(evict::Surprisal::turns_crossed(dp, 0, 3) == 0);
  CHECK(evict::Surprisal::turns_crossed(dp, 3, 9) == 3);
  std::vector<float> st = {4.f, 2.f, 0.f};
  const std::int32_t ps[3] = {0, 1, 2};
  const float lpn = -3.f;
  evict::TokenSignals ts;
  ts.logprobs = &lpn;
  ts.count = 1;
  ts.first_pos = 2;  // [2, 3) does not cross a turn of 4
  evict::Surprisal::on_chunk(dp, st.data(), ps, 2, 3, ts);
  CHECK(st == std::vector<float>{4.f, 2.f, 3.f});
  ts.first_pos = 3;  // [3, 4) crosses into turn 1
  std::int32_t ps2[3] = {0, 1, 3};
  evict::Surprisal::on_chunk(dp, st.data(), ps2, 2, 3, ts);
  CHECK(st == std::vector<float>{2.f, 1.f, 3.f});
}

// ---- WindowKV ------------------------------------------------------------------------------------

TEST_CASE("windowkv: window scores vs the naive definition, keep = best windows whole + best tokens of the next",
          "[evict][windowkv]") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int mode = 0; mode < 2; ++mode)
    for (int trial = 0; trial < 200; ++trial) {
      const std::int64_t H = 1 + trial % 3, R = 1 + trial % 9, N = 5 + static_cast<std::int64_t>(rng() % 60);
      const std::int64_t n_rev = N - static_cast<std::int64_t>(rng() % 5);
      std::vector<float> col(static_cast<std::size_t>(H * N));
      for (auto& x : col) x = u(rng);
      evict::WindowBlock::Params p;
      p.block = static_cast<int>(R);
      p.mode = static_cast<evict::WindowMode>(mode);
      std::vector<float> out(static_cast<std::size_t>(N), 0.f), tok, ws;
      std::vector<std::int64_t> order;
      evict::WindowBlock::unit_scores(p, col.data(), H, N, n_rev, out.data(), tok, ws, order);
      // naive window scores
      const std::int64_t nw = (n_rev + R - 1) / R;
      std::vector<double> wsc(static_cast<std::size_t>(nw));
      for (std::int64_t w = 0; w < nw; ++w) {
        const std::int64_t a = w * R, b = std::min(n_rev, a + R);
        double s = 0, cnt = 0;
        for (std::int64_t h = 0; h < H; ++h) {
          std::vector<double> vals;
          for (std::int64_t j = a; j < b; ++j) vals.push_back(col[static_cast<std::size_t>(h * N + j)]);
          std::sort(vals.rbegin(), vals.rend());
          const std::size_t kk = mode == 0 ? vals.size() : static_cast<std::size_t>(std::max<std::int64_t>(1, std::min(R / 2, b - a)));
          for (std::size_t i = 0; i < kk; ++i) s += vals[i];
          cnt += static_cast<double>(kk);
        }
        wsc[static_cast<std::size_t>(w)] = s / cnt;
        REQUIRE(ws[static_cast<std::size_t>(w)] == Approx(wsc[static_cast<std::size_t>(w)]).epsilon(1e-5));
      }
      // top-k of the encoded scores keeps whole windows in score order, then the best tokens of the next
      const std::int64_t k = static_cast<std::int64_t>(rng() % static_cast<std::uint32_t>(n_rev + 1));
      std::vector<std::int64_t> idx(static_cast<std::size_t>(n_rev));
      for (std::int64_t j = 0; j < n_rev; ++j) idx[static_cast<std::size_t>(j)] = j;
      std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) { return out[static_cast<std::size_t>(a)] > out[static_cast<std::size_t>(b)]; });
      std::vector<std::int64_t> worder(static_cast<std::size_t>(nw));
      for (std::int64_t w = 0; w < nw; ++w) worder[static_cast<std::size_t>(w)] = w;
      std::stable_sort(worder.begin(), worder.end(), [&](std::int64_t a, std::int64_t b) { return wsc[static_cast<std::size_t>(a)] > wsc[static_cast<std::size_t>(b)]; });
      std::int64_t taken = 0;
      for (std::int64_t w : worder) {
        const std::int64_t a = w * R, b = std::min(n_rev, a + R);
        if (taken >= k) break;
        std::set<std::int64_t> got(idx.begin() + taken, idx.begin() + std::min(k, taken + (b - a)));
        for (std::int64_t j : got) REQUIRE((j >= a && j < b));  // the next admitted tokens are this window's
        taken += b - a;
      }
    }
}

TEST_CASE("windowkv: group budgets (golden table), degenerate groups defined", "[evict][windowkv]") {
  evict::GroupArithmetic::Params p;  // beta 14, shared 8
  // C = 512 + 16 suffix, 32 layers: last = 512*8/14 = 292, first = 732, step = 146
  const std::int64_t want[4] = {732, 586, 440, 292};
  for (int l = 0; l < 32; ++l) CHECK(evict::GroupArithmetic::budget(p, l, 32, 4096, 528, 16) == want[l / 8] + 16);
  // 30 layers (SmolLM2): 4 groups, the last one of 6 layers
  CHECK(evict::GroupArithmetic::budget(p, 29, 30, 4096, 528, 16) == 292 + 16);
  // one group: every layer gets C
  for (int l = 0; l < 5; ++l) CHECK(evict::GroupArithmetic::budget(p, l, 5, 4096, 64, 16) == 64);
}

TEST_CASE("windowkv cache: one index set per layer group, exact group budgets, suffix-aligned segment kept (G-g)",
          "[evict][windowkv]") {
  const int D = 32;
  const auto s = shape(4, 4, 2, D, 400);
  auto c = make("windowkv:budget=40,window=8,block=4,shared=2,beta=4", s);
  // groups {0,1}, {2,3}: c = 32, last = 32*2/4 = 16, first = 48 -> budgets 56 and 24
  auto* e = dynamic_cast<cpu::EvictKvCache<evict::WindowKV>*>(c.get());
  REQUIRE(e != nullptr);
  CHECK(e->budget(0, 200) == 56);
  CHECK(e->budget(3, 200) == 24);
  // prompt of 200 tokens: background keys random, one "sentence" [120, 132) aligned with mu; the
  // last 8 (suffix) queries aligned with mu
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int P = 200;
  std::vector<float> q(static_cast<std::size_t>(P * 4 * D)), k(static_cast<std::size_t>(P * 2 * D)), v(k.size());
  for (auto& x : q) x = 0.5f * nd(rng);
  for (auto& x : k) x = 0.5f * nd(rng);
  for (auto& x : v) x = nd(rng);
  for (int t = 120; t < 132; ++t)
    for (int h = 0; h < 2; ++h) k[static_cast<std::size_t>((t * 2 + h) * D)] += 4.f;
  for (int t = P - 8; t < P; ++t)
    for (int h = 0; h < 4; ++h) q[static_cast<std::size_t>((t * 4 + h) * D)] += 4.f;
  REQUIRE(feed(*c, s, q, k, v, P) == Status::kSuccess);
  for (int g = 0; g < 2; ++g) {
    const auto lead = positions<evict::WindowKV>(*c, 2 * g, 0);
    CHECK(static_cast<std::int64_t>(lead.size()) == e->budget(2 * g, P));  // exact C (RG-17)
    for (int l = 2 * g; l < 2 * g + 2; ++l)
      for (int h = 0; h < 2; ++h) CHECK(positions<evict::WindowKV>(*c, l, h) == lead);
    for (int t = 120; t < 132; ++t) CHECK(std::count(lead.begin(), lead.end(), t) == 1);
    for (int t = P - 8; t < P; ++t) CHECK(std::count(lead.begin(), lead.end(), t) == 1);  // suffix protected
  }
  CHECK(positions<evict::WindowKV>(*c, 0, 0) != positions<evict::WindowKV>(*c, 2, 0));  // groups differ
}

// ---- retention ranges / TTL pinning --------------------------------------------------------------

TEST_CASE("pin: a pinned range survives pressure and is released after its TTL", "[evict][pin]") {
  const auto s = shape(2, 2, 1, 8, 300);
  auto c = make("streaming:sink=0,window=16+pin:start=0,end=8,ttl=60", s);
  CHECK(std::string(c->spec()) == "streaming:sink=0,window=16+pin:start=0,end=8,ttl=60,priority=255,layers=-1");
  std::uint32_t seed = 1;
  for (int step = 0; step < 2; ++step) {  // the pin is re-installed at every sequence start
    for (std::int64_t len = 1; len <= 100; ++len) {
      auto q = memattn_test::random_vector<float>(16, seed++), k = memattn_test::random_vector<float>(8, seed++);
      REQUIRE(feed(*c, s, q, k, k, 1) == Status::kSuccess);
      for (int l = 0; l < 2; ++l) {
        const auto pos = positions<evict::StreamingLLM>(*c, l, 0);
        if (len < 60) {  // active: 0..7 kept although the positional policy would drop them first
          for (int p = 0; p < std::min<int>(8, static_cast<int>(len)); ++p) REQUIRE(std::count(pos.begin(), pos.end(), p) == 1);
          REQUIRE(static_cast<std::int64_t>(pos.size()) == std::min<std::int64_t>(len, len > 8 ? 16 + 8 : len));
        } else {  // expired: plain StreamingLLM
          REQUIRE(pos.size() == 16u);
          REQUIRE(pos.front() == len - 16);
        }
      }
    }
    auto* rc = dynamic_cast<cpu::RetentionKvCache*>(c.get());
    REQUIRE(rc != nullptr);
    CHECK(rc->retention().expired(c->tokens(0)).size() == 1u);
    REQUIRE(c->reset(0) == Status::kSuccess);
  }
}

TEST_CASE("pin: soft priority ranks before the score, runtime pin() API, bad specs", "[evict][pin]") {
  const auto s = shape(1, 2, 1, 8, 300);
  auto c = make("h2o:budget=16,recent=4", s);
  auto* rc = dynamic_cast<cpu::RetentionKvCache*>(c.get());
  REQUIRE(rc != nullptr);
  evict::RetentionRange r;
  r.seq = 0;
  r.begin_pos = 10;
  r.end_pos = 16;
  r.priority = 100;  // soft: evicted only after every unranged candidate
  r.expires_at = 1000;
  REQUIRE(rc->pin(r) == Status::kSuccess);
  r.seq = 5;
  CHECK(rc->pin(r) == Status::kErrorInvalidArgument);  // no such sequence
  std::uint32_t seed = 50;
  for (std::int64_t len = 1; len <= 120; ++len) {
    auto q = memattn_test::random_vector<float>(16, seed++), k = memattn_test::random_vector<float>(8, seed++);
    REQUIRE(feed(*c, s, q, k, k, 1) == Status::kSuccess);
    const auto pos = positions<evict::H2O>(*c, 0, 0);
    REQUIRE(pos.size() == static_cast<std::size_t>(std::min<std::int64_t>(len, 16)));  // soft pins do not overflow
    for (int p = 10; p < std::min<int>(16, static_cast<int>(len)); ++p) REQUIRE(std::count(pos.begin(), pos.end(), p) == 1);
  }
  // select_keep with priorities: hard pins protected even over budget
  const float sc[6] = {5, 4, 3, 2, 1, 0};
  const std::int32_t pos[6] = {0, 1, 2, 3, 4, 5};
  const std::uint8_t pr[6] = {0, 0, 255, 7, 255, 0};
  std::uint64_t scratch[6];
  std::int32_t keep[6];
  std::int64_t count = 0;
  REQUIRE(cpu::select_keep(sc, pos, pr, 6, 3, 5, evict::Protection{0, 0}, evict::TieBreak::kPreferEarlier, scratch, keep,
                           &count) == Status::kSuccess);
  CHECK(count == 3);
  CHECK(std::vector<std::int32_t>(keep, keep + 3) == std::vector<std::int32_t>{2, 3, 4});
  REQUIRE(cpu::select_keep(sc, pos, pr, 6, 1, 5, evict::Protection{0, 0}, evict::TieBreak::kPreferEarlier, scratch, keep,
                           &count) == Status::kSuccess);
  CHECK(count == 2);  // |hard pins| > C: all of them, nothing else
  std::unique_ptr<cache::KvCache> bad;
  std::string err;
  CHECK(memattn_test::make_kv_cache("full+pin:start=0,end=4", s, Executor{}, &bad, &err) == Status::kErrorNotSupported);
  CHECK(bad == nullptr);
  CHECK(memattn_test::make_kv_cache("pin:start=0,end=4", s, Executor{}, &bad, &err) == Status::kErrorNotSupported);
  CHECK(memattn_test::make_kv_cache("h2o:budget=16+pin:start=4,end=4", s, Executor{}, &bad, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("h2o:budget=16+pin:start=0,end=4,color=1", s, Executor{}, &bad, &err) ==
        Status::kErrorInvalidArgument);
  CHECK(bad == nullptr);
}
