// The llama2.c tokenizer (tok512.bin and friends), encoding exactly as llama2.c's encode().
//
// File format (little-endian): int32 max_token_length, then per token {float32 score; int32 len;
// len bytes}. Ids: 0 <unk>, 1 BOS, 2 EOS, 3..258 the byte pieces "<0x00>".."<0xFF>".
//
// Encoding (llama2.c's algorithm, the contract):
//   1. a dummy-prefix " " token when the text is non-empty;
//   2. the text split like llama2.c splits it: a non-continuation byte starts a unit, up to 3
//      continuation bytes (10xxxxxx) extend it; a unit found in the vocabulary is one token,
//      otherwise each of its bytes becomes the byte token (byte + 3);
//   3. repeatedly merge the adjacent pair whose concatenated piece string is in the vocabulary
//      with the highest score (> -1e10; the leftmost pair on ties) until no pair merges.
// Step 3 runs on a priority queue ordered by (score, position) instead of llama2.c's O(n^2)
// rescans; it picks the same pair at every step (encode_reference() is the literal loop, kept
// for tests). Differences from llama2.c, all where llama2.c has undefined behaviour: a NUL byte
// is an ordinary byte (llama2.c stops at it); a vocabulary without " " gets the byte token of
// ' ' as its dummy prefix (llama2.c would use id -1); among duplicate piece strings the lowest
// id is found (llama2.c's bsearch finds any). Invalid UTF-8 needs no special case: its units are
// not in the vocabulary, so they become byte tokens, and decode gives the same bytes back.
//
// Decoding: byte pieces give their byte; the piece after BOS loses a leading ' ' (llama2.c,
// following sentencepiece), so decode(encode(x, true)) == x.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer_base.hpp"

namespace memattn_llama {

class Llama2cTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kBos = 1;
  static constexpr std::int32_t kEos = 2;
  static constexpr std::int32_t kByteBase = 3;  // id of "<0x00>"
  static constexpr std::int32_t kMaxTokenLength = 1 << 16;  // a sanity bound on the header field

  // Reads a tokenizer file. vocab_size: the model's vocabulary size (the file must hold exactly
  // that many tokens), or <= 0 to take every token in the file. On error returns false, leaves
  // *out untouched and says why in *error.
  static bool load(const std::string& path, std::int32_t vocab_size, Llama2cTokenizer* out,
                   std::string* error) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
      tokenizer_detail::set_error(error, "cannot open tokenizer file '" + path + "'");
      return false;
    }
    std::string bytes;
    char buf[1 << 16];
    std::size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, got);
    const bool read_error = std::ferror(f) != 0;
    std::fclose(f);
    if (read_error) {
      tokenizer_detail::set_error(error, "cannot read tokenizer file '" + path + "'");
      return false;
    }
    std::string why;
    if (!load_from_memory(bytes.data(), bytes.size(), vocab_size, out, &why)) {
      tokenizer_detail::set_error(error, "tokenizer file '" + path + "': " + why);
      return false;
    }
    return true;
  }

  static bool load_from_memory(const void* data, std::size_t size, std::int32_t vocab_size,
                               Llama2cTokenizer* out, std::string* error) {
    using tokenizer_detail::set_error;
    const auto* p = static_cast<const unsigned char*>(data);
    if (!p && size > 0) {
      set_error(error, "null data");
      return false;
    }
    std::size_t off = 0;
    auto read_i32 = [&](std::int32_t* v) {
      if (size - off < 4) return false;
      std::uint32_t u = std::uint32_t(p[off]) | std::uint32_t(p[off + 1]) << 8 |
                        std::uint32_t(p[off + 2]) << 16 | std::uint32_t(p[off + 3]) << 24;
      std::memcpy(v, &u, 4);
      off += 4;
      return true;
    };
    Llama2cTokenizer t;
    if (!read_i32(&t.max_token_length_)) {
      set_error(error, "truncated: no header (" + std::to_string(size) + " bytes)");
      return false;
    }
    if (t.max_token_length_ <= 0 || t.max_token_length_ > kMaxTokenLength) {
      set_error(error, "corrupt header: max_token_length " + std::to_string(t.max_token_length_) +
                           " is not in [1, " + std::to_string(kMaxTokenLength) + "]");
      return false;
    }
    const std::size_t want = vocab_size > 0 ? static_cast<std::size_t>(vocab_size) : SIZE_MAX;
    while (t.pieces_.size() < want && (vocab_size > 0 || off < size)) {
      const std::size_t i = t.pieces_.size();
      const std::string at = "token " + std::to_string(i) + " (offset " + std::to_string(off) + ")";
      std::int32_t score_bits, len;
      if (!read_i32(&score_bits) || !read_i32(&len)) {
        set_error(error, "truncated at " + at + ": " +
                             (vocab_size > 0 ? "the model's vocab_size is " + std::to_string(vocab_size)
                                             : std::string("partial token record")));
        return false;
      }
      float score;
      std::memcpy(&score, &score_bits, 4);
      if (!std::isfinite(score)) {
        set_error(error, "corrupt " + at + ": score is not finite");
        return false;
      }
      if (len < 0 || len > t.max_token_length_) {
        set_error(error, "corrupt " + at + ": length " + std::to_string(len) + " is not in [0, " +
                             std::to_string(t.max_token_length_) + "] (max_token_length)");
        return false;
      }
      if (size - off < static_cast<std::size_t>(len)) {
        set_error(error, "truncated at " + at + ": " + std::to_string(len) + " bytes of text, " +
                             std::to_string(size - off) + " left");
        return false;
      }
      t.pieces_.emplace_back(reinterpret_cast<const char*>(p + off), static_cast<std::size_t>(len));
      t.scores_.push_back(score);
      off += static_cast<std::size_t>(len);
      if (t.pieces_.size() > static_cast<std::size_t>(INT32_MAX - 1)) {
        set_error(error, "too many tokens");
        return false;
      }
    }
    if (off != size) {
      set_error(error, "vocab size mismatch: " + std::to_string(size - off) +
                           " bytes follow the model's " + std::to_string(vocab_size) + " tokens");
      return false;
    }
    const std::int32_t n = static_cast<std::int32_t>(t.pieces_.size());
    if (n < kByteBase + 256) {
      set_error(error, "vocabulary of " + std::to_string(n) + " tokens is too small: ids 0..2 are " +
                           "<unk>/BOS/EOS and 3..258 the byte pieces");
      return false;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      if (t.pieces_[static_cast<std::size_t>(kByteBase + b)] != name) {
        set_error(error, "token " + std::to_string(kByteBase + b) + " should be the byte piece " + name);
        return false;
      }
    }
    t.lookup_.reserve(t.pieces_.size() * 2);
    for (std::int32_t i = 0; i < n; ++i) t.lookup_.emplace(t.pieces_[static_cast<std::size_t>(i)], i);  // lowest id wins
    t.vocab_size_ = n;
    t.bos_ = kBos;
    t.eos_ = kEos;
    t.add_bos_default_ = true;
    *out = std::move(t);
    return true;
  }

  float score(std::int32_t id) const { return scores_[static_cast<std::size_t>(id)]; }
  std::int32_t max_token_length() const { return max_token_length_; }
  bool is_control(std::int32_t id) const override { return id >= 0 && id < kByteBase; }
  const std::string& piece(std::int32_t id) const override {
    static const std::string kEmpty;
    return id >= 0 && id < vocab_size_ ? pieces_[static_cast<std::size_t>(id)] : kEmpty;
  }
  std::int32_t find(const std::string& s) const {
    auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  }

  // llama2.c's merge loop verbatim (O(n^2)): the reference that encode() is tested against.
  std::vector<std::int32_t> encode_reference(const std::string& text, bool add_bos) const {
    std::vector<std::int32_t> tokens = initial_tokens(text);
    std::string buf;
    for (;;) {
      float best_score = -1e10f;
      std::int32_t best_id = -1;
      std::size_t best_idx = SIZE_MAX;
      for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
        buf = pieces_[static_cast<std::size_t>(tokens[i])];
        buf += pieces_[static_cast<std::size_t>(tokens[i + 1])];
        const std::int32_t id = find(buf);
        if (id != -1 && scores_[static_cast<std::size_t>(id)] > best_score) {
          best_score = scores_[static_cast<std::size_t>(id)];
          best_id = id;
          best_idx = i;
        }
      }
      if (best_idx == SIZE_MAX) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
    }
    if (add_bos) tokens.insert(tokens.begin(), kBos);
    return tokens;
  }

 protected:
  void encode_append(const std::string& text, bool /*parse_special*/,
                     std::vector<std::int32_t>* ids) const override {
    std::vector<std::int32_t> sym = initial_tokens(text);
    const std::size_t n = sym.size();
    if (n == 0) return;
    // Doubly linked list over sym; a heap of candidate pairs (left, right), invalidated lazily.
    std::vector<std::int32_t> next(n), prev(n);
    for (std::size_t i = 0; i < n; ++i) {
      next[i] = static_cast<std::int32_t>(i + 1);
      prev[i] = static_cast<std::int32_t>(i) - 1;
    }
    struct Cand {
      float score;
      std::int32_t left, right, left_tok, right_tok, merged;
    };
    auto worse = [](const Cand& a, const Cand& b) {  // max-heap on score, then leftmost
      if (a.score != b.score) return a.score < b.score;
      return a.left > b.left;
    };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    std::string buf;
    auto consider = [&](std::int32_t left) {
      if (left < 0) return;
      const std::int32_t right = next[static_cast<std::size_t>(left)];
      if (right >= static_cast<std::int32_t>(n)) return;
      const std::int32_t a = sym[static_cast<std::size_t>(left)], b = sym[static_cast<std::size_t>(right)];
      buf = pieces_[static_cast<std::size_t>(a)];
      buf += pieces_[static_cast<std::size_t>(b)];
      const std::int32_t id = find(buf);
      if (id != -1 && scores_[static_cast<std::size_t>(id)] > -1e10f)
        heap.push(Cand{scores_[static_cast<std::size_t>(id)], left, right, a, b, id});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) consider(static_cast<std::int32_t>(i));
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const auto l = static_cast<std::size_t>(c.left), r = static_cast<std::size_t>(c.right);
      if (sym[l] != c.left_tok || sym[r] != c.right_tok || next[l] != c.right) continue;  // stale
      sym[l] = c.merged;
      sym[r] = -1;  // removed
      next[l] = next[r];
      if (next[r] < static_cast<std::int32_t>(n)) prev[static_cast<std::size_t>(next[r])] = c.left;
      consider(prev[l]);
      consider(c.left);
    }
    for (std::size_t i = 0; i < n; i = static_cast<std::size_t>(next[i])) ids->push_back(sym[i]);
  }

  void append_piece(std::int32_t prev, std::int32_t id, std::string* out) const override {
    if (id >= kByteBase && id < kByteBase + 256) {
      out->push_back(static_cast<char>(id - kByteBase));
      return;
    }
    const std::string& p = pieces_[static_cast<std::size_t>(id)];
    if (prev == kBos && !p.empty() && p[0] == ' ')
      out->append(p, 1, std::string::npos);
    else
      out->append(p);
  }

 private:
  // Steps 1 and 2: the dummy prefix and the per-character tokens (with byte fallback).
  std::vector<std::int32_t> initial_tokens(const std::string& text) const {
    std::vector<std::int32_t> tokens;
    if (text.empty()) return tokens;
    tokens.reserve(text.size() + 1);
    const std::int32_t space = find(" ");
    tokens.push_back(space >= 0 ? space : kByteBase + ' ');
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::string unit;
    for (std::size_t i = 0; i < n; ++i) {
      if ((s[i] & 0xC0) != 0x80) unit.clear();
      unit.push_back(static_cast<char>(s[i]));
      if (i + 1 < n && (s[i + 1] & 0xC0) == 0x80 && unit.size() < 4) continue;
      const std::int32_t id = find(unit);
      if (id != -1) {
        tokens.push_back(id);
      } else {
        for (char c : unit) tokens.push_back(kByteBase + static_cast<unsigned char>(c));
      }
      unit.clear();
    }
    return tokens;
  }

  std::int32_t max_token_length_ = 0;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int32_t> lookup_;
};

}  // namespace memattn_llama
