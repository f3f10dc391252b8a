// A tier pool of the MiKV mixed cache (specs/quantization.md §8.2, eviction.md §2.8): per-token
// quantised records (quant/mixed_format.hpp) of one (sequence, layer, KV head) in pages of kPage
// slots, with per-slot side data: original position (int32), live bit, and the importance
// policy's per-token state (fp32 score or uint64 history).
//
// Quantised rows never move: a new token is written into a free slot (the lowest dead slot, else
// the next one at the tail), eviction only clears the live bit, and memory comes back page by page
// when trailing pages hold no live row. The decode reads every slot and masks dead ones.
// Host-side storage; the CUDA path reads the same records from device copies.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/quant/mixed_format.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace quant {

// Codec: how records are quantised (quant::ScalarCodec, or cpu::quant_codes::Codec: same bits).
template <class State, class Codec = ScalarCodec>
class MixedRowPool {
 public:
  static constexpr std::int64_t kPage = 32;  // slots per page

  MixedRowPool() = default;
  explicit MixedRowPool(const MixedRowConfig& cfg) : cfg_(cfg), lay_(mixed_row_layout(cfg)) {}

  const MixedRowConfig& config() const { return cfg_; }
  const MixedRowLayout& layout() const { return lay_; }
  // Slots [0, slots()) have been written (live or dead); capacity() = allocated slots (whole pages).
  std::int64_t slots() const { return end_; }
  std::int64_t capacity() const { return static_cast<std::int64_t>(pos_.size()); }
  std::int64_t live() const { return live_count_; }
  bool is_live(std::int64_t s) const { return (live_[static_cast<std::size_t>(s >> 5)] >> (s & 31)) & 1u; }
  const std::uint32_t* live_bits() const { return live_.data(); }
  const std::uint8_t* records() const { return reinterpret_cast<const std::uint8_t*>(rec_.data()); }
  const std::uint8_t* record(std::int64_t s) const { return records() + static_cast<std::size_t>(s) * lay_.bytes; }
  MixedRowView row(std::int64_t s) const { return MixedRowView{record(s), cfg_, lay_}; }
  std::int32_t pos(std::int64_t s) const { return pos_[static_cast<std::size_t>(s)]; }
  const std::int32_t* positions() const { return pos_.data(); }
  State* state() { return state_.data(); }
  const State* state() const { return state_.data(); }

  // Quantises (k_bal, v) into a free slot; returns the slot, the OR of QuantFlags in *flags.
  std::int64_t insert(const Half* k_bal, const Half* v, std::int32_t pos, State st, std::uint32_t* flags) {
    std::int64_t s = lowest_dead();
    if (s == end_) {
      if (end_ == capacity()) resize_pages(capacity() / kPage + 1);
      ++end_;
    }
    *flags |= quantize_row<Codec>(cfg_, k_bal, v, reinterpret_cast<std::uint8_t*>(rec_.data()) + static_cast<std::size_t>(s) * lay_.bytes);
    pos_[static_cast<std::size_t>(s)] = pos;
    state_[static_cast<std::size_t>(s)] = st;
    live_[static_cast<std::size_t>(s >> 5)] |= 1u << (s & 31);
    ++live_count_;
    return s;
  }

  // Clears the live bit of slot s; no row moves.
  void kill(std::int64_t s) {
    live_[static_cast<std::size_t>(s >> 5)] &= ~(1u << (s & 31));
    --live_count_;
  }
  // Returns the trailing pages that hold no live row.
  void reclaim() {
    while (end_ > 0 && !is_live(end_ - 1)) --end_;
    const std::int64_t pages = (end_ + kPage - 1) / kPage;
    if (pages < capacity() / kPage) resize_pages(pages);
  }

  // Real bytes held: records + positions + state + live bits, whole pages.
  std::size_t bytes() const {
    return rec_.size() * sizeof(Word) + pos_.size() * sizeof(std::int32_t) + state_.size() * sizeof(State) +
           live_.size() * sizeof(std::uint32_t);
  }
  static std::size_t bytes_per_slot(const MixedRowConfig& cfg) {
    return mixed_row_layout(cfg).bytes + sizeof(std::int32_t) + sizeof(State);  // + 1 live bit
  }

 private:
  using Word = std::uint32_t;
  std::int64_t lowest_dead() const {
    for (std::int64_t w = 0; w * 32 < end_; ++w) {
      const std::uint32_t dead = ~live_[static_cast<std::size_t>(w)];
      if (dead == 0) continue;
      std::int64_t b = 0;
      while (!((dead >> b) & 1u)) ++b;
      return std::min(end_, w * 32 + b);
    }
    return end_;
  }
  void resize_pages(std::int64_t pages) {
    const std::size_t n = static_cast<std::size_t>(pages * kPage);
    rec_.resize(n * lay_.bytes / sizeof(Word), 0u);
    rec_.shrink_to_fit();
    pos_.resize(n, 0);
    pos_.shrink_to_fit();
    state_.resize(n, State(0));
    state_.shrink_to_fit();
    live_.resize(n / 32, 0u);
    live_.shrink_to_fit();
  }

  MixedRowConfig cfg_{};
  MixedRowLayout lay_{};
  std::vector<Word> rec_;
  std::vector<std::int32_t> pos_;
  std::vector<State> state_;
  std::vector<std::uint32_t> live_;
  std::int64_t end_ = 0;
  std::int64_t live_count_ = 0;
};

}  // namespace quant
MEMATTN_NAMESPACE_END
