// The tokenizer interface of memattn-llama, UTF-8 helpers, and a streaming decoder.
//
//   Tokenizer          encode(text, add_bos[, parse_special]) -> ids; decode(id), decode(prev, id),
//                      decode(ids); bos(), eos(), vocab_size(), is_control(id), add_bos_default()
//   StreamDecoder      push(id) -> only complete UTF-8 characters; flush() -> whatever is left.
//                      The concatenation of every push() and the final flush() equals decode(ids).
//
// Implementations: Llama2cTokenizer (tokenizer_llama2c.hpp), BpeTokenizer (tokenizer_bpe.hpp).
// Nothing here throws (std::bad_alloc aside); bad ids decode to "" instead of crashing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace memattn_llama {

namespace tokenizer_detail {

// Length of the well-formed UTF-8 character starting at s[0] (1..4), or 0 when the bytes there
// do not start one (stray continuation byte, overlong form, surrogate, > U+10FFFF, truncated).
// Strict like Unicode's table 3-7 (and Rust's str). Writes the code point to *cp when non-zero.
inline int utf8_char(const unsigned char* s, std::size_t n, std::uint32_t* cp) {
  if (n == 0) return 0;
  const unsigned c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int len;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  std::uint32_t v;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    v = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;  // no overlongs
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    v = c & 0x07;
    if (c == 0xF0) lo = 0x90;  // no overlongs
    if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (n < static_cast<std::size_t>(len)) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  v = (v << 6) | (s[1] & 0x3F);
  for (int i = 2; i < len; ++i) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  *cp = v;
  return len;
}

// Number of bytes at the end of s[0..n) that are a proper prefix of a well-formed UTF-8 character
// (so more bytes could still complete it): 0..3.
inline std::size_t utf8_incomplete_tail(const unsigned char* s, std::size_t n) {
  const std::size_t max_back = n < 3 ? n : 3;
  for (std::size_t back = 1; back <= max_back; ++back) {
    const unsigned c = s[n - back];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back for the lead
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return 0;  // ASCII or an invalid lead: nothing can complete
    }
    if (back >= static_cast<std::size_t>(len)) return 0;  // complete (or over-long run): emit
    if (back >= 2 && (s[n - back + 1] < lo || s[n - back + 1] > hi)) return 0;
    return back;  // the remaining continuation bytes were checked by the loop above
  }
  return 0;
}

inline void append_utf8(std::uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline void set_error(std::string* error, const std::string& message) {
  if (error) *error = message;
}

}  // namespace tokenizer_detail

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (any bytes: invalid UTF-8 is encoded too, never dropped), preceded by
  // bos() when add_bos. parse_special: recognise control tokens written in the text (e.g.
  // "<|im_start|>") as single tokens (byte-level BPE only; the llama2.c tokenizer ignores it).
  std::vector<std::int32_t> encode(const std::string& text, bool add_bos, bool parse_special = false) const {
    std::vector<std::int32_t> ids;
    if (add_bos && bos_ >= 0) ids.push_back(bos_);
    encode_append(text, parse_special, &ids);
    return ids;
  }

  // The bytes of token `id` on its own (control tokens give their text, e.g. "<|im_end|>");
  // "" for an id outside [0, vocab_size()).
  std::string decode(std::int32_t id) const { return decode(-1, id); }
  // The bytes of `id` when it follows `prev` (-1: none). The llama2.c tokenizer drops the
  // dummy-prefix space of the first piece after BOS, as llama2.c does.
  std::string decode(std::int32_t prev, std::int32_t id) const {
    std::string out;
    if (id >= 0 && id < vocab_size_) append_piece(prev, id, &out);
    return out;
  }
  // A whole sequence; control tokens (BOS, EOS, <|im_start|>, ...) are skipped when skip_control
  // (they still count as `prev` for the next token). decode(encode(x, true)) == x for any bytes x.
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_control = true) const {
    std::string out;
    std::int32_t prev = -1;
    for (std::int32_t id : ids) {
      if (id >= 0 && id < vocab_size_ && !(skip_control && is_control(id))) append_piece(prev, id, &out);
      prev = id;
    }
    return out;
  }

  std::int32_t bos() const { return bos_; }
  std::int32_t eos() const { return eos_; }
  std::int32_t vocab_size() const { return vocab_size_; }
  // Whether a prompt should start with bos() (llama2.c: yes; GGUF: tokenizer.ggml.add_bos_token).
  bool add_bos_default() const { return add_bos_default_; }
  // Control tokens: BOS/EOS/unknown and the like; they have no text of their own in a decode.
  virtual bool is_control(std::int32_t id) const = 0;
  // The vocabulary string of `id` as stored (byte-level unicode for BPE, "<0x0A>" for bytes).
  virtual const std::string& piece(std::int32_t id) const = 0;

 protected:
  virtual void encode_append(const std::string& text, bool parse_special, std::vector<std::int32_t>* ids) const = 0;
  // Appends the bytes of id (0 <= id < vocab_size) following prev.
  virtual void append_piece(std::int32_t prev, std::int32_t id, std::string* out) const = 0;

  std::int32_t bos_ = -1;
  std::int32_t eos_ = -1;
  std::int32_t vocab_size_ = 0;
  bool add_bos_default_ = false;
};

// Decodes token by token for printing while generating: a token may end in the middle of a UTF-8
// character (byte-fallback and byte-level pieces), so bytes that could still become a valid
// character are held back until the next token completes them. Bytes that can never be part of a
// valid character are passed through unchanged (the output is the decoded bytes, not repaired).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_control = true)
      : tokenizer_(&tokenizer), skip_control_(skip_control) {}

  // The text that became printable with `id` (possibly "").
  std::string push(std::int32_t id) {
    if (!(skip_control_ && tokenizer_->is_control(id))) pending_ += tokenizer_->decode(prev_, id);
    prev_ = id;
    const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
    const std::size_t keep = tokenizer_detail::utf8_incomplete_tail(p, pending_.size());
    std::string out = pending_.substr(0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return out;
  }
  // Whatever is still held back (an incomplete character at the end of the stream).
  std::string flush() {
    std::string out;
    out.swap(pending_);
    return out;
  }
  // Starts a new stream; `prev` is the token before it (e.g. bos() when the prompt began with it).
  void reset(std::int32_t prev = -1) {
    pending_.clear();
    prev_ = prev;
  }

 private:
  const Tokenizer* tokenizer_;
  bool skip_control_;
  std::int32_t prev_ = -1;
  std::string pending_;
};

}  // namespace memattn_llama
