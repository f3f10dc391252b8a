// memattn-llama on SmolLM2-135M-Instruct (GGUF, fetched by scripts/get-models.sh): the RoPE
// pairing the GGUF layout implies, perplexity sanity on WikiText-2, and a chat answer.
// Exits 77 when the model is absent. (Logit-level agreement with an independent numpy reference
// is tests/llama/check_smollm2_logits.py.)
#include <catch2/catch.hpp>
#include "common/catch_run.hpp"
#include <fstream>
#include <iterator>

#include "kv_factory.hpp"
#include "llama_test_data.hpp"
#include "session.hpp"
#include "tasks.hpp"

using namespace memattn_llama;

namespace {

std::string model_path() { return memattn_llama_test::models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }
std::string wiki_path() { return memattn_llama_test::data_dir() + "/text/wikitext-2-raw-test.txt"; }

Session& session() {
  static Session s;
  static bool loaded = false;
  if (!loaded) {
    std::string err;
    REQUIRE(load_session(model_path(), "", &s, &err));
    loaded = true;
  }
  return s;
}

std::unique_ptr<memattn::cache::KvCache> make_cache(const ModelConfig& c, int tokens) {
  memattn::cache::CacheShape shape{c.layers, c.heads, c.kv_heads, c.head_dim, tokens, 1};
  std::unique_ptr<memattn::cache::KvCache> cache;
  std::string err;
  REQUIRE(memattn_llama::make_kv_cache("full", shape, memattn::Executor{}, &cache, &err) == memattn::Status::kSuccess);
  return cache;
}

double wiki_ppl(Session& s, ThreadPool& pool, int tokens, int ctx) {
  std::ifstream f(wiki_path(), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(f)), {});
  auto ids = s.tokenizer->encode(text, false);
  ids.resize(static_cast<std::size_t>(tokens));
  auto cache = make_cache(s.model.cfg, ctx);
  Engine eng(s.model, *cache, &pool);
  PerplexityResult r;
  std::string err;
  REQUIRE(perplexity(eng, ids, s.tokenizer->bos(), ctx, 256, &r, &err));
  return r.ppl();
}

}  // namespace

TEST_CASE("GGUF llama weights are trained for adjacent-pair RoPE", "[llama][smollm2][rope]") {
  Session& s = session();
  ThreadPool pool;
  REQUIRE(s.model.cfg.rope == RopeStyle::kAdjacentPairs);
  const double adjacent = wiki_ppl(s, pool, 512, 256);
  s.model.cfg.rope = RopeStyle::kHalfSplit;
  const double half = wiki_ppl(s, pool, 512, 256);
  s.model.cfg.rope = RopeStyle::kAdjacentPairs;
  INFO("WikiText-2, 512 tokens, ctx 256: adjacent pairs " << adjacent << ", half-split " << half);
  CHECK(adjacent < 40);
  CHECK(half > 3 * adjacent);
}

TEST_CASE("SmolLM2-Instruct answers a simple question with --chat formatting", "[llama][smollm2][chat]") {
  Session& s = session();
  REQUIRE(s.chat_template);
  ThreadPool pool;
  const auto prompt = s.tokenizer->encode(s.chat_template("What is the capital of France?"), s.tokenizer->add_bos_default(), true);
  auto cache = make_cache(s.model.cfg, 256);
  Engine eng(s.model, *cache, &pool);
  std::vector<std::int32_t> out;
  std::string err;
  REQUIRE(greedy_generate(eng, 0, prompt, 40, 64, s.chat_stop, {}, &out, &err));
  const std::string answer = s.tokenizer->decode(out);
  INFO("answer: " << answer);
  CHECK(answer.find("Paris") != std::string::npos);
}

int main(int argc, char** argv) {
  memattn_llama_test::require_file(model_path(), "SmolLM2 GGUF (bash scripts/get-models.sh)");
  memattn_llama_test::require_file(wiki_path(), "wikitext-2-raw-test.txt (../shared/data)");
  return memattn_test::run_catch(argc, argv);
}
