// EpiCache's offline layer-sensitivity table (spec eviction.md §3.12): one score per layer, the
// mean cosine similarity of the layer's keys under block-masked attention vs full causal attention
// (higher = the layer changes less when it sees only blocks = it needs fewer tokens), measured on
// the real model by `memattn-llama layer-sensitivity` and turned into layer budgets by
// evict::power_sensitivity_budgets (evict/episode.hpp). A versioned text file:
//
//   memattn-layer-scores 1
//   model <name, no spaces>
//   model_hash <16 hex digits: FNV-1a 64 of the model file>
//   layers <L>
//   profile <free text to the end of the line: how the scores were measured>
//   scores                     -- L lines: "<layer> <score>", score finite, in [-1, 1]
//   end
//
// Blank lines and '#' comments are ignored; parse_layer_score_table() rejects anything else (wrong
// magic or version, a truncated file, a missing or extra row, a bad number) with kErrorParse and a
// message naming the line, and writes nothing on failure.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/table_text.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

struct LayerScoreTable {
  static constexpr int kVersion = 1;
  std::string model = "unknown";
  std::uint64_t model_hash = 0;
  std::string profile;        // measurement settings (free text)
  std::vector<double> scores;  // [layers]
};

inline std::string format_layer_score_table(const LayerScoreTable& t) {
  std::ostringstream os;
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(t.model_hash));
  std::string profile = t.profile;
  std::replace(profile.begin(), profile.end(), '\n', ' ');
  os << "memattn-layer-scores " << LayerScoreTable::kVersion << "\nmodel " << t.model << "\nmodel_hash " << hash
     << "\nlayers " << t.scores.size() << "\nprofile " << profile << "\nscores\n";
  os.precision(10);
  for (std::size_t l = 0; l < t.scores.size(); ++l) os << l << " " << t.scores[l] << "\n";
  os << "end\n";
  return os.str();
}

inline Status parse_layer_score_table(const std::string& text, LayerScoreTable* out, std::string* error) {
  using namespace table_text;
  if (out == nullptr) return Status::kErrorNullPointer;
  std::vector<std::string> lines;
  std::vector<int> line_no;
  significant_lines(text, &lines, &line_no);
  std::size_t i = 0;
  auto bad = [&](const std::string& msg) {
    const int n = i < line_no.size() ? line_no[i] : (line_no.empty() ? 1 : line_no.back() + 1);
    if (error) *error = "layer-score table line " + std::to_string(n) + ": " + msg;
    return Status::kErrorParse;
  };
  std::vector<std::string> w;
  auto expect = [&](const char* key, std::size_t n_words) {
    if (i >= lines.size()) return false;
    w = words(lines[i]);
    return w.size() == n_words && w[0] == key;
  };
  LayerScoreTable t;
  long long v = 0;
  if (i >= lines.size() || words(lines[i])[0] != "memattn-layer-scores")
    return bad("not a layer-score table (expected 'memattn-layer-scores 1')");
  if (!expect("memattn-layer-scores", 2) || !parse_int(w[1], 0, 1 << 30, &v) || v != LayerScoreTable::kVersion)
    return bad("unsupported table version (this build reads version " + std::to_string(LayerScoreTable::kVersion) + ")");
  ++i;
  if (!expect("model", 2)) return bad("expected 'model <name>'");
  t.model = w[1];
  ++i;
  if (!expect("model_hash", 2) || !is_hash16(w[1])) return bad("expected 'model_hash <16 lower-case hex digits>'");
  t.model_hash = std::strtoull(w[1].c_str(), nullptr, 16);
  ++i;
  if (!expect("layers", 2) || !parse_int(w[1], 1, 4096, &v)) return bad("expected 'layers <count in [1, 4096]>'");
  const int L = static_cast<int>(v);
  ++i;
  if (i >= lines.size() || words(lines[i])[0] != "profile") return bad("expected 'profile <description>'");
  t.profile = lines[i].substr(std::min(lines[i].size(), lines[i].find("profile") + 8));
  ++i;
  if (!expect("scores", 1)) return bad("expected 'scores'");
  ++i;
  t.scores.assign(static_cast<std::size_t>(L), 0.0);
  for (int l = 0; l < L; ++l, ++i) {
    if (i >= lines.size()) return bad("truncated: score row of layer " + std::to_string(l) + " missing");
    w = words(lines[i]);
    double s = 0;
    if (w.size() != 2 || !parse_int(w[0], 0, L - 1, &v) || v != l)
      return bad("expected the score row of layer " + std::to_string(l) + " ('<layer> <score>')");
    if (!parse_double(w[1], &s) || s < -1.0 || s > 1.0)
      return bad("score '" + w[1] + "' is not a finite number in [-1, 1]");
    t.scores[static_cast<std::size_t>(l)] = s;
  }
  if (!expect("end", 1)) return bad(i >= lines.size() ? "truncated: expected 'end'" : "expected 'end' after " + std::to_string(L) + " score rows");
  ++i;
  if (i != lines.size()) return bad("unexpected content after 'end'");
  *out = std::move(t);
  return Status::kSuccess;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
