// Random linear-attention problems for the CPU and GPU tests (spec §5.3 input rules): randn
// q/k/v rounded to the input dtype (never scaled down), explicit scale 1/√Dk, nonzero random
// initial state N(0, 8²) (z: |N(0, 8²)|; a reachable state for the normalised Taylor map), NaN in every padding row and in the gaps of strided
// (fused QKV) views, outputs pre-filled with a sentinel, non-identity slots.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/linear_reference.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/linear/linear_args.hpp"

namespace memattn_test {

struct LinearConfig {
  std::int64_t Hq = 2, Hk = 2, Dk = 64, Dv = 64;
  FeatureMap fm = FeatureMap::kIdentity;
  bool normalize = false;
  memattn::linear::GqaState gqa = memattn::linear::GqaState::kPerKvHead;
  std::vector<std::int32_t> lens{300};
  bool varlen = false;
  bool fused = false;           // q, k, v strided views of one buffer with NaN gaps
  std::vector<float> decay;     // [Hs] or empty (no decay)
  bool stateful = true;
  bool init_state = true;
  float alpha = 0.25f, eps = 1e-6f;
  std::uint32_t seed = 1;
  float sentinel = 12352.f;     // exact in fp16 and bf16
};

template <class T>
struct LinearProblem {
  LinearConfig cfg;
  std::int64_t N = 0, rows = 0, t_pad = 0, kphi = 0, Hs = 0, P = 0;
  std::int64_t q_off = 0, k_off = 0, v_off = 0, q_rs = 0, k_rs = 0, v_rs = 0;
  std::vector<T> qkv, o;
  std::vector<std::int32_t> cu, lens, slot_in;
  std::vector<std::uint8_t> has_init;
  std::vector<float> pool, zpool;
  std::vector<double> S0, z0;  // per-sequence initial states for the reference

  explicit LinearProblem(const LinearConfig& c) : cfg(c) {
    N = static_cast<std::int64_t>(c.lens.size());
    kphi = phi_dim(c.fm, static_cast<int>(c.Dk));
    Hs = c.gqa == memattn::linear::GqaState::kPerQueryHead ? c.Hq : c.Hk;
    std::int64_t total = 0, mx = 1;
    for (auto l : c.lens) {
      total += l;
      mx = std::max<std::int64_t>(mx, l);
    }
    if (c.varlen) {
      rows = total + 3;  // rows past cu[N]: padding
      cu.push_back(0);
      for (auto l : c.lens) cu.push_back(cu.back() + l);
    } else {
      t_pad = mx;
      rows = N * t_pad;
      lens = c.lens;
    }
    const T nan = memattn::from_float<T>(std::numeric_limits<float>::quiet_NaN());
    std::mt19937 rng(c.seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    const std::int64_t gap = c.fused ? 8 : 0;
    q_rs = c.Hq * c.Dk;
    k_rs = c.Hk * c.Dk;
    v_rs = c.Hk * c.Dv;
    if (c.fused) {
      const std::int64_t rs = q_rs + k_rs + v_rs + 3 * gap;
      q_off = 0;
      k_off = q_rs + gap;
      v_off = k_off + k_rs + gap;
      q_rs = k_rs = v_rs = rs;
      qkv.assign(static_cast<std::size_t>(rows * rs), nan);
    } else {
      q_off = 0;
      k_off = rows * q_rs;
      v_off = k_off + rows * k_rs;
      qkv.assign(static_cast<std::size_t>(v_off + rows * v_rs), nan);
    }
    auto fill = [&](std::int64_t off, std::int64_t rs, std::int64_t H, std::int64_t D) {
      for (std::int64_t n = 0; n < N; ++n) {
        const std::int64_t b = c.varlen ? cu[n] : n * t_pad;
        for (std::int64_t t = 0; t < c.lens[n]; ++t)
          for (std::int64_t x = 0; x < H * D; ++x) qkv[static_cast<std::size_t>(off + (b + t) * rs + x)] = memattn::from_float<T>(nd(rng));
      }
    };
    fill(q_off, q_rs, c.Hq, c.Dk);
    fill(k_off, k_rs, c.Hk, c.Dk);
    fill(v_off, v_rs, c.Hk, c.Dv);
    o.assign(static_cast<std::size_t>(rows * c.Hq * c.Dv), memattn::from_float<T>(c.sentinel));
    P = N + 2;
    const std::int64_t sf = Hs * kphi * c.Dv;
    pool.assign(static_cast<std::size_t>(P * sf), std::numeric_limits<float>::quiet_NaN());
    zpool.assign(static_cast<std::size_t>(P * Hs * kphi), std::numeric_limits<float>::quiet_NaN());
    std::normal_distribution<float> sd(0.f, 8.f);
    for (auto& x : pool) x = sd(rng);
    for (auto& x : zpool) x = std::abs(sd(rng));
    if (c.fm == FeatureMap::kTaylor2 && c.normalize) reachable_taylor_states();
    for (std::int64_t n = 0; n < N; ++n) slot_in.push_back(static_cast<std::int32_t>(P - 1 - n));
    has_init.assign(static_cast<std::size_t>(N), c.init_state ? 1 : 0);
    refresh_initial();
  }

  // A normalised Taylor state must be one a history can reach: φ has signed features, so a
  // random z makes φ(q)·z cross zero and the output 1/den-singular (the 16-bit rounding of φ(q)
  // alone then gave rel-RMS 0.088 on both GPU schedules). Each slot holds the state of 64 random
  // tokens instead (z = Σφ(k), S = Σφ(k)vᵀ), so φ(q)·z = Σ(1 + αs + (αs)²/2) > 0 as in a model.
  void reachable_taylor_states() {
    std::mt19937 rng(cfg.seed + 101);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::fill(pool.begin(), pool.end(), 0.f);
    std::fill(zpool.begin(), zpool.end(), 0.f);
    std::vector<double> k(static_cast<std::size_t>(cfg.Dk)), v(static_cast<std::size_t>(cfg.Dv));
    for (std::int64_t s = 0; s < P * Hs; ++s) {
      float* S = pool.data() + s * kphi * cfg.Dv;
      float* z = zpool.data() + s * kphi;
      for (int t = 0; t < 64; ++t) {
        for (auto& x : k) x = nd(rng);
        for (auto& x : v) x = nd(rng);
        const std::vector<double> f = phi64(cfg.fm, k, cfg.alpha);
        for (std::int64_t i = 0; i < kphi; ++i) {
          z[i] += static_cast<float>(f[static_cast<std::size_t>(i)]);
          for (std::int64_t e = 0; e < cfg.Dv; ++e)
            S[i * cfg.Dv + e] += static_cast<float>(f[static_cast<std::size_t>(i)] * v[static_cast<std::size_t>(e)]);
        }
      }
    }
  }

  // S0/z0 from the pool (call after changing slots or the pool).
  void refresh_initial() {
    const std::int64_t sf = Hs * kphi * cfg.Dv;
    S0.assign(static_cast<std::size_t>(N * sf), 0.0);
    z0.assign(static_cast<std::size_t>(N * Hs * kphi), 0.0);
    if (!cfg.stateful) return;
    for (std::int64_t n = 0; n < N; ++n) {
      if (slot_in[n] < 0 || !has_init[n]) continue;
      for (std::int64_t i = 0; i < sf; ++i) S0[static_cast<std::size_t>(n * sf + i)] = pool[static_cast<std::size_t>(slot_in[n] * sf + i)];
      for (std::int64_t i = 0; i < Hs * kphi; ++i)
        z0[static_cast<std::size_t>(n * Hs * kphi + i)] = zpool[static_cast<std::size_t>(slot_in[n] * Hs * kphi + i)];
    }
  }

  // Args over the given base pointers (host buffers of this object, or device copies).
  memattn::linear::LinearArgs<T> args(const T* qkv_base, T* o_base, float* pool_base, float* z_base,
                                      const std::int32_t* cu_p, const std::int32_t* lens_p,
                                      const std::int32_t* slot_p, const std::uint8_t* init_p,
                                      const float* decay_p) const {
    memattn::linear::LinearArgs<T> a;
    a.q = memattn::make_strided_view<3>(qkv_base + q_off, {rows, cfg.Hq, cfg.Dk}, {q_rs, cfg.Dk, 1});
    a.k = memattn::make_strided_view<3>(qkv_base + k_off, {rows, cfg.Hk, cfg.Dk}, {k_rs, cfg.Dk, 1});
    a.v = memattn::make_strided_view<3>(qkv_base + v_off, {rows, cfg.Hk, cfg.Dv}, {v_rs, cfg.Dv, 1});
    if (o_base) a.o = memattn::make_view<3>(o_base, {rows, cfg.Hq, cfg.Dv});
    a.seq.num_seqs = N;
    if (cfg.varlen) a.seq.cu_seqlens = cu_p;
    else a.seq.seq_lens = lens_p;
    if (cfg.stateful) {
      a.state.pool = pool_base;
      a.state.num_slots = P;
      a.state.slot_in = slot_p;
      a.state.has_init = init_p;
      if (cfg.normalize) a.state.z_pool = z_base;
    }
    a.decay_rate = decay_p;
    a.scale = 1.f / std::sqrt(static_cast<float>(cfg.Dk));
    a.feature_map = cfg.fm;
    if (cfg.fm == FeatureMap::kTaylor2) a.alpha = cfg.alpha;
    a.normalize = cfg.normalize;
    if (cfg.normalize) a.eps = cfg.eps;
    a.gqa = cfg.gqa;
    return a;
  }

  memattn::linear::LinearArgs<T> host_args() {
    return args(qkv.data(), o.data(), pool.data(), zpool.data(), cu.empty() ? nullptr : cu.data(),
                lens.empty() ? nullptr : lens.data(), slot_in.data(), has_init.data(),
                cfg.decay.empty() ? nullptr : cfg.decay.data());
  }

  LinearRef reference(bool quadratic = false) {
    return linear_reference_f64(host_args(), S0, z0, quadratic);
  }

  // Final state of sequence n as stored in `pool_data` (slot_in, in place), as doubles.
  std::vector<double> state_of(const std::vector<float>& pool_data, std::int64_t n) const {
    const std::int64_t sf = Hs * kphi * cfg.Dv;
    std::vector<double> s(static_cast<std::size_t>(sf));
    for (std::int64_t i = 0; i < sf; ++i) s[static_cast<std::size_t>(i)] = pool_data[static_cast<std::size_t>(slot_in[n] * sf + i)];
    return s;
  }

  // Compare outputs (valid rows) against a reference.
  ErrStats compare_output(const std::vector<T>& got, const LinearRef& ref) const {
    return compare(ref.o, [&](std::size_t i) { return static_cast<double>(memattn::to_float(got[i])); });
  }
  // Compare the final states of every non-skipped sequence against ref.S.
  ErrStats compare_state(const std::vector<float>& pool_data, const LinearRef& ref) const {
    const std::int64_t sf = Hs * kphi * cfg.Dv;
    std::vector<double> want = ref.S;  // skipped sequences: not compared
    for (std::int64_t n = 0; n < N; ++n)
      if (slot_in[n] < 0)
        for (std::int64_t i = 0; i < sf; ++i) want[static_cast<std::size_t>(n * sf + i)] = std::numeric_limits<double>::quiet_NaN();
    return compare(want, [&](std::size_t i) {
      const std::int64_t n = static_cast<std::int64_t>(i) / sf, e = static_cast<std::int64_t>(i) % sf;
      return static_cast<double>(pool_data[static_cast<std::size_t>(slot_in[n] * sf + e)]);
    });
  }
  ErrStats compare_z(const std::vector<float>& z_data, const LinearRef& ref) const {
    const std::int64_t zf = Hs * kphi;
    std::vector<double> want = ref.z;
    for (std::int64_t n = 0; n < N; ++n)
      if (slot_in[n] < 0)
        for (std::int64_t i = 0; i < zf; ++i) want[static_cast<std::size_t>(n * zf + i)] = std::numeric_limits<double>::quiet_NaN();
    return compare(want, [&](std::size_t i) {
      const std::int64_t n = static_cast<std::int64_t>(i) / zf, e = static_cast<std::int64_t>(i) % zf;
      return static_cast<double>(z_data[static_cast<std::size_t>(slot_in[n] * zf + e)]);
    });
  }
};

}  // namespace memattn_test
