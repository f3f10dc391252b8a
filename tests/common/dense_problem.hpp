// Owns the buffers of one dense decode problem and hands out DecodeArgs over them; used by the
// CPU and GPU tests alike. The cache can be stored head-major [B, Hkv, Lcap, D] or token-major
// [B, Lcap, Hkv, D] (seen through strides as [B, Hkv, Lcap, D]).
#pragma once

#include <cstdint>
#include <vector>

#include "common/test_data.hpp"
#include "memattn/attention/dense_args.hpp"

namespace memattn_test {

struct DecodeShape {
  std::int64_t batch = 1, q_tokens = 1, q_heads = 8, kv_heads = 2, head_dim = 64, capacity = 64;
  std::vector<std::int32_t> lens;  // empty: all sequences full
  std::int32_t window = 0;
  bool token_major_cache = false;
};

template <class T>
struct DecodeProblem {
  DecodeShape s;
  std::vector<T> q, k, v, o;
  std::vector<float> lse;

  explicit DecodeProblem(const DecodeShape& shape, std::uint32_t seed = 7) : s(shape) {
    q = random_vector<T>(static_cast<std::size_t>(s.batch * s.q_tokens * s.q_heads * s.head_dim), seed);
    k = random_vector<T>(static_cast<std::size_t>(s.batch * s.kv_heads * s.capacity * s.head_dim), seed + 1);
    v = random_vector<T>(static_cast<std::size_t>(s.batch * s.kv_heads * s.capacity * s.head_dim), seed + 2);
    o.assign(q.size(), memattn::from_float<T>(-777.f));
    lse.assign(static_cast<std::size_t>(s.batch * s.q_tokens * s.q_heads), -777.f);
  }

  memattn::TensorView<const T, 4> cache_view(const std::vector<T>& buf) const {
    using memattn::make_strided_view;
    const std::int64_t D = s.head_dim, L = s.capacity, H = s.kv_heads;
    if (s.token_major_cache) return make_strided_view<4>(buf.data(), {s.batch, H, L, D}, {L * H * D, D, H * D, 1});
    return make_strided_view<4>(buf.data(), {s.batch, H, L, D}, {H * L * D, L * D, D, 1});
  }

  memattn::attention::DecodeArgs<T> args() {
    memattn::attention::DecodeArgs<T> a;
    a.q = memattn::make_view<4>(static_cast<const T*>(q.data()), {s.batch, s.q_tokens, s.q_heads, s.head_dim});
    a.k_cache = cache_view(k);
    a.v_cache = cache_view(v);
    a.seq_lens = s.lens.empty() ? nullptr : s.lens.data();
    a.o = memattn::make_view<4>(o.data(), {s.batch, s.q_tokens, s.q_heads, s.head_dim});
    a.lse = memattn::make_view<3>(lse.data(), {s.batch, s.q_tokens, s.q_heads});
    a.window = s.window;
    return a;
  }
};

}  // namespace memattn_test
