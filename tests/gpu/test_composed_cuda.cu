// Decode of the composed cache on the GPU vs the CPU ComposedKvCache (issue 7): KIVI, ThinK + KIVI,
// H2O + ThinK + KIVI and H2O + KIVI run a ragged batch on the CPU; their raw regions (quantised
// blocks with d_keep key channels, fp16 old rows, full-width tail) are copied to the device as
// they are (partly filled blocks after eviction as a block list), and the kernel's output for the
// last decode step must match the CPU output (rel 1e-4 of the row's max; 2e-3, the quantization
// spec's Q-K1, where the tensor-core kernel's fp16 values are in it), one CTA per segment and
// split-KV alike, for the tile kernel, (d_keep a multiple of 8) the lane-group kernel and
// (head_dim 64 / 128, 2 / 4 bits, split-KV) the tensor-core kernel over the KIVI region (path 3)
// and over every region (path 4), whose logits and LSE must agree. With eviction, the raw logits and LSE the kernel writes feed
// evict_accumulate_scores (per-segment lengths), and the H2O accumulators must match the CPU
// cache's after the same step. Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "composed_cpu_bridge.hpp"
#include "device_vectors.hpp"
#include "think_decode_modes.hpp"
#include "row_error.hpp"
#include "memattn/cuda/evict_scores.cuh"
#include "memattn/cuda/think.cuh"

using memattn_gpu_test::download;
using memattn_gpu_test::max_row_rel_error;
using memattn_gpu_test::worse;
using memattn_gpu_test::think_decode_mode;
using memattn_gpu_test::upload;

using namespace memattn;

namespace {

// The tensor-core kernel's values are fp16 c s_v + z_v (2^-12 of |v|; its logits are fp32-exact):
// the spec's Q-K1 robust relative output error.
constexpr double kQK1Output = 2e-3;
int g_mma_runs = 0;       // run() calls that went through path 3 or 4
int g_mma_auto_runs = 0;  // auto calls that resolved to path 3

// full_blocks: the blocks are given as full (kq_first = nullptr); only valid without eviction.
int run(ComposedKind kind, int B, int Hq, int Hkv, int D, int bits_k, int bits_v, int prefill, int steps,
         bool full_blocks = false, int granularity = 1, int v_group = 0) {
  INFO("kind " << static_cast<int>(kind) << " full_blocks " << full_blocks << " B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " bits "
               << bits_k << "/" << bits_v << " prefill " << prefill << " v_group " << v_group);
  ComposedCase c;
  REQUIRE(composed_cpu_case(kind, B, Hq, Hkv, D, bits_k, bits_v, prefill, steps, 4321u + static_cast<unsigned>(D), &c,
                            granularity, 0.4f, v_group));
  const int S = B * Hkv, G = Hq / Hkv, dk = c.d_keep;
  int quantised = 0;
  for (int n : c.n_q) quantised += n;
  CHECK(quantised > 0);  // the KIVI region is exercised
  kernels::ThinKDecodeParams p{};
  p.k_old = upload(c.k_old);
  p.old_seg_stride = static_cast<long long>(c.cap_old) * dk;
  p.old_row_stride = dk;
  p.channels = upload(c.channels);
  p.d_keep = dk;
  p.k_new = upload(c.k_new);
  p.new_seg_stride = static_cast<long long>(c.cap_new) * D;
  p.v = upload(c.v_new);
  p.v_seg_stride = static_cast<long long>(c.cap_new) * D;
  p.v_old = upload(c.v_old);  // old values apart, full width
  p.v_old_seg_stride = static_cast<long long>(c.cap_old) * D;
  p.old_v_row_stride = D;
  p.n_old = upload(c.n_old);
  p.n_new = upload(c.n_new);
  p.n_q = upload(c.n_q);
  int partial = 0;
  for (int s = 0; s < S; ++s)
    for (int i = 0; i < c.n_blocks[static_cast<std::size_t>(s)]; ++i) {
      const int end = i + 1 < c.n_blocks[static_cast<std::size_t>(s)] ? c.kq_first[static_cast<std::size_t>(s * c.cap_blocks + i + 1)]
                                                                     : c.n_q[static_cast<std::size_t>(s)];
      partial += end - c.kq_first[static_cast<std::size_t>(s * c.cap_blocks + i)] < c.qgroup;
    }
  if (full_blocks) {
    REQUIRE(partial == 0);
  } else {
    p.kq_first = upload(c.kq_first);
    p.kq_first_seg_stride = c.cap_blocks;
    p.n_blocks = upload(c.n_blocks);
  }
  p.kq = upload(c.kq);
  p.kq_seg_stride = static_cast<long long>(c.cap_blocks) * std::max(1, c.k_block_words);
  p.kq_block_words = c.k_block_words;
  p.kqm = upload(c.kqm);
  p.kqm_seg_stride = static_cast<long long>(c.cap_blocks) * 2 * dk;
  p.vq = upload(c.vq);
  p.vq_seg_stride = static_cast<long long>(c.cap_q) * std::max(1, c.v_words);
  p.v_words = c.v_words;
  p.vqm = upload(c.vqm);
  p.vqm_seg_stride = static_cast<long long>(c.cap_q) * 2 * std::max(1, c.v_groups);
  p.qgroup = c.qgroup, p.bits_k = c.bits_k, p.bits_v = c.bits_v, p.v_group = c.v_group;
  p.q = upload(c.q);
  std::vector<float> out(c.q.size(), NAN), lse(static_cast<std::size_t>(B) * Hq, NAN);
  float* d_out = upload(out);
  float* d_lse = upload(lse);
  p.o = d_out;
  p.lse = d_lse;
  std::vector<float> scores(static_cast<std::size_t>(S) * G * c.cap_total, NAN);
  float* d_scores = upload(scores);
  p.scores = d_scores;
  p.scores_seg_stride = static_cast<long long>(G) * c.cap_total;
  p.scores_row_stride = c.cap_total;
  p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.head_dim = D;
  p.scale = cuda::think_scale(D);
  const int max_tokens = *std::max_element(c.n_total.begin(), c.n_total.end());
  std::int32_t* d_lens = upload(std::vector<std::int32_t>(c.n_total.begin(), c.n_total.end()));
  // path 1: the tile kernel; 2: the lane-group kernel (d_keep a multiple of 8: KIVI alone, or
  // ThinK with granularity 8); 3: the tensor-core kernel over the KIVI region + the lane-group
  // kernel; 4: tensor cores over every region; their logits and LSE must agree. Attempts 12-14:
  // path 3 again with its stages by cp.async pieces (mma_cp_async; sm_90 takes bulk copies), 15-17
  // without its paired tiles (mma_unpaired).
  // modes: think_decode_modes.hpp (mode 1's 32-token splits put the regions in different CTAs)
  std::vector<float> ref_lse, ref_scores;
  for (int attempt = 0; attempt < 18; ++attempt) {
    const int path = attempt < 12 ? 1 + attempt / 3 : 3, mode = attempt % 3;
    p.mma_cp_async = attempt >= 12 && attempt < 15 ? 1 : 0;
    p.mma_unpaired = attempt >= 15 ? 1 : 0;
    INFO("path " << path << " mode " << mode << " cp.async " << p.mma_cp_async << " unpaired " << p.mma_unpaired);
    // paths 2-4 read rows of whole 16-byte pieces; 3 and 4 (split-KV only) the layouts mma_layout accepts
    const bool readable = path == 1 || (path == 2 ? dk % 8 == 0 : mode != 0 && cuda::think_detail::mma_layout(p));
    if (!readable) {
      p.path = path;
      CHECK(cuda::think_decode(p, nullptr) == Status::kErrorNotSupported);
      continue;
    }
    if (path >= 3) ++g_mma_runs;
    p.path = path;
    std::fill(out.begin(), out.end(), NAN);
    REQUIRE(cudaMemcpy(d_out, out.data(), out.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
    think_decode_mode(p, mode, max_tokens);
    out = download(d_out, out.size());
    CHECK(max_row_rel_error(c.out_cpu, out, B * Hq, D) <= (path >= 3 ? kQK1Output : 1e-4));
    const std::vector<float> lse_now = download(d_lse, lse.size()), sc_now = download(d_scores, scores.size());
    if (ref_lse.empty()) {
      ref_lse = lse_now;
      ref_scores = sc_now;
    } else {
      double wl = 0, ws_ = 0;
      for (std::size_t i = 0; i < lse_now.size(); ++i) wl = worse(wl, std::abs(static_cast<double>(lse_now[i]) - ref_lse[i]));
      for (int sg = 0; sg < S; ++sg)
        for (int g = 0; g < G; ++g)
          for (int t = 0; t < c.n_total[static_cast<std::size_t>(sg)]; ++t) {
            const std::size_t i = (static_cast<std::size_t>(sg) * G + g) * c.cap_total + t;
            ws_ = worse(ws_, std::abs(static_cast<double>(sc_now[i]) - ref_scores[i]));
          }
      CHECK(wl <= 1e-4);
      CHECK(ws_ <= 1e-4);
    }
    if (!c.evicts) continue;
    // H2O: p = exp(logit - lse), GQA mean, acc += p (the CPU cache's decode epilogue)
    kernels::EvictScoreParams e;
    e.scores = d_scores;
    e.scores_stride[0] = static_cast<std::int64_t>(Hkv) * p.scores_seg_stride;
    e.scores_stride[1] = p.scores_seg_stride;
    e.scores_stride[2] = p.scores_row_stride;
    e.lse = d_lse;
    e.lse_stride[0] = Hq, e.lse_stride[1] = 0, e.lse_stride[2] = 1;
    e.seg_lens = d_lens;
    float* d_acc = upload(c.state_before);
    e.acc = d_acc;
    e.state_stride[0] = static_cast<std::int64_t>(Hkv) * c.cap_total;
    e.state_stride[1] = c.cap_total;
    e.batch = B, e.kv_heads = Hkv, e.group = G, e.q_tokens = 1, e.kv_capacity = c.cap_total;
    REQUIRE(cuda::evict_accumulate_scores(e, kernels::EvictScoreMode::kAccumulate, nullptr) == Status::kSuccess);
    const std::vector<float> acc = download(d_acc, c.state_before.size());
    cudaFree(d_acc);
    double worst = 0;
    for (int s = 0; s < S; ++s)
      for (int j = 0; j < c.n_total[static_cast<std::size_t>(s)]; ++j) {
        const std::size_t i = static_cast<std::size_t>(s) * c.cap_total + j;
        worst = worse(worst, std::abs(static_cast<double>(acc[i]) - c.state_after[i]) / std::max(1.0, std::abs(static_cast<double>(c.state_after[i]))));
      }
    CHECK(worst <= 2e-5);
  }
  // Auto (path 0) with a long bound (the caller's max_tokens may exceed every segment): path 3
  // where mma_layout holds, path 4 without a KIVI region (mma16_auto), the lane-group / tile
  // kernel otherwise; same output and LSE.
  {
    namespace td = cuda::think_detail;
    p.path = 0;
    const int bound = std::max(max_tokens, td::kThinKMmaAutoTokens);
    const bool mma = td::mma_layout(p);
    const int fp16_auto = td::mma16_auto(p) ? 4 : 0;  // no KIVI region: path 4
    CHECK(td::resolve_path(p, bound).path == (mma ? 3 : fp16_auto));
    CHECK(td::resolve_path(p, td::kThinKMmaAutoTokens - 1).path == fp16_auto);
    if (mma) ++g_mma_auto_runs;
    std::fill(out.begin(), out.end(), NAN);
    REQUIRE(cudaMemcpy(d_out, out.data(), out.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
    think_decode_mode(p, 2, bound);
    out = download(d_out, out.size());
    CHECK(max_row_rel_error(c.out_cpu, out, B * Hq, D) <= (mma ? kQK1Output : 1e-4));
    const std::vector<float> lse_now = download(d_lse, lse.size());
    double wl = 0;
    for (std::size_t i = 0; i < lse_now.size(); ++i) wl = worse(wl, std::abs(static_cast<double>(lse_now[i]) - ref_lse[i]));
    CHECK(wl <= 1e-4);
  }
  for (const void* ptr : {static_cast<const void*>(p.k_old), static_cast<const void*>(p.channels), static_cast<const void*>(p.k_new),
                          static_cast<const void*>(p.v), static_cast<const void*>(p.v_old), static_cast<const void*>(p.n_old),
                          static_cast<const void*>(p.n_new), static_cast<const void*>(p.n_q), static_cast<const void*>(p.kq_first),
                          static_cast<const void*>(p.n_blocks), static_cast<const void*>(p.kq),
                          static_cast<const void*>(p.kqm), static_cast<const void*>(p.vq), static_cast<const void*>(p.vqm),
                          static_cast<const void*>(p.q), static_cast<const void*>(d_out), static_cast<const void*>(d_lse),
                          static_cast<const void*>(d_scores), static_cast<const void*>(d_lens)})
    cudaFree(const_cast<void*>(ptr));
  return partial;  // partly filled blocks (eviction inside a block)
}

}  // namespace

TEST_CASE("composed decode: KIVI and ThinK + KIVI regions on the GPU == CPU composed cache", "[compose][gpu]") {
  for (bool full : {false, true}) {
    run(ComposedKind::kKivi, 3, 8, 2, 64, 4, 2, 90, 5, full);
    run(ComposedKind::kThinkKivi, 3, 8, 2, 64, 4, 2, 90, 5, full);
  }
  run(ComposedKind::kKivi, 2, 4, 4, 128, 2, 2, 120, 3);
  run(ComposedKind::kThinkKivi, 2, 8, 1, 128, 2, 4, 150, 3);
  run(ComposedKind::kThinkKivi, 2, 2, 1, 256, 8, 8, 100, 2);  // two value channels per thread
  // d_keep a multiple of 8 (ThinK granularity 8): the lane-group kernel too, 2 / 4 / 8 bits
  run(ComposedKind::kThinkKivi, 3, 8, 2, 64, 4, 2, 90, 5, false, 8);
  run(ComposedKind::kThinkKivi, 2, 8, 1, 128, 2, 4, 150, 3, false, 8);
  run(ComposedKind::kThinkKivi, 2, 2, 1, 256, 8, 8, 100, 2, true, 8);
  run(ComposedKind::kThinkKivi, 2, 8, 2, 128, 4, 2, 300, 3, false, 8, 64);  // value groups of 64 channels (blocks of 64)
  CHECK(g_mma_runs > 0);  // the tensor-core path ran (KIVI alone, granularity 8 at D 64 / 128)
  CHECK(g_mma_auto_runs > 0);  // and auto picked it for a long bound
}

TEST_CASE("composed decode with H2O: raw logits + LSE -> accumulators == CPU composed cache", "[compose][gpu]") {
  int partial = run(ComposedKind::kH2oThinkKivi, 3, 8, 2, 64, 4, 2, 110, 6);
  partial += run(ComposedKind::kH2oThinkKivi, 2, 12, 4, 128, 2, 2, 140, 4);
  partial += run(ComposedKind::kH2oKivi, 2, 8, 2, 128, 4, 4, 120, 4);
  partial += run(ComposedKind::kH2oThinkKivi, 2, 12, 4, 128, 2, 2, 140, 4, false, 8);  // lane-group kernel too
  // lane-group kernel with chunks shorter (D 256: two 16-key chunks per block) and longer (D 64:
  // 64 keys, half masked) than a block; the D 64 case has partly filled blocks, so mode 1's
  // 32-token splits start inside blocks
  partial += run(ComposedKind::kH2oThinkKivi, 2, 4, 2, 256, 4, 2, 110, 4, false, 8);
  partial += run(ComposedKind::kH2oThinkKivi, 3, 8, 2, 64, 8, 4, 110, 5, false, 8);
  CHECK(partial > 0);  // H2O evicted inside quantised blocks: the block list path is exercised
  CHECK(g_mma_runs > 0);
}
