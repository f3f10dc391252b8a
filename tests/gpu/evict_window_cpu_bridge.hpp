// Host-compiled bridge for the observation-window score GPU test: the CPU references
// (cpu::window_colsum, cpu::pool_scores, evict::WindowBlock::unit_scores,
// cpu::head_subset_window_scores) behind plain types, so Eigen stays out of nvcc.
// key_dtype: 0 fp32, 1 Half, 2 BFloat16 (the fp32 key values must be representable in it: the
// bridge converts them to that dtype and runs the CPU instantiation the caches use).
#pragma once

#include <cstdint>

// col[N] = R_g sum_i p_{g,i,j} of one segment; q [w][G][D] fp32 (post-RoPE, unscaled), k [N][D].
bool cpu_window_colsum(const float* q, const std::int32_t* qpos, int w, int G, int D, float scale, const float* k,
                       int key_dtype, const std::int32_t* kpos, int N, int reduce, float* col);

// out[n] = Pool_k(v[0, n)) (odd kernel, pool 0 avg / 1 max).
bool cpu_pool_scores(const float* v, int n, int kernel, int pool, bool count_include_pad, float* out);

// WindowKV rank-encoded scores out[n_rev] from col [heads][N] (row stride N).
void cpu_windowkv_scores(const float* col, int heads, int N, int n_rev, int block, int mode, float* out);

// CompressKV layer scores out[N]: wq [w][Hq][D] fp32, keys [Hkv][N][D], kpos[N] shared by the heads.
bool cpu_compresskv_scores(const float* wq, const std::int32_t* wpos, int w, int Hq, int Hkv, int D, const float* keys,
                           int key_dtype, const std::int32_t* kpos, int N, int n_cand, const std::int32_t* heads,
                           int n_heads, int kernel, int pool, bool count_include_pad, float* out);
