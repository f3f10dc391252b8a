// `memattn-llama retrieval-heads` on stories260K (skipped, 77, without ../shared/data): the
// semantic-retrieval head score of every (layer, head) against an fp64 recomputation from the
// recorded activations of the same probe, determinism, the table round trip and its use by the
// compresskv cache, and layer errors that shrink as the budget grows.
#include <catch2/catch.hpp>
#include "common/catch_run.hpp"
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memattn/evict/compresskv.hpp>
#include <vector>

#include "kv_factory.hpp"
#include "llama_test_data.hpp"
#include "stories_fixture.hpp"
#include "retrieval_heads.hpp"
#include "session.hpp"
#include "tasks.hpp"

using namespace memattn_llama;
using memattn_llama_test::data_dir;

namespace {

const Session& session() { return memattn_llama_test::stories_session(); }
std::vector<std::int32_t> text_tokens() { return memattn_llama_test::stories_text_tokens(); }

RetrievalHeadsOptions small_options() {
  RetrievalHeadsOptions o;
  o.ctx = 256;
  o.probes = 1;
  o.needle = 24;
  o.budget = 48;
  o.windows = 2;
  o.future = 32;
  return o;
}

}  // namespace

TEST_CASE("head scores == fp64 attention mass on the needle over the successful repeat steps", "[llama][compresskv]") {
  const Session& s = session();
  const auto ids = text_tokens();
  const RetrievalHeadsOptions o = small_options();
  memattn::evict::CompressKvTable t;
  RetrievalHeadsReport rep;
  std::string err;
  REQUIRE(measure_retrieval_heads(s.model, nullptr, ids, o, &t, &rep, &err));
  INFO(err);
  REQUIRE(rep.steps == o.needle - 1);
  REQUIRE(rep.successes > 0);

  // the probe as documented: BOS + hay[0, a) + needle + hay[a, H) + needle, needle = text[ctx, ctx + n)
  const ModelConfig& c = s.model.cfg;
  const int hay = o.ctx - 1 - 2 * o.needle, a = static_cast<int>(std::lround(hay * 0.5));
  std::vector<std::int32_t> probe(1, c.bos);
  probe.insert(probe.end(), ids.begin(), ids.begin() + a);
  const int s1 = static_cast<int>(probe.size());
  probe.insert(probe.end(), ids.begin() + o.ctx, ids.begin() + o.ctx + o.needle);
  probe.insert(probe.end(), ids.begin() + a, ids.begin() + hay);
  const int s2 = static_cast<int>(probe.size());
  probe.insert(probe.end(), ids.begin() + o.ctx, ids.begin() + o.ctx + o.needle);
  REQUIRE(static_cast<int>(probe.size()) == o.ctx);
  std::unique_ptr<RecordingCache> rec;
  std::unique_ptr<memattn::cache::KvCache> inner;
  std::vector<std::int32_t> pred;
  REQUIRE(retrieval_detail::record(s.model, nullptr, probe, 256, &rec, &inner, &pred, &err));
  const int L = c.layers, Hq = c.heads, Hkv = c.kv_heads, D = c.head_dim, G = Hq / Hkv;
  std::vector<double> want(static_cast<std::size_t>(L * Hq), 0.0);
  std::int64_t ok = 0;
  for (int r = 0; r + 1 < o.needle; ++r) {
    const int tq = s2 + r;
    if (pred[static_cast<std::size_t>(tq)] != probe[static_cast<std::size_t>(s1 + r + 1)]) continue;
    ++ok;
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < Hq; ++h) {
        const float* q = rec->q(l).data() + (static_cast<std::size_t>(tq) * Hq + h) * D;
        std::vector<double> sc;
        double mx = -INFINITY;
        for (int j = 0; j <= tq; ++j) {
          const float* k = rec->k(l).data() + (static_cast<std::size_t>(j) * Hkv + h / G) * D;
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * k[d];
          sc.push_back(dot / std::sqrt(static_cast<double>(D)));
          mx = std::max(mx, sc.back());
        }
        double z = 0, m = 0;
        for (int j = 0; j <= tq; ++j) z += std::exp(sc[static_cast<std::size_t>(j)] - mx);
        for (int j = s1; j < s1 + o.needle; ++j) m += std::exp(sc[static_cast<std::size_t>(j)] - mx) / z;
        want[static_cast<std::size_t>(l * Hq + h)] += m;
      }
  }
  REQUIRE(ok == rep.successes);
  for (int i = 0; i < L * Hq; ++i) {
    INFO("layer " << i / Hq << " head " << i % Hq);
    CHECK(std::abs(t.head_scores[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)] / ok) <=
          1e-5 * want[static_cast<std::size_t>(i)] / ok + 1e-7);
  }
}

TEST_CASE("the table is deterministic, round-trips, drives a compresskv cache; errors shrink with the budget",
          "[llama][compresskv]") {
  const Session& s = session();
  const auto ids = text_tokens();
  RetrievalHeadsOptions o = small_options();
  memattn::evict::CompressKvTable t1, t2, t_big;
  RetrievalHeadsReport rep;
  std::string err;
  REQUIRE(measure_retrieval_heads(s.model, nullptr, ids, o, &t1, &rep, &err));
  REQUIRE(measure_retrieval_heads(s.model, nullptr, ids, o, &t2, &rep, &err));
  CHECK(memattn::evict::format_compresskv_table(t1) == memattn::evict::format_compresskv_table(t2));
  o.budget = 160;
  REQUIRE(measure_retrieval_heads(s.model, nullptr, ids, o, &t_big, &rep, &err));
  double e_small = 0, e_big = 0;
  for (int l = 0; l < t1.layers; ++l) {
    CHECK(t1.layer_errors[static_cast<std::size_t>(l)] > 0);
    CHECK(std::isfinite(t1.layer_errors[static_cast<std::size_t>(l)]));
    e_small += t1.layer_errors[static_cast<std::size_t>(l)];
    e_big += t_big.layer_errors[static_cast<std::size_t>(l)];
  }
  CHECK(e_big < e_small);
  memattn::evict::CompressKvTable back;
  REQUIRE(memattn::evict::parse_compresskv_table(memattn::evict::format_compresskv_table(t1), &back, &err) ==
          memattn::Status::kSuccess);
  const std::string path = "/tmp/memattn_test_retrieval_heads.table";
  {
    std::ofstream f(path);
    f << memattn::evict::format_compresskv_table(t1);
  }
  const ModelConfig& c = s.model.cfg;
  memattn::cache::CacheShape shape{c.layers, c.heads, c.kv_heads, c.head_dim, c.context, 1};
  std::unique_ptr<memattn::cache::KvCache> cache;
  REQUIRE(memattn_llama::make_kv_cache("compresskv:budget=32,table=" + path, shape, memattn::Executor{}, &cache, &err) ==
          memattn::Status::kSuccess);
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
