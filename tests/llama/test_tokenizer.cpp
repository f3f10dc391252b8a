// Tests of memattn-llama's tokenizers (examples/llama/tokenizer*.hpp).
//
// Tags, one ctest test each (tests/llama/CMakeLists.txt):
//   [synthetic]  no data: UTF-8 helpers, synthetic vocabularies, loader errors, pre-tokenization
//                against Hugging Face's pre-tokenizers, streaming, chat template;
//   [tok512]     ../shared/data: stories260K/tok512.bin and the TinyStories texts;
//   [smollm2]    SmolLM2-135M-Instruct.Q4_1.gguf in MEMATTN_MODELS_DIR (scripts/get-models.sh)
//                and wikitext-2-raw-test.txt.
// A data test whose files are absent prints why and exits 77 (skipped). Environment variables
// MEMATTN_DATA_DIR and MEMATTN_MODELS_DIR override the build-time defaults.
//
// The expected ids (tokenizer_goldens.hpp) come from independent references, produced by
// make_tokenizer_goldens.py: llama2.c's encode() transcribed into Python for tok512.bin, and
// Hugging Face `tokenizers` built from the GGUF's vocabulary and merges for SmolLM2.
#include <catch2/catch.hpp>  // implementation in catch_runner.cpp

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer.hpp"
#include "tokenizer_test_data.hpp"
#include "tokenizer_goldens.hpp"
#include "gguf_builder.hpp"
#include "tokenizer_synthetic.hpp"

using namespace memattn_llama;
namespace g = tokenizer_goldens;

namespace {

using namespace tokenizer_test_data;

// The perplexity protocol's text normalisation: <|endoftext|> removed, whitespace runs collapsed
// to one space, no space at either end (as Python's " ".join(s.split()) on this ASCII text).
std::string normalise(std::string s) {
  const std::string eot = "<|endoftext|>";
  for (std::size_t p; (p = s.find(eot)) != std::string::npos;) s.erase(p, eot.size());
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

const Llama2cTokenizer& synthetic_llama2c() {
  static const Llama2cTokenizer tok = [] {
    Llama2cTokenizer t;
    std::string err;
    const std::string file = tokenizer_synthetic::llama2c_file();
    if (!Llama2cTokenizer::load_from_memory(file.data(), file.size(), 0, &t, &err)) FAIL(err);
    return t;
  }();
  return tok;
}

const BpeTokenizer& synthetic_bpe() {
  static const BpeTokenizer tok = [] {
    BpeTokenizer t;
    std::string err;
    if (!BpeTokenizer::build(tokenizer_synthetic::bpe_vocab(), &t, &err)) FAIL(err);
    return t;
  }();
  return tok;
}

const Llama2cTokenizer& tok512() {
  static const Llama2cTokenizer tok = [] {
    Llama2cTokenizer t;
    std::string err;
    if (!Llama2cTokenizer::load(tok512_path(), 512, &t, &err)) FAIL(err);
    return t;
  }();
  return tok;
}

const BpeTokenizer& smollm2() {
  static const BpeTokenizer tok = [] {
    BpeTokenizer t;
    GgufFile f;
    std::string err;
    if (!GgufFile::open(gguf_path(), &f, &err)) FAIL(err);
    if (!load_bpe_tokenizer(f, &t, &err)) FAIL(err);
    return t;
  }();
  return tok;
}

std::string random_bytes(std::mt19937& rng, std::size_t max_len) {
  std::uniform_int_distribution<std::size_t> len(0, max_len);
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(len(rng), '\0');
  for (char& c : s) c = static_cast<char>(byte(rng));
  return s;
}

// Random text from pieces that exercise merges, spaces, multi-byte characters and bad bytes.
std::string random_text(std::mt19937& rng, std::size_t max_parts) {
  static const char* parts[] = {"a", "b", "c", "ab", "abc", " ", "  ", "\n", "\t", "!", "'s", "'", "s",
                                "1", "2", "12", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80", "\xff",
                                "\xc3", "\x80", "\xe2\x82", "<|im_end|>", "<user>", "<|im_start", "hello",
                                " hello", "\xc2\xa0", "\xe2\x80\xa8", "A", "Z", "\x00"};
  std::uniform_int_distribution<std::size_t> n(0, max_parts), pick(0, sizeof parts / sizeof *parts - 1);
  std::string s;
  for (std::size_t k = n(rng); k > 0; --k) {
    const char* p = parts[pick(rng)];
    s += *p ? std::string(p) : std::string(1, '\0');
  }
  return s;
}

bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    std::uint32_t cp;
    const int len = tokenizer_detail::utf8_char(p + i, s.size() - i, &cp);
    if (len == 0) return false;
    i += static_cast<std::size_t>(len);
  }
  return true;
}

std::string streamed(const Tokenizer& tok, const std::vector<std::int32_t>& ids, bool check_chunks_valid) {
  StreamDecoder dec(tok);
  std::string out;
  for (std::int32_t id : ids) {
    const std::string chunk = dec.push(id);
    if (check_chunks_valid) CHECK(valid_utf8(chunk));
    out += chunk;
  }
  return out + dec.flush();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// ---- [synthetic] ---------------------------------------------------------------------------

TEST_CASE("utf8_char accepts exactly the well-formed characters", "[synthetic]") {
  struct C {
    const char* s;
    int len;
    std::uint32_t cp;
  } cases[] = {{"A", 1, 0x41},          {"\xc3\xa9", 2, 0xE9},         {"\xe6\x97\xa5", 3, 0x65E5},
               {"\xf0\x9f\x98\x80", 4, 0x1F600}, {"\xf4\x8f\xbf\xbf", 4, 0x10FFFF},
               {"\x80", 0, 0},          {"\xc0\xaf", 0, 0} /* overlong */, {"\xc1\xbf", 0, 0},
               {"\xe0\x80\xaf", 0, 0} /* overlong */, {"\xed\xa0\x80", 0, 0} /* surrogate */,
               {"\xf0\x80\x80\xaf", 0, 0}, {"\xf4\x90\x80\x80", 0, 0} /* > U+10FFFF */,
               {"\xf5\x80\x80\x80", 0, 0}, {"\xff", 0, 0}, {"\xc3", 0, 0} /* truncated */,
               {"\xe6\x97", 0, 0}, {"\xc3\x41", 0, 0}};
  for (const auto& c : cases) {
    std::uint32_t cp = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(c.s);
    INFO(c.s);
    CHECK(tokenizer_detail::utf8_char(p, std::strlen(c.s), &cp) == c.len);
    if (c.len) CHECK(cp == c.cp);
  }
  auto tail = [](const char* s) {
    return tokenizer_detail::utf8_incomplete_tail(reinterpret_cast<const unsigned char*>(s), std::strlen(s));
  };
  CHECK(tail("") == 0);
  CHECK(tail("ab") == 0);
  CHECK(tail("a\xc3") == 1);
  CHECK(tail("a\xe6\x97") == 2);
  CHECK(tail("\xf0\x9f\x98") == 3);
  CHECK(tail("\xf0\x9f\x98\x80") == 0);
  CHECK(tail("\xe6\x97\xa5") == 0);
  CHECK(tail("\xff") == 0);
  CHECK(tail("\x80\x80") == 0);
  CHECK(tail("\xe0\x80") == 0);  // can never become valid (overlong)
  CHECK(tail("\xed\xa0") == 0);  // surrogate
  CHECK(tail("\xc0") == 0);
}

TEST_CASE("llama2.c encoder: priority-queue merges equal llama2.c's loop", "[synthetic]") {
  const Llama2cTokenizer& tok = synthetic_llama2c();
  REQUIRE(tok.vocab_size() == 3 + 256 + 20);
  // Hand-checked: " ","a","b","c" -> " a" (-1, best) -> "bc" (-2; " ab" is -4) -> " abc" (-0.5).
  CHECK(tok.encode("abc", false) == std::vector<std::int32_t>{tok.find(" abc")});
  // Equal scores: "aa" and "aaa" are both -5; "bc" and "ab" both -2.
  CHECK(tok.encode("aaaa", false) == tok.encode_reference("aaaa", false));
  // " ab" + "c"? no piece; "ca"+"b": leftmost-on-ties decides between "ab"/"bc" in "cabc".
  CHECK(tok.encode("cabc", false) == tok.encode_reference("cabc", false));
  CHECK(tok.encode("", true) == std::vector<std::int32_t>{1});
  CHECK(tok.encode("", false).empty());
  CHECK(tok.encode(" ", false) == std::vector<std::int32_t>{tok.find("  ")});
  // Byte fallback: 'x' is not a piece; an invalid byte; a NUL byte.
  CHECK(tok.encode("x\xff", false) ==
        std::vector<std::int32_t>{tok.find(" "), 3 + 'x', 3 + 0xff});
  CHECK(tok.encode(std::string("\0", 1), false) == std::vector<std::int32_t>{tok.find(" "), 3});
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const std::string s = i % 3 ? random_text(rng, 24) : random_bytes(rng, 24);
    INFO("case " << i);
    const auto ids = tok.encode(s, true);
    REQUIRE(ids == tok.encode_reference(s, true));
    REQUIRE(tok.decode(ids) == s);
    REQUIRE(streamed(tok, ids, false) == s);
  }
}

TEST_CASE("llama2.c decode: byte pieces, BOS-space stripping, control tokens, bad ids", "[synthetic]") {
  const Llama2cTokenizer& tok = synthetic_llama2c();
  const std::int32_t sp_a = tok.find(" a");
  CHECK(tok.decode(sp_a) == " a");
  CHECK(tok.decode(1, sp_a) == "a");             // after BOS
  CHECK(tok.decode(3 + 0x41) == "A");            // <0x41>
  CHECK(tok.decode(1, 3 + 0x20) == " ");         // a byte piece keeps its space (llama2.c)
  CHECK(tok.decode(1) == "\n<s>\n");             // the piece itself
  CHECK(tok.decode(std::vector<std::int32_t>{1, sp_a, 2}) == "a");  // controls skipped
  CHECK(tok.decode(std::vector<std::int32_t>{1, sp_a, 2}, false) == "\n<s>\na\n</s>\n");
  CHECK(tok.decode(-1) == "");
  CHECK(tok.decode(tok.vocab_size()) == "");
  CHECK(tok.decode(std::vector<std::int32_t>{-5, 1 << 30}) == "");
  CHECK(tok.piece(-1) == "");
  CHECK(tok.is_control(0));
  CHECK(tok.is_control(2));
  CHECK(!tok.is_control(3));
  CHECK(!tok.is_control(-1));
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  CHECK(tok.add_bos_default());
}

TEST_CASE("llama2.c loader: every truncation and corruption is an error, never a crash", "[synthetic]") {
  const std::string good = tokenizer_synthetic::llama2c_file();
  const std::int32_t n = 3 + 256 + 20;
  Llama2cTokenizer t;
  std::string err;
  REQUIRE(Llama2cTokenizer::load_from_memory(good.data(), good.size(), n, &t, &err));
  REQUIRE(Llama2cTokenizer::load_from_memory(good.data(), good.size(), 0, &t, &err));
  REQUIRE(t.vocab_size() == n);

  Llama2cTokenizer untouched;
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    err.clear();
    INFO("cut at " << cut);
    REQUIRE_FALSE(Llama2cTokenizer::load_from_memory(good.data(), cut, n, &untouched, &err));
    REQUIRE(!err.empty());
    REQUIRE(untouched.vocab_size() == 0);
    // Without a vocab size, a cut on a record boundary is a valid (smaller) file, unless it
    // drops the byte pieces.
    const bool ok0 = Llama2cTokenizer::load_from_memory(good.data(), cut, 0, &t, &err);
    if (ok0) REQUIRE(t.vocab_size() >= 259);
  }
  CHECK_FALSE(Llama2cTokenizer::load_from_memory(nullptr, 0, n, &t, &err));
  CHECK(err.find("truncated") != std::string::npos);

  auto with = [&](std::size_t off, std::int32_t v) {
    std::string s = good;
    std::memcpy(&s[off], &v, 4);
    return s;
  };
  const std::size_t tok0 = 4;  // score of token 0; its length follows
  struct Bad {
    std::string file;
    std::int32_t vocab;
    const char* why;
  } bad[] = {
      {with(0, 0), n, "max_token_length"},
      {with(0, -3), n, "max_token_length"},
      {with(0, 1 << 30), n, "max_token_length"},
      {with(tok0 + 4, -1), n, "length -1"},
      {with(tok0 + 4, 1 << 30), n, "length"},
      {with(tok0 + 4, 9), n, "max_token_length"},
      {with(tok0, 0x7fc00000), n, "not finite"},  // NaN score
      {with(tok0, 0x7f800000), n, "not finite"},  // +Inf
      {good, n - 1, "vocab size mismatch"},
      {good, n + 1, "truncated"},
      {good + "x", n, "vocab size mismatch"},
      {good + "xyz", 0, "truncated"},
      {tokenizer_synthetic::llama2c_file({{"<unk>", 0.f}, {"<s>", 0.f}}, 8), 0, "too small"},
  };
  for (const auto& b : bad) {
    err.clear();
    INFO(b.why);
    CHECK_FALSE(Llama2cTokenizer::load_from_memory(b.file.data(), b.file.size(), b.vocab, &untouched, &err));
    CHECK(err.find(b.why) != std::string::npos);
    CHECK(untouched.vocab_size() == 0);
  }
  // A byte piece out of place.
  auto toks = tokenizer_synthetic::llama2c_tokens();
  std::swap(toks[3 + 7], toks[3 + 8]);
  const std::string swapped = tokenizer_synthetic::llama2c_file(toks, 8);
  CHECK_FALSE(Llama2cTokenizer::load_from_memory(swapped.data(), swapped.size(), n, &untouched, &err));
  CHECK(err.find("byte piece <0x07>") != std::string::npos);
  // Random corruption: never crashes; whatever loads still round-trips.
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    std::string s = good;
    for (int k = 0; k < 3; ++k) s[rng() % s.size()] = static_cast<char>(rng());
    Llama2cTokenizer r;
    if (Llama2cTokenizer::load_from_memory(s.data(), s.size(), 0, &r, &err)) {
      const std::string text = random_text(rng, 8);
      REQUIRE(r.decode(r.encode(text, true)) == text);
    }
  }
  CHECK_FALSE(Llama2cTokenizer::load("/nonexistent/tok512.bin", 512, &untouched, &err));
  CHECK(err.find("cannot open") != std::string::npos);
}

TEST_CASE("BPE pre-tokenization matches Hugging Face's pre-tokenizers", "[synthetic]") {
  BpeVocab v = tokenizer_synthetic::bpe_vocab();
  BpeTokenizer smollm, gpt2;
  std::string err;
  REQUIRE(BpeTokenizer::build(v, &smollm, &err));
  v.pre = "gpt2";
  REQUIRE(BpeTokenizer::build(v, &gpt2, &err));
  for (const auto& c : g::pre_cases()) {
    const std::string text(c.text, c.size);
    auto offsets = [&](const BpeTokenizer& t) {
      std::vector<std::size_t> o;
      std::size_t at = 0;
      for (const std::string& p : t.pre_tokenize(text)) {
        o.push_back(at);
        at += p.size();
      }
      o.push_back(at);
      return o;
    };
    INFO("text: '" << text << "'");
    CHECK(offsets(smollm) == c.smollm);
    CHECK(offsets(gpt2) == c.gpt2);
  }
}

TEST_CASE("BPE encoder on a synthetic vocabulary", "[synthetic]") {
  const BpeTokenizer& tok = synthetic_bpe();
  const std::int32_t user = tok.find("<user>");
  REQUIRE(user == 3 + 256);
  auto id = [&](const std::string& bytes) {  // the token whose decoded bytes are `bytes`
    for (std::int32_t i = 0; i < tok.vocab_size(); ++i)
      if (tok.decode(i) == bytes && !tok.is_control(i) && i != user) return i;
    return -1;
  };
  CHECK(tok.encode("abc", false) == std::vector<std::int32_t>{id("abc")});
  CHECK(tok.encode(" ab hello", false) == std::vector<std::int32_t>{id(" ab"), id(" hello")});
  CHECK(tok.encode("aaaa", false) == std::vector<std::int32_t>{id("aa"), id("aa")});  // leftmost first
  CHECK(tok.encode("aaa", false) == std::vector<std::int32_t>{id("aaa")});
  CHECK(tok.encode("12", false) == std::vector<std::int32_t>{id("1"), id("2")});  // digits isolated
  CHECK(tok.encode("it's", false) == std::vector<std::int32_t>{id("i"), id("t"), id("'s")});
  CHECK(tok.encode("\xc3\xa9", false) == std::vector<std::int32_t>{id("\xc3\xa9")});
  // Invalid UTF-8: each bad byte is an "other" character; every byte survives.
  CHECK(tok.encode("a\xff\xfe!", false) == std::vector<std::int32_t>{id("a"), id("\xff"), id("\xfe"), id("!")});
  CHECK(tok.encode("\xc3 a", false) == std::vector<std::int32_t>{id("\xc3"), id(" a")});
  // Special tokens: control ones only with parse_special; user-defined ones always.
  CHECK(tok.encode("<|im_end|>", false, true) == std::vector<std::int32_t>{2});
  CHECK(tok.encode("<|im_end|>", false, false).size() > 1);
  CHECK(tok.encode("x<user>y", false, false) == std::vector<std::int32_t>{id("x"), user, id("y")});
  CHECK(tok.encode("<|im_start|><|im_end|>", true, true) == std::vector<std::int32_t>{1, 1, 2});
  CHECK(tok.encode("<|im_start", false, true) == tok.encode("<|im_start", false, false));
  CHECK(tok.encode("", true) == std::vector<std::int32_t>{1});
  CHECK(!tok.add_bos_default());
  CHECK(tok.decode(2) == "<|im_end|>");
  CHECK(tok.decode(std::vector<std::int32_t>{1, id("abc"), 2}) == "abc");
  CHECK(tok.decode(std::vector<std::int32_t>{1, id("abc"), user, 2}, false) == "<|im_start|>abc<user><|im_end|>");
  std::mt19937 rng(3);
  for (int i = 0; i < 3000; ++i) {
    const std::string s = i % 3 ? random_text(rng, 24) : random_bytes(rng, 24);
    INFO("case " << i);
    for (bool special : {false, true}) {
      const auto ids = tok.encode(s, false, special);
      REQUIRE(tok.decode(ids, false) == s);
      REQUIRE(streamed(tok, ids, false) == tok.decode(ids));
    }
  }
}

TEST_CASE("BPE build: bad vocabularies are errors", "[synthetic]") {
  BpeTokenizer untouched, t;
  std::string err;
  struct Bad {
    std::function<void(BpeVocab&)> edit;
    const char* why;
  } bad[] = {
      {[](BpeVocab& v) { v.merges.clear(); }, "no merges"},
      {[](BpeVocab& v) { v.tokens.clear(); }, "no tokens"},
      {[](BpeVocab& v) { v.pre = "llama-bpe"; }, "unsupported pre-tokenizer"},
      {[](BpeVocab& v) { v.pre = ""; }, "unsupported pre-tokenizer"},
      {[](BpeVocab& v) { v.merges[0] = "ab"; }, "not two tokens"},
      {[](BpeVocab& v) { v.merges[0] = "a  b"; }, "not two tokens"},
      {[](BpeVocab& v) { v.merges[0] = " a"; }, "not two tokens"},
      {[](BpeVocab& v) { v.merges[0] = "a "; }, "not two tokens"},
      {[](BpeVocab& v) { v.merges[1] = "a zz"; }, "'zz' is not a token"},
      {[](BpeVocab& v) { v.merges[1] = "b a"; }, "'ba' is not a token"},
      {[](BpeVocab& v) { v.token_types.pop_back(); }, "token_type"},
      {[](BpeVocab& v) { v.bos = static_cast<std::int32_t>(v.tokens.size()); }, "bos token id"},
      {[](BpeVocab& v) { v.eos = -2; }, "eos token id"},
  };
  for (const auto& b : bad) {
    BpeVocab v = tokenizer_synthetic::bpe_vocab();
    b.edit(v);
    err.clear();
    INFO(b.why);
    CHECK_FALSE(BpeTokenizer::build(v, &untouched, &err));
    CHECK(err.find(b.why) != std::string::npos);
    CHECK(untouched.vocab_size() == 0);
  }
  BpeVocab v = tokenizer_synthetic::bpe_vocab();
  v.tokens[3 + 'q'] = "<q>";  // byte 'q' without a token: dropped before the merges
  REQUIRE(BpeTokenizer::build(v, &t, &err));
  CHECK_FALSE(t.byte_has_token('q'));
  CHECK(t.encode("aqb", false) == t.encode("ab", false));
  CHECK(t.encode("aqb", false).size() == 1);
  CHECK(t.encode("q", false).empty());
  v = tokenizer_synthetic::bpe_vocab();
  v.token_types.clear();  // optional: all normal
  REQUIRE(BpeTokenizer::build(v, &t, &err));
  CHECK(t.encode("<|im_end|>", false, true).size() > 1);
  v = tokenizer_synthetic::bpe_vocab();
  v.bos = v.eos = v.unknown = v.padding = -1;
  REQUIRE(BpeTokenizer::build(v, &t, &err));
  CHECK(t.encode("ab", true) == t.encode("ab", false));  // no BOS to add
}

namespace {
// A GGUF image holding the synthetic BPE vocabulary's metadata; `skip` leaves out one key and
// `replace` swaps in another value for one key.
gguf_test::Bytes bpe_gguf(const std::string& skip = "", const std::string& replace = "",
                          std::uint32_t type = 0, const gguf_test::Bytes& payload = {}) {
  using namespace gguf_test;
  const BpeVocab v = tokenizer_synthetic::bpe_vocab();
  std::vector<Bytes> toks, merges, types;
  for (const auto& t : v.tokens) toks.push_back(enc::str(t));
  for (const auto& m : v.merges) merges.push_back(enc::str(m));
  for (std::int32_t t : v.token_types) types.push_back(enc::i32(t));
  GgufBuilder b;
  auto kv = [&](const std::string& key, std::uint32_t ty, Bytes p) {
    if (key == skip) return;
    if (key == replace) b.kv(key, type, payload);
    else b.kv(key, ty, std::move(p));
  };
  kv("general.architecture", kStr, enc::str("llama"));
  kv("tokenizer.ggml.model", kStr, enc::str("gpt2"));
  kv("tokenizer.ggml.pre", kStr, enc::str("smollm"));
  kv("tokenizer.ggml.tokens", kArr, enc::array(kStr, toks));
  kv("tokenizer.ggml.token_type", kArr, enc::array(kI32, types));
  kv("tokenizer.ggml.merges", kArr, enc::array(kStr, merges));
  kv("tokenizer.ggml.bos_token_id", kU32, enc::u32(1));
  kv("tokenizer.ggml.eos_token_id", kU32, enc::u32(2));
  kv("tokenizer.ggml.unknown_token_id", kU32, enc::u32(0));
  kv("tokenizer.ggml.add_bos_token", kBool, enc::boolean(false));
  return b.build();
}
}  // namespace

TEST_CASE("BPE from GGUF metadata: loads, and missing or wrong keys are errors", "[synthetic]") {
  using namespace gguf_test;
  std::string err;
  {
    const Bytes img = bpe_gguf();
    GgufFile f;
    REQUIRE(GgufFile::parse(img.data(), img.size(), &f, &err));
    BpeTokenizer t;
    REQUIRE(load_bpe_tokenizer(f, &t, &err));
    CHECK(t.vocab_size() == synthetic_bpe().vocab_size());
    CHECK(t.bos() == 1);
    CHECK(t.eos() == 2);
    CHECK(t.unknown() == 0);
    CHECK(t.padding() == -1);
    CHECK_FALSE(t.add_bos_default());
    for (const char* s : {"abc hello", "aaaa 12 it's", "<|im_start|>x<|im_end|>"})
      CHECK(t.encode(s, true, true) == synthetic_bpe().encode(s, true, true));
  }
  {
    const Bytes img = bpe_gguf("", "tokenizer.ggml.add_bos_token", kBool, enc::boolean(true));
    GgufFile f;
    REQUIRE(GgufFile::parse(img.data(), img.size(), &f, &err));
    BpeTokenizer t;
    REQUIRE(load_bpe_tokenizer(f, &t, &err));
    CHECK(t.add_bos_default());
  }
  struct Bad {
    Bytes img;
    const char* why;
  } bad[] = {
      {bpe_gguf("tokenizer.ggml.merges"), "tokenizer.ggml.merges"},
      {bpe_gguf("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens"},
      {bpe_gguf("tokenizer.ggml.pre"), "tokenizer.ggml.pre"},
      {bpe_gguf("tokenizer.ggml.model"), "tokenizer.ggml.model"},
      {bpe_gguf("", "tokenizer.ggml.model", kStr, enc::str("llama")), "only byte-level BPE"},
      {bpe_gguf("", "tokenizer.ggml.pre", kStr, enc::str("qwen2")), "unsupported pre-tokenizer tokenizer.ggml.pre = 'qwen2'"},
      {bpe_gguf("", "tokenizer.ggml.merges", kArr, enc::array(kStr, {})), "no merges"},
      {bpe_gguf("", "tokenizer.ggml.merges", kArr, enc::array(kU32, {enc::u32(1)})), "tokenizer.ggml.merges"},
      {bpe_gguf("", "tokenizer.ggml.token_type", kArr, enc::array(kI32, {enc::i32(1)})), "token_type"},
      {bpe_gguf("", "tokenizer.ggml.bos_token_id", kU32, enc::u32(100000)), "bos_token_id"},
      {bpe_gguf("", "tokenizer.ggml.eos_token_id", kStr, enc::str("2")), "eos_token_id"},
  };
  for (const auto& b : bad) {
    GgufFile f;
    REQUIRE(GgufFile::parse(b.img.data(), b.img.size(), &f, &err));
    BpeTokenizer untouched;
    err.clear();
    INFO(b.why);
    CHECK_FALSE(load_bpe_tokenizer(f, &untouched, &err));
    CHECK(err.find(b.why) != std::string::npos);
    CHECK(untouched.vocab_size() == 0);
  }
}

TEST_CASE("StreamDecoder holds back split UTF-8 characters only", "[synthetic]") {
  const Llama2cTokenizer& tok = synthetic_llama2c();
  // "日" is a piece; "€" (e2 82 ac) is not: three byte tokens.
  const std::string text = "a\xe2\x82\xac\xe6\x97\xa5!\xf0\x9f\x98\x80";
  const auto ids = tok.encode(text, true);
  StreamDecoder dec(tok);
  std::vector<std::string> chunks;
  for (std::int32_t id : ids) chunks.push_back(dec.push(id));
  chunks.push_back(dec.flush());
  std::string all;
  for (const auto& c : chunks) {
    CHECK(valid_utf8(c));
    all += c;
  }
  CHECK(all == text);
  // Bytes that can never become a character are passed through at once.
  dec.reset();
  CHECK(dec.push(3 + 0xff) == "\xff");
  CHECK(dec.push(3 + 0xe2) == "");
  CHECK(dec.push(3 + 0x41) == "\xe2" "A");
  CHECK(dec.push(3 + 0xf0) == "");
  CHECK(dec.flush() == "\xf0");
  CHECK(dec.flush() == "");
  // reset(prev) continues after a prompt that ended with BOS.
  dec.reset(1);
  CHECK(dec.push(tok.find(" a")) == "a");
  // Out-of-range ids print nothing.
  CHECK(dec.push(-1) == "");
  CHECK(dec.push(1 << 30) == "");
}

TEST_CASE("chat template: SmolLM2's ChatML", "[synthetic]") {
  CHECK(apply_chat_template("Hi there") ==
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
  CHECK(apply_chat_template("x", "Be brief.") ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  // tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf, verbatim.
  const std::string jinja =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' "
      "}}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% "
      "endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  std::string sys;
  REQUIRE(chat_template_default_system_prompt(jinja, &sys));
  CHECK(sys == kSmolLM2DefaultSystemPrompt);
  CHECK_FALSE(chat_template_default_system_prompt("{{ messages }}", &sys));
}

// ---- [tok512] --------------------------------------------------------------------------------

TEST_CASE("tok512.bin: golden encodings (llama2.c algorithm in Python)", "[tok512]") {
  const Llama2cTokenizer& tok = tok512();
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.max_token_length() == 7);
  for (const auto& c : g::llama2c_cases()) {
    const std::string text(c.text, c.size);
    INFO(c.name);
    CHECK(tok.encode(text, true) == c.ids);
    CHECK(tok.encode_reference(text, true) == c.ids);
    CHECK(tok.decode(c.ids) == text);
    CHECK(streamed(tok, c.ids, false) == text);
  }
}

TEST_CASE("tok512.bin: loader checks the model's vocab size and every truncation", "[tok512]") {
  const std::string file = read_file(tok512_path());
  REQUIRE(file.size() == 6227);
  Llama2cTokenizer t;
  std::string err;
  CHECK(Llama2cTokenizer::load_from_memory(file.data(), file.size(), 512, &t, &err));
  CHECK_FALSE(Llama2cTokenizer::load(tok512_path(), 511, &t, &err));
  CHECK(err.find("vocab size mismatch") != std::string::npos);
  CHECK_FALSE(Llama2cTokenizer::load(tok512_path(), 513, &t, &err));
  CHECK(err.find("truncated") != std::string::npos);
  for (std::size_t cut = 0; cut < file.size(); ++cut) {
    Llama2cTokenizer u;
    INFO("cut at " << cut);
    REQUIRE_FALSE(Llama2cTokenizer::load_from_memory(file.data(), cut, 512, &u, &err));
    REQUIRE(u.vocab_size() == 0);
  }
}

TEST_CASE("tok512.bin: TinyStories token counts (perplexity protocol) and round trips", "[tok512]") {
  const Llama2cTokenizer& tok = tok512();
  {
    const std::string text = normalise(read_file(text_path("tinystories-sample.txt")));
    const auto ids = tok.encode(text, false);
    // data README: ctx 257 windows (BOS + 256 text tokens) predict 1786 tokens, i.e. all of them.
    CHECK(ids.size() == 1786);
    CHECK(ids.size() == g::kLlama2c_sample_tokens);
    CHECK(g::fnv1a(ids, ids.size()) == g::kLlama2c_sample_fnv);
    CHECK(tok.encode_reference(text, false) == ids);
    CHECK(tok.decode(tok.encode(text, true)) == text);
  }
  {
    const std::string raw = read_file(text_path("tinystories-valid-100k.txt"));
    const std::string text = normalise(raw);
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text, false);
    const double dt = seconds_since(t0);
    CHECK(ids.size() == g::kLlama2c_valid100k_tokens);
    CHECK(g::fnv1a(ids, ids.size()) == g::kLlama2c_valid100k_fnv);
    CHECK(tok.decode(tok.encode(raw, true)) == raw);
    CHECK(streamed(tok, tok.encode(raw, true), true) == raw);
    std::printf("tok512: tinystories-valid-100k normalised: %zu bytes -> %zu tokens in %.3f s\n", text.size(),
                ids.size(), dt);
  }
}

// ---- [smollm2] -------------------------------------------------------------------------------

TEST_CASE("SmolLM2 GGUF: metadata and golden encodings (Hugging Face tokenizers)", "[smollm2]") {
  const BpeTokenizer& tok = smollm2();
  CHECK(tok.vocab_size() == 49152);
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  CHECK(tok.piece(2) == "<|im_end|>");
  CHECK(tok.find("<|im_start|>") == 1);
  CHECK(tok.pre_tokenizer() == BpeTokenizer::Pre::kDigitsThenGpt2);
  CHECK_FALSE(tok.add_bos_default());
  for (const auto& c : g::bpe_cases()) {
    const std::string text(c.text, c.size);
    INFO(c.name);
    CHECK(tok.encode(text, false) == c.ids);
    std::string kept;  // the text less the bytes that have no token
    for (char ch : text)
      if (tok.byte_has_token(static_cast<unsigned char>(ch))) kept.push_back(ch);
    CHECK(tok.decode(c.ids) == kept);
    CHECK(streamed(tok, c.ids, std::string(c.name) != "no_token_bytes") == kept);
  }
  for (const auto& c : g::bpe_special_cases()) {
    const std::string text(c.text, c.size);
    INFO(c.name);
    CHECK(tok.encode(text, false, true) == c.ids);
    CHECK(tok.decode(c.ids, false) == text);
  }
  GgufFile f;
  std::string err, jinja, sys;
  REQUIRE(GgufFile::open(gguf_path(), &f, &err));
  REQUIRE(f.get_string("tokenizer.chat_template", &jinja, &err));
  REQUIRE(chat_template_default_system_prompt(jinja, &sys));
  CHECK(sys == kSmolLM2DefaultSystemPrompt);
  const auto chat = tok.encode(apply_chat_template("What is the capital of France?"), false, true);
  CHECK(chat == g::bpe_special_cases()[0].ids);
}

TEST_CASE("SmolLM2 GGUF: WikiText ids match the reference exactly", "[smollm2]") {
  const BpeTokenizer& tok = smollm2();
  const std::string wiki = read_file(text_path("wikitext-2-raw-test.txt"));
  REQUIRE(wiki.size() == 1290547);
  const std::string head = wiki.substr(0, g::kWikiHeadBytes);
  CHECK(tok.encode(head, false) == g::wiki_head_ids());

  const std::size_t prefix = 40000;  // bytes; > 8K tokens
  auto t0 = std::chrono::steady_clock::now();
  const auto first = tok.encode(wiki.substr(0, prefix), false);
  const double dt_prefix = seconds_since(t0);
  REQUIRE(first.size() > 8192);
  CHECK(g::fnv1a(first, 8192) == g::kWikiFnv8k);

  t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(wiki, false);
  const double dt_all = seconds_since(t0);
  CHECK(ids.size() == g::kWikiTokens);
  CHECK(g::fnv1a(ids, ids.size()) == g::kWikiFnv);
  t0 = std::chrono::steady_clock::now();
  CHECK(tok.decode(ids) == wiki);
  const double dt_decode = seconds_since(t0);
  CHECK(streamed(tok, ids, true) == wiki);
  std::printf("smollm2: wikitext first %zu bytes -> %zu tokens in %.3f s; all %zu bytes -> %zu tokens in %.3f s "
              "(decode %.3f s)\n", prefix, first.size(), dt_prefix, wiki.size(), ids.size(), dt_all, dt_decode);

  const std::string ts = read_file(text_path("tinystories-valid-100k.txt"));
  t0 = std::chrono::steady_clock::now();
  const auto ts_ids = tok.encode(ts, false);
  const double dt_ts = seconds_since(t0);
  CHECK(ts_ids.size() == g::kBpeValid100kTokens);
  CHECK(g::fnv1a(ts_ids, ts_ids.size()) == g::kBpeValid100kFnv);
  std::printf("smollm2: tinystories-valid-100k %zu bytes -> %zu tokens in %.3f s\n", ts.size(), ts_ids.size(), dt_ts);
}

TEST_CASE("SmolLM2 GGUF: any bytes round-trip, less the bytes without a token", "[smollm2]") {
  const BpeTokenizer& tok = smollm2();
  std::string dropped;
  for (int b = 0; b < 256; ++b)
    if (!tok.byte_has_token(static_cast<unsigned char>(b))) dropped.push_back(static_cast<char>(b));
  CHECK(dropped == "\x04\x06\x13\x14\x16\x1d\xc0\xc1\xf1\xf2\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff");
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    const std::string s = i % 2 ? random_text(rng, 32) : random_bytes(rng, 32);
    std::string kept;
    for (char c : s)
      if (tok.byte_has_token(static_cast<unsigned char>(c))) kept.push_back(c);
    INFO("case " << i);
    REQUIRE(tok.decode(tok.encode(s, false)) == kept);
    REQUIRE(tok.decode(tok.encode(s, false, true), false) == kept);
  }
  // As in the reference: the byte is dropped before the merges ("!" 0x04 "!" -> "!!").
  CHECK(tok.encode("!\x04!", false) == tok.encode("!!", false));
  CHECK(tok.encode("!\x04!", false).size() == 1);
  // Invalid UTF-8 between letters: the bad byte is its own piece, encoded as its byte symbol.
  auto abc = tok.encode("abc", false);
  abc.push_back(tok.find("\xc3\xb0"));  // 'ð', the byte-level symbol of 0xF0
  CHECK(tok.encode("abc\xf0", false) == abc);
}
