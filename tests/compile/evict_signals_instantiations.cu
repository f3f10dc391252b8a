// Compile check: SirLLM's signal and score-update kernels and EpiCache's routing and probe-score
// kernels with their host wrappers, built to real SASS for each architecture in
// CMAKE_CUDA_ARCHITECTURES. compile.evict_signals_cubins checks the cubins.
#include <cstdio>

#include "memattn/cuda/evict_episode.cuh"
#include "memattn/cuda/evict_sirllm.cuh"

namespace mk = memattn::kernels;
using memattn::BFloat16;
using memattn::Half;
using memattn::Status;

template __global__ void mk::token_logprob_kernel<true>(const mk::TokenLogprobParams);
template __global__ void mk::token_logprob_kernel<false>(const mk::TokenLogprobParams);
template __global__ void mk::episode_route_kernel<float>(const mk::EpisodeRouteParams<float>);
template __global__ void mk::episode_route_kernel<double>(const mk::EpisodeRouteParams<double>);
#define MEMATTN_EPISODE_SCORE(TK, TQ)                                                                      \
  template __global__ void mk::episode_lse_kernel<TK, TQ>(const mk::EpisodeScoreParams<TK, TQ>,           \
                                                          const mk::EpisodeScoreWork);                     \
  template __global__ void mk::episode_lse_combine_kernel<TK, TQ>(const mk::EpisodeScoreParams<TK, TQ>,   \
                                                                  const mk::EpisodeScoreWork);             \
  template __global__ void mk::episode_score_kernel<TK, TQ>(const mk::EpisodeScoreParams<TK, TQ>,         \
                                                            const mk::EpisodeScoreWork);
MEMATTN_EPISODE_SCORE(Half, Half)
MEMATTN_EPISODE_SCORE(Half, float)
MEMATTN_EPISODE_SCORE(BFloat16, BFloat16)
MEMATTN_EPISODE_SCORE(BFloat16, float)
#undef MEMATTN_EPISODE_SCORE

namespace {

bool expect(Status got, Status want, const char* what) {
  if (got == want) return true;
  std::printf("%s: unexpected status %s (want %s)\n", what, memattn::status_message(got), memattn::status_message(want));
  return false;
}

template <class TK, class TQ>
bool score_checks() {
  // Every wrapper below returns before a launch: no device is needed.
  mk::EpisodeScoreParams<TK, TQ> p{};
  std::size_t bytes = 0;
  bool ok = expect(memattn::cuda::episode_score_workspace_size(p, &bytes), Status::kErrorNullPointer, "score nulls");
  static const TK k[1] = {};
  static const TQ q[1] = {};
  static const std::int32_t n[1] = {1};
  static float s[1];
  static std::int32_t err[1];
  p.k = k;
  p.q = q;
  p.len = p.probe_count = n;
  p.scores = s;
  p.error = err;
  p.segments = p.kv_heads = p.group = p.max_probe = p.max_tokens = 1;
  p.head_dim = 300;
  p.k_row_stride = 300;
  p.score_stride = 1;
  p.scale = 1.f;
  ok &= expect(memattn::cuda::episode_score(p, nullptr, 0, nullptr), Status::kErrorUnsupportedHeadDim, "head_dim 300");
  p.head_dim = 64;
  p.reduce = 3;
  ok &= expect(memattn::cuda::episode_score_workspace_size(p, &bytes), Status::kErrorInvalidArgument, "reduce 3");
  p.reduce = 1;
  p.kv_heads = 2;  // one segment cannot hold two KV heads
  ok &= expect(memattn::cuda::episode_score(p, nullptr, 0, nullptr), Status::kErrorInvalidShape, "segments % kv_heads");
  p.kv_heads = 1;
  ok &= expect(memattn::cuda::episode_score_workspace_size(p, &bytes), Status::kSuccess, "workspace size");
  ok &= expect(memattn::cuda::episode_score(p, nullptr, bytes, nullptr), Status::kErrorNullPointer, "no workspace");
  alignas(16) static unsigned char ws[16];
  ok &= expect(memattn::cuda::episode_score(p, ws, 8, nullptr), Status::kErrorWorkspaceTooSmall, "small workspace");
  return ok;
}

template <class T>
bool route_checks() {
  mk::EpisodeRouteParams<T> p{};
  bool ok = expect(memattn::cuda::episode_route(p, nullptr), Status::kErrorNullPointer, "route nulls");
  static const T x[1] = {};
  static const std::int32_t c[1] = {1};
  static std::int32_t r[1];
  p.query = p.centroids = x;
  p.count = c;
  p.route = r;
  p.error = r;
  p.batch = 1;
  p.dim = 4;
  p.query_stride = 2;  // shorter than dim
  ok &= expect(memattn::cuda::episode_route(p, nullptr), Status::kErrorInvalidShape, "route stride");
  return ok;
}

}  // namespace

int main() {
  bool ok = true;
  static const float logits[4] = {};
  static const std::int32_t ids[4] = {};
  static float out[4];
  static std::int32_t err[1];
  ok &= expect(memattn::cuda::token_logprobs(nullptr, 0, 0, 0, nullptr, nullptr, nullptr, nullptr), Status::kSuccess,
               "logprobs rows 0");
  ok &= expect(memattn::cuda::token_logprobs(logits, 1, 4, 4, ids, nullptr, err, nullptr), Status::kErrorNullPointer,
               "logprobs null out");
  ok &= expect(memattn::cuda::token_logprobs(logits, 1, 4, 3, ids, out, err, nullptr), Status::kErrorInvalidShape,
               "logprobs stride < vocab");
  ok &= expect(memattn::cuda::reference_alignment(logits, 2, 0, 4, ids, out, err, nullptr), Status::kErrorInvalidShape,
               "alignment vocab 0");
  mk::SirllmUpdateParams u{};
  ok &= expect(memattn::cuda::sirllm_update(u, nullptr), Status::kErrorNullPointer, "update nulls");
  static float st[4];
  static const std::int32_t one[1] = {1};
  u.state = st;
  u.pos = u.size = u.count = u.first_pos = one;
  u.logprobs = logits;
  u.error = err;
  u.segments = u.segments_per_sequence = 1;
  u.stride = u.logprob_stride = 4;
  u.decay = 1.5f;
  ok &= expect(memattn::cuda::sirllm_update(u, nullptr), Status::kErrorInvalidArgument, "decay 1.5");
  ok &= score_checks<Half, Half>() && score_checks<Half, float>() && score_checks<BFloat16, BFloat16>() &&
        score_checks<BFloat16, float>();
  ok &= route_checks<float>() && route_checks<double>();
  if (!ok) return 1;
  std::printf("evict signals instantiations: ok\n");
  return 0;
}
