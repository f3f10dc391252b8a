// Linear attention companions on the CPU: sliding-window softmax (T11, ring continuation), the
// BASED layer, mixture of memories (T12), host helpers (T14) and bad inputs (Status, nothing
// written).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

#include "common/linear_problem.hpp"
#include "memattn/cpu/linear_attention.hpp"
#include "memattn/cpu/mom.hpp"
#include "memattn/cpu/sliding_window.hpp"
#include "memattn/linear/linear_plan.hpp"

using memattn::BFloat16;
using memattn::Status;
using memattn::linear::FeatureMap;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;

namespace {

template <class T>
memattn::linear::SlidingWindowArgs<T> window_args(LinearProblem<T>& p, int W) {
  auto la = p.host_args();
  memattn::linear::SlidingWindowArgs<T> w;
  w.q = la.q;
  w.k = la.k;
  w.v = la.v;
  w.o = la.o;
  w.seq = la.seq;
  w.window = W;
  w.scale = la.scale;
  return w;
}

}  // namespace

TEST_CASE("sliding window: against fp64, W in {1, 64, 128}, GQA, varlen", "[linear][swa][T11]") {
  const int W = GENERATE(1, 64, 128);
  const bool varlen = GENERATE(false, true);
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.varlen = varlen;
  c.lens = {1, 65, 300};
  c.stateful = false;
  LinearProblem<BFloat16> p(c);
  auto w = window_args(p, W);
  const auto ref = memattn_test::swa_f64(w);
  REQUIRE(memattn::cpu::sliding_window_attention(w) == Status::kSuccess);
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(p.o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(5e-3));
}

TEST_CASE("sliding window: prefill + ring decode (wrap-around) == one prefill", "[linear][swa][T11]") {
  const int W = GENERATE(1, 64);
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {300};
  c.stateful = false;
  LinearProblem<BFloat16> p(c), whole(c);
  auto wfull = window_args(whole, W);
  const auto ref = memattn_test::swa_f64(wfull);
  const std::int64_t R = W + 3, t0 = 130;
  std::vector<BFloat16> rk(static_cast<std::size_t>(2 * R * c.Hk * c.Dk)), rv(static_cast<std::size_t>(2 * R * c.Hk * c.Dv));
  auto w = window_args(p, W);
  w.ring_k = memattn::make_view<4>(rk.data(), {2, R, c.Hk, c.Dk});
  w.ring_v = memattn::make_view<4>(rv.data(), {2, R, c.Hk, c.Dv});
  std::int32_t slot = 1, pos = 0;
  w.ring_slot = &slot;
  w.seq_pos = &pos;
  auto part = [&](std::int64_t r0, std::int64_t r1) {
    auto x = w;
    x.q.data += r0 * x.q.stride[0];
    x.k.data += r0 * x.k.stride[0];
    x.v.data += r0 * x.v.stride[0];
    x.o.data += r0 * x.o.stride[0];
    x.q.shape[0] = x.k.shape[0] = x.v.shape[0] = x.o.shape[0] = r1 - r0;
    x.seq.seq_lens = nullptr;
    pos = static_cast<std::int32_t>(r0);
    return memattn::cpu::sliding_window_attention(x);
  };
  REQUIRE(part(0, t0) == Status::kSuccess);
  for (std::int64_t t = t0; t < 290; ++t) REQUIRE(part(t, t + 1) == Status::kSuccess);
  REQUIRE(part(290, 300) == Status::kSuccess);
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(p.o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(5e-3));
}

TEST_CASE("BASED layer: Taylor linear attention + sliding window, prefill and decode", "[linear][based]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 2;
  c.Dk = 16;
  c.Dv = 64;
  c.fm = FeatureMap::kTaylor2;
  c.normalize = true;
  c.eps = 1e-12f;
  c.lens = {200};
  LinearProblem<BFloat16> lin(c), based(c);
  LinearConfig cw = c;
  cw.Dk = 64;
  cw.stateful = false;
  cw.seed = 9;
  LinearProblem<BFloat16> win(cw);
  const auto lref = lin.reference();
  auto wa = window_args(win, 64);
  const auto wref = memattn_test::swa_f64(wa);
  memattn::linear::BasedLayerArgs<BFloat16> b;
  b.linear = based.host_args();
  b.window = wa;
  b.window.o = {};
  b.window.seq = {};
  // Prefill of 150 tokens (ring keeps the tail), then 50 decode steps.
  const std::int64_t R = 80;
  std::vector<BFloat16> rk(static_cast<std::size_t>(R * 2 * 64)), rv(rk.size());
  b.window.ring_k = memattn::make_view<4>(rk.data(), {1, R, 2, 64});
  b.window.ring_v = memattn::make_view<4>(rv.data(), {1, R, 2, 64});
  std::int32_t slot = 0, pos = 0;
  b.window.ring_slot = &slot;
  b.window.seq_pos = &pos;
  auto part = [&](std::int64_t r0, std::int64_t r1, bool decode) {
    auto x = b;
    for (auto* v : {&x.linear.q, &x.linear.k, &x.linear.v, &x.window.q, &x.window.k, &x.window.v}) {
      v->data += r0 * v->stride[0];
      v->shape[0] = r1 - r0;
    }
    x.linear.o.data += r0 * x.linear.o.stride[0];
    x.linear.o.shape[0] = r1 - r0;
    x.linear.seq.seq_lens = nullptr;
    pos = static_cast<std::int32_t>(r0);
    return decode ? memattn::cpu::based_layer_decode(x) : memattn::cpu::based_layer_prefill(x);
  };
  REQUIRE(part(0, 150, false) == Status::kSuccess);
  for (std::int64_t t = 150; t < 200; ++t) REQUIRE(part(t, t + 1, true) == Status::kSuccess);
  std::vector<double> ref(lref.o.size());
  for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = lref.o[i] + wref[i];
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(based.o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(5e-3));
  REQUIRE(based.compare_state(based.pool, lref).within(1e-4));
}

TEST_CASE("MoM: route matches a stable sort; end to end against fp64; empty memory untouched", "[linear][mom][T12]") {
  const bool shared = GENERATE(false, true);
  constexpr int M = 4, K = 2, N = 2, Hq = 2, Hk = 1, D = 16;
  const std::vector<std::int32_t> cu{0, 40, 63};
  const std::int64_t rows = 65;  // 2 padding rows
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1), sd(0, 8);
  std::vector<float> logits(static_cast<std::size_t>(rows * M));
  for (auto& x : logits) x = nd(rng);
  for (std::int64_t t = 0; t < rows; ++t) logits[static_cast<std::size_t>(t * M + 3)] = -100.f;  // memory 3 never chosen
  for (std::int64_t t = 0; t < rows; t += 5) logits[static_cast<std::size_t>(t * M + 1)] = logits[static_cast<std::size_t>(t * M + 0)];  // ties
  logits[static_cast<std::size_t>(63 * M)] = NAN;  // padding row: never read
  std::vector<std::int32_t> mem_slots(N * M);
  std::iota(mem_slots.begin(), mem_slots.end(), 0);
  std::vector<std::int32_t> idx(rows * K), pos(rows * K), perm(rows * K), seg_cu(M * N + 1), seg_slot(M * N);
  std::vector<float> w(rows * K);
  memattn::linear::MomRouteArgs ra;
  ra.router_logits = logits.data();
  ra.rows = rows;
  ra.num_memories = M;
  ra.topk = K;
  ra.seq.cu_seqlens = cu.data();
  ra.seq.num_seqs = N;
  ra.mem_slots = mem_slots.data();
  ra.topk_idx = idx.data();
  ra.topk_w = w.data();
  ra.perm = perm.data();
  ra.pos = pos.data();
  ra.seg_cu = seg_cu.data();
  ra.seg_slot = seg_slot.data();
  REQUIRE(memattn::cpu::mom_route(ra) == Status::kSuccess);
  // Expected order: stable sort of (segment, token, rank) keys.
  std::vector<std::pair<int, int>> keys;  // (segment, t*K + r)
  for (int n = 0; n < N; ++n)
    for (int t = cu[n]; t < cu[n + 1]; ++t) {
      std::vector<int> order(M);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return logits[t * M + x] > logits[t * M + y]; });
      for (int r = 0; r < K; ++r) {
        REQUIRE(idx[static_cast<std::size_t>(t * K + r)] == order[r]);
        keys.push_back({order[r] * N + n, t * K + r});
      }
    }
  std::stable_sort(keys.begin(), keys.end(), [](auto x, auto y) { return x.first < y.first; });
  REQUIRE(seg_cu[M * N] == static_cast<int>(keys.size()));
  for (std::size_t i = 0; i < keys.size(); ++i) {
    REQUIRE(perm[i] == keys[i].second / K);
    REQUIRE(pos[static_cast<std::size_t>(keys[i].second)] == static_cast<int>(i));
  }
  REQUIRE(idx[63 * K] == -1);
  REQUIRE(pos[64 * K + 1] == -1);
  for (int s = 0; s < M * N; ++s) REQUIRE(seg_slot[s] == mem_slots[(s % N) * M + s / N]);

  // Per-memory projections (the caller's job): k^m, v^m for every token, q shared.
  auto randv = [&](std::size_t n) {
    std::vector<BFloat16> x(n);
    for (auto& e : x) e = memattn::from_float<BFloat16>(nd(rng));
    return x;
  };
  const auto q = randv(rows * Hq * D);
  std::vector<std::vector<BFloat16>> km, vm;
  for (int m = 0; m <= M; ++m) {  // m == M: the shared memory
    km.push_back(randv(rows * Hk * D));
    vm.push_back(randv(rows * Hk * D));
  }
  const std::int64_t R = seg_cu[M * N], sf = Hk * D * D;
  std::vector<BFloat16> qr(static_cast<std::size_t>(R * Hq * D)), kr(static_cast<std::size_t>(R * Hk * D)), vr(kr.size()),
      orr(static_cast<std::size_t>(R * Hq * D));
  memattn::linear::GatherRowsArgs<BFloat16> g;
  g.src = memattn::make_view<3>(q.data(), {rows, Hq, D});
  g.dst = memattn::make_view<3>(qr.data(), {R, Hq, D});
  g.perm = perm.data();
  REQUIRE(memattn::cpu::gather_rows(g) == Status::kSuccess);
  for (std::int64_t i = 0; i < R; ++i) {
    const int seg = static_cast<int>(std::upper_bound(seg_cu.begin(), seg_cu.end(), i) - seg_cu.begin() - 1);
    const int m = seg / N;
    std::copy_n(&km[m][static_cast<std::size_t>(perm[i] * Hk * D)], Hk * D, &kr[static_cast<std::size_t>(i * Hk * D)]);
    std::copy_n(&vm[m][static_cast<std::size_t>(perm[i] * Hk * D)], Hk * D, &vr[static_cast<std::size_t>(i * Hk * D)]);
  }
  std::vector<float> pool(static_cast<std::size_t>((M * N + N) * sf));
  for (auto& x : pool) x = sd(rng);
  const auto pool0 = pool;
  const std::vector<float> decay{0.02f};
  memattn::linear::LinearArgs<BFloat16> la;
  la.q = memattn::make_view<3>(static_cast<const BFloat16*>(qr.data()), {R, Hq, D});
  la.k = memattn::make_view<3>(static_cast<const BFloat16*>(kr.data()), {R, Hk, D});
  la.v = memattn::make_view<3>(static_cast<const BFloat16*>(vr.data()), {R, Hk, D});
  la.o = memattn::make_view<3>(orr.data(), {R, Hq, D});
  la.seq.cu_seqlens = seg_cu.data();
  la.seq.num_seqs = M * N;
  la.state.pool = pool.data();
  la.state.num_slots = M * N + N;
  la.state.slot_in = seg_slot.data();
  la.decay_rate = decay.data();
  la.scale = 0.25f;
  REQUIRE(memattn::cpu::linear_prefill(la) == Status::kSuccess);
  std::vector<BFloat16> osh(static_cast<std::size_t>(rows * Hq * D)), o(osh.size(), memattn::from_float<BFloat16>(7.f));
  if (shared) {
    memattn::linear::LinearArgs<BFloat16> sa = la;
    sa.q = memattn::make_view<3>(static_cast<const BFloat16*>(q.data()), {rows, Hq, D});
    sa.k = memattn::make_view<3>(static_cast<const BFloat16*>(km[M].data()), {rows, Hk, D});
    sa.v = memattn::make_view<3>(static_cast<const BFloat16*>(vm[M].data()), {rows, Hk, D});
    sa.o = memattn::make_view<3>(osh.data(), {rows, Hq, D});
    sa.seq.cu_seqlens = cu.data();
    sa.seq.num_seqs = N;
    std::vector<std::int32_t> sslots{M * N, M * N + 1};
    sa.state.slot_in = sslots.data();
    REQUIRE(memattn::cpu::linear_prefill(sa) == Status::kSuccess);
  }
  memattn::linear::MomCombineArgs<BFloat16> ca;
  ca.o_routed = memattn::make_view<3>(static_cast<const BFloat16*>(orr.data()), {R, Hq, D});
  if (shared) ca.o_shared = memattn::make_view<3>(static_cast<const BFloat16*>(osh.data()), {rows, Hq, D});
  ca.o = memattn::make_view<3>(o.data(), {rows, Hq, D});
  ca.topk_w = w.data();
  ca.pos = pos.data();
  ca.topk = K;
  REQUIRE(memattn::cpu::mom_combine(ca) == Status::kSuccess);

  // mom_f64: per token, only the selected memories are decayed and updated.
  std::vector<double> ref(o.size(), NAN);
  const double lam = std::exp(-0.02);
  for (int n = 0; n < N; ++n) {
    std::vector<std::vector<double>> S(M + 1);
    for (int m = 0; m <= M; ++m) {
      const int slot = m < M ? mem_slots[n * M + m] : M * N + n;
      S[m].assign(pool0.begin() + slot * sf, pool0.begin() + (slot + 1) * sf);
    }
    for (int t = cu[n]; t < cu[n + 1]; ++t) {
      std::vector<int> sel;
      for (int r = 0; r < K; ++r) sel.push_back(idx[static_cast<std::size_t>(t * K + r)]);
      if (shared) sel.push_back(M);
      for (int m : sel)
        for (int i = 0; i < D; ++i)
          for (int c = 0; c < D; ++c)
            S[m][i * D + c] = lam * S[m][i * D + c] + double(memattn::to_float(km[m][t * D + i])) * memattn::to_float(vm[m][t * D + c]);
      for (int h = 0; h < Hq; ++h)
        for (int c = 0; c < D; ++c) {
          double acc = 0;
          for (std::size_t si = 0; si < sel.size(); ++si) {
            const double wt = sel[si] == M ? 1.0 : w[static_cast<std::size_t>(t * K + si)];
            double dot = 0;
            for (int i = 0; i < D; ++i) dot += double(memattn::to_float(q[(t * Hq + h) * D + i])) * S[sel[si]][i * D + c];
            acc += wt * 0.25 * dot;
          }
          ref[static_cast<std::size_t>((t * Hq + h) * D + c)] = acc;
        }
    }
    // Memory 3 never selected: its slot is bitwise unchanged.
    REQUIRE(std::memcmp(pool.data() + mem_slots[n * M + 3] * sf, pool0.data() + mem_slots[n * M + 3] * sf, sizeof(float) * sf) == 0);
  }
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(5e-3));
  for (std::int64_t t = 63; t < rows; ++t) REQUIRE(memattn::to_float(o[static_cast<std::size_t>(t * Hq * D)]) == 7.f);
}

TEST_CASE("linear helpers: decay schedules, Taylor map, top-k ties, slots (T14)", "[linear][T14]") {
  for (int H : {8, 32, 64}) {
    const auto mm = memattn::linear::decay_rates_minimax(H, 0, 4);
    const auto tnl = memattn::linear::decay_rates_tnl(H, 0, 24);
    const auto rn = memattn::linear::decay_rates_retnet(H);
    for (int h = 0; h < H; ++h) {
      REQUIRE(mm[h] == Approx(std::pow(2.0, -8.0 * (h + 1) / H) * (1 + 1e-5)).epsilon(1e-6));
      REQUIRE(tnl[h] == Approx(8.0 / H * h).margin(1e-7));
      REQUIRE(rn[h] == Approx(-std::log1p(-std::pow(2.0, -5.0 - h))).epsilon(1e-6));
    }
  }
  REQUIRE(memattn::linear::decay_rates_minimax(64, 0, 24)[0] == Approx(0.917).epsilon(1e-3));
  REQUIRE(memattn::linear::decay_rates_minimax(64, 0, 24)[63] == Approx(0.0039).epsilon(2e-2));
  REQUIRE(memattn::linear::decay_rates_minimax(8, 7, 8)[0] < 1e-5);
  REQUIRE(memattn::linear::decay_rates_tnl(32, 0, 24)[31] == Approx(7.75));
  // Powers from integer offsets never overflow; large decays underflow to 0.
  REQUIRE(memattn::linear::decay_pow(memattn::linear::decay_log2(80.f), 64) == 0.f);
  REQUIRE(memattn::linear::decay_mu(1e-6f, 1) == Approx(1e-6).epsilon(1e-6));
  // Taylor: 153 features at d = 16, normative order, inner product = 1 + αs + (αs)²/2.
  REQUIRE(memattn::linear::feature_dim(FeatureMap::kTaylor2, 16) == 153);
  std::vector<float> x(16), y(16), fx(153), fy(153);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int i = 0; i < 16; ++i) {
    x[i] = nd(rng);
    y[i] = nd(rng);
  }
  memattn::linear::apply_feature_map(FeatureMap::kTaylor2, x.data(), 16, 0.25f, fx.data());
  memattn::linear::apply_feature_map(FeatureMap::kTaylor2, y.data(), 16, 0.25f, fy.data());
  double dot = 0, s = 0;
  for (int i = 0; i < 153; ++i) dot += double(fx[i]) * fy[i];
  for (int i = 0; i < 16; ++i) s += double(x[i]) * y[i];
  REQUIRE(dot == Approx(1 + 0.25 * s + 0.5 * 0.0625 * s * s).epsilon(1e-5));
  REQUIRE(fx[0] == 1.f);
  REQUIRE(fx[1] == Approx(0.5f * x[0]));
  REQUIRE(fx[17] == Approx(0.25f / std::sqrt(2.f) * x[0] * x[0]));
  REQUIRE(fx[33] == Approx(0.25f * x[0] * x[1]));
  REQUIRE(fx[152] == Approx(0.25f * x[14] * x[15]));
  for (int f = 0; f < 153; ++f) {
    const auto t = memattn::linear::taylor_term(f, 16, 0.25f);
    REQUIRE(memattn::linear::taylor_feature(t, x.data()) == Approx(fx[f]).margin(1e-6));
  }
  // Top-k: ties go to the lower index; weights renormalised.
  const float lg[4] = {1.f, 2.f, 2.f, 0.5f};
  std::int32_t id[2];
  float wt[2];
  memattn::linear::mom_topk(lg, 4, 2, id, wt);
  REQUIRE(id[0] == 1);
  REQUIRE(id[1] == 2);
  REQUIRE(wt[0] == Approx(0.5f));
  // Slots: duplicates caught by the debug helper.
  const std::int32_t ok_in[3] = {2, -1, 0}, dup_in[3] = {2, 1, 2}, outs[3] = {2, 1, 2};
  REQUIRE(memattn::linear::validate_slots(ok_in, nullptr, 3, 3) == Status::kSuccess);
  REQUIRE(memattn::linear::validate_slots(dup_in, nullptr, 3, 3) == Status::kErrorInvalidArgument);
  REQUIRE(memattn::linear::validate_slots(ok_in, outs, 3, 3) == Status::kErrorInvalidArgument);
  REQUIRE(memattn::linear::validate_slots(ok_in, nullptr, 3, 2) == Status::kErrorCapacityExceeded);
  // OpenNLPLab-convention states are divided by λ.
  std::vector<float> st(2 * 4, 1.f);
  const std::int32_t sl[1] = {1};
  const float dr[1] = {0.5f};
  REQUIRE(memattn::cpu::rescale_state_from_lambda_convention(st.data(), 2, 0, sl, 1, 1, 2, 2, dr) == Status::kSuccess);
  REQUIRE(st[0] == 1.f);
  REQUIRE(st[4] == Approx(std::exp(0.5)));
}

TEST_CASE("linear: bad inputs return a Status and write nothing", "[linear][bad]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {70, 30};
  c.decay = {0.1f, 0.2f};
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  LinearProblem<BFloat16> p(c);
  const auto o0 = p.o;
  const auto pool0 = p.pool, z0 = p.zpool;
  std::vector<float> bad_decay{0.1f, NAN}, neg_decay{-1.f, 0.f}, big_decay{0.f, 81.f};
  std::vector<std::int32_t> bad_slot{0, 9}, bad_lens{70, 71}, zero_lens{0, 0};
  struct Case {
    const char* name;
    std::function<void(memattn::linear::LinearArgs<BFloat16>&)> mutate;
  };
  const std::vector<Case> cases{
      {"scale unset", [](auto& a) { a.scale = memattn::linear::kUnset; }},
      {"eps unset", [](auto& a) { a.eps = memattn::linear::kUnset; }},
      {"alpha unset for Taylor", [](auto& a) { a.feature_map = FeatureMap::kTaylor2; }},
      {"non-finite decay", [&](auto& a) { a.decay_rate = bad_decay.data(); }},
      {"negative decay", [&](auto& a) { a.decay_rate = neg_decay.data(); }},
      {"decay > 80", [&](auto& a) { a.decay_rate = big_decay.data(); }},
      {"slot out of range", [&](auto& a) { a.state.slot_in = bad_slot.data(); }},
      {"length > T_pad", [&](auto& a) { a.seq.seq_lens = bad_lens.data(); }},
      {"T = 0", [&](auto& a) { a.seq.seq_lens = zero_lens.data(); }},
      {"k shape", [](auto& a) { a.k.shape[2] = 32; }},
      {"v heads", [](auto& a) { a.v.shape[1] = 1; }},
      {"GQA ratio", [](auto& a) { a.q.shape[1] = 3; }},
      {"o shape", [](auto& a) { a.o.shape[2] = 32; }},
      {"null k", [](auto& a) { a.k.data = nullptr; }},
      {"inner stride", [](auto& a) { a.q.stride[2] = 2; }},
      {"rows not divisible", [](auto& a) { a.seq.num_seqs = 3; }},
      {"no z pool", [](auto& a) { a.state.z_pool = nullptr; }},
      {"slot stride too small", [](auto& a) { a.state.slot_stride = 5; }},
      {"no output, no state", [](auto& a) {
         a.o = {};
         a.state = {};
       }},
      {"reserved gate", [&](auto& a) { a.gate_log = bad_decay.data(); }},
      {"o aliases itself", [](auto& a) { a.o.stride[0] = 0; }},
  };
  for (const auto& cs : cases) {
    auto a = p.host_args();
    cs.mutate(a);
    INFO(cs.name);
    REQUIRE(memattn::cpu::linear_prefill(a) != Status::kSuccess);
    REQUIRE(memattn::cpu::linear_decode(a) != Status::kSuccess);
    REQUIRE(std::memcmp(p.o.data(), o0.data(), sizeof(BFloat16) * o0.size()) == 0);
    REQUIRE(std::memcmp(p.pool.data(), pool0.data(), sizeof(float) * pool0.size()) == 0);
    REQUIRE(std::memcmp(p.zpool.data(), z0.data(), sizeof(float) * z0.size()) == 0);
  }
  // Too-small workspace.
  auto a = p.host_args();
  std::size_t bytes = 0;
  REQUIRE(memattn::cpu::linear_prefill_workspace_size(a, &bytes) == Status::kSuccess);
  memattn::HostWorkspace ws(bytes);
  REQUIRE(memattn::cpu::linear_prefill(a, ws.data(), bytes - 1) == Status::kErrorWorkspaceTooSmall);
  REQUIRE(std::memcmp(p.o.data(), o0.data(), sizeof(BFloat16) * o0.size()) == 0);
  // Window and MoM arguments.
  auto w = window_args(p, 0);
  REQUIRE(memattn::cpu::sliding_window_attention(w) == Status::kErrorInvalidArgument);
  w.window = 300;
  REQUIRE(memattn::cpu::sliding_window_attention(w) == Status::kErrorInvalidArgument);
  w.window = 8;
  std::int32_t pos = 3;
  w.seq_pos = &pos;  // history without a ring
  REQUIRE(memattn::cpu::sliding_window_attention(w) == Status::kErrorInvalidArgument);
  REQUIRE(std::memcmp(p.o.data(), o0.data(), sizeof(BFloat16) * o0.size()) == 0);
  memattn::linear::MomRouteArgs ra;
  REQUIRE(memattn::cpu::mom_route(ra) == Status::kErrorNullPointer);
}

TEST_CASE("linear GPU planner: path, segment length, grid, workspace (T14)", "[linear][T14][plan]") {
  using memattn::linear::LinearDims;
  using memattn::linear::LinearPlan;
  using memattn::linear::Schedule;
  auto dims = [](std::int64_t N, std::int64_t T, std::int64_t Hs, std::int64_t D) {
    LinearDims d;
    d.num_seqs = N;
    d.rows = N * T;
    d.t_pad = T;
    d.max_seqlen = T;
    d.q_heads = d.kv_heads = d.state_heads = Hs;
    d.dk = d.dv = d.kphi = D;
    return d;
  };
  LinearPlan p;
  // B1 H32 D128 T64K on 132 SMs: 64 CTAs would leave most SMs idle -> sequence-parallel.
  REQUIRE(memattn::linear::make_plan(Schedule::kAuto, 0, false, dims(1, 65536, 32, 128), 132, &p) == Status::kSuccess);
  REQUIRE(p.path == Schedule::kSequenceParallel);
  REQUIRE(p.vtiles == 2);
  REQUIRE(p.seg_len % 64 == 0);
  REQUIRE(p.seg_len >= 256);
  REQUIRE(p.seg_len == 64 * 125);  // 64·max(4, ceil(1025·64 / (2·132·2)))
  REQUIRE(p.max_segments == (65536 + p.seg_len - 1) / p.seg_len + 1);
  REQUIRE(p.ctas == p.max_segments * 64);
  REQUIRE(p.workspace_bytes >= static_cast<std::size_t>(p.max_segments * 32 * 128 * 128 * 4));
  // B64 H32 T4K: 4096 CTAs, no serial tail -> single pass, no workspace.
  REQUIRE(memattn::linear::make_plan(Schedule::kAuto, 0, false, dims(64, 4096, 32, 128), 132, &p) == Status::kSuccess);
  REQUIRE(p.path == Schedule::kSinglePass);
  REQUIRE(p.ctas == 64 * 32 * 2);
  REQUIRE(p.workspace_bytes == 0);
  // Many heads but one very long sequence among short ones: the long one would be a serial tail.
  LinearDims tail = dims(300, 200, 8, 64);
  tail.max_seqlen = 60000;
  REQUIRE(memattn::linear::make_plan(Schedule::kAuto, 0, false, tail, 132, &p) == Status::kSuccess);
  REQUIRE(p.path == Schedule::kSequenceParallel);
  // Forced schedules and segment lengths are honoured; z doubles into the workspace with normalize.
  REQUIRE(memattn::linear::make_plan(Schedule::kSinglePass, 0, false, dims(1, 65536, 32, 128), 132, &p) == Status::kSuccess);
  REQUIRE(p.path == Schedule::kSinglePass);
  LinearPlan q;
  REQUIRE(memattn::linear::make_plan(Schedule::kSequenceParallel, 256, false, dims(2, 1000, 4, 64), 132, &p) == Status::kSuccess);
  REQUIRE(memattn::linear::make_plan(Schedule::kSequenceParallel, 256, true, dims(2, 1000, 4, 64), 132, &q) == Status::kSuccess);
  REQUIRE(p.seg_len == 256);
  REQUIRE(p.max_segments == (2000 + 255) / 256 + 2);
  REQUIRE(q.workspace_bytes > p.workspace_bytes);
  REQUIRE(memattn::linear::make_plan(Schedule::kSequenceParallel, 100, false, dims(2, 1000, 4, 64), 132, &p) ==
          Status::kErrorInvalidArgument);
}
