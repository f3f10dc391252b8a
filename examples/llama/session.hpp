// A loaded model with its tokenizer: llama2.c checkpoint + tok*.bin, or a GGUF file (weights,
// BPE tokenizer and chat template from its metadata).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "gguf.hpp"
#include "model.hpp"
#include "tokenizer.hpp"

namespace memattn_llama {

struct Session {
  Model model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::function<std::string(const std::string&)> chat_template;  // empty: no chat format
  std::int32_t chat_stop = -1;                                     // end-of-turn token for --chat
};

inline std::string sibling_path(const std::string& path, const std::string& name) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? name : path.substr(0, slash + 1) + name;
}

inline bool load_session(const std::string& model_path, const std::string& tokenizer_path, Session* s, std::string* error) {
  if (is_gguf_path(model_path)) {
    GgufFile g;
    if (!GgufFile::open(model_path, &g, error)) return false;
    if (!load_gguf(g, &s->model, error)) return fail(error, "'" + model_path + "': " + *error);
    auto tok = std::make_unique<BpeTokenizer>();
    if (!load_bpe_tokenizer(g, tok.get(), error)) return false;
    if (tok->vocab_size() != s->model.cfg.vocab)
      return fail(error, "GGUF tokenizer has " + std::to_string(tok->vocab_size()) + " tokens, the model " +
                             std::to_string(s->model.cfg.vocab));
    std::string jinja, system;
    if (g.get_string("tokenizer.chat_template", &jinja)) {
      if (!chat_template_default_system_prompt(jinja, &system)) system = kSmolLM2DefaultSystemPrompt;
      s->chat_template = [system](const std::string& msg) { return apply_chat_template(msg, system); };
      const std::vector<std::int32_t> end = tok->encode("<|im_end|>", false, true);
      if (end.size() == 1) s->chat_stop = end[0];
    }
    s->model.cfg.bos = tok->bos();
    s->tokenizer = std::move(tok);
    return true;
  }
  if (!load_llama2c(model_path, &s->model, error)) return false;
  const std::string tpath =
      tokenizer_path.empty() ? sibling_path(model_path, "tok" + std::to_string(s->model.cfg.vocab) + ".bin") : tokenizer_path;
  auto tok = std::make_unique<Llama2cTokenizer>();
  if (!Llama2cTokenizer::load(tpath, s->model.cfg.vocab, tok.get(), error)) return false;
  s->model.cfg.bos = tok->bos();
  s->model.cfg.eos = tok->eos();
  s->tokenizer = std::move(tok);
  return true;
}

}  // namespace memattn_llama
