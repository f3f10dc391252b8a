// The tests' one instantiation of every KV policy (see kv_factory.hpp), or, with
// MEMATTN_TEST_KV_FORWARD (tests/CMakeLists.txt says when), memattn-llama's.
#include "common/kv_factory.hpp"

#if defined(MEMATTN_TEST_KV_FORWARD)
#include "llama/kv_factory.hpp"
#else
#include "memattn/cpu/kv_cache_factory.hpp"
#endif

namespace memattn_test {

memattn::Status make_kv_cache(const std::string& spec, const memattn::cache::CacheShape& shape,
                              const memattn::Executor& executor, std::unique_ptr<memattn::cache::KvCache>* out,
                              std::string* error) {
#if defined(MEMATTN_TEST_KV_FORWARD)
  return memattn_llama::make_kv_cache(spec, shape, executor, out, error);
#else
  return memattn::cpu::make_kv_cache(spec, shape, executor, out, error);
#endif
}

}  // namespace memattn_test
