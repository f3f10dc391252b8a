// Small synthetic tokenizers for the tokenizer tests and the fuzzer (no data files needed).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer.hpp"

namespace tokenizer_synthetic {

// Serialises a llama2.c tokenizer file: int32 max_token_length, then {float score; int32 len; bytes}.
inline std::string llama2c_file(const std::vector<std::pair<std::string, float>>& tokens, std::int32_t max_len) {
  std::string out;
  auto put = [&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
  put(&max_len, 4);
  for (const auto& [s, score] : tokens) {
    const auto len = static_cast<std::int32_t>(s.size());
    put(&score, 4);
    put(&len, 4);
    put(s.data(), s.size());
  }
  return out;
}

// The tokens of a small llama2.c vocabulary: <unk>, BOS, EOS, the 256 byte pieces, then pieces
// with scores (two pairs of equal scores, for the leftmost-on-ties rule).
inline std::vector<std::pair<std::string, float>> llama2c_tokens() {
  std::vector<std::pair<std::string, float>> t = {{"<unk>", 0.f}, {"\n<s>\n", 0.f}, {"\n</s>\n", 0.f}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    t.emplace_back(name, 0.f);
  }
  const std::pair<const char*, float> pieces[] = {
      {" ", -20.f},  {"a", -21.f},   {"b", -22.f},   {"c", -23.f},   {"\xc3\xa9", -24.f},  // é
      {"!", -25.f},  {" a", -1.f},   {"ab", -2.f},   {"bc", -2.f},   {"abc", -3.f},  {" ab", -4.f},
      {"aa", -5.f},  {"aaa", -5.f},  {" b", -6.f},   {"\xc3\xa9!", -7.f}, {"  ", -8.f}, {" abc", -0.5f},
      {"ca", -9.f},  {"cab", -9.5f}, {"\xe6\x97\xa5", -26.f}};  // 日
  for (const auto& [s, score] : pieces) t.emplace_back(s, score);
  return t;
}

inline std::string llama2c_file() { return llama2c_file(llama2c_tokens(), 8); }

// GPT-2's byte-level symbol of byte b, as UTF-8.
inline std::string byte_symbol(unsigned b) {
  std::string s;
  memattn_llama::tokenizer_detail::append_utf8(memattn_llama::tokenizer_detail::byte_to_unicode(b), &s);
  return s;
}

// A small byte-level BPE vocabulary: control tokens first (ids 0..2), the 256 byte symbols, one
// user-defined token, then the merged tokens in merge order.
inline memattn_llama::BpeVocab bpe_vocab() {
  memattn_llama::BpeVocab v;
  v.pre = "smollm";
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  v.token_types = {3, 3, 3};
  for (unsigned b = 0; b < 256; ++b) {
    v.tokens.push_back(byte_symbol(b));
    v.token_types.push_back(1);
  }
  v.tokens.push_back("<user>");
  v.token_types.push_back(4);
  const char* merges[] = {"\xc4\xa0 a", "a b", "ab c", "\xc4\xa0 \xc4\xa0", "h e", "he l", "hel l", "hell o",
                          "\xc4\xa0 hello", "' s", "\xc3\x83 \xc2\xa9", ("\xc4\xa0" "a b"), "1 2", "\xc4\x8a \xc4\x8a",
                          "a a", "aa a"};
  for (const char* m : merges) {
    const std::string s = m;
    const std::size_t sp = s.find(' ');
    v.merges.push_back(s);
    v.tokens.push_back(s.substr(0, sp) + s.substr(sp + 1));
    v.token_types.push_back(1);
  }
  v.bos = 1;
  v.eos = 2;
  v.unknown = 0;
  v.padding = 2;
  return v;
}

}  // namespace tokenizer_synthetic
