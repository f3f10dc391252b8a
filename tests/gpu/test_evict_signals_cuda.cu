// SirLLM and EpiCache per-step work on the GPU vs the CPU path (spec eviction.md §3.9, §3.12,
// §4.5):
//  * token_logprobs / reference_alignment vs cpu::token_logprobs / cpu::reference_alignment
//    (fp64 accumulation): vocab 512 .. 151936, strided and misaligned rows (scalar path), logit
//    gaps of 1e4 where a plain softmax under/overflows; non-finite logits and bad ids -> NaN rows
//    and the device flag bits.
//  * sirllm_update + evict_select + evict_gather over many turns vs Surprisal::on_chunk +
//    cpu::select_keep + cpu::compact_rows: state bit-identical, keep lists identical.
//  * episode_score (Half / BFloat16 keys, probe in the key type or fp32) vs the CPU cache's
//    cpu::window_colsum call (host-compiled bridge) and an fp64 naive oracle: several head dims
//    (incl. non-multiples of 4 and 8), group sizes, probe counts around the 64-row chunk, lengths
//    around the 64-key tile, every group reduction, probe-less segments, huge logits.
//  * episode_route (fp64 and fp32 embeddings) vs evict::OnlineKMeans::nearest (bridge): random
//    embeddings, duplicate and zero centroids (tie rule), zero query, variable centroid counts.
//  * bad arguments: a Status, nothing launched (outputs keep their sentinels); bad device-side
//    values: *error set and the segment / sequence untouched.
// Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/signal_cases.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/token_logprobs.hpp"
#include "memattn/cuda/evict.cuh"
#include "memattn/cuda/evict_episode.cuh"
#include "memattn/cuda/evict_sirllm.cuh"
#include "memattn/evict/sirllm.hpp"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;
using memattn_gpu_test::download;

using namespace memattn;
using memattn_test::LogitCase;
using memattn_test::make_logits;
using memattn_test::ScoreShape;

namespace {

template <class T>
void put(T* d, const std::vector<T>& h) {
  REQUIRE(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
}

constexpr float kSentinel = 123.25f;  // outputs nothing may write

}  // namespace

TEST_CASE("token_logprobs on the GPU == cpu::token_logprobs (fp64) within 2e-5 + 1e-6 |x|", "[sirllm][gpu]") {
  struct Shape {
    std::int64_t rows, vocab, stride, offset;
  };
  const Shape shapes[] = {{9, 512, 512, 0},         {6, 49152, 49152, 0},   {5, 49152, 49160, 0},
                          {7, 1000, 1003, 0},       {5, 50257, 50257, 1},   {3, 151936, 151936, 0},
                          {4, 1, 1, 0},             {5, 3, 4, 0},           {600, 512, 516, 0}};
  unsigned seed = 1;
  for (const Shape& s : shapes) {
    CAPTURE(s.rows, s.vocab, s.stride, s.offset);
    const LogitCase c = make_logits(s.rows, s.vocab, s.stride, s.offset, seed++);
    std::vector<float> ref(static_cast<std::size_t>(s.rows));
    REQUIRE(cpu::token_logprobs(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), ref.data()) == Status::kSuccess);
    float* d_buf = upload(c.buf);
    std::int32_t* d_ids = upload(c.ids);
    float* d_out = upload(std::vector<float>(static_cast<std::size_t>(s.rows), kSentinel));
    std::int32_t* d_err = upload(std::vector<std::int32_t>(1, 0));
    REQUIRE(memattn::cuda::token_logprobs(d_buf + s.offset, s.rows, s.vocab, s.stride, d_ids, d_out, d_err, nullptr) ==
            Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const auto out = download(d_out, ref.size());
    CHECK(download(d_err, 1)[0] == 0);
    memattn_test::check_logprob_rows(out, ref);
    if (s.vocab > 1) CHECK(ref[1] < -9000.f);  // the -1e4 row: finite, about -1e4
    // Reference alignment over the same logits (rows = n tokens).
    std::vector<float> ref_a(static_cast<std::size_t>(s.rows));
    REQUIRE(cpu::reference_alignment(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), ref_a.data()) ==
            Status::kSuccess);
    put(d_out, std::vector<float>(ref_a.size(), kSentinel));
    REQUIRE(memattn::cuda::reference_alignment(d_buf + s.offset, s.rows, s.vocab, s.stride, d_ids, d_out, d_err, nullptr) ==
            Status::kSuccess);
    memattn_test::check_alignment_rows(download(d_out, ref_a.size()), ref_a);
    CHECK(download(d_err, 1)[0] == 0);
    cudaFree(d_buf);
    cudaFree(d_ids);
    cudaFree(d_out);
    cudaFree(d_err);
  }
}

TEST_CASE("token_logprobs: non-finite logits and bad ids give NaN rows and device flag bits", "[sirllm][gpu]") {
  const LogitCase c = memattn_test::poisoned_logits();
  std::vector<float> cpu_out(8, kSentinel);
  // The CPU contract: the whole call fails and writes nothing.
  CHECK(cpu::token_logprobs(c.host(), 8, 512, 512, c.ids.data(), cpu_out.data()) != Status::kSuccess);
  CHECK(cpu_out[0] == kSentinel);
  float* d_buf = upload(c.buf);
  std::int32_t* d_ids = upload(c.ids);
  float* d_out = upload(std::vector<float>(8, kSentinel));
  std::int32_t* d_err = upload(std::vector<std::int32_t>(1, 0));
  REQUIRE(memattn::cuda::token_logprobs(d_buf, 8, 512, 512, d_ids, d_out, d_err, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto out = download(d_out, 8);
  CHECK(download(d_err, 1)[0] == (kernels::kLogprobNonFinite | kernels::kLogprobBadId));
  memattn_test::check_poisoned_rows(c, out);
  // Only the id flag when only the ids are bad.
  put(d_err, std::vector<std::int32_t>(1, 0));
  REQUIRE(memattn::cuda::token_logprobs(d_buf + 4 * 512, 2, 512, 512, d_ids + 4, d_out, d_err, nullptr) == Status::kSuccess);
  CHECK(download(d_err, 1)[0] == kernels::kLogprobBadId);
  cudaFree(d_buf);
  cudaFree(d_ids);
  cudaFree(d_out);
  cudaFree(d_err);
}

TEST_CASE("token_logprobs / reference_alignment / sirllm_update: bad arguments launch nothing", "[sirllm][gpu]") {
  const LogitCase c = make_logits(4, 512, 512, 0, 5);
  float* d_buf = upload(c.buf);
  std::int32_t* d_ids = upload(c.ids);
  float* d_out = upload(std::vector<float>(4, kSentinel));
  std::int32_t* d_err = upload(std::vector<std::int32_t>(1, 0));
  CHECK(memattn::cuda::token_logprobs(d_buf, 0, 512, 512, d_ids, nullptr, nullptr, nullptr) == Status::kSuccess);  // rows 0
  CHECK(memattn::cuda::token_logprobs(nullptr, 4, 512, 512, d_ids, d_out, d_err, nullptr) == Status::kErrorNullPointer);
  CHECK(memattn::cuda::token_logprobs(d_buf, 4, 512, 512, nullptr, d_out, d_err, nullptr) == Status::kErrorNullPointer);
  CHECK(memattn::cuda::token_logprobs(d_buf, 4, 512, 512, d_ids, d_out, nullptr, nullptr) == Status::kErrorNullPointer);
  CHECK(memattn::cuda::token_logprobs(d_buf, 4, 512, 511, d_ids, d_out, d_err, nullptr) == Status::kErrorInvalidShape);
  CHECK(memattn::cuda::token_logprobs(d_buf, -1, 512, 512, d_ids, d_out, d_err, nullptr) == Status::kErrorInvalidShape);
  CHECK(memattn::cuda::token_logprobs(d_buf, 4, 0, 512, d_ids, d_out, d_err, nullptr) == Status::kErrorInvalidShape);
  CHECK(memattn::cuda::reference_alignment(d_buf, 0, 512, 512, d_ids, nullptr, nullptr, nullptr) == Status::kSuccess);
  CHECK(memattn::cuda::reference_alignment(d_buf, 4, 512, 512, nullptr, d_out, d_err, nullptr) == Status::kErrorNullPointer);
  CHECK(memattn::cuda::reference_alignment(d_buf, 4, 512, 100, d_ids, d_out, d_err, nullptr) == Status::kErrorInvalidShape);
  CHECK(memattn::cuda::reference_alignment(d_buf, -2, 512, 512, d_ids, d_out, d_err, nullptr) == Status::kErrorInvalidShape);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  for (float x : download(d_out, 4)) CHECK(x == kSentinel);
  // n == 1 reads no logits (as the CPU): out[0] = NaN only.
  REQUIRE(memattn::cuda::reference_alignment(nullptr, 1, 0, 0, nullptr, d_out, d_err, nullptr) == Status::kSuccess);
  const auto one = download(d_out, 4);
  CHECK(std::isnan(one[0]));
  CHECK(one[1] == kSentinel);
  CHECK(download(d_err, 1)[0] == 0);

  kernels::SirllmUpdateParams u;
  std::vector<float> st(8, kSentinel);
  float* d_st = upload(st);
  std::int32_t* d_i = upload(std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  u.state = d_st;
  u.pos = u.size = u.count = u.first_pos = d_i;
  u.logprobs = d_buf;
  u.error = d_err;
  u.stride = 4;
  u.logprob_stride = 4;
  u.segments = 2;
  u.segments_per_sequence = 1;
  u.decay = -0.1f;
  CHECK(memattn::cuda::sirllm_update(u, nullptr) == Status::kErrorInvalidArgument);
  u.decay = std::numeric_limits<float>::quiet_NaN();
  CHECK(memattn::cuda::sirllm_update(u, nullptr) == Status::kErrorInvalidArgument);
  u.decay = 0.5f;
  u.turn = -1;
  CHECK(memattn::cuda::sirllm_update(u, nullptr) == Status::kErrorInvalidArgument);
  u.turn = 0;
  u.segments_per_sequence = 3;  // 2 segments are not whole sequences of 3
  CHECK(memattn::cuda::sirllm_update(u, nullptr) == Status::kErrorInvalidShape);
  u.segments_per_sequence = 1;
  u.stride = 0;
  CHECK(memattn::cuda::sirllm_update(u, nullptr) == Status::kErrorInvalidShape);
  u.stride = 4;
  u.error = nullptr;
  CHECK(memattn::cuda::sirllm_update(u, nullptr) == Status::kErrorNullPointer);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  for (float x : download(d_st, 8)) CHECK(x == kSentinel);
  for (void* p : {static_cast<void*>(d_buf), static_cast<void*>(d_ids), static_cast<void*>(d_out),
                  static_cast<void*>(d_err), static_cast<void*>(d_st), static_cast<void*>(d_i)})
    cudaFree(p);
}

// ---- SirLLM turns ---------------------------------------------------------------------------

TEST_CASE("SirLLM turns on the GPU (update + evict_select + gather) == CPU, bit for bit", "[sirllm][gpu]") {
  std::mt19937 rng(2405);
  for (const memattn_test::SirllmTurnConfig& cfg : memattn_test::sirllm_turn_configs()) {
    CAPTURE(cfg.decay, cfg.turn, cfg.budget, cfg.sink, cfg.recent, cfg.spq);
    const int B = 3, S = B * cfg.spq, max_chunk = 90;
    const std::int64_t stride = cfg.budget + max_chunk + 8;
    const evict::Surprisal::Params sp = memattn_test::surprisal_params(cfg);
    const evict::Protection pr = memattn_test::protection(cfg);
    // CPU mirror: per segment state/pos/size; sequences share lengths.
    memattn_test::SirllmTurnState t(S, cfg.spq, stride);
    const std::vector<float>& st = t.st;
    const std::vector<std::int32_t>& pos = t.pos;
    const std::vector<std::int32_t>& size = t.size;
    std::vector<std::int64_t> len(B, 0);
    float *d_st = upload(st), *d_st2 = upload(st);
    std::int32_t *d_pos = upload(pos), *d_pos2 = upload(pos), *d_size = upload(size);
    std::int32_t* d_keep = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S * stride), 0));
    std::int32_t* d_count = upload(std::vector<std::int32_t>(static_cast<std::size_t>(S), 0));
    std::int32_t* d_err = upload(std::vector<std::int32_t>(2, 0));
    float* d_lp = upload(std::vector<float>(static_cast<std::size_t>(B * max_chunk), 0.f));
    std::int32_t *d_cnt = upload(std::vector<std::int32_t>(B, 0)), *d_first = upload(std::vector<std::int32_t>(B, 0));
    std::int32_t *d_budget = upload(std::vector<std::int32_t>(S, cfg.budget)), *d_tcur = upload(std::vector<std::int32_t>(S, 0));
    for (int step = 0; step < 14; ++step) {
      CAPTURE(step);
      const memattn_test::SirllmChunk chunk = memattn_test::make_sirllm_chunk(rng, step, len, max_chunk);
      // Append the chunk: the GPU's new slots get garbage state (the update must overwrite it).
      t.gst = download(d_st, st.size());
      t.gpos = download(d_pos, pos.size());
      t.append(chunk);
      put(d_st, t.gst);
      put(d_pos, t.gpos);
      put(d_size, size);
      put(d_lp, chunk.lp);
      put(d_cnt, chunk.cnt);
      put(d_first, chunk.first);
      put(d_tcur, t.tcur);
      REQUIRE(memattn::cuda::sirllm_update(memattn_test::sirllm_update_params(cfg, t, d_st, d_pos, d_size, d_lp, max_chunk, d_cnt,
                                                                              d_first, d_err),
                                           nullptr) == Status::kSuccess);
      // CPU: on_chunk per segment (as EvictKvCache::end_chunk), then select + compact.
      t.cpu_update(sp, chunk, max_chunk);
      t.check_state(download(d_st, st.size()));
      const kernels::EvictSelectParams sel =
          memattn_test::sirllm_select_params(cfg, pr, t, d_st, d_pos, d_size, d_budget, d_tcur, d_keep, d_count, d_err + 1);
      REQUIRE(memattn::cuda::evict_select(sel, nullptr) == Status::kSuccess);
      REQUIRE(memattn::cuda::evict_gather(d_st, stride, d_st2, stride, 1, S, d_keep, stride, d_count, nullptr) == Status::kSuccess);
      REQUIRE(memattn::cuda::evict_gather(d_pos, stride, d_pos2, stride, 1, S, d_keep, stride, d_count, nullptr) == Status::kSuccess);
      std::swap(d_st, d_st2);
      std::swap(d_pos, d_pos2);
      t.check_select(cfg, pr, download(d_keep, static_cast<std::size_t>(S * stride)), download(d_count, static_cast<std::size_t>(S)),
                     false);
      put(d_size, size);
      for (int b = 0; b < B; ++b) len[b] += chunk.cnt[b];
    }
    const auto gst = download(d_st, st.size());
    const auto gpos = download(d_pos, pos.size());
    for (int s = 0; s < S; ++s)
      for (std::int32_t j = 0; j < size[static_cast<std::size_t>(s)]; ++j) {
        const std::size_t at = static_cast<std::size_t>(s * stride + j);
        REQUIRE(memattn_test::same_bits(gst[at], st[at]));
        REQUIRE(gpos[at] == pos[at]);
      }
    CHECK(download(d_err, 2) == std::vector<std::int32_t>{0, 0});
    for (void* p : {static_cast<void*>(d_st), static_cast<void*>(d_st2), static_cast<void*>(d_pos),
                    static_cast<void*>(d_pos2), static_cast<void*>(d_size), static_cast<void*>(d_keep),
                    static_cast<void*>(d_count), static_cast<void*>(d_err), static_cast<void*>(d_lp),
                    static_cast<void*>(d_cnt), static_cast<void*>(d_first), static_cast<void*>(d_budget),
                    static_cast<void*>(d_tcur)})
      cudaFree(p);
  }
}

TEST_CASE("sirllm_update: an inconsistent segment sets the flag and stays untouched", "[sirllm][gpu]") {
  // 3 segments of one sequence each; segment 1: size < count; segment 2: a position outside the chunk.
  memattn_test::SirllmBadSegments c;
  float* d_st = upload(c.st);
  std::int32_t *d_pos = upload(c.pos), *d_size = upload(c.size), *d_cnt = upload(c.cnt), *d_first = upload(c.first);
  float* d_lp = upload(c.lp);
  std::int32_t* d_err = upload(std::vector<std::int32_t>(1, 0));
  REQUIRE(memattn::cuda::sirllm_update(memattn_test::SirllmBadSegments::params(d_st, d_pos, d_size, d_lp, d_cnt, d_first, d_err), nullptr) ==
          Status::kSuccess);
  memattn_test::SirllmBadSegments::check(download(d_st, 24), download(d_err, 1)[0]);
  for (void* p : {static_cast<void*>(d_st), static_cast<void*>(d_pos), static_cast<void*>(d_size),
                  static_cast<void*>(d_cnt), static_cast<void*>(d_first), static_cast<void*>(d_lp),
                  static_cast<void*>(d_err)})
    cudaFree(p);
}

// ---- EpiCache probe scores ------------------------------------------------------------------

namespace {

template <class TK, class TQ>
void run_score_case(const ScoreShape& sh, unsigned seed) {
  CAPTURE(sh.E, sh.Hkv, sh.G, sh.D, sh.max_tokens, sh.max_probe, sh.reduce, sh.huge);
  const memattn_test::EpisodeScoreCase<TK, TQ> c(sh, seed);
  TK* d_k = upload(c.k);
  TQ* d_q = upload(c.q);
  std::int32_t *d_len = upload(c.len), *d_pc = upload(c.pc), *d_err = upload(std::vector<std::int32_t>(1, 0));
  float* d_scores = upload(std::vector<float>(static_cast<std::size_t>(c.S * c.score_stride), kSentinel));
  const kernels::EpisodeScoreParams<TK, TQ> p = memattn_test::episode_params(sh, c, d_k, d_q, d_len, d_pc, d_scores, d_err);
  std::size_t bytes = 0;
  REQUIRE(memattn::cuda::episode_score_workspace_size(p, &bytes) == Status::kSuccess);
  void* ws = nullptr;
  REQUIRE(cudaMalloc(&ws, bytes) == cudaSuccess);
  REQUIRE(memattn::cuda::episode_score(p, ws, bytes, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  CHECK(download(d_err, 1)[0] == 0);
  memattn_test::check_episode_scores(sh, c, download(d_scores, static_cast<std::size_t>(c.S * c.score_stride)), kSentinel);
  cudaFree(ws);
  for (void* ptr : {static_cast<void*>(d_k), static_cast<void*>(d_q), static_cast<void*>(d_len),
                    static_cast<void*>(d_pc), static_cast<void*>(d_err), static_cast<void*>(d_scores)})
    cudaFree(ptr);
}

}  // namespace

TEST_CASE("EpiCache probe scores on the GPU == the CPU cache's window_colsum and an fp64 oracle", "[epicache][gpu]") {
  const std::vector<ScoreShape> shapes = memattn_test::episode_score_shapes();
  unsigned seed = 11;
  for (const ScoreShape& sh : shapes) {
    run_score_case<Half, Half>(sh, seed++);
    run_score_case<BFloat16, BFloat16>(sh, seed++);
    run_score_case<Half, float>(sh, seed++);
    run_score_case<BFloat16, float>(sh, seed++);
  }
}

TEST_CASE("episode_score: bad arguments launch nothing; a bad segment sets the flag and stays untouched",
          "[epicache][gpu]") {
  const int N = 70, D = 64;
  std::vector<Half> k(static_cast<std::size_t>(2 * N * D), from_float<Half>(0.5f));
  std::vector<Half> q(static_cast<std::size_t>(4 * D), from_float<Half>(0.25f));
  Half* d_k = upload(k);
  Half* d_q = upload(q);
  std::int32_t *d_len = upload(std::vector<std::int32_t>{N, N + 1}), *d_pc = upload(std::vector<std::int32_t>{2});
  std::int32_t* d_err = upload(std::vector<std::int32_t>(1, 0));
  float* d_scores = upload(std::vector<float>(static_cast<std::size_t>(2 * N), kSentinel));
  const auto p = memattn_test::episode_small_params(N, D, d_k, d_len, d_q, d_pc, d_scores, d_err);
  std::size_t bytes = 0;
  REQUIRE(memattn::cuda::episode_score_workspace_size(p, &bytes) == Status::kSuccess);
  void* ws = nullptr;
  REQUIRE(cudaMalloc(&ws, bytes + 16) == cudaSuccess);
  CHECK(memattn::cuda::episode_score(p, ws, bytes - 1, nullptr) == Status::kErrorWorkspaceTooSmall);
  CHECK(memattn::cuda::episode_score(p, static_cast<char*>(ws) + 4, bytes, nullptr) == Status::kErrorWorkspaceTooSmall);
  CHECK(memattn::cuda::episode_score(p, nullptr, bytes, nullptr) == Status::kErrorNullPointer);
  auto bad = p;
  bad.head_dim = 257;
  bad.k_row_stride = 257;
  CHECK(memattn::cuda::episode_score(bad, ws, bytes, nullptr) == Status::kErrorUnsupportedHeadDim);
  bad = p;
  bad.k_row_stride = D - 1;
  CHECK(memattn::cuda::episode_score(bad, ws, bytes, nullptr) == Status::kErrorInvalidShape);
  bad = p;
  bad.score_stride = N - 1;
  CHECK(memattn::cuda::episode_score(bad, ws, bytes, nullptr) == Status::kErrorInvalidShape);
  bad = p;
  bad.scale = 0.f;
  CHECK(memattn::cuda::episode_score(bad, ws, bytes, nullptr) == Status::kErrorInvalidArgument);
  bad = p;
  bad.reduce = -1;
  CHECK(memattn::cuda::episode_score(bad, ws, bytes, nullptr) == Status::kErrorInvalidArgument);
  bad = p;
  bad.q = nullptr;
  CHECK(memattn::cuda::episode_score(bad, ws, bytes, nullptr) == Status::kErrorNullPointer);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  for (float x : download(d_scores, static_cast<std::size_t>(2 * N))) CHECK(x == kSentinel);
  CHECK(download(d_err, 1)[0] == 0);
  // Segment 1 claims N + 1 > max_tokens keys: flagged, untouched; segment 0 scored (all keys
  // equal: every probe row spreads 1/N over the keys, two rows -> 2/N).
  REQUIRE(memattn::cuda::episode_score(p, ws, bytes, nullptr) == Status::kSuccess);
  const auto out = download(d_scores, static_cast<std::size_t>(2 * N));
  CHECK(download(d_err, 1)[0] == 1);
  for (int j = 0; j < N; ++j) CHECK(std::fabs(out[static_cast<std::size_t>(j)] - 2.f / N) <= 1e-6f);
  for (int j = N; j < 2 * N; ++j) CHECK(out[static_cast<std::size_t>(j)] == kSentinel);
  cudaFree(ws);
  for (void* ptr : {static_cast<void*>(d_k), static_cast<void*>(d_q), static_cast<void*>(d_len),
                    static_cast<void*>(d_pc), static_cast<void*>(d_err), static_cast<void*>(d_scores)})
    cudaFree(ptr);
}

// ---- EpiCache routing -----------------------------------------------------------------------

namespace {

template <class T>
void run_route(const std::vector<double>& centroids, int max_c, const std::vector<std::int32_t>& counts,
               const std::vector<double>& queries, int dim, std::vector<std::int32_t>* route, std::vector<double>* sim,
               std::int32_t* err) {
  const int B = static_cast<int>(counts.size());
  std::vector<T> c(centroids.begin(), centroids.end()), q(queries.begin(), queries.end());
  if (c.empty()) c.push_back(T(0));
  T* d_c = upload(c);
  T* d_q = upload(q);
  std::int32_t *d_cnt = upload(counts), *d_route = upload(std::vector<std::int32_t>(static_cast<std::size_t>(B), -9)),
               *d_err = upload(std::vector<std::int32_t>(1, 0));
  double* d_sim = upload(std::vector<double>(static_cast<std::size_t>(B), 9.0));
  kernels::EpisodeRouteParams<T> p;
  p.query = d_q;
  p.query_stride = dim;
  p.centroids = d_c;
  p.centroid_stride = dim;
  p.seq_stride = 0;  // every sequence routes against the same centroids (its own count)
  p.count = d_cnt;
  p.batch = B;
  p.dim = dim;
  p.max_centroids = max_c;
  p.route = d_route;
  p.sim = d_sim;
  p.error = d_err;
  REQUIRE(memattn::cuda::episode_route(p, nullptr) == Status::kSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  *route = download(d_route, static_cast<std::size_t>(B));
  *sim = download(d_sim, static_cast<std::size_t>(B));
  *err = download(d_err, 1)[0];
  for (void* ptr : {static_cast<void*>(d_c), static_cast<void*>(d_q), static_cast<void*>(d_cnt),
                    static_cast<void*>(d_route), static_cast<void*>(d_err), static_cast<void*>(d_sim)})
    cudaFree(ptr);
}

}  // namespace

TEST_CASE("episode_route on the GPU == OnlineKMeans::nearest (ties: lower index; zero norms: 0)", "[epicache][gpu]") {
  std::mt19937 rng(1729);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto run = [](auto embedding, const std::vector<double>& centroids, int max_c, const std::vector<std::int32_t>& counts,
                const std::vector<double>& queries, int dim, std::vector<std::int32_t>* route, std::vector<double>* sim,
                std::int32_t* err) { run_route<decltype(embedding)>(centroids, max_c, counts, queries, dim, route, sim, err); };
  for (int dim : {576, 3, 1000})
    for (int variant = 0; variant < 2; ++variant) memattn_test::check_route_scenario(dim, variant, rng, nd, run);
  // A count above max_centroids: flagged, that sequence untouched; bad arguments: nothing launched.
  std::vector<std::int32_t> route;
  std::vector<double> sim;
  std::int32_t err = 0;
  run_route<double>(std::vector<double>(8, 1.0), 2, {1, 3}, std::vector<double>(8, 1.0), 4, &route, &sim, &err);
  CHECK(err == 1);
  CHECK(route == std::vector<std::int32_t>{0, -9});
  kernels::EpisodeRouteParams<float> p;
  CHECK(memattn::cuda::episode_route(p, nullptr) == Status::kErrorNullPointer);
}
