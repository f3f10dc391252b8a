// Deterministic selection keys for token eviction (spec eviction.md §5.1).
//
// A token's score and its original position form one 64-bit key; live tokens of a segment have
// distinct positions, so keys are unique and every correct top-k algorithm (CPU nth_element,
// GPU radix select, CUB sort) returns the same keep set.
//   ord(x)   : monotone uint32 of an fp32 score (-0 == +0, NaN ranks lowest)
//   key64(j) : ord(s_j) << 32 | (0xFFFFFFFF - pos_j)   TieBreak::kPreferEarlier (default)
//            : ord(s_j) << 32 | pos_j                  TieBreak::kPreferLater
// Higher key = keep.
#pragma once

#include <cstdint>
#include <cstring>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

enum class TieBreak : std::uint8_t { kPreferEarlier = 0, kPreferLater = 1 };

MEMATTN_HOST_DEVICE std::uint32_t score_bits(float x) {
  std::uint32_t u;
#if MEMATTN_DEVICE_COMPILE
  u = __float_as_uint(x);
#else
  std::memcpy(&u, &x, sizeof u);
#endif
  return u;
}

// Monotone map of fp32 scores onto uint32: a < b  =>  ord(a) < ord(b); -0 and +0 are equal;
// NaN maps to 0 (below -inf, whose ord is 0x007FFFFF).
MEMATTN_HOST_DEVICE std::uint32_t ord_score(float x) {
  if (x != x) return 0u;
  if (x == 0.f) x = 0.f;  // canonical +0
  const std::uint32_t b = score_bits(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

MEMATTN_HOST_DEVICE std::uint64_t select_key(float score, std::int32_t pos, TieBreak tie) {
  const std::uint32_t p = static_cast<std::uint32_t>(pos);
  const std::uint32_t lo = tie == TieBreak::kPreferEarlier ? 0xFFFFFFFFu - p : p;
  return (static_cast<std::uint64_t>(ord_score(score)) << 32) | lo;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
