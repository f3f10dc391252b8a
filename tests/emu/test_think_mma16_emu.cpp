// ThinK two-segment decode on the emulator (simt.hpp), every CI run: the fp16 tensor-core kernel
// (path 4, think_decode_mma16.cuh) against the CPU composed cache (ThinK alone) and against the
// lane-group kernel (path 2) it is meant to replace (the tile kernel, path 1, with the value
// extension), through the wrapper's host half
// (think_launches: plan, workspace, kernels, combine) in the three launch modes of the GPU test:
// one CTA per segment (o and lse written by the kernel itself), 32-token splits, planned splits.
// Ragged batches give partial tiles, splits that cross the old / new boundary and empty splits;
// d_keep not a multiple of 8 reads zero-padded rows.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "common/test_data.hpp"
#include "emu/emu_launch.hpp"
#include "gpu/think_cpu_bridge.hpp"
#include "memattn/cuda/think_params.cuh"

namespace {

namespace mk = memattn::kernels;
namespace td = memattn::cuda::think_detail;
using memattn::Status;
using memattn_emu_test::emu_launch;

struct Run {
  std::vector<float> out, lse, scores;
};

// Paths 2 (1 with the value extension, which the lane-group kernel does not read) and 4 on one
// case in modes 0-2; q_gain scales the query (large logits: the fp16 hi / lo split of q~ and the
// prescale); vprune > 0: compact old values (rows padded to a multiple of 8 halves).
void check(int B, int Hq, int Hkv, int D, float prune, int prefill, int steps, float q_gain = 1.f, float vprune = 0.f) {
  INFO("B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " prune " << prune << " prefill " << prefill
            << " q_gain " << q_gain << " vprune " << vprune << " reversed " << memattn_emu::reverse_ctas());
  ThinKCase c;
  REQUIRE(think_cpu_case(B, Hq, Hkv, D, prune, prefill, steps, 99u + static_cast<unsigned>(D), &c, vprune));
  const int S = B * Hkv, G = Hq / Hkv, stride = (c.d_keep + 7) / 8 * 8;
  int max_tokens = 1;
  for (std::size_t i = 0; i < c.n_old.size(); ++i) max_tokens = std::max(max_tokens, c.n_old[i] + c.n_new[i]);
  std::vector<float> q = c.q;
  for (float& x : q) x *= q_gain;
  const std::vector<memattn::Half> k_old = think_restride(c.k_old, S * c.cap_old, c.d_keep, stride);
  const int vstride = (c.dv_keep + 7) / 8 * 8;
  const std::vector<memattn::Half> v_old = vprune > 0.f ? think_restride(c.v_old, S * c.cap_old, c.dv_keep, vstride)
                                                        : std::vector<memattn::Half>{};

  mk::ThinKDecodeParams p{};
  p.k_old = k_old.data();
  p.old_seg_stride = static_cast<long long>(c.cap_old) * stride;
  p.old_row_stride = stride;
  p.channels = c.channels.data();
  p.d_keep = c.d_keep;
  p.k_new = c.k_new.data();
  p.new_seg_stride = static_cast<long long>(c.cap_new) * D;
  p.v = c.v.data();
  p.v_seg_stride = static_cast<long long>(vprune > 0.f ? c.cap_new : c.cap_old + c.cap_new) * D;
  if (vprune > 0.f) {
    REQUIRE(c.dv_keep < D);
    p.v_old = v_old.data();
    p.v_old_seg_stride = static_cast<long long>(c.cap_old) * vstride;
    p.old_v_row_stride = vstride;
    p.v_channels = c.v_channels.data();
    p.dv_keep = c.dv_keep;
  }
  p.n_old = c.n_old.data();
  p.n_new = c.n_new.data();
  p.q = q.data();
  p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.head_dim = D;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  p.scores_seg_stride = static_cast<long long>(G) * max_tokens;
  p.scores_row_stride = max_tokens;
  REQUIRE(td::mma16_layout(p));

  std::vector<Run> runs;
  for (int path : {vprune > 0.f ? 1 : 2, 4})
    for (int mode = 0; mode < 3; ++mode) {
      INFO("path " << path << " mode " << mode);
      p.path = path;
      Run r;
      r.out.assign(q.size(), NAN);
      r.lse.assign(static_cast<std::size_t>(B) * Hq, NAN);
      r.scores.assign(static_cast<std::size_t>(S) * G * max_tokens, NAN);
      p.o = r.out.data();
      p.lse = r.lse.data();
      p.scores = r.scores.data();
      REQUIRE(memattn::cuda::think_decode_check(p) == Status::kSuccess);
      mk::ThinKSplit sp;
      if (mode > 0) REQUIRE(td::plan(p, max_tokens, mode == 1 ? 32 : 0, 132, &sp) == Status::kSuccess);
      memattn_emu_test::HostWs ws(td::workspace_bytes(p, sp));
      if (sp.splits > 1) td::carve(p, ws.data(), ws.bytes, &sp);
      REQUIRE(td::think_launches(p, sp, emu_launch) == Status::kSuccess);
      if (q_gain == 1.f) {  // the CPU output is that of the unscaled query
        double worst = 0;
        for (int row = 0; row < B * Hq; ++row) {
          double mx = 0;
          for (int e = 0; e < D; ++e) mx = std::max(mx, std::abs(static_cast<double>(c.out_cpu[static_cast<std::size_t>(row * D + e)])));
          for (int e = 0; e < D; ++e) {
            const std::size_t i = static_cast<std::size_t>(row * D + e);
            worst = memattn_test::worse(worst, std::abs(static_cast<double>(r.out[i]) - c.out_cpu[i]) / std::max(mx, 1e-30));
          }
        }
        INFO("output vs CPU " << worst);
        CHECK(worst <= 1e-4);
      }
      runs.push_back(std::move(r));
    }
  // Every run against the first lane-group (tile) run: outputs, LSE and the raw logits (eviction inputs).
  const Run& ref = runs.front();
  for (std::size_t k = 1; k < runs.size(); ++k) {
    INFO("run " << k);
    double wo = 0, wl = 0, ws = 0;
    for (std::size_t i = 0; i < ref.out.size(); ++i) wo = memattn_test::worse(wo, static_cast<double>(std::abs(runs[k].out[i] - ref.out[i])));
    for (std::size_t i = 0; i < ref.lse.size(); ++i) {
      REQUIRE(std::isfinite(runs[k].lse[i]));
      wl = memattn_test::worse(wl, std::abs(static_cast<double>(runs[k].lse[i]) - ref.lse[i]) / std::max(1.0, std::abs(static_cast<double>(ref.lse[i]))));
    }
    // logits relative to the largest of their row (fp32 sums in different orders differ by ~2^-24
    // of the sum of |q_i k_i|, which exceeds a single logit where its terms cancel)
    for (int sg = 0; sg < S; ++sg)
      for (int g = 0; g < G; ++g) {
        const int n = c.n_old[static_cast<std::size_t>(sg)] + c.n_new[static_cast<std::size_t>(sg)];
        const std::size_t row = (static_cast<std::size_t>(sg) * G + g) * max_tokens;
        double mx = 1;
        for (int t = 0; t < n; ++t) mx = std::max(mx, std::abs(static_cast<double>(ref.scores[row + static_cast<std::size_t>(t)])));
        for (int t = 0; t < n; ++t) {
          const std::size_t i = row + static_cast<std::size_t>(t);
          REQUIRE(std::isfinite(runs[k].scores[i]));
          ws = memattn_test::worse(ws, std::abs(static_cast<double>(runs[k].scores[i]) - ref.scores[i]) / mx);
        }
      }
    double scale = 0;
    for (float x : ref.out) scale = std::max(scale, static_cast<double>(std::abs(x)));
    INFO("output " << wo << " of " << scale << ", lse " << wl << ", logits " << ws);
    CHECK(wo <= 1e-5 * std::max(scale, 1.0));
    CHECK(wl <= 1e-5);
    CHECK(ws <= 1e-5);
  }
}

}  // namespace

TEST_CASE("emulated ThinK decode on tensor cores (path 4) == CPU and == the lane-group kernel", "[emu][think]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    check(3, 4, 2, 64, 0.4f, 100, 5);   // ragged batch, d_keep 39 (padded rows)
    check(2, 9, 3, 64, 0.5f, 150, 3);   // SmolLM2 heads (group 3), d_keep 32
    check(2, 32, 4, 128, 0.4f, 200, 4); // d 128, d_keep 77, group 8
    check(2, 4, 4, 128, 0.4f, 120, 3);  // group 1
    check(1, 16, 4, 64, 0.0f, 90, 6);   // no pruning: d_keep = d
  }
  check(2, 32, 4, 128, 0.4f, 200, 4, 40.f);  // logits in the hundreds: fp32-exact q~ hi / lo products
}

TEST_CASE("emulated ThinK value extension on tensor cores (path 4) == CPU and == the tile kernel", "[emu][think]") {
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    check(3, 4, 2, 64, 0.4f, 100, 5, 1.f, 0.5f);    // dv_keep 32
    check(2, 32, 4, 128, 0.4f, 200, 4, 1.f, 0.25f); // dv_keep 96
    check(2, 8, 2, 128, 0.4f, 150, 3, 1.f, 0.4f);   // dv_keep 77: padded value rows
  }
}

TEST_CASE("path 4 rejects layouts it cannot read", "[emu][think]") {
  ThinKCase c;
  REQUIRE(think_cpu_case(1, 4, 2, 64, 0.4f, 60, 1, 7u, &c));
  mk::ThinKDecodeParams p{};
  p.k_old = c.k_old.data();
  p.old_seg_stride = static_cast<long long>(c.cap_old) * c.d_keep;
  p.old_row_stride = c.d_keep;  // 39: not a multiple of 8
  p.channels = c.channels.data();
  p.d_keep = c.d_keep;
  p.k_new = c.k_new.data();
  p.new_seg_stride = static_cast<long long>(c.cap_new) * 64;
  p.v = c.v.data();
  p.v_seg_stride = static_cast<long long>(c.cap_old + c.cap_new) * 64;
  p.n_old = c.n_old.data();
  p.n_new = c.n_new.data();
  p.q = c.q.data();
  std::vector<float> out(c.q.size(), 7.f);
  p.o = out.data();
  p.batch = 1, p.q_heads = 4, p.kv_heads = 2, p.head_dim = 64;
  p.scale = 0.125f;
  p.path = 4;
  REQUIRE(memattn::cuda::think_decode_check(p) == Status::kSuccess);
  int launches = 0;
  auto count = [&](auto, dim3, dim3, int, const mk::ThinKDecodeParams&, const mk::ThinKSplit&) {
    ++launches;
    return Status::kSuccess;
  };
  CHECK(td::think_launches(p, mk::ThinKSplit{}, count) == Status::kErrorNotSupported);
  // the wrapper's split plan: one wave of the kernel (2 CTAs per SM at D = 128, 4 at D = 64)
  for (auto [B, D, L] : {std::tuple<int, int, int>{16, 128, 65536}, {1, 128, 65536}, {4, 64, 4096}, {64, 128, 8192}}) {
    mk::ThinKDecodeParams q = p;
    q.batch = B, q.kv_heads = 8, q.q_heads = 32, q.head_dim = D;
    mk::ThinKSplit sp;
    REQUIRE(td::plan(q, L, 0, 132, &sp) == Status::kSuccess);
    INFO("B " << B << " D " << D << " L " << L << " splits " << sp.splits << " keys " << sp.split_keys);
    CHECK(static_cast<long long>(sp.splits) * B * 8 <= std::max(B * 8, mk::think_mma16::ctas_per_sm(D) * 132));
    CHECK(static_cast<long long>(sp.splits) * sp.split_keys >= L);
    CHECK(sp.split_keys >= 256);
  }
  p.path = 5;
  CHECK(memattn::cuda::think_decode_check(p) == Status::kErrorInvalidArgument);
  p.path = 4;
  p.rec_block_bytes = 1024;  // KIVI cache records: cuda::kivi_decode's, not think_decode's
  CHECK(memattn::cuda::think_decode_check(p) == Status::kErrorInvalidArgument);
  CHECK(launches == 0);
  CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 7.f; }));
}
