// Path planning of the GPU linear-attention prefill (spec §4.2), pure host code so CPU CI tests
// it: single pass (one CTA per sequence x state head x 64-column V tile) when that grid fills the
// device and no sequence becomes a serial tail, else the three-phase sequence-parallel path with
// segments of seg_len tokens (a multiple of 64). The plan never reads device memory: it uses the
// host hints of SeqDesc (num_seqs, max_seqlen) and the row count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/linear/decay.hpp"
#include "memattn/linear/linear_args.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace linear {

struct LinearPlan {
  Schedule path = Schedule::kSinglePass;
  int seg_len = 0;                 // sequence-parallel segment length (multiple of 64)
  int vtiles = 1;                  // 64-column V tiles
  int sm_count = 0;
  std::int64_t max_segments = 0;   // host bound of the segment count: ceil(rows / seg_len) + N
  std::int64_t ctas = 0;           // CTAs of the fused launch
  int smem_bytes = 0;              // filled by the CUDA wrapper (kernel configuration)
  std::size_t workspace_bytes = 0;
};

constexpr int kPlanOccupancy = 2;   // resident prefill CTAs per SM assumed by the planner
constexpr int kPlanVTile = 64;

// The workspace carving (sizing and running use the same code): z0, a copy of every sequence's
// initial normaliser state when several V-tile CTAs read it (normalised, stateful, Dv > 64): the
// CTA of tile 0 writes the final z into the same slot in the same launch, so the others must not
// read the slot itself. Then the sequence-parallel path's segment table and summaries.
template <class W>
void plan_workspace(W& ws, const LinearPlan& pl, const LinearDims& d, bool normalize, std::int32_t** seg_prefix,
                    float** ws_S, float** ws_z, float** z0) {
  *seg_prefix = nullptr;
  *ws_S = nullptr;
  *ws_z = nullptr;
  *z0 = nullptr;
  if (normalize && d.has_state && pl.vtiles > 1)
    *z0 = ws.template take<float>(static_cast<std::size_t>(d.num_seqs * d.state_heads * d.kphi));
  if (pl.path != Schedule::kSequenceParallel) return;
  *seg_prefix = ws.template take<std::int32_t>(static_cast<std::size_t>(d.num_seqs + 1));
  *ws_S = ws.template take<float>(static_cast<std::size_t>(pl.max_segments * d.state_heads * d.kphi * d.dv));
  if (normalize) *ws_z = ws.template take<float>(static_cast<std::size_t>(pl.max_segments * d.state_heads * d.kphi));
}

inline Status make_plan(Schedule schedule, std::int32_t seg_len, bool normalize, const LinearDims& d, int sms,
                        LinearPlan* plan) {
  if (plan == nullptr) return Status::kErrorNullPointer;
  if (sms <= 0 || seg_len < 0 || seg_len % kChunk != 0) return Status::kErrorInvalidArgument;
  LinearPlan pl;
  pl.sm_count = sms;
  pl.vtiles = static_cast<int>((d.dv + kPlanVTile - 1) / kPlanVTile);
  const std::int64_t C = kChunk, occ = kPlanOccupancy;
  const std::int64_t per = d.state_heads * pl.vtiles;
  const std::int64_t ctas_sp = d.num_seqs * per;
  const std::int64_t nc = (d.rows + C - 1) / C + d.num_seqs;  // bound of the total chunk count
  Schedule path = schedule;
  if (path == Schedule::kAuto) {
    const std::int64_t chunks_max = (d.max_seqlen + C - 1) / C;
    const std::int64_t waves = (nc * per + sms * occ - 1) / (sms * occ);
    path = (ctas_sp >= 2 * sms && chunks_max <= 2 * waves) ? Schedule::kSinglePass : Schedule::kSequenceParallel;
  }
  pl.path = path;
  if (path == Schedule::kSequenceParallel) {
    std::int64_t L = seg_len;
    if (L == 0) L = C * std::max<std::int64_t>(4, (nc * per + 2 * sms * occ - 1) / (2 * sms * occ));
    const std::int64_t cap = (std::numeric_limits<std::int32_t>::max() / 2) / C * C;
    pl.seg_len = static_cast<int>(std::min(L, cap));
    pl.max_segments = (d.rows + pl.seg_len - 1) / pl.seg_len + d.num_seqs;
    pl.ctas = pl.max_segments * per;
  } else {
    pl.ctas = ctas_sp;
  }
  if (pl.ctas > std::numeric_limits<std::int32_t>::max()) return Status::kErrorInvalidShape;
  Workspace sizing;
  std::int32_t* sp = nullptr;
  float* s = nullptr;
  float* z = nullptr;
  float* z0 = nullptr;
  plan_workspace(sizing, pl, d, normalize, &sp, &s, &z, &z0);
  pl.workspace_bytes = sizing.required();
  *plan = pl;
  return Status::kSuccess;
}

}  // namespace linear
MEMATTN_NAMESPACE_END
