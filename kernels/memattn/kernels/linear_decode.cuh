// Linear-attention decode and extend (spec P2): 1..16 tokens per sequence with the state slice in
// registers, so each fp32 state element is read once and written once per call (bandwidth-bound
// on the state). Kernel behind memattn/cuda/linear_attention.cuh.
//
//  * One CTA (128 threads) per (sequence, state head, 32-column V slice). Thread (rg, cg):
//    rg = tid / 8 owns state rows rg, rg + 16, ... (up to 10 rows for Taylor's 160), cg = tid % 8
//    owns 4 contiguous columns: 128-bit streaming loads/stores (__ldcs/__stcs: the state is not
//    reused before the next layer), eight threads cover 128 contiguous bytes of a row.
//  * Per token: φ(k), φ(q) of the G query heads and the v slice go to shared memory; then
//    S <- fma(φ(k)_r, v_c, fma(-μ_1, S, S)) (the mandatory expm1 form), z likewise (every slice
//    keeps its own copy of z), o = scale·φ(q)ᵀS reduced over the 16 row groups through shared
//    memory in a fixed order (deterministic), divided by scale·φ(q)·z + eps when normalising.
//    step_slots receive the state after each token; the final write is skipped when write_final
//    is false.
//  * z is written by linear_decode_z_kernel, launched after this one: every V-slice CTA reads the
//    initial z from slot_in, so a slice writing the final z in place (slot_out == slot_in) could
//    overwrite it before a sibling slice of the same launch had read it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/kernels/linear_common.cuh"
#include "memattn/linear/decay.hpp"
#include "memattn/linear/feature_map.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct LinearDecodeParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  std::int64_t q_rs = 0, q_hs = 0, k_rs = 0, k_hs = 0, v_rs = 0, v_hs = 0, o_rs = 0, o_hs = 0;
  const std::int32_t* seq_lens = nullptr;
  int t_pad = 1, num_seqs = 0, state_heads = 0, group = 1, qps = 1, per_kv = 1, dv = 0, kphi = 0, vslices = 1;
  float* pool = nullptr;
  std::int64_t slot_stride = 0;
  const std::int32_t* slot_in = nullptr;
  const std::int32_t* slot_out = nullptr;
  const std::uint8_t* has_init = nullptr;
  float* z_pool = nullptr;
  std::int64_t z_slot_stride = 0;
  int num_slots = 0, stateful = 0;
  const float* decay = nullptr;
  float scale = 0.f, alpha = 0.f, eps = 0.f;
  int normalize = 0;
  const std::int32_t* step_slots = nullptr;
  int write_final = 1;
};

constexpr int kLinearDecodeThreads = 128;
constexpr int kLinearDecodeCols = 32;

template <linear::FeatureMap FM, int DK>
struct LinearDecodeConfig {
  static constexpr bool kTaylor = FM == linear::FeatureMap::kTaylor2;
  static constexpr int kPhi = kTaylor ? 1 + DK + DK * (DK + 1) / 2 : DK;
  static constexpr int kPhiPad = (kPhi + 15) / 16 * 16;
  static constexpr int kRows = kPhiPad / 16;  // state rows per thread
  // Dynamic shared memory: kraw[DK], fk[kPhiPad], v[32], den[qps], red[16][32], then qraw[qps][DK]
  // and fq[qps][kPhiPad], zs[kPhiPad].
  static int smem_bytes(int qps) { return 4 * (DK + kPhiPad + 32 + 64 + 16 * 32 + qps * (DK + kPhiPad) + kPhiPad); }
};

// Feature f of φ(raw) (f < Kφ).
template <linear::FeatureMap FM, int DK>
MEMATTN_DEVICE float decode_feature(int f, const float* raw, float alpha) {
  if (LinearDecodeConfig<FM, DK>::kTaylor) return linear::taylor_feature(linear::taylor_term(f, DK, alpha), raw);
  return linear::phi_elementwise(FM, raw[f]);
}

template <class T, linear::FeatureMap FM, int DK>
MEMATTN_KERNEL void __launch_bounds__(128, 1) linear_decode_kernel(const LinearDecodeParams p) {
  using Cfg = LinearDecodeConfig<FM, DK>;
  using P2 = lin::Pair<T>;
  MEMATTN_DYNAMIC_SMEM(float, dsm);
  float* kraw = dsm;
  float* fk = kraw + DK;
  float* vs = fk + Cfg::kPhiPad;
  float* den = vs + 32;
  float* red = den + 64;
  float* qraw = red + 16 * 32;
  float* fq = qraw + p.qps * DK;
  // zs lives after fq.
  float* zs = fq + p.qps * Cfg::kPhiPad;

  const int tid = threadIdx.x, rg = tid >> 3, cg = tid & 7;
  const int vsl = static_cast<int>(blockIdx.x % p.vslices);
  const int hs = static_cast<int>((blockIdx.x / p.vslices) % p.state_heads);
  const int n = static_cast<int>(blockIdx.x / (static_cast<unsigned>(p.vslices) * p.state_heads));
  if (n >= p.num_seqs) return;
  int s_in = -1, s_out = -1;
  bool init = false;
  if (p.stateful) {
    s_in = p.slot_in ? p.slot_in[n] : n;
    if (s_in < 0 || s_in >= p.num_slots) return;
    s_out = p.slot_out ? p.slot_out[n] : s_in;
    if (s_out < 0 || s_out >= p.num_slots) return;
    init = p.has_init ? p.has_init[n] != 0 : true;
  }
  const int len = p.seq_lens ? p.seq_lens[n] : p.t_pad;
  if (len < 0 || len > p.t_pad) return;
  if (len == 0 && (!p.stateful || (s_out == s_in && init))) return;
  const int kphi = p.kphi, dv = p.dv, c0 = vsl * kLinearDecodeCols + cg * 4;
  const bool col_ok = c0 < dv;
  const int kvh = p.per_kv ? hs : hs / p.group;
  const std::int64_t st_off = static_cast<std::int64_t>(hs) * kphi * dv;
  const float s_rate = p.decay ? p.decay[hs] : 0.f;
  const float mu = p.decay ? linear::decay_mu(s_rate, 1) : 0.f;

  float4 S[Cfg::kRows];
  const float* src = p.stateful && init ? p.pool + s_in * p.slot_stride + st_off : nullptr;
#pragma unroll
  for (int i = 0; i < Cfg::kRows; ++i) {
    const int r = rg + 16 * i;
    S[i] = (src && r < kphi && col_ok) ? __ldcs(reinterpret_cast<const float4*>(src + r * dv + c0))
                                       : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int f = tid; f < Cfg::kPhiPad; f += 128)
    zs[f] = (p.normalize && src && f < kphi) ? p.z_pool[s_in * p.z_slot_stride + hs * kphi + f] : 0.f;

  auto store = [&](int slot) {
    float* dst = p.pool + slot * p.slot_stride + st_off;
#pragma unroll
    for (int i = 0; i < Cfg::kRows; ++i) {
      const int r = rg + 16 * i;
      if (r < kphi && col_ok) __stcs(reinterpret_cast<float4*>(dst + r * dv + c0), S[i]);
    }
  };
  auto features = [&](const float* raw, float* out) {  // φ of one raw row (all threads)
    for (int f = tid; f < Cfg::kPhiPad; f += 128) out[f] = f < kphi ? decode_feature<FM, DK>(f, raw, p.alpha) : 0.f;
  };

  const std::uint16_t* kg = static_cast<const std::uint16_t*>(p.k);
  const std::uint16_t* vg = static_cast<const std::uint16_t*>(p.v);
  const std::uint16_t* qg = static_cast<const std::uint16_t*>(p.q);
  std::uint16_t* og = static_cast<std::uint16_t*>(p.o);
  for (int t = 0; t < len; ++t) {
    const std::int64_t row = static_cast<std::int64_t>(n) * p.t_pad + t;
    __syncthreads();  // previous token's readers are done with the shared vectors
    for (int x = tid; x < DK; x += 128) kraw[x] = P2::one(kg[row * p.k_rs + kvh * p.k_hs + x]);
    if (tid < 32) {
      const int c = vsl * kLinearDecodeCols + tid;
      vs[tid] = c < dv ? P2::one(vg[row * p.v_rs + kvh * p.v_hs + c]) : 0.f;
    }
    if (og != nullptr)
      for (int x = tid; x < p.qps * DK; x += 128) {
        const int g = x / DK, hq = p.per_kv ? hs * p.group + g : hs;
        qraw[x] = P2::one(qg[row * p.q_rs + hq * p.q_hs + (x % DK)]);
      }
    __syncthreads();
    features(kraw, fk);
    if (og != nullptr)
      for (int g = 0; g < p.qps; ++g) features(qraw + g * DK, fq + g * Cfg::kPhiPad);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < Cfg::kRows; ++i) {
      const int r = rg + 16 * i;
      const float f = fk[r];  // 0 on pad rows
      S[i].x = fmaf(f, vs[cg * 4 + 0], fmaf(-mu, S[i].x, S[i].x));
      S[i].y = fmaf(f, vs[cg * 4 + 1], fmaf(-mu, S[i].y, S[i].y));
      S[i].z = fmaf(f, vs[cg * 4 + 2], fmaf(-mu, S[i].z, S[i].z));
      S[i].w = fmaf(f, vs[cg * 4 + 3], fmaf(-mu, S[i].w, S[i].w));
    }
    if (p.normalize)
      for (int f = tid; f < Cfg::kPhiPad; f += 128) zs[f] = fmaf(-mu, zs[f], zs[f]) + fk[f];
    __syncthreads();
    if (og != nullptr) {
      for (int g = 0; g < p.qps; ++g) {
        const float* fqg = fq + g * Cfg::kPhiPad;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int i = 0; i < Cfg::kRows; ++i) {
          const float f = fqg[rg + 16 * i];
          acc.x += f * S[i].x;
          acc.y += f * S[i].y;
          acc.z += f * S[i].z;
          acc.w += f * S[i].w;
        }
        *reinterpret_cast<float4*>(red + rg * 32 + cg * 4) = acc;
        if (tid < 32 && p.normalize) {
          float qz = 0.f;
          for (int f = tid; f < Cfg::kPhiPad; f += 32) qz += fqg[f] * zs[f];
          qz = lin::warp_sum(qz);
          if (tid == 0) den[g] = 1.f / (p.scale * qz + p.eps);
        }
        __syncthreads();
        if (tid < 32) {
          const int c = vsl * kLinearDecodeCols + tid;
          float sum = 0.f;
#pragma unroll
          for (int r = 0; r < 16; ++r) sum += red[r * 32 + tid];
          const int hq = p.per_kv ? hs * p.group + g : hs;
          const float out = p.scale * sum * (p.normalize ? den[g] : 1.f);
          if (c < dv) og[row * p.o_rs + hq * p.o_hs + c] = P2::bits(out);
        }
        __syncthreads();
      }
    }
    if (p.step_slots != nullptr && p.stateful) {
      const int ss = p.step_slots[row];
      if (ss >= 0 && ss < p.num_slots) store(ss);
    }
  }
  if (p.stateful && p.write_final) store(s_out);
}

// The normaliser's z of a stateful decode, after linear_decode_kernel (see its header): one CTA
// per (sequence, state head), thread t owns features t, t + 128; the same recurrence, slot
// checks, step-slot and final writes as the decode kernel's S.
template <class T, linear::FeatureMap FM, int DK>
MEMATTN_KERNEL void __launch_bounds__(128) linear_decode_z_kernel(const LinearDecodeParams p) {
  constexpr int kPer = (LinearDecodeConfig<FM, DK>::kPhi + 127) / 128;
  MEMATTN_SHARED(float, kraw, [DK]);
  const int tid = threadIdx.x;
  const int hs = static_cast<int>(blockIdx.x % p.state_heads), n = static_cast<int>(blockIdx.x / p.state_heads);
  if (n >= p.num_seqs) return;
  const int s_in = p.slot_in ? p.slot_in[n] : n;
  if (s_in < 0 || s_in >= p.num_slots) return;
  const int s_out = p.slot_out ? p.slot_out[n] : s_in;
  if (s_out < 0 || s_out >= p.num_slots) return;
  const bool init = p.has_init ? p.has_init[n] != 0 : true;
  const int len = p.seq_lens ? p.seq_lens[n] : p.t_pad;
  if (len < 0 || len > p.t_pad) return;
  if (len == 0 && s_out == s_in && init) return;
  const int kphi = p.kphi, kvh = p.per_kv ? hs : hs / p.group;
  const std::int64_t z_off = static_cast<std::int64_t>(hs) * kphi;
  const float mu = p.decay ? linear::decay_mu(p.decay[hs], 1) : 0.f;
  float z[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int f = tid + 128 * i;
    z[i] = init && f < kphi ? p.z_pool[s_in * p.z_slot_stride + z_off + f] : 0.f;
  }
  auto store = [&](int slot) {
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      if (tid + 128 * i < kphi) p.z_pool[slot * p.z_slot_stride + z_off + tid + 128 * i] = z[i];
  };
  const std::uint16_t* kg = static_cast<const std::uint16_t*>(p.k);
  for (int t = 0; t < len; ++t) {
    const std::int64_t row = static_cast<std::int64_t>(n) * p.t_pad + t;
    __syncthreads();  // previous token's readers are done with kraw
    for (int x = tid; x < DK; x += 128) kraw[x] = lin::Pair<T>::one(kg[row * p.k_rs + kvh * p.k_hs + x]);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int f = tid + 128 * i;
      if (f < kphi) z[i] = fmaf(-mu, z[i], z[i]) + decode_feature<FM, DK>(f, kraw, p.alpha);
    }
    if (p.step_slots != nullptr) {
      const int ss = p.step_slots[row];
      if (ss >= 0 && ss < p.num_slots) store(ss);
    }
  }
  if (p.write_final) store(s_out);
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
