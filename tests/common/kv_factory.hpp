// memattn::cpu::make_kv_cache, compiled once for all the tests (kv_factory.cpp): the factory
// instantiates every policy's cache, which costs each translation unit that includes it over a
// minute under the sanitizers. Tests that need a concrete cache type include its own header.
#pragma once

#include <memory>
#include <string>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/core/status.hpp"

namespace memattn_test {

memattn::Status make_kv_cache(const std::string& spec, const memattn::cache::CacheShape& shape,
                              const memattn::Executor& executor, std::unique_ptr<memattn::cache::KvCache>* out,
                              std::string* error);

}  // namespace memattn_test
