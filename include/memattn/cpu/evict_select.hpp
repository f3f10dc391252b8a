// Deterministic top-k selection and compaction of one eviction segment on the CPU (spec
// eviction.md §5.1-5.4, §6). The GPU path must return bit-identical keep lists.
//
//   select_keep(...)   scores + budget + protection -> kept slots, ascending (chronological)
//   compact_rows(...)  in-place ordered gather: row i <- row keep[i] (keep strictly increasing,
//                      keep[i] >= i, so a forward pass never overwrites a row still to be read)
//   fill_holes(...)    in-place unordered compaction: only kept rows beyond `count` move, into
//                      the evicted slots below it (slot replacement, §5.5)
//
// Selection is on the unique 64-bit key (score, position) of evict/key.hpp: O(N) expected with
// std::nth_element (or, when only a few candidates go, as at a decode step, one pass keeping the
// smallest few keys), then one flag pass in slot order. Exact count (§0.3.6):
//   kept = min(N, max(C, |protected|)).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>

#include "memattn/core/status.hpp"
#include "memattn/evict/key.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/retention.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

// The k-th largest of n distinct keys (1 <= k < n); may reorder keys. Decode-time eviction drops
// one or a few candidates: the (n - k + 1)-th smallest then comes from one pass with a sorted
// buffer of the smallest keys seen, cheaper than nth_element's partitioning.
inline std::uint64_t kth_largest(std::uint64_t* keys, std::int64_t n, std::int64_t k) {
  constexpr std::int64_t kFew = 16;
  const std::int64_t m = n - k + 1;  // rank from the bottom
  if (m > kFew) {
    std::nth_element(keys, keys + (k - 1), keys + n, std::greater<std::uint64_t>());
    return keys[k - 1];
  }
  std::uint64_t low[kFew];  // the m smallest keys seen, ascending
  std::int64_t have = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t x = keys[i];
    if (have == m && x >= low[m - 1]) continue;
    std::int64_t at = have < m ? have++ : m - 1;
    for (; at > 0 && low[at - 1] > x; --at) low[at] = low[at - 1];
    low[at] = x;
  }
  return low[m - 1];
}

// Scratch: one uint64 key per slot.
inline std::size_t select_workspace_elems(std::int64_t n) { return n > 0 ? static_cast<std::size_t>(n) : 0; }

// scores[n]: fp32, higher = keep (ignored for protected slots); pos[n]: original positions, distinct;
// t_cur: position of the newest token (recent protection is pos > t_cur - n_recent);
// prio[n] (optional, retention ranges §2.10): 255 = hard pin (protected), 1..254 soft priority
// (major part of the key), 0 = none; nullptr: no ranges (the plain 64-bit key).
// keep: room for n slots; *count: kept slots. NaN among candidate scores -> kErrorNonFinite and
// nothing written.
inline Status select_keep(const float* scores, const std::int32_t* pos, const std::uint8_t* prio, std::int64_t n,
                          std::int64_t budget, std::int32_t t_cur, const evict::Protection& protect,
                          evict::TieBreak tie, std::uint64_t* scratch, std::int32_t* keep, std::int64_t* count) {
  if (pos == nullptr || keep == nullptr || count == nullptr || (n > 0 && (scores == nullptr || scratch == nullptr)))
    return Status::kErrorNullPointer;
  if (n < 0 || budget < 1 || protect.n_sink < 0 || protect.n_recent < 0) return Status::kErrorInvalidArgument;
  auto is_prot = [&](std::int64_t j) {
    return evict::is_protected(pos[j], t_cur, protect) || (prio != nullptr && prio[j] == evict::kHardPin);
  };
  auto key = [&](std::int64_t j) {
    return prio == nullptr ? evict::select_key(scores[j], pos[j], tie) : evict::select_key_prio(scores[j], pos[j], prio[j], tie);
  };
  std::int64_t candidates = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    if (is_prot(j)) continue;
    if (scores[j] != scores[j]) return Status::kErrorNonFinite;
    scratch[candidates++] = key(j);
  }
  const std::int64_t protected_count = n - candidates;
  const std::int64_t target = std::min<std::int64_t>(n, std::max<std::int64_t>(budget, protected_count));
  const std::int64_t k = target - protected_count;  // candidates admitted, 0 <= k <= candidates
  std::uint64_t theta = 0;                          // admit keys >= theta
  bool admit_all = k == candidates, admit_none = k == 0;
  if (!admit_all && !admit_none) theta = kth_largest(scratch, candidates, k);
  std::int64_t out = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    bool f = is_prot(j);
    if (!f) f = admit_all || (!admit_none && key(j) >= theta);
    if (f) keep[out++] = static_cast<std::int32_t>(j);
  }
  *count = out;
  return Status::kSuccess;
}

inline Status select_keep(const float* scores, const std::int32_t* pos, std::int64_t n, std::int64_t budget,
                          std::int32_t t_cur, const evict::Protection& protect, evict::TieBreak tie,
                          std::uint64_t* scratch, std::int32_t* keep, std::int64_t* count) {
  return select_keep(scores, pos, nullptr, n, budget, t_cur, protect, tie, scratch, keep, count);
}

// In-place ordered gather of `count` rows of `row` elements each.
template <class T>
void compact_rows(T* base, std::int64_t row, const std::int32_t* keep, std::int64_t count) {
  std::int64_t i = 0;
  while (i < count && keep[i] == i) ++i;  // rows before the first evicted slot stay
  while (i < count) {  // one move per run of consecutive kept slots (a decode step's: one run)
    std::int64_t j = i + 1;
    while (j < count && keep[j] == keep[j - 1] + 1) ++j;
    // dest i < source keep[i]; later runs read from keep[j] >= j, past every row written so far
    std::memmove(base + i * row, base + static_cast<std::int64_t>(keep[i]) * row, static_cast<std::size_t>((j - i) * row) * sizeof(T));
    i = j;
  }
}

// Hole filling (spec §5.5): the same kept set in slots [0, count), moving only the kept rows at
// slots >= count, in order, into the evicted slots below count (as many holes as such rows). Kept
// rows below count do not move; slot order is no longer chronological. keep: ascending.
template <class T>
std::int64_t fill_holes(T* base, std::int64_t row, const std::int32_t* keep, std::int64_t count) {
  const std::int64_t stay = std::lower_bound(keep, keep + count, static_cast<std::int32_t>(count)) - keep;
  std::int64_t next = stay, k = 0, moved = 0;
  for (std::int64_t slot = 0; slot < count && next < count; ++slot) {
    if (k < stay && keep[k] == slot) {
      ++k;
      continue;
    }
    std::memcpy(base + slot * row, base + keep[next++] * row, static_cast<std::size_t>(row) * sizeof(T));
    ++moved;
  }
  return moved;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
