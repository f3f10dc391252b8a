// The dense decode as cuda::dense_decode runs it (checks, plan on 132 SMs, workspace carving, the
// split kernel, then the merge), on the CPU emulator: for the emulated tests that need a decode.
#pragma once

#include <cstdint>
#include <vector>

#include "emu/simt.hpp"
#include "emu/emu_launch.hpp"
#include "memattn/cuda/dense_decode_params.cuh"

namespace memattn_emu {

constexpr int kDecodeSms = 132;

template <class T>
memattn::Status emulated_decode(const memattn::attention::DecodeArgs<T>& a, const memattn::cuda::DenseDecodeTuning& tuning,
                                memattn::cuda::DenseDecodePlan* plan_out) {
  namespace cd = memattn::cuda::detail;
  namespace mk = memattn::kernels;
  memattn::attention::AttentionDims d;
  MEMATTN_RETURN_IF_ERROR(cd::check_args(a, &d));
  memattn::cuda::DenseDecodePlan pl;
  MEMATTN_RETURN_IF_ERROR(cd::make_plan(a, d, kDecodeSms, tuning, &pl));
  *plan_out = pl;
  // carved from an aligned base, as cudaMalloc's; 0xFF: never-written partials show as NaN
  std::vector<unsigned char> ws(pl.workspace_bytes + memattn::kWorkspaceAlign, 0xFF);
  const std::size_t pad = (memattn::kWorkspaceAlign - reinterpret_cast<std::uintptr_t>(ws.data()) % memattn::kWorkspaceAlign) %
                          memattn::kWorkspaceAlign;
  memattn::Workspace w(ws.data() + pad, pl.workspace_bytes);
  float *part_o = nullptr, *part_lse = nullptr;
  cd::plan_workspace(w, d, pl.num_splits, &part_o, &part_lse);
  MEMATTN_RETURN_IF_ERROR(w.status());
  return cd::decode_phases<T>(cd::decode_params(a, d, pl, part_o, part_lse), pl, memattn_emu_test::emu_launch);
}

}  // namespace memattn_emu
