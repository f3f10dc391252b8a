// Mixture of Memories (MoM, arXiv 2502.13685; spec P4): routing math and the argument structs of
// the route / gather / combine steps, shared by the CPU and CUDA back-ends.
//
// Per token t (routing shared by all heads): r_t = softmax(router_logits_t) over M memories in
// fp32; (I_t, w_t) = top-k of r_t, ties to the lower memory index (selected on the logits, the
// same order as on r_t without rounding ties); w_t <- w_t / Σ w_t. Memory m's state is updated
// only by its routed tokens (unselected memories are neither updated nor decayed); the output is
// o_t = Σ_{m∈I_t} w_t^m · scale φ(q_t)ᵀ S^m (+ the shared memory's output, weight 1).
//
// Pipeline (memory-major segments, segment s = m·N + n for memory m, sequence n):
//  1. mom_route: topk_idx/topk_w [rows, k]; routed rows sorted by (segment, token): perm [R]
//     (source row of each routed row), pos [rows, k] (routed row of each (t, r)), seg_cu [M·N+1]
//     (R = seg_cu[M·N] routed rows), seg_slot [M·N] = mem_slots[n, m].
//  2. the caller gathers q (gather_rows(perm)) and computes k^m, v^m for the routed rows;
//  3. linear prefill with seq.cu_seqlens = seg_cu, num_seqs = M·N, state.slot_in = seg_slot
//     (empty segments leave their slot bit-identical);
//  4. mom_combine: o[t] = Σ_r topk_w[t,r]·o_routed[pos[t,r]] (+ o_shared[t]), fp32, written once.
//  Decode is the same pipeline with one token per sequence.
// Rows outside every sequence (dense padding, rows past cu[N]) are not routed: topk_idx = -1,
// topk_w = 0, pos = -1, and mom_combine leaves their output rows untouched.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/linear/linear_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace linear {

constexpr int kMomMaxMemories = 64;
constexpr int kMomMaxTopk = 8;

// Top-k routing of one token: idx[r], w[r] for r < k (k <= kMomMaxTopk, M <= kMomMaxMemories).
MEMATTN_HOST_DEVICE void mom_topk(const float* logits, int M, int k, std::int32_t* idx, float* w) {
  float mx = logits[0];
  for (int m = 1; m < M; ++m) mx = logits[m] > mx ? logits[m] : mx;
  float total = 0.f;
  for (int m = 0; m < M; ++m) total += expf(logits[m] - mx);
  unsigned long long taken = 0ull;
  float wsum = 0.f;
  for (int r = 0; r < k; ++r) {
    int best = -1;
    for (int m = 0; m < M; ++m) {
      if ((taken >> m) & 1ull) continue;
      if (best < 0 || logits[m] > logits[best]) best = m;  // strict: ties keep the lower index
    }
    taken |= 1ull << best;
    idx[r] = best;
    w[r] = expf(logits[best] - mx) / total;  // softmax probability
    wsum += w[r];
  }
  for (int r = 0; r < k; ++r) w[r] = w[r] / wsum;
}

struct MomRouteArgs {
  const float* router_logits = nullptr;  // [rows, M]
  std::int64_t logits_stride = 0;        // floats between rows; 0: M
  std::int64_t rows = 0;
  int num_memories = 0;                  // M in [1, 64]
  int topk = 0;                          // k in [1, min(M, 8)]
  SeqDesc seq;                           // which rows are tokens of which sequence
  const std::int32_t* mem_slots = nullptr;  // [N, M] state slots (-1 passes through); nullptr: m·N + n
  std::int32_t* topk_idx = nullptr;      // [rows, k]
  float* topk_w = nullptr;               // [rows, k]
  std::int32_t* perm = nullptr;          // [rows·k] (the first seg_cu[M·N] are valid)
  std::int32_t* pos = nullptr;           // [rows, k]
  std::int32_t* seg_cu = nullptr;        // [M·N + 1]
  std::int32_t* seg_slot = nullptr;      // [M·N]
  // CUDA: host mirrors for validation (optional).
  const std::int32_t* cu_seqlens_host = nullptr;
  const std::int32_t* seq_lens_host = nullptr;
};

template <class T>
struct MomCombineArgs {
  TensorView<const T, 3> o_routed;  // [R_cap, Hq, Dv], R_cap >= routed rows (rows·k suffices)
  TensorView<const T, 3> o_shared;  // [rows, Hq, Dv], optional
  TensorView<T, 3> o;               // [rows, Hq, Dv]
  const float* topk_w = nullptr;    // [rows, k]
  const std::int32_t* pos = nullptr;  // [rows, k]
  int topk = 0;
};

// dst[i] = src[perm[i]] for i < count (count = *count_ptr when count_ptr is given, read on the
// executing back-end: on CUDA the device value seg_cu[M·N]; else rows of dst).
template <class T>
struct GatherRowsArgs {
  TensorView<const T, 3> src;   // [rows, H, D]
  TensorView<T, 3> dst;         // [R_cap, H, D]
  const std::int32_t* perm = nullptr;       // [R_cap]
  const std::int32_t* count_ptr = nullptr;  // optional
};

inline Status validate_mom_route(const MomRouteArgs& a, const std::int32_t* cu, const std::int32_t* lens) {
  if (!a.router_logits || !a.topk_idx || !a.topk_w || !a.perm || !a.pos || !a.seg_cu || !a.seg_slot)
    return Status::kErrorNullPointer;
  if (a.rows <= 0 || a.rows >= std::numeric_limits<std::int32_t>::max() / kMomMaxTopk) return Status::kErrorInvalidShape;
  if (a.num_memories < 1 || a.num_memories > kMomMaxMemories) return Status::kErrorInvalidArgument;
  if (a.topk < 1 || a.topk > a.num_memories || a.topk > kMomMaxTopk) return Status::kErrorInvalidArgument;
  if (a.logits_stride != 0 && a.logits_stride < a.num_memories) return Status::kErrorInvalidStride;
  const SeqDesc& s = a.seq;
  if (s.num_seqs <= 0 || s.num_seqs * a.num_memories >= std::numeric_limits<std::int32_t>::max())
    return Status::kErrorInvalidShape;
  if (s.cu_seqlens) {
    if (s.seq_lens) return Status::kErrorInvalidArgument;
    if (cu) {
      if (cu[0] != 0 || cu[s.num_seqs] > a.rows || cu[s.num_seqs] == 0) return Status::kErrorInvalidShape;
      for (std::int64_t n = 0; n < s.num_seqs; ++n)
        if (cu[n + 1] < cu[n]) return Status::kErrorInvalidShape;
    }
  } else {
    if (a.rows % s.num_seqs != 0) return Status::kErrorInvalidShape;
    const std::int64_t t_pad = a.rows / s.num_seqs;
    if (lens) {
      std::int64_t total = 0;
      for (std::int64_t n = 0; n < s.num_seqs; ++n) {
        if (lens[n] < 0 || lens[n] > t_pad) return Status::kErrorInvalidShape;
        total += lens[n];
      }
      if (total == 0) return Status::kErrorEmptyCache;
    }
  }
  return Status::kSuccess;
}

template <class T>
Status validate_mom_combine(const MomCombineArgs<T>& a, std::int64_t* rows) {
  MEMATTN_RETURN_IF_ERROR(check_tensor(a.o_routed, {-1, -1, -1}));
  MEMATTN_RETURN_IF_ERROR(check_tensor(a.o, {-1, a.o_routed.shape[1], a.o_routed.shape[2]}));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.o));
  MEMATTN_RETURN_IF_ERROR(check_optional_tensor(a.o_shared, {a.o.shape[0], a.o.shape[1], a.o.shape[2]}));
  if (!a.topk_w || !a.pos) return Status::kErrorNullPointer;
  if (a.topk < 1 || a.topk > kMomMaxTopk) return Status::kErrorInvalidArgument;
  *rows = a.o.shape[0];
  return Status::kSuccess;
}

template <class T>
Status validate_gather(const GatherRowsArgs<T>& a) {
  MEMATTN_RETURN_IF_ERROR(check_tensor(a.src, {-1, -1, -1}));
  MEMATTN_RETURN_IF_ERROR(check_tensor(a.dst, {-1, a.src.shape[1], a.src.shape[2]}));
  MEMATTN_RETURN_IF_ERROR(check_no_self_overlap(a.dst));
  if (!a.perm) return Status::kErrorNullPointer;
  return Status::kSuccess;
}

}  // namespace linear
MEMATTN_NAMESPACE_END
