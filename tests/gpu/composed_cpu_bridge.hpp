// Host-compiled bridge for the composed-cache GPU test (issue 7): runs a CPU ComposedKvCache
// (KIVI, ThinK + KIVI, H2O + ThinK + KIVI, H2O + KIVI) over a ragged batch and exports its raw
// regions (ComposedKvCache::regions(), copied as they are) in the layout of
// kernels::ThinKDecodeParams, with the last decode step's query, the CPU output and the H2O state
// before / after that step (Eigen stays out of nvcc).
#pragma once

#include <cstdint>
#include <vector>

#include "memattn/core/dtype.hpp"

enum class ComposedKind { kKivi, kThinkKivi, kH2oThinkKivi, kH2oKivi };

struct ComposedCase {
  int B = 0, Hq = 0, Hkv = 0, D = 0, d_keep = 0;
  int bits_k = 0, bits_v = 0, qgroup = 0, v_group = 0, k_block_words = 0, v_words = 0, v_groups = 0;
  int cap_blocks = 1, cap_q = 1, cap_old = 1, cap_new = 1, cap_total = 1;  // per segment
  std::vector<int> kq_first;           // [S][cap_blocks] first token of each block (partly filled after eviction)
  std::vector<int> n_blocks;           // [S]
  std::vector<std::uint32_t> kq;       // [S][cap_blocks][k_block_words]
  std::vector<std::uint16_t> kqm;      // [S][cap_blocks][2 * d_keep]
  std::vector<std::uint32_t> vq;       // [S][cap_q][v_words]
  std::vector<std::uint16_t> vqm;      // [S][cap_q][2 * v_groups]
  std::vector<memattn::Half> k_old;    // [S][cap_old][d_keep]
  std::vector<memattn::Half> v_old;    // [S][cap_old][D]
  std::vector<memattn::Half> k_new;    // [S][cap_new][D]
  std::vector<memattn::Half> v_new;    // [S][cap_new][D]
  std::vector<std::uint8_t> channels;  // [S][d_keep] (identity without ThinK)
  std::vector<int> n_q, n_old, n_new, n_total;  // [S]
  std::vector<float> q, out_cpu;       // [B][Hq][D]
  bool evicts = false;
  std::vector<float> state_before, state_after;  // H2O accumulators [S][cap_total]
};

// Sequence b gets prefill + 7*b prompt tokens, a chunk of 40, then `steps` decode steps; the exported
// state is that of the last step with its chunk still open (its token in the tail).
// granularity: ThinK's d_keep rounding (8: d_keep a multiple of 8, what the lane-group kernel reads);
// prune: ThinK's pruned fraction of the key channels; v_group: KIVI's value group (0: the default,
// 32 here; 64 / 128 take blocks of as many tokens, G_V <= G).
bool composed_cpu_case(ComposedKind kind, int B, int Hq, int Hkv, int D, int bits_k, int bits_v, int prefill, int steps,
                       unsigned seed, ComposedCase* out, int granularity = 1, float prune = 0.4f, int v_group = 0);
