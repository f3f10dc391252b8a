// Small pieces shared by the CPU KV caches that own their storage (EpiCache, SentenceKV):
//   check_attend_args(...)   the engine-facing attend() argument checks of cache/kv_cache.hpp
//   resize_rows(...)         exact reallocation of a row array keeping a prefix (so the bytes a
//                            cache reports are the bytes it holds)
//   build_kv_cache<Cache>()  --kv registry tail: validate the config, say why it is rejected,
//                            create the cache with its canonical spec.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

inline Status check_attend_args(const cache::CacheShape& s, int seq, int layer, const TensorView<const float, 3>& q,
                                const TensorView<const float, 3>& k, const TensorView<const float, 3>& v,
                                const TensorView<float, 3>& out) {
  if (seq < 0 || seq >= s.max_sequences || layer < 0 || layer >= s.layers) return Status::kErrorInvalidArgument;
  const std::int64_t n = q.shape[0];
  MEMATTN_RETURN_IF_ERROR(check_tensor(q, {-1, s.q_heads, s.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_tensor(k, {n, s.kv_heads, s.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_tensor(v, {n, s.kv_heads, s.head_dim}));
  MEMATTN_RETURN_IF_ERROR(check_tensor(out, {n, s.q_heads, s.head_dim}));
  return n > 0 ? Status::kSuccess : Status::kErrorInvalidShape;
}

template <class T>
void resize_rows(std::vector<T>* v, std::size_t keep, std::size_t size) {
  std::vector<T> r(size);
  std::copy(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(std::min(keep, std::min(size, v->size()))), r.begin());
  v->swap(r);
}

// Cache::create(shape, config, spec, executor, &unique_ptr<Cache>); config.validate(shape).
template <class Cache, class Config>
Status build_kv_cache(const Config& c, const cache::PolicyInfo& info, const cache::ResolvedParams& p,
                      const cache::CacheShape& shape, const Executor& executor, const char* invalid_why,
                      std::unique_ptr<cache::KvCache>* out, std::string* error) {
  const Status st = c.validate(shape);
  if (st != Status::kSuccess) {
    *error = std::string(info.name) + ": " +
             (st == Status::kErrorCapacityExceeded
                  ? "budget " + std::to_string(c.budget) + " is larger than the cache capacity " + std::to_string(shape.max_tokens)
                  : std::string(invalid_why));
    return st;
  }
  std::unique_ptr<Cache> cache;
  MEMATTN_RETURN_IF_ERROR(Cache::create(shape, c, cache::canonical_spec(info, p), executor, &cache));
  *out = std::move(cache);
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
