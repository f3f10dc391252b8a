// fp64 oracle for composed KV caches (cpu::ComposedKvCache): chunks of random tokens, the
// cache's own dequantised / pruned contents as fp64 keys and values, causal attention per query
// row. Shared by test_composed_kv_cache (portable build), test_kivi_block_decode (AVX2 build, the
// fused KIVI region) and test_dense_block_decode (AVX2 build, the fp16 regions read directly).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/test_data.hpp"
#include "memattn/cache/kv_cache.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/prune/think.hpp"

namespace memattn_test {
namespace composed {

using namespace memattn;

struct Chunk {
  std::vector<float> q, k, v, out;
};

inline Chunk random_chunk(const cache::CacheShape& s, std::int64_t n, std::uint32_t seed) {
  Chunk c;
  c.q = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.q_heads * s.head_dim), seed, 1.5f);
  c.k = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.kv_heads * s.head_dim), seed + 1, 1.f);
  // heavy-tailed key channels, so the channel choice matters
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(c.k.size()); ++i)
    if (i % s.head_dim < 3) c.k[static_cast<std::size_t>(i)] *= 4.f;
  c.v = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.kv_heads * s.head_dim), seed + 2);
  c.out.assign(c.q.size(), 0.f);
  return c;
}

inline Status attend(cache::KvCache& c, int seq, int layer, const cache::CacheShape& s, Chunk& ch, std::int64_t n) {
  const std::int64_t Hq = s.q_heads, Hkv = s.kv_heads, D = s.head_dim;
  return c.attend(seq, layer, make_view<3>(static_cast<const float*>(ch.q.data()), {n, Hq, D}),
                  make_view<3>(static_cast<const float*>(ch.k.data()), {n, Hkv, D}),
                  make_view<3>(static_cast<const float*>(ch.v.data()), {n, Hkv, D}), make_view<3>(ch.out.data(), {n, Hq, D}));
}

inline double f16(float x) { return to_float(from_float<Half>(x)); }

// fp64 attention of G query rows over keys (any width, dotted with q[chan]) and values.
struct Key {
  std::vector<double> k;  // width = chan.size()
  std::vector<int> chan;
  std::vector<double> v;
};
inline std::vector<double> attend_ref(const float* q, std::int64_t D, const std::vector<Key>& keys) {
  const double tau = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> logit(keys.size()), out(static_cast<std::size_t>(D), 0.0);
  double mx = -INFINITY;
  for (std::size_t j = 0; j < keys.size(); ++j) {
    double s = 0;
    for (std::size_t c = 0; c < keys[j].chan.size(); ++c) s += q[keys[j].chan[c]] * keys[j].k[c];
    logit[j] = tau * s;
    mx = std::max(mx, logit[j]);
  }
  double l = 0;
  for (std::size_t j = 0; j < keys.size(); ++j) {
    const double p = std::exp(logit[j] - mx);
    l += p;
    for (std::int64_t c = 0; c < D; ++c) out[static_cast<std::size_t>(c)] += p * keys[j].v[static_cast<std::size_t>(c)];
  }
  for (double& o : out) o /= l;
  return out;
}

inline std::vector<int> iota(std::int64_t D) {
  std::vector<int> v(static_cast<std::size_t>(D));
  for (std::int64_t i = 0; i < D; ++i) v[static_cast<std::size_t>(i)] = static_cast<int>(i);
  return v;
}

// The first `count` tokens of KV head h of layer 0 as full-width fp64 rows (K, V: fp16-rounded
// [pos][h * D + c]), the old tokens' pruned key channels (and value channels, with vprune) zeroed.
template <class Cache>
std::vector<Key> zeroed_pruned(const Cache& c, int h, std::int64_t count, const std::vector<std::vector<double>>& K,
                               const std::vector<std::vector<double>>& V, std::int64_t D) {
  const std::int64_t old = c.old_tokens(0, 0, h);
  std::vector<bool> kk(static_cast<std::size_t>(D), false), vk(static_cast<std::size_t>(D), false);
  for (int x : c.channels(0, 0, h)) kk[static_cast<std::size_t>(x)] = true;
  const std::vector<int> vkeep = c.value_channels(0, 0, h);
  for (int x : vkeep) vk[static_cast<std::size_t>(x)] = true;
  std::vector<Key> keys;
  for (std::int64_t j = 0; j < count; ++j) {
    Key k;
    for (std::int64_t x = 0; x < D; ++x) {
      const std::size_t at = static_cast<std::size_t>(h * D + x);
      const bool pruned_k = j < old && !kk[static_cast<std::size_t>(x)];
      const bool pruned_v = j < old && !vkeep.empty() && !vk[static_cast<std::size_t>(x)];
      k.k.push_back(pruned_k ? 0.0 : K[static_cast<std::size_t>(j)][at]);
      k.v.push_back(pruned_v ? 0.0 : V[static_cast<std::size_t>(j)][at]);
    }
    k.chan = iota(D);
    keys.push_back(k);
  }
  return keys;
}

// Worst relative error (|got - want| / (floor + |want|)) of the chunk's outputs of KV head h
// (query heads h*G .. h*G+G-1 of 4, tokens N0 .. N0+n-1) against fp64 attention over `keys`, causal.
inline double chunk_error(const std::vector<float>& q, const std::vector<float>& out, const std::vector<Key>& keys,
                   std::int64_t N0, std::int64_t n, int h, std::int64_t G, std::int64_t D, double floor) {
  double worst = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::vector<Key> visible(keys.begin(), keys.begin() + N0 + t + 1);
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int64_t hq = h * G + g;
      const auto want = attend_ref(q.data() + (t * 4 + hq) * D, D, visible);
      for (std::int64_t x = 0; x < D; ++x)
        worst = memattn_test::worse(worst, std::abs(out[static_cast<std::size_t>((t * 4 + hq) * D + x)] - want[static_cast<std::size_t>(x)]) /
                                    (floor + std::abs(want[static_cast<std::size_t>(x)])));
    }
  }
  return worst;
}

template <class Cache>
std::vector<Key> snapshot(const Cache& c, int seq, int layer, int h, std::int64_t D) {
  std::vector<Key> keys;
  const std::vector<int> ch = c.channels(seq, layer, h);
  std::vector<float> buf(static_cast<std::size_t>(D));
  for (std::int64_t j = 0; j < c.segment_size(seq, layer, h); ++j) {
    Key k;
    const std::int64_t w = c.key(seq, layer, h, j, buf.data());
    k.k.assign(buf.begin(), buf.begin() + w);
    k.chan = w == D ? iota(D) : ch;
    c.value(seq, layer, h, j, buf.data());
    k.v.assign(buf.begin(), buf.end());
    keys.push_back(k);
  }
  return keys;
}

// Runs chunks through a composed cache; after every attend compares each query row with fp64
// attention over the cache's own (dequantised/pruned) contents before the chunk + the chunk.
template <class Cache>
void check_against_contents(Cache& c, const cache::CacheShape& s, const std::vector<int>& chunks, std::uint32_t seed,
                            double tol) {
  const std::int64_t D = s.head_dim, G = s.q_heads / s.kv_heads;
  std::uint32_t sd = seed;
  for (int n : chunks) {
    std::vector<Chunk> per_layer;
    for (int layer = 0; layer < s.layers; ++layer) {
      Chunk ch = random_chunk(s, n, sd += 10);
      std::vector<std::vector<Key>> before;
      for (int h = 0; h < s.kv_heads; ++h) before.push_back(snapshot(c, 0, layer, h, D));
      REQUIRE(attend(c, 0, layer, s, ch, n) == Status::kSuccess);
      double worst = 0;
      for (int h = 0; h < s.kv_heads; ++h) {
        std::vector<Key> keys = before[static_cast<std::size_t>(h)];
        for (int t = 0; t < n; ++t) {
          Key k;
          for (std::int64_t x = 0; x < D; ++x) {
            k.k.push_back(f16(ch.k[static_cast<std::size_t>((t * s.kv_heads + h) * D + x)]));
            k.v.push_back(f16(ch.v[static_cast<std::size_t>((t * s.kv_heads + h) * D + x)]));
          }
          k.chan = iota(D);
          keys.push_back(k);
          for (std::int64_t g = 0; g < G; ++g) {
            const std::int64_t hq = h * G + g;
            const auto want = attend_ref(ch.q.data() + (t * s.q_heads + hq) * D, D, keys);
            double scale = 1e-6, e = 0;  // max-norm relative error of the row
            for (std::int64_t x = 0; x < D; ++x) {
              scale = std::max(scale, std::abs(want[static_cast<std::size_t>(x)]));
              e = memattn_test::worse(e, std::abs(ch.out[static_cast<std::size_t>((t * s.q_heads + hq) * D + x)] - want[static_cast<std::size_t>(x)]));
            }
            worst = memattn_test::worse(worst, e / scale);
          }
        }
      }
      CHECK(worst <= tol);
    }
    REQUIRE(c.end_chunk(0, {}) == Status::kSuccess);
  }
}

// ThinK at lambda 0.4 over the last 8 queries, 16 recent tokens kept full width.
inline prune::ThinK::Params think_params() {
  prune::ThinK::Params p;
  p.prune = 0.4f;
  p.window = 8;
  p.recent = 16;
  return p;
}

// A composed cache (2 layers, 2 KV heads, q_heads / 2 query rows per KV head and token) through
// prefill chunks and single decode tokens, each attend checked by check_against_contents. The
// vector tests run it on their builds' decode paths (the single tokens: kivi_block / dense_block).
template <class Cache>
void check_composed(typename Cache::Config cfg, int D, int kb, int vb, const char* name, std::uint32_t seed,
                    int q_heads = 4) {
  cache::CacheShape s;
  s.layers = 2;
  s.q_heads = q_heads;
  s.kv_heads = 2;
  s.head_dim = D;
  s.max_tokens = 400;
  s.max_sequences = 2;
  cfg.quant.bits_k = kb;
  cfg.quant.bits_v = vb;
  std::unique_ptr<Cache> c;
  REQUIRE(Cache::create(s, cfg, name, Executor{}, &c) == Status::kSuccess);
  check_against_contents(*c, s, {70, 1, 1, 40, 1, 1, 1, 33, 1, 1, 20, 1, 1}, seed, 2e-5);
  if (Cache::kQuant) CHECK(c->quantized_tokens(0, 0, 0) > 0);
  if (Cache::kPrunes) CHECK(c->channels(0, 0, 0).size() == static_cast<std::size_t>(D - (2 * D) / 5));  // lambda 0.4
}

}  // namespace composed
}  // namespace memattn_test
