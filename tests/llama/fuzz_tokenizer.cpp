// libFuzzer target for the tokenizers (examples/llama/tokenizer*.hpp). Build and run with
//   bash scripts/fuzz.sh tokenizer [SECONDS]
// (clang++ -fsanitize=fuzzer,address,undefined; seeds from fuzz_tokenizer_seeds.cpp). By hand:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iexamples/llama -Itests \
//     tests/llama/fuzz_tokenizer.cpp -o fuzz_tokenizer && ./fuzz_tokenizer -max_total_time=60
//
// The first input byte picks what the rest is:
//   0  a llama2.c tokenizer file (as tok512.bin): load it (all tokens, and as many tokens as
//      the file seems to hold); when it loads, encode/decode a fixed text and the file's tail;
//   1  text for the llama2.c encoder: the synthetic vocabulary and, when ../shared/data (or
//      $MEMATTN_DATA_DIR) has it, the real tok512.bin; the priority-queue encoder must equal
//      llama2.c's O(n^2) loop, decode must give the text back, streaming must equal decode;
//   2  text for the byte-level BPE encoder on a synthetic vocabulary (both pre-tokenizers, with
//      and without special tokens): ids in range, pieces cover the text, decode gives the text
//      back, streaming equals decode;
//   3  a BPE vocabulary "tok\ntok\n...\n\nleft right\n..." (its first byte: bit 0 adds the 256 byte
//      symbols, bit 1 picks the gpt2 pre-tokenizer; tokens "<.." are control tokens unless bit 0):
//      build it and, when it builds, encode text with it.
// Any crash, sanitizer report or broken invariant (__builtin_trap) is a finding.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "llama/tokenizer_synthetic.hpp"
#include "tokenizer.hpp"

using namespace memattn_llama;

namespace {

void require(bool ok) {
  if (!ok) __builtin_trap();
}

const Llama2cTokenizer& synthetic_llama2c() {
  static const Llama2cTokenizer t = [] {
    Llama2cTokenizer r;
    const std::string f = tokenizer_synthetic::llama2c_file();
    require(Llama2cTokenizer::load_from_memory(f.data(), f.size(), 0, &r, nullptr));
    return r;
  }();
  return t;
}

const Llama2cTokenizer* real_tok512() {
  static const Llama2cTokenizer* t = [] {
    const char* env = std::getenv("MEMATTN_DATA_DIR");
    const std::string dir = env && *env ? env : "../shared/data";
    static Llama2cTokenizer r;
    return Llama2cTokenizer::load(dir + "/stories260K/tok512.bin", 512, &r, nullptr) ? &r : nullptr;
  }();
  return t;
}

const BpeTokenizer& synthetic_bpe(bool gpt2) {
  static const std::array<BpeTokenizer, 2> t = [] {
    BpeTokenizer a, b;
    BpeVocab v = tokenizer_synthetic::bpe_vocab();
    require(BpeTokenizer::build(v, &a, nullptr));
    v.pre = "gpt2";
    require(BpeTokenizer::build(v, &b, nullptr));
    return std::array<BpeTokenizer, 2>{std::move(a), std::move(b)};
  }();
  return t[gpt2 ? 1 : 0];
}

std::string streamed(const Tokenizer& tok, const std::vector<std::int32_t>& ids) {
  StreamDecoder dec(tok);
  std::string out;
  for (std::int32_t id : ids) out += dec.push(id);
  return out + dec.flush();
}

void check_ids(const Tokenizer& tok, const std::vector<std::int32_t>& ids) {
  for (std::int32_t id : ids) require(id >= 0 && id < tok.vocab_size());
}

void check_llama2c(const Llama2cTokenizer& tok, const std::string& text, bool reference) {
  const auto ids = tok.encode(text, true);
  check_ids(tok, ids);
  if (reference) require(ids == tok.encode_reference(text, true));
  require(tok.decode(ids) == text);
  require(streamed(tok, ids) == text);
}

void check_bpe(const BpeTokenizer& tok, const std::string& text, bool parse_special, bool all_bytes) {
  const auto ids = tok.encode(text, false, parse_special);
  check_ids(tok, ids);
  std::string joined;
  for (const std::string& p : tok.pre_tokenize(text)) {
    require(!p.empty());
    joined += p;
  }
  require(joined == text);
  if (all_bytes) require(tok.decode(ids, false) == text);
  require(streamed(tok, ids) == tok.decode(ids));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const unsigned mode = data[0] % 4;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (mode) {
    case 0: {
      for (std::int32_t vocab : {0, 512, 259}) {
        Llama2cTokenizer t;
        std::string err;
        if (!Llama2cTokenizer::load_from_memory(rest.data(), rest.size(), vocab, &t, &err)) {
          require(!err.empty() && t.vocab_size() == 0);
          continue;
        }
        require(t.vocab_size() >= 259);
        check_llama2c(t, "Once upon a time, \xc3\xa9\xff", true);
        check_llama2c(t, rest.substr(0, 64), true);
        for (std::int32_t id = -1; id <= t.vocab_size(); ++id) (void)t.decode(t.bos(), id);
      }
      break;
    }
    case 1: {
      const bool short_text = rest.size() <= 512;  // the reference loop is O(n^2)
      check_llama2c(synthetic_llama2c(), rest, short_text);
      if (const Llama2cTokenizer* real = real_tok512()) check_llama2c(*real, rest, short_text);
      break;
    }
    case 2: {
      for (bool gpt2 : {false, true})
        for (bool special : {false, true}) check_bpe(synthetic_bpe(gpt2), rest, special, true);
      break;
    }
    case 3: {
      const bool add_bytes = !rest.empty() && (rest[0] & 1);
      const bool gpt2 = !rest.empty() && (rest[0] & 2);
      BpeVocab v;
      v.pre = gpt2 ? "gpt2" : "smollm";
      std::size_t at = rest.empty() ? 0 : 1;
      bool in_merges = false;
      while (at <= rest.size()) {
        std::size_t nl = rest.find('\n', at);
        if (nl == std::string::npos) nl = rest.size();
        const std::string line = rest.substr(at, nl - at);
        if (line.empty() && !in_merges) {
          in_merges = true;
        } else if (in_merges) {
          v.merges.push_back(line);
        } else {
          v.tokens.push_back(line);
          v.token_types.push_back(!add_bytes && line.size() > 2 && line[0] == '<' ? 3 : 1);
        }
        at = nl + 1;
      }
      if (add_bytes)
        for (unsigned b = 0; b < 256; ++b) {
          v.tokens.push_back(tokenizer_synthetic::byte_symbol(b));
          v.token_types.push_back(1);
        }
      if (!v.tokens.empty()) v.bos = v.eos = 0;
      BpeTokenizer t;
      std::string err;
      if (!BpeTokenizer::build(v, &t, &err)) {
        require(!err.empty() && t.vocab_size() == 0);
        break;
      }
      for (bool special : {false, true}) {
        check_bpe(t, rest, special, false);
        check_bpe(t, "hello world's 123 \xc3\xa9\xff <x>", special, false);
      }
      if (add_bytes) check_bpe(t, "ab \xc3\xa9\xff", false, true);
      break;
    }
  }
  return 0;
}
