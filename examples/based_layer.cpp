// A BASED layer on the CPU (arXiv 2402.18668): Taylor-feature linear attention (feature dim 16,
// α = 1/4, normalised, eps 1e-12: 153 features per head in the symmetric form instead of 273)
// plus a sliding-window softmax over the previous 64 tokens, summed into one output. Prefill of a
// prompt, then decode with the linear state in an fp32 pool and the window in a ring buffer;
// the decoded outputs are checked against a prefill over the whole sequence.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <memattn/memattn.hpp>

using memattn::BFloat16;

int main() {
  const std::int64_t H = 4, Df = 16, D = 64, T = 200, prompt = 150, W = 64, R = 80;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  auto randn = [&](std::size_t n) {
    std::vector<BFloat16> v(n);
    for (auto& x : v) x = memattn::from_float<BFloat16>(nd(rng));
    return v;
  };
  const auto qf = randn(static_cast<std::size_t>(T * H * Df)), kf = randn(qf.size());  // linear branch
  const auto qw = randn(static_cast<std::size_t>(T * H * D)), kw = randn(qw.size());   // window branch
  const auto v = randn(qw.size());                                                      // shared values
  const std::int64_t kphi = memattn::linear::feature_dim(memattn::linear::FeatureMap::kTaylor2, static_cast<int>(Df));

  auto layer = [&](std::int64_t r0, std::int64_t r1, std::vector<BFloat16>& o, std::vector<float>& S, std::vector<float>& z,
                   std::vector<BFloat16>& rk, std::vector<BFloat16>& rv, std::int32_t* pos) {
    memattn::linear::BasedLayerArgs<BFloat16> b;
    auto& l = b.linear;
    l.q = memattn::make_view<3>(qf.data() + r0 * H * Df, {r1 - r0, H, Df});
    l.k = memattn::make_view<3>(kf.data() + r0 * H * Df, {r1 - r0, H, Df});
    l.v = memattn::make_view<3>(v.data() + r0 * H * D, {r1 - r0, H, D});
    l.o = memattn::make_view<3>(o.data() + r0 * H * D, {r1 - r0, H, D});
    l.seq.num_seqs = 1;
    l.feature_map = memattn::linear::FeatureMap::kTaylor2;
    l.alpha = 0.25f;
    l.normalize = true;
    l.eps = 1e-12f;
    l.scale = 1.f;
    l.state.pool = S.data();
    l.state.num_slots = 1;
    l.state.z_pool = z.data();
    auto& w = b.window;
    w.q = memattn::make_view<3>(qw.data() + r0 * H * D, {r1 - r0, H, D});
    w.k = memattn::make_view<3>(kw.data() + r0 * H * D, {r1 - r0, H, D});
    w.v = l.v;
    w.window = static_cast<int>(W);
    w.scale = 1.f / std::sqrt(static_cast<float>(D));
    w.ring_k = memattn::make_view<4>(rk.data(), {1, R, H, D});
    w.ring_v = memattn::make_view<4>(rv.data(), {1, R, H, D});
    *pos = static_cast<std::int32_t>(r0);
    w.seq_pos = pos;
    return b;
  };
  struct Buffers {
    std::vector<BFloat16> o, rk, rv;
    std::vector<float> S, z;
    std::int32_t pos = 0;
  };
  auto fresh = [&] {
    Buffers x;
    x.o.assign(static_cast<std::size_t>(T * H * D), BFloat16{0});
    x.rk.assign(static_cast<std::size_t>(R * H * D), BFloat16{0});
    x.rv = x.rk;
    x.S.assign(static_cast<std::size_t>(H * kphi * D), 0.f);
    x.z.assign(static_cast<std::size_t>(H * kphi), 0.f);
    return x;
  };
  Buffers ref = fresh(), run = fresh();
  memattn::Status st = memattn::cpu::based_layer_prefill(layer(0, T, ref.o, ref.S, ref.z, ref.rk, ref.rv, &ref.pos));
  if (memattn::ok(st)) st = memattn::cpu::based_layer_prefill(layer(0, prompt, run.o, run.S, run.z, run.rk, run.rv, &run.pos));
  for (std::int64_t t = prompt; t < T && memattn::ok(st); ++t)
    st = memattn::cpu::based_layer_decode(layer(t, t + 1, run.o, run.S, run.z, run.rk, run.rv, &run.pos));
  if (!memattn::ok(st)) return std::fprintf(stderr, "based layer: %s\n", memattn::status_message(st)), 1;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.o.size(); ++i) {
    const double a = memattn::to_float(run.o[i]), b = memattn::to_float(ref.o[i]);
    num += (a - b) * (a - b);
    den += b * b;
  }
  const double e = std::sqrt(num / den);
  std::printf("BASED layer (Taylor d=%lld -> %lld features, window %lld): prefill(%lld) + %lld decode steps vs "
              "prefill(%lld): relRMS %.2e; state %lld KiB per head + ring of %lld tokens\n",
              static_cast<long long>(Df), static_cast<long long>(kphi), static_cast<long long>(W),
              static_cast<long long>(prompt), static_cast<long long>(T - prompt), static_cast<long long>(T), e,
              static_cast<long long>(kphi * D * 4 / 1024), static_cast<long long>(R));
  return e < 5e-3 ? 0 : 1;
}
