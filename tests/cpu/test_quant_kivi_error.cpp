// KIVI algorithmic error against fp64 attention on the unquantised data (specs/quantization.md
// §10.4, Q-E1..Q-E5 and Q-E7; Q-E6, the balancer, belongs to the MiKV tiers).
//
// Generator (§10.4, normative parameters; the draw order is ours and fixed here, since the golden
// numbers depend on it): one head per seed 1234 + i, PortableRng(seed) (SplitMix64 + Box-Muller,
// tests/common/portable_rng.hpp), D = 128, G = 32, drawn in this order:
//   1. 4 distinct outlier channels (rng.below(D), repeats redrawn); outlier i has mean +15 (i even)
//      or -15 (i odd) and std 3; the "no outliers" variant keeps the same draws with mean 0, std 3;
//   2. 8 distinct needle tokens (rng.below(T)), needle i gets nu = 0.25 (i even) or 1.0 (i odd);
//   3. q: D normals, rounded to fp32 (the cache's query type, so the real cache sees the same q);
//   4. K: T x D normals z (token-major), K = mean_c + std_c * z, then K_t += nu * q at the needles;
//   5. sigma_t = exp(0.5 * normal) for each token; 6. V = sigma_t * normal (token-major).
//   K and V are rounded to fp16 (the model dtype the quantizer reads); "unquantised" means these
//   fp16 values, so every error below is quantisation error alone. tau = 1/sqrt(D).
// Quantisation: K per channel and V per token through the real block records (quant/kivi.hpp
// quantize_block + BlockView); K per token (groups of G_V = 32 channels) and V per channel
// (groups of G tokens) through the same qmath group_params/encode/decode with the transposed
// grouping. Values are the canonical fp32 decode (what the CPU and GPU caches attend to). T and
// R are multiples of G, so the state with a residual R is the R = 0 state with its newest R
// tokens exact (every block depends on its own G tokens only, §4.1). Attention in fp64 (Eigen).
//
// Seeds and lengths: all 50 default seeds (1234..1283) at T = 2048 in CI (the table is computed
// once and shared by the test cases); MEMATTN_KIVI_ERROR_FULL=1 adds T = 4096 (about 3x the time,
// too slow for the ASan CI run). Every assertion below holds at both lengths except as noted.
//
// Q-E1 uses, per element, the fp32-decode bound e = s*(1/2 + 2^-40) + 2^-23*|x^| (§3.3: the
// fp64 value is within s(1/2 + 2^-40); rounding z + code*s to fp32 adds at most 2^-24 of it) in
// place of s/2 in delta_t and in the V term; the extra term is ~1e-7 of s/2 here. The element
// ratio reaches 1.0000: fp16 data on the half-step lattice are ties with error exactly s/2.
// Measured max(measured/bound) is ~0.42-0.47 for the logit bound (2-bit per-token K) and ~0.38-
// 0.43 for the output bound (a needle carrying most of p), above the spec's "<= 28 %" for its own
// reference simulation (not an assertion); the bounds themselves never fail.
//
// Spec deviation, Q-E5: "median relL2 with R = 128 <= with R = 0" holds at T = 2048 (simulation
// 0.4471 -> 0.4252, real cache 0.4025 -> 0.3768) but not at T = 4096, where it is decided by noise:
// the window makes 128 of 4096 tokens exact, which lowers a seed's error clearly only when a needle
// (most of the attention mass) falls into it; R = 128 is lower on just 9 of 50 seeds (18 at
// T = 2048), and the median moves up by 1.3e-5: simulation 0.458370 -> 0.458383, real cache
// (16 seeds) 0.427901 -> 0.428029. The K path causes it: with V exact, R = 128 is lower on only
// 14 of 50 seeds at T = 4096 (median 0.178726 -> 0.180761), while with K exact it is lower on 29
// and never higher by more than 3.6e-5. Exact window logits lose the E[e^eps] > 1 inflation that
// noisy logits get, so exact tokens (a needle in the window too) lose mass to the quantised bulk. The pooled error sqrt(sum ||do||^2 / sum ||o||^2) falls at both
// lengths (T = 4096: 0.4487 -> 0.4310, -4 %), so that is asserted at every T, the median at 2048.
#include <catch2/catch.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/portable_rng.hpp"
#include "memattn/cpu/kivi_kv_cache.hpp"
#include "memattn/quant/kivi.hpp"

using namespace memattn;

namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXd;

constexpr int kD = 128, kG = 32, kGV = 32;
constexpr int kSeeds = 50;
constexpr std::uint64_t kSeed0 = 1234;
// T = 2048 in CI (time); MEMATTN_KIVI_ERROR_FULL=1 adds the spec's T = 4096 (about 3x the time).
const std::vector<int>& lengths() {
  static const std::vector<int> l = [] {
    const char* full = std::getenv("MEMATTN_KIVI_ERROR_FULL");
    return full != nullptr && full[0] == '1' ? std::vector<int>{2048, 4096} : std::vector<int>{2048};
  }();
  return l;
}
const double kTau = 1.0 / std::sqrt(static_cast<double>(kD));
constexpr int kResiduals[2] = {0, 128};  // R of every configuration

struct Problem {
  int T = 0;
  Vec q;                   // fp32-representable
  std::vector<Half> k[2];  // [T][D]; k[1] with outlier channels, k[0] the "no outliers" variant
  std::vector<Half> v;     // [T][D]
};

Problem generate(std::uint64_t seed, int T) {
  memattn_test::PortableRng rng(seed);
  Problem p;
  p.T = T;
  std::vector<int> outl, needles;
  while (outl.size() < 4) {
    const int c = rng.below(kD);
    if (std::find(outl.begin(), outl.end(), c) == outl.end()) outl.push_back(c);
  }
  while (needles.size() < 8) {
    const int t = rng.below(T);
    if (std::find(needles.begin(), needles.end(), t) == needles.end()) needles.push_back(t);
  }
  p.q.resize(kD);
  for (int c = 0; c < kD; ++c) p.q[c] = static_cast<float>(rng.normal());
  std::vector<double> mean(kD, 0.0), sd(kD, 1.0);
  for (std::size_t i = 0; i < outl.size(); ++i) {
    mean[outl[i]] = i % 2 == 0 ? 15.0 : -15.0;
    sd[outl[i]] = 3.0;
  }
  const std::size_t n = static_cast<std::size_t>(T) * kD;
  std::vector<double> k1(n), k0(n);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < kD; ++c) {
      const double z = rng.normal();
      k1[t * kD + c] = mean[c] + sd[c] * z;
      k0[t * kD + c] = sd[c] * z;
    }
  for (std::size_t i = 0; i < needles.size(); ++i)
    for (int c = 0; c < kD; ++c) {
      const double nu = i % 2 == 0 ? 0.25 : 1.0;
      k1[needles[i] * kD + c] += nu * p.q[c];
      k0[needles[i] * kD + c] += nu * p.q[c];
    }
  std::vector<double> sigma(static_cast<std::size_t>(T));
  for (auto& s : sigma) s = std::exp(0.5 * rng.normal());
  p.v.resize(n);
  p.k[0].resize(n);
  p.k[1].resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    p.k[0][i] = float_to_half(static_cast<float>(k0[i]));
    p.k[1][i] = float_to_half(static_cast<float>(k1[i]));
  }
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < kD; ++c) p.v[t * kD + c] = float_to_half(static_cast<float>(sigma[t] * rng.normal()));
  return p;
}

TensorView<const float, 3> rows(const float* x, int n) { return make_view<3>(x, {n, 1, kD}); }

Mat to_mat(const std::vector<Half>& x, int T) {
  Mat m(T, kD);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = quant::half_to_double(x[static_cast<std::size_t>(i)]);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Quantisers.

enum class Axis { kExact, kPerChannel, kPerToken };
struct Side {
  Axis axis;
  int bits;
};
bool operator<(const Side& a, const Side& b) { return std::tie(a.axis, a.bits) < std::tie(b.axis, b.bits); }

// Groups whose quantisation reported a flag (none expected: the data are finite fp16). Counted
// here rather than asserted per group, which would cost millions of Catch2 assertions.
int g_flagged_groups = 0;

struct Quantized {
  Mat x;      // canonical fp32 dequantised values, [T][D]
  Mat scale;  // scale of each element's group
};

// K per channel and V per token at `bits`: the block records of quant/kivi.hpp.
void quantize_blocks(const std::vector<Half>& k, const std::vector<Half>& v, int T, int bits, Quantized* kq,
                     Quantized* vq) {
  quant::KvQuantConfig cfg;
  cfg.head_dim = kD;
  cfg.bits_k = cfg.bits_v = bits;
  cfg.group = kG;
  cfg.v_group = kGV;
  cfg.residual = 0;
  REQUIRE(cfg.validate() == Status::kSuccess);
  const quant::BlockLayout lay = quant::block_layout(cfg);
  std::vector<std::uint32_t> rec(lay.bytes / 4);
  auto* bytes = reinterpret_cast<std::uint8_t*>(rec.data());
  kq->x.resize(T, kD);
  kq->scale.resize(T, kD);
  vq->x.resize(T, kD);
  vq->scale.resize(T, kD);
  const Half* krow[kG];
  const Half* vrow[kG];
  for (int j = 0; j < T / kG; ++j) {
    for (int t = 0; t < kG; ++t) {
      krow[t] = &k[static_cast<std::size_t>(j * kG + t) * kD];
      vrow[t] = &v[static_cast<std::size_t>(j * kG + t) * kD];
    }
    g_flagged_groups += quant::quantize_block(cfg, krow, vrow, bytes) != quant::kQuantOk;
    const quant::BlockView bv{bytes, cfg, lay};
    for (int t = 0; t < kG; ++t)
      for (int c = 0; c < kD; ++c) {
        kq->x(j * kG + t, c) = bv.k(t, c);
        kq->scale(j * kG + t, c) = quant::half_to_double(bv.k_meta(c).scale);
        vq->x(j * kG + t, c) = bv.v(t, c);
        vq->scale(j * kG + t, c) = quant::half_to_double(bv.v_meta(t, c / kGV).scale);
      }
  }
}

// Any axis through qmath: kPerToken = G_V consecutive channels of one token, kPerChannel = G
// consecutive tokens of one channel.
Quantized quantize_qmath(const std::vector<Half>& x, int T, Side side) {
  const int L = (1 << side.bits) - 1;
  const bool tok = side.axis == Axis::kPerToken;
  const int n = tok ? kGV : kG, stride = tok ? 1 : kD;
  Quantized out;
  out.x.resize(T, kD);
  out.scale.resize(T, kD);
  const int groups_a = tok ? T : T / kG, groups_b = tok ? kD / kGV : kD;
  for (int a = 0; a < groups_a; ++a)
    for (int b = 0; b < groups_b; ++b) {
      const std::size_t base = tok ? static_cast<std::size_t>(a) * kD + b * kGV : static_cast<std::size_t>(a) * kG * kD + b;
      quant::GroupMeta m;
      g_flagged_groups += quant::group_params(&x[base], n, stride, L, &m) != quant::kQuantOk;
      for (int i = 0; i < n; ++i) {
        const std::size_t e = base + static_cast<std::size_t>(i) * stride;
        out.x.data()[e] = quant::decode(quant::encode(x[e], m, L), m);
        out.scale.data()[e] = quant::half_to_double(m.scale);
      }
    }
  return out;
}


// ---------------------------------------------------------------------------------------------
// Configurations and metrics.

struct Config {
  bool outliers;
  Side k, v;
  int R;
};
bool same(const Config& a, const Config& b) {
  return a.outliers == b.outliers && !(a.k < b.k) && !(b.k < a.k) && !(a.v < b.v) && !(b.v < a.v) && a.R == b.R;
}

constexpr Side kExactSide{Axis::kExact, 0};
Side ch(int b) { return Side{Axis::kPerChannel, b}; }
Side tok(int b) { return Side{Axis::kPerToken, b}; }

std::string label(const Config& c) {
  auto side = [](const char* t, Side s) {
    return std::string(t) + (s.axis == Axis::kExact ? "-exact" : (s.axis == Axis::kPerChannel ? "-ch" : "-tok") +
                                                                     std::to_string(s.bits));
  };
  return side("K", c.k) + "/" + side("V", c.v) + " R=" + std::to_string(c.R) + (c.outliers ? "" : " no-outliers");
}

std::vector<Config> all_configs() {
  std::vector<Config> c;
  for (int b : {2, 4, 8})  // Q-E1 (all axes, bits, R), Q-E4, Q-E5, Q-E7
    for (Axis ka : {Axis::kPerChannel, Axis::kPerToken})
      for (Axis va : {Axis::kPerToken, Axis::kPerChannel})
        for (int R : kResiduals) c.push_back({true, {ka, b}, {va, b}, R});
  c.push_back({false, ch(2), tok(2), 0});  // Q-E4 negative control
  c.push_back({false, tok(2), tok(2), 0});
  for (int b : {2, 4, 8}) {
    c.push_back({true, kExactSide, tok(b), 128});  // Q-E2
    c.push_back({true, kExactSide, tok(b), 0});    // Q-E3
    c.push_back({true, ch(b), kExactSide, 0});
  }
  return c;
}
const std::vector<Config>& configs() {
  static const std::vector<Config> c = all_configs();
  return c;
}
std::size_t config_index(const Config& x) {
  const auto& c = configs();
  for (std::size_t i = 0; i < c.size(); ++i)
    if (same(c[i], x)) return i;
  FAIL("config not in the table");
  return 0;
}

struct Metrics {
  double rel_l2 = 0, tv = 0;
  double elem_ratio = 0, lam_ratio = 0, p_ratio = 0, o_ratio = 0;  // Q-E1: measured / bound
  double do2 = 0, pred = 0;                                         // Q-E2: ||do||^2 and its prediction
  double o2 = 0;                                                    // ||o||^2
};

Vec softmax(const Vec& lam) {
  const Vec e = (lam.array() - lam.maxCoeff()).exp().matrix();
  return e / e.sum();
}
double ratio(double measured, double bound) {
  if (measured == 0) return 0;
  return bound > 0 ? measured / bound : INFINITY;
}

// Logit errors of one K version: dlam_t = tau q.(k^_t - k_t), delta_t = tau sum_c |q_c| e_tc.
struct KStat {
  Vec dlam, delta;
  double elem_ratio = 0;
};
// The V error of one V version: dv = V^ - V, row sums of s^2 (noise model), per-channel largest
// element bound over the quantised rows for each residual R.
struct VStat {
  Mat dv;
  Vec s2;
  Vec bmax[2];  // for kResiduals[i]
  double elem_ratio = 0;
};

// Bound on |x - x^| for the canonical fp32 value x^ (see the header).
double element_bound(double xhat, double s) { return s * (0.5 + 0x1.0p-40) + std::abs(xhat) * 0x1.0p-23; }

std::vector<Metrics> evaluate(const Problem& p) {
  const int T = p.T;
  const Mat K[2] = {to_mat(p.k[0], T), to_mat(p.k[1], T)};
  const Mat V = to_mat(p.v, T);
  Vec lam[2], prob[2], out[2];
  for (int o = 0; o < 2; ++o) {
    lam[o] = kTau * (K[o] * p.q);
    prob[o] = softmax(lam[o]);
    out[o] = V.transpose() * prob[o];
  }
  const Vec vrange = (V.colwise().maxCoeff() - V.colwise().minCoeff()).transpose();

  // Each version is quantised once and reduced to its statistics at once (memory stays small).
  std::map<Side, Quantized> vq;  // V per token from the block records, until used
  std::map<std::pair<int, Side>, KStat> kstat;
  std::map<Side, VStat> vstat;
  auto k_stat = [&](int o, Side s) -> const KStat& {
    auto it = kstat.find({o, s});
    if (it != kstat.end()) return it->second;
    KStat st;
    st.dlam = Vec::Zero(T);
    st.delta = Vec::Zero(T);
    if (s.axis != Axis::kExact) {
      Quantized q;
      if (s.axis == Axis::kPerChannel) {
        Quantized vv;
        quantize_blocks(p.k[o], p.v, T, s.bits, &q, &vv);
        if (o == 1) vq[tok(s.bits)] = std::move(vv);
      } else {
        q = quantize_qmath(p.k[o], T, s);
      }
      for (int t = 0; t < T; ++t) {
        double dl = 0, de = 0;
        for (int c = 0; c < kD; ++c) {
          const double dx = q.x(t, c) - K[o](t, c), e = element_bound(q.x(t, c), q.scale(t, c));
          dl += p.q[c] * dx;
          de += std::abs(p.q[c]) * e;
          st.elem_ratio = std::max(st.elem_ratio, std::abs(dx) / e);
        }
        st.dlam[t] = kTau * dl;
        st.delta[t] = kTau * de;
      }
    }
    return kstat[{o, s}] = std::move(st);
  };
  auto v_stat = [&](Side s) -> const VStat& {
    auto it = vstat.find(s);
    if (it != vstat.end()) return it->second;
    VStat st;
    st.dv = Mat::Zero(T, kD);
    st.s2 = Vec::Zero(T);
    for (Vec& b : st.bmax) b = Vec::Zero(kD);
    if (s.axis != Axis::kExact) {
      if (s.axis == Axis::kPerToken) k_stat(1, ch(s.bits));  // the block records quantise V per token too
      Quantized q = s.axis == Axis::kPerToken ? std::move(vq.at(s)) : quantize_qmath(p.v, T, s);
      vq.erase(s);
      st.dv = q.x - V;
      st.s2 = q.scale.cwiseAbs2().rowwise().sum();
      const Mat e = q.x.binaryExpr(q.scale, [](double x, double sc) { return element_bound(x, sc); });
      st.elem_ratio = (st.dv.cwiseAbs().array() / e.array()).maxCoeff();
      for (int i = 0; i < 2; ++i) st.bmax[i] = e.topRows(T - kResiduals[i]).colwise().maxCoeff().transpose();
    }
    return vstat[s] = std::move(st);
  };

  std::vector<Metrics> res;
  for (const Config& c : configs()) {
    const int o = c.outliers ? 1 : 0;
    const int nq = T - c.R;  // T, R multiples of G: the newest R tokens are the ring
    const KStat& ks = k_stat(o, c.k);
    const VStat& vs = v_stat(c.v);
    REQUIRE((c.R == kResiduals[0] || c.R == kResiduals[1]));
    Vec dlam = ks.dlam;
    dlam.tail(c.R).setZero();
    const double delta = nq > 0 ? ks.delta.head(nq).maxCoeff() : 0.0;
    const Vec phat = softmax(lam[o] + dlam);
    const Vec dp = phat - prob[o];
    const Vec dout = vs.dv.topRows(nq).transpose() * phat.head(nq) + V.transpose() * dp;
    Metrics m;
    m.rel_l2 = dout.norm() / out[o].norm();
    m.tv = 0.5 * dp.lpNorm<1>();
    m.elem_ratio = std::max(ks.elem_ratio, vs.elem_ratio);
    for (int t = 0; t < nq; ++t) m.lam_ratio = std::max(m.lam_ratio, ratio(std::abs(dlam[t]), ks.delta[t]));
    const double growth = std::expm1(2 * delta);
    m.p_ratio = ratio(dp.lpNorm<1>(), growth);
    const Vec& vmax = vs.bmax[c.R == kResiduals[0] ? 0 : 1];
    for (int ch_ = 0; ch_ < kD; ++ch_)
      m.o_ratio = std::max(m.o_ratio, ratio(std::abs(dout[ch_]), 0.5 * growth * vrange[ch_] + vmax[ch_]));
    m.do2 = dout.squaredNorm();
    m.o2 = out[o].squaredNorm();
    m.pred = prob[o].head(nq).cwiseAbs2().dot(vs.s2.head(nq)) / 12.0;
    res.push_back(m);
  }
  return res;
}

// table()[length index][config index][seed]
using Table = std::vector<std::vector<std::vector<Metrics>>>;
const Table& table() {
  static const Table t = [] {
    Table r(lengths().size(), std::vector<std::vector<Metrics>>(configs().size()));
    for (std::size_t li = 0; li < lengths().size(); ++li)
      for (int i = 0; i < kSeeds; ++i) {
        const std::vector<Metrics> m = evaluate(generate(kSeed0 + static_cast<std::uint64_t>(i), lengths()[li]));
        for (std::size_t c = 0; c < m.size(); ++c) r[li][c].push_back(m[c]);
      }
    return r;
  }();
  return t;
}

template <class F>
std::vector<double> column(std::size_t li, const Config& c, F f) {
  std::vector<double> x;
  for (const Metrics& m : table()[li][config_index(c)]) x.push_back(f(m));
  return x;
}
double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const std::size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}
double median_rel_l2(std::size_t li, const Config& c) {
  return median(column(li, c, [](const Metrics& m) { return m.rel_l2; }));
}
double median_tv(std::size_t li, const Config& c) {
  return median(column(li, c, [](const Metrics& m) { return m.tv; }));
}

}  // namespace

TEST_CASE("generator: portable RNG and the normative data", "[quant][error]") {
  // SplitMix64 reference outputs for seed 1234567 (Vigna's splitmix64.c test values).
  memattn_test::PortableRng rng(1234567);
  for (std::uint64_t want : {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                             4593380528125082431ull, 16408922859458223821ull})
    CHECK(rng.next_u64() == want);
  // First draws of seed 1234: a Box-Muller pair (libm may differ by an ulp), then a uniform.
  memattn_test::PortableRng r1234(1234);
  CHECK(r1234.normal() == Approx(-0.66106731351334813).epsilon(1e-14));
  CHECK(r1234.normal() == Approx(-0.43656183433747636).epsilon(1e-14));
  CHECK(r1234.uniform() == 0.20213287431010984);
  // Moments of the normals and the generator's structure.
  memattn_test::PortableRng g(7);
  double s1 = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double z = g.normal();
    s1 += z;
    s2 += z * z;
  }
  CHECK(std::abs(s1 / n) < 0.01);
  CHECK(std::abs(s2 / n - 1) < 0.02);
  const Problem p = generate(kSeed0, 2048);
  const Mat K1 = to_mat(p.k[1], p.T), K0 = to_mat(p.k[0], p.T);
  const Vec mean = K1.colwise().mean().transpose();
  int outliers = 0;
  for (int c = 0; c < kD; ++c) outliers += std::abs(mean[c]) > 10;
  CHECK(outliers == 4);
  CHECK(K0.colwise().mean().cwiseAbs().maxCoeff() < 1.0);
}

TEST_CASE("block records and qmath agree on the generator's data", "[quant][error]") {
  const Problem p = generate(kSeed0 + 1, 2048);
  for (int b : {2, 4, 8}) {
    Quantized kk, vv;
    quantize_blocks(p.k[1], p.v, p.T, b, &kk, &vv);
    const Quantized k2 = quantize_qmath(p.k[1], p.T, ch(b)), v2 = quantize_qmath(p.v, p.T, tok(b));
    CHECK(kk.x == k2.x);
    CHECK(kk.scale == k2.scale);
    CHECK(vv.x == v2.x);
    CHECK(vv.scale == v2.scale);
  }
}

TEST_CASE("Q-E1: hard error bounds hold for every seed, config and length", "[quant][error]") {
  const char* names[4] = {"element", "logit", "||dp||_1", "output"};
  for (std::size_t li = 0; li < lengths().size(); ++li) {
    double worst[4] = {0, 0, 0, 0};
    std::size_t where[4] = {0, 0, 0, 0};
    for (std::size_t c = 0; c < configs().size(); ++c)
      for (const Metrics& m : table()[li][c]) {
        const double r[4] = {m.elem_ratio, m.lam_ratio, m.p_ratio, m.o_ratio};
        for (int i = 0; i < 4; ++i)
          if (r[i] > worst[i]) {
            worst[i] = r[i];
            where[i] = c;
          }
      }
    for (int i = 0; i < 4; ++i)
      std::printf("Q-E1 T=%d max measured/bound %-8s %.4f (%s)\n", lengths()[li], names[i], worst[i],
                  label(configs()[where[i]]).c_str());
    INFO("T " << lengths()[li]);
    for (double w : worst) CHECK(w <= 1.0);
    CHECK(g_flagged_groups == 0);
  }
}

TEST_CASE("Q-E2: the V noise model predicts the output error within [0.7, 1.3]", "[quant][error]") {
  for (std::size_t li = 0; li < lengths().size(); ++li)
    for (int b : {2, 4, 8}) {
      const Config c{true, kExactSide, tok(b), 128};
      const auto do2 = column(li, c, [](const Metrics& m) { return m.do2; });
      const auto pred = column(li, c, [](const Metrics& m) { return m.pred; });
      double sd = 0, sp = 0;
      std::vector<double> per_seed;
      for (std::size_t i = 0; i < do2.size(); ++i) {
        sd += do2[i];
        sp += pred[i];
        per_seed.push_back(std::sqrt(do2[i] / pred[i]));
      }
      const double r = std::sqrt(sd / sp);
      std::printf("Q-E2 T=%d V%d: ratio %.4f (per seed %.3f..%.3f, median %.3f)\n", lengths()[li], b, r,
                  *std::min_element(per_seed.begin(), per_seed.end()),
                  *std::max_element(per_seed.begin(), per_seed.end()), median(per_seed));
      INFO("T " << lengths()[li] << " bits " << b << " ratio " << r);
      CHECK(r >= 0.7);
      CHECK(r <= 1.3);
    }
}

TEST_CASE("Q-E3: error scales with the step size (+-35%)", "[quant][error]") {
  for (std::size_t li = 0; li < lengths().size(); ++li)
    for (int kpath = 0; kpath < 2; ++kpath) {
      auto cfg = [&](int b) {
        return kpath ? Config{true, ch(b), kExactSide, 0} : Config{true, kExactSide, tok(b), 0};
      };
      const double e2 = median_rel_l2(li, cfg(2)), e4 = median_rel_l2(li, cfg(4)), e8 = median_rel_l2(li, cfg(8));
      std::printf("Q-E3 T=%d %s: median relL2 2b %.5f 4b %.6f 8b %.7f; 2b/4b %.3f (5 +-35%%) 4b/8b %.3f (17 +-35%%)\n",
                  lengths()[li], kpath ? "K per-channel, V exact" : "K exact, V per-token", e2, e4, e8, e2 / e4,
                  e4 / e8);
      INFO("T " << lengths()[li] << (kpath ? " K path" : " V path") << " 2b/4b " << e2 / e4 << " 4b/8b " << e4 / e8);
      CHECK(e2 / e4 >= 5 * 0.65);
      CHECK(e2 / e4 <= 5 * 1.35);
      CHECK(e4 / e8 >= 17 * 0.65);
      CHECK(e4 / e8 <= 17 * 1.35);
    }
}

TEST_CASE("Q-E4: per-channel K beats per-token K by >= 2x with outlier channels, not without", "[quant][error]") {
  for (std::size_t li = 0; li < lengths().size(); ++li) {
    const Config kivi{true, ch(2), tok(2), 0}, tt{true, tok(2), tok(2), 0};
    const Config kivi0{false, ch(2), tok(2), 0}, tt0{false, tok(2), tok(2), 0};
    const double r = median_rel_l2(li, tt) / median_rel_l2(li, kivi);
    const double tv = median_tv(li, tt) / median_tv(li, kivi);
    const double r0 = median_rel_l2(li, tt0) / median_rel_l2(li, kivi0);
    std::printf("Q-E4 T=%d outliers: relL2 K-ch/V-tok %.4f vs K-tok/V-tok %.4f (x%.2f), TV %.4f vs %.4f (x%.2f); "
                "no outliers: relL2 %.4f vs %.4f (x%.3f)\n",
                lengths()[li], median_rel_l2(li, kivi), median_rel_l2(li, tt), r, median_tv(li, kivi),
                median_tv(li, tt), tv, median_rel_l2(li, kivi0), median_rel_l2(li, tt0), r0);
    INFO("T " << lengths()[li] << " relL2 ratio " << r << " TV ratio " << tv << " control " << r0);
    CHECK(r >= 2.0);
    CHECK(tv >= 2.0);
    CHECK(r0 <= 1.5);
  }
}

TEST_CASE("Q-E5: the residual window lowers the error and its tokens are exact (real cache)", "[quant][error]") {
  // The real cpu::KiviKvCache, K2V2: T-1 tokens appended, then the decode step of token T-1.
  constexpr int kCacheSeeds = 16;
  for (int T : lengths()) {
    std::vector<double> err[2];
    double cache_d2[2] = {0, 0}, cache_o2 = 0;
    for (int i = 0; i < kCacheSeeds; ++i) {
      const Problem p = generate(kSeed0 + static_cast<std::uint64_t>(i), T);
      const Mat K = to_mat(p.k[1], T), V = to_mat(p.v, T);
      const Vec o = V.transpose() * softmax(kTau * (K * p.q));
      std::vector<float> kf(p.k[1].size()), vf(p.v.size()), qf(kD), out(kD);
      for (std::size_t e = 0; e < kf.size(); ++e) {
        kf[e] = half_to_float(p.k[1][e]);
        vf[e] = half_to_float(p.v[e]);
      }
      for (int c = 0; c < kD; ++c) qf[c] = static_cast<float>(p.q[c]);
      for (int ri = 0; ri < 2; ++ri) {
        const int R = ri ? 128 : 0;
        cache::CacheShape s;
        s.layers = s.q_heads = s.kv_heads = 1;
        s.head_dim = kD;
        s.max_tokens = T;
        quant::KvQuantConfig cfg = quant::Kivi<2, 2, kG>::config(kD, R);
        std::unique_ptr<cpu::KiviKvCache> cache;
        REQUIRE(cpu::KiviKvCache::create(s, cfg, Executor{}, &cache) == Status::kSuccess);
        REQUIRE(cache->append(0, 0, rows(kf.data(), T - 1), rows(vf.data(), T - 1)) ==
                Status::kSuccess);
        REQUIRE(cache->end_chunk(0, {}) == Status::kSuccess);
        const std::size_t last = static_cast<std::size_t>(T - 1) * kD;
        REQUIRE(cache->attend(0, 0, rows(qf.data(), 1), rows(kf.data() + last, 1), rows(vf.data() + last, 1),
                              make_view<3>(out.data(), {1, 1, kD})) ==
                Status::kSuccess);
        REQUIRE(cache->end_chunk(0, {}) == Status::kSuccess);
        REQUIRE(cache->quantized_tokens(0, 0) == T - R);
        for (std::int64_t t = T - R; t < T; ++t) {  // ring tokens: bit-equal to the input
          REQUIRE(std::equal(cache->ring_k(0, 0, 0, t), cache->ring_k(0, 0, 0, t) + kD, &p.k[1][t * kD],
                             [](Half a, Half b) { return a.bits == b.bits; }));
          REQUIRE(std::equal(cache->ring_v(0, 0, 0, t), cache->ring_v(0, 0, 0, t) + kD, &p.v[t * kD],
                             [](Half a, Half b) { return a.bits == b.bits; }));
        }
        Vec got(kD);
        for (int c = 0; c < kD; ++c) got[c] = out[c];
        err[ri].push_back((got - o).norm() / o.norm());
        cache_d2[ri] += (got - o).squaredNorm();
        cache_o2 += ri == 0 ? o.squaredNorm() : 0.0;
      }
    }
    const double e0 = median(err[0]), e128 = median(err[1]);
    const std::size_t li = T == lengths()[0] ? 0 : 1;
    const double s0 = median_rel_l2(li, {true, ch(2), tok(2), 0}), s128 = median_rel_l2(li, {true, ch(2), tok(2), 128});
    // Paired view of the simulation: pooled relL2 and the seeds the window helps.
    const auto& m0 = table()[li][config_index({true, ch(2), tok(2), 0})];
    const auto& m128 = table()[li][config_index({true, ch(2), tok(2), 128})];
    double d0 = 0, d128 = 0, o2 = 0;
    int better = 0;
    for (std::size_t i = 0; i < m0.size(); ++i) {
      d0 += m0[i].do2;
      d128 += m128[i].do2;
      o2 += m0[i].o2;
      better += m128[i].rel_l2 < m0[i].rel_l2;
    }
    std::printf("Q-E5 T=%d KIVI-2 relL2, R=0 -> R=128: cache (%d seeds) median %.6f -> %.6f, pooled %.6f -> %.6f; "
                "simulation (%d seeds) median %.6f -> %.6f, pooled %.6f -> %.6f, lower on %d seeds\n",
                T, kCacheSeeds, e0, e128, std::sqrt(cache_d2[0] / cache_o2), std::sqrt(cache_d2[1] / cache_o2), kSeeds,
                s0, s128, std::sqrt(d0 / o2), std::sqrt(d128 / o2), better);
    INFO("T " << T);
    CHECK(cache_d2[1] <= cache_d2[0]);
    CHECK(d128 <= d0);
    if (T == 2048) {  // the spec's median criterion; not robust at T = 4096 (see the header)
      CHECK(e128 <= e0);
      CHECK(s128 <= s0);
    }
  }
}

TEST_CASE("Q-E7: golden medians of KIVI-2, KIVI-4, K8V8 (seeds 1234..1283, R = 128)", "[quant][error]") {
  struct Golden {
    int T, bits;
    double rel_l2, tv;
  };
  const Golden golden[] = {
      {2048, 2, 0.42523875900838193, 0.092686473965011312},
      {2048, 4, 0.087058727530361826, 0.018289429609471705},
      {2048, 8, 0.0051255605481935387, 0.0011923244532424833},
      {4096, 2, 0.45838259580930529, 0.09433474842966956},  // MEMATTN_KIVI_ERROR_FULL=1 only
      {4096, 4, 0.085567548990042638, 0.018343152303064991},
      {4096, 8, 0.0054209535596295988, 0.0012991046140291198},
  };
  for (const Golden& g : golden) {
    if (std::find(lengths().begin(), lengths().end(), g.T) == lengths().end()) continue;
    const std::size_t li = g.T == lengths()[0] ? 0 : 1;
    const Config c{true, ch(g.bits), tok(g.bits), 128};
    const double r = median_rel_l2(li, c), tv = median_tv(li, c);
    std::printf("Q-E7 T=%d K%dV%d: median relL2 %.17g TV %.17g\n", g.T, g.bits, g.bits, r, tv);
    INFO("T " << g.T << " bits " << g.bits);
    CHECK(r == Approx(g.rel_l2).epsilon(1e-9));
    CHECK(tv == Approx(g.tv).epsilon(1e-9));
  }
}
