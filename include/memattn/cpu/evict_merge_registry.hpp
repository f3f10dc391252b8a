// --kv registry entries of the merging eviction policies (evict/merge_policies.hpp):
//   d2o:budget=N,recent=R,sink=S,alpha=A,beta=B,first=F,last=L
//   kvmerger:budget=N,recent=R,theta=T,set=M
// cpu/kv_cache_factory.hpp lists them and dispatches here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/evict/merge_policies.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline const std::vector<cache::PolicyInfo>& merge_policy_infos() {
  static const std::vector<cache::PolicyInfo> infos = {
      {"d2o", "D2O: H2O scores, layer budgets from attention density (sum = layers x budget), evicted tokens merged "
              "into their most similar kept token above an EMA cosine threshold",
       {{"budget", 256, 1, 10000000, true, "average tokens kept per (layer, KV head), sinks and recent included"},
        {"recent", -1, -1, 10000000, true, "newest tokens protected; -1: budget/2 (hh:recent 1:1)"},
        {"sink", 4, 0, 1000000, true, "first tokens always kept"},
        {"alpha", 0.5, 0, 1, false, "EMA weight of the previous similarity threshold"},
        {"beta", 0.5, 0, 1, false, "EMA weight of this step's mean similarity"},
        {"first", 2, 0, 1000, true, "first layers given the largest budget weight"},
        {"last", 1, 0, 1000, true, "last layers given the largest budget weight"}}},
      {"kvmerger", "KVMerger: H2O scores over merge sets of consecutive keys with cosine >= theta; evicted members "
                   "merged into the set's pivot (highest score) with Gaussian-kernel weights",
       {{"budget", 256, 1, 10000000, true, "tokens kept per (layer, KV head), recent included"},
        {"recent", -1, -1, 10000000, true, "newest tokens protected; -1: budget/2"},
        {"theta", 0.95, -1, 1, false, "cosine similarity of consecutive keys to join a merge set"},
        {"set", 8, 1, 4096, true, "tokens per merge set at most"}}},
  };
  return infos;
}

inline const cache::PolicyInfo& merge_policy_info(const char* name) {
  for (const auto& p : merge_policy_infos())
    if (std::string(name) == p.name) return p;
  return merge_policy_infos().front();
}

inline bool is_merge_policy(const std::string& name) {
  for (const auto& p : merge_policy_infos())
    if (name == p.name) return true;
  return false;
}

template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_merge_kv_cache(const cache::PolicyInfo& info, const cache::ResolvedParams& p,
                                  const cache::CacheShape& shape, const Executor& executor,
                                  std::unique_ptr<cache::KvCache>* out, std::string* error) {
  const std::string name = info.name;
  if (name == "d2o") {
    EvictKvCache<evict::D2O>::Config c;
    c.policy = evict::d2o_params(p.get_int("budget"), p.get_int("recent"), p.get_int("sink"));
    c.policy.merger.alpha = static_cast<float>(p.get("alpha"));
    c.policy.merger.beta = static_cast<float>(p.get("beta"));
    c.policy.allocator.protect_first = p.get_int("first");
    c.policy.allocator.protect_last = p.get_int("last");
    return evict_registry::build<evict::D2O>(c, info, p, shape, executor, out, error);
  }
  if (name == "kvmerger") {
    EvictKvCache<evict::KVMerger>::Config c;
    c.policy = evict::kvmerger_params(p.get_int("budget"), p.get_int("recent"));
    c.policy.merger.theta = static_cast<float>(p.get("theta"));
    c.policy.merger.max_set = p.get_int("set");
    return evict_registry::build<evict::KVMerger>(c, info, p, shape, executor, out, error);
  }
  *error = "'" + name + "' is not a merging policy";
  return Status::kErrorInvalidArgument;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
