// Compile check: the observation-window score kernels (pass 1 LSE + combine, pass 2 column sums for
// every query x key dtype pair, pooling, WindowKV) and their host wrappers, built to real SASS for
// each architecture in CMAKE_CUDA_ARCHITECTURES. compile.evict_window_cubins checks the cubins.
#include <cstdio>

#include "memattn/core/dtype.hpp"
#include "memattn/cuda/evict_window.cuh"

namespace mk = memattn::kernels;
namespace mc = memattn::cuda;
using memattn::BFloat16;
using memattn::Half;
using memattn::Status;

#define MEMATTN_WINDOW_INSTANTIATE(TQ, TK)                                                                        \
  template __global__ void mk::window_lse_kernel<TQ, TK>(const mk::WindowColsumParams<TQ, TK>, const mk::WindowPlan); \
  template __global__ void mk::window_lse_combine_kernel<TQ, TK>(const mk::WindowColsumParams<TQ, TK>,            \
                                                                  const mk::WindowPlan);                          \
  template __global__ void mk::window_colsum_kernel<TQ, TK>(const mk::WindowColsumParams<TQ, TK>, const mk::WindowPlan); \
  template Status mc::window_colsum<TQ, TK>(const mk::WindowColsumParams<TQ, TK>&, void*, std::size_t, cudaStream_t, int); \
  template Status mc::compresskv_scores<TQ, TK>(const mk::WindowColsumParams<TQ, TK>&, const mc::CompressKvScoreArgs&, \
                                                void*, std::size_t, cudaStream_t, int);

MEMATTN_WINDOW_INSTANTIATE(float, Half)
MEMATTN_WINDOW_INSTANTIATE(Half, Half)
MEMATTN_WINDOW_INSTANTIATE(BFloat16, Half)
MEMATTN_WINDOW_INSTANTIATE(float, BFloat16)
MEMATTN_WINDOW_INSTANTIATE(Half, BFloat16)
MEMATTN_WINDOW_INSTANTIATE(BFloat16, BFloat16)
MEMATTN_WINDOW_INSTANTIATE(float, float)
MEMATTN_WINDOW_INSTANTIATE(Half, float)
MEMATTN_WINDOW_INSTANTIATE(BFloat16, float)
#undef MEMATTN_WINDOW_INSTANTIATE

namespace {
int fail(const char* what, Status s) {
  std::printf("unexpected status for %s: %s\n", what, memattn::status_message(s));
  return 1;
}
}  // namespace

int main() {
  // Argument checks run without a device: bad arguments are rejected before any launch.
  mk::WindowColsumParams<float, Half> p{};
  Status s = mc::window_colsum(p, nullptr, 0, nullptr);
  if (s != Status::kErrorNullPointer) return fail("null pointers", s);
  alignas(16) static const float q[8] = {};
  alignas(16) static const Half k[8] = {};
  static const int pos[1] = {0};
  alignas(16) static float col[8];
  p.q = q, p.qpos = pos, p.k = k, p.kpos = pos, p.col = col;
  p.q_stride[2] = 8, p.k_stride[2] = 8;
  p.batch = 1, p.q_heads = 1, p.kv_heads = 1, p.head_dim = 12, p.window = 1, p.max_keys = 1, p.scale = 1.f;
  s = mc::window_colsum(p, nullptr, 0, nullptr);
  if (s != Status::kErrorUnsupportedHeadDim) return fail("head_dim 12", s);
  p.head_dim = 8;
  p.q_heads = 9;  // 9 query heads on 1 KV head > 8
  s = mc::window_colsum(p, nullptr, 0, nullptr);
  if (s != Status::kErrorGqaRatio) return fail("G = 9", s);
  p.q_heads = 1;
  p.window = 0;
  s = mc::window_colsum(p, nullptr, 0, nullptr);
  if (s != Status::kErrorInvalidShape) return fail("window 0", s);
  p.window = 1;
  p.scale = 0.f;
  s = mc::window_colsum(p, nullptr, 0, nullptr);
  if (s != Status::kErrorInvalidArgument) return fail("scale 0", s);
  p.scale = 1.f;
  mk::WindowPoolParams pp{};
  pp.in = col, pp.out = col + 4, pp.count = pos, pp.batch = 1, pp.units = 1, pp.max_len = 1, pp.kernel = 4;
  s = mc::window_pool(pp, nullptr);
  if (s != Status::kErrorInvalidArgument) return fail("even pooling kernel", s);
  mk::WindowKvParams kp{};
  s = mc::windowkv_scores(kp, nullptr, 0, nullptr);
  if (s != Status::kErrorNullPointer) return fail("WindowKV null pointers", s);
  mc::CompressKvScoreArgs a;
  const int heads[2] = {0, 0};
  a.heads = heads, a.n_heads = 2, a.n_cand = pos, a.out = col;
  s = mc::compresskv_scores(p, a, nullptr, 0, nullptr);
  if (s != Status::kErrorInvalidArgument) return fail("repeated CompressKV head", s);
  std::printf("evict_window instantiations: ok\n");
  return 0;
}
