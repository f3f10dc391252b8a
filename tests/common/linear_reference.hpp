// fp64 references for linear attention (shared by the CPU and GPU tests): the recurrence of
// memattn/linear/linear_args.hpp evaluated token by token (the ground truth), the O(T²) masked
// form with the initial-state term (cross-check of the ground truth), an independent block form
// with selectable decay convention (spec §5.3 T9), sliding-window softmax and mixture of
// memories. φ is evaluated in fp64 from the stored inputs. Shares no code with the
// implementations beyond the argument structs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/linear/linear_args.hpp"
#include "memattn/linear/window_args.hpp"

namespace memattn_test {

using memattn::linear::FeatureMap;

inline int phi_dim(FeatureMap f, int dk) { return f == FeatureMap::kTaylor2 ? 1 + dk + dk * (dk + 1) / 2 : dk; }

// φ in fp64, written out from the spec's formulas.
inline std::vector<double> phi64(FeatureMap f, const std::vector<double>& x, double alpha) {
  const int d = static_cast<int>(x.size());
  std::vector<double> out;
  switch (f) {
    case FeatureMap::kIdentity: return x;
    case FeatureMap::kRelu:
      for (double e : x) out.push_back(e > 0 ? e : 0.0);
      return out;
    case FeatureMap::kEluPlusOne:
      for (double e : x) out.push_back(e > 0 ? e + 1.0 : std::exp(e));
      return out;
    case FeatureMap::kTaylor2:
      out.push_back(1.0);
      for (int i = 0; i < d; ++i) out.push_back(std::sqrt(alpha) * x[i]);
      for (int i = 0; i < d; ++i) out.push_back(alpha / std::sqrt(2.0) * x[i] * x[i]);
      for (int i = 0; i < d; ++i)
        for (int j = i + 1; j < d; ++j) out.push_back(alpha * x[i] * x[j]);
      return out;
  }
  return out;
}

struct LinearRef {
  std::vector<double> o;  // [rows, Hq, Dv]; rows not written stay NaN
  std::vector<double> S;  // [N, Hs, Kφ, Dv] final state of each sequence
  std::vector<double> z;  // [N, Hs, Kφ]
};

template <class T>
std::vector<double> row64(const memattn::TensorView<const T, 3>& v, std::int64_t r, std::int64_t h) {
  std::vector<double> x(static_cast<std::size_t>(v.shape[2]));
  for (std::int64_t i = 0; i < v.shape[2]; ++i) x[static_cast<std::size_t>(i)] = memattn::to_float(*v.ptr(r, h, i));
  return x;
}

inline double dot64(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Sequence geometry from host-readable args.
template <class T>
void ref_rows(const memattn::linear::LinearArgs<T>& a, std::int64_t rows, std::int64_t n, std::int64_t* b,
              std::int64_t* len) {
  if (a.seq.cu_seqlens) {
    *b = a.seq.cu_seqlens[n];
    *len = a.seq.cu_seqlens[n + 1] - a.seq.cu_seqlens[n];
  } else {
    const std::int64_t tp = rows / a.seq.num_seqs;
    *b = n * tp;
    *len = a.seq.seq_lens ? a.seq.seq_lens[n] : tp;
  }
}

// Ground truth. S0/z0: [N, Hs, Kφ, Dv] / [N, Hs, Kφ] initial states (empty: zero).
// `quadratic`: evaluate the O(T²) masked form instead of the recurrence.
template <class T>
LinearRef linear_reference_f64(const memattn::linear::LinearArgs<T>& a, const std::vector<double>& S0,
                               const std::vector<double>& z0, bool quadratic = false) {
  const std::int64_t rows = a.k.shape[0], Hk = a.k.shape[1], Dk = a.k.shape[2], Dv = a.v.shape[2];
  const std::int64_t Hq = a.q.data ? a.q.shape[1] : Hk, G = Hq / Hk;
  const bool per_q = a.gqa == memattn::linear::GqaState::kPerQueryHead;
  const std::int64_t Hs = per_q ? Hq : Hk, N = a.seq.num_seqs;
  const std::int64_t K = phi_dim(a.feature_map, static_cast<int>(Dk));
  const double alpha = a.alpha, scale = a.scale, eps = a.normalize ? a.eps : 0.0;
  LinearRef r;
  r.o.assign(static_cast<std::size_t>(rows * Hq * Dv), std::numeric_limits<double>::quiet_NaN());
  r.S.assign(static_cast<std::size_t>(N * Hs * K * Dv), 0.0);
  r.z.assign(static_cast<std::size_t>(N * Hs * K), 0.0);
  for (std::int64_t n = 0; n < N; ++n) {
    std::int64_t b = 0, len = 0;
    ref_rows(a, rows, n, &b, &len);
    for (std::int64_t hs = 0; hs < Hs; ++hs) {
      const double lam = a.decay_rate ? std::exp(-static_cast<double>(a.decay_rate[hs])) : 1.0;
      const std::int64_t kvh = per_q ? hs / G : hs;
      std::vector<std::int64_t> qheads;
      if (per_q) qheads.push_back(hs);
      else
        for (std::int64_t g = 0; g < G; ++g) qheads.push_back(hs * G + g);
      const std::size_t so = static_cast<std::size_t>((n * Hs + hs) * K * Dv), zo = static_cast<std::size_t>((n * Hs + hs) * K);
      std::vector<double> S(static_cast<std::size_t>(K * Dv), 0.0), z(static_cast<std::size_t>(K), 0.0);
      if (!S0.empty()) std::copy(S0.begin() + so, S0.begin() + so + K * Dv, S.begin());
      if (!z0.empty()) std::copy(z0.begin() + zo, z0.begin() + zo + K, z.begin());
      const std::vector<double> Sinit = S, zinit = z;
      std::vector<std::vector<double>> fk(static_cast<std::size_t>(len)), vv(static_cast<std::size_t>(len));
      for (std::int64_t t = 0; t < len; ++t) {
        fk[t] = phi64(a.feature_map, row64(a.k, b + t, kvh), alpha);
        vv[t] = row64(a.v, b + t, kvh);
      }
      for (std::int64_t t = 0; t < len; ++t) {
        for (std::int64_t i = 0; i < K; ++i) {
          for (std::int64_t c = 0; c < Dv; ++c) S[i * Dv + c] = lam * S[i * Dv + c] + fk[t][i] * vv[t][c];
          z[i] = lam * z[i] + fk[t][i];
        }
        if (!a.o.data) continue;
        for (std::int64_t hq : qheads) {
          const std::vector<double> fq = phi64(a.feature_map, row64(a.q, b + t, hq), alpha);
          double* out = &r.o[static_cast<std::size_t>(((b + t) * Hq + hq) * Dv)];
          double den = 0;
          if (!quadratic) {
            for (std::int64_t c = 0; c < Dv; ++c) {
              double s = 0;
              for (std::int64_t i = 0; i < K; ++i) s += fq[i] * S[i * Dv + c];
              out[c] = scale * s;
            }
            den = scale * dot64(fq, z) + eps;
          } else {
            std::vector<double> acc(static_cast<std::size_t>(Dv), 0.0);
            double qk_sum = 0;
            for (std::int64_t u = 0; u <= t; ++u) {
              const double w = std::pow(lam, static_cast<double>(t - u)) * dot64(fq, fk[u]);
              qk_sum += w;
              for (std::int64_t c = 0; c < Dv; ++c) acc[c] += w * vv[u][c];
            }
            const double li = std::pow(lam, static_cast<double>(t + 1));
            for (std::int64_t c = 0; c < Dv; ++c) {
              double s = 0;
              for (std::int64_t i = 0; i < K; ++i) s += fq[i] * Sinit[i * Dv + c];
              out[c] = scale * (acc[c] + li * s);
            }
            den = scale * (qk_sum + li * dot64(fq, zinit)) + eps;
          }
          if (a.normalize)
            for (std::int64_t c = 0; c < Dv; ++c) out[c] /= den;
        }
      }
      if (quadratic) {  // final state from the closed form
        const double lT = std::pow(lam, static_cast<double>(len));
        for (std::int64_t i = 0; i < K; ++i) {
          for (std::int64_t c = 0; c < Dv; ++c) {
            double s = lT * Sinit[i * Dv + c];
            for (std::int64_t u = 0; u < len; ++u) s += std::pow(lam, static_cast<double>(len - 1 - u)) * fk[u][i] * vv[u][c];
            S[i * Dv + c] = s;
          }
          double zz = lT * zinit[i];
          for (std::int64_t u = 0; u < len; ++u) zz += std::pow(lam, static_cast<double>(len - 1 - u)) * fk[u][i];
          z[i] = zz;
        }
      }
      std::copy(S.begin(), S.end(), r.S.begin() + so);
      std::copy(z.begin(), z.end(), r.z.begin() + zo);
    }
  }
  return r;
}

// Independent fp64 block (chunked) evaluation of one head with a chosen convention, for T9:
// query exponent i + q_shift (memattn/MiniMax: 1; vLLM: 0), key exponent n_c - 1 - j, carried
// state exact. x: [T][K] features of q, k; v: [T][Dv]. Returns outputs [T][Dv] (scale 1).
inline std::vector<double> block_convention_f64(const std::vector<std::vector<double>>& fq,
                                                const std::vector<std::vector<double>>& fk,
                                                const std::vector<std::vector<double>>& v, std::vector<double> S,
                                                double s, int block, int q_shift) {
  const std::size_t T = fq.size(), K = fq.empty() ? 0 : fq[0].size(), Dv = v.empty() ? 0 : v[0].size();
  std::vector<double> o(T * Dv, 0.0);
  for (std::size_t c0 = 0; c0 < T; c0 += static_cast<std::size_t>(block)) {
    const std::size_t nc = std::min<std::size_t>(static_cast<std::size_t>(block), T - c0);
    for (std::size_t i = 0; i < nc; ++i) {
      for (std::size_t c = 0; c < Dv; ++c) {
        double intra = 0, inter = 0;
        for (std::size_t j = 0; j <= i; ++j) intra += std::exp(-s * double(i - j)) * dot64(fq[c0 + i], fk[c0 + j]) * v[c0 + j][c];
        for (std::size_t k = 0; k < K; ++k) inter += fq[c0 + i][k] * S[k * Dv + c];
        o[(c0 + i) * Dv + c] = intra + std::exp(-s * double(i + q_shift)) * inter;
      }
    }
    for (std::size_t k = 0; k < K; ++k)
      for (std::size_t c = 0; c < Dv; ++c) {
        double acc = std::exp(-s * double(nc)) * S[k * Dv + c];
        for (std::size_t j = 0; j < nc; ++j) acc += std::exp(-s * double(nc - 1 - j)) * fk[c0 + j][k] * v[c0 + j][c];
        S[k * Dv + c] = acc;
      }
  }
  return o;
}

// Sliding-window softmax over whole sequences (no ring): query t of sequence n sees tokens
// max(0, t - W) .. t. Rows outside the sequences stay NaN.
template <class T>
std::vector<double> swa_f64(const memattn::linear::SlidingWindowArgs<T>& a) {
  const std::int64_t rows = a.q.shape[0], Hq = a.q.shape[1], Hk = a.k.shape[1], Dv = a.v.shape[2];
  const std::int64_t G = Hq / Hk, N = a.seq.num_seqs;
  std::vector<double> o(static_cast<std::size_t>(rows * Hq * Dv), std::numeric_limits<double>::quiet_NaN());
  for (std::int64_t n = 0; n < N; ++n) {
    std::int64_t b = 0, len = 0;
    if (a.seq.cu_seqlens) {
      b = a.seq.cu_seqlens[n];
      len = a.seq.cu_seqlens[n + 1] - b;
    } else {
      const std::int64_t tp = rows / N;
      b = n * tp;
      len = a.seq.seq_lens ? a.seq.seq_lens[n] : tp;
    }
    for (std::int64_t h = 0; h < Hq; ++h)
      for (std::int64_t t = 0; t < len; ++t) {
        const std::vector<double> q = row64(a.q, b + t, h);
        const std::int64_t lo = std::max<std::int64_t>(0, t - a.window);
        std::vector<double> s;
        double mx = -INFINITY;
        for (std::int64_t u = lo; u <= t; ++u) {
          s.push_back(a.scale * dot64(q, row64(a.k, b + u, h / G)));
          mx = std::max(mx, s.back());
        }
        double l = 0;
        std::vector<double> acc(static_cast<std::size_t>(Dv), 0.0);
        for (std::int64_t u = lo; u <= t; ++u) {
          const double w = std::exp(s[u - lo] - mx);
          l += w;
          const std::vector<double> vv = row64(a.v, b + u, h / G);
          for (std::int64_t c = 0; c < Dv; ++c) acc[c] += w * vv[c];
        }
        for (std::int64_t c = 0; c < Dv; ++c) o[static_cast<std::size_t>(((b + t) * Hq + h) * Dv + c)] = acc[c] / l;
      }
  }
  return o;
}

// ---- comparison -------------------------------------------------------------------------------

struct ErrStats {
  double rel_rms = 0, max_abs = 0, ref_rms = 0;
  bool finite = true;
  std::int64_t worst = -1, count = 0;
  std::string describe() const {
    return "relRMS=" + std::to_string(rel_rms) + " maxabs=" + std::to_string(max_abs) +
           " refRMS=" + std::to_string(ref_rms) + " worst=" + std::to_string(worst) +
           " n=" + std::to_string(count) + (finite ? "" : " NON-FINITE");
  }
  // §5.1: relRMS <= thr, max-abs <= 20·thr·RMS(ref), all finite.
  bool within(double thr) const { return finite && count > 0 && rel_rms <= thr && max_abs <= 20 * thr * ref_rms; }
};

// Over the indices where ref is not NaN (the valid elements); got(i) returns a double.
template <class GotFn>
ErrStats compare(const std::vector<double>& ref, GotFn got) {
  ErrStats e;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(ref[i])) continue;
    const double g = got(i);
    ++e.count;
    if (!std::isfinite(g)) {
      e.finite = false;
      e.worst = static_cast<std::int64_t>(i);
      continue;
    }
    const double d = std::abs(g - ref[i]);
    num += d * d;
    den += ref[i] * ref[i];
    if (d > e.max_abs) {
      e.max_abs = d;
      e.worst = static_cast<std::int64_t>(i);
    }
  }
  e.ref_rms = e.count ? std::sqrt(den / static_cast<double>(e.count)) : 0;
  e.rel_rms = den > 0 ? std::sqrt(num / den) : (num > 0 ? INFINITY : 0);
  return e;
}

}  // namespace memattn_test
