// The one translation unit that instantiates every KV policy (see kv_factory.hpp).
#include "kv_factory.hpp"

#include <memattn/cpu/kv_cache_factory.hpp>

namespace memattn_llama {

memattn::Status make_kv_cache(const std::string& spec, const memattn::cache::CacheShape& shape,
                              const memattn::Executor& executor, std::unique_ptr<memattn::cache::KvCache>* out,
                              std::string* error) {
  return memattn::cpu::make_kv_cache(spec, shape, executor, out, error);
}

const std::vector<memattn::cache::PolicyInfo>& kv_policies() { return memattn::cpu::kv_policies(); }

}  // namespace memattn_llama
