// The per-step eviction score kernels run by the CPU emulator (simt.hpp) on every CI run, both CTA
// orders, through the wrappers' checks and launches, bit-identical to the CPU functions the GPU
// tests compare with:
//  * LazyEviction (evict_recurrence.cuh, cuda/evict_recurrence_params.cuh): the recurrence update
//    and score == evict::recurrence_update / recurrence_score over 200 steps with probabilities at
//    and around the threshold, raw and clamped margins, with and without the acc tie; slots past a
//    segment's length untouched; a segment longer than the grid's 64 CTAs (grid-stride loop).
//  * SentenceKV (sentence_score.cuh, cuda/sentence_params.cuh): scores == evict::sentence_scores
//    (fp64 fma in d order) for random sums, counts (0 included) and head dims, so the same choice.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use
#include "emu/emu_launch.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/sentence_cases.hpp"
#include "memattn/cuda/evict_recurrence_params.cuh"
#include "memattn/cuda/sentence_params.cuh"
#include "memattn/evict/lazy.hpp"
#include "memattn/evict/sentence.hpp"

namespace {

using memattn_emu_test::emu_launch;
using memattn::Status;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;
namespace evict = memattn::evict;

Status emulated_recurrence(const mk::RecurrenceParams& p, bool update) {
  MEMATTN_RETURN_IF_ERROR(mc::recurrence_can_implement(p, update));
  return mc::recurrence_launch(p, update, emu_launch);
}

bool same_state(const evict::RecurrenceState& a, const evict::RecurrenceState& b) {
  return a.last_hit == b.last_hit && a.mri == b.mri && std::memcmp(&a.acc, &b.acc, 4) == 0;
}

// `steps` update + score steps of S segments (lengths in [1, stride], the rest a sentinel state and
// score the kernels must not touch), compared bit for bit every `every` steps and at the end.
void run_recurrence(int S, std::int64_t stride, int steps, int every, unsigned seed) {
  std::mt19937 rng(seed);
  const float alpha = 0.01f, kSentinel = -777.f;
  std::vector<std::int32_t> len(static_cast<std::size_t>(S));
  std::vector<evict::RecurrenceState> st(static_cast<std::size_t>(S * stride));
  for (auto& x : st) x = evict::Recurrence::init_state(-9);
  const std::vector<evict::RecurrenceState> untouched = st;
  for (int s = 0; s < S; ++s) {
    len[static_cast<std::size_t>(s)] = s == 0 ? static_cast<std::int32_t>(stride) : 1 + static_cast<std::int32_t>(rng() % stride);
    for (std::int32_t j = 0; j < len[static_cast<std::size_t>(s)]; ++j) st[static_cast<std::size_t>(s * stride + j)] = evict::Recurrence::init_state(j);
  }
  std::vector<evict::RecurrenceState> gst = st;
  // past a length: p̄ 1 (a hit, if a kernel updated the slot), state and score sentinels
  std::vector<float> pbar(static_cast<std::size_t>(S * stride), 1.f), scores(pbar.size(), kSentinel), gscores(pbar.size(), kSentinel);
  std::vector<std::int32_t> t(static_cast<std::size_t>(S));
  for (int step = 0; step < steps; ++step) {
    memattn_emu::ReverseCtas order(step % 2 == 1);
    for (int s = 0; s < S; ++s) {
      t[static_cast<std::size_t>(s)] = len[static_cast<std::size_t>(s)] + step;
      for (std::int32_t j = 0; j < len[static_cast<std::size_t>(s)]; ++j) {
        const int r = static_cast<int>(rng() % 8);
        pbar[static_cast<std::size_t>(s * stride + j)] =
            r == 0 ? alpha : r == 1 ? std::nextafter(alpha, 0.f) : std::uniform_real_distribution<float>(0.f, 0.03f)(rng);
      }
    }
    mk::RecurrenceParams p;
    p.state = gst.data();
    p.pbar = pbar.data();
    p.scores = gscores.data();
    p.len = len.data();
    p.t = t.data();
    p.stride = stride;
    p.segments = S;
    p.alpha = alpha;
    p.acc_tie = (step & 1) != 0;
    p.raw = (step % 3) == 0;
    REQUIRE(emulated_recurrence(p, true) == Status::kSuccess);
    REQUIRE(emulated_recurrence(p, false) == Status::kSuccess);
    for (int s = 0; s < S; ++s)
      for (std::int32_t j = 0; j < len[static_cast<std::size_t>(s)]; ++j) {
        auto& x = st[static_cast<std::size_t>(s * stride + j)];
        evict::recurrence_update(x, pbar[static_cast<std::size_t>(s * stride + j)], t[static_cast<std::size_t>(s)], alpha);
        scores[static_cast<std::size_t>(s * stride + j)] = evict::recurrence_score(x, t[static_cast<std::size_t>(s)], p.acc_tie, p.raw);
      }
    if (step % every == every - 1 || step == steps - 1) {
      INFO("step " << step);
      for (int s = 0; s < S; ++s)
        for (std::int64_t j = 0; j < stride; ++j) {
          const std::size_t i = static_cast<std::size_t>(s * stride + j);
          INFO("segment " << s << " slot " << j << " len " << len[static_cast<std::size_t>(s)]);
          REQUIRE(same_state(gst[i], j < len[static_cast<std::size_t>(s)] ? st[i] : untouched[i]));
          REQUIRE(std::memcmp(&gscores[i], &scores[i], 4) == 0);
        }
    }
  }
}

}  // namespace

TEST_CASE("emulated recurrence update and score == CPU, bit for bit, 200 steps", "[emu][evict][lazy]") {
  run_recurrence(7, 700, 200, 40, 99u);
}

TEST_CASE("emulated recurrence: a segment longer than the grid (grid-stride loop)", "[emu][evict][lazy]") {
  // 64 CTAs x 256 threads cover 16384 slots per pass.
  run_recurrence(1, 64 * mk::kRecurrenceThreads + 300, 4, 4, 7u);
}

TEST_CASE("emulated recurrence: bad arguments get the host check's Status", "[emu][evict][lazy]") {
  mk::RecurrenceParams bad;
  CHECK(mc::recurrence_can_implement(bad, true) == Status::kErrorNullPointer);
  std::vector<evict::RecurrenceState> st(4);
  std::vector<float> x(4);
  std::vector<std::int32_t> n(1, 4);
  bad.state = st.data(), bad.pbar = x.data(), bad.len = n.data(), bad.t = n.data(), bad.stride = 4, bad.segments = 1;
  bad.alpha = 1.5f;
  CHECK(mc::recurrence_can_implement(bad, true) == Status::kErrorInvalidArgument);
  CHECK(mc::recurrence_can_implement(bad, false) == Status::kErrorNullPointer);  // no scores
}

TEST_CASE("emulated sentence_score == evict::sentence_scores (bit-identical), same choice", "[emu][evict][sentence]") {
  std::mt19937 rng(77);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int round = 0; round < 12; ++round) {
    memattn_emu::ReverseCtas order(round % 2 == 1);
    const memattn_test::SentenceCase c(round, rng, nd);
    INFO("round " << round << " H " << c.H << " S " << c.S << " D " << c.D);
    std::vector<float> got(c.want.size(), NAN);
    const mk::SentenceScoreParams p = c.params(c.ksum.data(), c.count.data(), c.qbar.data(), got.data());
    REQUIRE(mc::sentence_score_can_implement(p) == Status::kSuccess);
    REQUIRE(mc::sentence_score_launch(p, emu_launch) == Status::kSuccess);
    c.check(got);
  }
  mk::SentenceScoreParams bad;
  CHECK(mc::sentence_score_can_implement(bad) == Status::kErrorNullPointer);
}
