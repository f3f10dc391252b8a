// Chunked causal linear-attention prefill (the Lightning form) on tensor cores: the kernels
// behind memattn/cuda/linear_attention.cuh. Semantics: memattn/linear/linear_args.hpp.
//
// Work decomposition
//  * One CTA (128 threads, 4 warps) per (segment, state head, V tile of 64 columns); the V tile
//    varies fastest so sibling CTAs that read the same q/k rows run together (shared via L2).
//    Single pass: a segment is a whole sequence. Sequence-parallel (three phases): sequences are
//    cut into segments of seg_len tokens (a multiple of 64, aligned to the sequence start);
//    phase 1 (mode 1) folds every non-last segment into a local summary U_p from a zero state,
//    linear_scan_kernel chains them (S_init[p+1] = fma(-μ_L, S_init[p], S_init[p]) + U_p, in
//    place in the workspace) and copies S_init[0] (the slot's initial state) into segment 0's
//    workspace entry, phase 3 (mode 0) runs each segment from its S_init -- segment 0 too: with
//    in-place slots the last segment's CTA writes the final state into the very slot segment 0
//    would otherwise read, in the same launch (an inter-CTA race racecheck cannot see). For the
//    same reason, with several V tiles the normaliser's initial z comes from z0, a workspace copy
//    linear_z0_kernel makes first: tile 0's CTA writes the final z into the slot itself.
//  * Per chunk of C = 64 tokens (n_c valid; rows >= n_c are zeroed in shared memory by
//    selection, never multiplied by a mask, so NaN padding cannot leak):
//      A  = φ(Q)φ(K)ᵀ       mma.sync m16n8k16, T operands (Taylor: q·k on 16 dims + 1+αs+(αs)²/2)
//      P  = select(i >= j, A·λ^{i-j}, 0)·scale       fp32 in registers, re-packed as the A operand
//      O  = P·V + bf16(scale·λ^{i+1}·φ(Q))·bf16(S)   two MMAs into one fp32 accumulator
//      O /= scale·(rowsum(A) + λ^{i+1} φ(Q)·z) + eps  (normalize)
//      X  = λ^{n_c-1-j} φ(K) (fp32) = Xhi + Xlo (two T roundings: the update keeps ~16 bits)
//      S  = fma(-μ_{n_c}, S, S) + Xhiᵀ·V + Xloᵀ·V    fp32 accumulator, the state stays in registers
//      z  = fma(-μ_{n_c}, z, z) + colsum(X)           (normalize; fp32 in shared memory)
//    Warp w computes output rows [16w, 16w+16) and owns state rows {16(w+4i) .. +16}.
//    bf16(S)ᵀ (the inter MMA's B operand) is republished to shared memory after every chunk.
//  * Decay powers come from a per-CTA table exp2(g2·m), m in [0, 64] (no negative exponents);
//    the chunk decay is the expm1 form.
//  * Every output element is written once (no atomics): bitwise deterministic for a fixed plan.
#pragma once

#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/kernels/linear_common.cuh"
#include "memattn/linear/decay.hpp"
#include "memattn/linear/feature_map.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct LinearPrefillParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;  // nullptr: state-only
  std::int64_t q_rs = 0, q_hs = 0, k_rs = 0, k_hs = 0, v_rs = 0, v_hs = 0, o_rs = 0, o_hs = 0;
  const std::int32_t* cu_seqlens = nullptr;
  const std::int32_t* seq_lens = nullptr;
  int t_pad = 0, rows = 0;
  int num_seqs = 0, state_heads = 0, group = 1, qps = 1, per_kv = 1, dv = 0, kphi = 0, vtiles = 1;
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
  int normalize = 0, need_lo = 1;
  // Sequence-parallel.
  int seg_len = 0;                       // 0: one segment per sequence
  std::int32_t* seg_prefix = nullptr;    // [N + 1] first global segment of each sequence
  float* ws_S = nullptr;                 // [segments, Hs, Kφ, Dv]
  float* ws_z = nullptr;                 // [segments, Hs, Kφ]
  float* z0 = nullptr;                   // [N, Hs, Kφ] initial z, copied (several V tiles read it)
  int mode = 0;                          // 0: outputs + state; 1: summaries of non-last segments
};

template <linear::FeatureMap FM, int DK>
struct LinearPrefillConfig {
  static constexpr bool kTaylor = FM == linear::FeatureMap::kTaylor2;
  static_assert(kTaylor ? DK == 16 : (DK == 64 || DK == 128), "head dim: 64/128, or 16 for Taylor");
  static constexpr int kPhi = kTaylor ? 1 + DK + DK * (DK + 1) / 2 : DK;  // 153 for Taylor
  static constexpr int kPhiPad = kTaylor ? 160 : DK;
  static constexpr int kC = linear::kChunk, kBV = 64, kThreads = 128, kWarps = 4;
  static constexpr int kLdQ = kPhiPad + 8, kLdR = DK + 8, kLdV = kC + 8, kLdS = kPhiPad + 8, kLdX = kC + 8;
  static constexpr int kMT = kPhiPad / 16;
  static constexpr int kMTW = (kMT + kWarps - 1) / kWarps;
  // Shared memory carve (bytes, each a multiple of 16).
  static constexpr int kOffQ = 0;
  static constexpr int kOffQR = kOffQ + kC * kLdQ * 2;
  static constexpr int kOffK = kOffQR + (kTaylor ? kC * kLdR * 2 : 0);
  static constexpr int kOffV = kOffK + kC * kLdR * 2;
  static constexpr int kOffS = kOffV + kBV * kLdV * 2;
  static constexpr int kOffXh = kOffS + kBV * kLdS * 2;
  static constexpr int kOffXl = kOffXh + kPhiPad * kLdX * 2;
  static constexpr int kOffPow = kOffXl + kPhiPad * kLdX * 2;
  static constexpr int kOffZ = kOffPow + 80 * 4;
  static constexpr int kOffTa = kOffZ + kPhiPad * 4;
  static constexpr int kOffTc = kOffTa + kPhiPad * 4;
  static constexpr int kSmemBytes = kOffTc + kPhiPad * 4;
};

namespace lin {

// 16-byte row copy global -> shared, zero when !valid (selection: the load never happens).
MEMATTN_DEVICE uint4 load16(const void* p, bool valid) {
  return valid ? __ldg(reinterpret_cast<const uint4*>(p)) : make_uint4(0u, 0u, 0u, 0u);
}

}  // namespace lin

template <class T, linear::FeatureMap FM, int DK>
MEMATTN_KERNEL void __launch_bounds__(128, 1) linear_prefill_kernel(const LinearPrefillParams p) {
  using Cfg = LinearPrefillConfig<FM, DK>;
  using P2 = lin::Pair<T>;
  using B2 = lin::Pair<BFloat16>;
  constexpr int C = Cfg::kC;
  MEMATTN_DYNAMIC_SMEM(unsigned char, smem);
  std::uint16_t* Qs = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffQ);
  std::uint16_t* QR = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffQR);
  std::uint16_t* Ks = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffK);
  std::uint16_t* VT = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffV);
  std::uint16_t* ST = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffS);
  std::uint16_t* Xh = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffXh);
  std::uint16_t* Xl = reinterpret_cast<std::uint16_t*>(smem + Cfg::kOffXl);
  float* pw = reinterpret_cast<float*>(smem + Cfg::kOffPow);
  float* zs = reinterpret_cast<float*>(smem + Cfg::kOffZ);
  int* ta = reinterpret_cast<int*>(smem + Cfg::kOffTa);
  float* tc = reinterpret_cast<float*>(smem + Cfg::kOffTc);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const int vt = static_cast<int>(blockIdx.x % p.vtiles);
  const int hs = static_cast<int>((blockIdx.x / p.vtiles) % p.state_heads);
  const int gi = static_cast<int>(blockIdx.x / (static_cast<unsigned>(p.vtiles) * p.state_heads));

  // ---- which segment ----
  int n = gi, seg = 0, nsegs = 1;
  if (p.seg_len > 0) {
    if (gi >= p.seg_prefix[p.num_seqs]) return;
    int lo = 0, hi = p.num_seqs - 1;  // largest n with seg_prefix[n] <= gi
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (p.seg_prefix[mid] <= gi) lo = mid;
      else hi = mid - 1;
    }
    n = lo;
    seg = gi - p.seg_prefix[n];
    nsegs = p.seg_prefix[n + 1] - p.seg_prefix[n];
  } else if (n >= p.num_seqs) {
    return;
  }
  const bool last = seg == nsegs - 1;
  if (p.mode == 1 && last) return;
  int row0 = 0, len = 0;
  lin::seq_rows(p.cu_seqlens, p.seq_lens, p.t_pad, n, &row0, &len);
  if (len < 0 || (p.cu_seqlens == nullptr && len > p.t_pad) || row0 < 0 || row0 + len > p.rows) return;
  int s_in = -1, s_out = -1;
  bool init = false;
  if (p.stateful) {
    s_in = p.slot_in ? p.slot_in[n] : n;
    if (s_in < 0 || s_in >= p.num_slots) return;  // -1: skipped sequence
    s_out = p.slot_out ? p.slot_out[n] : s_in;
    if (s_out < 0 || s_out >= p.num_slots) return;
    init = p.has_init ? p.has_init[n] != 0 : true;
  }
  const int seg_begin = seg * p.seg_len;
  const int seg_n = p.seg_len > 0 ? min(p.seg_len, len - seg_begin) : len;
  const int kphi = p.kphi, dv = p.dv, c0v = vt * Cfg::kBV;
  const int kvh = p.per_kv ? hs : hs / p.group;
  const std::int64_t st_off = static_cast<std::int64_t>(hs) * kphi * dv;

  if (len == 0) {  // the state passes through (no decay for zero tokens)
    if (!p.stateful || (s_out == s_in && init)) return;
    float* dst = p.pool + s_out * p.slot_stride + st_off;
    const float* src = p.pool + s_in * p.slot_stride + st_off;
    for (int e = tid; e < kphi * Cfg::kBV; e += Cfg::kThreads) {
      const int r = e / Cfg::kBV, c = c0v + e % Cfg::kBV;
      if (c < dv) dst[r * dv + c] = init ? src[r * dv + c] : 0.f;
    }
    if (p.normalize && vt == 0)
      for (int r = tid; r < kphi; r += Cfg::kThreads)
        p.z_pool[s_out * p.z_slot_stride + hs * kphi + r] = init ? p.z_pool[s_in * p.z_slot_stride + hs * kphi + r] : 0.f;
    return;
  }

  // ---- tables ----
  const float s_rate = p.decay ? p.decay[hs] : 0.f;
  const float g2 = linear::decay_log2(s_rate);
  for (int m = tid; m <= C; m += Cfg::kThreads) pw[m] = p.decay ? exp2f(g2 * static_cast<float>(m)) : 1.f;
  if (Cfg::kTaylor) {
    for (int f = tid; f < Cfg::kPhiPad; f += Cfg::kThreads) {
      const linear::TaylorTerm t = linear::taylor_term(f < Cfg::kPhi ? f : 0, DK, p.alpha);
      ta[f] = f < Cfg::kPhi ? ((t.a + 1) | ((t.b + 1) << 8)) : -1;
      tc[f] = t.coef;
    }
  }

  // ---- initial state: registers (fragment layout) + bf16 transposed copy + z ----
  const float* S_src = nullptr;
  const float* z_src = nullptr;
  if (p.mode == 0 && (seg > 0 || (nsegs > 1 && p.stateful && init))) {
    S_src = p.ws_S + static_cast<std::int64_t>(gi) * p.state_heads * kphi * dv + st_off;
    // ws_z exists only with normalisation (plan_workspace allocates no z summaries otherwise).
    z_src = p.normalize ? p.ws_z + static_cast<std::int64_t>(gi) * p.state_heads * kphi + hs * kphi : nullptr;
  } else if (p.mode == 0 && p.stateful && init) {
    S_src = p.pool + s_in * p.slot_stride + st_off;
    // with several V tiles, tile 0's CTA writes the final z into this slot in the same launch
    z_src = !p.normalize ? nullptr
            : p.z0 != nullptr ? p.z0 + (static_cast<std::int64_t>(n) * p.state_heads + hs) * kphi
                              : p.z_pool + s_in * p.z_slot_stride + hs * kphi;
  }
  float S[Cfg::kMTW][8][4];
#pragma unroll
  for (int i = 0; i < Cfg::kMTW; ++i) {
    const int mt = warp + 4 * i;
#pragma unroll
    for (int nv = 0; nv < 8; ++nv) {
      const int c = c0v + nv * 8 + 2 * tig;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = mt * 16 + gid + 8 * h;
        float2 x = make_float2(0.f, 0.f);
        if (S_src && mt < Cfg::kMT && r < kphi && c < dv) x = *reinterpret_cast<const float2*>(S_src + r * dv + c);
        S[i][nv][2 * h] = x.x;
        S[i][nv][2 * h + 1] = x.y;
      }
    }
  }
  for (int f = tid; f < Cfg::kPhiPad; f += Cfg::kThreads) zs[f] = (z_src && f < kphi) ? z_src[f] : 0.f;
  auto publish_state = [&]() {
#pragma unroll
    for (int i = 0; i < Cfg::kMTW; ++i) {
      const int mt = warp + 4 * i;
      if (mt >= Cfg::kMT) continue;
#pragma unroll
      for (int nv = 0; nv < 8; ++nv) {
        const int c = nv * 8 + 2 * tig, r = mt * 16 + gid;
        ST[c * Cfg::kLdS + r] = B2::bits(S[i][nv][0]);
        ST[(c + 1) * Cfg::kLdS + r] = B2::bits(S[i][nv][1]);
        ST[c * Cfg::kLdS + r + 8] = B2::bits(S[i][nv][2]);
        ST[(c + 1) * Cfg::kLdS + r + 8] = B2::bits(S[i][nv][3]);
      }
    }
  };
  const bool outputs = p.mode == 0 && p.o != nullptr;
  if (outputs) publish_state();
  __syncthreads();

  const std::uint16_t* kg = static_cast<const std::uint16_t*>(p.k);
  const std::uint16_t* vg = static_cast<const std::uint16_t*>(p.v);
  const std::uint16_t* qg = static_cast<const std::uint16_t*>(p.q);
  std::uint16_t* og = static_cast<std::uint16_t*>(p.o);

  for (int c0 = 0; c0 < seg_n; c0 += C) {
    const int nc = min(C, seg_n - c0);
    const int rb = row0 + seg_begin + c0;
    // ---- (a) K rows (raw) and Vᵀ; rows >= nc and columns >= dv are zero ----
    for (int idx = tid; idx < C * (DK / 8); idx += Cfg::kThreads) {
      const int j = idx / (DK / 8), part = idx % (DK / 8);
      const uint4 x = lin::load16(kg + (rb + j) * p.k_rs + kvh * p.k_hs + part * 8, j < nc);
      *reinterpret_cast<uint4*>(Ks + j * Cfg::kLdR + part * 8) = x;
    }
    for (int idx = tid; idx < C * 8; idx += Cfg::kThreads) {
      const int j = idx / 8, part = idx % 8, col = c0v + part * 8;
      const uint4 x = lin::load16(vg + (rb + j) * p.v_rs + kvh * p.v_hs + col, j < nc && col < dv);
      const std::uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
      for (int u = 0; u < 8; ++u)
        VT[(part * 8 + u) * Cfg::kLdV + j] = static_cast<std::uint16_t>(u & 1 ? w[u >> 1] >> 16 : w[u >> 1] & 0xffffu);
    }
    __syncthreads();

    // ---- (b) outputs, one query head of the group at a time ----
    if (outputs) {
      for (int g = 0; g < p.qps; ++g) {
        const int hq = p.per_kv ? hs * p.group + g : hs;
        if (Cfg::kTaylor) {
          for (int idx = tid; idx < C * (DK / 8); idx += Cfg::kThreads) {
            const int j = idx / (DK / 8), part = idx % (DK / 8);
            *reinterpret_cast<uint4*>(QR + j * Cfg::kLdR + part * 8) =
                lin::load16(qg + (rb + j) * p.q_rs + hq * p.q_hs + part * 8, j < nc);
          }
          __syncthreads();
          for (int idx = tid; idx < C * Cfg::kPhiPad; idx += Cfg::kThreads) {
            const int j = idx / Cfg::kPhiPad, f = idx % Cfg::kPhiPad;
            float val = 0.f;
            const int t = ta[f];
            if (j < nc && t >= 0) {
              const int a = (t & 0xff) - 1, b = (t >> 8) - 1;
              const float xa = a < 0 ? 1.f : P2::one(QR[j * Cfg::kLdR + a]);
              const float xb = b < 0 ? 1.f : P2::one(QR[j * Cfg::kLdR + b]);
              val = tc[f] * xa * xb;
            }
            Qs[j * Cfg::kLdQ + f] = P2::bits(val);
          }
        } else {
          for (int idx = tid; idx < C * (DK / 8); idx += Cfg::kThreads) {
            const int j = idx / (DK / 8), part = idx % (DK / 8);
            uint4 x = lin::load16(qg + (rb + j) * p.q_rs + hq * p.q_hs + part * 8, j < nc);
            if (FM != linear::FeatureMap::kIdentity && j < nc) {
              x.x = lin::phi_pair<T, FM>(x.x);
              x.y = lin::phi_pair<T, FM>(x.y);
              x.z = lin::phi_pair<T, FM>(x.z);
              x.w = lin::phi_pair<T, FM>(x.w);
            }
            *reinterpret_cast<uint4*>(Qs + j * Cfg::kLdQ + part * 8) = x;
          }
        }
        __syncthreads();

        const int i0 = warp * 16 + gid, i1 = i0 + 8;
        float sacc[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.f;
        {
          const std::uint16_t* A = Cfg::kTaylor ? QR : Qs;
          const int lda = Cfg::kTaylor ? Cfg::kLdR : Cfg::kLdQ;
#pragma unroll
          for (int kk = 0; kk < DK / 16; ++kk) {
            const int col = kk * 16 + 2 * tig;
            const std::uint32_t a[4] = {lin::ld32(A + i0 * lda + col), lin::ld32(A + i1 * lda + col),
                                        lin::ld32(A + i0 * lda + col + 8), lin::ld32(A + i1 * lda + col + 8)};
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
              const std::uint16_t* kr = Ks + (nt * 8 + gid) * Cfg::kLdR + col;
              lin::mma<T>(sacc[nt], a, lin::phi_pair<T, FM>(lin::ld32(kr)), lin::phi_pair<T, FM>(lin::ld32(kr + 8)));
            }
          }
        }
        // Mask by selection, decay λ^{i-j}, row sums (fp32), P = scale·A re-packed as A operand.
        float rs0 = 0.f, rs1 = 0.f;
        std::uint32_t pf[8][2];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          const int j = nt * 8 + 2 * tig;
          float v[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = e < 2 ? i0 : i1, jj = j + (e & 1);
            float x = sacc[nt][e];
            if (Cfg::kTaylor) x = linear::taylor_kernel(x, p.alpha);
            v[e] = jj <= i ? x * pw[i - jj] : 0.f;
          }
          rs0 += v[0] + v[1];
          rs1 += v[2] + v[3];
          pf[nt][0] = P2::pack(p.scale * v[0], p.scale * v[1]);
          pf[nt][1] = P2::pack(p.scale * v[2], p.scale * v[3]);
        }
        float oacc[8][4];
#pragma unroll
        for (int nv = 0; nv < 8; ++nv) oacc[nv][0] = oacc[nv][1] = oacc[nv][2] = oacc[nv][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          const std::uint32_t a[4] = {pf[2 * ks][0], pf[2 * ks][1], pf[2 * ks + 1][0], pf[2 * ks + 1][1]};
#pragma unroll
          for (int nv = 0; nv < 8; ++nv) {
            const std::uint16_t* vr = VT + (nv * 8 + gid) * Cfg::kLdV + ks * 16 + 2 * tig;
            lin::mma<T>(oacc[nv], a, lin::ld32(vr), lin::ld32(vr + 8));
          }
        }
        // Inter-chunk term: bf16(scale·λ^{i+1}·φ(q)) · bf16(S), and φ(q)·z for the normaliser.
        const float qd0 = p.scale * pw[i0 + 1], qd1 = p.scale * pw[i1 + 1];
        float qz0 = 0.f, qz1 = 0.f;
#pragma unroll 2
        for (int kk = 0; kk < Cfg::kPhiPad / 16; ++kk) {
          const int col = kk * 16 + 2 * tig;
          const float2 f0 = P2::unpack(lin::ld32(Qs + i0 * Cfg::kLdQ + col));
          const float2 f1 = P2::unpack(lin::ld32(Qs + i1 * Cfg::kLdQ + col));
          const float2 f2 = P2::unpack(lin::ld32(Qs + i0 * Cfg::kLdQ + col + 8));
          const float2 f3 = P2::unpack(lin::ld32(Qs + i1 * Cfg::kLdQ + col + 8));
          if (p.normalize) {
            qz0 += f0.x * zs[col] + f0.y * zs[col + 1] + f2.x * zs[col + 8] + f2.y * zs[col + 9];
            qz1 += f1.x * zs[col] + f1.y * zs[col + 1] + f3.x * zs[col + 8] + f3.y * zs[col + 9];
          }
          const std::uint32_t a[4] = {B2::pack(qd0 * f0.x, qd0 * f0.y), B2::pack(qd1 * f1.x, qd1 * f1.y),
                                      B2::pack(qd0 * f2.x, qd0 * f2.y), B2::pack(qd1 * f3.x, qd1 * f3.y)};
#pragma unroll
          for (int nv = 0; nv < 8; ++nv) {
            const std::uint16_t* sr = ST + (nv * 8 + gid) * Cfg::kLdS + col;
            lin::mma<BFloat16>(oacc[nv], a, lin::ld32(sr), lin::ld32(sr + 8));
          }
        }
        float inv0 = 1.f, inv1 = 1.f;
        if (p.normalize) {
          rs0 = lin::quad_sum(rs0);
          rs1 = lin::quad_sum(rs1);
          qz0 = lin::quad_sum(qz0);
          qz1 = lin::quad_sum(qz1);
          inv0 = 1.f / (p.scale * rs0 + qd0 * qz0 + p.eps);
          inv1 = 1.f / (p.scale * rs1 + qd1 * qz1 + p.eps);
        }
#pragma unroll
        for (int nv = 0; nv < 8; ++nv) {
          const int c = c0v + nv * 8 + 2 * tig;
          if (c >= dv) continue;
          if (i0 < nc)
            lin::st32(og + (rb + i0) * p.o_rs + hq * p.o_hs + c, P2::pack(oacc[nv][0] * inv0, oacc[nv][1] * inv0));
          if (i1 < nc)
            lin::st32(og + (rb + i1) * p.o_rs + hq * p.o_hs + c, P2::pack(oacc[nv][2] * inv1, oacc[nv][3] * inv1));
        }
        __syncthreads();
      }
    }

    // ---- (c) X = λ^{n_c-1-j} φ(K) as hi + lo, z update ----
    const float mu = p.decay ? linear::decay_mu(s_rate, nc) : 0.f;
    for (int idx = tid; idx < Cfg::kPhiPad * 32; idx += Cfg::kThreads) {
      const int f = idx >> 5, j0 = 2 * (idx & 31);
      float x[2] = {0.f, 0.f};
      if (f < kphi) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int j = j0 + u;
          if (j < nc) {
            float phi;
            if (Cfg::kTaylor) {
              const int t = ta[f], a = (t & 0xff) - 1, b = (t >> 8) - 1;
              const float xa = a < 0 ? 1.f : P2::one(Ks[j * Cfg::kLdR + a]);
              const float xb = b < 0 ? 1.f : P2::one(Ks[j * Cfg::kLdR + b]);
              phi = tc[f] * xa * xb;
            } else {
              phi = linear::phi_elementwise(FM, P2::one(Ks[j * Cfg::kLdR + f]));
            }
            x[u] = pw[nc - 1 - j] * phi;
          }
        }
      }
      const std::uint32_t hi = P2::pack(x[0], x[1]);
      const float2 hf = P2::unpack(hi);
      lin::st32(Xh + f * Cfg::kLdX + j0, hi);
      lin::st32(Xl + f * Cfg::kLdX + j0, P2::pack(x[0] - hf.x, x[1] - hf.y));
      if (p.normalize) {
        const float sum = lin::warp_sum(x[0] + x[1]);
        if (lane == 0) zs[f] = fmaf(-mu, zs[f], zs[f]) + sum;
      }
    }
    __syncthreads();

    // ---- (d) S = fma(-μ, S, S) + Xhiᵀ V + Xloᵀ V ----
    if (p.decay) {
#pragma unroll
      for (int i = 0; i < Cfg::kMTW; ++i)
#pragma unroll
        for (int nv = 0; nv < 8; ++nv)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[i][nv][e] = fmaf(-mu, S[i][nv][e], S[i][nv][e]);
    }
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      std::uint32_t b[8][2];
#pragma unroll
      for (int nv = 0; nv < 8; ++nv) {
        const std::uint16_t* vr = VT + (nv * 8 + gid) * Cfg::kLdV + ks * 16 + 2 * tig;
        b[nv][0] = lin::ld32(vr);
        b[nv][1] = lin::ld32(vr + 8);
      }
#pragma unroll
      for (int i = 0; i < Cfg::kMTW; ++i) {
        const int mt = warp + 4 * i;
        if (mt >= Cfg::kMT) continue;
        const int r0 = mt * 16 + gid, col = ks * 16 + 2 * tig;
        const std::uint32_t ah[4] = {lin::ld32(Xh + r0 * Cfg::kLdX + col), lin::ld32(Xh + (r0 + 8) * Cfg::kLdX + col),
                                     lin::ld32(Xh + r0 * Cfg::kLdX + col + 8),
                                     lin::ld32(Xh + (r0 + 8) * Cfg::kLdX + col + 8)};
#pragma unroll
        for (int nv = 0; nv < 8; ++nv) lin::mma<T>(S[i][nv], ah, b[nv][0], b[nv][1]);
        if (p.need_lo) {
          const std::uint32_t al[4] = {lin::ld32(Xl + r0 * Cfg::kLdX + col), lin::ld32(Xl + (r0 + 8) * Cfg::kLdX + col),
                                       lin::ld32(Xl + r0 * Cfg::kLdX + col + 8),
                                       lin::ld32(Xl + (r0 + 8) * Cfg::kLdX + col + 8)};
#pragma unroll
          for (int nv = 0; nv < 8; ++nv) lin::mma<T>(S[i][nv], al, b[nv][0], b[nv][1]);
        }
      }
    }
    if (outputs) publish_state();
    __syncthreads();
  }

  // ---- final state ----
  float* S_dst = nullptr;
  float* z_dst = nullptr;
  if (p.mode == 1) {
    S_dst = p.ws_S + static_cast<std::int64_t>(gi + 1) * p.state_heads * kphi * dv + st_off;
    z_dst = p.normalize ? p.ws_z + static_cast<std::int64_t>(gi + 1) * p.state_heads * kphi + hs * kphi : nullptr;
  } else if (last && p.stateful) {
    S_dst = p.pool + s_out * p.slot_stride + st_off;
    z_dst = p.normalize ? p.z_pool + s_out * p.z_slot_stride + hs * kphi : nullptr;
  }
  if (S_dst == nullptr) return;
#pragma unroll
  for (int i = 0; i < Cfg::kMTW; ++i) {
    const int mt = warp + 4 * i;
#pragma unroll
    for (int nv = 0; nv < 8; ++nv) {
      const int c = c0v + nv * 8 + 2 * tig;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = mt * 16 + gid + 8 * h;
        if (mt < Cfg::kMT && r < kphi && c < dv)
          *reinterpret_cast<float2*>(S_dst + r * dv + c) = make_float2(S[i][nv][2 * h], S[i][nv][2 * h + 1]);
      }
    }
  }
  if (p.normalize && vt == 0 && z_dst != nullptr)
    for (int f = tid; f < kphi; f += Cfg::kThreads) z_dst[f] = zs[f];
}

// Phase 2 of the sequence-parallel path: S_init[p+1] = fma(-μ_L, S_init[p], S_init[p]) + U_p,
// in place over the workspace (U_p sits where S_init[p+1] goes). One thread per state element
// (and z element), sequential over segments.
MEMATTN_KERNEL void __launch_bounds__(256) linear_scan_kernel(const LinearPrefillParams p) {
  const int per = p.kphi * p.dv;
  const int e = static_cast<int>(blockIdx.y) * 256 + static_cast<int>(threadIdx.x);
  const int nh = static_cast<int>(blockIdx.x);  // (sequence, state head): x has no 65535 limit
  const int n = nh / p.state_heads, hs = nh % p.state_heads;
  const bool is_z = e >= per;
  if (e >= per + (p.normalize ? p.kphi : 0)) return;
  const int nsegs = p.seg_prefix[n + 1] - p.seg_prefix[n];
  if (nsegs <= 1) return;
  int s_in = -1;
  bool init = false;
  if (p.stateful) {
    s_in = p.slot_in ? p.slot_in[n] : n;
    if (s_in < 0 || s_in >= p.num_slots) return;
    init = p.has_init ? p.has_init[n] != 0 : true;
  }
  const float s_rate = p.decay ? p.decay[hs] : 0.f;
  const float mu = p.decay ? linear::decay_mu(s_rate, p.seg_len) : 0.f;
  float prev = 0.f;
  if (init) prev = is_z ? p.z_pool[s_in * p.z_slot_stride + hs * p.kphi + (e - per)]
                        : p.pool[s_in * p.slot_stride + static_cast<std::int64_t>(hs) * per + e];
  {  // segment 0 starts from this copy, not from the slot the last segment overwrites
    const std::int64_t g = p.seg_prefix[n];
    *(is_z ? p.ws_z + (g * p.state_heads + hs) * p.kphi + (e - per)
           : p.ws_S + (g * p.state_heads + hs) * static_cast<std::int64_t>(per) + e) = prev;
  }
  for (int sg = 1; sg < nsegs; ++sg) {
    const std::int64_t g = p.seg_prefix[n] + sg;
    float* x = is_z ? p.ws_z + (g * p.state_heads + hs) * p.kphi + (e - per)
                    : p.ws_S + (g * p.state_heads + hs) * static_cast<std::int64_t>(per) + e;
    prev = fmaf(-mu, prev, prev) + *x;
    *x = prev;
  }
}

// The initial normaliser state of every (sequence, state head), copied to z0 before the prefill
// (grid N * Hs, 128 threads): CTAs of other V tiles read it there while tile 0 overwrites the slot.
MEMATTN_KERNEL void __launch_bounds__(128) linear_z0_kernel(const LinearPrefillParams p) {
  const int n = static_cast<int>(blockIdx.x) / p.state_heads, hs = static_cast<int>(blockIdx.x) % p.state_heads;
  const int s_in = p.slot_in ? p.slot_in[n] : n;
  if (s_in < 0 || s_in >= p.num_slots) return;  // a skipped sequence: its CTAs return before reading
  const bool init = p.has_init ? p.has_init[n] != 0 : true;
  float* dst = p.z0 + (static_cast<std::int64_t>(n) * p.state_heads + hs) * p.kphi;
  for (int f = static_cast<int>(threadIdx.x); f < p.kphi; f += 128)
    dst[f] = init ? p.z_pool[s_in * p.z_slot_stride + hs * p.kphi + f] : 0.f;
}

// Segment table of the sequence-parallel path: seg_prefix[n] = Σ_{m<n} max(1, ceil(len_m/L)).
MEMATTN_KERNEL void __launch_bounds__(1024) linear_segments_kernel(const LinearPrefillParams p) {
  using Scan = cub::BlockScan<int, 1024>;
  MEMATTN_SHARED(typename Scan::TempStorage, temp, );
  MEMATTN_SHARED(int, carry, );
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int base = 0; base < p.num_seqs; base += 1024) {
    const int n = base + static_cast<int>(threadIdx.x);
    int cnt = 0;
    if (n < p.num_seqs) {
      int row0 = 0, len = 0;
      lin::seq_rows(p.cu_seqlens, p.seq_lens, p.t_pad, n, &row0, &len);
      len = len < 0 ? 0 : len;
      cnt = len == 0 ? 1 : (len + p.seg_len - 1) / p.seg_len;
    }
    int excl = 0, total = 0;
    Scan(temp).ExclusiveSum(cnt, excl, total);
    if (n < p.num_seqs) p.seg_prefix[n] = carry + excl;
    __syncthreads();
    if (threadIdx.x == 0) carry += total;
    __syncthreads();
  }
  if (threadIdx.x == 0) p.seg_prefix[p.num_seqs] = carry;
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
