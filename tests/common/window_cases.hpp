// Observation-window score cases for the GPU test and the emulated one (tests/emu): ragged batches
// of segments (per-head subsets of each sequence's tokens at gapped positions, NaN keys and
// position -5 beyond each length), window queries rounded through the query dtype, an fp64 oracle
// of one segment's LSE and per-head window sums with its GQA reduction, and the tolerance checks
// (|a - b| <= 2e-4 |b| + 1e-6 max|b|; bit equality for the reductions the kernels repeat); the
// parameters both fill (column sums, pooling, WindowKV) and the checks both run against the CPU
// references (gpu/evict_window_cpu_bridge.hpp): column sums of every segment, pooling, WindowKV
// ranks, CompressKV scores and its pool-and-mean stage. The kernels' runs are the callers'.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "gpu/evict_window_cpu_bridge.hpp"
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

// How many of row[from, to) are no longer kSentinel (slots a kernel must not write).
inline int touched_beyond(const float* row, int from, int to) {
  int n = 0;
  for (int j = from; j < to; ++j) n += row[j] != kSentinel;
  return n;
}

// The fp64 oracle of every segment s = b * Hkv + h: per[s] (independent of the reduction) and its
// LSE [B][w][Hq] as an external pass-1 input.
template <class TQ, class TK>
void oracle_all(const Case<TQ, TK>& c, float scale, std::vector<float>* lse, std::vector<std::vector<double>>* per) {
  const int G = c.Hq / c.Hkv;
  lse->assign(static_cast<std::size_t>(c.B) * c.w * c.Hq, 0.f);
  per->assign(static_cast<std::size_t>(c.B) * c.Hkv, {});
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hkv; ++h) {
      std::vector<double> ol;
      oracle(c, b, h, scale, &ol, &(*per)[static_cast<std::size_t>(b) * c.Hkv + h]);
      for (int i = 0; i < c.w; ++i)
        for (int g = 0; g < G; ++g)
          (*lse)[(static_cast<std::size_t>(b) * c.w + i) * c.Hq + h * G + g] = static_cast<float>(ol[static_cast<std::size_t>(i) * G + g]);
    }
}

// cpu::window_colsum of every segment into ref [S][Nmax] (0 beyond each length) and the oracle's
// sums reduced likewise into orc[s]; the CPU against the oracle with the same bound (the tolerance
// is honest).
template <class TQ, class TK>
void colsum_references(const Case<TQ, TK>& c, const std::vector<std::vector<double>>& per, float scale, int reduce,
                       std::vector<float>* ref, std::vector<std::vector<float>>* orc) {
  const int G = c.Hq / c.Hkv;
  ref->assign(static_cast<std::size_t>(c.B) * c.Hkv * c.Nmax, 0.f);
  orc->assign(static_cast<std::size_t>(c.B) * c.Hkv, {});
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hkv; ++h) {
      const std::size_t s = static_cast<std::size_t>(b) * c.Hkv + h;
      const std::vector<float> qg = c.group_q(b, h);
      REQUIRE(cpu_window_colsum(qg.data(), c.qpos.data() + static_cast<std::size_t>(b) * c.w, c.w, G, c.D, scale, c.keys(b, h),
                                dtype_id<TK>(), c.kp(b, h), c.len(b, h), reduce, ref->data() + s * c.Nmax));
      (*orc)[s] = oracle_reduce(per[s], G, reduce);
      check_close(ref->data() + s * c.Nmax, (*orc)[s].data(), c.len(b, h), "CPU vs fp64 oracle");
    }
}

// The external LSE [B][w][Hq] (oracle_all's) as pass 1's input.
template <class TQ, class TK>
void use_external_lse(memattn::kernels::WindowColsumParams<TQ, TK>* p, const float* lse) {
  p->lse = lse;
  p->lse_stride[0] = static_cast<std::int64_t>(p->window) * p->q_heads;
  p->lse_stride[1] = p->q_heads;
  p->lse_stride[2] = 1;
}

// Kernel column sums col [S][Nmax] vs the CPU's and the oracle's, nothing written past a length.
template <class TQ, class TK>
void check_colsums(const Case<TQ, TK>& c, const std::vector<float>& col, const std::vector<float>& ref,
                   const std::vector<std::vector<float>>& orc, const std::string& who) {
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hkv; ++h) {
      INFO("segment b " << b << " h " << h << " len " << c.len(b, h));
      const std::size_t s = static_cast<std::size_t>(b) * c.Hkv + h;
      const int n = c.len(b, h);
      check_close(col.data() + s * c.Nmax, ref.data() + s * c.Nmax, n, (who + " vs CPU column sums").c_str());
      check_close(col.data() + s * c.Nmax, orc[s].data(), n, (who + " vs fp64 oracle column sums").c_str());
      CHECK(touched_beyond(col.data() + s * c.Nmax, n, c.Nmax) == 0);
    }
}

// Pooling counts per segment: the length, 0, or a random count in [0, length].
inline std::vector<std::int32_t> pool_counts(const std::vector<std::int32_t>& lens, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> cand(lens.size());
  for (std::size_t s = 0; s < lens.size(); ++s) {
    const int n = lens[s];
    const int pick = static_cast<int>(rng() % 4);
    cand[s] = pick == 0 ? n : pick == 1 ? 0 : static_cast<int>(rng() % static_cast<unsigned>(n + 1));
  }
  return cand;
}

// Pooling of every segment's column sums over [0, cand) with zero fill up to its length, kernels
// 1 .. 7, avg / max, both pad modes: bit-identical to cpu::pool_scores on the CPU's sums (src 0),
// within the tolerance on the kernels' (src 1), nothing written past a length. pool(pp, src) runs
// pp (shape and mode set; in, out, count and lens the caller's) and returns out [S][Nmax], kSentinel
// where unwritten.
template <class Pool>
void check_pool(int B, int Hkv, int Nmax, const std::vector<std::int32_t>& lens, const std::vector<std::int32_t>& cand,
                const std::vector<float>& cpu_col, const std::string& who, Pool&& pool) {
  const int S = B * Hkv;
  for (int kernel : {1, 3, 5, 7})
    for (int mode = 0; mode < 2; ++mode)
      for (int pad = 0; pad < 2; ++pad)
        for (int src = 0; src < 2; ++src) {
          INFO("kernel " << kernel << " pool " << mode << " pad " << pad << " src " << (src ? who : std::string("cpu")));
          memattn::kernels::WindowPoolParams pp;
          pp.in_stride[0] = static_cast<std::int64_t>(Hkv) * Nmax;
          pp.in_stride[1] = Nmax;
          pp.out_stride[0] = static_cast<std::int64_t>(Hkv) * Nmax;
          pp.out_stride[1] = Nmax;
          pp.batch = B, pp.units = Hkv, pp.max_len = Nmax;
          pp.kernel = kernel, pp.pool = mode, pp.count_include_pad = pad != 0;
          const std::vector<float> out = pool(pp, src);
          for (int s = 0; s < S; ++s) {
            const int n = cand[static_cast<std::size_t>(s)], L = lens[static_cast<std::size_t>(s)];
            std::vector<float> ref(static_cast<std::size_t>(L), 0.f);
            REQUIRE(cpu_pool_scores(cpu_col.data() + static_cast<std::size_t>(s) * Nmax, n, kernel, mode, pad != 0, ref.data()));
            const float* o = out.data() + static_cast<std::size_t>(s) * Nmax;
            if (src == 0) check_equal(o, ref.data(), L, "pool of the CPU column sums");
            else check_close(o, ref.data(), L, ("pool of the " + who + " column sums").c_str());
            CHECK(touched_beyond(o, L, Nmax) == 0);
          }
        }
}

// Kernel column sums as pooling input: the slots nothing wrote (kSentinel) read as 0.
inline void zero_sentinels(std::vector<float>* col) {
  for (float& x : *col)
    if (x == kSentinel) x = 0.f;
}

// WindowKV column sums [B][heads][N]: coarse levels in even sequences (many ties: tie-breaking by
// index must match), exp(normal) in odd ones; one generator across the calls.
struct WindowKvColumns {
  std::mt19937 rng{21u};
  std::uniform_int_distribution<int> level{0, 5};
  std::normal_distribution<float> nd{0.f, 1.f};
  std::vector<float> next(int B, int heads, int N) {
    std::vector<float> col(static_cast<std::size_t>(B) * heads * N);
    for (std::size_t x = 0; x < col.size(); ++x)
      col[x] = (x / (static_cast<std::size_t>(heads) * N)) % 2 == 0 ? 0.25f * static_cast<float>(level(rng)) : std::exp(nd(rng));
    return col;
  }
};

inline memattn::kernels::WindowKvParams windowkv_params(const float* col, int heads, int N, const std::int32_t* n_rev, int batch,
                                                        float* out, int block, int mode) {
  memattn::kernels::WindowKvParams p;
  p.col = col;
  p.col_stride[0] = static_cast<std::int64_t>(heads) * N;
  p.col_stride[1] = N;
  p.heads = heads;
  p.n_rev = n_rev;
  p.out = out;
  p.out_stride = N;
  p.batch = batch, p.max_rev = N, p.block = block, p.mode = mode;
  return p;
}

// WindowKV scores out [B][N] of col [B][heads][N] bit-identical to WindowBlock::unit_scores
// (kSentinel beyond n_rev).
inline void check_windowkv(const std::vector<float>& out, const std::vector<float>& col, int heads, int N,
                           const std::vector<std::int32_t>& n_rev, int block, int mode, const char* what) {
  for (std::size_t b = 0; b < n_rev.size(); ++b) {
    INFO("sequence " << b << " n_rev " << n_rev[b]);
    std::vector<float> ref(static_cast<std::size_t>(N), kSentinel);
    cpu_windowkv_scores(col.data() + b * heads * N, heads, N, n_rev[b], block, mode, ref.data());
    check_equal(out.data() + b * N, ref.data(), N, what);
  }
}

// Per sequence of a shared-selection case: WindowKV's / CompressKV's candidate counts (all but the
// window) and the lengths.
template <class TQ, class TK>
std::vector<std::int32_t> candidate_counts(const Case<TQ, TK>& c, std::vector<std::int32_t>* lens_b = nullptr) {
  std::vector<std::int32_t> n_cand(static_cast<std::size_t>(c.B));
  if (lens_b != nullptr) lens_b->resize(static_cast<std::size_t>(c.B));
  for (int b = 0; b < c.B; ++b) {
    if (lens_b != nullptr) (*lens_b)[static_cast<std::size_t>(b)] = c.len(b, 0);
    n_cand[static_cast<std::size_t>(b)] = std::max(0, c.len(b, 0) - c.w);
  }
  return n_cand;
}

// CompressKV scores out [B][Nmax] of a shared-selection case vs cpu::head_subset_window_scores
// (tolerance, nothing written past a length); then its pool-and-mean stage on the CPU's per-head
// sums, bit-identical to the CPU's scores: pool(pp, percol, count, len) runs pp (one unit of
// n_heads rows, shape and mode set) on percol [n_heads][N] and returns the pooled [N].
template <class TQ, class TK, class Pool>
void check_compresskv(const Case<TQ, TK>& c, const std::vector<std::int32_t>& heads, int kernel, int pool, bool pad, float scale,
                      const std::vector<std::int32_t>& n_cand, const std::vector<float>& out, Pool&& run_pool) {
  const int Hq = c.Hq, Hkv = c.Hkv, D = c.D, w = c.w, Nmax = c.Nmax, G = Hq / Hkv, n_heads = static_cast<int>(heads.size());
  for (int b = 0; b < c.B; ++b) {
    INFO("sequence " << b);
    const int N = c.len(b, 0);
    // the layer's keys [Hkv][N][D] with the shared positions, as the CPU cache holds them
    std::vector<float> keys(static_cast<std::size_t>(Hkv) * N * D);
    for (int h = 0; h < Hkv; ++h) std::copy_n(c.keys(b, h), static_cast<std::size_t>(N) * D, keys.data() + static_cast<std::size_t>(h) * N * D);
    std::vector<float> wq(static_cast<std::size_t>(w) * Hq * D);
    std::copy_n(c.qrow(b, 0, 0), wq.size(), wq.data());
    const std::int32_t* wpos = c.qpos.data() + static_cast<std::size_t>(b) * w;
    std::vector<float> ref(static_cast<std::size_t>(N));
    REQUIRE(cpu_compresskv_scores(wq.data(), wpos, w, Hq, Hkv, D, keys.data(), dtype_id<TK>(), c.kp(b, 0), N,
                                  n_cand[static_cast<std::size_t>(b)], heads.data(), n_heads, kernel, pool, pad, ref.data()));
    check_close(out.data() + static_cast<std::size_t>(b) * Nmax, ref.data(), N, "CompressKV scores");
    CHECK(touched_beyond(out.data() + static_cast<std::size_t>(b) * Nmax, N, Nmax) == 0);
    std::vector<float> percol(static_cast<std::size_t>(n_heads) * N);
    for (int s = 0; s < n_heads; ++s) {
      std::vector<float> q1(static_cast<std::size_t>(w) * D);
      for (int i = 0; i < w; ++i) std::copy_n(c.qrow(b, i, heads[static_cast<std::size_t>(s)]), D, q1.data() + static_cast<std::size_t>(i) * D);
      REQUIRE(cpu_window_colsum(q1.data(), wpos, w, 1, D, scale, c.keys(b, heads[static_cast<std::size_t>(s)] / G), dtype_id<TK>(),
                                c.kp(b, 0), N, 2, percol.data() + static_cast<std::size_t>(s) * N));
    }
    memattn::kernels::WindowPoolParams pp;
    pp.in_stride[0] = static_cast<std::int64_t>(n_heads) * N;
    pp.in_stride[1] = N;
    pp.rows_per_unit = n_heads;
    pp.batch = 1, pp.units = 1, pp.max_len = N;
    pp.kernel = kernel, pp.pool = pool, pp.count_include_pad = pad;
    const std::vector<float> pooled = run_pool(pp, percol, n_cand[static_cast<std::size_t>(b)], N);
    check_equal(pooled.data(), ref.data(), N, "CompressKV pool-and-mean stage");
  }
}

}  // namespace memattn_test
