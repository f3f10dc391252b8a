// Byte-level BPE (GPT-2 style) from GGUF tokenizer metadata (tokenizer.ggml.model = "gpt2").
//
// Encoding, as Hugging Face `tokenizers` does for SmolLM2 (the reference the tests compare with):
//   1. special tokens: with parse_special, control tokens (token_type 3, e.g. "<|im_start|>")
//      written in the text become single tokens; user-defined tokens (token_type 4) always do.
//      Leftmost match first, the longest one at that position (HF's AddedVocabulary).
//      The text between them is encoded on its own by steps 2-4.
//   2. pre-tokenization by tokenizer.ggml.pre:
//        "gpt2":                 the GPT-2 regex
//            's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//        "smollm", "starcoder":  every number character (\p{N}) isolated first (HF's
//            Digits(individual_digits=True)), then the GPT-2 regex on each stretch between them.
//      The regex is hand-written (gpt2_split below), not std::regex; its classes come from
//      tokenizer_unicode.hpp (Unicode 16 letters/numbers, White_Space). Bytes that are not
//      well-formed UTF-8 count one by one as "other" characters (neither space, letter nor number),
//      so any byte string encodes (HF only accepts valid UTF-8, where the two agree).
//   3. each piece's bytes mapped to GPT-2's byte-level alphabet (bytes_to_unicode), one symbol per
//      byte. A byte whose symbol is not in the vocabulary is dropped before the merges, as HF does
//      for a BPE model without an unknown token: SmolLM2 has no symbol for the 21 bytes 0x04 0x06
//      0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5..0xFF (never in UTF-8 text, or control
//      characters), so decode(encode(x)) == x for every x without them;
//   4. BPE: repeatedly merge the adjacent pair with the lowest merge rank (the leftmost one on
//      ties) until no pair has a rank.
// Decoding maps the byte-level characters back to bytes; a token with characters outside that
// alphabet (added tokens such as "<|im_end|>") decodes to its own text, as in HF.
#pragma once

#include <algorithm>
#include <cstdint>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer_base.hpp"
#include "tokenizer_unicode.hpp"

namespace memattn_llama {

// What a GGUF file holds for a byte-level BPE tokenizer (the tokenizer.ggml.* keys).
struct BpeVocab {
  std::vector<std::string> tokens;        // tokenizer.ggml.tokens
  std::vector<std::string> merges;        // tokenizer.ggml.merges, "left right" by rank
  std::vector<std::int32_t> token_types;  // tokenizer.ggml.token_type (empty: all normal)
  std::int32_t bos = -1, eos = -1, unknown = -1, padding = -1;  // -1: absent
  std::string pre;                        // tokenizer.ggml.pre
  bool add_bos = false;                   // tokenizer.ggml.add_bos_token
};

namespace tokenizer_detail {

enum class CharClass : std::uint8_t { kOther, kLetter, kNumber, kSpace };

template <std::size_t N>
inline bool in_ranges(const UnicodeRange (&r)[N], std::uint32_t cp) {
  std::size_t lo = 0, hi = N;  // first range with hi >= cp
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (r[mid].hi < cp) lo = mid + 1; else hi = mid;
  }
  return lo < N && r[lo].lo <= cp;
}

inline CharClass classify(std::uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (in_ranges(kLetterRanges, cp)) return CharClass::kLetter;
  if (in_ranges(kNumberRanges, cp)) return CharClass::kNumber;
  if (in_ranges(kSpaceRanges, cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

// One character of the text: its first byte, its code point (~0u for a byte that is not
// well-formed UTF-8) and its class.
struct TextChar {
  std::size_t offset;
  std::uint32_t cp;
  CharClass cls;
};

// The GPT-2 regex on chars [b, e): calls emit(first_char, end_char) for each match, in order.
// The matches cover [b, e) without gaps (the last alternative, \s+, matches any leftover space).
template <class Emit>
void gpt2_split(const std::vector<TextChar>& t, std::size_t b, std::size_t e, Emit&& emit) {
  std::size_t i = b;
  while (i < e) {
    const std::uint32_t c = t[i].cp;
    // 's|'t|'re|'ve|'m|'ll|'d (lower case only, like the regex)
    if (c == '\'' && i + 1 < e) {
      const std::uint32_t c1 = t[i + 1].cp;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < e) {
        const std::uint32_t c2 = t[i + 2].cp;
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // " ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+": an optional ' ' then a run of one class
    std::size_t j = i;
    if (c == ' ' && i + 1 < e && t[i + 1].cls != CharClass::kSpace) j = i + 1;
    if (t[j].cls != CharClass::kSpace) {
      const CharClass k = t[j].cls;
      std::size_t r = j + 1;
      while (r < e && t[r].cls == k) ++r;
      emit(i, r);
      i = r;
      continue;
    }
    // "\s+(?!\S)|\s+": a space run; before a non-space it leaves its last character, which then
    // starts the next match (as " word" when that character is ' ').
    std::size_t r = i + 1;
    while (r < e && t[r].cls == CharClass::kSpace) ++r;
    if (r < e && r - i >= 2) --r;
    emit(i, r);
    i = r;
  }
}

// GPT-2's bytes_to_unicode(): printable latin-1 bytes map to themselves, the rest to U+0100...
inline std::uint32_t byte_to_unicode(unsigned b) {
  if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
  unsigned n = 0;
  for (unsigned x = 0; x < b; ++x)
    if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++n;
  return 0x100 + n;
}

}  // namespace tokenizer_detail

class BpeTokenizer final : public Tokenizer {
 public:
  enum TokenType : std::int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  enum class Pre { kGpt2, kDigitsThenGpt2 };

  // Builds the tokenizer; on error returns false, leaves *out untouched and says why in *error.
  static bool build(const BpeVocab& v, BpeTokenizer* out, std::string* error) {
    using tokenizer_detail::set_error;
    BpeTokenizer t;
    if (v.pre == "gpt2") {
      t.pre_ = Pre::kGpt2;
    } else if (v.pre == "smollm" || v.pre == "starcoder") {
      t.pre_ = Pre::kDigitsThenGpt2;
    } else {
      set_error(error, "unsupported pre-tokenizer tokenizer.ggml.pre = '" + v.pre +
                           "' (supported: gpt2, smollm, starcoder)");
      return false;
    }
    if (v.tokens.empty()) {
      set_error(error, "no tokens (tokenizer.ggml.tokens missing or empty)");
      return false;
    }
    if (v.tokens.size() >= static_cast<std::size_t>(INT32_MAX)) {
      set_error(error, "too many tokens");
      return false;
    }
    const auto n = static_cast<std::int32_t>(v.tokens.size());
    if (!v.token_types.empty() && v.token_types.size() != v.tokens.size()) {
      set_error(error, "tokenizer.ggml.token_type has " + std::to_string(v.token_types.size()) +
                           " entries for " + std::to_string(n) + " tokens");
      return false;
    }
    const std::pair<const char*, std::int32_t> ids[] = {
        {"bos", v.bos}, {"eos", v.eos}, {"unknown", v.unknown}, {"padding", v.padding}};
    for (const auto& [name, id] : ids) {
      if (id < -1 || id >= n) {
        set_error(error, std::string(name) + " token id " + std::to_string(id) + " is not in [0, " +
                             std::to_string(n) + ")");
        return false;
      }
    }
    if (v.merges.empty()) {
      set_error(error, "no merges (tokenizer.ggml.merges missing or empty)");
      return false;
    }
    t.pieces_ = v.tokens;
    t.types_ = v.token_types.empty() ? std::vector<std::int32_t>(v.tokens.size(), kNormal) : v.token_types;
    std::unordered_map<std::string, std::int32_t>& lookup = t.lookup_;
    lookup.reserve(v.tokens.size() * 2);
    for (std::int32_t i = 0; i < n; ++i) lookup.emplace(v.tokens[static_cast<std::size_t>(i)], i);  // lowest id wins
    // The token of each byte's symbol; -1 where the vocabulary has none (SmolLM2 lacks 21).
    for (unsigned b = 0; b < 256; ++b) {
      std::string s;
      tokenizer_detail::append_utf8(tokenizer_detail::byte_to_unicode(b), &s);
      const auto it = lookup.find(s);
      t.byte_token_[b] = it == lookup.end() ? -1 : it->second;
    }
    t.merges_.reserve(v.merges.size() * 2);
    for (std::size_t r = 0; r < v.merges.size(); ++r) {
      const std::string& m = v.merges[r];
      const std::size_t sp = m.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos) {
        set_error(error, "merge " + std::to_string(r) + " '" + m + "' is not two tokens separated by one space");
        return false;
      }
      const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
      const auto a = lookup.find(left), b = lookup.find(right), ab = lookup.find(left + right);
      if (a == lookup.end() || b == lookup.end() || ab == lookup.end()) {
        set_error(error, "merge " + std::to_string(r) + " '" + m + "': '" +
                             (a == lookup.end() ? left : b == lookup.end() ? right : left + right) +
                             "' is not a token");
        return false;
      }
      // A repeated pair keeps its first (lowest) rank.
      t.merges_.emplace(pair_key(a->second, b->second), Merge{static_cast<std::int32_t>(r), ab->second});
    }
    // Added tokens matched in the text: control (with parse_special) and user-defined (always).
    for (std::int32_t i = 0; i < n; ++i) {
      const std::int32_t ty = t.types_[static_cast<std::size_t>(i)];
      if ((ty == kControl || ty == kUserDefined) && !t.pieces_[static_cast<std::size_t>(i)].empty())
        t.specials_.push_back(i);
    }
    std::stable_sort(t.specials_.begin(), t.specials_.end(), [&](std::int32_t x, std::int32_t y) {
      return t.pieces_[static_cast<std::size_t>(x)].size() > t.pieces_[static_cast<std::size_t>(y)].size();
    });
    for (std::int32_t id : t.specials_) {
      const auto first = static_cast<unsigned char>(t.pieces_[static_cast<std::size_t>(id)][0]);
      t.special_first_[first] = true;
      if (t.types_[static_cast<std::size_t>(id)] == kUserDefined) t.user_first_[first] = true;
    }
    // Decoded bytes of every token.
    std::unordered_map<std::uint32_t, unsigned char> from_unicode;
    for (unsigned b = 0; b < 256; ++b) from_unicode.emplace(tokenizer_detail::byte_to_unicode(b), static_cast<unsigned char>(b));
    t.bytes_.resize(v.tokens.size());
    for (std::size_t i = 0; i < v.tokens.size(); ++i) {
      const std::string& s = v.tokens[i];
      const std::int32_t ty = t.types_[i];
      bool raw = ty == kControl || ty == kUserDefined;
      std::string bytes;
      const auto* p = reinterpret_cast<const unsigned char*>(s.data());
      for (std::size_t k = 0; !raw && k < s.size();) {
        std::uint32_t cp = 0;
        const int len = tokenizer_detail::utf8_char(p + k, s.size() - k, &cp);
        auto it = len > 0 ? from_unicode.find(cp) : from_unicode.end();
        if (it == from_unicode.end()) {
          raw = true;
        } else {
          bytes.push_back(static_cast<char>(it->second));
          k += static_cast<std::size_t>(len);
        }
      }
      t.bytes_[i] = raw ? s : bytes;
    }
    t.vocab_size_ = n;
    t.bos_ = v.bos;
    t.eos_ = v.eos;
    t.unknown_ = v.unknown;
    t.padding_ = v.padding;
    t.add_bos_default_ = v.add_bos && v.bos >= 0;
    *out = std::move(t);
    return true;
  }

  Pre pre_tokenizer() const { return pre_; }
  // Whether byte b has a token (bytes without one are dropped by encode()).
  bool byte_has_token(unsigned char b) const { return byte_token_[b] >= 0; }
  std::int32_t token_type(std::int32_t id) const {
    return id >= 0 && id < vocab_size_ ? types_[static_cast<std::size_t>(id)] : 0;
  }
  std::int32_t unknown() const { return unknown_; }
  std::int32_t padding() const { return padding_; }
  bool is_control(std::int32_t id) const override {
    if (id < 0 || id >= vocab_size_) return false;
    return types_[static_cast<std::size_t>(id)] == kControl || id == bos_ || id == eos_ ||
           id == unknown_ || id == padding_;
  }
  const std::string& piece(std::int32_t id) const override {
    static const std::string kEmpty;
    return id >= 0 && id < vocab_size_ ? pieces_[static_cast<std::size_t>(id)] : kEmpty;
  }
  // Id of an exact vocabulary string (e.g. "<|im_end|>", or "\xc4\xa0the" for " the"), or -1;
  // the lowest id when several tokens have that string.
  std::int32_t find(const std::string& s) const {
    const auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  }

  // The pre-tokenized pieces of `text` (steps 1-2 without special tokens), for tests.
  std::vector<std::string> pre_tokenize(const std::string& text) const {
    std::vector<std::string> out;
    split_words(text, 0, text.size(), [&](std::size_t b, std::size_t e) { out.push_back(text.substr(b, e - b)); });
    return out;
  }

 protected:
  void encode_append(const std::string& text, bool parse_special, std::vector<std::int32_t>* ids) const override {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    const bool* first = parse_special ? special_first_ : user_first_;
    std::size_t start = 0;  // start of the ordinary text not yet encoded
    for (std::size_t i = 0; i < n; ++i) {
      if (!first[s[i]]) continue;
      for (std::int32_t id : specials_) {  // longest first
        if (!parse_special && types_[static_cast<std::size_t>(id)] != kUserDefined) continue;
        const std::string& p = pieces_[static_cast<std::size_t>(id)];
        if (p.size() <= n - i && text.compare(i, p.size(), p) == 0) {
          encode_text(text, start, i, ids);
          ids->push_back(id);
          start = i + p.size();
          i = start - 1;
          break;
        }
      }
    }
    encode_text(text, start, n, ids);
  }

  void append_piece(std::int32_t /*prev*/, std::int32_t id, std::string* out) const override {
    out->append(bytes_[static_cast<std::size_t>(id)]);
  }

 private:
  struct Merge {
    std::int32_t rank, id;
  };
  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  // Pre-tokenizes text[b, e) and calls emit(byte_begin, byte_end) for each piece.
  template <class Emit>
  void split_words(const std::string& text, std::size_t b, std::size_t e, Emit&& emit) const {
    using namespace tokenizer_detail;
    std::vector<TextChar> chars;
    chars.reserve(e - b + 1);
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    for (std::size_t i = b; i < e;) {
      std::uint32_t cp = 0;
      const int len = utf8_char(s + i, e - i, &cp);
      if (len == 0) {
        chars.push_back(TextChar{i, ~0u, CharClass::kOther});
        ++i;
      } else {
        chars.push_back(TextChar{i, cp, classify(cp)});
        i += static_cast<std::size_t>(len);
      }
    }
    const std::size_t m = chars.size();
    auto byte_at = [&](std::size_t c) { return c < m ? chars[c].offset : e; };
    auto emit_chars = [&](std::size_t c0, std::size_t c1) { emit(byte_at(c0), byte_at(c1)); };
    if (pre_ == Pre::kGpt2) {
      gpt2_split(chars, 0, m, emit_chars);
      return;
    }
    std::size_t seg = 0;  // Digits(individual_digits): each number character on its own
    for (std::size_t c = 0; c < m; ++c) {
      if (chars[c].cls != CharClass::kNumber) continue;
      gpt2_split(chars, seg, c, emit_chars);
      emit_chars(c, c + 1);
      seg = c + 1;
    }
    gpt2_split(chars, seg, m, emit_chars);
  }

  // Steps 2-4 on text[b, e).
  void encode_text(const std::string& text, std::size_t b, std::size_t e, std::vector<std::int32_t>* ids) const {
    if (b >= e) return;
    std::vector<std::int32_t> sym;
    split_words(text, b, e, [&](std::size_t wb, std::size_t we) {
      sym.clear();
      for (std::size_t k = wb; k < we; ++k) {
        const std::int32_t id = byte_token_[static_cast<unsigned char>(text[k])];
        if (id >= 0) sym.push_back(id);
      }
      bpe(&sym);
      for (std::int32_t id : sym)
        if (id >= 0) ids->push_back(id);
    });
  }

  // Step 4 in place; merged-away symbols are set to -1.
  void bpe(std::vector<std::int32_t>* symbols) const {
    std::vector<std::int32_t>& sym = *symbols;
    const std::size_t n = sym.size();
    if (n < 2) return;
    if (n == 2) {  // the common short case without the heap
      const auto it = merges_.find(pair_key(sym[0], sym[1]));
      if (it != merges_.end()) {
        sym[0] = it->second.id;
        sym[1] = -1;
      }
      return;
    }
    std::vector<std::int32_t> next(n), prev(n);
    for (std::size_t i = 0; i < n; ++i) {
      next[i] = static_cast<std::int32_t>(i + 1);
      prev[i] = static_cast<std::int32_t>(i) - 1;
    }
    struct Cand {
      std::int32_t rank, left, right, left_tok, right_tok, merged;
    };
    auto worse = [](const Cand& a, const Cand& x) {  // min-heap on rank, then leftmost
      if (a.rank != x.rank) return a.rank > x.rank;
      return a.left > x.left;
    };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    auto consider = [&](std::int32_t left) {
      if (left < 0) return;
      const std::int32_t right = next[static_cast<std::size_t>(left)];
      if (right >= static_cast<std::int32_t>(n)) return;
      const std::int32_t a = sym[static_cast<std::size_t>(left)], c = sym[static_cast<std::size_t>(right)];
      const auto it = merges_.find(pair_key(a, c));
      if (it != merges_.end()) heap.push(Cand{it->second.rank, left, right, a, c, it->second.id});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) consider(static_cast<std::int32_t>(i));
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const auto l = static_cast<std::size_t>(c.left), r = static_cast<std::size_t>(c.right);
      if (sym[l] != c.left_tok || sym[r] != c.right_tok || next[l] != c.right) continue;  // stale
      sym[l] = c.merged;
      sym[r] = -1;
      next[l] = next[r];
      if (next[r] < static_cast<std::int32_t>(n)) prev[static_cast<std::size_t>(next[r])] = c.left;
      consider(prev[l]);
      consider(c.left);
    }
  }

  Pre pre_ = Pre::kGpt2;
  std::vector<std::string> pieces_;
  std::vector<std::string> bytes_;  // decoded bytes per token
  std::vector<std::int32_t> types_;
  std::unordered_map<std::string, std::int32_t> lookup_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::int32_t byte_token_[256] = {};
  std::vector<std::int32_t> specials_;  // control + user-defined tokens, longest first
  bool special_first_[256] = {};        // first bytes of specials_
  bool user_first_[256] = {};           // first bytes of the user-defined ones
  std::int32_t unknown_ = -1, padding_ = -1;
};

}  // namespace memattn_llama
