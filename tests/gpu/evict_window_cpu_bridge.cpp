#include "evict_window_cpu_bridge.hpp"

#include <cmath>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/cpu/compresskv_scores.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/evict/windowkv.hpp"

using namespace memattn;

namespace {

template <class T>
std::vector<T> convert(const float* x, std::size_t n) {
  std::vector<T> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = from_float<T>(x[i]);
  return out;
}

template <class T>
bool colsum(const float* q, const std::int32_t* qpos, int w, int G, int D, float scale, const float* k,
            const std::int32_t* kpos, int N, int reduce, float* col) {
  const std::vector<T> kt = convert<T>(k, static_cast<std::size_t>(N) * D);
  std::vector<float> scratch(cpu::window_colsum_scratch_elems(G, w, D, N));
  std::vector<std::int64_t> vis(static_cast<std::size_t>(w) * G);
  return cpu::window_colsum(q, static_cast<std::int64_t>(G) * D, D, qpos, w, G, D, scale, kt.data(), D, kpos, N,
                            static_cast<evict::GroupReduce>(reduce), col, scratch.data(), vis.data()) == Status::kSuccess;
}

template <class T>
bool head_subset(const float* wq, const std::int32_t* wpos, int w, int Hq, int Hkv, int D, const float* keys,
                 const std::int32_t* kpos, int N, int n_cand, const std::int32_t* heads, int n_heads, int kernel,
                 int pool, bool pad, float* out) {
  const std::vector<T> kt = convert<T>(keys, static_cast<std::size_t>(Hkv) * N * D);
  std::vector<const T*> kp(static_cast<std::size_t>(Hkv));
  for (int h = 0; h < Hkv; ++h) kp[static_cast<std::size_t>(h)] = kt.data() + static_cast<std::size_t>(h) * N * D;
  std::vector<float> scratch(cpu::head_subset_scratch_elems(w, D, N));
  std::vector<std::int64_t> vis(cpu::head_subset_visible_elems(w));
  return cpu::head_subset_window_scores(wq, wpos, w, Hq, Hkv, D, kp.data(), kpos, N, n_cand, heads, n_heads, kernel,
                                        static_cast<evict::PoolKind>(pool), pad, out, scratch.data(),
                                        vis.data()) == Status::kSuccess;
}

}  // namespace

bool cpu_window_colsum(const float* q, const std::int32_t* qpos, int w, int G, int D, float scale, const float* k,
                       int key_dtype, const std::int32_t* kpos, int N, int reduce, float* col) {
  switch (key_dtype) {
    case 0: return colsum<float>(q, qpos, w, G, D, scale, k, kpos, N, reduce, col);
    case 1: return colsum<Half>(q, qpos, w, G, D, scale, k, kpos, N, reduce, col);
    case 2: return colsum<BFloat16>(q, qpos, w, G, D, scale, k, kpos, N, reduce, col);
    default: return false;
  }
}

bool cpu_pool_scores(const float* v, int n, int kernel, int pool, bool count_include_pad, float* out) {
  return cpu::pool_scores(v, n, kernel, static_cast<evict::PoolKind>(pool), count_include_pad, out) == Status::kSuccess;
}

void cpu_windowkv_scores(const float* col, int heads, int N, int n_rev, int block, int mode, float* out) {
  evict::WindowBlock::Params p;
  p.block = block;
  p.mode = static_cast<evict::WindowMode>(mode);
  std::vector<float> tok, wscore;
  std::vector<std::int64_t> order;
  evict::WindowBlock::unit_scores(p, col, heads, N, n_rev, out, tok, wscore, order);
}

bool cpu_compresskv_scores(const float* wq, const std::int32_t* wpos, int w, int Hq, int Hkv, int D, const float* keys,
                           int key_dtype, const std::int32_t* kpos, int N, int n_cand, const std::int32_t* heads,
                           int n_heads, int kernel, int pool, bool count_include_pad, float* out) {
  switch (key_dtype) {
    case 0: return head_subset<float>(wq, wpos, w, Hq, Hkv, D, keys, kpos, N, n_cand, heads, n_heads, kernel, pool, count_include_pad, out);
    case 1: return head_subset<Half>(wq, wpos, w, Hq, Hkv, D, keys, kpos, N, n_cand, heads, n_heads, kernel, pool, count_include_pad, out);
    case 2: return head_subset<BFloat16>(wq, wpos, w, Hq, Hkv, D, keys, kpos, N, n_cand, heads, n_heads, kernel, pool, count_include_pad, out);
    default: return false;
  }
}
