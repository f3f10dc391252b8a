// Needle in real text (spec eviction.md §7.5, protocol E5): a fact ("The secret code of the blue
// vault is NNNNN.") hidden at a relative depth of a real-text haystack, the whole prompt streamed
// through the KV cache in chunks (so an evicting policy compresses as it goes, never seeing the
// question before the needle is gone or kept), then the question, and the code's tokens
// teacher-forced:
//   logprob     sum of log p(code token | everything before) over the code's tokens,
//   exact       every teacher-forced argmax equals the code token (= greedy decoding reproduces
//               the code),
//   margin      mean over the code's digit tokens of log p(true digit) - mean log p(other 9
//               digits) at the same position. The spec's validity rule compares whole decoy codes
//               (20 extra teacher-forced passes each); the per-position digit decoys measure the
//               same thing from the one pass (documented deviation).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine.hpp"
#include "tokenizer.hpp"

namespace memattn_llama {

struct NeedleCase {
  std::vector<std::int32_t> prompt;  // BOS + haystack with the needle + question
  std::vector<std::int32_t> answer;  // the code's tokens as they follow the question
  std::int64_t needle_pos = 0;       // token index of the needle's first token in prompt
};

struct NeedleResult {
  double logprob = 0;
  double margin = 0;  // NaN when the code has no single-digit tokens
  bool exact = false;
};

inline const char* needle_question() {
  return " Question: What is the secret code of the blue vault? Answer: The secret code of the blue vault is";
}

// Builds a case from haystack tokens (already encoded text), the depth in [0, 1] and a code of
// decimal digits. The needle sentence is encoded on its own and spliced at a token boundary.
inline NeedleCase make_needle_case(const Tokenizer& tok, std::int32_t bos, const std::vector<std::int32_t>& haystack,
                                   double depth, const std::string& code) {
  NeedleCase c;
  const auto needle = tok.encode(" The secret code of the blue vault is " + code + ".", false);
  const std::string q = needle_question();
  const auto question = tok.encode(q, false);
  const auto with_answer = tok.encode(q + " " + code, false);
  const auto at = static_cast<std::ptrdiff_t>(std::llround(depth * static_cast<double>(haystack.size())));
  c.prompt.push_back(bos);
  c.prompt.insert(c.prompt.end(), haystack.begin(), haystack.begin() + at);
  c.needle_pos = static_cast<std::int64_t>(c.prompt.size());
  c.prompt.insert(c.prompt.end(), needle.begin(), needle.end());
  c.prompt.insert(c.prompt.end(), haystack.begin() + at, haystack.end());
  // The answer = what follows the question's tokens in the encoding of question + code; if the
  // tokenizer merges across that boundary, the code is encoded on its own.
  if (with_answer.size() > question.size() && std::equal(question.begin(), question.end(), with_answer.begin())) {
    c.prompt.insert(c.prompt.end(), question.begin(), question.end());
    c.answer.assign(with_answer.begin() + static_cast<std::ptrdiff_t>(question.size()), with_answer.end());
  } else {
    c.prompt.insert(c.prompt.end(), question.begin(), question.end());
    c.answer = tok.encode(" " + code, false);
  }
  return c;
}

// Streams the case through a fresh sequence 0 of the engine's cache in chunks of `chunk` tokens and
// scores the answer. digit_ids[d] = the token id of the digit d alone (-1 if not a single token).
inline bool run_needle_case(Engine& eng, const NeedleCase& c, int chunk, const std::vector<std::int32_t>& digit_ids,
                            NeedleResult* r, std::string* error) {
  const std::size_t total = c.prompt.size() + c.answer.size();
  if (c.answer.empty()) return fail(error, "the needle code encodes to no tokens");
  if (total > static_cast<std::size_t>(eng.config().context))
    return fail(error, "needle case of " + std::to_string(total) + " tokens exceeds the model's context " +
                           std::to_string(eng.config().context));
  if (!memattn::ok(eng.cache().reset(0)) || !memattn::ok(eng.cache().reserve(0, static_cast<int>(total))))
    return fail(error, "KV cache reset/reserve failed");
  Matrix logits;
  for (std::size_t i = 0; i < c.prompt.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), c.prompt.size() - i));
    memattn::cache::ChunkSignals sig;  // once=1 specs compress after the question (query-aware)
    sig.prompt_end = i + static_cast<std::size_t>(n) == c.prompt.size();
    if (!eng.forward(0, c.prompt.data() + i, n, &logits, true, error, sig)) return false;
  }
  const int vocab = eng.config().vocab;
  *r = NeedleResult{};
  r->exact = true;
  int digits = 0;
  double margin_sum = 0;
  for (std::size_t i = 0; i < c.answer.size(); ++i) {
    const float* row = logits.row(logits.rows() - 1).data();
    const float mx = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
    const double lse = std::log(sum) + mx;
    const std::int32_t target = c.answer[i];
    r->logprob += row[target] - lse;
    int best = 0;
    for (int v = 1; v < vocab; ++v)
      if (row[v] > row[best]) best = v;
    r->exact = r->exact && best == target;
    const auto d = std::find(digit_ids.begin(), digit_ids.end(), target);
    if (d != digit_ids.end()) {
      double others = 0;
      int n_others = 0;
      for (std::int32_t id : digit_ids)
        if (id >= 0 && id != target) {
          others += row[id] - lse;
          ++n_others;
        }
      if (n_others > 0) {
        margin_sum += (row[target] - lse) - others / n_others;
        ++digits;
      }
    }
    if (i + 1 < c.answer.size() && !eng.forward(0, &c.answer[i], 1, &logits, true, error)) return false;
  }
  r->margin = digits > 0 ? margin_sum / digits : std::nan("");
  return true;
}

// Token id of each digit 0-9 encoded alone (-1 where a digit is not exactly one token).
inline std::vector<std::int32_t> digit_token_ids(const Tokenizer& tok) {
  std::vector<std::int32_t> ids(10, -1);
  for (int d = 0; d < 10; ++d) {
    const auto e = tok.encode(std::string(1, static_cast<char>('0' + d)), false);
    if (e.size() == 1) ids[static_cast<std::size_t>(d)] = e[0];
  }
  return ids;
}

}  // namespace memattn_llama
