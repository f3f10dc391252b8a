// Linear / Lightning attention on the GPU against the fp64 recurrence and the CPU path (spec
// T3, T4, T5, T7, T8, T10, T11, T12): both schedules, bf16 and fp16, all feature maps, varlen
// with NaN padding, slots, decode/extend, determinism, sliding window with a ring, MoM routing.
// Exits 77 without a device (gpu_test_main.cpp).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "common/linear_problem.hpp"
#include "gpu/linear_cpu_bridge.hpp"
#include "memattn/cpu/mom.hpp"
#include "memattn/cuda/linear_attention.cuh"

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn::linear::FeatureMap;
using memattn::linear::Schedule;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;

namespace {

constexpr double kOut = 5e-3, kState = 1e-3;

template <class T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  Dev() = default;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    REQUIRE(cudaMalloc(&p, sizeof(T) * std::max<std::size_t>(n, 1)) == cudaSuccess);
    if (n) REQUIRE(cudaMemcpy(p, h.data(), sizeof(T) * n, cudaMemcpyHostToDevice) == cudaSuccess);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    if (n) REQUIRE(cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};

// A problem's buffers on the device, with host mirrors for validation.
template <class T>
struct DevProblem {
  LinearProblem<T>& h;
  Dev<T> qkv, o;
  Dev<float> pool, zpool, decay;
  Dev<std::int32_t> cu, lens, slots;
  Dev<std::uint8_t> init;
  explicit DevProblem(LinearProblem<T>& p)
      : h(p), qkv(p.qkv), o(p.o), pool(p.pool), zpool(p.zpool), decay(p.cfg.decay), cu(p.cu), lens(p.lens),
        slots(p.slot_in), init(p.has_init) {}
  memattn::linear::LinearArgs<T> args(Schedule s = Schedule::kAuto, int seg = 0) {
    auto a = h.args(qkv.p, o.p, pool.p, zpool.p, h.cu.empty() ? nullptr : cu.p, h.lens.empty() ? nullptr : lens.p,
                    slots.p, init.p, h.cfg.decay.empty() ? nullptr : decay.p);
    a.host.cu_seqlens = h.cu.empty() ? nullptr : h.cu.data();
    a.host.seq_lens = h.lens.empty() ? nullptr : h.lens.data();
    a.host.slot_in = h.slot_in.data();
    a.host.decay_rate = h.cfg.decay.empty() ? nullptr : h.cfg.decay.data();
    a.schedule = s;
    a.seg_len = seg;
    return a;
  }
};

template <class T>
Status run_prefill(const memattn::linear::LinearArgs<T>& a) {
  std::size_t bytes = 0;
  const Status s = memattn::cuda::linear_prefill_workspace_size(a, &bytes);
  if (s != Status::kSuccess) return s;
  void* ws = nullptr;
  if (bytes) REQUIRE(cudaMalloc(&ws, bytes) == cudaSuccess);
  const Status r = memattn::cuda::linear_prefill(a, ws, bytes, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  cudaFree(ws);
  return r;
}

template <class T>
void check_prefill(const LinearConfig& c, Schedule s, int seg) {
  LinearProblem<T> p(c);
  const auto ref = p.reference();
  DevProblem<T> d(p);
  REQUIRE(run_prefill(d.args(s, seg)) == Status::kSuccess);
  const auto o = d.o.get();
  const auto pool = d.pool.get();
  const auto eo = p.compare_output(o, ref);
  INFO("schedule " << static_cast<int>(s) << " seg " << seg << " output: " << eo.describe());
  REQUIRE(eo.within(kOut));
  if (c.stateful) {
    const auto es = p.compare_state(pool, ref);
    INFO("state: " << es.describe());
    REQUIRE(es.within(kState));
    if (c.normalize) REQUIRE(p.compare_z(d.zpool.get(), ref).within(kState));
  }
  const T sentinel = memattn::from_float<T>(c.sentinel);
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < ref.o.size(); ++i)
    if (std::isnan(ref.o[i]) && std::memcmp(&o[i], &sentinel, sizeof(T)) != 0) ++bad;
  REQUIRE(bad == 0);
}

}  // namespace

TEST_CASE("cuda linear prefill: bf16/fp16, feature maps, both schedules, against fp64", "[linear][T3]") {
  const int mode = GENERATE(0, 1, 2);  // single pass, sequence-parallel 256, 1024
  const Schedule s = mode == 0 ? Schedule::kSinglePass : Schedule::kSequenceParallel;
  const int seg = mode == 1 ? 256 : (mode == 2 ? 1024 : 0);
  const float decay = GENERATE(0.f, 1e-3f, 0.05f, 5.f);
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.varlen = true;
  c.fused = true;
  c.lens = {1, 2, 63, 64, 65, 127, 257, 1000, 0, 2100};
  c.decay = {decay, decay * 0.5f};
  c.Dk = 128;
  c.Dv = 128;
  check_prefill<BFloat16>(c, s, seg);
  c.Dk = 64;
  c.Dv = 112;
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  check_prefill<Half>(c, s, seg);
  c.fm = FeatureMap::kRelu;
  c.normalize = false;
  c.Dv = 64;
  check_prefill<BFloat16>(c, s, seg);
}

TEST_CASE("cuda linear prefill: Taylor (BASED), GQA modes, dense padding", "[linear][T3][taylor]") {
  const int mode = GENERATE(0, 1);
  const Schedule s = mode == 0 ? Schedule::kSinglePass : Schedule::kSequenceParallel;
  const std::int64_t dv = GENERATE(64, 112);
  LinearConfig c;
  c.fm = FeatureMap::kTaylor2;
  c.Dk = 16;
  c.Dv = dv;
  c.Hq = 4;
  c.Hk = 2;
  c.normalize = true;
  c.eps = 1e-12f;
  c.lens = {300, 17, 4096};
  c.decay = {0.f, 1e-3f};
  check_prefill<BFloat16>(c, s, 256);
  c.gqa = memattn::linear::GqaState::kPerQueryHead;
  c.decay = {0.f, 1e-3f, 0.01f, 0.1f};
  check_prefill<Half>(c, s, 256);
}

TEST_CASE("cuda linear prefill: skipped and fresh slots, stateless, state-only", "[linear][T5][sanitize]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 2;
  c.varlen = true;
  c.lens = {100, 70, 0, 130};
  c.decay = {0.01f, 0.2f};
  LinearProblem<BFloat16> p(c);
  p.slot_in[1] = -1;
  p.has_init[3] = 0;
  const std::int64_t sf = p.Hs * p.kphi * c.Dv;
  std::fill(p.pool.begin() + p.slot_in[3] * sf, p.pool.begin() + (p.slot_in[3] + 1) * sf, NAN);
  p.refresh_initial();
  auto ref = p.reference();
  DevProblem<BFloat16> d(p);
  REQUIRE(run_prefill(d.args(Schedule::kSequenceParallel, 64)) == Status::kSuccess);
  const auto o = d.o.get();
  const auto pool = d.pool.get();
  for (std::int64_t t = p.cu[1]; t < p.cu[2]; ++t)
    for (std::int64_t x = 0; x < c.Hq * c.Dv; ++x) {
      REQUIRE(memattn::to_float(o[static_cast<std::size_t>(t * c.Hq * c.Dv + x)]) == c.sentinel);
      ref.o[static_cast<std::size_t>(t * c.Hq * c.Dv + x)] = NAN;
    }
  REQUIRE(p.compare_output(o, ref).within(kOut));
  for (std::int64_t s : {std::int64_t{0}, std::int64_t{1}, std::int64_t{p.slot_in[2]}, std::int64_t{p.P - 2}})
    REQUIRE(std::memcmp(pool.data() + s * sf, p.pool.data() + s * sf, sizeof(float) * sf) == 0);
  // State-only equals the state of the full call.
  LinearProblem<BFloat16> q(c);
  DevProblem<BFloat16> dq(q);
  auto qa = dq.args(Schedule::kSinglePass);
  qa.o = {};
  REQUIRE(run_prefill(qa) == Status::kSuccess);
  LinearProblem<BFloat16> r(c);
  DevProblem<BFloat16> dr(r);
  REQUIRE(run_prefill(dr.args(Schedule::kSinglePass)) == Status::kSuccess);
  REQUIRE(dq.pool.get() == dr.pool.get());
  // Stateless.
  LinearConfig cs = c;
  cs.stateful = false;
  check_prefill<BFloat16>(cs, Schedule::kSinglePass, 0);
}

TEST_CASE("cuda linear prefill: split prefill bitwise at chunk multiples; determinism (T7, T10)", "[linear][T7]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {700};
  c.decay = {1e-3f};
  LinearProblem<BFloat16> whole(c), split(c);
  DevProblem<BFloat16> dw(whole), ds(split);
  REQUIRE(run_prefill(dw.args(Schedule::kSinglePass)) == Status::kSuccess);
  auto b = ds.args(Schedule::kSinglePass);
  auto part = [&](std::int64_t r0, std::int64_t r1) {
    auto x = b;
    for (auto* v : {&x.q, &x.k, &x.v}) {
      v->data += r0 * v->stride[0];
      v->shape[0] = r1 - r0;
    }
    x.o.data += r0 * x.o.stride[0];
    x.o.shape[0] = r1 - r0;
    x.seq.seq_lens = nullptr;
    x.host.seq_lens = nullptr;
    return run_prefill(x);
  };
  REQUIRE(part(0, 256) == Status::kSuccess);
  REQUIRE(part(256, 700) == Status::kSuccess);
  const auto o1 = dw.o.get(), o2 = ds.o.get();
  REQUIRE(std::memcmp(o1.data(), o2.data(), sizeof(BFloat16) * o1.size()) == 0);
  REQUIRE(dw.pool.get() == ds.pool.get());
  // Two runs of the same plan are bitwise equal (sequence-parallel).
  LinearProblem<BFloat16> r1(c), r2(c);
  DevProblem<BFloat16> d1(r1), d2(r2);
  REQUIRE(run_prefill(d1.args(Schedule::kSequenceParallel, 128)) == Status::kSuccess);
  REQUIRE(run_prefill(d2.args(Schedule::kSequenceParallel, 128)) == Status::kSuccess);
  const auto a1 = d1.o.get(), a2 = d2.o.get();
  REQUIRE(std::memcmp(a1.data(), a2.data(), sizeof(BFloat16) * a1.size()) == 0);
  REQUIRE(d1.pool.get() == d2.pool.get());
}

TEST_CASE("cuda linear: GPU == CPU path within the thresholds", "[linear]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.varlen = true;
  c.lens = {300, 65, 1};
  c.decay = {0.02f, 0.f};
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  LinearProblem<BFloat16> gp(c), cp(c);
  DevProblem<BFloat16> d(gp);
  REQUIRE(run_prefill(d.args()) == Status::kSuccess);
  REQUIRE(memattn_test::cpu_linear_prefill(cp.host_args()) == Status::kSuccess);
  const auto o = d.o.get();
  std::vector<double> ref(o.size());
  for (std::size_t i = 0; i < ref.size(); ++i)
    ref[i] = memattn::to_float(cp.o[i]) == c.sentinel ? NAN : memattn::to_float(cp.o[i]);
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(kOut));
}

TEST_CASE("cuda linear decode: prefill + decode steps, extend with step slots, drift (T7, T8)", "[linear][decode]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {300};
  c.decay = {1e-3f, 0.05f};
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  LinearProblem<BFloat16> p(c);
  const auto ref = p.reference();
  DevProblem<BFloat16> d(p);
  auto a = d.args(Schedule::kSinglePass);
  auto rows = [&](std::int64_t r0, std::int64_t r1) {
    auto x = a;
    for (auto* v : {&x.q, &x.k, &x.v}) {
      v->data += r0 * v->stride[0];
      v->shape[0] = r1 - r0;
    }
    x.o.data += r0 * x.o.stride[0];
    x.o.shape[0] = r1 - r0;
    x.seq.seq_lens = nullptr;
    x.host.seq_lens = nullptr;
    return x;
  };
  REQUIRE(run_prefill(rows(0, 100)) == Status::kSuccess);
  for (std::int64_t t = 100; t < 284; ++t) REQUIRE(memattn::cuda::linear_decode(rows(t, t + 1), nullptr) == Status::kSuccess);
  REQUIRE(memattn::cuda::linear_decode(rows(284, 300), nullptr) == Status::kSuccess);  // extend(16)
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  REQUIRE(p.compare_output(d.o.get(), ref).within(kOut));
  REQUIRE(p.compare_state(d.pool.get(), ref).within(kState));
  REQUIRE(p.compare_z(d.zpool.get(), ref).within(kState));

  // Drift: 32768 single-token steps, D = 32 is not a kernel head dim; use Dk = Dv = 64.
  for (float s : {1e-6f, 1e-4f, 1e-2f}) {
    LinearConfig cd;
    cd.Hq = 1;
    cd.Hk = 1;
    cd.lens = {32768};
    cd.decay = {s};
    LinearProblem<BFloat16> q(cd);
    DevProblem<BFloat16> dq(q);
    auto qa = dq.args();
    qa.o = {};
    for (std::int64_t t = 0; t < 32768; ++t) {
      auto x = qa;
      for (auto* v : {&x.q, &x.k, &x.v}) {
        v->data += t * v->stride[0];
        v->shape[0] = 1;
      }
      x.seq.seq_lens = nullptr;
      x.host.seq_lens = nullptr;
      REQUIRE(memattn::cuda::linear_decode(x, nullptr) == Status::kSuccess);
    }
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto ha = q.host_args();
    ha.o = {};
    const auto r = memattn_test::linear_reference_f64(ha, q.S0, q.z0);
    const auto e = q.compare_state(dq.pool.get(), r);
    INFO("s=" << s << " " << e.describe());
    REQUIRE(e.within(1e-4));
  }
}

TEST_CASE("cuda sliding window: against fp64, ring continuation", "[linear][swa][T11][sanitize]") {
  const int W = GENERATE(1, 64, 128);
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.varlen = true;
  c.lens = {1, 65, 300};
  c.stateful = false;
  LinearProblem<BFloat16> p(c);
  DevProblem<BFloat16> d(p);
  const auto la = d.args();
  memattn::linear::SlidingWindowArgs<BFloat16> w;
  w.q = la.q;
  w.k = la.k;
  w.v = la.v;
  w.o = la.o;
  w.seq = la.seq;
  w.window = W;
  w.scale = la.scale;
  w.cu_seqlens_host = p.cu.data();
  auto hw = w;
  const auto ha = p.host_args();
  hw.q = ha.q;
  hw.k = ha.k;
  hw.v = ha.v;
  hw.o = ha.o;
  hw.seq = ha.seq;
  const auto ref = memattn_test::swa_f64(hw);
  REQUIRE(memattn::cuda::sliding_window_attention(w, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto o = d.o.get();
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(kOut));

  // One sequence: prefill 130 tokens into a ring of W + 3, then one token at a time.
  LinearConfig c1 = c;
  c1.varlen = false;
  c1.Hq = 2;
  c1.Hk = 1;
  c1.lens = {300};
  LinearProblem<BFloat16> s1(c1);
  const auto h1 = s1.host_args();
  memattn::linear::SlidingWindowArgs<BFloat16> r1;
  r1.q = h1.q;
  r1.k = h1.k;
  r1.v = h1.v;
  r1.o = h1.o;
  r1.seq = h1.seq;
  r1.window = W;
  r1.scale = h1.scale;
  const auto ref1 = memattn_test::swa_f64(r1);
  DevProblem<BFloat16> d1(s1);
  const auto a1 = d1.args();
  const std::int64_t R = W + 3;
  Dev<BFloat16> rk(std::vector<BFloat16>(static_cast<std::size_t>(R * 64))), rv(std::vector<BFloat16>(static_cast<std::size_t>(R * 64)));
  Dev<std::int32_t> pos(std::vector<std::int32_t>{0});
  memattn::linear::SlidingWindowArgs<BFloat16> g;
  g.q = a1.q;
  g.k = a1.k;
  g.v = a1.v;
  g.o = a1.o;
  g.seq.num_seqs = 1;
  g.window = W;
  g.scale = a1.scale;
  g.ring_k = memattn::make_view<4>(rk.p, {1, R, 1, 64});
  g.ring_v = memattn::make_view<4>(rv.p, {1, R, 1, 64});
  g.seq_pos = pos.p;
  auto part = [&](std::int64_t r0, std::int64_t r1e) {
    auto x = g;
    for (auto* v : {&x.q, &x.k, &x.v}) {
      v->data += r0 * v->stride[0];
      v->shape[0] = r1e - r0;
    }
    x.o.data += r0 * x.o.stride[0];
    x.o.shape[0] = r1e - r0;
    const std::int32_t p0 = static_cast<std::int32_t>(r0);
    REQUIRE(cudaMemcpy(pos.p, &p0, 4, cudaMemcpyHostToDevice) == cudaSuccess);
    return memattn::cuda::sliding_window_attention(x, nullptr);
  };
  REQUIRE(part(0, 130) == Status::kSuccess);
  for (std::int64_t t = 130; t < 300; ++t) REQUIRE(part(t, t + 1) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto o1 = d1.o.get();
  REQUIRE(memattn_test::compare(ref1, [&](std::size_t i) { return double(memattn::to_float(o1[i])); }).within(kOut));
}

TEST_CASE("cuda MoM: route equals the CPU route exactly; combine", "[linear][mom][T12][sanitize]") {
  constexpr int M = 4, K = 2, N = 3;
  const std::vector<std::int32_t> cu{0, 40, 40, 97};
  const std::int64_t rows = 100;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> logits(static_cast<std::size_t>(rows * M));
  for (auto& x : logits) x = nd(rng);
  for (std::int64_t t = 0; t < rows; t += 3) logits[static_cast<std::size_t>(t * M + 2)] = logits[static_cast<std::size_t>(t * M + 1)];
  logits[static_cast<std::size_t>(98 * M)] = NAN;
  std::vector<std::int32_t> mem_slots(N * M);
  for (int i = 0; i < N * M; ++i) mem_slots[i] = (i * 5) % (N * M);
  auto route_args = [&](const float* lg, const std::int32_t* cup, const std::int32_t* ms, std::int32_t* idx, float* w,
                        std::int32_t* perm, std::int32_t* pos, std::int32_t* segcu, std::int32_t* segslot) {
    memattn::linear::MomRouteArgs a;
    a.router_logits = lg;
    a.rows = rows;
    a.num_memories = M;
    a.topk = K;
    a.seq.cu_seqlens = cup;
    a.seq.num_seqs = N;
    a.mem_slots = ms;
    a.topk_idx = idx;
    a.topk_w = w;
    a.perm = perm;
    a.pos = pos;
    a.seg_cu = segcu;
    a.seg_slot = segslot;
    return a;
  };
  std::vector<std::int32_t> idx(rows * K), perm(rows * K, -7), pos(rows * K), segcu(M * N + 1), segslot(M * N);
  std::vector<float> w(rows * K);
  REQUIRE(memattn::cpu::mom_route(route_args(logits.data(), cu.data(), mem_slots.data(), idx.data(), w.data(), perm.data(),
                                             pos.data(), segcu.data(), segslot.data())) == Status::kSuccess);
  Dev<float> dl(logits), dw(w);
  Dev<std::int32_t> dcu(cu), dms(mem_slots), didx(idx), dperm(perm), dpos(pos), dsegcu(segcu), dsegslot(segslot);
  auto ga = route_args(dl.p, dcu.p, dms.p, didx.p, dw.p, dperm.p, dpos.p, dsegcu.p, dsegslot.p);
  ga.cu_seqlens_host = cu.data();
  std::size_t bytes = 0;
  REQUIRE(memattn::cuda::mom_route_workspace_size(ga, &bytes) == Status::kSuccess);
  void* ws = nullptr;
  REQUIRE(cudaMalloc(&ws, bytes) == cudaSuccess);
  REQUIRE(memattn::cuda::mom_route(ga, ws, bytes, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  cudaFree(ws);
  REQUIRE(didx.get() == idx);
  REQUIRE(dpos.get() == pos);
  REQUIRE(dsegcu.get() == segcu);
  REQUIRE(dsegslot.get() == segslot);
  const auto gperm = dperm.get();
  for (int i = 0; i < segcu[M * N]; ++i) REQUIRE(gperm[i] == perm[i]);
  const auto gw = dw.get();
  for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(gw[i] == Approx(w[i]).epsilon(1e-6));

  // Combine and gather against the CPU helpers.
  const std::int64_t R = segcu[M * N], H = 2, D = 16;
  std::vector<BFloat16> routed(static_cast<std::size_t>(rows * K * H * D)), shared(static_cast<std::size_t>(rows * H * D)),
      out(shared.size(), memattn::from_float<BFloat16>(3.f));
  for (auto& x : routed) x = memattn::from_float<BFloat16>(nd(rng));
  for (auto& x : shared) x = memattn::from_float<BFloat16>(nd(rng));
  auto cpu_out = out;
  memattn::linear::MomCombineArgs<BFloat16> ca;
  ca.o_routed = memattn::make_view<3>(static_cast<const BFloat16*>(routed.data()), {rows * K, H, D});
  ca.o_shared = memattn::make_view<3>(static_cast<const BFloat16*>(shared.data()), {rows, H, D});
  ca.o = memattn::make_view<3>(cpu_out.data(), {rows, H, D});
  ca.topk_w = w.data();
  ca.pos = pos.data();
  ca.topk = K;
  REQUIRE(memattn::cpu::mom_combine(ca) == Status::kSuccess);
  Dev<BFloat16> drt(routed), dsh(shared), dout(out);
  auto gc = ca;
  gc.o_routed.data = drt.p;
  gc.o_shared.data = dsh.p;
  gc.o.data = dout.p;
  gc.topk_w = dw.p;
  gc.pos = dpos.p;
  REQUIRE(memattn::cuda::mom_combine(gc, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto gout = dout.get();
  for (std::size_t i = 0; i < gout.size(); ++i) REQUIRE(memattn::to_float(gout[i]) == Approx(memattn::to_float(cpu_out[i])).margin(2e-2));
  memattn::linear::GatherRowsArgs<BFloat16> gg;
  Dev<BFloat16> gdst(std::vector<BFloat16>(static_cast<std::size_t>(rows * K * H * D)));
  gg.src = memattn::make_view<3>(static_cast<const BFloat16*>(dsh.p), {rows, H, D});
  gg.dst = memattn::make_view<3>(gdst.p, {rows * K, H, D});
  gg.perm = dperm.p;
  gg.count_ptr = dsegcu.p + M * N;
  REQUIRE(memattn::cuda::gather_rows(gg, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto gd = gdst.get();
  for (std::int64_t i = 0; i < R; ++i)
    REQUIRE(std::memcmp(&gd[static_cast<std::size_t>(i * H * D)], &shared[static_cast<std::size_t>(perm[i] * H * D)], sizeof(BFloat16) * H * D) == 0);
}

TEST_CASE("cuda linear: bad inputs return a Status and launch nothing", "[linear][bad]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {70, 30};
  c.decay = {0.1f, 0.2f};
  LinearProblem<BFloat16> p(c);
  DevProblem<BFloat16> d(p);
  std::vector<float> bad_decay{0.1f, NAN};
  std::vector<std::int32_t> bad_slot{0, 9};
  auto a = d.args();
  a.scale = memattn::linear::kUnset;
  REQUIRE(run_prefill(a) == Status::kErrorInvalidArgument);
  a = d.args();
  a.host.decay_rate = bad_decay.data();
  REQUIRE(run_prefill(a) == Status::kErrorNonFinite);
  a = d.args();
  a.host.slot_in = bad_slot.data();
  REQUIRE(run_prefill(a) == Status::kErrorCapacityExceeded);
  a = d.args();
  a.k.shape[2] = 32;
  a.q.shape[2] = 32;
  REQUIRE(run_prefill(a) == Status::kErrorUnsupportedHeadDim);
  a = d.args();
  a.q.data += 1;  // misaligned
  REQUIRE(run_prefill(a) == Status::kErrorInvalidStride);
  REQUIRE(memattn::cuda::linear_decode(d.args(), nullptr) == Status::kErrorInvalidArgument);  // T_pad 70 > 16
  REQUIRE(std::memcmp(d.o.get().data(), p.o.data(), sizeof(BFloat16) * p.o.size()) == 0);
  REQUIRE(d.pool.get() == p.pool);
}

TEST_CASE("cuda linear prefill: CUDA-graph replay is bitwise equal to eager (T10)", "[linear][T10]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.varlen = true;
  c.lens = {500, 3, 1200};
  c.decay = {0.01f, 0.f};
  c.stateful = false;  // replays must not depend on a state they update
  LinearProblem<BFloat16> e(c), g(c);
  DevProblem<BFloat16> de(e), dg(g);
  for (int mode = 0; mode < 2; ++mode) {
    const Schedule s = mode == 0 ? Schedule::kSinglePass : Schedule::kSequenceParallel;
    REQUIRE(run_prefill(de.args(s, 256)) == Status::kSuccess);
    auto a = dg.args(s, 256);
    std::size_t bytes = 0;
    REQUIRE(memattn::cuda::linear_prefill_workspace_size(a, &bytes) == Status::kSuccess);
    void* ws = nullptr;
    if (bytes) REQUIRE(cudaMalloc(&ws, bytes) == cudaSuccess);
    cudaStream_t st;
    REQUIRE(cudaStreamCreate(&st) == cudaSuccess);
    cudaGraph_t graph;
    REQUIRE(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    REQUIRE(memattn::cuda::linear_prefill(a, ws, bytes, st) == Status::kSuccess);
    REQUIRE(cudaStreamEndCapture(st, &graph) == cudaSuccess);
    cudaGraphExec_t exec;
    REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(exec, st) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(exec, st) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(st) == cudaSuccess);
    const auto oe = de.o.get(), og = dg.o.get();
    REQUIRE(std::memcmp(oe.data(), og.data(), sizeof(BFloat16) * oe.size()) == 0);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(st);
    cudaFree(ws);
  }
}
