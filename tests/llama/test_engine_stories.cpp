// memattn-llama on stories260K (llama2.c format) with the memattn KV cache: the golden greedy
// text, the golden perplexity, chunk-size invariance of the logits, the RoPE convention, and
// corrupt checkpoints. Exits 77 when ../shared/data is absent.
#include <catch2/catch.hpp>
#include "common/catch_run.hpp"
#include "common/test_data.hpp"
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memattn/cpu/sentencekv_kv_cache.hpp>
#include <vector>

#include "kv_factory.hpp"
#include "llama_test_data.hpp"
#include "stories_fixture.hpp"
#include "needle.hpp"
#include "sentence_ends.hpp"
#include "session.hpp"
#include "tasks.hpp"

using namespace memattn_llama;
using memattn_llama_test::data_dir;

namespace {

const Session& session() { return memattn_llama_test::stories_session(); }

std::unique_ptr<memattn::cache::KvCache> make_cache(const ModelConfig& c, const std::string& spec = "full") {
  memattn::cache::CacheShape shape{c.layers, c.heads, c.kv_heads, c.head_dim, c.context, 1};
  std::unique_ptr<memattn::cache::KvCache> cache;
  std::string err;
  REQUIRE(memattn_llama::make_kv_cache(spec, shape, memattn::Executor{}, &cache, &err) == memattn::Status::kSuccess);
  return cache;
}

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

double ppl_of(const Session& s, const std::string& text_file, int ctx, int chunk, const std::string& spec = "full") {
  auto cache = make_cache(s.model.cfg, spec);
  Engine eng(s.model, *cache);
  const auto ids = s.tokenizer->encode(normalize_text(read_file(text_file)), false);
  PerplexityResult r;
  std::string err;
  REQUIRE(perplexity(eng, ids, s.tokenizer->bos(), ctx, chunk, &r, &err));
  CHECK(r.predicted == static_cast<std::int64_t>(ids.size()));
  return r.ppl();
}

}  // namespace

TEST_CASE("greedy decoding from BOS reproduces the known stories260K text", "[llama][golden]") {
  const Session& s = session();
  auto cache = make_cache(s.model.cfg);
  Engine eng(s.model, *cache);
  std::vector<std::int32_t> out;
  std::string err;
  REQUIRE(greedy_generate(eng, 0, {s.tokenizer->bos()}, 80, 16, -1, {}, &out, &err));
  const std::string known =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
      "big, red ball. She wanted to play with it, but it was too high.";
  // Token for token: the known text's own tokens (after BOS) are what greedy decoding emits.
  const std::vector<std::int32_t> want = s.tokenizer->encode(known, false);
  REQUIRE(want.size() >= 40);
  REQUIRE(out.size() >= want.size());
  for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(out[i] == want[i]);
  std::vector<std::int32_t> with_bos = {s.tokenizer->bos()};
  with_bos.insert(with_bos.end(), out.begin(), out.end());
  const std::string text = s.tokenizer->decode(with_bos);
  CHECK(text.substr(0, known.size()) == known);
  CHECK(out.size() >= 60);
}

TEST_CASE("perplexity on tinystories-sample under the data README protocol", "[llama][golden]") {
  const Session& s = session();
  const std::string sample = data_dir() + "/text/tinystories-sample.txt";
  const double ppl = ppl_of(s, sample, 257, 256);
  CHECK(ppl == Approx(4.404).margin(0.01));  // data README: an independent fp64 implementation gives 4.404
  // The fp16 cache costs nothing measurable against an fp32 cache here.
  CHECK(ppl_of(s, sample, 257, 64, "full:fp32=1") == Approx(ppl).margin(2e-3));
}

TEST_CASE("perplexity scored from a window position (E2) counts exactly those tokens", "[llama][golden]") {
  // score_from = F keeps the NLL of targets at window positions >= F; the forward passes (and so
  // the cache's evictions) are those of the default run.
  const Session& s = session();
  const auto ids = s.tokenizer->encode(normalize_text(read_file(data_dir() + "/text/tinystories-sample.txt")), false);
  const int ctx = 129, chunk = 16, F = 40;
  auto nll_from = [&](int from, PerplexityResult* r) {
    auto cache = make_cache(s.model.cfg, "h2o:budget=32");
    Engine eng(s.model, *cache);
    std::string err;
    REQUIRE(perplexity(eng, ids, s.tokenizer->bos(), ctx, chunk, r, &err, {}, from));
  };
  PerplexityResult all, late;
  nll_from(0, &all);
  nll_from(F, &late);
  std::int64_t want = 0;  // windows of ctx - 1 text tokens; targets at positions 1..n_text
  for (std::size_t start = 0; start < ids.size(); start += ctx - 1) {
    const std::int64_t n_text = std::min<std::int64_t>(ctx - 1, static_cast<std::int64_t>(ids.size() - start));
    want += std::max<std::int64_t>(0, n_text - (F - 1));
  }
  CHECK(late.predicted == want);
  CHECK(late.fed == all.fed);
  CHECK(late.predicted < all.predicted);
  CHECK(late.nll_sum < all.nll_sum);
  PerplexityResult bad;
  auto cache = make_cache(s.model.cfg);
  Engine eng(s.model, *cache);
  std::string err;
  CHECK_FALSE(perplexity(eng, ids, s.tokenizer->bos(), ctx, chunk, &bad, &err, {}, ctx));
  CHECK(err.find("score_from") != std::string::npos);
}

TEST_CASE("E1 prefix-compress-continue: windows, scored tokens, A1 identity, compressed bytes", "[llama][golden]") {
  // Spec §7.5 E1 on stories260K: 320-token prefix + 128-token continuation, stride 128. A once=1
  // cache compresses at the prompt_end chunk; with C >= the prefix (A1) nothing is evicted and the
  // result is bit-identical to the full cache.
  const Session& s = session();
  const auto ids = s.tokenizer->encode(normalize_text(read_file(data_dir() + "/text/tinystories-sample.txt")), false);
  PerplexityOptions o;
  o.ctx = 449;  // BOS + 448 text tokens = 320 + 128 positions
  o.chunk = 64;
  o.prefix = 320;
  o.stride = 128;
  o.max_windows = 4;
  auto run = [&](const char* spec, PerplexityResult* r) {
    auto cache = make_cache(s.model.cfg, spec);
    Engine eng(s.model, *cache);
    std::string err;
    REQUIRE(perplexity(eng, ids, s.tokenizer->bos(), o, r, &err));
  };
  PerplexityResult full, big, small, every;
  run("full", &full);
  run("snapkv:budget=320,window=8,kernel=5,once=1", &big);
  run("snapkv:budget=64,window=8,kernel=5,once=1", &small);
  run("snapkv:budget=64,window=8,kernel=5", &every);  // compacts at every chunk end instead
  REQUIRE(ids.size() >= 3 * 128 + 448);
  CHECK(full.windows == 4);
  CHECK(full.predicted == 4 * (449 - 320));
  CHECK(full.fed == 4 * 449);
  CHECK(big.nll_sum == full.nll_sum);  // A1
  CHECK(small.predicted == full.predicted);
  CHECK(small.ppl() > full.ppl());
  // after compression the cache holds the budget + the continuation, far below the full cache
  CHECK(small.kv_bytes_end * 10 < full.kv_bytes_end * 6);  // 64 + 128 of 448 tokens (+ positions, window)
  CHECK(small.kv_bytes_end > every.kv_bytes_end);  // the continuation is appended, not evicted
  CHECK(small.nll_sum != every.nll_sum);
  // bad options
  auto cache = make_cache(s.model.cfg);
  Engine eng(s.model, *cache);
  std::string err;
  PerplexityResult bad;
  o.prefix = 449;
  CHECK_FALSE(perplexity(eng, ids, s.tokenizer->bos(), o, &bad, &err));
  CHECK(err.find("prefix") != std::string::npos);
  o.prefix = 320;
  o.ctx = 100000;
  CHECK_FALSE(perplexity(eng, ids, s.tokenizer->bos(), o, &bad, &err));
}

TEST_CASE("logits do not depend on the prefill chunk size", "[llama][cache]") {
  const Session& s = session();
  const auto ids = s.tokenizer->encode(normalize_text(read_file(data_dir() + "/text/tinystories-sample.txt")), true);
  const int n = 200;
  const int vocab = s.model.cfg.vocab;
  auto run = [&](int chunk, const std::string& spec) {
    auto cache = make_cache(s.model.cfg, spec);
    Engine eng(s.model, *cache);
    std::vector<float> all;
    Matrix logits;
    std::string err;
    for (int i = 0; i < n; i += chunk) {
      const int m = std::min(chunk, n - i);
      REQUIRE(eng.forward(0, ids.data() + i, m, &logits, false, &err));
      all.insert(all.end(), logits.data(), logits.data() + static_cast<std::size_t>(m) * vocab);
    }
    return all;
  };
  // Chunk sizes change only the fp32 summation order of the GEMMs (GEMV for one row, blocked GEMM
  // for many). With an fp32 cache that stays at fp32 rounding (measured ~1e-6 of the logit
  // range); with the fp16 cache the same tiny differences can flip a K/V rounding to fp16, so the
  // bound is the fp16 cache's own rounding (measured ~1e-4 of the range).
  for (const auto& [spec, bound] : {std::pair<std::string, float>{"full:fp32=1", 1e-5f}, {"full", 5e-4f}}) {
    const auto one = run(1, spec), seven = run(7, spec), big = run(200, spec);
    REQUIRE(one.size() == big.size());
    float range = 0, worst = 0;
    for (float x : big) range = std::max(range, std::abs(x));
    for (std::size_t i = 0; i < one.size(); ++i)
      for (float d : {std::abs(one[i] - big[i]), std::abs(seven[i] - big[i])})
        worst = static_cast<float>(memattn_test::worse(worst, d));  // a NaN fails the check
    INFO(spec << ": max |difference| / logit range = " << worst / range);
    CHECK(worst <= bound * range);
  }
}

TEST_CASE("the engine hands SentenceKV the sentence ends of the tokenizer's pieces", "[llama][cache][sentencekv]") {
  const Session& s = session();
  const auto table = sentence_end_table(*s.tokenizer);
  const std::string text = "Tom saw a dog. The dog was big! Was it happy? Yes.\nThen they played";
  const auto ids = s.tokenizer->encode(text, true);
  std::int64_t ends = 0;
  for (std::int32_t id : ids) ends += table[static_cast<std::size_t>(id)];
  CHECK(ends >= 5);  // . ! ? . and the line break (pieces may merge them)
  auto cache = make_cache(s.model.cfg, "sentencekv:budget=16,sink=2,recent=4");
  auto* skv = dynamic_cast<memattn::cpu::SentenceKvCache<memattn::Half>*>(cache.get());
  REQUIRE(skv != nullptr);
  Engine eng(s.model, *cache);
  eng.set_sentence_ends(table);
  Matrix logits;
  std::string err;
  for (std::size_t i = 0; i < ids.size(); i += 3)
    REQUIRE(eng.forward(0, ids.data() + i, static_cast<int>(std::min<std::size_t>(3, ids.size() - i)), &logits, false, &err));
  CHECK(skv->sentence_count(0) == ends + 1);
  CHECK(cache->host_bytes() > 0);
}

TEST_CASE("RoPE on adjacent pairs is the llama2.c convention (half-split is much worse)", "[llama][rope]") {
  Session s;
  std::string err;
  REQUIRE(load_session(memattn_llama_test::stories_model_path(), memattn_llama_test::stories_tok_path(), &s, &err));
  const std::string sample = data_dir() + "/text/tinystories-sample.txt";
  const double adjacent = ppl_of(s, sample, 257, 256);
  s.model.cfg.rope = RopeStyle::kHalfSplit;
  const double half = ppl_of(s, sample, 257, 256);
  CHECK(half > 1.5 * adjacent);
}

TEST_CASE("corrupt or truncated checkpoints are rejected with a message", "[llama][bad-input]") {
  const std::string bytes = read_file(memattn_llama_test::stories_model_path());
  REQUIRE(bytes.size() > 1000);
  const std::string tmp = "memattn_test_bad_checkpoint.bin";
  auto try_load = [&](const std::string& content) {
    std::ofstream(tmp, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
    Model m;
    std::string err;
    const bool ok = load_llama2c(tmp, &m, &err);
    if (!ok) CHECK(!err.empty());
    return ok;
  };
  for (std::size_t cut : {std::size_t(0), std::size_t(3), std::size_t(27), std::size_t(28), std::size_t(1000),
                          bytes.size() / 2, bytes.size() - 4, bytes.size() - 1})
    CHECK_FALSE(try_load(bytes.substr(0, cut)));
  CHECK_FALSE(try_load(bytes + "x"));
  std::string neg = bytes;
  const std::int32_t bad_dim = -64;
  std::memcpy(&neg[0], &bad_dim, 4);
  CHECK_FALSE(try_load(neg));
  std::string huge = bytes;
  const std::int32_t big = 1 << 30;
  std::memcpy(&huge[8], &big, 4);  // layers
  CHECK_FALSE(try_load(huge));
  std::string odd_heads = bytes;
  const std::int32_t heads = 3;
  std::memcpy(&odd_heads[12], &heads, 4);
  CHECK_FALSE(try_load(odd_heads));
  std::string nan_weight = bytes;
  const float nan = std::nanf("");
  std::memcpy(&nan_weight[28 + 4 * 100], &nan, 4);
  CHECK_FALSE(try_load(nan_weight));
  CHECK(try_load(bytes));
  std::remove(tmp.c_str());
}

TEST_CASE("the engine rejects a context overflow and bad token ids", "[llama][bad-input]") {
  const Session& s = session();
  auto cache = make_cache(s.model.cfg);
  Engine eng(s.model, *cache);
  std::string err;
  std::vector<std::int32_t> too_many(static_cast<std::size_t>(s.model.cfg.context) + 1, 5);
  CHECK_FALSE(eng.forward(0, too_many.data(), static_cast<int>(too_many.size()), nullptr, true, &err));
  CHECK(err.find("context") != std::string::npos);
  const std::int32_t bad = s.model.cfg.vocab;
  CHECK_FALSE(eng.forward(0, &bad, 1, nullptr, true, &err));
  CHECK(cache->tokens(0) == 0);
}

int main(int argc, char** argv) {
  memattn_llama_test::require_stories(false);
  return memattn_test::run_catch(argc, argv);
}

TEST_CASE("needle probe: the case is spliced as described, and a budget >= the prompt changes nothing (A1)", "[llama][needle]") {
  const Session& s = session();
  const auto hay = s.tokenizer->encode(normalize_text(read_file(data_dir() + "/text/tinystories-sample.txt")), false);
  REQUIRE(hay.size() > 200);
  const std::vector<std::int32_t> h(hay.begin(), hay.begin() + 200);
  const NeedleCase c = make_needle_case(*s.tokenizer, s.tokenizer->bos(), h, 0.25, "48213");
  const auto needle = s.tokenizer->encode(" The secret code of the blue vault is 48213.", false);
  const auto question = s.tokenizer->encode(needle_question(), false);
  REQUIRE(c.prompt.size() == 1 + h.size() + needle.size() + question.size());
  CHECK(c.needle_pos == 1 + 50);
  CHECK(std::equal(needle.begin(), needle.end(), c.prompt.begin() + c.needle_pos));
  CHECK(std::equal(h.begin(), h.begin() + 50, c.prompt.begin() + 1));
  CHECK(!c.answer.empty());
  const auto digits = digit_token_ids(*s.tokenizer);
  auto run = [&](const std::string& spec) {
    auto cache = make_cache(s.model.cfg, spec);
    Engine eng(s.model, *cache);
    NeedleResult r;
    std::string err;
    REQUIRE(run_needle_case(eng, c, 16, digits, &r, &err));
    REQUIRE(std::isfinite(r.logprob));
    CHECK(r.logprob < 0);
    return r;
  };
  const NeedleResult full = run("full");
  // H2O with a budget over the whole case never evicts: bit-identical scores (spec A1).
  const NeedleResult h2o = run("h2o:budget=512");
  CHECK(h2o.logprob == full.logprob);
  CHECK(h2o.exact == full.exact);
  // A 32-token StreamingLLM window cannot keep the needle: the code gets less likely.
  const NeedleResult tiny = run("streaming:sink=4,window=28");
  CHECK(tiny.logprob != full.logprob);
}

namespace {
// Records the signals the engine hands to end_chunk (SirLLM's log-probs), forwarding everything.
class SignalRecorder final : public memattn::cache::KvCache {
 public:
  explicit SignalRecorder(memattn::cache::KvCache& inner) : inner_(inner) {}
  const char* spec() const override { return inner_.spec(); }
  const memattn::cache::CacheShape& shape() const override { return inner_.shape(); }
  std::uint32_t wanted_signals() const override { return inner_.wanted_signals(); }
  memattn::Status attend(int seq, int layer, memattn::TensorView<const float, 3> q, memattn::TensorView<const float, 3> k,
                         memattn::TensorView<const float, 3> v, memattn::TensorView<float, 3> out) override {
    return inner_.attend(seq, layer, q, k, v, out);
  }
  memattn::Status end_chunk(int seq, const memattn::cache::ChunkSignals& s) override {
    for (int i = 0; i < s.count; ++i) {
      ids.push_back(s.token_ids[i]);
      lps.push_back(s.token_logprobs ? s.token_logprobs[i] : 1.f);
    }
    return inner_.end_chunk(seq, s);
  }
  memattn::Status reset(int seq) override { return inner_.reset(seq); }
  std::int64_t tokens(int seq) const override { return inner_.tokens(seq); }
  std::size_t bytes() const override { return inner_.bytes(); }
  std::size_t peak_bytes() const override { return inner_.peak_bytes(); }
  std::vector<std::int32_t> ids;
  std::vector<float> lps;

 private:
  memattn::cache::KvCache& inner_;
};
}  // namespace

TEST_CASE("the engine hands a log-prob-wanting cache log p(x_j | x_<j) of every chunk token (SirLLM)", "[llama][cache]") {
  const Session& s = session();
  const auto ids = s.tokenizer->encode(normalize_text(read_file(data_dir() + "/text/tinystories-sample.txt")), true);
  const int n = 120, vocab = s.model.cfg.vocab;
  auto full = make_cache(s.model.cfg, "full:fp32=1");
  Engine ref(s.model, *full);
  Matrix all;
  std::string err;
  REQUIRE(ref.forward(0, ids.data(), n, &all, false, &err));
  CHECK(full->wanted_signals() == memattn::cache::kSignalNone);
  auto sir = make_cache(s.model.cfg, "sirllm:budget=512");  // no eviction: same logits as the full cache
  REQUIRE((sir->wanted_signals() & memattn::cache::kSignalTokenLogProbs) != 0);
  SignalRecorder rec(*sir);
  Engine eng(s.model, rec);
  Matrix last;
  for (int i = 0; i < n; i += 7) {
    const int m = std::min(7, n - i);
    REQUIRE(eng.forward(0, ids.data() + i, m, &last, true, &err));
    REQUIRE(last.rows() == 1);  // last_only still returns one row
  }
  REQUIRE(rec.ids.size() == static_cast<std::size_t>(n));
  CHECK(std::isnan(rec.lps[0]));  // the first token has no predictor
  for (int j = 1; j < n; ++j) {
    REQUIRE(rec.ids[static_cast<std::size_t>(j)] == ids[static_cast<std::size_t>(j)]);
    const float* row = all.row(j - 1).data();
    double m = row[0], z = 0;
    for (int v = 1; v < vocab; ++v) m = std::max(m, static_cast<double>(row[v]));
    for (int v = 0; v < vocab; ++v) z += std::exp(row[v] - m);
    const double want = row[ids[static_cast<std::size_t>(j)]] - m - std::log(z);
    // fp16 cache vs fp32 reference: ~5e-3 measured; a misaligned row or id is off by O(1)
    REQUIRE(std::abs(rec.lps[static_cast<std::size_t>(j)] - want) <= 1e-2 + 1e-2 * std::abs(want));
  }
}
