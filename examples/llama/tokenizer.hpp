// memattn-llama's tokenizers (umbrella header).
//
//   Tokenizer, StreamDecoder     tokenizer_base.hpp   the interface and streaming UTF-8 decoder
//   Llama2cTokenizer             tokenizer_llama2c.hpp  llama2.c's tok512.bin format and encoder
//   BpeTokenizer, BpeVocab       tokenizer_bpe.hpp    byte-level BPE (GPT-2 / SmolLM2)
//   load_bpe_tokenizer(gguf)     tokenizer_gguf.hpp   BpeTokenizer from GGUF metadata
//   apply_chat_template(msg)     chat_template.hpp    SmolLM2-Instruct's ChatML prompt
//
//   Llama2cTokenizer tok;  std::string err;
//   if (!Llama2cTokenizer::load("tok512.bin", /*vocab_size=*/512, &tok, &err)) { ... }
//   std::vector<int32_t> ids = tok.encode("Once upon a time", /*add_bos=*/true);
//   StreamDecoder out(tok);  for (int32_t id : generated) fputs(out.push(id).c_str(), stdout);
//   fputs(out.flush().c_str(), stdout);
#pragma once

#include "chat_template.hpp"
#include "tokenizer_base.hpp"
#include "tokenizer_bpe.hpp"
#include "tokenizer_gguf.hpp"
#include "tokenizer_llama2c.hpp"
