// The KIVI decode quantize-append (kivi_append.cuh) and fused decode (kivi_decode.cuh) run by the
// CPU emulator (simt.hpp) on every CI run, through the wrappers' checks (cuda/kivi_params.cuh) and
// launch shape (a CTA of 128 threads per (sequence, KV head)). A device view is imported from a
// CPU KiviKvCache after ragged prefills, then both take the same decode steps: after each step
// the kernel's block records are byte-equal to the CPU cache's and its ring rows bit-equal, and
// the decode output matches fp64 attention over that state (the GPU test's tolerance) and the CPU
// cache's own decode on the steps that flush no block. 2/4/8-bit keys and values, head_dim 64
// and 128, GQA groups 1 and 4, residual 0 / 32 / 64, lengths that start empty and cross block
// boundaries (ring flushes). A non-finite k or v is stored as given, flags its sequence, is
// quantised poisoned (== quant::quantize_block, the CPU cache's quantiser) and makes only its
// (sequence, KV head)'s output non-finite.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "common/test_data.hpp"
#include "emu/emu_launch.hpp"
#include "memattn/cpu/kivi_kv_cache.hpp"
#include "memattn/cuda/kivi_params.cuh"

namespace {

namespace mk = memattn::kernels;
namespace quant = memattn::quant;
using memattn::Half;
using memattn::Status;
using memattn_test::worse;

// The GPU test's bound on |o - fp64| / max|v| over the state: codes and scales enter the products
// exactly, only the fp32 accumulation differs.
constexpr double kOracleTol = 1e-5;
// The split-KV call on tensor cores: quantization spec Q-K1 (2e-3); its values enter the products
// as fp16 c s_v + z_v (2^-12 of |v|).
constexpr double kQK1Tol = 2e-3;

// Host buffers behind a device view, 0xFF (NaN halves) where nothing was written, so a kernel
// that reads a byte it never wrote shows.
struct HostKivi {
  std::vector<std::uint8_t> blocks;
  std::vector<Half> ring_k, ring_v;
  mk::KiviCacheView view;
  HostKivi(const quant::KvQuantConfig& cfg, int B, int Hkv, int max_blocks)
      : blocks(static_cast<std::size_t>(B) * max_blocks * Hkv * quant::block_layout(cfg).bytes, 0xFF),
        ring_k(static_cast<std::size_t>(B) * (cfg.residual + cfg.group) * Hkv * cfg.head_dim, Half{0xFFFF}),
        ring_v(ring_k),
        view{cfg, quant::block_layout(cfg), blocks.data(), ring_k.data(), ring_v.data(), Hkv, max_blocks} {}
  HostKivi(const HostKivi&) = delete;
};

// As cuda::kivi_append_decode and cuda::kivi_decode: checks, then grid (batch, KV heads) x 128.
void append(const mk::KiviCacheView& c, const std::vector<Half>& k, const std::vector<Half>& v, const std::vector<int>& n_before,
            std::vector<std::uint32_t>& flags) {
  const int B = static_cast<int>(n_before.size());
  REQUIRE(memattn::cuda::kivi_append_check(c, k.data(), v.data(), n_before.data(), flags.data(), B) == Status::kSuccess);
  const mk::KiviAppendParams p{c, k.data(), v.data(), n_before.data(), flags.data(), B};
  memattn_emu::launch(dim3(static_cast<unsigned>(B), static_cast<unsigned>(c.num_kv_heads)), dim3(128), 0,
                      [&] { mk::kivi_append_decode_kernel<128>(p); });
}

void decode(const mk::KiviCacheView& c, const std::vector<float>& q, std::vector<float>& o, const std::vector<int>& n_tokens, int Hq) {
  const int B = static_cast<int>(n_tokens.size());
  REQUIRE(memattn::cuda::kivi_decode_check(c, q.data(), o.data(), n_tokens.data(), B, Hq) == Status::kSuccess);
  const mk::KiviDecodeParams p = memattn::cuda::kivi_decode_params(c, q.data(), o.data(), n_tokens.data(), B, Hq);
  memattn_emu::launch(dim3(static_cast<unsigned>(B), static_cast<unsigned>(c.num_kv_heads)), dim3(128), 0,
                      [&] { mk::kivi_decode_kernel<128>(p); });
}

// As cuda::kivi_decode's split-KV call, on `sms` SMs; returns whether it took the tensor cores.
bool decode_split(const mk::KiviCacheView& c, const std::vector<float>& q, std::vector<float>& o, const std::vector<int>& n_tokens,
                  int Hq, int max_tokens, int split_keys, bool tensor_cores, int sms = 4) {
  const int B = static_cast<int>(n_tokens.size());
  REQUIRE(memattn::cuda::kivi_decode_check(c, q.data(), o.data(), n_tokens.data(), B, Hq) == Status::kSuccess);
  memattn::cuda::KiviPlan pl;
  REQUIRE(memattn::cuda::kivi_plan(c, B, max_tokens, split_keys, tensor_cores, sms, &pl) == Status::kSuccess);
  memattn_emu_test::HostWs ws(memattn::cuda::kivi_workspace_bytes(c, B, Hq, pl));
  memattn::Workspace carve(ws.data(), ws.bytes);
  const memattn::cuda::KiviBuffers buf = memattn::cuda::kivi_carve(carve, c, B, Hq, pl);
  REQUIRE(carve.status() == Status::kSuccess);
  REQUIRE(memattn::cuda::kivi_decode_launches(c, q.data(), o.data(), n_tokens.data(), B, Hq, pl, buf, memattn_emu_test::emu_launch) ==
          Status::kSuccess);
  return pl.mma;
}

// Largest |o - fp64 attention| / max|v| over the query heads of (b, h), the reference attending
// over the dequantised state of the view holding N tokens.
double oracle_error(const mk::KiviCacheView& c, const std::vector<float>& q, const std::vector<float>& o, int b, int h, long long N,
                    int Hq) {
  const int G = c.cfg.group, g = Hq / c.num_kv_heads;
  const std::size_t D = static_cast<std::size_t>(c.cfg.head_dim), n = static_cast<std::size_t>(N);
  const long long nq = N - c.cfg.residual > 0 ? (N - c.cfg.residual) / G * G : 0;
  std::vector<double> K(n * D), V(K.size());
  double vmax = 0;
  for (long long t = 0; t < N; ++t)
    for (int ch = 0; ch < c.cfg.head_dim; ++ch) {
      double& k = K[static_cast<std::size_t>(t) * D + ch];
      double& v = V[static_cast<std::size_t>(t) * D + ch];
      if (t < nq) {
        const quant::BlockView bv{c.record(b, static_cast<int>(t / G), h), c.cfg, c.layout};
        const int u = static_cast<int>(t % G);
        const quant::GroupMeta km = bv.k_meta(ch), vm = bv.v_meta(u, ch / c.cfg.vg());
        k = quant::half_to_double(km.zero) + bv.k_code(u, ch) * quant::half_to_double(km.scale);
        v = quant::half_to_double(vm.zero) + bv.v_code(u, ch) * quant::half_to_double(vm.scale);
      } else {
        k = quant::half_to_double(c.ring_k[c.ring_offset(b, t, h) + ch]);
        v = quant::half_to_double(c.ring_v[c.ring_offset(b, t, h) + ch]);
      }
      vmax = std::max(vmax, std::abs(v));
    }
  double worst = 0;
  for (int gi = 0; gi < g; ++gi) {
    const float* qr = q.data() + (static_cast<std::size_t>(b) * Hq + h * g + gi) * D;
    const float* orow = o.data() + (qr - q.data());
    std::vector<double> s(n), out(D, 0.0);
    double m = -INFINITY, l = 0;
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t ch = 0; ch < D; ++ch) s[t] += static_cast<double>(qr[ch]) * K[t * D + ch];
      s[t] /= std::sqrt(static_cast<double>(D));
      m = std::max(m, s[t]);
    }
    for (std::size_t t = 0; t < n; ++t) {
      const double p = std::exp(s[t] - m);
      l += p;
      for (std::size_t ch = 0; ch < D; ++ch) out[ch] += p * V[t * D + ch];
    }
    for (std::size_t ch = 0; ch < D; ++ch) worst = worse(worst, std::abs(orow[ch] - out[ch] / l) / vmax);
  }
  return worst;
}

// Calls f(view bytes, CPU cache bytes, size) for every block record and live ring row of
// sequence b: imports the CPU state into the view, or compares them.
template <class F>
void zip_state(const memattn::cpu::KiviKvCache& cpu, const mk::KiviCacheView& c, int b, F&& f) {
  const std::int64_t G = c.cfg.group, nq = cpu.quantized_tokens(b, 0), N = cpu.stored_tokens(b, 0);
  const std::size_t row = static_cast<std::size_t>(c.cfg.head_dim) * sizeof(Half);
  for (int h = 0; h < c.num_kv_heads; ++h) {
    for (std::int64_t j = 0; j < nq / G; ++j) f(c.record(b, static_cast<int>(j), h), cpu.block(b, 0, h, j).rec, c.layout.bytes);
    for (std::int64_t pos = nq; pos < N; ++pos) {
      f(c.ring_k + c.ring_offset(b, pos, h), cpu.ring_k(b, 0, h, pos), row);
      f(c.ring_v + c.ring_offset(b, pos, h), cpu.ring_v(b, 0, h, pos), row);
    }
  }
}

// count fp16 elements of keys and values (rows [n][Hkv][D]); every 16th key channel is offset by
// 5, so per-channel key ranges differ, as KIVI assumes.
void tokens(std::mt19937& rng, std::size_t count, std::vector<Half>* k, std::vector<Half>* v) {
  std::normal_distribution<float> nd(0.f, 1.f);
  k->resize(count);
  v->resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    (*k)[i] = memattn::float_to_half((i % 16 == 3 ? 5.f : 0.f) + nd(rng));
    (*v)[i] = memattn::float_to_half(nd(rng));
  }
}

std::vector<float> to_float(const Half* x, std::size_t n) {
  std::vector<float> r(n);
  for (std::size_t i = 0; i < n; ++i) r[i] = memattn::half_to_float(x[i]);
  return r;
}

struct KiviCase {
  int D, Hq, Hkv, bits_k, bits_v, residual;
  std::vector<int> prefill;  // tokens per sequence before the decode steps
  int steps;
  int group = 32;
  int split_keys = 32;       // of the split-KV calls after each step (0: planned)
  bool flushes = true;       // prefilled to flush during the steps
};

void run_case(const KiviCase& kc) {
  const int B = static_cast<int>(kc.prefill.size()), D = kc.D, Hq = kc.Hq, Hkv = kc.Hkv;
  INFO("D " << D << " g " << Hq / Hkv << " K" << kc.bits_k << "V" << kc.bits_v << " R " << kc.residual << " reversed "
            << memattn_emu::reverse_ctas());
  quant::KvQuantConfig cfg;
  cfg.head_dim = D;
  cfg.bits_k = kc.bits_k;
  cfg.bits_v = kc.bits_v;
  cfg.residual = kc.residual;
  cfg.group = kc.group;
  memattn::cache::CacheShape shape;
  shape.layers = 1;
  shape.q_heads = Hq;
  shape.kv_heads = Hkv;
  shape.head_dim = D;
  shape.max_tokens = *std::max_element(kc.prefill.begin(), kc.prefill.end()) + kc.steps;
  shape.max_sequences = B;
  std::unique_ptr<memattn::cpu::KiviKvCache> cpu;
  REQUIRE(memattn::cpu::KiviKvCache::create(shape, cfg, memattn::Executor{}, &cpu) == Status::kSuccess);
  std::mt19937 rng(static_cast<unsigned>(D * 131 + kc.bits_k * 7 + kc.bits_v + kc.residual));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<Half> k, v;
  for (int b = 0; b < B; ++b) {
    const int n = kc.prefill[static_cast<std::size_t>(b)];
    if (n == 0) continue;
    tokens(rng, static_cast<std::size_t>(n * Hkv * D), &k, &v);
    const std::vector<float> kf = to_float(k.data(), k.size()), vf = to_float(v.data(), v.size());
    REQUIRE(cpu->append(b, 0, memattn::make_view<3>(kf.data(), {n, Hkv, D}), memattn::make_view<3>(vf.data(), {n, Hkv, D})) ==
            Status::kSuccess);
    REQUIRE(cpu->end_chunk(b, {}) == Status::kSuccess);
  }
  HostKivi dev(cfg, B, Hkv, shape.max_tokens / cfg.group + 1);
  for (int b = 0; b < B; ++b) zip_state(*cpu, dev.view, b, [](void* to, const void* from, std::size_t n) { std::memcpy(to, from, n); });
  std::vector<int> n(kc.prefill);
  std::vector<std::uint32_t> flags(static_cast<std::size_t>(B), 0);
  const std::size_t kv_row = static_cast<std::size_t>(Hkv * D), q_row = static_cast<std::size_t>(Hq * D);
  double worst = 0, worst_cpu = 0, worst_split[2] = {0, 0};  // CUDA cores, tensor cores
  int flushes = 0, mma_calls = 0;
  for (int step = 0; step < kc.steps; ++step) {
    INFO("step " << step);
    tokens(rng, B * kv_row, &k, &v);
    std::vector<float> q(B * q_row), o(q.size(), NAN), o_cpu(q.size());
    for (float& x : q) x = nd(rng);
    append(dev.view, k, v, n, flags);
    std::vector<char> flushed(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b) {
      const std::int64_t nq = cpu->quantized_tokens(b, 0);
      const std::vector<float> kf = to_float(k.data() + b * kv_row, kv_row), vf = to_float(v.data() + b * kv_row, kv_row);
      REQUIRE(cpu->attend(b, 0, memattn::make_view<3>(static_cast<const float*>(q.data() + b * q_row), {1, Hq, D}),
                          memattn::make_view<3>(kf.data(), {1, Hkv, D}), memattn::make_view<3>(vf.data(), {1, Hkv, D}),
                          memattn::make_view<3>(o_cpu.data() + b * q_row, {1, Hq, D})) == Status::kSuccess);
      REQUIRE(cpu->end_chunk(b, {}) == Status::kSuccess);
      ++n[static_cast<std::size_t>(b)];
      flushed[static_cast<std::size_t>(b)] = cpu->quantized_tokens(b, 0) != nq;
    }
    decode(dev.view, q, o, n, Hq);
    // the split-KV call, on CUDA cores (several splits, and one: no workspace) and, where the
    // layout allows, tensor cores
    for (int call = 0; call < 3; ++call) {
      const int tc = call == 1;
      std::vector<float> os(q.size(), NAN);
      const bool mma = decode_split(dev.view, q, os, n, Hq, shape.max_tokens, call == 2 ? 1 << 20 : kc.split_keys, tc == 1);
      REQUIRE(mma == (tc == 1 && memattn::cuda::kivi_mma_layout(dev.view)));
      mma_calls += mma;
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < Hkv; ++h)
          worst_split[tc] = worse(worst_split[tc], oracle_error(dev.view, q, os, b, h, n[static_cast<std::size_t>(b)], Hq));
    }
    for (int b = 0; b < B; ++b) {
      int differ = 0;
      zip_state(*cpu, dev.view, b, [&](const void* a, const void* c, std::size_t bytes) { differ += std::memcmp(a, c, bytes) != 0; });
      REQUIRE(differ == 0);
      for (int h = 0; h < Hkv; ++h) worst = worse(worst, oracle_error(dev.view, q, o, b, h, n[static_cast<std::size_t>(b)], Hq));
      // The CPU decode attends before it appends: on a flush it still reads the G tokens exact.
      flushes += flushed[static_cast<std::size_t>(b)];
      for (std::size_t i = b * q_row; i < (b + 1) * q_row && !flushed[static_cast<std::size_t>(b)]; ++i)
        worst_cpu = worse(worst_cpu, std::abs(o[i] - o_cpu[i]) / std::max(1.f, std::abs(o_cpu[i])));
    }
  }
  INFO("fp64 error " << worst << ", CPU cache error " << worst_cpu << ", flushes " << flushes << ", split-KV: CUDA cores "
                      << worst_split[0] << ", tensor cores " << worst_split[1] << " (" << mma_calls << " calls)");
  if (kc.flushes) CHECK(flushes >= B - 1);  // every sequence but possibly one is prefilled to just before a flush
  CHECK(worst < kOracleTol);
  CHECK(worst_split[0] < kOracleTol);
  CHECK(worst_split[1] < (mma_calls > 0 ? kQK1Tol : kOracleTol));
  CHECK(worst_cpu < 1e-5);
  for (std::uint32_t f : flags) CHECK(f == 0);
}

}  // namespace

TEST_CASE("emulated KIVI append + decode == CPU KiviKvCache (bits, head dims, GQA, ragged, flushes)", "[emu][kivi]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    // Flushes come at N = R + G, R + 2G, ...: the ragged prefills put them at different steps per
    // sequence (a launch mixes flushing and plain CTAs); some sequences start empty or nearly.
    run_case({64, 4, 4, 2, 2, 32, {0, 50, 93}, 40});
    run_case({64, 8, 2, 4, 8, 0, {5, 31, 70}, 36});
    run_case({128, 8, 2, 8, 4, 64, {1, 60, 130}, 40});
    run_case({128, 2, 2, 2, 8, 32, {33, 62}, 36});
    run_case({64, 8, 2, 8, 2, 0, {20, 40}, 30});
    run_case({64, 4, 4, 4, 4, 32, {90, 0}, 30});
  }
}

// The split-KV call's tensor-core path reads the KIVI records in place: channel-major V codes
// (at 2 bits a word pairs keys i, i + 8), group-major V meta, blocks Hkv records apart; the ring
// rides in one more partial. Every layout the path takes (head_dim 64 / 128, 2- / 4-bit K and V,
// groups 32 / 64 / 128, so tiles inside a block), GQA 1 / 4 / 8, splits that start inside a block,
// sequences with no quantised token or an empty ring (R = 0).
TEST_CASE("emulated KIVI split-KV decode on tensor cores (records read in place) == fp64 attention", "[emu][kivi]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    run_case({128, 8, 2, 2, 2, 64, {300, 10, 191}, 4, 64, 96, false});
    run_case({64, 4, 4, 4, 2, 0, {255, 128}, 3, 128, 64, false});
    run_case({128, 8, 1, 2, 4, 32, {200, 97, 0}, 3, 32, 32, false});
    run_case({64, 2, 2, 4, 4, 128, {400, 140}, 3, 64, 0, false});
  }
}

TEST_CASE("emulated KIVI: non-finite k / v stored as given, flagged, quantised poisoned, never laundered", "[emu][kivi]") {
  const int B = 3, D = 64, Hq = 4, Hkv = 2, T = 40;  // R = 0: the poisoned tokens are flushed at N = 32
  const int kStep = 5, kChannel = 7;  // NaN key of sequence 1, KV head 0
  const int vStep = 9, vChannel = 3;  // +inf value of sequence 2, KV head 1
  quant::KvQuantConfig cfg;
  cfg.head_dim = D;
  cfg.bits_k = 2;
  cfg.bits_v = 4;
  cfg.residual = 0;
  const int G = cfg.group;
  auto at = [&](int t, int b, int h) { return ((static_cast<std::size_t>(t) * B + b) * Hkv + h) * D; };  // [T][B][Hkv][D]
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    INFO("reversed " << reverse);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<Half> hk, hv;
    tokens(rng, at(T, 0, 0), &hk, &hv);
    hk[at(kStep, 1, 0) + kChannel] = Half{0x7E00};
    hv[at(vStep, 2, 1) + vChannel] = Half{0x7C00};
    HostKivi dev(cfg, B, Hkv, T / G + 1);
    std::vector<int> n(static_cast<std::size_t>(B), 0);
    std::vector<std::uint32_t> flags(static_cast<std::size_t>(B), 0);
    for (int t = 0; t < T; ++t) {
      INFO("step " << t);
      const std::vector<Half> k(hk.begin() + at(t, 0, 0), hk.begin() + at(t + 1, 0, 0)),
          v(hv.begin() + at(t, 0, 0), hv.begin() + at(t + 1, 0, 0));
      append(dev.view, k, v, n, flags);
      for (int& x : n) ++x;
      std::vector<float> q(static_cast<std::size_t>(B * Hq * D)), o(q.size(), NAN);
      for (float& x : q) x = nd(rng);
      decode(dev.view, q, o, n, Hq);
      // the split-KV call on CUDA cores and on tensor cores (this layout takes them): the same
      // outputs, poison included
      std::vector<float> os[2] = {o, o};
      for (int tc = 0; tc < 2; ++tc) {
        std::fill(os[tc].begin(), os[tc].end(), NAN);
        REQUIRE(decode_split(dev.view, q, os[tc], n, Hq, T, 32, tc == 1) == (tc == 1));
      }
      CHECK(flags[0] == 0);
      CHECK(flags[1] == (t >= kStep ? quant::kQuantNonFinite : 0u));
      CHECK(flags[2] == (t >= vStep ? quant::kQuantNonFinite : 0u));
      const long long nq = (t + 1) / G * G;
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < Hkv; ++h) {
          const bool k_bad = b == 1 && h == 0 && t >= kStep, v_bad = b == 2 && h == 1 && t >= vStep;
          for (long long j = 0; j < nq / G; ++j) {
            std::vector<const Half*> kr, vr;
            for (int u = 0; u < G; ++u) {
              kr.push_back(&hk[at(static_cast<int>(j) * G + u, b, h)]);
              vr.push_back(&hv[at(static_cast<int>(j) * G + u, b, h)]);
            }
            std::vector<std::uint8_t> want(dev.view.layout.bytes);
            CHECK(quant::quantize_block(cfg, kr.data(), vr.data(), want.data()) == (k_bad || v_bad ? quant::kQuantNonFinite : 0u));
            REQUIRE(std::memcmp(want.data(), dev.view.record(b, static_cast<int>(j), h), want.size()) == 0);
          }
          for (long long u = nq; u <= t; ++u) {
            REQUIRE(std::memcmp(&dev.ring_k[dev.view.ring_offset(b, u, h)], &hk[at(static_cast<int>(u), b, h)], D * sizeof(Half)) == 0);
            REQUIRE(std::memcmp(&dev.ring_v[dev.view.ring_offset(b, u, h)], &hv[at(static_cast<int>(u), b, h)], D * sizeof(Half)) == 0);
          }
          if (!k_bad && !v_bad) {
            CHECK(oracle_error(dev.view, q, o, b, h, t + 1, Hq) < kOracleTol);
            CHECK(oracle_error(dev.view, q, os[0], b, h, t + 1, Hq) < kOracleTol);
            CHECK(oracle_error(dev.view, q, os[1], b, h, t + 1, Hq) < kQK1Tol);
            continue;
          }
          // A NaN key poisons every logit of the head; an infinite value its channel (then, once
          // quantised, its value group).
          for (int gi = 0; gi < Hq / Hkv; ++gi)
            for (int ch = k_bad ? 0 : vChannel; ch < (k_bad ? D : vChannel + 1); ++ch) {
              const std::size_t i = (static_cast<std::size_t>(b) * Hq + h * (Hq / Hkv) + gi) * D + ch;
              CHECK_FALSE(std::isfinite(o[i]));
              CHECK_FALSE(std::isfinite(os[0][i]));
              CHECK_FALSE(std::isfinite(os[1][i]));
            }
        }
    }
  }
}

namespace {

// fast_code (the append kernel's fp32 code estimate) with its quant::encode fallback near rounding
// boundaries == quant::encode for every finite fp16 x of each group range tried.
template <int L>
long long fast_code_mismatches(std::uint16_t a, std::uint16_t b, long long* checked, long long* fallbacks) {
  namespace ka = mk::kivi_append_detail;
  auto value = [](std::uint16_t h) { return quant::half_to_double(memattn::Half{h}); };
  double lo = value(a), hi = value(b);
  if (lo > hi) std::swap(lo, hi);
  const quant::GroupMeta m = quant::range_params(lo, hi, L);
  const uint2 sm = ka::smem_meta(m.scale.bits | (static_cast<std::uint32_t>(m.zero.bits) << 16));
  long long bad = 0;
  for (std::uint32_t x = 0; x < 65536; ++x) {
    if ((x & 0x7C00u) == 0x7C00u || value(static_cast<std::uint16_t>(x)) < lo || value(static_cast<std::uint16_t>(x)) > hi) continue;
    bool near = false;
    std::uint32_t code = ka::fast_code<L>(static_cast<std::uint16_t>(x), sm, &near);
    if (near) {
      ++*fallbacks;
      code = quant::encode(memattn::Half{static_cast<std::uint16_t>(x)}, ka::group_meta(sm), L);
    }
    ++*checked;
    bad += code != quant::encode(memattn::Half{static_cast<std::uint16_t>(x)}, m, L);
  }
  return bad;
}

}  // namespace

TEST_CASE("KIVI append's fp32 code estimate + encode fallback == quant::encode (every x of random groups)", "[emu][kivi]") {
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> any(0, 0xFFFF);
  auto finite = [&] {
    for (;;) {
      const std::uint16_t h = static_cast<std::uint16_t>(any(rng));
      if ((h & 0x7C00u) != 0x7C00u) return h;
    }
  };
  long long checked = 0, fallbacks = 0, bad = 0;
  for (int i = 0; i < 48; ++i) {
    std::uint16_t a = finite(), b = 0;
    switch (i % 4) {
      case 0: b = finite(); break;                                                  // any two values
      case 1: b = static_cast<std::uint16_t>(a ^ (any(rng) & 0x03FF)); break;       // same exponent
      case 2: b = static_cast<std::uint16_t>((a & 0x8000) | std::min(0x7BFF, (a & 0x7FFF) + (any(rng) & 0x1FFF))); break;
      default: {  // integer ranges: many exact ties (x - z) / s = k + 1/2
        const int lo = any(rng) % 64 - 32, hi = lo + 1 + any(rng) % 300;
        a = memattn::float_to_half(static_cast<float>(lo)).bits;
        b = memattn::float_to_half(static_cast<float>(hi)).bits;
      }
    }
    bad += fast_code_mismatches<3>(a, b, &checked, &fallbacks);
    bad += fast_code_mismatches<15>(a, b, &checked, &fallbacks);
    bad += fast_code_mismatches<255>(a, b, &checked, &fallbacks);
  }
  INFO("checked " << checked << " codes, " << fallbacks << " through the fallback");
  CHECK(bad == 0);
  CHECK(checked > 1000000);
  CHECK(fallbacks > 0);  // the boundary band is reached (ties of the integer ranges)
}
