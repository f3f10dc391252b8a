// Compile-time composition of a KV cache from three components (issue 7, spec eviction.md §2.9,
// quantization.md): token eviction, key-channel pruning, low-bit storage, each possibly the
// identity:
//
//   Compose<Evict, Prune, Quant>
//     Evict: evict::NoEvict or an evict::EvictionPolicy<...> (evict/policy.hpp)
//     Prune: prune::NoPrune or prune::ThinK (prune/think.hpp)
//     Quant: quant::NoQuant or quant::KiviQuant (KIVI group quantiser, quant/kivi.hpp; its
//            KvQuantConfig is the runtime parameter set, head_dim = d_keep for the keys)
//
// Order (§2.9): token selection and compaction first, then channel scoring on the retained keys,
// then the pruned segment (quantised with d_keep channels when Quant is KIVI). Invalid
// compositions fail here with a static_assert; the --kv parser rejects them with a message.
#pragma once

#include <type_traits>

#include "memattn/core/config.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/prune/think.hpp"
#include "memattn/quant/kivi.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {
struct NoEvict {
  static constexpr bool kEvicts = false;
  static constexpr StateKind kState = StateKind::kNone;
  struct Params {};
};
template <class P>
struct IsEvictionPolicy : std::false_type {};
template <class S, class A, class Sel, class M, class T>
struct IsEvictionPolicy<EvictionPolicy<S, A, Sel, M, T>> : std::true_type {};
}  // namespace evict

namespace quant {
struct NoQuant {
  static constexpr bool kQuantizes = false;
  struct Params {};
};
// KIVI storage of the old (pruned) segment: K per channel over blocks of `group` tokens, V per token.
struct KiviQuant {
  static constexpr bool kQuantizes = true;
  using Params = KvQuantConfig;
};
}  // namespace quant

namespace cache {

template <class Evict, class Prune, class Quant>
struct Compose {
  static constexpr bool kEvicts = evict::IsEvictionPolicy<Evict>::value;
  static constexpr bool kPrunes = std::is_same<Prune, prune::ThinK>::value;
  static constexpr bool kQuantizes = std::is_same<Quant, quant::KiviQuant>::value;

  static_assert(kEvicts || std::is_same<Evict, evict::NoEvict>::value,
                "Evict must be evict::NoEvict or an evict::EvictionPolicy");
  static_assert(kPrunes || std::is_same<Prune, prune::NoPrune>::value, "Prune must be prune::NoPrune or prune::ThinK");
  static_assert(kQuantizes || std::is_same<Quant, quant::NoQuant>::value,
                "Quant must be quant::NoQuant or quant::KiviQuant");
  static_assert(kEvicts || kPrunes || kQuantizes, "a composition of three identities is the dense cache (use 'full')");
};

template <class Evict>
struct EvictTraits {
  static constexpr bool kWindow = false;
  static constexpr bool kDecodeProbs = false;
};
template <class S, class A, class Sel, class M, class T>
struct EvictTraits<evict::EvictionPolicy<S, A, Sel, M, T>> {
  static constexpr bool kWindow = S::kNeedsWindowQueries;
  static constexpr bool kDecodeProbs = S::kNeedsDecodeProbs;
};

}  // namespace cache
MEMATTN_NAMESPACE_END
