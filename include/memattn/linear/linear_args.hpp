// Arguments of linear / Lightning attention and their validation, shared by the CPU and CUDA
// back-ends so both accept and reject exactly the same inputs (back-ends add only their own
// dtype / head-dim limits). Contract: ../shared/specs/linear-attention.md.
//
// Semantics, per sequence and state head h (λ = exp(-s_h), fp32 state S [Kφ, Dv]):
//   S_t = λ S_{t-1} + φ(k_t) v_tᵀ,   z_t = λ z_{t-1} + φ(k_t)          (z only with normalize)
//   o_t = scale φ(q_t)ᵀ S_t                                          normalize = false
//   o_t = scale φ(q_t)ᵀ S_t / (scale φ(q_t)ᵀ z_t + eps)              normalize = true
// The decay is applied before the current token is added; the state a call leaves is S_{T-1}.
//
// Layout
//  * Token tensors are [rows, heads, dim] views (dim contiguous, any row/head strides), so q, k,
//    v may be strided views of one fused QKV projection. q, k, v share one dtype; o has q's.
//  * Sequences (SeqDesc): dense (cu_seqlens == nullptr): rows = num_seqs·T_pad, sequence n owns
//    rows [n·T_pad, n·T_pad + len_n), len_n = seq_lens ? seq_lens[n] : T_pad; varlen: int32
//    cu_seqlens [N+1], sequence n owns rows [cu[n], cu[n+1]) (empty sequences allowed). Rows that
//    belong to no sequence (padding) may hold anything, NaN included: they are never read, and
//    their output rows are never written.
//  * Heads: Hk == Hv, Hq % Hk == 0, G = Hq/Hk. GqaState::kPerKvHead (default): Hs = Hk state
//    heads, query head hq uses state hq/G. kPerQueryHead: Hs = Hq, as if k, v were repeated G
//    times. decay_rate has Hs entries.
//  * State pool (StateRef): fp32 [P, Hs, Kφ, Dv] (slot_stride floats apart, Dv contiguous) and
//    z_pool fp32 [P, Hs, Kφ] with normalize. slot_in[n] = -1 skips sequence n entirely (nothing
//    read or written, its output rows untouched). slot_out (null = in place) receives the final
//    state. has_init[n] = 0 starts from zero without reading the slot. pool == nullptr:
//    stateless (zero initial state, no final state). With identity slots (slot_in == nullptr
//    means slot n) the pool is exactly fla's [N, H, K, V] fp32 initial/final state tensor.
//  * o == nullptr: state-only mode (needs a pool): only k and v are read.
//  * scale, eps (normalize) and alpha (Taylor) are required: they default to quiet NaN and are
//    rejected while NaN (a hidden default would change a ported model's output by √Dk).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/linear/decay.hpp"
#include "memattn/linear/feature_map.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace linear {

enum class GqaState : int { kPerKvHead = 0, kPerQueryHead = 1 };
enum class Schedule : int { kAuto = 0, kSinglePass = 1, kSequenceParallel = 2 };

constexpr float kUnset = std::numeric_limits<float>::quiet_NaN();
constexpr int kMaxExtendTokens = 16;  // decode/extend: at most this many tokens per sequence

struct SeqDesc {
  // Varlen: [num_seqs + 1] in the executing back-end's memory; nullptr: dense form.
  const std::int32_t* cu_seqlens = nullptr;
  // Dense only, optional: [num_seqs] lengths (<= T_pad) in the back-end's memory.
  const std::int32_t* seq_lens = nullptr;
  std::int64_t num_seqs = 0;
  // Host hint (CUDA planning never reads device memory): an upper bound of every length; 0
  // means T_pad (dense) or the row count (varlen).
  std::int64_t max_seqlen = 0;
};

struct StateRef {
  float* pool = nullptr;              // [P, Hs, Kφ, Dv]; nullptr: stateless
  std::int64_t num_slots = 0;         // P
  std::int64_t slot_stride = 0;       // floats between slots; 0: Hs·Kφ·Dv
  const std::int32_t* slot_in = nullptr;   // [N]; nullptr: slot n; -1: skip the sequence
  const std::int32_t* slot_out = nullptr;  // [N]; nullptr: write back to slot_in
  const std::uint8_t* has_init = nullptr;  // [N]; nullptr: all 1
  float* z_pool = nullptr;            // [P, Hs, Kφ] (normalize only)
  std::int64_t z_slot_stride = 0;     // floats between slots; 0: Hs·Kφ
};

// Host-readable mirrors of device arrays (CUDA only; the CPU back-end reads the arrays
// themselves). Each one given is validated before launch; without them the device skips a
// sequence whose length or slot is out of range (its outputs and slots are left untouched).
struct HostMirror {
  const std::int32_t* cu_seqlens = nullptr;
  const std::int32_t* seq_lens = nullptr;
  const std::int32_t* slot_in = nullptr;
  const std::int32_t* slot_out = nullptr;
  const std::int32_t* step_slots = nullptr;
  const float* decay_rate = nullptr;
};

template <class T>
struct LinearArgs {
  TensorView<const T, 3> q;  // [rows, Hq, Dk] (may be absent in state-only mode)
  TensorView<const T, 3> k;  // [rows, Hk, Dk]
  TensorView<const T, 3> v;  // [rows, Hv, Dv]
  TensorView<T, 3> o;        // [rows, Hq, Dv]; absent: state-only mode
  SeqDesc seq;
  StateRef state;
  const float* decay_rate = nullptr;  // [Hs] fp32 rates s_h in [0, 80]; nullptr: no decay
  float scale = kUnset;               // required
  FeatureMap feature_map = FeatureMap::kIdentity;
  float alpha = kUnset;               // required for kTaylor2 (BASED: 0.25)
  bool normalize = false;
  float eps = kUnset;                 // required with normalize (BASED: 1e-12)
  GqaState gqa = GqaState::kPerKvHead;
  // Prefill (CUDA): path and sequence-parallel segment length (a multiple of 64; 0: planner).
  Schedule schedule = Schedule::kAuto;
  std::int32_t seg_len = 0;
  // Decode / extend only: [N, T_pad] slots that also receive the state after step t (-1: don't
  // write); write_final = false keeps the pre-call state in the slot (speculative verification).
  const std::int32_t* step_slots = nullptr;
  bool write_final = true;
  HostMirror host;  // CUDA: optional host copies for validation
  // Reserved (rejected until they land): P5 per-token gate and E1 static prefix state.
  const float* gate_log = nullptr;
  const std::int32_t* static_slot = nullptr;
};

struct LinearDims {
  std::int64_t rows = 0, num_seqs = 0, t_pad = 0;  // t_pad: dense only (0 for varlen)
  std::int64_t q_heads = 0, kv_heads = 0, state_heads = 0, group = 1;
  std::int64_t dk = 0, dv = 0, kphi = 0;
  std::int64_t max_seqlen = 0;
  bool varlen = false, has_output = false, has_state = false;
  std::int64_t slot_stride = 0, z_slot_stride = 0;
  // Query heads served by one state head, and the first of them / the kv head it reads.
  std::int64_t heads_per_state() const { return state_heads == kv_heads ? group : 1; }
};

// Length and first row of sequence n (host-readable SeqDesc).
inline void sequence_rows(const SeqDesc& s, const LinearDims& d, std::int64_t n, std::int64_t* begin,
                          std::int64_t* len) {
  if (s.cu_seqlens) {
    *begin = s.cu_seqlens[n];
    *len = static_cast<std::int64_t>(s.cu_seqlens[n + 1]) - s.cu_seqlens[n];
  } else {
    *begin = n * d.t_pad;
    *len = s.seq_lens ? s.seq_lens[n] : d.t_pad;
  }
}

namespace detail {
inline bool finite(float x) { return std::isfinite(x); }
}  // namespace detail

// Validates everything that does not depend on the back-end. `cu`, `lens`, `slot_in`,
// `slot_out`, `step_slots`, `decay` are host-readable copies of the corresponding arrays, or
// nullptr when the caller has none (then they are not checked). `decode`: the decode/extend
// contract (dense SeqDesc, T_pad <= 16) instead of the prefill one.
template <class T>
Status validate_linear(const LinearArgs<T>& a, const std::int32_t* cu, const std::int32_t* lens,
                       const std::int32_t* slot_in, const std::int32_t* slot_out, const std::int32_t* step_slots,
                       const float* decay, bool decode, LinearDims* dims) {
  if (dims == nullptr) return Status::kErrorNullPointer;
  LinearDims d;
  MEMATTN_RETURN_IF_ERROR(check_present(a.k));
  MEMATTN_RETURN_IF_ERROR(check_present(a.v));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.k));
  MEMATTN_RETURN_IF_ERROR(check_layout(a.v));
  d.has_output = a.o.data != nullptr;
  d.has_state = a.state.pool != nullptr;
  if (d.has_output) {
    MEMATTN_RETURN_IF_ERROR(check_present(a.q));
    MEMATTN_RETURN_IF_ERROR(check_layout(a.q));
    MEMATTN_RETURN_IF_ERROR(check_layout(a.o));
    MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.o));
  } else if (!d.has_state) {
    return Status::kErrorNullPointer;  // neither an output nor a state: nothing to compute
  }
  if (a.gate_log != nullptr || a.static_slot != nullptr) return Status::kErrorNotSupported;

  d.rows = a.k.shape[0];
  d.kv_heads = a.k.shape[1];
  d.dk = a.k.shape[2];
  d.dv = a.v.shape[2];
  MEMATTN_RETURN_IF_ERROR(check_shape(a.v, {d.rows, -1, d.dv}));
  if (a.v.shape[1] != d.kv_heads) return Status::kErrorGqaRatio;  // grouped values: not in v1
  if (d.has_output) {
    d.q_heads = a.q.shape[1];
    MEMATTN_RETURN_IF_ERROR(check_shape(a.q, {d.rows, -1, d.dk}));
    MEMATTN_RETURN_IF_ERROR(check_shape(a.o, {d.rows, d.q_heads, d.dv}));
  } else {
    d.q_heads = a.q.data ? a.q.shape[1] : d.kv_heads;
    if (a.q.data) MEMATTN_RETURN_IF_ERROR(check_shape(a.q, {d.rows, -1, d.dk}));
  }
  if (d.q_heads <= 0 || d.q_heads % d.kv_heads != 0) return Status::kErrorGqaRatio;
  d.group = d.q_heads / d.kv_heads;
  d.state_heads = a.gqa == GqaState::kPerQueryHead ? d.q_heads : d.kv_heads;
  if (a.gqa != GqaState::kPerKvHead && a.gqa != GqaState::kPerQueryHead) return Status::kErrorInvalidArgument;

  // Feature map and required scalars.
  switch (a.feature_map) {
    case FeatureMap::kIdentity:
    case FeatureMap::kEluPlusOne:
    case FeatureMap::kRelu:
    case FeatureMap::kTaylor2: break;
    default: return Status::kErrorInvalidArgument;
  }
  if (d.dk > 256 || d.dv > 512) return Status::kErrorUnsupportedHeadDim;
  if (a.feature_map == FeatureMap::kTaylor2 && d.dk > 32) return Status::kErrorUnsupportedHeadDim;
  d.kphi = feature_dim(a.feature_map, static_cast<int>(d.dk));
  if (!detail::finite(a.scale)) return Status::kErrorInvalidArgument;
  if (a.feature_map == FeatureMap::kTaylor2 && !(detail::finite(a.alpha) && a.alpha > 0.f))
    return Status::kErrorInvalidArgument;
  if (a.normalize && !(detail::finite(a.eps) && a.eps >= 0.f)) return Status::kErrorInvalidArgument;

  // Sequences.
  const SeqDesc& s = a.seq;
  if (s.num_seqs <= 0 || s.num_seqs > (std::int64_t{1} << 24)) return Status::kErrorInvalidShape;
  if (d.rows >= std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;
  d.varlen = s.cu_seqlens != nullptr;
  d.num_seqs = s.num_seqs;
  if (d.varlen) {
    if (decode) return Status::kErrorInvalidArgument;  // decode/extend take the dense form
    if (s.seq_lens != nullptr) return Status::kErrorInvalidArgument;
    if (cu) {
      if (cu[0] != 0) return Status::kErrorInvalidShape;
      for (std::int64_t n = 0; n < s.num_seqs; ++n)
        if (cu[n + 1] < cu[n]) return Status::kErrorInvalidShape;
      if (cu[s.num_seqs] > d.rows) return Status::kErrorInvalidShape;
      if (cu[s.num_seqs] == 0) return Status::kErrorEmptyCache;  // T = 0
    }
    d.max_seqlen = s.max_seqlen > 0 ? s.max_seqlen : d.rows;
    if (cu && s.max_seqlen > 0)
      for (std::int64_t n = 0; n < s.num_seqs; ++n)
        if (cu[n + 1] - cu[n] > s.max_seqlen) return Status::kErrorInvalidArgument;
  } else {
    if (d.rows % s.num_seqs != 0) return Status::kErrorInvalidShape;
    d.t_pad = d.rows / s.num_seqs;
    if (decode && d.t_pad > kMaxExtendTokens) return Status::kErrorInvalidArgument;
    d.max_seqlen = s.max_seqlen > 0 ? std::min<std::int64_t>(s.max_seqlen, d.t_pad) : d.t_pad;
    if (lens) {
      std::int64_t total = 0;
      for (std::int64_t n = 0; n < s.num_seqs; ++n) {
        if (lens[n] < 0 || lens[n] > d.t_pad) return Status::kErrorInvalidShape;
        if (s.max_seqlen > 0 && lens[n] > s.max_seqlen) return Status::kErrorInvalidArgument;
        total += lens[n];
      }
      if (total == 0) return Status::kErrorEmptyCache;  // T = 0
    }
  }

  // Decay rates.
  if (decay)
    for (std::int64_t h = 0; h < d.state_heads; ++h)
      if (!valid_decay_rate(decay[h])) return Status::kErrorNonFinite;

  // State pool and slots.
  const StateRef& st = a.state;
  const std::int64_t state_floats = d.state_heads * d.kphi * d.dv;
  if (d.has_state) {
    if (st.num_slots <= 0) return Status::kErrorInvalidShape;
    d.slot_stride = st.slot_stride > 0 ? st.slot_stride : state_floats;
    if (d.slot_stride < state_floats) return Status::kErrorInvalidStride;
    if (a.normalize) {
      if (st.z_pool == nullptr) return Status::kErrorNullPointer;
      d.z_slot_stride = st.z_slot_stride > 0 ? st.z_slot_stride : d.state_heads * d.kphi;
      if (d.z_slot_stride < d.state_heads * d.kphi) return Status::kErrorInvalidStride;
    }
    if (st.slot_in == nullptr && st.num_slots < s.num_seqs) return Status::kErrorCapacityExceeded;
    // (A device slot array without a host mirror cannot be checked here.)
    if (st.slot_in == nullptr || slot_in != nullptr) {
      for (std::int64_t n = 0; n < s.num_seqs; ++n) {
        const std::int64_t in = st.slot_in == nullptr ? n : slot_in[n];
        if (in < -1 || in >= st.num_slots) return Status::kErrorCapacityExceeded;
        if (in >= 0 && slot_out && (slot_out[n] < 0 || slot_out[n] >= st.num_slots))
          return Status::kErrorCapacityExceeded;
      }
    }
    if (a.step_slots != nullptr) {
      if (!decode) return Status::kErrorInvalidArgument;
      if (step_slots)
        for (std::int64_t i = 0; i < s.num_seqs * d.t_pad; ++i)
          if (step_slots[i] < -1 || step_slots[i] >= st.num_slots) return Status::kErrorCapacityExceeded;
    }
  } else {
    if (st.slot_in || st.slot_out || st.has_init || st.z_pool || a.step_slots) return Status::kErrorInvalidArgument;
  }
  if (!decode && !a.write_final) return Status::kErrorInvalidArgument;
  if (a.seg_len < 0 || a.seg_len % kChunk != 0) return Status::kErrorInvalidArgument;
  *dims = d;
  return Status::kSuccess;
}

// Debug helper (host): slot_in values >= 0 are unique, and no slot_out names another
// sequence's slot_in or slot_out (duplicates are undefined behaviour in the kernels).
inline Status validate_slots(const std::int32_t* slot_in, const std::int32_t* slot_out, std::int64_t n,
                             std::int64_t num_slots) {
  if (slot_in == nullptr && n > 0) return Status::kErrorNullPointer;
  for (std::int64_t i = 0; i < n; ++i) {
    if (slot_in[i] < -1 || slot_in[i] >= num_slots) return Status::kErrorCapacityExceeded;
    if (slot_in[i] < 0) continue;
    const std::int32_t oi = slot_out ? slot_out[i] : slot_in[i];
    if (oi < 0 || oi >= num_slots) return Status::kErrorCapacityExceeded;
    for (std::int64_t j = 0; j < i; ++j) {
      if (slot_in[j] < 0) continue;
      const std::int32_t oj = slot_out ? slot_out[j] : slot_in[j];
      if (slot_in[j] == slot_in[i] || oj == oi || oj == slot_in[i] || oi == slot_in[j]) return Status::kErrorInvalidArgument;
    }
  }
  return Status::kSuccess;
}

}  // namespace linear
MEMATTN_NAMESPACE_END
