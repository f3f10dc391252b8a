// Loading the byte-level BPE tokenizer from a GGUF file's tokenizer.ggml.* metadata (gguf.hpp).
//
//   memattn_llama::BpeTokenizer tok;
//   if (!memattn_llama::load_bpe_tokenizer(gguf, &tok, &err)) { ... }
//
// Required keys: tokenizer.ggml.model ("gpt2"), tokenizer.ggml.pre (see tokenizer_bpe.hpp),
// tokenizer.ggml.tokens, tokenizer.ggml.merges. Optional: tokenizer.ggml.token_type,
// tokenizer.ggml.{bos,eos,unknown,padding}_token_id, tokenizer.ggml.add_bos_token (default
// false, as llama.cpp does for "gpt2").
#pragma once

#include <cstdint>
#include <string>

#include "gguf.hpp"
#include "tokenizer_bpe.hpp"

namespace memattn_llama {

inline bool bpe_vocab_from_gguf(const GgufFile& f, BpeVocab* out, std::string* error) {
  using tokenizer_detail::set_error;
  BpeVocab v;
  std::string model;
  if (!f.get_string("tokenizer.ggml.model", &model, error)) return false;
  if (model != "gpt2") {
    set_error(error, "tokenizer.ggml.model is '" + model + "'; only byte-level BPE ('gpt2') is supported");
    return false;
  }
  if (!f.get_string("tokenizer.ggml.pre", &v.pre, error)) return false;
  if (!f.get_string_array("tokenizer.ggml.tokens", &v.tokens, error)) return false;
  if (!f.get_string_array("tokenizer.ggml.merges", &v.merges, error)) return false;
  if (f.find("tokenizer.ggml.token_type") && !f.get_i32_array("tokenizer.ggml.token_type", &v.token_types, error))
    return false;
  const std::pair<const char*, std::int32_t*> ids[] = {{"tokenizer.ggml.bos_token_id", &v.bos},
                                                       {"tokenizer.ggml.eos_token_id", &v.eos},
                                                       {"tokenizer.ggml.unknown_token_id", &v.unknown},
                                                       {"tokenizer.ggml.padding_token_id", &v.padding}};
  for (const auto& [key, dst] : ids) {
    if (!f.find(key)) continue;
    std::uint32_t id = 0;
    if (!f.get_u32(key, &id, error)) return false;
    if (id >= v.tokens.size()) {
      set_error(error, std::string(key) + " = " + std::to_string(id) + " is not a token id (vocabulary of " +
                           std::to_string(v.tokens.size()) + ")");
      return false;
    }
    *dst = static_cast<std::int32_t>(id);
  }
  if (f.find("tokenizer.ggml.add_bos_token") && !f.get_bool("tokenizer.ggml.add_bos_token", &v.add_bos, error))
    return false;
  *out = std::move(v);
  return true;
}

inline bool load_bpe_tokenizer(const GgufFile& f, BpeTokenizer* out, std::string* error) {
  BpeVocab v;
  if (!bpe_vocab_from_gguf(f, &v, error)) return false;
  std::string why;
  if (!BpeTokenizer::build(v, out, &why)) {
    tokenizer_detail::set_error(error, "GGUF tokenizer: " + why);
    return false;
  }
  return true;
}

}  // namespace memattn_llama
