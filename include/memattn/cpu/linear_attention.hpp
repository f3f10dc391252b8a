// Linear / Lightning attention on the CPU (Eigen, all arithmetic in fp32): chunked causal
// prefill (the Lightning form), decode and small-T extend over an fp32 state pool. Semantics and
// argument contract: memattn/linear/linear_args.hpp; spec ../shared/specs/linear-attention.md.
//
//   std::size_t bytes = 0;
//   memattn::cpu::linear_prefill_workspace_size(args, &bytes, executor);   // phase 1
//   memattn::cpu::linear_prefill(args, workspace, bytes, executor);        // phase 2
//   (likewise linear_decode_workspace_size / linear_decode for 1..16 tokens per sequence)
//
// Prefill, per (sequence, state head, V slice) and chunk of C = 64 tokens aligned to the
// sequence start (n_c <= C tokens, S_prev the exact state before the chunk):
//   A     = φ(Q_c) φ(K_c)ᵀ                       (Taylor: 1 + αs + (αs)²/2 on s = Q_c K_cᵀ)
//   A_ij  = select(i >= j, A_ij · λ^{i-j}, 0)     mask by selection, powers exp2(g2·m), m >= 0
//   O     = scale · (A V_c + diag(λ^{i+1}) φ(Q_c) S_prev)     (÷ the normaliser if asked)
//   S_new = fma(-μ_{n_c}, S_prev, S_prev) + (diag(λ^{n_c-1-j}) φ(K_c))ᵀ V_c
// Decode/extend, per token: S <- fma(-μ_1, S, S) + φ(k) vᵀ; o = scale φ(q)ᵀ S.
//
// Work items are independent (sequence, state head, V slice) tasks run through the caller's
// Executor; the V-slice split depends only on the shapes (never on the worker count), so results
// are bitwise independent of the number of workers. Splitting a prefill at a multiple of 64
// tokens (state carried in the pool) gives bitwise the same outputs and state as one call.
// Nothing is written when the arguments are invalid; rows outside every sequence (padding, NaN
// allowed) are never read and their outputs never written.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "memattn/core/executor.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/linear/decay.hpp"
#include "memattn/linear/feature_map.hpp"
#include "memattn/linear/linear_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace linear_detail {

using linear::FeatureMap;
using linear::kChunk;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatMap = Eigen::Map<RowMatrix, Eigen::Aligned16>;
using VecMap = Eigen::Map<Eigen::Matrix<float, 1, Eigen::Dynamic>, Eigen::Aligned16>;

// Decay powers of one state head: pow[m] = λ^m = exp2(g2·m), mu[m] = -expm1(-m·s), m in [0, C].
struct DecayTables {
  bool decay = false;
  float pow[kChunk + 1];
  float mu[kChunk + 1];
  void init(const float* rates, std::int64_t h) {
    decay = rates != nullptr;
    const float s = decay ? rates[h] : 0.f;
    const float g2 = linear::decay_log2(s);
    for (int m = 0; m <= kChunk; ++m) {
      pow[m] = decay ? linear::decay_pow(g2, m) : 1.f;
      mu[m] = decay ? linear::decay_mu(s, m) : 0.f;
    }
  }
};

// Shape-only V split: enough tasks for a few workers when sequences x heads are few.
struct VSplit {
  std::int64_t slices = 1, width = 0;
};
inline VSplit v_split(const linear::LinearDims& d, bool normalize) {
  VSplit v;
  v.width = d.dv;
  const std::int64_t items = d.num_seqs * d.state_heads;
  if (normalize || items >= 8 || d.dv < 64) return v;  // (z is shared by the slices: no split)
  std::int64_t want = std::min<std::int64_t>(d.dv / 32, (8 + items - 1) / items);
  if (want <= 1) return v;
  v.width = ((d.dv + want - 1) / want + 15) / 16 * 16;
  v.slices = (d.dv + v.width - 1) / v.width;
  return v;
}

struct PrefillScratch {
  float *q = nullptr, *fq = nullptr, *k = nullptr, *fk = nullptr, *v = nullptr, *a = nullptr;
  float *o = nullptr, *oi = nullptr, *s = nullptr, *z = nullptr, *x = nullptr;
};

struct PrefillPlan {
  linear::LinearDims d;
  VSplit vs;
  std::int64_t q_per_state = 1;  // query heads per state head
  int workers = 1;
};

template <class W>
void carve_prefill(W& ws, const PrefillPlan& p, PrefillScratch* out) {
  const std::size_t C = kChunk, dk = static_cast<std::size_t>(p.d.dk), kphi = static_cast<std::size_t>(p.d.kphi);
  const std::size_t bw = static_cast<std::size_t>(p.vs.width);
  const std::size_t rq = static_cast<std::size_t>(p.q_per_state) * C;
  for (int w = 0; w < p.workers; ++w) {
    PrefillScratch& s = out[w];
    s.q = ws.template take<float>(rq * dk);
    s.fq = ws.template take<float>(rq * kphi);
    s.k = ws.template take<float>(C * dk);
    s.fk = ws.template take<float>(C * kphi);
    s.v = ws.template take<float>(C * bw);
    s.a = ws.template take<float>(rq * C);
    s.o = ws.template take<float>(rq * bw);
    s.oi = ws.template take<float>(rq * bw);
    s.s = ws.template take<float>(kphi * bw);
    s.z = ws.template take<float>(kphi);
    s.x = ws.template take<float>(C * kphi);
  }
}

constexpr int kMaxWorkers = 256;

template <class T>
Status plan_prefill(const linear::LinearArgs<T>& a, const Executor& ex, bool decode, PrefillPlan* p) {
  MEMATTN_RETURN_IF_ERROR(linear::validate_linear(a, a.seq.cu_seqlens, a.seq.seq_lens,
                                                  a.state.slot_in, a.state.slot_out, a.step_slots, a.decay_rate,
                                                  decode, &p->d));
  p->vs = v_split(p->d, a.normalize);
  p->q_per_state = p->d.heads_per_state();
  p->workers = std::min(std::max(ex.concurrency(), 1), kMaxWorkers);
  return Status::kSuccess;
}

// Row-wise feature map into dense fp32.
inline void feature_rows(FeatureMap fm, float alpha, const float* x, std::int64_t rows, std::int64_t dk,
                         std::int64_t kphi, float* out) {
  for (std::int64_t r = 0; r < rows; ++r)
    linear::apply_feature_map(fm, x + r * dk, static_cast<int>(dk), alpha, out + r * kphi);
}

struct SlotInfo {
  std::int64_t in = -1, out = -1;
  bool init = false;
};

inline SlotInfo slots_of(const linear::StateRef& st, std::int64_t n) {
  SlotInfo s;
  if (st.pool == nullptr) return s;
  s.in = st.slot_in ? st.slot_in[n] : n;
  s.out = st.slot_out ? st.slot_out[n] : s.in;
  s.init = st.has_init ? st.has_init[n] != 0 : true;
  return s;
}

template <class T>
void prefill_task(const linear::LinearArgs<T>& a, const PrefillPlan& p, const PrefillScratch& sc,
                  std::int64_t task) {
  const linear::LinearDims& d = p.d;
  const std::int64_t vsn = p.vs.slices;
  const std::int64_t n = task / (d.state_heads * vsn);
  const std::int64_t hs = (task / vsn) % d.state_heads;
  const std::int64_t vsl = task % vsn;
  const std::int64_t c0v = vsl * p.vs.width;
  const std::int64_t bw = std::min(p.vs.width, d.dv - c0v);
  const std::int64_t kphi = d.kphi, dk = d.dk;
  const bool per_kv = d.state_heads == d.kv_heads;
  const std::int64_t kvh = per_kv ? hs : hs / d.group;
  const std::int64_t hq0 = per_kv ? hs * d.group : hs;
  const std::int64_t nq = d.has_output ? p.q_per_state : 0;
  const bool taylor = a.feature_map == FeatureMap::kTaylor2;
  const bool norm = a.normalize;

  const SlotInfo slot = slots_of(a.state, n);
  if (d.has_state && slot.in < 0) return;  // skipped sequence: nothing read or written
  std::int64_t row0 = 0, len = 0;
  linear::sequence_rows(a.seq, d, n, &row0, &len);

  float* const S_in = d.has_state ? a.state.pool + slot.in * d.slot_stride + hs * kphi * d.dv : nullptr;
  float* const S_out = d.has_state ? a.state.pool + slot.out * d.slot_stride + hs * kphi * d.dv : nullptr;
  float* const z_in = d.has_state && norm ? a.state.z_pool + slot.in * d.z_slot_stride + hs * kphi : nullptr;
  float* const z_out = d.has_state && norm ? a.state.z_pool + slot.out * d.z_slot_stride + hs * kphi : nullptr;
  if (len == 0) {  // the state passes through unchanged (no decay for zero tokens)
    if (!d.has_state || (slot.out == slot.in && slot.init)) return;
    for (std::int64_t r = 0; r < kphi; ++r)
      for (std::int64_t c = c0v; c < c0v + bw; ++c) S_out[r * d.dv + c] = slot.init ? S_in[r * d.dv + c] : 0.f;
    if (norm && vsl == 0)
      for (std::int64_t r = 0; r < kphi; ++r) z_out[r] = slot.init ? z_in[r] : 0.f;
    return;
  }

  DecayTables tab;
  tab.init(a.decay_rate, hs);
  MatMap S(sc.s, kphi, bw);
  VecMap z(sc.z, kphi);
  if (slot.init && d.has_state) {
    for (std::int64_t r = 0; r < kphi; ++r) std::memcpy(sc.s + r * bw, S_in + r * d.dv + c0v, sizeof(float) * bw);
    if (norm) std::memcpy(sc.z, z_in, sizeof(float) * kphi);
    else z.setZero();
  } else {
    S.setZero();
    z.setZero();
  }
  const float scale = a.scale;

  for (std::int64_t c = 0; c < len; c += kChunk) {
    const std::int64_t nc = std::min<std::int64_t>(kChunk, len - c);
    const std::int64_t r0 = row0 + c;
    for (std::int64_t j = 0; j < nc; ++j) {
      to_float_n(a.k.ptr(r0 + j, kvh, 0), dk, sc.k + j * dk);
      to_float_n(a.v.ptr(r0 + j, kvh, c0v), bw, sc.v + j * bw);
    }
    feature_rows(a.feature_map, a.alpha, sc.k, nc, dk, kphi, sc.fk);
    MatMap Fk(sc.fk, nc, kphi);
    MatMap Vc(sc.v, nc, bw);

    if (nq > 0) {
      const std::int64_t rq = nq * nc;
      for (std::int64_t g = 0; g < nq; ++g)
        for (std::int64_t j = 0; j < nc; ++j) to_float_n(a.q.ptr(r0 + j, hq0 + g, 0), dk, sc.q + (g * nc + j) * dk);
      feature_rows(a.feature_map, a.alpha, sc.q, rq, dk, kphi, sc.fq);
      MatMap Fq(sc.fq, rq, kphi);
      MatMap A(sc.a, rq, nc);
      if (taylor) {
        MatMap Qr(sc.q, rq, dk), Kr(sc.k, nc, dk);
        A.noalias() = Qr * Kr.transpose();
        const float alpha = a.alpha;
        A = A.unaryExpr([alpha](float s) { return linear::taylor_kernel(s, alpha); });
      } else {
        A.noalias() = Fq * Fk.transpose();
      }
      for (std::int64_t r = 0; r < rq; ++r) {  // causal mask by selection, decay λ^{i-j}
        const std::int64_t i = r % nc;
        float* ar = sc.a + r * nc;
        for (std::int64_t j = 0; j < nc; ++j) ar[j] = j <= i ? ar[j] * tab.pow[i - j] : 0.f;
      }
      MatMap O(sc.o, rq, bw), Oi(sc.oi, rq, bw);
      O.noalias() = A * Vc;
      Oi.noalias() = Fq * S;
      for (std::int64_t r = 0; r < rq; ++r) {
        const std::int64_t i = r % nc;
        const float qd = tab.pow[i + 1];
        O.row(r) = scale * (O.row(r) + qd * Oi.row(r));
        if (norm) {
          const float den = scale * (A.row(r).sum() + qd * Fq.row(r).dot(z)) + a.eps;
          O.row(r) /= den;
        }
      }
      for (std::int64_t g = 0; g < nq; ++g)
        for (std::int64_t j = 0; j < nc; ++j) from_float_n(sc.o + (g * nc + j) * bw, bw, a.o.ptr(r0 + j, hq0 + g, c0v));
    }

    // State update with the key factor λ^{n_c-1-j} and the chunk factor λ^{n_c} (expm1 form).
    MatMap X(sc.x, nc, kphi);
    for (std::int64_t j = 0; j < nc; ++j) X.row(j) = tab.pow[nc - 1 - j] * Fk.row(j);
    if (tab.decay) {
      const float mu = tab.mu[nc];
      S.array() -= mu * S.array();
      if (norm) z.array() -= mu * z.array();
    }
    S.noalias() += X.transpose() * Vc;
    if (norm) z += X.colwise().sum();
  }

  if (d.has_state) {
    for (std::int64_t r = 0; r < kphi; ++r) std::memcpy(S_out + r * d.dv + c0v, sc.s + r * bw, sizeof(float) * bw);
    if (norm && vsl == 0) std::memcpy(z_out, sc.z, sizeof(float) * kphi);
  }
}

// ---- decode / extend ------------------------------------------------------------------------

struct DecodeScratch {
  float *s = nullptr, *z = nullptr, *k = nullptr, *fk = nullptr, *q = nullptr, *fq = nullptr, *v = nullptr,
        *acc = nullptr;
};

template <class W>
void carve_decode(W& ws, const PrefillPlan& p, DecodeScratch* out) {
  const std::size_t kphi = static_cast<std::size_t>(p.d.kphi), dv = static_cast<std::size_t>(p.d.dv);
  const std::size_t dk = static_cast<std::size_t>(p.d.dk);
  for (int w = 0; w < p.workers; ++w) {
    DecodeScratch& s = out[w];
    s.s = ws.template take<float>(kphi * dv);
    s.z = ws.template take<float>(kphi);
    s.k = ws.template take<float>(dk);
    s.fk = ws.template take<float>(kphi);
    s.q = ws.template take<float>(dk);
    s.fq = ws.template take<float>(kphi);
    s.v = ws.template take<float>(dv);
    s.acc = ws.template take<float>(dv);
  }
}

template <class T>
void decode_task(const linear::LinearArgs<T>& a, const PrefillPlan& p, const DecodeScratch& sc, std::int64_t task) {
  const linear::LinearDims& d = p.d;
  const std::int64_t n = task / d.state_heads, hs = task % d.state_heads;
  const std::int64_t kphi = d.kphi, dk = d.dk, dv = d.dv;
  const bool per_kv = d.state_heads == d.kv_heads;
  const std::int64_t kvh = per_kv ? hs : hs / d.group;
  const std::int64_t hq0 = per_kv ? hs * d.group : hs;
  const std::int64_t nq = d.has_output ? p.q_per_state : 0;
  const bool norm = a.normalize;
  const SlotInfo slot = slots_of(a.state, n);
  if (d.has_state && slot.in < 0) return;
  const std::int64_t len = a.seq.seq_lens ? a.seq.seq_lens[n] : d.t_pad;
  if (len == 0 && (!d.has_state || (slot.out == slot.in && slot.init))) return;

  DecayTables tab;
  tab.init(a.decay_rate, hs);
  const float mu = tab.mu[1];
  const std::int64_t off = hs * kphi * dv;
  if (d.has_state && slot.init) {
    std::memcpy(sc.s, a.state.pool + slot.in * d.slot_stride + off, sizeof(float) * kphi * dv);
    if (norm) std::memcpy(sc.z, a.state.z_pool + slot.in * d.z_slot_stride + hs * kphi, sizeof(float) * kphi);
  } else {
    std::fill(sc.s, sc.s + kphi * dv, 0.f);
    std::fill(sc.z, sc.z + kphi, 0.f);
  }
  auto store = [&](std::int64_t to) {
    std::memcpy(a.state.pool + to * d.slot_stride + off, sc.s, sizeof(float) * kphi * dv);
    if (norm) std::memcpy(a.state.z_pool + to * d.z_slot_stride + hs * kphi, sc.z, sizeof(float) * kphi);
  };
  for (std::int64_t t = 0; t < len; ++t) {
    const std::int64_t row = n * d.t_pad + t;
    to_float_n(a.k.ptr(row, kvh, 0), dk, sc.k);
    to_float_n(a.v.ptr(row, kvh, 0), dv, sc.v);
    linear::apply_feature_map(a.feature_map, sc.k, static_cast<int>(dk), a.alpha, sc.fk);
    for (std::int64_t r = 0; r < kphi; ++r) {
      float* sr = sc.s + r * dv;
      const float f = sc.fk[r];
      if (tab.decay) {
        for (std::int64_t c = 0; c < dv; ++c) sr[c] = std::fma(f, sc.v[c], std::fma(-mu, sr[c], sr[c]));
      } else {
        for (std::int64_t c = 0; c < dv; ++c) sr[c] = std::fma(f, sc.v[c], sr[c]);
      }
      if (norm) sc.z[r] = (tab.decay ? std::fma(-mu, sc.z[r], sc.z[r]) : sc.z[r]) + f;
    }
    for (std::int64_t g = 0; g < nq; ++g) {
      to_float_n(a.q.ptr(row, hq0 + g, 0), dk, sc.q);
      linear::apply_feature_map(a.feature_map, sc.q, static_cast<int>(dk), a.alpha, sc.fq);
      std::fill(sc.acc, sc.acc + dv, 0.f);
      float qz = 0.f;
      for (std::int64_t r = 0; r < kphi; ++r) {
        const float f = sc.fq[r];
        const float* sr = sc.s + r * dv;
        for (std::int64_t c = 0; c < dv; ++c) sc.acc[c] += f * sr[c];
        qz += f * sc.z[r];
      }
      const float mul = norm ? a.scale / (a.scale * qz + a.eps) : a.scale;
      for (std::int64_t c = 0; c < dv; ++c) sc.acc[c] *= mul;
      from_float_n(sc.acc, dv, a.o.ptr(row, hq0 + g, 0));
    }
    if (a.step_slots && d.has_state) {
      const std::int32_t ss = a.step_slots[n * d.t_pad + t];
      if (ss >= 0) store(ss);
    }
  }
  if (d.has_state && a.write_final) store(slot.out);
}

template <class RunFn>
Status with_owned(std::size_t bytes, RunFn run) {
  HostWorkspace ws(bytes);
  return run(ws.data(), bytes);
}

}  // namespace linear_detail

// ---- prefill --------------------------------------------------------------------------------

template <class T>
Status linear_prefill_workspace_size(const linear::LinearArgs<T>& a, std::size_t* bytes, const Executor& ex = {}) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  linear_detail::PrefillPlan p;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_prefill(a, ex, false, &p));
  Workspace ws;
  linear_detail::PrefillScratch sc[linear_detail::kMaxWorkers];
  linear_detail::carve_prefill(ws, p, sc);
  *bytes = ws.required();
  return Status::kSuccess;
}

template <class T>
Status linear_prefill(const linear::LinearArgs<T>& a, void* workspace, std::size_t workspace_bytes,
                      const Executor& ex = {}) {
  linear_detail::PrefillPlan p;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_prefill(a, ex, false, &p));
  Workspace ws(workspace, workspace_bytes);
  linear_detail::PrefillScratch sc[linear_detail::kMaxWorkers];
  linear_detail::carve_prefill(ws, p, sc);
  MEMATTN_RETURN_IF_ERROR(ws.status());
  const std::int64_t tasks = p.d.num_seqs * p.d.state_heads * p.vs.slices;
  ex.for_each(tasks, [&](std::int64_t task, int worker) { linear_detail::prefill_task(a, p, sc[worker], task); });
  return Status::kSuccess;
}

// Convenience: allocates its own scratch (not for hot paths).
template <class T>
Status linear_prefill(const linear::LinearArgs<T>& a, const Executor& ex = {}) {
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(linear_prefill_workspace_size(a, &bytes, ex));
  return linear_detail::with_owned(bytes, [&](void* p, std::size_t b) { return linear_prefill(a, p, b, ex); });
}

// ---- decode / extend (dense SeqDesc, T_pad <= 16 tokens per sequence) ------------------------

template <class T>
Status linear_decode_workspace_size(const linear::LinearArgs<T>& a, std::size_t* bytes, const Executor& ex = {}) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  linear_detail::PrefillPlan p;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_prefill(a, ex, true, &p));
  Workspace ws;
  linear_detail::DecodeScratch sc[linear_detail::kMaxWorkers];
  linear_detail::carve_decode(ws, p, sc);
  *bytes = ws.required();
  return Status::kSuccess;
}

template <class T>
Status linear_decode(const linear::LinearArgs<T>& a, void* workspace, std::size_t workspace_bytes,
                     const Executor& ex = {}) {
  linear_detail::PrefillPlan p;
  MEMATTN_RETURN_IF_ERROR(linear_detail::plan_prefill(a, ex, true, &p));
  Workspace ws(workspace, workspace_bytes);
  linear_detail::DecodeScratch sc[linear_detail::kMaxWorkers];
  linear_detail::carve_decode(ws, p, sc);
  MEMATTN_RETURN_IF_ERROR(ws.status());
  ex.for_each(p.d.num_seqs * p.d.state_heads,
              [&](std::int64_t task, int worker) { linear_detail::decode_task(a, p, sc[worker], task); });
  return Status::kSuccess;
}

template <class T>
Status linear_decode(const linear::LinearArgs<T>& a, const Executor& ex = {}) {
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(linear_decode_workspace_size(a, &bytes, ex));
  return linear_detail::with_owned(bytes, [&](void* p, std::size_t b) { return linear_decode(a, p, b, ex); });
}

// ---- state helpers --------------------------------------------------------------------------

// Converts states produced under the OpenNLPLab convention (carried state λ·S, spec §1.6) into
// true states: S <- S / λ = S·exp(s_h) for every listed slot, per state head. `pool` is
// [P, Hs, kphi, dv] with `slot_stride` floats per slot (0: Hs·kphi·dv).
inline Status rescale_state_from_lambda_convention(float* pool, std::int64_t num_slots, std::int64_t slot_stride,
                                                   const std::int32_t* slots, std::int64_t num, std::int64_t hs,
                                                   std::int64_t kphi, std::int64_t dv, const float* decay_rate) {
  if (!pool || !slots || !decay_rate) return Status::kErrorNullPointer;
  if (hs <= 0 || kphi <= 0 || dv <= 0 || num < 0) return Status::kErrorInvalidShape;
  const std::int64_t stride = slot_stride > 0 ? slot_stride : hs * kphi * dv;
  if (stride < hs * kphi * dv) return Status::kErrorInvalidStride;
  for (std::int64_t i = 0; i < num; ++i)
    if (slots[i] < 0 || slots[i] >= num_slots) return Status::kErrorCapacityExceeded;
  for (std::int64_t h = 0; h < hs; ++h)
    if (!linear::valid_decay_rate(decay_rate[h])) return Status::kErrorNonFinite;
  for (std::int64_t i = 0; i < num; ++i)
    for (std::int64_t h = 0; h < hs; ++h) {
      const float f = static_cast<float>(std::exp(static_cast<double>(decay_rate[h])));
      float* s = pool + slots[i] * stride + h * kphi * dv;
      for (std::int64_t e = 0; e < kphi * dv; ++e) s[e] *= f;
    }
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
