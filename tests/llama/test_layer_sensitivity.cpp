// `memattn-llama layer-sensitivity` on stories260K (skipped, 77, without ../shared/data): the
// block mask against the reference's rules, the unmasked BlockMaskCache against the library's
// full cache, the scores' invariants (layer 0 and a mask that hides nothing score exactly 1,
// deeper layers below 1, determinism) and the table's use by the epicache cache.
#include <catch2/catch.hpp>
#include "common/catch_run.hpp"
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memattn/evict/layer_scores.hpp>
#include <vector>

#include "kv_factory.hpp"
#include "layer_sensitivity.hpp"
#include "llama_test_data.hpp"
#include "stories_fixture.hpp"
#include "session.hpp"
#include "tasks.hpp"

using namespace memattn_llama;
using memattn_llama_test::data_dir;

namespace {

const Session& session() { return memattn_llama_test::stories_session(); }
std::vector<std::int32_t> text_tokens() { return memattn_llama_test::stories_text_tokens(); }

memattn::cache::CacheShape model_shape(int tokens) {
  const ModelConfig& c = session().model.cfg;
  return memattn::cache::CacheShape{c.layers, c.heads, c.kv_heads, c.head_dim, tokens, 1};
}

SensitivityOptions small_options() {
  SensitivityOptions o;
  o.ctx = 256;
  o.samples = 2;
  o.block = 64;
  o.sink = 8;
  o.overlap = 0.5;
  o.simwin = 50;
  o.chunk = 96;  // chunks that straddle blocks
  return o;
}

}  // namespace

TEST_CASE("block mask == the reference's three rules (own block causal, previous block's overlap, sinks)",
          "[llama][epicache]") {
  for (int block : {1, 7, 64})
    for (int sink : {0, 3, 100})
      for (int overlap : {0, 2, 7, 64}) {
        BlockMaskCache c(model_shape(200), block, sink, overlap);
        for (int i = 0; i < 200; ++i)
          for (int j = 0; j <= i; ++j) {
            // the reference's mask, built rule by rule
            bool m = sink < 200 && i >= sink && j < sink;
            const int b = i / block, ws = b * block;
            if (j >= ws && j <= i) m = true;
            if (b > 0 && overlap > 0) {
              const int ps = (b - 1) * block, pe = ps + block;
              if (j >= std::max(ps, pe - overlap) && j < pe) m = true;
            }
            INFO("block " << block << " sink " << sink << " overlap " << overlap << " i " << i << " j " << j);
            REQUIRE(c.visible(i, j) == m);
          }
      }
  BlockMaskCache full(model_shape(50), 0, 0, 0);
  for (int i = 0; i < 50; ++i)
    for (int j = 0; j <= i; ++j) REQUIRE(full.visible(i, j));
}

TEST_CASE("unmasked BlockMaskCache gives the full cache's logits", "[llama][epicache]") {
  const Session& s = session();
  const std::vector<std::int32_t> ids = text_tokens();
  std::vector<std::int32_t> toks(1, s.model.cfg.bos);
  toks.insert(toks.end(), ids.begin(), ids.begin() + 199);
  BlockMaskCache mine(model_shape(200), 0, 0, 0);
  std::unique_ptr<memattn::cache::KvCache> ref;
  std::string err;
  REQUIRE(make_kv_cache("full:fp32=1", model_shape(200), memattn::Executor{}, &ref, &err) == memattn::Status::kSuccess);
  Engine a(s.model, mine), b(s.model, *ref);
  Matrix la, lb;
  for (int i = 0; i < 200; i += 64) {
    const int n = std::min(64, 200 - i);
    REQUIRE(a.forward(0, toks.data() + i, n, &la, false, &err));
    REQUIRE(b.forward(0, toks.data() + i, n, &lb, false, &err));
    CHECK((la - lb).cwiseAbs().maxCoeff() < 2e-4f);
  }
  CHECK(mine.tokens(0) == 200);
  CHECK(mine.keys(0).size() == static_cast<std::size_t>(200 * s.model.cfg.kv_heads * s.model.cfg.head_dim));
}

TEST_CASE("layer scores: layer 0 and a mask that hides nothing score 1, deeper layers less; deterministic",
          "[llama][epicache]") {
  const Session& s = session();
  const std::vector<std::int32_t> ids = text_tokens();
  SensitivityOptions o = small_options();
  memattn::evict::LayerScoreTable t1, t2, all;
  std::string err;
  REQUIRE(measure_layer_sensitivity(s.model, nullptr, ids, o, &t1, &err));
  INFO(err);
  REQUIRE(t1.scores.size() == static_cast<std::size_t>(s.model.cfg.layers));
  CHECK(std::abs(t1.scores[0] - 1.0) < 1e-12);  // layer-0 keys never depend on attention
  double below = 0;
  for (double x : t1.scores) {
    CHECK(x <= 1.0 + 1e-12);
    CHECK(x > 0.5);
    below = std::max(below, 1.0 - x);
  }
  CHECK(below > 1e-5);  // the mask changes the deeper layers' keys
  REQUIRE(measure_layer_sensitivity(s.model, nullptr, ids, o, &t2, &err));
  CHECK(t1.scores == t2.scores);
  // Two blocks, the whole first block as overlap: every query sees its whole past.
  o.block = 128;
  o.overlap = 1.0;
  REQUIRE(measure_layer_sensitivity(s.model, nullptr, ids, o, &all, &err));
  for (double x : all.scores) CHECK(std::abs(x - 1.0) < 1e-12);
  CHECK(t1.profile.find("block 64, sink 8, overlap 32") != std::string::npos);
}

TEST_CASE("layer-sensitivity: bad options, and the table drives epicache's layer budgets", "[llama][epicache]") {
  const Session& s = session();
  const std::vector<std::int32_t> ids = text_tokens();
  const int context = s.model.cfg.context;
  std::string err;
  SensitivityOptions o = small_options();
  o.block = o.ctx;
  CHECK_FALSE(check_sensitivity_options(o, context, ids.size(), &err));
  o = small_options();
  o.overlap = 1.5;
  CHECK_FALSE(check_sensitivity_options(o, context, ids.size(), &err));
  o = small_options();
  o.ctx = context + 1;
  CHECK_FALSE(check_sensitivity_options(o, context, ids.size(), &err));
  o = small_options();
  CHECK_FALSE(check_sensitivity_options(o, context, 100, &err));
  CHECK(err.find("too short") != std::string::npos);

  memattn::evict::LayerScoreTable t;
  REQUIRE(measure_layer_sensitivity(s.model, nullptr, ids, small_options(), &t, &err));
  const std::string path = "/tmp/memattn_test_layer_sensitivity.scores";
  {
    std::ofstream f(path);
    f << memattn::evict::format_layer_score_table(t);
  }
  const ModelConfig& c = s.model.cfg;
  std::unique_ptr<memattn::cache::KvCache> cache;
  REQUIRE(make_kv_cache("epicache:budget=32,block=16,scores=" + path, model_shape(c.context), memattn::Executor{}, &cache,
                        &err) == memattn::Status::kSuccess);
  Engine eng(s.model, *cache);
  PerplexityResult r;
  REQUIRE(perplexity(eng, ids, c.bos, 256, 16, &r, &err));
  CHECK(r.ppl() > 1.0);
  CHECK(r.ppl() < 20.0);
  CHECK(r.kv_bytes_peak < r.kv_bytes_full);
  std::remove(path.c_str());
}

int main(int argc, char** argv) {
  memattn_llama_test::require_stories(true);
  return memattn_test::run_catch(argc, argv);
}
