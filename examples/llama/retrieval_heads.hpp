// `memattn-llama retrieval-heads`: the offline measurement behind CompressKV (spec eviction.md
// §3.11), run on the real model and real text; writes an evict::CompressKvTable.
//
// 1. Semantic-retrieval head scores (copy/needle probe). Each probe is
//        BOS + haystack[0, a) + needle + haystack[a, H) + needle
//    where haystack and needle are two different spans of the real text and the needle sits at
//    depth a/H = (p + 0.5)/probes. The probe is teacher-forced; at every step of the repeated
//    needle whose greedy prediction is the correct next needle token (a "successful retrieval
//    step", the token-level stand-in for the reference's ROUGE-recall > 50 filter), every
//    (layer, query head) adds the attention mass its query puts on the first needle span
//    (semantic retrieval: mass on the whole span, not only on the copied token). Score = mean mass
//    per successful step. Reference: Retrieval_Head_Identification/semantic_retrieval_head_detection.py
//    (generated answer, whole-answer ROUGE filter) -- teacher forcing is the [lib] reading that works
//    for models too small to answer a needle question.
// 2. Per-layer attention-output error. On `windows` plain text windows of P + m tokens, each layer
//    is compressed alone: its prefix of P tokens keeps `budget` tokens chosen by CompressKV's own
//    selection (the retrieval heads of step 1, window w, pooling k; the library's scorer and
//    top-k), and the m following ("future") queries attend over the kept prefix + themselves.
//    e_l = mean over windows of ||Y_comp - Y_full||_F / ||Y_full||_F with Y = o_proj(attention
//    output) of the m future queries (§7.4's relative output error, measured after o_proj as the
//    reference does). fp64 attention; activations from the model's own forward (fp32 cache).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memattn/cpu/compresskv_scores.hpp>
#include <memattn/cpu/evict_scores.hpp>
#include <memattn/cpu/evict_select.hpp>
#include <memattn/evict/compresskv.hpp>
#include <memory>
#include <string>
#include <vector>

#include "engine.hpp"
#include "kv_factory.hpp"
#include "recording_cache.hpp"
#include "thread_pool.hpp"

namespace memattn_llama {

struct RetrievalHeadsOptions {
  int ctx = 512;         // probe and error-window length (tokens, BOS included)
  int probes = 8;
  int needle = 32;       // needle length (tokens)
  int chunk = 256;       // prefill chunk
  std::int64_t budget = 64;  // budget C the layer errors are measured at
  int window = 8, kernel = 5, first_k = 4;
  int windows = 4;       // error windows
  int future = 64;       // future queries per error window
};

struct RetrievalHeadsReport {
  std::int64_t steps = 0, successes = 0;  // repeated-needle steps, successful ones
};

// FNV-1a 64 of a file's bytes (the table's model_hash).
inline bool file_fnv1a64(const std::string& path, std::uint64_t* out, std::string* error) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(error, "cannot open '" + path + "'");
  std::uint64_t h = 1469598103934665603ull;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < f.gcount(); ++i) {
      h ^= static_cast<unsigned char>(buf[static_cast<std::size_t>(i)]);
      h *= 1099511628211ull;
    }
  }
  *out = h;
  return true;
}

namespace retrieval_detail {
using RowMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Runs `tokens` through a fresh fp32 full cache with recording; argmax of every position's logits
// when `argmax` is given.
inline bool record(const Model& model, ThreadPool* pool, const std::vector<std::int32_t>& tokens, int chunk,
                   std::unique_ptr<RecordingCache>* rec, std::unique_ptr<memattn::cache::KvCache>* inner,
                   std::vector<std::int32_t>* argmax_out, std::string* error) {
  memattn::cache::CacheShape shape;
  shape.layers = model.cfg.layers;
  shape.q_heads = model.cfg.heads;
  shape.kv_heads = model.cfg.kv_heads;
  shape.head_dim = model.cfg.head_dim;
  shape.max_tokens = static_cast<int>(tokens.size());
  std::string why;
  memattn::Executor ex = pool ? pool->executor() : memattn::Executor{};
  if (!memattn::ok(make_kv_cache("full:fp32=1", shape, ex, inner, &why))) return fail(error, why);
  rec->reset(new RecordingCache(**inner));
  Engine eng(model, **rec, pool);
  Matrix logits;
  if (argmax_out) argmax_out->clear();
  for (std::size_t i = 0; i < tokens.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), tokens.size() - i));
    if (!eng.forward(0, tokens.data() + i, n, argmax_out ? &logits : nullptr, false, error)) return false;
    if (argmax_out)
      for (int r = 0; r < n; ++r) {
        Eigen::Index best = 0;
        logits.row(r).maxCoeff(&best);
        argmax_out->push_back(static_cast<std::int32_t>(best));
      }
  }
  return true;
}

// fp64 attention output of query row q (D) over the keys/values of KV head h at positions `rows`.
inline void attend(const float* q, const std::vector<float>& K, const std::vector<float>& V, int Hkv, int h, int D,
                   const std::vector<std::int32_t>& rows, double* out) {
  std::vector<double> s(rows.size());
  double mx = -INFINITY;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const float* k = K.data() + (static_cast<std::size_t>(rows[r]) * Hkv + h) * D;
    double a = 0;
    for (int d = 0; d < D; ++d) a += static_cast<double>(q[d]) * k[d];
    s[r] = a * scale;
    mx = std::max(mx, s[r]);
  }
  double l = 0;
  for (double& x : s) l += (x = std::exp(x - mx));
  for (int d = 0; d < D; ++d) out[d] = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const float* v = V.data() + (static_cast<std::size_t>(rows[r]) * Hkv + h) * D;
    const double p = s[r] / l;
    for (int d = 0; d < D; ++d) out[d] += p * v[d];
  }
}

}  // namespace retrieval_detail

// Options and text length the measurement can work with (bad input: false and a message).
inline bool check_retrieval_options(const RetrievalHeadsOptions& o, int model_context, std::size_t text_tokens,
                                    std::string* error) {
  if (o.ctx < 4 * o.needle || o.ctx > model_context || o.needle < 2 || o.probes < 1 || o.windows < 1 || o.future < 1 ||
      o.budget < o.window || o.window < 1 || o.ctx - o.future <= o.budget || o.kernel < 1 || o.kernel % 2 == 0 ||
      o.first_k < 1 || o.chunk < 1)
    return fail(error, "retrieval-heads: need 2 <= needle <= ctx/4, ctx <= the model's context (" +
                           std::to_string(model_context) + "), probes, windows, future, heads >= 1, "
                           "window <= budget < ctx - future, an odd kernel");
  const std::size_t need = static_cast<std::size_t>(3 * o.ctx);
  if (text_tokens < need)
    return fail(error, "retrieval-heads: the text is too short (" + std::to_string(text_tokens) + " tokens, need " +
                           std::to_string(need) + ")");
  return true;
}

// Fills table->head_scores, layer_errors, error_budget, probe and the shape (model name and hash
// are the caller's). `text`: the real text's tokens (no BOS).
inline bool measure_retrieval_heads(const Model& model, ThreadPool* pool, const std::vector<std::int32_t>& text,
                                    const RetrievalHeadsOptions& o, memattn::evict::CompressKvTable* table,
                                    RetrievalHeadsReport* report, std::string* error) {
  using namespace retrieval_detail;
  const ModelConfig& c = model.cfg;
  const int L = c.layers, Hq = c.heads, Hkv = c.kv_heads, D = c.head_dim, G = Hq / Hkv;
  if (!check_retrieval_options(o, c.context, text.size(), error)) return false;
  const std::size_t room = text.size() - static_cast<std::size_t>(2 * o.ctx);
  *table = memattn::evict::CompressKvTable{};
  table->layers = L;
  table->q_heads = Hq;
  table->kv_heads = Hkv;
  table->head_dim = D;
  table->head_scores.assign(static_cast<std::size_t>(L) * Hq, 0.0);
  *report = RetrievalHeadsReport{};
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<float> scratch(memattn::cpu::probs_scratch_elems(1, D));
  std::vector<std::unique_ptr<memattn::cache::KvCache>> keep_alive(1);

  // ---- 1. head scores ----
  const int hay = o.ctx - 1 - 2 * o.needle;
  for (int p = 0; p < o.probes; ++p) {
    const std::size_t base = room * static_cast<std::size_t>(p) / static_cast<std::size_t>(o.probes);
    const std::int32_t* hs = text.data() + base;              // haystack: text[base, base + hay)
    const std::int32_t* nd = text.data() + base + o.ctx;      // needle: a later, disjoint span
    const int a = static_cast<int>(std::lround(hay * (p + 0.5) / o.probes));
    std::vector<std::int32_t> probe(1, c.bos);
    probe.insert(probe.end(), hs, hs + a);
    const int s1 = static_cast<int>(probe.size());
    probe.insert(probe.end(), nd, nd + o.needle);
    probe.insert(probe.end(), hs + a, hs + hay);
    const int s2 = static_cast<int>(probe.size());
    probe.insert(probe.end(), nd, nd + o.needle);
    std::unique_ptr<RecordingCache> rec;
    std::vector<std::int32_t> pred;
    if (!record(model, pool, probe, o.chunk, &rec, &keep_alive[0], &pred, error)) return false;
    for (int r = 0; r + 1 < o.needle; ++r) {
      const int t = s2 + r;  // query at repeated needle token r predicts needle token r + 1
      ++report->steps;
      if (pred[static_cast<std::size_t>(t)] != nd[r + 1]) continue;
      ++report->successes;
      const std::int64_t visible = t + 1;
      for (int l = 0; l < L; ++l)
        for (int h = 0; h < Hq; ++h) {
          const float* q = rec->q(l).data() + (static_cast<std::size_t>(t) * Hq + h) * D;
          const float* k = rec->k(l).data() + static_cast<std::size_t>(h / G) * D;
          float lse = 0;
          memattn::cpu::query_lse(q, D, 1, D, scale, k, static_cast<std::int64_t>(Hkv) * D, &visible, &lse, scratch.data());
          double mass = 0;
          memattn::cpu::decode_probs(q, D, &lse, 1, D, scale, k, static_cast<std::int64_t>(Hkv) * D, visible,
                                     memattn::evict::GroupReduce::kSum, scratch.data(), [&](std::int64_t j, float pj) {
                                       if (j >= s1 && j < s1 + o.needle) mass += pj;
                                     });
          table->head_scores[static_cast<std::size_t>(l) * Hq + h] += mass;
        }
    }
  }
  if (report->successes == 0)
    return fail(error, "retrieval-heads: the model never continued a repeated needle correctly; no head scores");
  for (double& s : table->head_scores) s /= static_cast<double>(report->successes);

  // ---- 2. layer errors at budget C with CompressKV's own selection ----
  table->error_budget = o.budget;
  table->layer_errors.assign(static_cast<std::size_t>(L), 0.0);
  const int P = o.ctx - o.future, w = o.window;
  std::vector<float> sc(static_cast<std::size_t>(P)), hs_scratch(memattn::cpu::head_subset_scratch_elems(w, D, P));
  std::vector<std::int64_t> vis(memattn::cpu::head_subset_visible_elems(w));
  std::vector<std::uint64_t> keys_scratch(static_cast<std::size_t>(P));
  std::vector<std::int32_t> keep(static_cast<std::size_t>(P)), kpos(static_cast<std::size_t>(P)), wpos(static_cast<std::size_t>(w));
  for (int j = 0; j < P; ++j) kpos[static_cast<std::size_t>(j)] = j;
  for (int i = 0; i < w; ++i) wpos[static_cast<std::size_t>(i)] = P - w + i;
  for (int win = 0; win < o.windows; ++win) {
    const std::size_t base = room * (2 * static_cast<std::size_t>(win) + 1) / (2 * static_cast<std::size_t>(o.windows));
    std::vector<std::int32_t> toks(1, c.bos);
    toks.insert(toks.end(), text.begin() + static_cast<std::ptrdiff_t>(base),
                text.begin() + static_cast<std::ptrdiff_t>(base) + (o.ctx - 1));
    std::unique_ptr<RecordingCache> rec;
    if (!record(model, pool, toks, o.chunk, &rec, &keep_alive[0], nullptr, error)) return false;
    for (int l = 0; l < L; ++l) {
      const std::vector<float>& Q = rec->q(l);
      const std::vector<float>& K = rec->k(l);
      const std::vector<float>& V = rec->v(l);
      std::vector<std::vector<float>> kh(static_cast<std::size_t>(Hkv), std::vector<float>(static_cast<std::size_t>(P) * D));
      std::vector<const float*> kp;
      for (int h = 0; h < Hkv; ++h) {
        for (int j = 0; j < P; ++j)
          std::copy_n(K.data() + (static_cast<std::size_t>(j) * Hkv + h) * D, D, kh[static_cast<std::size_t>(h)].data() + static_cast<std::size_t>(j) * D);
        kp.push_back(kh[static_cast<std::size_t>(h)].data());
      }
      const std::vector<std::int32_t> heads = memattn::evict::retrieval_heads(*table, l, o.first_k);
      memattn::Status st = memattn::cpu::head_subset_window_scores(
          Q.data() + static_cast<std::size_t>(P - w) * Hq * D, wpos.data(), w, Hq, Hkv, D, kp.data(), kpos.data(), P, P - w,
          heads.data(), static_cast<int>(heads.size()), o.kernel, memattn::evict::PoolKind::kAvg, true, sc.data(),
          hs_scratch.data(), vis.data());
      std::int64_t kept = 0;
      if (memattn::ok(st))
        st = memattn::cpu::select_keep(sc.data(), kpos.data(), P, o.budget, P - 1, memattn::evict::Protection{0, w},
                                       memattn::evict::TieBreak::kPreferEarlier, keys_scratch.data(), keep.data(), &kept);
      if (!memattn::ok(st)) return fail(error, std::string("retrieval-heads: selection failed: ") + memattn::status_message(st));
      std::vector<std::int32_t> rows_full, rows_comp(keep.begin(), keep.begin() + kept);
      for (int j = 0; j < P; ++j) rows_full.push_back(j);
      const Matrix& Wo = model.layers[static_cast<std::size_t>(l)].wo;  // [dim, Hq*D]
      RowMatrixD of(o.future, Hq * D), oc(o.future, Hq * D);
      for (int i = 0; i < o.future; ++i) {
        rows_full.push_back(P + i);
        rows_comp.push_back(P + i);
        for (int h = 0; h < Hq; ++h) {
          const float* q = Q.data() + (static_cast<std::size_t>(P + i) * Hq + h) * D;
          attend(q, K, V, Hkv, h / G, D, rows_full, of.data() + (static_cast<std::size_t>(i) * Hq + h) * D);
          attend(q, K, V, Hkv, h / G, D, rows_comp, oc.data() + (static_cast<std::size_t>(i) * Hq + h) * D);
        }
      }
      const Eigen::MatrixXd W = Wo.cast<double>();
      const RowMatrixD yf = of * W.transpose(), yc = oc * W.transpose();
      const double denom = yf.norm();
      table->layer_errors[static_cast<std::size_t>(l)] += (denom > 0 ? (yc - yf).norm() / denom : 0.0) / o.windows;
    }
  }
  char probe[256];
  std::snprintf(probe, sizeof probe,
                "teacher-forced needle repeat: %d probes x %d tokens, needle %d tokens, %lld/%lld successful steps; "
                "errors: %d windows, %d future queries, window %d, kernel %d, heads %d",
                o.probes, o.ctx, o.needle, static_cast<long long>(report->successes), static_cast<long long>(report->steps),
                o.windows, o.future, o.window, o.kernel, o.first_k);
  table->probe = probe;
  return true;
}

}  // namespace memattn_llama
