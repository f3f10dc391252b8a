// The `compresskv` --kv entry (spec eviction.md §3.11): an EvictKvCache over evict::CompressKV whose
// retrieval heads and layer budgets come from an offline table file (evict/compresskv.hpp format,
// written by `memattn-llama retrieval-heads`).
//
//   compresskv:budget=N,table=PATH[,window=8,kernel=5,pool=0,pad=1,heads=4,min=32,maxf=3]
//
// `table` is required: without it there are neither retrieval heads nor layer errors, and the
// cache is refused with a message (the reference also refuses to run without its head file).
// A table whose shape differs from the model's is refused (§4.5).
#pragma once

#include <memory>
#include <string>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/evict/compresskv.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline const cache::PolicyInfo& compresskv_policy_info() {
  static const cache::PolicyInfo info = {
      "compresskv",
      "CompressKV: per layer, the token set chosen by its semantic-retrieval heads' window attention (shared by "
      "the layer's KV heads); layer budgets proportional to the measured attention-output error (average `budget`)",
      {{"budget", 512, 1, 10000000, true, "average tokens kept per (layer, KV head), window included"},
       {"table", 0, 0, 0, false, "head/error table file (memattn-llama retrieval-heads); required", true},
       {"window", 8, 1, 4096, true, "observation window w"},
       {"kernel", 5, 1, 63, true, "pooling kernel (odd)"},
       {"pool", 0, 0, 1, true, "0 avg, 1 max"},
       {"pad", 1, 0, 1, true, "avg pooling counts the zero padding (reference parity)"},
       {"heads", 4, 1, 4096, true, "retrieval heads per layer (first_k)"},
       {"min", 32, 1, 10000000, true, "smallest layer budget (clamped to [window, budget])"},
       {"maxf", 3, 1, 1000, true, "largest layer budget = maxf x budget"}}};
  return info;
}

inline Status read_compresskv_table_file(const std::string& path, evict::CompressKvTable* out, std::string* error) {
  return read_table_file(path, "CompressKV table", evict::parse_compresskv_table, out, error);
}

template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_compresskv_kv_cache(const cache::ResolvedParams& p, const cache::CacheShape& shape,
                                       const Executor& executor, std::unique_ptr<cache::KvCache>* out,
                                       std::string* error) {
  const std::string path = p.get_text("table");
  if (path.empty()) {
    *error = "compresskv: table=PATH is required (a head/error table made by `memattn-llama retrieval-heads`)";
    return Status::kErrorInvalidArgument;
  }
  if (p.get_int("kernel") % 2 == 0) {
    *error = "compresskv: kernel must be odd";
    return Status::kErrorInvalidArgument;
  }
  evict::CompressKvTable table;
  MEMATTN_RETURN_IF_ERROR(read_compresskv_table_file(path, &table, error));
  std::string why;
  const Status st = evict::check_compresskv_table(table, shape.layers, shape.q_heads, shape.kv_heads, shape.head_dim, &why);
  if (st != Status::kSuccess) {
    *error = "compresskv: " + why;
    return st;
  }
  EvictKvCache<evict::CompressKV>::Config c;
  MEMATTN_RETURN_IF_ERROR(evict::compresskv_params(table, p.get_int("budget"), p.get_int("window"), p.get_int("heads"),
                                                   p.get_int("min"), p.get_int("maxf"), &c.policy, error));
  c.policy.scorer.kernel = p.get_int("kernel");
  c.policy.scorer.pool = static_cast<evict::PoolKind>(p.get_int("pool"));
  c.policy.scorer.count_include_pad = p.get_int("pad") != 0;
  return evict_registry::build<evict::CompressKV>(c, compresskv_policy_info(), p, shape, executor, out, error);
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
