// The eviction select kernel (evict_select.cuh), one and four slots per thread, run by the CPU
// emulator (simt.hpp; CUB's BlockScan by shim/cub) on every CI run: keep lists and counts equal
// cpu::select_keep's on random, tied, few-level and denormal scores, soft and hard retention
// priorities, segments shorter than a thread step and longer than several steps, ragged tails; a
// NaN candidate flags its segment and writes nothing to its keep row. Then the compaction through
// the wrappers' launches (cuda/evict_params.cuh): the out-of-place gather and the in-place hole
// filling of rows of 1 to 128 elements (1- to 16-byte copy words) equal the CPU's, rows past the
// kept count untouched.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/select_cases.hpp"
#include "emu/emu_launch.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cuda/evict_params.cuh"

namespace {

namespace mk = memattn::kernels;
using memattn::Status;
namespace evict = memattn::evict;

template <int kV>
void run_select(const mk::EvictSelectParams& p) {
  memattn_emu::launch(dim3(static_cast<unsigned>(p.segments)), dim3(mk::kEvictSelectThreads), 0,
                      [&] { mk::evict_select_kernel<mk::kEvictSelectThreads, kV>(p); });
}

mk::EvictSelectParams params(const std::vector<float>& scores, const std::vector<std::int32_t>& pos, std::vector<std::int32_t>& len,
                             std::vector<std::int32_t>& budget, std::vector<std::int32_t>& tcur, std::int64_t stride,
                             std::vector<std::int32_t>& keep, std::vector<std::int32_t>& count, std::vector<std::int32_t>& err) {
  mk::EvictSelectParams p;
  p.scores = scores.data();
  p.pos = pos.data();
  p.len = len.data();
  p.budget = budget.data();
  p.t_cur = tcur.data();
  p.stride = stride;
  p.segments = static_cast<int>(len.size());
  p.keep = keep.data();
  p.keep_count = count.data();
  p.error = err.data();
  return p;
}

void check_round(std::mt19937& rng, int round, int vec) {
  const int S = 1 + static_cast<int>(rng() % 3);
  // strides: shorter than one step of 1024 threads, and up to several steps of 4096 slots
  const std::int64_t stride = (round % 3 == 0 ? 1 + rng() % 900 : 3000 + rng() % 14000) / 4 * 4 + 4;
  const bool with_prio = round % 5 == 2;
  INFO("round " << round << " vec " << vec << " S " << S << " stride " << stride << " prio " << with_prio);
  memattn_test::SelectCase c = memattn_test::make_select_case(rng, S, stride, round % 4, with_prio);
  std::vector<std::int32_t> keep(static_cast<std::size_t>(S * stride), -1), count(S, -2), err(1, 0);
  mk::EvictSelectParams p = params(c.scores, c.pos, c.len, c.budget, c.tcur, stride, keep, count, err);
  p.protect = c.protect;
  p.tie = c.tie;
  p.prio = with_prio ? c.prio.data() : nullptr;
  if (vec) run_select<4>(p);
  else run_select<1>(p);
  REQUIRE(err[0] == 0);
  for (int s = 0; s < S; ++s) {
    const std::size_t n = static_cast<std::size_t>(c.len[static_cast<std::size_t>(s)]);
    std::vector<std::uint64_t> scratch(n);
    std::vector<std::int32_t> want(n);
    std::int64_t want_count = 0;
    REQUIRE(memattn::cpu::select_keep(c.scores.data() + s * stride, c.pos.data() + s * stride, with_prio ? c.prio.data() + s * stride : nullptr,
                                      c.len[static_cast<std::size_t>(s)], c.budget[static_cast<std::size_t>(s)], c.tcur[static_cast<std::size_t>(s)],
                                      c.protect, c.tie, scratch.data(), want.data(), &want_count) == Status::kSuccess);
    REQUIRE(count[static_cast<std::size_t>(s)] == want_count);
    for (std::int64_t i = 0; i < want_count; ++i) REQUIRE(keep[static_cast<std::size_t>(s * stride + i)] == want[static_cast<std::size_t>(i)]);
  }
}

}  // namespace

TEST_CASE("emulated evict_select (1 and 4 slots per thread) == cpu::select_keep", "[emu][evict]") {
  std::mt19937 rng(97);
  for (int round = 0; round < 20; ++round)
    for (int vec : {0, 1}) {
      std::mt19937 r2(rng());
      memattn_emu::ReverseCtas order(round % 2 == 1);
      check_round(r2, round, vec);
    }
}

TEST_CASE("emulated evict_select: a NaN candidate flags the segment, nothing written", "[emu][evict]") {
  for (int vec : {0, 1}) {
    std::vector<float> scores = {1.f, NAN, 2.f, 3.f, 0.5f, 0.25f, 4.f, 5.f};
    std::vector<std::int32_t> pos = {0, 1, 2, 3, 0, 1, 2, 3}, len = {4, 4}, budget = {2, 2}, tcur = {3, 3};
    std::vector<std::int32_t> keep(8, -7), count(2, -2), err(1, 0);
    mk::EvictSelectParams p = params(scores, pos, len, budget, tcur, 4, keep, count, err);
    p.protect.n_sink = 0;
    p.protect.n_recent = 0;
    if (vec) run_select<4>(p);
    else run_select<1>(p);
    CHECK(err[0] == 1);
    CHECK(count[0] == -1);
    for (int i = 0; i < 4; ++i) CHECK(keep[static_cast<std::size_t>(i)] == -7);
    CHECK(count[1] == 2);  // the other segment is selected as usual: 4 and 5 at positions 2, 3
    CHECK(keep[4] == 2);
    CHECK(keep[5] == 3);
  }
}

namespace {

// Rows of `row` T per slot: the select's keep lists (through evict_select_launch) gathered out of
// place and filled into holes in place, against the CPU; slots past the count keep their bytes.
template <class T>
void check_compaction(std::mt19937& rng, int row) {
  const int S = 3;
  const std::int64_t stride = 40 + static_cast<std::int64_t>(rng() % 600);
  INFO("row " << row << " bytes " << sizeof(T) * static_cast<std::size_t>(row) << " stride " << stride);
  memattn_test::SelectCase c = memattn_test::make_select_case(rng, S, stride, 0, false);
  std::vector<std::int32_t> keep(static_cast<std::size_t>(S * stride), -1), count(S, -2), err(1, 0);
  mk::EvictSelectParams p = params(c.scores, c.pos, c.len, c.budget, c.tcur, stride, keep, count, err);
  p.protect = c.protect;
  p.tie = c.tie;
  REQUIRE(memattn::cuda::evict_select_can_implement(p) == Status::kSuccess);
  REQUIRE(memattn::cuda::evict_select_launch(p, memattn_emu_test::emu_launch) == Status::kSuccess);
  REQUIRE(err[0] == 0);
  // random bytes (rows are copied as words, whatever they hold); the gather's target starts as 0xAB
  std::vector<T> src(static_cast<std::size_t>(S * stride * row)), fill(src.size());
  std::vector<unsigned char> bytes(src.size() * sizeof(T));
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  std::memcpy(src.data(), bytes.data(), bytes.size());
  std::memset(static_cast<void*>(fill.data()), 0xAB, bytes.size());
  std::vector<T> dst = fill, inplace = src;
  REQUIRE(memattn::cuda::evict_gather_launch(src.data(), stride, dst.data(), stride, row, S, keep.data(), stride, count.data(),
                                             memattn_emu_test::emu_launch) == Status::kSuccess);
  REQUIRE(memattn::cuda::evict_fill_holes_launch(inplace.data(), stride, row, S, keep.data(), stride, count.data(), -1,
                                                 memattn_emu_test::emu_launch) == Status::kSuccess);
  std::vector<T> want_fill = src;
  for (int s = 0; s < S; ++s) {
    const std::int64_t n = count[static_cast<std::size_t>(s)], o = s * stride * row;
    REQUIRE(n > 0);
    memattn::cpu::fill_holes(want_fill.data() + o, row, keep.data() + s * stride, n);
    for (std::int64_t i = 0; i < stride; ++i) {
      for (int e = 0; e < row; ++e) {
        const std::size_t at = static_cast<std::size_t>(o + i * row + e);
        // gathered: row i is source row keep[i]; past the count the fill stays
        const T want = i < n ? src[static_cast<std::size_t>(o + keep[static_cast<std::size_t>(s * stride + i)] * row + e)] : fill[at];
        REQUIRE(std::memcmp(&dst[at], &want, sizeof(T)) == 0);
        REQUIRE(std::memcmp(&inplace[at], &want_fill[at], sizeof(T)) == 0);
      }
    }
  }
}

}  // namespace

TEST_CASE("emulated compaction (gather, hole filling) through the wrappers' launches == CPU", "[emu][evict]") {
  std::mt19937 rng(41);
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    check_compaction<memattn::Half>(rng, 128);  // 16-byte words, 16 lanes per row
    check_compaction<memattn::Half>(rng, 3);    // 2-byte words
    check_compaction<float>(rng, 5);            // 4-byte words
    check_compaction<float>(rng, 2);            // 8-byte words
    check_compaction<std::int32_t>(rng, 1);     // positions
    check_compaction<std::uint8_t>(rng, 7);     // 1-byte words
  }
}
