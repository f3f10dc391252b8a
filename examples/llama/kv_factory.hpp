// The engine's door to the KV policies: memattn::cpu::make_kv_cache instantiates every policy's
// cache template, so it is compiled once, in kv_factory.cpp, instead of in every translation unit
// that includes the engine (main, its tests). The engine only ever sees cache::KvCache.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <memattn/cache/kv_cache.hpp>
#include <memattn/cache/kv_spec.hpp>
#include <memattn/core/executor.hpp>
#include <memattn/core/status.hpp>

namespace memattn_llama {

// memattn::cpu::make_kv_cache: the cache a --kv spec describes; *error says what is wrong.
memattn::Status make_kv_cache(const std::string& spec, const memattn::cache::CacheShape& shape,
                              const memattn::Executor& executor, std::unique_ptr<memattn::cache::KvCache>* out,
                              std::string* error);

// memattn::cpu::kv_policies: every policy with its parameters (memattn-llama policies).
const std::vector<memattn::cache::PolicyInfo>& kv_policies();

}  // namespace memattn_llama
