// --kv registry side of the composed cache (issue 7): the "think" policy entry and the builder of
// '+' compositions, e.g. "h2o:budget=512+think:prune=0.4+kivi:kbits=4,vbits=2".
// Rules (spec eviction.md §2.9): at most one eviction policy, one "think", one "kivi", written in
// that order (evict + prune + quant); "full" does not compose; window eviction scorers (snapkv,
// pyramidkv) are not composed in this build. Violations get a message, never a cache.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "memattn/cache/kv_spec.hpp"
#include "memattn/cpu/composed_kv_cache.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline const cache::PolicyInfo& think_policy_info() {
  static const cache::PolicyInfo info = {
      "think",
      "ThinK: query-driven key-channel pruning; keys older than the newest `recent` keep d - floor(prune*d) channels "
      "(chosen per KV head from the last `window` queries), stored compactly",
      {{"prune", 0.4, 0, 0.95, false, "lambda: pruned fraction of the key channels"},
       {"window", 32, 1, 4096, true, "observation-window queries scoring the channels"},
       {"recent", 32, 0, 10000000, true, "newest tokens kept full width"},
       {"granularity", 1, 1, 64, true, "d_keep rounded up to a multiple of this (1 = reference)"},
       {"migrate", 1, 0, 1, true, "1: tokens leaving the full-width tail are pruned too; 0: only the first prune (reference)"},
       {"vprune", 0, 0, 0.95, false, "[lib] extension: pruned fraction of the value channels, scored by ||(A_w V)[:,c]||^2",
        false, true}}};
  return info;
}

inline prune::ThinKParams think_params(const cache::ResolvedParams& p) {
  prune::ThinKParams t;
  t.prune = static_cast<float>(p.get("prune"));
  t.window = p.get_int("window");
  t.recent = p.get_int("recent");
  t.granularity = p.get_int("granularity");
  t.migrate = p.get_int("migrate") != 0;
  t.vprune = static_cast<float>(p.get("vprune"));
  return t;
}

inline quant::KvQuantConfig kivi_params(const cache::ResolvedParams& p, int head_dim) {
  quant::KvQuantConfig q;
  q.head_dim = head_dim;
  q.bits_k = p.get_int("kbits");
  q.bits_v = p.get_int("vbits");
  q.group = p.get_int("group");
  q.residual = p.get_int("residual");
  return q;
}

using ResolvedPart = std::pair<const cache::PolicyInfo*, cache::ResolvedParams>;

namespace compose_detail {

template <class Evict, class Prune, class Quant>
Status build(const typename ComposedKvCache<Evict, Prune, Quant>::Config& c, const std::string& spec,
             const cache::CacheShape& shape, const Executor& executor, std::unique_ptr<cache::KvCache>* out,
             std::string* error) {
  std::unique_ptr<ComposedKvCache<Evict, Prune, Quant>> cache;
  const Status st = ComposedKvCache<Evict, Prune, Quant>::create(shape, c, spec, executor, &cache);
  if (st != Status::kSuccess) {
    *error = "'" + spec + "': " + status_message(st) +
             " (eviction budget >= protected tokens and <= capacity; kivi bits 2/4/8, group 32/64/128, residual a "
             "multiple of group, head_dim a multiple of 8)";
    return st;
  }
  *out = std::move(cache);
  return Status::kSuccess;
}

template <class Evict, class Prune>
Status with_quant(const typename Evict::Params& ep, evict::GroupReduce reduce, const prune::ThinKParams* tp,
                  const quant::KvQuantConfig* qp, const std::string& spec, const cache::CacheShape& shape,
                  const Executor& executor, std::unique_ptr<cache::KvCache>* out, std::string* error) {
  auto fill = [&](auto& c) {
    c.evict = ep;
    c.reduce = reduce;
    if constexpr (std::is_same<Prune, prune::ThinK>::value) c.prune = *tp;
    if (qp) c.quant = *qp;
  };
  if (qp != nullptr) {
    typename ComposedKvCache<Evict, Prune, quant::KiviQuant>::Config c;
    fill(c);
    return build<Evict, Prune, quant::KiviQuant>(c, spec, shape, executor, out, error);
  }
  if constexpr (!evict::IsEvictionPolicy<Evict>::value && std::is_same<Prune, prune::NoPrune>::value) {
    *error = "'" + spec + "': nothing to compose";
    return Status::kErrorInvalidArgument;
  } else {
    typename ComposedKvCache<Evict, Prune, quant::NoQuant>::Config c;
    fill(c);
    return build<Evict, Prune, quant::NoQuant>(c, spec, shape, executor, out, error);
  }
}

template <class Evict>
Status with_prune(const typename Evict::Params& ep, evict::GroupReduce reduce, const prune::ThinKParams* tp,
                  const quant::KvQuantConfig* qp, const std::string& spec, const cache::CacheShape& shape,
                  const Executor& executor, std::unique_ptr<cache::KvCache>* out, std::string* error) {
  if (tp != nullptr) return with_quant<Evict, prune::ThinK>(ep, reduce, tp, qp, spec, shape, executor, out, error);
  return with_quant<Evict, prune::NoPrune>(ep, reduce, tp, qp, spec, shape, executor, out, error);
}

}  // namespace compose_detail

// Builds the composed cache of resolved parts (names already known to the registry). A single
// "think" part is ThinK alone.
template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_composed_kv_cache(const std::vector<ResolvedPart>& parts, const cache::CacheShape& shape,
                                     const Executor& executor, std::unique_ptr<cache::KvCache>* out,
                                     std::string* error) {
  const cache::PolicyInfo* ev = nullptr;
  const cache::ResolvedParams* evp = nullptr;
  const prune::ThinKParams* tp = nullptr;
  const quant::KvQuantConfig* qp = nullptr;
  prune::ThinKParams think;
  quant::KvQuantConfig kivi;
  std::string spec;
  int last_rank = -1;
  for (const auto& part : parts) {
    const std::string name = part.first->name;
    int rank = -1;
    if (is_evict_policy(name)) rank = 0;
    if (name == "think") rank = 1;
    if (name == "kivi") rank = 2;
    if (rank < 0) {
      *error = "'" + name + "' does not compose with '+' (composable: an eviction policy, then think, then kivi)";
      return Status::kErrorInvalidArgument;
    }
    if (rank == last_rank) {
      *error = std::string("two ") + (rank == 0 ? "eviction policies" : rank == 1 ? "channel pruners" : "quantisers") +
               " in one composition ('" + name + "'): at most one of each";
      return Status::kErrorInvalidArgument;
    }
    if (rank < last_rank) {
      *error = "'" + name + "' is out of order: compositions are written eviction+think+kivi (tokens are selected, "
               "then channels pruned, then the pruned segment quantised)";
      return Status::kErrorInvalidArgument;
    }
    last_rank = rank;
    if (rank == 0) {
      ev = part.first;
      evp = &part.second;
    } else if (rank == 1) {
      think = think_params(part.second);
      tp = &think;
    } else {
      kivi = kivi_params(part.second, shape.head_dim);
      qp = &kivi;
    }
    spec += (spec.empty() ? "" : "+") + cache::canonical_spec(*part.first, part.second);
  }
  if (tp != nullptr && tp->vprune > 0.f && qp != nullptr) {
    *error = "'" + spec + "': think vprune (value-channel pruning) does not compose with kivi in this build (KIVI's "
             "per-token value groups span every channel)";
    return Status::kErrorNotSupported;
  }
  if (ev == nullptr) {
    return compose_detail::with_prune<evict::NoEvict>(evict::NoEvict::Params{}, evict::GroupReduce::kMean, tp, qp, spec,
                                                       shape, executor, out, error);
  }
  if (evp->is_set("once")) {
    *error = "'" + spec + "': once=1 (prefill-only compression) is not available in compositions in this build";
    return Status::kErrorNotSupported;
  }
  return visit_evict_config(*ev, *evp, error, [&](auto tag, const auto& c) -> Status {
    using Policy = typename decltype(tag)::type;
    if constexpr (cache::EvictTraits<Policy>::kWindow) {
      *error = "'" + spec + "': window eviction scorers (snapkv, pyramidkv) do not compose with think/kivi in this "
               "build; use h2o, scissorhands, streaming or knorm";
      return Status::kErrorNotSupported;
    } else if constexpr (Policy::kState == evict::StateKind::kCustom || Policy::kSharedAcrossLayers) {
      *error = "'" + spec + "': lazy, sirllm and windowkv keep their own per-token state or share selections across "
               "layers and do not compose with think/kivi in this build; use h2o, scissorhands, streaming or knorm";
      return Status::kErrorNotSupported;
    } else {
      return compose_detail::with_prune<Policy>(c.policy, c.reduce, tp, qp, spec, shape, executor, out, error);
    }
  });
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
