// Observation-window score cases for the GPU test and the emulated one (tests/emu): ragged batches
// of segments (per-head subsets of each sequence's tokens at gapped positions, NaN keys and
// position -5 beyond each length), window queries rounded through the query dtype, an fp64 oracle
// of one segment's LSE and per-head window sums with its GQA reduction, and the tolerance checks
// (|a - b| <= 2e-4 |b| + 1e-6 max|b|; bit equality for the reductions the kernels repeat).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/kernels/evict_window.cuh"

namespace memattn_test {

template <class T> int dtype_id();
template <> inline int dtype_id<float>() { return 0; }
template <> inline int dtype_id<memattn::Half>() { return 1; }
template <> inline int dtype_id<memattn::BFloat16>() { return 2; }

template <class T>
T nan_of() {
  if constexpr (std::is_same<T, float>::value) return std::numeric_limits<float>::quiet_NaN();
  else if constexpr (std::is_same<T, memattn::Half>::value) return memattn::Half{0x7e00};
  else return memattn::BFloat16{0x7fc0};
}

constexpr float kSentinel = 12345.f;

// |a - b| <= 2e-4 |b| + 1e-6 max|b| elementwise over [0, n).
inline void check_close(const float* gpu, const float* ref, int n, const char* what) {
  float mx = 0.f;
  for (int j = 0; j < n; ++j) mx = std::max(mx, std::abs(ref[j]));
  int bad = 0, first = -1;
  for (int j = 0; j < n; ++j) {
    const float tol = 2e-4f * std::abs(ref[j]) + 1e-6f * mx;
    if (!(std::abs(gpu[j] - ref[j]) <= tol)) {
      if (first < 0) first = j;
      ++bad;
    }
  }
  INFO(what << ": " << bad << " of " << n << " outside the tolerance, first at " << first << " gpu "
            << (first >= 0 ? gpu[first] : 0.f) << " ref " << (first >= 0 ? ref[first] : 0.f));
  CHECK(bad == 0);
}

inline void check_equal(const float* gpu, const float* ref, int n, const char* what) {
  int bad = 0, first = -1;
  for (int j = 0; j < n; ++j)
    if (std::memcmp(gpu + j, ref + j, sizeof(float)) != 0) {
      if (first < 0) first = j;
      ++bad;
    }
  INFO(what << ": " << bad << " of " << n << " not bit-identical, first at " << first << " gpu "
            << (first >= 0 ? gpu[first] : 0.f) << " ref " << (first >= 0 ? ref[first] : 0.f));
  CHECK(bad == 0);
}

// A batch of segments as an engine holds them: sequence b has P_b tokens at increasing positions
// with gaps; KV head h holds token 0, then each later token with probability keep[h] (per-head
// budgets; keep 0 leaves one key), all heads alike when `shared`. The window is the last w tokens
// of the sequence (queries at their positions; the CPU and the GPU get the same rounded values).
template <class TQ, class TK>
struct Case {
  int B, Hq, Hkv, D, w, Nmax;
  std::vector<float> qf;                 // [B][w][Hq][D] rounded through TQ
  std::vector<TQ> q;
  std::vector<std::int32_t> qpos;        // [B][w]
  std::vector<float> kf;                 // [B][Hkv][Nmax][D] rounded through TK (0 beyond len)
  std::vector<TK> k;                     // NaN beyond len
  std::vector<std::int32_t> kpos;        // [B][Hkv][Nmax], -5 beyond len
  std::vector<std::int32_t> lens;        // [B * Hkv]

  Case(int B_, int Hq_, int Hkv_, int D_, int w_, int Nmax_, bool shared, unsigned seed)
      : B(B_), Hq(Hq_), Hkv(Hkv_), D(D_), w(w_), Nmax(Nmax_) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    qf.resize(static_cast<std::size_t>(B) * w * Hq * D);
    for (std::size_t x = 0; x < qf.size(); ++x) {
      const float v = nd(rng) * (x % static_cast<std::size_t>(D) < 4 ? 3.f : 1.f);  // outlier channels: peaked attention
      q.push_back(memattn::from_float<TQ>(v));
      qf[x] = memattn::to_float(q.back());
    }
    qpos.resize(static_cast<std::size_t>(B) * w);
    const std::size_t seg_elems = static_cast<std::size_t>(Nmax) * D;
    kf.assign(static_cast<std::size_t>(B) * Hkv * seg_elems, 0.f);
    k.assign(kf.size(), nan_of<TK>());
    kpos.assign(static_cast<std::size_t>(B) * Hkv * Nmax, -5);
    lens.resize(static_cast<std::size_t>(B) * Hkv);
    for (int b = 0; b < B; ++b) {
      const int P = std::max(1, Nmax - 53 * b);
      std::vector<std::int32_t> pos(static_cast<std::size_t>(P));
      pos[0] = static_cast<std::int32_t>(rng() % 4);
      for (int t = 1; t < P; ++t) pos[t] = pos[t - 1] + 1 + (rng() % 4 == 0 ? static_cast<int>(rng() % 3) : 0);
      for (int i = 0; i < w; ++i) qpos[static_cast<std::size_t>(b) * w + i] = pos[std::max(0, P - w + i)] + (P - w + i < 0 ? i : 0);
      std::vector<int> keep_tokens;
      for (int h = 0; h < Hkv; ++h) {
        const float keep = shared || h == 0 ? 1.f : (h == Hkv - 1 && b == B - 1 ? 0.f : 0.4f + 0.5f * ud(rng));
        if (!shared || h == 0) {
          keep_tokens.assign(1, 0);
          for (int t = 1; t < P; ++t)
            if (ud(rng) < keep) keep_tokens.push_back(t);
        }
        const int n = static_cast<int>(keep_tokens.size());
        lens[static_cast<std::size_t>(b) * Hkv + h] = n;
        const std::size_t seg = static_cast<std::size_t>(b) * Hkv + h;
        for (int j = 0; j < n; ++j) {
          kpos[seg * Nmax + j] = pos[static_cast<std::size_t>(keep_tokens[static_cast<std::size_t>(j)])];
          for (int d = 0; d < D; ++d) {
            const float v = nd(rng) * (d < 4 ? 2.f : 1.f);
            const std::size_t at = seg * seg_elems + static_cast<std::size_t>(j) * D + d;
            k[at] = memattn::from_float<TK>(v);
            kf[at] = memattn::to_float(k[at]);
          }
        }
      }
    }
  }
  const float* qrow(int b, int i, int hq) const { return qf.data() + ((static_cast<std::size_t>(b) * w + i) * Hq + hq) * D; }
  const float* keys(int b, int h) const { return kf.data() + (static_cast<std::size_t>(b) * Hkv + h) * Nmax * D; }
  const std::int32_t* kp(int b, int h) const { return kpos.data() + (static_cast<std::size_t>(b) * Hkv + h) * Nmax; }
  int len(int b, int h) const { return lens[static_cast<std::size_t>(b) * Hkv + h]; }
  // Window queries [w][G][D] of KV head h (its G query heads).
  std::vector<float> group_q(int b, int h) const {
    const int G = Hq / Hkv;
    std::vector<float> out(static_cast<std::size_t>(w) * G * D);
    for (int i = 0; i < w; ++i)
      for (int g = 0; g < G; ++g) std::copy_n(qrow(b, i, h * G + g), D, out.data() + (static_cast<std::size_t>(i) * G + g) * D);
    return out;
  }
};

// fp64 oracle of one segment: LSE of every (i, g) row (natural log of tau q.k over the visible
// keys) and the per-head window sums per[g][j] (reduced by oracle_reduce).
template <class TQ, class TK>
void oracle(const Case<TQ, TK>& c, int b, int h, float scale, std::vector<double>* lse, std::vector<double>* per_out) {
  const int G = c.Hq / c.Hkv, n = c.len(b, h), D = c.D;
  const float* K = c.keys(b, h);
  const std::int32_t* kp = c.kp(b, h);
  lse->assign(static_cast<std::size_t>(c.w) * G, 0.0);
  std::vector<double> per(static_cast<std::size_t>(G) * n, 0.0), s(static_cast<std::size_t>(n));
  for (int i = 0; i < c.w; ++i)
    for (int g = 0; g < G; ++g) {
      const float* q = c.qrow(b, i, h * G + g);
      double m = -INFINITY;
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += static_cast<double>(q[d]) * scale * K[static_cast<std::size_t>(j) * D + d];
        s[static_cast<std::size_t>(j)] = acc;
        if (kp[j] <= c.qpos[static_cast<std::size_t>(b) * c.w + i]) m = std::max(m, acc);
      }
      double l = 0;
      for (int j = 0; j < n; ++j)
        if (kp[j] <= c.qpos[static_cast<std::size_t>(b) * c.w + i]) l += std::exp(s[static_cast<std::size_t>(j)] - m);
      const double ls = m + std::log(l);
      (*lse)[static_cast<std::size_t>(i) * G + g] = ls;
      for (int j = 0; j < n; ++j)
        if (kp[j] <= c.qpos[static_cast<std::size_t>(b) * c.w + i]) per[static_cast<std::size_t>(g) * n + j] += std::exp(s[static_cast<std::size_t>(j)] - ls);
    }
  *per_out = std::move(per);
}

inline std::vector<float> oracle_reduce(const std::vector<double>& per, int G, int reduce) {
  const std::size_t n = per.size() / static_cast<std::size_t>(G);
  std::vector<float> col(n);
  for (std::size_t j = 0; j < n; ++j) {
    double a = 0;
    for (int g = 0; g < G; ++g) {
      const double x = per[static_cast<std::size_t>(g) * n + j];
      a = g == 0 ? x : (reduce == 1 ? std::max(a, x) : a + x);
    }
    col[j] = static_cast<float>(reduce == 0 ? a / G : a);
  }
  return col;
}

// The column-sum parameters of case c held at q, qpos, k, kpos, lens (the case's layouts), sums
// to col [B][Hkv][Nmax].
template <class TQ, class TK>
memattn::kernels::WindowColsumParams<TQ, TK> window_params(const Case<TQ, TK>& c, const TQ* q, const std::int32_t* qpos, const TK* k,
                                                           const std::int32_t* kpos, const std::int32_t* lens, float* col,
                                                           float scale, int reduce) {
  memattn::kernels::WindowColsumParams<TQ, TK> p;
  p.q = q;
  p.q_stride[0] = static_cast<std::int64_t>(c.w) * c.Hq * c.D;
  p.q_stride[1] = static_cast<std::int64_t>(c.Hq) * c.D;
  p.q_stride[2] = c.D;
  p.qpos = qpos;
  p.qpos_stride = c.w;
  p.k = k;
  p.k_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.Nmax * c.D;
  p.k_stride[1] = static_cast<std::int64_t>(c.Nmax) * c.D;
  p.k_stride[2] = c.D;
  p.kpos = kpos;
  p.kpos_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.Nmax;
  p.kpos_stride[1] = c.Nmax;
  p.lens = lens;
  p.col = col;
  p.col_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.Nmax;
  p.col_stride[1] = c.Nmax;
  p.batch = c.B, p.q_heads = c.Hq, p.kv_heads = c.Hkv, p.head_dim = c.D, p.window = c.w, p.max_keys = c.Nmax;
  p.scale = scale;
  p.reduce = reduce;
  return p;
}

}  // namespace memattn_test
