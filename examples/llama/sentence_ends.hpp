// Which token ids end a sentence, from the tokenizer's own pieces: the engine hands the cache a
// per-token flag (cache::kSignalSentenceEnds) so policies such as SentenceKV never need to know
// the vocabulary. A piece ends a sentence when its text, trailing spaces removed, ends in one of
// . ! ? or it holds a line break (SentenceKV's punctuation ids, reference `punctuations_ids`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer_base.hpp"

namespace memattn_llama {

inline std::vector<std::uint8_t> sentence_end_table(const Tokenizer& tok) {
  std::vector<std::uint8_t> t(static_cast<std::size_t>(tok.vocab_size()), 0);
  for (int id = 0; id < tok.vocab_size(); ++id) {
    if (tok.is_control(id)) continue;
    std::string s = tok.decode(id);
    if (s.find('\n') != std::string::npos) {
      t[static_cast<std::size_t>(id)] = 1;
      continue;
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '"' || s.back() == '\'')) s.pop_back();
    if (!s.empty() && (s.back() == '.' || s.back() == '!' || s.back() == '?')) t[static_cast<std::size_t>(id)] = 1;
  }
  return t;
}

}  // namespace memattn_llama
