// Registry of the KV policies the CPU back-end implements, and the factory that turns a --kv
// spec into a cache::KvCache. Later policies add an entry to kv_policies() and a branch to
// make_kv_cache(); engines only ever see the interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/compresskv_kv_cache.hpp"
#include "memattn/cpu/composed_kv_factory.hpp"
#include "memattn/cpu/dense_kv_cache.hpp"
#include "memattn/cpu/epicache_kv_cache.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/cpu/evict_merge_registry.hpp"
#include "memattn/cpu/evict_pin.hpp"
#include "memattn/cpu/kivi_kv_cache.hpp"
#include "memattn/cpu/mikv_kv_cache.hpp"
#include "memattn/cpu/sentencekv_kv_cache.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline const std::vector<cache::PolicyInfo>& kv_policies() {
  static const std::vector<cache::PolicyInfo> policies = {
      {"full", "every token kept; K and V in fp16 (fp32=1: fp32, the reference)",
       {{"fp32", 0, 0, 1, true, "1: store K and V in fp32 instead of fp16"}}},
      {"kivi", "KIVI 2/4/8-bit KV: K per channel over groups of `group` tokens, V per token over min(group, head_dim) channels, fp16 scale/zero, the newest `residual` tokens exact in fp16",
       {{"kbits", 2, 2, 8, true, "bits per key code: 2, 4 or 8"},
        {"vbits", 2, 2, 8, true, "bits per value code: 2, 4 or 8"},
        {"group", 32, 32, 128, true, "tokens per key group and block: 32, 64 or 128"},
        {"residual", 128, 0, 4096, true, "exact recent tokens (a multiple of group)"}}},
      // token eviction (cpu/evict_kv_cache.hpp)
      evict_policy_info("streaming"), evict_policy_info("h2o"), evict_policy_info("scissorhands"),
      evict_policy_info("snapkv"), evict_policy_info("pyramidkv"), evict_policy_info("knorm"),
      // MiKV mixed precision (cpu/mikv_kv_cache.hpp)
      mikv_policy_info(),
      // episodic and sentence-level KV (issue 6; cpu/epicache_kv_cache.hpp, cpu/sentencekv_kv_cache.hpp)
      epicache_policy_info(), sentencekv_policy_info(),
      compresskv_policy_info(),  // cpu/compresskv_kv_cache.hpp (issue 6)
      // token merging (cpu/evict_merge_registry.hpp)
      merge_policy_info("d2o"), merge_policy_info("kvmerger"),
      evict_policy_info("lazy"), evict_policy_info("sirllm"), evict_policy_info("windowkv"),
      pin_policy_info(),  // composes with the eviction policies: ...+pin:start=A,end=B,ttl=S
      // key-channel pruning and '+' compositions (cpu/composed_kv_factory.hpp)
      think_policy_info(),
  };
  return policies;
}

inline const cache::PolicyInfo* find_kv_policy(const std::string& name) {
  for (const auto& p : kv_policies())
    if (name == p.name) return &p;
  return nullptr;
}

inline std::string kv_policy_names() {
  std::string s;
  for (const auto& p : kv_policies()) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

// Builds the cache a spec describes. On error *error says what is wrong and what exists.
// make_kv_cache and the make_*_kv_cache factories it calls are function templates (of nothing) so
// that only a translation unit that calls one instantiates every cache class: as plain inline
// functions they cost every includer of these headers (the umbrella's too) ~6 s of GCC's front end.
template <int = 0>
inline Status make_kv_cache(const std::string& spec, const cache::CacheShape& shape, const Executor& executor,
                            std::unique_ptr<cache::KvCache>* out, std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  if (out == nullptr) {
    *error = "no output cache pointer";
    return Status::kErrorNullPointer;
  }
  std::vector<cache::PolicySpec> parts;
  MEMATTN_RETURN_IF_ERROR(cache::parse_kv_spec(spec, &parts, error));
  for (const auto& part : parts) {
    if (find_kv_policy(part.name) == nullptr) {
      *error = "unknown KV policy '" + part.name + "'; available: " + kv_policy_names();
      return Status::kErrorInvalidArgument;
    }
  }
  std::vector<cache::PolicySpec> pins;
  split_pins(&parts, &pins);
  if (!pins.empty() && (parts.size() != 1 || !(is_evict_policy(parts[0].name) || is_merge_policy(parts[0].name)))) {
    *error = "'" + spec + "': pin composes with one eviction policy (e.g. h2o:budget=256+pin:start=0,end=64,ttl=100)";
    return Status::kErrorNotSupported;
  }
  if (parts.size() != 1 || parts[0].name == "think") {  // compositions (and ThinK alone): the composed cache
    std::vector<ResolvedPart> resolved;
    for (const auto& part : parts) {
      resolved.emplace_back(find_kv_policy(part.name), cache::ResolvedParams{});
      MEMATTN_RETURN_IF_ERROR(cache::resolve_params(part, *resolved.back().first, &resolved.back().second, error));
    }
    if (cache::validate_shape(shape) != Status::kSuccess) {
      *error = "invalid cache shape";
      return cache::validate_shape(shape);
    }
    return make_composed_kv_cache(resolved, shape, executor, out, error);
  }
  const cache::PolicyInfo& info = *find_kv_policy(parts[0].name);
  cache::ResolvedParams params;
  MEMATTN_RETURN_IF_ERROR(cache::resolve_params(parts[0], info, &params, error));
  if (cache::validate_shape(shape) != Status::kSuccess) {
    *error = "invalid cache shape (layers, heads, head_dim, max_tokens must be positive; q_heads a multiple of kv_heads)";
    return cache::validate_shape(shape);
  }
  if (info.name == std::string("full")) {
    if (params.get_int("fp32") == 1) {
      std::unique_ptr<DenseKvCache<float>> c;
      MEMATTN_RETURN_IF_ERROR(DenseKvCache<float>::create(shape, executor, &c));
      *out = std::move(c);
    } else {
      std::unique_ptr<DenseKvCache<Half>> c;
      MEMATTN_RETURN_IF_ERROR(DenseKvCache<Half>::create(shape, executor, &c));
      *out = std::move(c);
    }
    return Status::kSuccess;
  }
  if (info.name == std::string("kivi")) {
    quant::KvQuantConfig cfg;
    cfg.head_dim = shape.head_dim;
    cfg.bits_k = params.get_int("kbits");
    cfg.bits_v = params.get_int("vbits");
    cfg.group = params.get_int("group");
    cfg.residual = params.get_int("residual");
    const Status st = cfg.validate();
    if (st != Status::kSuccess) {
      *error = "kivi: kbits and vbits must be 2, 4 or 8, group 32, 64 or 128, residual a multiple of group, head_dim a "
               "multiple of 8 in [8, 256] (got head_dim " + std::to_string(shape.head_dim) + ")";
      return st;
    }
    std::unique_ptr<KiviKvCache> c;
    MEMATTN_RETURN_IF_ERROR(KiviKvCache::create(shape, cfg, executor, &c));
    *out = std::move(c);
    return Status::kSuccess;
  }
  if (info.name == std::string("compresskv")) return make_compresskv_kv_cache(params, shape, executor, out, error);
  if (info.name == std::string("mikv")) return make_mikv_kv_cache(params, shape, executor, out, error);
  if (info.name == std::string("epicache")) return make_epicache_kv_cache(params, shape, executor, out, error);
  if (info.name == std::string("sentencekv")) return make_sentencekv_kv_cache(params, shape, executor, out, error);
  if (is_evict_policy(info.name) || is_merge_policy(info.name)) {
    MEMATTN_RETURN_IF_ERROR(is_evict_policy(info.name) ? make_evict_kv_cache(info, params, shape, executor, out, error)
                                                       : make_merge_kv_cache(info, params, shape, executor, out, error));
    const Status st = apply_pins(pins, out->get(), error);
    if (st != Status::kSuccess) out->reset();
    return st;
  }
  *error = "KV policy '" + parts[0].name + "' is registered but has no CPU implementation";
  return Status::kErrorNotSupported;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
