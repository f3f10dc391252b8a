// `+pin:start=A,end=B,ttl=S` in a --kv spec (TTL pinning, spec eviction.md §2.10 / §3.15): the
// positions [A, B) of every sequence are hard-pinned (or held at a soft priority) in the eviction
// cache the spec composes with, until the sequence has S tokens (-1: never). Several pins may be
// given. The factory splits the pin parts off (split_pins) and installs them on the built cache
// (apply_pins) through RetentionKvCache; any eviction policy honours them at selection time.
#pragma once

#include <string>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/evict/retention.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline const cache::PolicyInfo& pin_policy_info() {
  static const cache::PolicyInfo info = {
      "pin",
      "TTL pinning (Continuum), composed with an eviction policy: positions [start, end) are kept until the sequence "
      "has `ttl` tokens, e.g. h2o:budget=256+pin:start=0,end=64,ttl=100",
      {{"start", 0, 0, 16777215, true, "first pinned position"},
       {"end", 64, 1, 16777216, true, "one past the last pinned position"},
       {"ttl", -1, -1, 1e9, true, "steps (tokens of the sequence) the pin lasts; -1: never expires"},
       {"priority", 255, 1, 255, true, "255: hard pin (never evicted); 1..254: soft priority (evicted after unpinned tokens)"},
       {"layers", -1, -1, 63, true, "pin only in layers [0, layers) (-1: every layer)"}}};
  return info;
}

// Moves the `pin` parts of a parsed spec into *pins (order kept).
inline void split_pins(std::vector<cache::PolicySpec>* parts, std::vector<cache::PolicySpec>* pins) {
  std::vector<cache::PolicySpec> rest;
  for (auto& p : *parts) (p.name == "pin" ? pins : &rest)->push_back(std::move(p));
  *parts = std::move(rest);
}

inline Status apply_pins(const std::vector<cache::PolicySpec>& pins, cache::KvCache* cache, std::string* error) {
  if (pins.empty()) return Status::kSuccess;
  auto* rc = dynamic_cast<RetentionKvCache*>(cache);
  if (rc == nullptr) {
    *error = "pin composes with eviction policies only (e.g. h2o:budget=256+pin:start=0,end=64,ttl=100)";
    return Status::kErrorNotSupported;
  }
  for (const auto& spec : pins) {
    cache::ResolvedParams p;
    MEMATTN_RETURN_IF_ERROR(cache::resolve_params(spec, pin_policy_info(), &p, error));
    evict::RetentionRange r;
    r.begin_pos = p.get_int("start");
    r.end_pos = p.get_int("end");
    r.priority = static_cast<std::uint8_t>(p.get_int("priority"));
    r.expires_at = p.get_int("ttl") < 0 ? evict::kNeverExpires : p.get_int("ttl");
    if (p.get_int("layers") >= 0) r.layer_mask = p.get_int("layers") == 0 ? 0 : (~0ull >> (64 - p.get_int("layers")));
    if (r.end_pos <= r.begin_pos || r.layer_mask == 0) {
      *error = "pin: needs start < end and layers != 0";
      return Status::kErrorInvalidArgument;
    }
    MEMATTN_RETURN_IF_ERROR(rc->pin_template(r, "+" + cache::canonical_spec(pin_policy_info(), p)));
  }
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
