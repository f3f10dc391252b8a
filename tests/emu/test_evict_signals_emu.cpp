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

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn_test::logprob_close;
using memattn_test::make_logits;
using memattn_test::ScoreShape;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;
namespace evict = memattn::evict;
namespace sd = memattn::cuda::sirllm_detail;

constexpr float kSentinel = 123.25f;  // outputs nothing may write

const auto emu_launch = [](auto kernel, dim3 grid, dim3 block, int smem, const auto&... args) {
  memattn_emu::launch(grid, block, static_cast<std::size_t>(smem), [&] { decltype(kernel)::kernel(args...); });
  return Status::kSuccess;
};

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

Status emulated_token_logprobs(const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                               const std::int32_t* next, float* out, std::int32_t* error) {
  mk::TokenLogprobParams p;
  std::int64_t outputs = 0;
  MEMATTN_RETURN_IF_ERROR(sd::token_logprobs_params(logits, rows, vocab, stride, next, out, error, &p, &outputs));
  return sd::logprobs_launch(p, outputs, emu_launch);
}

Status emulated_reference_alignment(const float* logits, std::int64_t n, std::int64_t vocab, std::int64_t stride,
                                    const std::int32_t* ids, float* out, std::int32_t* error) {
  mk::TokenLogprobParams p;
  std::int64_t outputs = 0;
  MEMATTN_RETURN_IF_ERROR(sd::reference_alignment_params(logits, n, vocab, stride, ids, out, error, &p, &outputs));
  return sd::logprobs_launch(p, outputs, emu_launch);
}

Status emulated_sirllm_update(const mk::SirllmUpdateParams& p) {
  MEMATTN_RETURN_IF_ERROR(mc::sirllm_update_can_implement(p));
  return mc::sirllm_update_launch(p, emu_launch);
}

// A kWorkspaceAlign-aligned buffer of `bytes`, 0xFF: NaN partials / LSE where nothing was written.
struct HostWs {
  std::vector<unsigned char> buf;
  explicit HostWs(std::size_t bytes) : buf(bytes + memattn::kWorkspaceAlign, 0xFF) {}
  void* data() {
    const std::size_t a = memattn::kWorkspaceAlign;
    return buf.data() + (a - reinterpret_cast<std::uintptr_t>(buf.data()) % a) % a;
  }
};

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
    for (std::size_t i = 0; i < ref.size(); ++i) {
      CAPTURE(i, out[i], ref[i]);
      REQUIRE(std::isfinite(out[i]));
      REQUIRE(logprob_close(out[i], ref[i]));
    }
    if (s.vocab > 1) CHECK(ref[1] < -9000.f);  // the -1e4 row: finite, about -1e4
    // Reference alignment over the same logits (rows = n tokens).
    std::vector<float> ref_a(static_cast<std::size_t>(s.rows));
    REQUIRE(memattn::cpu::reference_alignment(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), ref_a.data()) == Status::kSuccess);
    std::vector<float> out_a(ref_a.size(), kSentinel);
    REQUIRE(emulated_reference_alignment(c.host(), s.rows, s.vocab, s.stride, c.ids.data(), out_a.data(), &err) == Status::kSuccess);
    CHECK(std::isnan(out_a[0]));
    for (std::size_t i = 1; i < ref_a.size(); ++i) {
      CAPTURE(i, out_a[i], ref_a[i]);
      REQUIRE(logprob_close(out_a[i], ref_a[i]));
    }
    CHECK(err == 0);
  }
}

TEST_CASE("emulated token_logprobs: non-finite logits and bad ids give NaN rows and the flag bits", "[emu][evict][sirllm]") {
  memattn_test::LogitCase c = make_logits(8, 512, 512, 0, 77);
  c.buf[1 * 512 + 17] = std::numeric_limits<float>::quiet_NaN();
  c.buf[3 * 512 + 511] = std::numeric_limits<float>::infinity();
  c.buf[6 * 512 + 0] = -std::numeric_limits<float>::infinity();
  c.ids[4] = -1;
  c.ids[5] = 512;
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    std::vector<float> out(8, kSentinel);
    std::int32_t err = 0;
    REQUIRE(emulated_token_logprobs(c.host(), 8, 512, 512, c.ids.data(), out.data(), &err) == Status::kSuccess);
    CHECK(err == (mk::kLogprobNonFinite | mk::kLogprobBadId));
    for (int r : {1, 3, 4, 5, 6}) CHECK(std::isnan(out[static_cast<std::size_t>(r)]));
    for (int r : {0, 2, 7}) {
      float ref = 0.f;
      REQUIRE(memattn::cpu::token_logprobs(c.host() + r * 512, 1, 512, 512, c.ids.data() + r, &ref) == Status::kSuccess);
      CHECK(logprob_close(out[static_cast<std::size_t>(r)], ref));
    }
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
    evict::Surprisal::Params sp;
    sp.decay = cfg.decay;
    sp.turn = cfg.turn;
    evict::Protection pr;
    pr.n_sink = cfg.sink;
    pr.n_recent = cfg.recent;
    // CPU mirror and emulated state / positions per segment; sequences share lengths.
    std::vector<float> st(static_cast<std::size_t>(S * stride), 0.f), gst = st;
    std::vector<std::int32_t> pos(static_cast<std::size_t>(S * stride), 0), gpos = pos, size(static_cast<std::size_t>(S), 0);
    std::vector<std::int64_t> len(B, 0);
    std::vector<std::int32_t> budget(static_cast<std::size_t>(S), cfg.budget), err(2, 0);
    for (int step = 0; step < 14; ++step) {
      memattn_emu::ReverseCtas order(run++ % 2 == 1);
      CAPTURE(step, memattn_emu::reverse_ctas());
      const memattn_test::SirllmChunk chunk = memattn_test::make_sirllm_chunk(rng, step, len, max_chunk);
      const std::vector<std::int32_t>& cnt = chunk.cnt;
      const std::vector<std::int32_t>& first = chunk.first;
      std::vector<std::int32_t> tcur(static_cast<std::size_t>(S));
      // Append the chunk: the emulated new slots get garbage state (the update must overwrite it).
      for (int s = 0; s < S; ++s) {
        const int b = s / cfg.spq;
        for (int i = 0; i < cnt[static_cast<std::size_t>(b)]; ++i) {
          const std::size_t at = static_cast<std::size_t>(s * stride + size[static_cast<std::size_t>(s)] + i);
          pos[at] = gpos[at] = first[static_cast<std::size_t>(b)] + i;
          st[at] = 0.f;
          gst[at] = -555.f;
        }
        size[static_cast<std::size_t>(s)] += cnt[static_cast<std::size_t>(b)];
        tcur[static_cast<std::size_t>(s)] = first[static_cast<std::size_t>(b)] + cnt[static_cast<std::size_t>(b)] - 1;
      }
      mk::SirllmUpdateParams u;
      u.state = gst.data();
      u.pos = gpos.data();
      u.size = size.data();
      u.stride = stride;
      u.segments = S;
      u.segments_per_sequence = cfg.spq;
      u.logprobs = chunk.lp.data();
      u.logprob_stride = max_chunk;
      u.count = cnt.data();
      u.first_pos = first.data();
      u.decay = cfg.decay;
      u.turn = cfg.turn;
      u.error = err.data();
      REQUIRE(emulated_sirllm_update(u) == Status::kSuccess);
      // CPU: on_chunk per segment (as EvictKvCache::end_chunk).
      for (int s = 0; s < S; ++s) {
        const int b = s / cfg.spq;
        if (cnt[static_cast<std::size_t>(b)] == 0) continue;
        evict::TokenSignals ts;
        ts.logprobs = chunk.lp.data() + b * max_chunk;
        ts.count = cnt[static_cast<std::size_t>(b)];
        ts.first_pos = first[static_cast<std::size_t>(b)];
        const std::int64_t sz = size[static_cast<std::size_t>(s)];
        evict::Surprisal::on_chunk(sp, st.data() + s * stride, pos.data() + s * stride, sz - cnt[static_cast<std::size_t>(b)], sz, ts);
      }
      for (int s = 0; s < S; ++s)
        for (std::int32_t j = 0; j < size[static_cast<std::size_t>(s)]; ++j) {
          const std::size_t at = static_cast<std::size_t>(s * stride + j);
          CAPTURE(s, j, gst[at], st[at]);
          REQUIRE(same_bits(gst[at], st[at]));
        }
      // cuda::evict_select's launch for these strides (none a multiple of 4: one slot per thread)
      std::vector<std::int32_t> gkeep(static_cast<std::size_t>(S * stride), -1), gcount(static_cast<std::size_t>(S), -2);
      mk::EvictSelectParams sel;
      sel.scores = gst.data();
      sel.pos = gpos.data();
      sel.len = size.data();
      sel.budget = budget.data();
      sel.t_cur = tcur.data();
      sel.stride = stride;
      sel.segments = S;
      sel.protect = pr;
      sel.tie = cfg.tie;
      sel.keep = gkeep.data();
      sel.keep_count = gcount.data();
      sel.error = err.data() + 1;
      REQUIRE(stride % 4 != 0);
      memattn_emu::launch(dim3(static_cast<unsigned>(S)), dim3(mk::kEvictSelectThreads), 0,
                          [&] { mk::evict_select_kernel<mk::kEvictSelectThreads, 1>(sel); });
      std::vector<std::uint64_t> scratch(static_cast<std::size_t>(stride));
      std::vector<std::int32_t> keep(static_cast<std::size_t>(stride));
      for (int s = 0; s < S; ++s) {
        std::int64_t count = 0;
        const std::int64_t sz = size[static_cast<std::size_t>(s)];
        REQUIRE(memattn::cpu::select_keep(st.data() + s * stride, pos.data() + s * stride, sz, cfg.budget, tcur[static_cast<std::size_t>(s)],
                                          pr, cfg.tie, scratch.data(), keep.data(), &count) == Status::kSuccess);
        REQUIRE(gcount[static_cast<std::size_t>(s)] == count);
        for (std::int64_t i = 0; i < count; ++i) REQUIRE(gkeep[static_cast<std::size_t>(s * stride + i)] == keep[static_cast<std::size_t>(i)]);
        CHECK(count == std::min<std::int64_t>(sz, cfg.budget));  // sinks + recent fit in every budget here
        // Compaction (evict_gather on the GPU) on the host, the same for both sides.
        for (auto* rows : {&st, &gst}) memattn::cpu::compact_rows(rows->data() + s * stride, 1, keep.data(), count);
        for (auto* rows : {&pos, &gpos}) memattn::cpu::compact_rows(rows->data() + s * stride, 1, keep.data(), count);
        size[static_cast<std::size_t>(s)] = static_cast<std::int32_t>(count);
      }
      for (int b = 0; b < B; ++b) len[static_cast<std::size_t>(b)] += cnt[static_cast<std::size_t>(b)];
    }
    CHECK(err == std::vector<std::int32_t>{0, 0});
  }
}

TEST_CASE("emulated sirllm_update: an inconsistent segment sets the flag and stays untouched", "[emu][evict][sirllm]") {
  for (const bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    // 3 segments of one sequence each; segment 1: size < count; segment 2: a position outside the chunk.
    std::vector<float> st(24, 2.f);
    std::vector<std::int32_t> pos = {0, 1, 2, 3, 4, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 9, 4, 0, 0, 0};
    std::vector<std::int32_t> size = {6, 2, 5}, cnt = {2, 3, 2}, first = {4, 0, 3};
    std::vector<float> lp = {-1.f, -2.f, -3.f, -4.f, -5.f, -6.f, -7.f, -8.f, -9.f};
    std::int32_t err = 0;
    mk::SirllmUpdateParams u;
    u.state = st.data();
    u.pos = pos.data();
    u.size = size.data();
    u.stride = 8;
    u.segments = 3;
    u.logprobs = lp.data();
    u.logprob_stride = 3;
    u.count = cnt.data();
    u.first_pos = first.data();
    u.decay = 0.5f;
    u.error = &err;
    REQUIRE(emulated_sirllm_update(u) == Status::kSuccess);
    CHECK(err == 1);
    for (int j = 0; j < 4; ++j) CHECK(st[static_cast<std::size_t>(j)] == 1.f);  // decayed
    CHECK(st[4] == 1.f);                                                      // -lp of position 4
    CHECK(st[5] == 2.f);
    for (int j = 8; j < 24; ++j) CHECK(st[static_cast<std::size_t>(j)] == 2.f);  // untouched
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
  const ScoreShape shapes[] = {
      {3, 2, 3, 64, 272, 16, 1, false},   // SmolLM2-like: C + block, 16 probe rows, max over the group
      {2, 3, 1, 128, 200, 5, 2, false},   // MHA, sum
      {3, 1, 4, 80, 130, 70, 0, false},   // head_dim 80, probe rows over two chunks, mean
      {2, 2, 2, 36, 65, 3, 1, false},     // head_dim not a multiple of 8
      {2, 1, 2, 7, 64, 64, 2, false},     // head_dim 7, exactly one tile and one row chunk
      {3, 2, 8, 256, 300, 9, 1, false},   // head_dim 256 (> 48 KiB of shared memory), G = 8
      {3, 2, 3, 64, 150, 6, 2, true},     // huge logits: one-hot softmax, sums stay G * P
  };
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
  mk::EpisodeScoreParams<Half, Half> p;
  p.k = k.data();
  p.k_seg_stride = static_cast<std::int64_t>(N) * D;
  p.k_row_stride = D;
  p.len = len.data();
  p.q = q.data();
  p.q_tok_stride = 2 * D;
  p.q_head_stride = D;
  p.probe_count = pc.data();
  p.scores = scores.data();
  p.score_stride = N;
  p.segments = 2;
  p.kv_heads = 2;
  p.group = 1;
  p.head_dim = D;
  p.max_probe = 2;
  p.max_tokens = N;
  p.scale = 0.125f;
  p.error = &err;
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
