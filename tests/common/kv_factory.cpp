// The tests' one instantiation of every KV policy (see kv_factory.hpp).
#include "common/kv_factory.hpp"

#include "memattn/cpu/kv_cache_factory.hpp"

namespace memattn_test {

memattn::Status make_kv_cache(const std::string& spec, const memattn::cache::CacheShape& shape,
                              const memattn::Executor& executor, std::unique_ptr<memattn::cache::KvCache>* out,
                              std::string* error) {
  return memattn::cpu::make_kv_cache(spec, shape, executor, out, error);
}

}  // namespace memattn_test
