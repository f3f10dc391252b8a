// CompressKV (spec eviction.md §3.11, arXiv 2508.02401): a layer's token set is chosen by its
// semantic-retrieval heads, and layer budgets are proportional to a measured per-layer
// attention-output error. Pure policy math + the offline table; the CPU scores live in
// cpu/compresskv_scores.hpp, the cache wiring in cpu/evict_kv_cache.hpp (layer-shared path) and
// cpu/compresskv_kv_cache.hpp (the --kv entry).
//
//   HeadSubsetWindow  scorer: SnapKV window attention of the layer's selected query heads only
//                     (each against its own KV head), summed over the window, pooled per head,
//                     then averaged over the selected heads -> one score per token of the layer.
//   ErrorTable        allocator: C_l = clip(m + round(e_l (L C - m L)), m, M), then +-1 in order of
//                     importance until sum_l C_l = L C exactly (reference
//                     longbench/pred_compresskv.py::error_aware_layer_budget_allocation).
//   TopK<kPerLayer>   one keep set per (sequence, layer), shared by all KV heads of the layer.
//
// The offline table (a versioned text file written by `memattn-llama retrieval-heads`):
//
//   memattn-compresskv-table 1
//   model <name, no spaces>
//   model_hash <16 hex digits: FNV-1a 64 of the model file>
//   shape <layers> <q_heads> <kv_heads> <head_dim>
//   probe <free text to the end of the line>
//   heads                      -- L lines: "<layer> <score of q head 0> ... <score of q head Hq-1>"
//   errors <budget>            -- L lines: "<layer> <relative attention-output error>"
//   end
//
// Scores and errors are finite and >= 0. Lines starting with '#' and blank lines are ignored.
// parse_compresskv_table() rejects anything else (wrong magic or version, a truncated file, a missing
// or extra row, a bad number) with kErrorParse and a message, and writes nothing on failure.
//
// Decisions ([lib], documented in the report):
//  * Heads are ranked per layer by their table score, ties by lower query-head index.
//  * The minimum layer budget m is max(w, min(min_tokens, C)) so that budgets below the reference's
//    32 (stories260K) stay valid and no layer drops below its protected window; M = max_factor * C
//    (reference 3C). All-zero errors give uniform budgets. m <= C <= M, so the sum is always exact.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/table_text.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

// ---- the offline table ---------------------------------------------------------------------------

struct CompressKvTable {
  static constexpr int kVersion = 1;
  std::string model = "unknown";
  std::uint64_t model_hash = 0;
  int layers = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  std::string probe;                  // how the head scores were measured (free text)
  std::vector<double> head_scores;    // [layers][q_heads]
  std::int64_t error_budget = 0;      // budget C the layer errors were measured at
  std::vector<double> layer_errors;   // [layers]
};

namespace compresskv_detail {
using table_text::parse_double;
using table_text::parse_int;
using table_text::words;
inline Status bad(std::string* error, int line, const std::string& msg) {
  if (error) *error = "CompressKV table line " + std::to_string(line) + ": " + msg;
  return Status::kErrorParse;
}
// L rows "<layer> v_0 .. v_{n-1}" starting at lines[*i]; values finite and >= 0.
inline Status parse_rows(const std::vector<std::string>& lines, std::size_t* i, int L, int n, const char* what,
                         std::vector<double>* out, std::string* error) {
  out->assign(static_cast<std::size_t>(L) * n, 0.0);
  for (int l = 0; l < L; ++l, ++*i) {
    if (*i >= lines.size()) return bad(error, static_cast<int>(*i) + 1, std::string("truncated: ") + what + " row of layer " + std::to_string(l) + " missing");
    const std::vector<std::string> w = words(lines[*i]);
    long long layer = -1;
    if (w.size() != static_cast<std::size_t>(n) + 1 || !parse_int(w[0], 0, L - 1, &layer) || layer != l)
      return bad(error, static_cast<int>(*i) + 1, std::string("expected the ") + what + " row of layer " + std::to_string(l) + " (layer index then " + std::to_string(n) + " numbers)");
    for (int c = 0; c < n; ++c) {
      double v = 0;
      if (!parse_double(w[static_cast<std::size_t>(c) + 1], &v) || v < 0)
        return bad(error, static_cast<int>(*i) + 1, std::string(what) + " value '" + w[static_cast<std::size_t>(c) + 1] + "' is not a finite number >= 0");
      (*out)[static_cast<std::size_t>(l) * n + c] = v;
    }
  }
  return Status::kSuccess;
}
}  // namespace compresskv_detail

inline std::string format_compresskv_table(const CompressKvTable& t) {
  std::ostringstream os;
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(t.model_hash));
  os << "memattn-compresskv-table " << CompressKvTable::kVersion << "\n";
  os << "model " << t.model << "\nmodel_hash " << hash << "\n";
  os << "shape " << t.layers << " " << t.q_heads << " " << t.kv_heads << " " << t.head_dim << "\n";
  std::string probe = t.probe;
  std::replace(probe.begin(), probe.end(), '\n', ' ');
  os << "probe " << probe << "\n";
  os.precision(9);
  os << "heads\n";
  for (int l = 0; l < t.layers; ++l) {
    os << l;
    for (int h = 0; h < t.q_heads; ++h) os << " " << t.head_scores[static_cast<std::size_t>(l) * t.q_heads + h];
    os << "\n";
  }
  os << "errors " << t.error_budget << "\n";
  for (int l = 0; l < t.layers; ++l) os << l << " " << t.layer_errors[static_cast<std::size_t>(l)] << "\n";
  os << "end\n";
  return os.str();
}

inline Status parse_compresskv_table(const std::string& text, CompressKvTable* out, std::string* error) {
  using namespace compresskv_detail;
  if (out == nullptr) return Status::kErrorNullPointer;
  std::vector<std::string> lines;  // significant lines only; numbers refer to them
  std::vector<int> line_no;
  table_text::significant_lines(text, &lines, &line_no);
  auto at = [&](std::size_t i) { return i < line_no.size() ? line_no[i] : static_cast<int>(line_no.empty() ? 1 : line_no.back() + 1); };
  CompressKvTable t;
  std::size_t i = 0;
  auto expect = [&](const char* key, std::vector<std::string>* w) -> bool {
    if (i >= lines.size()) return false;
    *w = words(lines[i]);
    return !w->empty() && (*w)[0] == key;
  };
  std::vector<std::string> w;
  long long v = 0;
  if (!expect("memattn-compresskv-table", &w)) return bad(error, at(i), "not a CompressKV table (expected 'memattn-compresskv-table 1')");
  if (w.size() != 2 || !parse_int(w[1], 0, 1 << 30, &v) || v != CompressKvTable::kVersion)
    return bad(error, at(i), "unsupported table version (this build reads version " + std::to_string(CompressKvTable::kVersion) + ")");
  ++i;
  if (!expect("model", &w) || w.size() != 2) return bad(error, at(i), "expected 'model <name>'");
  t.model = w[1];
  ++i;
  if (!expect("model_hash", &w) || w.size() != 2 || !table_text::is_hash16(w[1]))
    return bad(error, at(i), "expected 'model_hash <16 lower-case hex digits>'");
  t.model_hash = std::strtoull(w[1].c_str(), nullptr, 16);
  ++i;
  long long s[4];
  if (!expect("shape", &w) || w.size() != 5 || !parse_int(w[1], 1, 4096, &s[0]) || !parse_int(w[2], 1, 4096, &s[1]) ||
      !parse_int(w[3], 1, 4096, &s[2]) || !parse_int(w[4], 1, 4096, &s[3]) || s[1] % s[2] != 0)
    return bad(error, at(i), "expected 'shape <layers> <q_heads> <kv_heads> <head_dim>' (positive, q_heads a multiple of kv_heads)");
  t.layers = static_cast<int>(s[0]);
  t.q_heads = static_cast<int>(s[1]);
  t.kv_heads = static_cast<int>(s[2]);
  t.head_dim = static_cast<int>(s[3]);
  ++i;
  if (!expect("probe", &w)) return bad(error, at(i), "expected 'probe <description>'");
  t.probe = lines[i].substr(std::min(lines[i].size(), lines[i].find("probe") + 6));
  ++i;
  if (!expect("heads", &w) || w.size() != 1) return bad(error, at(i), "expected 'heads'");
  ++i;
  MEMATTN_RETURN_IF_ERROR(parse_rows(lines, &i, t.layers, t.q_heads, "head score", &t.head_scores, error));
  if (!expect("errors", &w) || w.size() != 2 || !parse_int(w[1], 1, 1ll << 40, &v))
    return bad(error, at(i), "expected 'errors <budget>'");
  t.error_budget = v;
  ++i;
  MEMATTN_RETURN_IF_ERROR(parse_rows(lines, &i, t.layers, 1, "layer error", &t.layer_errors, error));
  if (!expect("end", &w) || w.size() != 1) return bad(error, at(i), "truncated: expected 'end'");
  ++i;
  if (i != lines.size()) return bad(error, at(i), "unexpected content after 'end'");
  *out = std::move(t);
  return Status::kSuccess;
}

// The table must describe the model the cache serves (§4.5: can_implement rejects a mismatch).
inline Status check_compresskv_table(const CompressKvTable& t, int layers, int q_heads, int kv_heads, int head_dim,
                                     std::string* error) {
  if (t.layers == layers && t.q_heads == q_heads && t.kv_heads == kv_heads && t.head_dim == head_dim)
    return Status::kSuccess;
  if (error)
    *error = "CompressKV table is for shape " + std::to_string(t.layers) + "x" + std::to_string(t.q_heads) + "x" +
             std::to_string(t.kv_heads) + "x" + std::to_string(t.head_dim) + " (layers x q_heads x kv_heads x head_dim), the model is " +
             std::to_string(layers) + "x" + std::to_string(q_heads) + "x" + std::to_string(kv_heads) + "x" + std::to_string(head_dim);
  return Status::kErrorInvalidShape;
}

// The first_k query heads of `layer` with the highest scores, ascending head index in the result
// (ranking ties by lower head index). first_k is clamped to [1, q_heads].
inline std::vector<std::int32_t> retrieval_heads(const CompressKvTable& t, int layer, int first_k) {
  const int Hq = t.q_heads;
  std::vector<std::int32_t> idx(static_cast<std::size_t>(Hq));
  std::iota(idx.begin(), idx.end(), 0);
  const double* s = t.head_scores.data() + static_cast<std::size_t>(layer) * Hq;
  std::stable_sort(idx.begin(), idx.end(), [&](std::int32_t a, std::int32_t b) { return s[a] > s[b]; });
  idx.resize(static_cast<std::size_t>(std::max(1, std::min(first_k, Hq))));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Error-aware layer budgets (§3.11): e normalised to sum 1 (uniform when all are 0);
// C_l = clip(m + round(e_l (L C - m L)), m, M), then +1 to the most important layers below M
// (or -1 to the least important above m), one pass at a time in order of importance (ties by
// lower layer), until sum C_l = L C. Requires 1 <= m <= C <= M. out: L budgets.
inline Status error_aware_budgets(const double* errors, int L, std::int64_t C, std::int64_t m, std::int64_t M,
                                  std::int64_t* out) {
  if (errors == nullptr || out == nullptr) return Status::kErrorNullPointer;
  if (L <= 0 || m < 1 || C < m || M < C) return Status::kErrorInvalidArgument;
  double total = 0;
  for (int l = 0; l < L; ++l) {
    if (!(errors[l] >= 0) || !std::isfinite(errors[l])) return Status::kErrorNonFinite;
    total += errors[l];
  }
  std::vector<double> imp(static_cast<std::size_t>(L), 1.0 / L);
  if (total > 0)
    for (int l = 0; l < L; ++l) imp[static_cast<std::size_t>(l)] = errors[l] / total;
  const double remaining = static_cast<double>(L) * C - static_cast<double>(m) * L;
  std::vector<std::int64_t> b(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) {
    const double x = static_cast<double>(m) + std::nearbyint(imp[static_cast<std::size_t>(l)] * remaining);
    b[static_cast<std::size_t>(l)] = static_cast<std::int64_t>(std::min<double>(std::max<double>(x, m), M));
  }
  std::vector<int> order(static_cast<std::size_t>(L));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return imp[static_cast<std::size_t>(a)] > imp[static_cast<std::size_t>(c)]; });
  std::int64_t diff = static_cast<std::int64_t>(L) * C - std::accumulate(b.begin(), b.end(), std::int64_t{0});
  while (diff != 0) {
    const std::int64_t before = diff;
    if (diff > 0) {
      for (int l : order)
        if (diff > 0 && b[static_cast<std::size_t>(l)] < M) ++b[static_cast<std::size_t>(l)], --diff;
    } else {
      for (auto it = order.rbegin(); it != order.rend(); ++it)
        if (diff < 0 && b[static_cast<std::size_t>(*it)] > m) --b[static_cast<std::size_t>(*it)], ++diff;
    }
    if (diff == before) return Status::kErrorInvalidArgument;  // unreachable when m <= C <= M
  }
  std::copy(b.begin(), b.end(), out);
  return Status::kSuccess;
}

// What a CompressKV cache needs from the table for one configured budget: the selected heads of
// every layer and the layer budgets. Shared (immutable) between the Params copies.
struct CompressKvPlan {
  int first_k = 0;
  std::vector<std::int32_t> heads;     // [layers][first_k], ascending per layer
  std::vector<std::int64_t> budgets;   // [layers], sum = layers * C
  const std::int32_t* layer_heads(int layer) const { return heads.data() + static_cast<std::size_t>(layer) * first_k; }
};

// ---- components ----------------------------------------------------------------------------------

struct HeadSubsetWindow {
  static constexpr std::uint32_t kSignals = kWindowQueries | kExternalTable;
  static constexpr Granularity kGranularity = Granularity::kPerLayer;
  static constexpr StateKind kState = StateKind::kNone;
  static constexpr bool kNeedsDecodeProbs = false;
  static constexpr bool kNeedsWindowQueries = true;
  struct Params {
    int window = 8;
    int kernel = 5;
    PoolKind pool = PoolKind::kAvg;
    bool count_include_pad = true;  // reference parity (F.avg_pool1d default)
    GroupReduce reduce = GroupReduce::kMean;  // unused (each selected head scores alone); kept for the cache's interface
    std::shared_ptr<const CompressKvPlan> plan;
  };
};

struct ErrorTable {
  static constexpr Scope kScope = Scope::kPerLayer;  // a static table: layer l compacts right after its prefill
  static constexpr std::uint32_t kSignals = kExternalTable;
  struct Params {
    std::shared_ptr<const CompressKvPlan> plan;  // budgets computed for the policy's C
  };
  static std::int64_t budget(const Params& p, int layer, int layers, std::int64_t /*P*/, std::int64_t C,
                             std::int64_t /*w*/) {
    if (p.plan && static_cast<int>(p.plan->budgets.size()) == layers && layer >= 0 && layer < layers)
      return p.plan->budgets[static_cast<std::size_t>(layer)];
    return C;
  }
};

using CompressKV = EvictionPolicy<HeadSubsetWindow, ErrorTable, TopK<Granularity::kPerLayer>, NoMerge, AtPrefillEnd>;

// Parameters of a CompressKV cache of average budget C (window included) from a table checked
// against the model shape. Spec defaults: w = 8, k = 5, avgpool, first_k = 4, min 32, max 3C.
// The minimum layer budget is max(window, min(min_tokens, C)) so that no layer's budget falls
// below its protected observation window (that would break the exact sum).
inline Status compresskv_params(const CompressKvTable& t, std::int64_t C, int window, int first_k,
                                std::int64_t min_tokens, std::int64_t max_factor, CompressKV::Params* out,
                                std::string* error) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (C < 1 || window < 1 || C < window || first_k < 1 || min_tokens < 1 || max_factor < 1 ||
      t.head_scores.size() != static_cast<std::size_t>(t.layers) * t.q_heads ||
      t.layer_errors.size() != static_cast<std::size_t>(t.layers)) {
    if (error) *error = "compresskv: budget >= window >= 1, heads, min and maxf >= 1, and a complete table are required";
    return Status::kErrorInvalidArgument;
  }
  auto plan = std::make_shared<CompressKvPlan>();
  plan->first_k = std::min(first_k, t.q_heads);
  for (int l = 0; l < t.layers; ++l) {
    const std::vector<std::int32_t> h = retrieval_heads(t, l, plan->first_k);
    plan->heads.insert(plan->heads.end(), h.begin(), h.end());
  }
  plan->budgets.resize(static_cast<std::size_t>(t.layers));
  const Status st = error_aware_budgets(t.layer_errors.data(), t.layers, C,
                                        std::max<std::int64_t>(window, std::min(min_tokens, C)), max_factor * C,
                                        plan->budgets.data());
  if (st != Status::kSuccess) {
    if (error) *error = "compresskv: layer budgets could not be derived from the table's errors";
    return st;
  }
  CompressKV::Params p;
  p.budget = C;
  p.scorer.window = window;
  p.scorer.plan = plan;
  p.allocator.plan = plan;
  *out = p;
  return Status::kSuccess;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
