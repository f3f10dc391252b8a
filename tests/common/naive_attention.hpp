// fp64 naive attention: the reference every CPU and CUDA attention path is tested against.
// Materialises each query's score row (fine at test sizes), follows the conventions of
// memattn/attention/dense_args.hpp literally, and shares no code with the implementations.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/dtype.hpp"

namespace memattn_test {

struct NaiveResult {
  std::vector<double> o;    // [B, Tq, Hq, D]
  std::vector<double> lse;  // [B, Tq, Hq]
};

// One query row against keys [lo, hi) of one KV head; k(j, d) / v(j, d) read the cache.
template <class KFn, class VFn>
void naive_row(const std::vector<double>& q, double scale, std::int64_t lo, std::int64_t hi, std::int64_t D, KFn k,
               VFn v, double* o, double* lse) {
  std::vector<double> s(static_cast<size_t>(hi - lo));
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = lo; j < hi; ++j) {
    double acc = 0;
    for (std::int64_t d = 0; d < D; ++d) acc += q[d] * k(j, d);
    s[j - lo] = acc * scale;
    m = std::max(m, s[j - lo]);
  }
  double l = 0;
  for (double& x : s) {
    x = std::exp(x - m);
    l += x;
  }
  for (std::int64_t d = 0; d < D; ++d) {
    double acc = 0;
    for (std::int64_t j = lo; j < hi; ++j) acc += s[j - lo] * v(j, d);
    o[d] = acc / l;
  }
  *lse = m + std::log(l);
}

template <class T>
NaiveResult naive_decode(const memattn::attention::DecodeArgs<T>& a, const std::int32_t* lens) {
  const std::int64_t B = a.q.shape[0], Tq = a.q.shape[1], Hq = a.q.shape[2], D = a.q.shape[3];
  const std::int64_t Hkv = a.k_cache.shape[1], Lcap = a.k_cache.shape[2];
  const double scale = a.scale != 0.f ? a.scale : 1.0 / std::sqrt(static_cast<double>(D));
  NaiveResult r;
  r.o.assign(static_cast<size_t>(B * Tq * Hq * D), 0.0);
  r.lse.assign(static_cast<size_t>(B * Tq * Hq), 0.0);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t L = lens ? lens[b] : Lcap;
    for (std::int64_t t = 0; t < Tq; ++t) {
      const std::int64_t pos = L - Tq + t;
      const std::int64_t lo = a.window > 0 ? std::max<std::int64_t>(0, pos - a.window + 1) : 0;
      for (std::int64_t h = 0; h < Hq; ++h) {
        const std::int64_t kh = h / (Hq / Hkv);
        std::vector<double> q(static_cast<size_t>(D));
        for (std::int64_t d = 0; d < D; ++d) q[d] = memattn::to_float(*a.q.ptr(b, t, h, d));
        auto k = [&](std::int64_t j, std::int64_t d) { return double(memattn::to_float(*a.k_cache.ptr(b, kh, j, d))); };
        auto v = [&](std::int64_t j, std::int64_t d) { return double(memattn::to_float(*a.v_cache.ptr(b, kh, j, d))); };
        const size_t row = static_cast<size_t>((b * Tq + t) * Hq + h);
        naive_row(q, scale, lo, pos + 1, D, k, v, &r.o[row * D], &r.lse[row]);
      }
    }
  }
  return r;
}

template <class T>
NaiveResult naive_prefill(const memattn::attention::PrefillArgs<T>& a) {
  const std::int64_t B = a.q.shape[0], T_ = a.q.shape[1], Hq = a.q.shape[2], D = a.q.shape[3];
  const std::int64_t Hkv = a.k.shape[2];
  const double scale = a.scale != 0.f ? a.scale : 1.0 / std::sqrt(static_cast<double>(D));
  NaiveResult r;
  r.o.assign(static_cast<size_t>(B * T_ * Hq * D), 0.0);
  r.lse.assign(static_cast<size_t>(B * T_ * Hq), 0.0);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T_; ++t) {
      const std::int64_t lo = a.window > 0 ? std::max<std::int64_t>(0, t - a.window + 1) : 0;
      for (std::int64_t h = 0; h < Hq; ++h) {
        const std::int64_t kh = h / (Hq / Hkv);
        std::vector<double> q(static_cast<size_t>(D));
        for (std::int64_t d = 0; d < D; ++d) q[d] = memattn::to_float(*a.q.ptr(b, t, h, d));
        auto k = [&](std::int64_t j, std::int64_t d) { return double(memattn::to_float(*a.k.ptr(b, j, kh, d))); };
        auto v = [&](std::int64_t j, std::int64_t d) { return double(memattn::to_float(*a.v.ptr(b, j, kh, d))); };
        const size_t row = static_cast<size_t>((b * T_ + t) * Hq + h);
        naive_row(q, scale, lo, t + 1, D, k, v, &r.o[row * D], &r.lse[row]);
      }
    }
  }
  return r;
}

}  // namespace memattn_test
