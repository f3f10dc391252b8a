// Small pieces shared by the CPU KV caches that own their storage:
//   check_attend_args(...)   the engine-facing attend() argument checks of cache/kv_cache.hpp
//   check_chunk_step(...)    the chunk protocol (each layer once per chunk, same n, capacity)
//   ChunkLedger              a cache's counters of that protocol (held and open-chunk tokens)
//   all_finite / storable<T> K/V/q checks done before a cache writes anything
//   resize_rows(...)         exact reallocation of a row array keeping a prefix (so the bytes a
//                            cache reports are the bytes it holds)
//   read_table_file(...)     an offline table named by a spec's PATH parameter, parsed, with the
//                            file named in every message
//   build_kv_cache<Cache>()  --kv registry tail: validate the config, say why it is rejected,
//                            create the cache with its canonical spec.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/dtype.hpp"
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

// The chunk protocol of cache/kv_cache.hpp: a layer takes a chunk once (its pending count is 0),
// every layer of a chunk takes the same n tokens, and the sequence stays within capacity.
inline Status check_chunk_step(std::int64_t layer_pending, std::int64_t seq_pending, std::int64_t len,
                               std::int64_t n, std::int64_t max_tokens) {
  if (layer_pending != 0) return Status::kErrorInvalidArgument;  // this layer already took the chunk
  if (seq_pending != 0 && seq_pending != n) return Status::kErrorInvalidShape;
  return len + n > max_tokens ? Status::kErrorCapacityExceeded : Status::kSuccess;
}

// The counters of the chunk protocol for a cache whose layers append per (sequence, layer): the
// tokens held per sequence (closed chunks) and the open chunk's tokens per sequence and per
// (sequence, layer). Callers check seq / layer ranges first.
class ChunkLedger {
 public:
  ChunkLedger() = default;
  ChunkLedger(int sequences, int layers)
      : layers_(layers),
        len_(static_cast<std::size_t>(sequences), 0),
        pending_(static_cast<std::size_t>(sequences), 0),
        layer_pending_(static_cast<std::size_t>(sequences) * static_cast<std::size_t>(layers), 0) {}

  std::int64_t len(int seq) const { return len_[static_cast<std::size_t>(seq)]; }
  std::int64_t pending(int seq) const { return pending_[static_cast<std::size_t>(seq)]; }
  // Whether layer may take n more tokens of seq now (check_chunk_step).
  Status check_step(int seq, int layer, std::int64_t n, std::int64_t max_tokens) const {
    return check_chunk_step(layer_pending_[at(seq, layer)], pending(seq), len(seq), n, max_tokens);
  }
  // layer took n tokens of seq's open chunk (after check_step).
  void record(int seq, int layer, std::int64_t n) {
    layer_pending_[at(seq, layer)] = n;
    pending_[static_cast<std::size_t>(seq)] = n;
  }
  // Every layer took the open chunk (true when none is open).
  bool complete(int seq) const {
    for (int l = 0; l < layers_; ++l)
      if (layer_pending_[at(seq, l)] != pending(seq)) return false;
    return true;
  }
  // Closes the open chunk: its tokens are held from now on.
  void close(int seq) {
    len_[static_cast<std::size_t>(seq)] += pending(seq);
    clear_open(seq);
  }
  void reset(int seq) {
    len_[static_cast<std::size_t>(seq)] = 0;
    clear_open(seq);
  }

 private:
  std::size_t at(int seq, int layer) const { return static_cast<std::size_t>(seq) * layers_ + layer; }
  void clear_open(int seq) {
    pending_[static_cast<std::size_t>(seq)] = 0;
    std::fill_n(layer_pending_.begin() + static_cast<std::ptrdiff_t>(at(seq, 0)), layers_, std::int64_t(0));
  }

  int layers_ = 0;
  std::vector<std::int64_t> len_;            // held tokens per sequence
  std::vector<std::int64_t> pending_;        // tokens of the open chunk per sequence
  std::vector<std::int64_t> layer_pending_;  // [seq][layer]: tokens a layer appended in the open chunk
};

// Every element finite and, with fp16_range, representable in fp16 (|x| <= 65504).
inline bool all_finite(const TensorView<const float, 3>& t, bool fp16_range = false) {
  const float lim = fp16_range ? 65504.f : std::numeric_limits<float>::max();
  for (std::int64_t i = 0; i < t.shape[0]; ++i)
    for (std::int64_t j = 0; j < t.shape[1]; ++j) {
      const float* p = t.ptr(i, j);
      for (std::int64_t d = 0; d < t.shape[2]; ++d)
        if (!(std::fabs(p[d]) <= lim)) return false;
    }
  return true;
}

// K/V rows a cache storing T can hold: finite, and within fp16's range when T is Half. Caches
// check a chunk before they write any of it, so bad input leaves them untouched.
template <class T>
bool storable(const TensorView<const float, 3>& t) {
  return all_finite(t, std::is_same<T, Half>::value);
}

template <class T>
void resize_rows(std::vector<T>* v, std::size_t keep, std::size_t size) {
  std::vector<T> r(size);
  std::copy(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(std::min(keep, std::min(size, v->size()))), r.begin());
  v->swap(r);
}

// Reads an offline table file named by a spec's text parameter and parses it with
// parse(text, out, why); messages name the file ("cannot open <what> '<path>'", "'<path>': why").
template <class Table, class Parse>
Status read_table_file(const std::string& path, const char* what, Parse parse, Table* out, std::string* error) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (error) *error = std::string("cannot open ") + what + " '" + path + "'";
    return Status::kErrorInvalidArgument;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  std::string why;
  const Status st = parse(ss.str(), out, &why);
  if (st != Status::kSuccess && error) *error = "'" + path + "': " + why;
  return st;
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
