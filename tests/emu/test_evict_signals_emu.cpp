// SirLLM's and EpiCache's per-step kernels (evict_sirllm.cuh, evict_episode.cuh) run by the CPU
// emulator (simt.hpp) on every CI run, both CTA orders, through the wrappers' checks, parameters,
// workspace carving and launches (cuda/evict_sirllm_params.cuh, cuda/evict_episode_params.cuh),
// against the GPU test's references and tolerances (common/signal_cases.hpp):
//  * token_logprobs / reference_alignment vs cpu::token_logprobs / cpu::reference_alignment
//    (fp64): vocab 1 .. 151936, strided and misaligned rows (the scalar kernel), 1e4 logit gaps;
//    non-finite logits and bad ids -> NaN rows and the flag bits.
//  * sirllm_update + the select kernel over 14 turns vs Surprisal::on_chunk + cpu::select_keep:
//    state bit-identical (new slots start as garbage), keep lists identical; an inconsistent
//    segment sets the flag and stays untouched.
//  * episode_score vs the CPU cache's window_colsum and an fp64 oracle: head dims 7 .. 256, groups
//    1 .. 8, probe counts around the 64-row chunk, lengths around the 64-key tile, every group
//    reduction, probe-less episodes, huge logits; fp32 / Half / BFloat16; 0xFF workspace; a bad
//    segment sets the flag and stays untouched.
//  * episode_route (fp64 / fp32) vs OnlineKMeans::nearest and the rule on fp32 values: ties, zero
//    centroids and query, per-sequence centroid counts; a count above the bound sets the flag.
//  * bad arguments: the host checks' Status.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use
#include "emu/emu_launch.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/signal_cases.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/token_logprobs.hpp"
#include "memattn/cuda/evict_episode_params.cuh"
#include "memattn/cuda/evict_sirllm_params.cuh"
#include "memattn/evict/sirllm.hpp"
#include "memattn/kernels/evict_select.cuh"

namespace {

using memattn_emu_test::emu_launch;
using memattn_emu_test::HostWs;
using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn_test::make_logits;
using memattn_test::ScoreShape;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;
namespace evict = memattn::evict;
namespace sd = memattn::cuda::sirllm_detail;

constexpr float kSentinel = 123.25f;  // outputs nothing may write

// The wrapper's parameters (sirllm_detail's token_logprobs_params or reference_alignment_params)
// and its launch, on the emulator.
template <class MakeParams>
Status emulated_logprobs(MakeParams&& make, const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                         const std::int32_t* ids, float* out, std::int32_t* error) {
  mk::TokenLogprobParams p;
  std::int64_t outputs = 0;
  MEMATTN_RETURN_IF_ERROR(make(logits, rows, vocab, stride, ids, out, error, &p, &outputs));
  return sd::logprobs_launch(p, outputs, emu_launch);
}

Status emulated_token_logprobs(const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                               const std::int32_t* next, float* out, std::int32_t* error) {
  return emulated_logprobs(sd::token_logprobs_params, logits, rows, vocab, stride, next, out, error);
}

Status emulated_reference_alignment(const float* logits, std::int64_t n, std::int64_t vocab, std::int64_t stride,
                                    const std::int32_t* ids, float* out, std::int32_t* error) {
  return emulated_logprobs(sd::reference_alignment_params, logits, n, vocab, stride, ids, out, error);
}

Status emulated_sirllm_update(const mk::SirllmUpdateParams& p) {
  MEMATTN_RETURN_IF_ERROR(mc::sirllm_update_can_implement(p));
  return mc::sirllm_update_launch(p, emu_launch);
}

template <class TK, class TQ>
Status emulated_episode_score(const mk::EpisodeScoreParams<TK, TQ>& p) {
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(mc::episode_score_workspace_size(p, &bytes));
  HostWs ws(bytes);
  mk::EpisodeScoreWork w;
  MEMATTN_RETURN_IF_ERROR(mc::episode_detail::carve(p, ws.data(), bytes, &w));
  return mc::episode_detail::score_launches(p, w, emu_launch);
}

template <class T>
void run_route(const std::vector<double>& centroids, int max_c, const std::vector<std::int32_t>& counts,
               const std::vector<double>& queries, int dim, std::vector<std::int32_t>* route, std::vector<double>* sim, std::int32_t* err) {
  const int B = static_cast<int>(counts.size());
  std::vector<T> c(centroids.begin(), centroids.end()), q(queries.begin(), queries.end());
  if (c.empty()) c.push_back(T(0));
  route->assign(static_cast<std::size_t>(B), -9);
  sim->assign(static_cast<std::size_t>(B), 9.0);
  *err = 0;
  mk::EpisodeRouteParams<T> p;
  p.query = q.data();
  p.query_stride = dim;
  p.centroids = c.data();
  p.centroid_stride = dim;
  p.seq_stride = 0;  // every sequence routes against the same centroids (its own count)
  p.count = counts.data();
  p.batch = B;
  p.dim = dim;
  p.max_centroids = max_c;
  p.route = route->data();
  p.sim = sim->data();
  p.error = err;
  REQUIRE(mc::episode_route_can_implement(p) == Status::kSuccess);
  REQUIRE(mc::episode_route_launch(p, emu_launch) == Status::kSuccess);
}

}  // namespace

TEST_CASE("emulated token_logprobs == cpu::token_logprobs (fp64) within 2e-5 + 1e-6 |x|", "[emu][evict][sirllm]") {
  struct Shape {
    std::int64_t rows, vocab, stride, offset;
  };
  const Shape shapes[] = {{9, 512, 512, 0}, {6, 49152, 49152, 0}, {5, 49152, 49160, 0}, {7, 1000, 1003, 0}, {5, 50257, 50257, 1},
                          {3, 151936, 151936, 0}, {4, 1, 1, 0}, {5, 3, 4, 0}, {600, 512, 516, 0}};
  unsigned seed = 1;
  for (const Shape& s : shapes) {
    memattn_emu::ReverseCtas order(seed % 2 == 0);
    CAPTURE(s.rows, s.vocab, s.stride, s.offset, memattn_emu::reverse_ctas());
    const memattn_test::LogitCase c = make_logits(s.rows, s.vocab, s.stride, s.offset, seed++);
    std::vector<float> ref(static_cast<std::size_t>(s.rows));
    REQUIRE(memattn::cpu::token_logprobs(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), ref.data()) == Status::kSuccess);
    std::vector<float> out(ref.size(), kSentinel);
    std::int32_t err = 0;
    REQUIRE(emulated_token_logprobs(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), out.data(), &err) == Status::kSuccess);
    CHECK(err == 0);
    memattn_test::check_logprob_rows(out, ref);
    if (s.vocab > 1) CHECK(ref[1] < -9000.f);  // the -1e4 row: finite, about -1e4
    // Reference alignment over the same logits (rows = n tokens).
    std::vector<float> ref_a(static_cast<std::size_t>(s.rows));
    REQUIRE(memattn::cpu::reference_alignment(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), ref_a.data()) == Status::kSuccess);
    std::vector<float> out_a(ref_a.size(), kSentinel);
    REQUIRE(emulated_reference_alignment(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), out_a.data(), &err) == Status::kSuccess);
    memattn_test::check_alignment_rows(out_a, ref_a);
    CHECK(err == 0);
  }
}

TEST_CASE("emulated token_logprobs: non-finite logits and bad ids give NaN rows and the flag bits", "[emu][evict][sirllm]") {
  const memattn_test::LogitCase c = memattn_test::poisoned_logits();
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    std::vector<float> out(8, kSentinel);
    std::int32_t err = 0;
    REQUIRE(emulated_token_logprobs(c.host(), 8, 512, 512, c.ids.data(), out.data(), &err) == Status::kSuccess);
    CHECK(err == (mk::kLogprobNonFinite | mk::kLogprobBadId));
    memattn_test::check_poisoned_rows(c, out);
    // Only the id flag when only the ids are bad.
    err = 0;
    REQUIRE(emulated_token_logprobs(c.host() + 4 * 512, 2, 512, 512, c.ids.data() + 4, out.data(), &err) == Status::kSuccess);
    CHECK(err == mk::kLogprobBadId);
  }
}

TEST_CASE("emulated token_logprobs / reference_alignment / sirllm_update: bad arguments get the host checks' Status",
          "[emu][evict][sirllm]") {
  const memattn_test::LogitCase c = make_logits(4, 512, 512, 0, 5);
  std::vector<float> out(4, kSentinel);
  std::int32_t err = 0;
  const float* lg = c.host();
  const std::int32_t* ids = c.ids.data();
  CHECK(emulated_token_logprobs(lg, 0, 512, 512, ids, nullptr, nullptr) == Status::kSuccess);  // rows 0
  CHECK(emulated_token_logprobs(nullptr, 4, 512, 512, ids, out.data(), &err) == Status::kErrorNullPointer);
  CHECK(emulated_token_logprobs(lg, 4, 512, 512, nullptr, out.data(), &err) == Status::kErrorNullPointer);
  CHECK(emulated_token_logprobs(lg, 4, 512, 511, ids, out.data(), &err) == Status::kErrorInvalidShape);
  CHECK(emulated_token_logprobs(lg, -1, 512, 512, ids, out.data(), &err) == Status::kErrorInvalidShape);
  CHECK(emulated_reference_alignment(lg, 0, 512, 512, ids, nullptr, nullptr) == Status::kSuccess);
  CHECK(emulated_reference_alignment(lg, 4, 512, 512, nullptr, out.data(), &err) == Status::kErrorNullPointer);
  CHECK(emulated_reference_alignment(lg, 4, 512, 100, ids, out.data(), &err) == Status::kErrorInvalidShape);
  CHECK(emulated_reference_alignment(lg, -2, 512, 512, ids, out.data(), &err) == Status::kErrorInvalidShape);
  for (float x : out) CHECK(x == kSentinel);
  // n == 1 reads no logits (as the CPU): out[0] = NaN only.
  REQUIRE(emulated_reference_alignment(nullptr, 1, 0, 0, nullptr, out.data(), &err) == Status::kSuccess);
  CHECK(std::isnan(out[0]));
  CHECK(out[1] == kSentinel);
  CHECK(err == 0);

  mk::SirllmUpdateParams u;
  std::vector<float> st(8, kSentinel), lp(8, -1.f);
  std::vector<std::int32_t> ints = {0, 1, 2, 3, 4, 5, 6, 7};
  u.state = st.data();
  u.pos = u.size = u.count = u.first_pos = ints.data();
  u.logprobs = lp.data();
  u.error = &err;
  u.stride = 4;
  u.logprob_stride = 4;
  u.segments = 2;
  u.decay = -0.1f;
  CHECK(emulated_sirllm_update(u) == Status::kErrorInvalidArgument);
  u.decay = 0.5f;
  u.turn = -1;
  CHECK(emulated_sirllm_update(u) == Status::kErrorInvalidArgument);
  u.turn = 0;
  u.segments_per_sequence = 3;  // 2 segments are not whole sequences of 3
  CHECK(emulated_sirllm_update(u) == Status::kErrorInvalidShape);
  u.segments_per_sequence = 1;
  u.error = nullptr;
  CHECK(emulated_sirllm_update(u) == Status::kErrorNullPointer);
  for (float x : st) CHECK(x == kSentinel);
}

TEST_CASE("emulated SirLLM turns (update + the select kernel) == CPU, bit for bit", "[emu][evict][sirllm]") {
  std::mt19937 rng(2405);
  int run = 0;
  for (const memattn_test::SirllmTurnConfig& cfg : memattn_test::sirllm_turn_configs()) {
    CAPTURE(cfg.decay, cfg.turn, cfg.budget, cfg.sink, cfg.recent, cfg.spq);
    const int B = 3, S = B * cfg.spq, max_chunk = 90;
    const std::int64_t stride = cfg.budget + max_chunk + 8;
    const evict::Surprisal::Params sp = memattn_test::surprisal_params(cfg);
    const evict::Protection pr = memattn_test::protection(cfg);
    // CPU mirror and emulated state / positions per segment; sequences share lengths.
    memattn_test::SirllmTurnState t(S, cfg.spq, stride);
    std::vector<std::int64_t> len(B, 0);
    std::vector<std::int32_t> budget(static_cast<std::size_t>(S), cfg.budget), err(2, 0);
    for (int step = 0; step < 14; ++step) {
      memattn_emu::ReverseCtas order(run++ % 2 == 1);
      CAPTURE(step, memattn_emu::reverse_ctas());
      const memattn_test::SirllmChunk chunk = memattn_test::make_sirllm_chunk(rng, step, len, max_chunk);
      t.append(chunk);
      REQUIRE(emulated_sirllm_update(memattn_test::sirllm_update_params(cfg, t, t.gst.data(), t.gpos.data(), t.size.data(), chunk.lp.data(),
                                                                        max_chunk, chunk.cnt.data(), chunk.first.data(), err.data())) ==
              Status::kSuccess);
      t.cpu_update(sp, chunk, max_chunk);
      t.check_state(t.gst);
      // cuda::evict_select's launch for these strides (none a multiple of 4: one slot per thread)
      std::vector<std::int32_t> gkeep(static_cast<std::size_t>(S * stride), -1), gcount(static_cast<std::size_t>(S), -2);
      const mk::EvictSelectParams sel = memattn_test::sirllm_select_params(cfg, pr, t, t.gst.data(), t.gpos.data(), t.size.data(), budget.data(),
                                                                           t.tcur.data(), gkeep.data(), gcount.data(), err.data() + 1);
      REQUIRE(stride % 4 != 0);
      memattn_emu::launch(dim3(static_cast<unsigned>(S)), dim3(mk::kEvictSelectThreads), 0,
                          [&] { mk::evict_select_kernel<mk::kEvictSelectThreads, 1>(sel); });
      t.check_select(cfg, pr, gkeep, gcount, true);  // compaction (evict_gather on the GPU) on the host, both sides
      for (int b = 0; b < B; ++b) len[static_cast<std::size_t>(b)] += chunk.cnt[static_cast<std::size_t>(b)];
    }
    CHECK(err == std::vector<std::int32_t>{0, 0});
  }
}

TEST_CASE("emulated sirllm_update: an inconsistent segment sets the flag and stays untouched", "[emu][evict][sirllm]") {
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    memattn_test::SirllmBadSegments c;
    std::int32_t err = 0;
    REQUIRE(emulated_sirllm_update(memattn_test::SirllmBadSegments::params(c.st.data(), c.pos.data(), c.size.data(), c.lp.data(),
                                                                           c.cnt.data(), c.first.data(), &err)) == Status::kSuccess);
    memattn_test::SirllmBadSegments::check(c.st, err);
  }
}

namespace {

template <class TK, class TQ>
void run_score_case(const ScoreShape& sh, unsigned seed) {
  CAPTURE(sh.E, sh.Hkv, sh.G, sh.D, sh.max_tokens, sh.max_probe, sh.reduce, sh.huge, memattn_emu::reverse_ctas());
  const memattn_test::EpisodeScoreCase<TK, TQ> c(sh, seed);
  std::vector<float> out(static_cast<std::size_t>(c.S * c.score_stride), kSentinel);
  std::int32_t err = 0;
  REQUIRE(emulated_episode_score(memattn_test::episode_params(sh, c, c.k.data(), c.q.data(), c.len.data(), c.pc.data(), out.data(), &err)) ==
          Status::kSuccess);
  CHECK(err == 0);
  memattn_test::check_episode_scores(sh, c, out, kSentinel);
}

}  // namespace

TEST_CASE("emulated EpiCache probe scores == the CPU cache's window_colsum and an fp64 oracle", "[emu][evict][epicache]") {
  const std::vector<ScoreShape> shapes = memattn_test::episode_score_shapes();
  unsigned seed = 11;
  for (const ScoreShape& sh : shapes) {
    for (const bool reverse : {false, true}) {
      memattn_emu::ReverseCtas order(reverse);
      run_score_case<Half, Half>(sh, seed);
      run_score_case<BFloat16, BFloat16>(sh, seed + 1);
      run_score_case<Half, float>(sh, seed + 2);
      run_score_case<BFloat16, float>(sh, seed + 3);
    }
    seed += 4;
  }
}

TEST_CASE("emulated episode_score: bad arguments get the host checks' Status; a bad segment sets the flag and stays untouched",
          "[emu][evict][epicache]") {
  const int N = 70, D = 64;
  std::vector<Half> k(static_cast<std::size_t>(2 * N * D), memattn::from_float<Half>(0.5f));
  std::vector<Half> q(static_cast<std::size_t>(4 * D), memattn::from_float<Half>(0.25f));
  std::vector<std::int32_t> len = {N, N + 1}, pc = {2};
  std::int32_t err = 0;
  std::vector<float> scores(static_cast<std::size_t>(2 * N), kSentinel);
  const auto p = memattn_test::episode_small_params(N, D, k.data(), len.data(), q.data(), pc.data(), scores.data(), &err);
  std::size_t bytes = 0;
  REQUIRE(mc::episode_score_workspace_size(p, &bytes) == Status::kSuccess);
  HostWs ws(bytes + 16);
  mk::EpisodeScoreWork w;
  CHECK(mc::episode_detail::carve(p, ws.data(), bytes - 1, &w) == Status::kErrorWorkspaceTooSmall);
  CHECK(mc::episode_detail::carve(p, static_cast<char*>(ws.data()) + 4, bytes, &w) == Status::kErrorWorkspaceTooSmall);
  CHECK(mc::episode_detail::carve(p, nullptr, bytes, &w) == Status::kErrorNullPointer);
  auto bad = p;
  bad.head_dim = 257;
  bad.k_row_stride = 257;
  CHECK(mc::episode_score_can_implement(bad) == Status::kErrorUnsupportedHeadDim);
  bad = p;
  bad.score_stride = N - 1;
  CHECK(mc::episode_score_can_implement(bad) == Status::kErrorInvalidShape);
  bad = p;
  bad.scale = 0.f;
  CHECK(mc::episode_score_can_implement(bad) == Status::kErrorInvalidArgument);
  CHECK(err == 0);
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    std::fill(scores.begin(), scores.end(), kSentinel);
    err = 0;
    // Segment 1 claims N + 1 > max_tokens keys: flagged, untouched; segment 0 scored (all keys
    // equal: every probe row spreads 1/N over the keys, two rows -> 2/N).
    REQUIRE(emulated_episode_score(p) == Status::kSuccess);
    CHECK(err == 1);
    for (int j = 0; j < N; ++j) CHECK(std::fabs(scores[static_cast<std::size_t>(j)] - 2.f / N) <= 1e-6f);
    for (int j = N; j < 2 * N; ++j) CHECK(scores[static_cast<std::size_t>(j)] == kSentinel);
  }
}

TEST_CASE("emulated episode_route == OnlineKMeans::nearest (ties: lower index; zero norms: 0)", "[emu][evict][epicache]") {
  std::mt19937 rng(1729);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto run = [](auto embedding, const std::vector<double>& centroids, int max_c, const std::vector<std::int32_t>& counts,
                const std::vector<double>& queries, int dim, std::vector<std::int32_t>* route, std::vector<double>* sim,
                std::int32_t* err) { run_route<decltype(embedding)>(centroids, max_c, counts, queries, dim, route, sim, err); };
  int scenario = 0;
  for (int dim : {576, 3, 1000})
    for (int variant = 0; variant < 2; ++variant) {
      memattn_emu::ReverseCtas order(scenario++ % 2 == 1);
      memattn_test::check_route_scenario(dim, variant, rng, nd, run);
    }
  // A count above max_centroids: flagged, that sequence untouched.
  std::vector<std::int32_t> route;
  std::vector<double> sim;
  std::int32_t err = 0;
  run_route<double>(std::vector<double>(8, 1.0), 2, {1, 3}, std::vector<double>(8, 1.0), 4, &route, &sim, &err);
  CHECK(err == 1);
  CHECK(route == std::vector<std::int32_t>{0, -9});
  mk::EpisodeRouteParams<float> p;
  CHECK(mc::episode_route_can_implement(p) == Status::kErrorNullPointer);
}
