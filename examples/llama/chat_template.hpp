// The chat prompt of SmolLM2-Instruct (ChatML), written by hand from the GGUF's
// tokenizer.chat_template (Jinja), which for one user message without a system message renders
//   <|im_start|>system\n{default system prompt}<|im_end|>\n
//   <|im_start|>user\n{message}<|im_end|>\n
//   <|im_start|>assistant\n
// with the default system prompt "You are a helpful AI assistant named SmolLM, trained by
// Hugging Face". Encode the result with parse_special = true; the model ends its answer with
// <|im_end|> (its eos). The message is not escaped: a message containing "<|im_end|>" text is
// read as that control token, as with the reference template.
#pragma once

#include <string>

namespace memattn_llama {

inline constexpr const char* kSmolLM2DefaultSystemPrompt =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

inline std::string apply_chat_template(const std::string& user_message,
                                       const std::string& system_prompt = kSmolLM2DefaultSystemPrompt) {
  std::string s;
  s.reserve(user_message.size() + system_prompt.size() + 80);
  s += "<|im_start|>system\n";
  s += system_prompt;
  s += "<|im_end|>\n<|im_start|>user\n";
  s += user_message;
  s += "<|im_end|>\n<|im_start|>assistant\n";
  return s;
}

// The default system prompt written in a ChatML Jinja template (the text between
// "<|im_start|>system\n" and the next "<|im_end|>"), e.g. from tokenizer.chat_template.
// False when the template has none.
inline bool chat_template_default_system_prompt(const std::string& jinja, std::string* system_prompt) {
  const std::string open = "<|im_start|>system\n";
  const std::size_t b = jinja.find(open);
  if (b == std::string::npos) return false;
  const std::size_t e = jinja.find("<|im_end|>", b + open.size());
  if (e == std::string::npos) return false;
  *system_prompt = jinja.substr(b + open.size(), e - b - open.size());
  return true;
}

}  // namespace memattn_llama
