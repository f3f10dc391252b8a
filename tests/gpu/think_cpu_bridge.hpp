// Host-compiled bridge for the ThinK GPU test: runs the CPU composed cache (think alone) and
// exports its segments in the layout of kernels::ThinKDecodeParams (Eigen stays out of nvcc).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "memattn/core/dtype.hpp"

struct ThinKCase {
  int B = 0, Hq = 0, Hkv = 0, D = 0, d_keep = 0, cap_old = 0, cap_new = 0;
  std::vector<memattn::Half> k_old;      // [B*Hkv][cap_old][d_keep]
  std::vector<memattn::Half> k_new;      // [B*Hkv][cap_new][D]
  std::vector<memattn::Half> v;          // [B*Hkv][cap_old + cap_new][D] (vprune: [B*Hkv][cap_new][D])
  std::vector<std::uint8_t> channels;    // [B*Hkv][d_keep]
  int dv_keep = 0;                       // vprune > 0: old values compact
  std::vector<memattn::Half> v_old;      // [B*Hkv][cap_old][dv_keep]
  std::vector<std::uint8_t> v_channels;  // [B*Hkv][dv_keep]
  std::vector<int> n_old, n_new;         // [B*Hkv]
  std::vector<float> q, out_cpu;         // [B][Hq][D]: the last decode step's query and CPU output
};

// Sequence b gets prefill + 5*b prompt tokens (ragged, RG-13), then `steps` decode steps; the last
// step's attention output is out_cpu and the exported state includes its token. vprune > 0: the
// value extension, exported compactly (v_old, v_channels) with v holding the new tokens only.
bool think_cpu_case(int B, int Hq, int Hkv, int D, float prune, int prefill, int steps, unsigned seed, ThinKCase* out,
                    float vprune = 0.f);

// Old keys [S][cap_old][d_keep] re-laid with a row stride of `stride` halves (zero padding): the
// rows of a multiple of 8 halves that the lane-group and tensor-core kernels read.
inline std::vector<memattn::Half> think_restride(const std::vector<memattn::Half>& k, int rows, int dk, int stride) {
  std::vector<memattn::Half> out(static_cast<std::size_t>(rows) * stride, memattn::Half{0});
  for (int r = 0; r < rows; ++r)
    std::copy(k.begin() + static_cast<std::ptrdiff_t>(r) * dk, k.begin() + static_cast<std::ptrdiff_t>(r + 1) * dk,
              out.begin() + static_cast<std::ptrdiff_t>(r) * stride);
  return out;
}
