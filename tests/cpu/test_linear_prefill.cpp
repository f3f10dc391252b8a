// Linear / Lightning attention, CPU prefill: the spec §5.3 matrix against the fp64 recurrence
// (T2, T4, T5, T6, T7, T9), thread-count determinism and the §5.2 thresholds.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "common/linear_problem.hpp"
#include "memattn/cpu/linear_attention.hpp"

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn::linear::FeatureMap;
using memattn::linear::GqaState;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;

namespace {

constexpr double kOutBf16 = 5e-3, kStateCpuBf16 = 1e-4, kF32 = 1e-4;

// A std::thread executor (tasks strided over the workers), to check determinism across counts.
struct ThreadExecutor {
  int n;
  memattn::Executor get() {
    memattn::Executor ex;
    ex.workers = n;
    ex.self = this;
    ex.parallel_for = [](void* self, std::int64_t count, memattn::Executor::TaskFn fn, void* ctx) {
      const int w = static_cast<ThreadExecutor*>(self)->n;
      std::vector<std::thread> th;
      for (int i = 0; i < w; ++i)
        th.emplace_back([=] {
          for (std::int64_t t = i; t < count; t += w) fn(ctx, t, i);
        });
      for (auto& t : th) t.join();
    };
    return ex;
  }
};

std::vector<float> decays_for(std::int64_t hs, float s) { return std::vector<float>(static_cast<std::size_t>(hs), s); }

template <class T>
void check_case(LinearConfig c, double out_thr, double state_thr) {
  LinearProblem<T> p(c);
  const auto ref = p.reference();
  auto a = p.host_args();
  REQUIRE(memattn::cpu::linear_prefill(a) == Status::kSuccess);
  const auto eo = p.compare_output(p.o, ref);
  INFO("output: " << eo.describe());
  REQUIRE(eo.within(out_thr));
  if (c.stateful) {
    const auto es = p.compare_state(p.pool, ref);
    INFO("state: " << es.describe());
    REQUIRE(es.within(state_thr));
    if (c.normalize) {
      const auto ez = p.compare_z(p.zpool, ref);
      INFO("z: " << ez.describe());
      REQUIRE(ez.within(state_thr));
    }
  }
  // Padding rows keep the sentinel.
  const T sentinel = memattn::from_float<T>(c.sentinel);
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < ref.o.size(); ++i)
    if (std::isnan(ref.o[i]) && std::memcmp(&p.o[i], &sentinel, sizeof(T)) != 0) ++bad;
  REQUIRE(bad == 0);
}

}  // namespace

TEST_CASE("linear prefill: ground truth — recurrence == O(T^2) masked form", "[linear][T1]") {
  const auto fm = GENERATE(FeatureMap::kIdentity, FeatureMap::kEluPlusOne, FeatureMap::kRelu, FeatureMap::kTaylor2);
  const bool norm = GENERATE(false, true);
  const float s = GENERATE(0.f, 0.05f, 0.7f);
  LinearConfig c;
  c.fm = fm;
  c.normalize = norm && fm != FeatureMap::kIdentity && fm != FeatureMap::kRelu;
  c.Dk = fm == FeatureMap::kTaylor2 ? 4 : 8;
  c.Dv = 8;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {1, 7, 64, 300};
  c.varlen = true;
  c.decay = decays_for(1, s);
  LinearProblem<float> p(c);
  const auto r1 = p.reference(false), r2 = p.reference(true);
  const auto eo = memattn_test::compare(r2.o, [&](std::size_t i) { return r1.o[i]; });
  const auto es = memattn_test::compare(r2.S, [&](std::size_t i) { return r1.S[i]; });
  INFO(eo.describe() << " / " << es.describe());
  REQUIRE(eo.rel_rms <= 1e-12);
  REQUIRE(es.rel_rms <= 1e-12);
}

TEST_CASE("linear prefill: bf16 I/O against fp64, decay sets and feature maps", "[linear][T2]") {
  const float s = GENERATE(0.f, 1e-5f, 1e-3f, 0.05f, 5.f);
  const auto fm = GENERATE(FeatureMap::kIdentity, FeatureMap::kEluPlusOne, FeatureMap::kRelu);
  LinearConfig c;
  c.fm = fm;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {300};
  c.decay = decays_for(2, s);
  CAPTURE(s, static_cast<int>(fm));
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
}

TEST_CASE("linear prefill: head dims, GQA modes, normalize", "[linear][T2][T6]") {
  const std::int64_t dk = GENERATE(64, 128);
  const std::int64_t dv = GENERATE(64, 112, 128);
  const auto gqa = GENERATE(GqaState::kPerKvHead, GqaState::kPerQueryHead);
  LinearConfig c;
  c.Dk = dk;
  c.Dv = dv;
  c.Hq = 4;
  c.Hk = 1;
  c.gqa = gqa;
  c.lens = {257};
  const std::int64_t hs = gqa == GqaState::kPerQueryHead ? 4 : 1;
  c.decay = memattn::linear::decay_rates_minimax(static_cast<int>(hs), 0, 4);
  CAPTURE(dk, dv, static_cast<int>(gqa));
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
}

TEST_CASE("linear prefill: Taylor (BASED) feature map, normalised, Dv 64 and 112", "[linear][T2][taylor]") {
  const std::int64_t dv = GENERATE(64, 112);
  const bool norm = GENERATE(false, true);
  LinearConfig c;
  c.fm = FeatureMap::kTaylor2;
  c.Dk = 16;
  c.Dv = dv;
  c.Hq = 2;
  c.Hk = 2;
  c.normalize = norm;
  c.eps = 1e-12f;
  c.lens = {300};
  c.decay = decays_for(2, 1e-3f);
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
}

TEST_CASE("linear prefill: fp32 and fp16 I/O", "[linear][T2]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {1000};
  c.decay = decays_for(1, 1e-4f);
  check_case<float>(c, kF32, kF32);
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  check_case<float>(c, kF32, kF32);
  check_case<Half>(c, kOutBf16, kStateCpuBf16);
}

TEST_CASE("linear prefill: edge and variable lengths with NaN padding and strided views", "[linear][T4][T5]") {
  const bool varlen = GENERATE(false, true);
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.varlen = varlen;
  c.fused = true;
  c.lens = {1, 0, 63, 64, 65, 1000, 0, 257};
  c.decay = {0.f, 0.05f};
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
  c.lens = {1};
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
}

TEST_CASE("linear prefill: slots — skip (-1), has_init = 0, length 0, slot_out, stateless", "[linear][T5]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 2;
  c.varlen = true;
  c.lens = {100, 70, 0, 130};
  c.decay = {0.01f, 0.2f};
  c.normalize = true;
  c.fm = FeatureMap::kEluPlusOne;
  LinearProblem<BFloat16> p(c);
  p.slot_in[1] = -1;  // skipped
  p.has_init[3] = 0;  // starts from zero (its slot holds NaN: must not be read)
  const std::int64_t sf = p.Hs * p.kphi * c.Dv, zf = p.Hs * p.kphi;
  std::fill(p.pool.begin() + p.slot_in[3] * sf, p.pool.begin() + (p.slot_in[3] + 1) * sf, NAN);
  std::fill(p.zpool.begin() + p.slot_in[3] * zf, p.zpool.begin() + (p.slot_in[3] + 1) * zf, NAN);
  p.refresh_initial();
  const std::vector<float> pool0 = p.pool, z0 = p.zpool;
  auto ref = p.reference();
  auto a = p.host_args();
  REQUIRE(memattn::cpu::linear_prefill(a) == Status::kSuccess);
  // Sequence 1 (skipped) keeps the sentinel in its rows; its reference rows are dropped.
  for (std::int64_t t = p.cu[1]; t < p.cu[2]; ++t)
    for (std::int64_t x = 0; x < c.Hq * c.Dv; ++x) {
      REQUIRE(memattn::to_float(p.o[static_cast<std::size_t>(t * c.Hq * c.Dv + x)]) == c.sentinel);
      ref.o[static_cast<std::size_t>(t * c.Hq * c.Dv + x)] = NAN;
    }
  REQUIRE(p.compare_output(p.o, ref).within(kOutBf16));
  // Untouched: every slot of the skipped and of the empty sequence, and the spare slots.
  for (std::int64_t s : {std::int64_t{0}, std::int64_t{1}, std::int64_t{p.slot_in[2]}, std::int64_t{p.P - 2}}) {
    REQUIRE(std::memcmp(p.pool.data() + s * sf, pool0.data() + s * sf, sizeof(float) * sf) == 0);
    REQUIRE(std::memcmp(p.zpool.data() + s * zf, z0.data() + s * zf, sizeof(float) * zf) == 0);
  }
  for (std::int64_t n : {0, 3}) {
    auto want = ref.S;
    const auto e = memattn_test::compare(
        std::vector<double>(ref.S.begin() + n * sf, ref.S.begin() + (n + 1) * sf),
        [&](std::size_t i) { return static_cast<double>(p.pool[static_cast<std::size_t>(p.slot_in[n] * sf) + i]); });
    INFO(n << ": " << e.describe());
    REQUIRE(e.within(kStateCpuBf16));
  }

  // slot_out elsewhere: the input slot is only read.
  LinearProblem<BFloat16> q(c);
  // Sequence 0: slot 5 -> 0; 1: skipped; 2 (empty): 4 -> 1 (copied); 3: 3 -> 2.
  std::vector<std::int32_t> outs{0, 0, 1, 2};
  q.slot_in = {5, -1, 4, 3};
  q.refresh_initial();
  const auto qref = q.reference();
  auto qa = q.host_args();
  qa.state.slot_out = outs.data();
  const std::vector<float> qpool0 = q.pool;
  REQUIRE(memattn::cpu::linear_prefill(qa) == Status::kSuccess);
  REQUIRE(std::memcmp(q.pool.data() + 5 * sf, qpool0.data() + 5 * sf, sizeof(float) * sf) == 0);
  const auto e0 = memattn_test::compare(std::vector<double>(qref.S.begin(), qref.S.begin() + sf),
                                        [&](std::size_t i) { return static_cast<double>(q.pool[i]); });
  REQUIRE(e0.within(kStateCpuBf16));
  // Length 0 with a different output slot: the initial state is copied.
  REQUIRE(std::memcmp(q.pool.data() + 1 * sf, qpool0.data() + 4 * sf, sizeof(float) * sf) == 0);

  // Stateless: zero initial state, nothing else touched.
  LinearConfig cs = c;
  cs.stateful = false;
  check_case<BFloat16>(cs, kOutBf16, kStateCpuBf16);
}

TEST_CASE("linear prefill: state-only mode equals the full call's state", "[linear]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {200, 77};
  c.decay = {0.001f, 0.3f};
  LinearProblem<BFloat16> p(c), p2(c);
  auto a = p.host_args();
  REQUIRE(memattn::cpu::linear_prefill(a) == Status::kSuccess);
  auto b = p2.host_args();
  b.o = {};
  b.q = {};
  REQUIRE(memattn::cpu::linear_prefill(b) == Status::kSuccess);
  REQUIRE(p.pool == p2.pool);
}

TEST_CASE("linear prefill: GQA kPerKvHead == kPerQueryHead with repeated k/v", "[linear][T6]") {
  LinearConfig c;
  c.Hq = 4;
  c.Hk = 2;
  c.lens = {190};
  c.decay = {0.01f, 0.1f};
  c.stateful = false;
  LinearProblem<BFloat16> p(c);
  auto a = p.host_args();
  REQUIRE(memattn::cpu::linear_prefill(a) == Status::kSuccess);
  // Repeat k, v per query head (G = 2) and the decay per query head.
  LinearConfig c2 = c;
  c2.Hk = 4;
  c2.gqa = GqaState::kPerQueryHead;
  c2.decay = {0.01f, 0.01f, 0.1f, 0.1f};
  LinearProblem<BFloat16> r(c2);
  auto ra = r.host_args();
  for (std::int64_t t = 0; t < p.rows; ++t)
    for (std::int64_t h = 0; h < 4; ++h) {
      std::memcpy(const_cast<BFloat16*>(ra.k.ptr(t, h, 0)), a.k.ptr(t, h / 2, 0), sizeof(BFloat16) * c.Dk);
      std::memcpy(const_cast<BFloat16*>(ra.v.ptr(t, h, 0)), a.v.ptr(t, h / 2, 0), sizeof(BFloat16) * c.Dv);
      std::memcpy(const_cast<BFloat16*>(ra.q.ptr(t, h, 0)), a.q.ptr(t, h, 0), sizeof(BFloat16) * c.Dk);
    }
  REQUIRE(memattn::cpu::linear_prefill(ra) == Status::kSuccess);
  std::vector<double> ref(p.o.size());
  for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = memattn::to_float(p.o[i]);
  const auto e = memattn_test::compare(ref, [&](std::size_t i) { return double(memattn::to_float(r.o[i])); });
  INFO(e.describe());
  REQUIRE(e.within(kOutBf16));
}

TEST_CASE("linear prefill: split prefill is bitwise at chunk multiples, within tolerance elsewhere", "[linear][T7]") {
  const std::int64_t t1 = GENERATE(64, 256, 1, 63, 100);
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {700};
  c.decay = {1e-3f};
  c.fm = FeatureMap::kEluPlusOne;
  c.normalize = true;
  LinearProblem<BFloat16> whole(c), split(c);
  auto a = whole.host_args();
  REQUIRE(memattn::cpu::linear_prefill(a) == Status::kSuccess);
  // Two calls over row ranges [0, t1) and [t1, T) with the state carried in the pool.
  auto b = split.host_args();
  auto part = [&](std::int64_t r0, std::int64_t r1) {
    auto x = b;
    const std::int64_t n = r1 - r0;
    x.q.data += r0 * x.q.stride[0];
    x.k.data += r0 * x.k.stride[0];
    x.v.data += r0 * x.v.stride[0];
    x.o.data += r0 * x.o.stride[0];
    x.q.shape[0] = x.k.shape[0] = x.v.shape[0] = x.o.shape[0] = n;
    x.seq.seq_lens = nullptr;
    return memattn::cpu::linear_prefill(x);
  };
  REQUIRE(part(0, t1) == Status::kSuccess);
  REQUIRE(part(t1, 700) == Status::kSuccess);
  if (t1 % 64 == 0) {
    REQUIRE(std::memcmp(whole.o.data(), split.o.data(), sizeof(BFloat16) * whole.o.size()) == 0);
    REQUIRE(whole.pool == split.pool);
    REQUIRE(whole.zpool == split.zpool);
  } else {
    const auto ref = whole.reference();
    REQUIRE(split.compare_output(split.o, ref).within(kOutBf16));
    REQUIRE(split.compare_state(split.pool, ref).within(kStateCpuBf16));
  }
}

TEST_CASE("linear prefill: results are bitwise independent of the worker count", "[linear][T7]") {
  LinearConfig c;
  c.Hq = 2;
  c.Hk = 1;
  c.lens = {300, 64};
  c.Dv = 128;
  c.decay = {0.02f};
  std::vector<std::vector<BFloat16>> outs;
  std::vector<std::vector<float>> pools;
  for (int w : {1, 2, 3}) {
    LinearProblem<BFloat16> p(c);
    ThreadExecutor te{w};
    auto a = p.host_args();
    REQUIRE(memattn::cpu::linear_prefill(a, te.get()) == Status::kSuccess);
    outs.push_back(p.o);
    pools.push_back(p.pool);
  }
  for (std::size_t i = 1; i < outs.size(); ++i) {
    REQUIRE(std::memcmp(outs[0].data(), outs[i].data(), sizeof(BFloat16) * outs[0].size()) == 0);
    REQUIRE(pools[0] == pools[i]);
  }
}

TEST_CASE("linear prefill: the decay convention (T9)", "[linear][T9]") {
  // Independent fp64 block implementation with the MiniMax exponents, block 256, random state.
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0, 1), sd(0, 8);
  const int T = 300, K = 8, Dv = 8;
  const double s = 0.05;
  std::vector<std::vector<double>> fq(T, std::vector<double>(K)), fk = fq, v(T, std::vector<double>(Dv));
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < K; ++i) {
      fq[t][i] = nd(rng);
      fk[t][i] = nd(rng);
    }
    for (int c = 0; c < Dv; ++c) v[t][c] = nd(rng);
  }
  std::vector<double> S0(K * Dv);
  for (auto& x : S0) x = sd(rng);
  // Recurrence.
  std::vector<double> S = S0, rec(T * Dv);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < K; ++i)
      for (int c = 0; c < Dv; ++c) S[i * Dv + c] = std::exp(-s) * S[i * Dv + c] + fk[t][i] * v[t][c];
    for (int c = 0; c < Dv; ++c) {
      double acc = 0;
      for (int i = 0; i < K; ++i) acc += fq[t][i] * S[i * Dv + c];
      rec[t * Dv + c] = acc;
    }
  }
  const auto ours = memattn_test::block_convention_f64(fq, fk, v, S0, s, 256, 1);
  const auto vllm = memattn_test::block_convention_f64(fq, fk, v, S0, s, 256, 0);
  const auto e1 = memattn_test::compare(rec, [&](std::size_t i) { return ours[i]; });
  const auto e2 = memattn_test::compare(rec, [&](std::size_t i) { return vllm[i]; });
  INFO(e1.describe() << " | vLLM: " << e2.describe());
  REQUIRE(e1.rel_rms <= 1e-12);
  REQUIRE(e2.rel_rms > 1e-2);  // the harness sees the bug

  // And the library's chunked prefill follows the recurrence from a random state at s = 0.05.
  LinearConfig c;
  c.Hq = 1;
  c.Hk = 1;
  c.Dk = 64;
  c.Dv = 64;
  c.lens = {300};
  c.decay = {0.05f};
  check_case<float>(c, kF32, kF32);
}

TEST_CASE("linear prefill: MiniMax and TNL schedules, underflowing decay", "[linear][T2]") {
  LinearConfig c;
  c.Hq = 8;
  c.Hk = 8;
  c.Dk = 64;
  c.Dv = 64;
  c.lens = {260};
  const int which = GENERATE(0, 1, 2);
  c.decay = which == 0 ? memattn::linear::decay_rates_minimax(8, 0, 8)
                       : which == 1 ? memattn::linear::decay_rates_minimax(8, 7, 8)
                                    : memattn::linear::decay_rates_tnl(8, 0, 1);  // s up to 7
  check_case<BFloat16>(c, kOutBf16, kStateCpuBf16);
}
