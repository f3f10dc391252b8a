// Retention ranges (spec eviction.md §2.10) and TTL pinning (Continuum / CacheTTL, §3.15).
//
// A RetentionRange pins positions [begin_pos, end_pos) of one sequence, in the layers of
// layer_mask, until the caller's clock reaches expires_at (steps for the caches here: a range is
// active while tokens(seq) < expires_at). priority 255 = hard pin: the tokens are protected (§1.3),
// no policy evicts them, and a segment keeps all of them even over budget (§2.5). 1..254 = soft
// priority: the major part of the selection key (§5.1), so a lower-priority token always goes
// before a higher-priority one; tokens in no range have priority 0.
// RetentionTable is the host-side store: add / priority lookup / expired(now) for the scheduler /
// release_expired(now). It owns no policy: any eviction cache consults it at selection time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/key.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

constexpr std::uint8_t kHardPin = 255;
constexpr std::int64_t kNeverExpires = std::numeric_limits<std::int64_t>::max();

struct RetentionRange {
  std::int32_t seq = 0;
  std::uint64_t layer_mask = ~0ull;  // bit l: layer l (layers >= 64 use bit 63)
  std::int32_t begin_pos = 0, end_pos = 0;
  std::uint8_t priority = kHardPin;
  std::int64_t expires_at = kNeverExpires;
  bool active(std::int64_t now) const { return now < expires_at; }
  bool covers(int layer, std::int32_t pos) const {
    const int bit = layer < 63 ? layer : 63;
    return ((layer_mask >> bit) & 1ull) != 0 && pos >= begin_pos && pos < end_pos;
  }
};

// Soft-priority selection key (§5.1): prio(8) << 56 | ord(s) << 24 | tie(24 bits of pos).
MEMATTN_HOST_DEVICE std::uint64_t select_key_prio(float score, std::int32_t pos, std::uint8_t prio, TieBreak tie) {
  const std::uint32_t p = static_cast<std::uint32_t>(pos) & 0xFFFFFFu;
  const std::uint32_t lo = tie == TieBreak::kPreferEarlier ? 0xFFFFFFu - p : p;
  return (static_cast<std::uint64_t>(prio) << 56) | (static_cast<std::uint64_t>(ord_score(score)) << 24) | lo;
}

class RetentionTable {
 public:
  Status add(const RetentionRange& r) {
    if (r.seq < 0 || r.begin_pos < 0 || r.end_pos <= r.begin_pos || r.end_pos > (1 << 24) || r.layer_mask == 0)
      return Status::kErrorInvalidArgument;
    ranges_.push_back(r);
    return Status::kSuccess;
  }
  // Whether any range of (seq, layer) is active at `now`.
  bool any_active(int seq, int layer, std::int64_t now) const {
    for (const auto& r : ranges_)
      if (r.seq == seq && r.active(now) && r.covers(layer, r.begin_pos)) return true;
    return false;
  }
  // Highest priority of the active ranges covering (seq, layer, pos); 0 when none.
  std::uint8_t priority(int seq, int layer, std::int32_t pos, std::int64_t now) const {
    std::uint8_t p = 0;
    for (const auto& r : ranges_)
      if (r.seq == seq && r.active(now) && r.covers(layer, pos)) p = std::max(p, r.priority);
    return p;
  }
  // Ranges whose TTL has run out at `now` (the scheduler decides: drop, offload, keep).
  std::vector<RetentionRange> expired(std::int64_t now) const {
    std::vector<RetentionRange> out;
    for (const auto& r : ranges_)
      if (!r.active(now)) out.push_back(r);
    return out;
  }
  std::size_t release_expired(std::int64_t now) {
    const std::size_t before = ranges_.size();
    ranges_.erase(std::remove_if(ranges_.begin(), ranges_.end(), [&](const RetentionRange& r) { return !r.active(now); }),
                  ranges_.end());
    return before - ranges_.size();
  }
  void clear(int seq) {
    ranges_.erase(std::remove_if(ranges_.begin(), ranges_.end(), [&](const RetentionRange& r) { return r.seq == seq; }),
                  ranges_.end());
  }
  const std::vector<RetentionRange>& ranges() const { return ranges_; }
  std::size_t bytes() const { return ranges_.size() * sizeof(RetentionRange); }

 private:
  std::vector<RetentionRange> ranges_;
};

}  // namespace evict
MEMATTN_NAMESPACE_END
