// The MiKV fused mixed decode (mikv_decode.cuh) run by the CPU emulator (simt.hpp) on every CI
// run, through the wrapper's check (cuda/mikv_params.cuh) and launch (a CTA of 128 threads per
// segment): the segments of a CPU MixedKvCache after ragged chunks and one decode step, exported
// as the GPU test exports them (tests/gpu/mikv_cpu_bridge.cpp); the output must match the CPU
// output and the normalised probabilities (GQA mean) the CPU's H2O score updates. Both Low
// formats: per-token 2/3/4-bit records (lowk=0) and per-channel key blocks + staging rows
// (lowk=1, kBlocks), the latter also with dead Low slots inside blocks and in staging; INT8 and
// fp16 High tiers, head_dim 8 / 64 / 128, GQA groups 1 to 4, ragged segments.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "common/mikv_segments.hpp"
#include "memattn/cuda/mikv_params.cuh"

namespace {

namespace mk = memattn::kernels;
using memattn::Status;

memattn_test::MikvCaseStats run_case(const std::string& spec, int D, int G, int sequences = 1, int kill_low = 0) {
  INFO(spec << " D " << D << " G " << G << " sequences " << sequences << " kill_low " << kill_low);
  const std::vector<memattn_test::MikvSnapshot> snap = memattn_test::mikv_snapshots(spec, D, G, sequences, kill_low);
  memattn_test::MikvCaseStats stats;
  long long stash = 0;
  std::vector<float> q;
  // host pointers into the snapshots, where the GPU test uploads them
  const std::vector<mk::MikvSegment> segs =
      memattn_test::mikv_segments(snap, G, [](const auto& v) { return v.data(); }, &stats, &stash, &q);
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    INFO("reversed " << reverse);
    // NaN-filled: an output the kernel never writes fails
    std::vector<float> o(q.size(), NAN), lse(snap.size() * static_cast<std::size_t>(G), NAN), probs(static_cast<std::size_t>(stash), NAN);
    mk::MikvDecodeParams p = memattn_test::mikv_params(snap, G, D);
    p.segments = segs.data();
    p.q = q.data();
    p.o = o.data();
    p.lse = lse.data();
    p.probs = probs.data();
    // As cuda::mikv_decode: the check, then one CTA of 128 threads per segment.
    REQUIRE(memattn::cuda::mikv_check(p) == Status::kSuccess);
    memattn_emu::launch(dim3(static_cast<unsigned>(snap.size())), dim3(128), 0, [&] { mk::mikv_decode_kernel<128>(p); });
    memattn_test::check_mikv_outputs(snap, segs, G, D, o, lse, probs);
  }
  return stats;
}

}  // namespace

TEST_CASE("emulated mikv decode, per-token Low records == CPU mixed cache", "[emu][mikv]") {
  memattn_test::mikv_row_cases(run_case);
}

TEST_CASE("emulated mikv decode, lowk=1 per-channel Low blocks == CPU mixed cache", "[emu][mikv]") {
  memattn_test::mikv_block_cases(run_case);
}
