// The tensor-core decode of the composed cache's KIVI region (think_decode_mma.cuh, issue 7
// path 3), run by the CPU emulator (simt.hpp) on every CI run: each split's partial (m, l, acc)
// and raw logits against an fp64 evaluation of the same quantised region, exported from a CPU
// ComposedKvCache (KIVI alone, and ThinK + KIVI with d_keep a multiple of 8), for 2- and 4-bit
// keys and values, head_dim 64 and 128, full and partly filled (evicted) blocks, splits of one
// tile and splits of several blocks per warp.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "common/test_data.hpp"
#include "emu/emu_launch.hpp"
#include "gpu/composed_cpu_bridge.hpp"
#include "memattn/cuda/think_params.cuh"

namespace {

namespace mk = memattn::kernels;
using memattn::Status;

double half_at(const std::uint16_t* p) {
  return static_cast<double>(memattn::to_float(memattn::Half{*p}));
}
int code_at(const std::uint32_t* words, std::int64_t idx, int bits) {
  const std::int64_t bit = idx * bits;
  return static_cast<int>((words[bit / 32] >> (bit % 32)) & ((1u << bits) - 1u));
}

// Quantization spec Q-K1 for the fused kernel: robust relative output error 2e-3. The values
// enter the tensor-core products as fp16 c s_v + z_v (rounding 2^-12 of |v|, measured 2-4e-4);
// the logits are exact to ~2^-22 (q' and the bias in fp16 hi / lo pairs).
constexpr double kQK1Output = 2e-3;

struct Partial {
  double m = -std::numeric_limits<double>::infinity(), l = 0;
  std::vector<double> acc;
};

// fp64 partial of segment s, query head g over quantised tokens [t0, t1): the kernel's semantics
// (logit = tau q[ch] . (code s + z) over the kept channels, v = code s_v + z_v per value group).
Partial reference(const ComposedCase& c, int s, int g, int t0, int t1, std::vector<double>* logits) {
  const int D = c.D, dk = c.d_keep, G = c.Hq / c.Hkv, b = s / c.Hkv, h = s % c.Hkv;
  const double tau = 1.0 / std::sqrt(static_cast<double>(D));
  Partial r;
  r.acc.assign(static_cast<std::size_t>(D), 0.0);
  const int nb = c.n_blocks[static_cast<std::size_t>(s)], nq = c.n_q[static_cast<std::size_t>(s)];
  const int* first = c.kq_first.data() + static_cast<std::size_t>(s) * c.cap_blocks;
  const float* q = c.q.data() + (static_cast<std::size_t>(b) * c.Hq + static_cast<std::size_t>(h) * G + g) * D;
  const std::uint8_t* ch = c.channels.data() + static_cast<std::size_t>(s) * dk;
  std::vector<double> lg;
  for (int t = t0; t < t1; ++t) {
    int i = 0;
    while (i + 1 < nb && first[i + 1] <= t) ++i;
    REQUIRE(t < nq);
    const std::uint32_t* kw = c.kq.data() + (static_cast<std::size_t>(s) * c.cap_blocks + i) * std::max(1, c.k_block_words);
    const std::uint16_t* km = c.kqm.data() + (static_cast<std::size_t>(s) * c.cap_blocks + i) * 2 * dk;
    double x = 0;
    for (int k = 0; k < dk; ++k) {
      const double kv = code_at(kw, static_cast<std::int64_t>(t - first[i]) * dk + k, c.bits_k) * half_at(km + 2 * k) + half_at(km + 2 * k + 1);
      x += static_cast<double>(q[ch[k]]) * kv;
    }
    lg.push_back(tau * x);
  }
  for (double x : lg) r.m = std::max(r.m, x);
  for (int t = t0; t < t1; ++t) {
    const double p = std::exp(lg[static_cast<std::size_t>(t - t0)] - r.m);
    r.l += p;
    const std::uint32_t* vw = c.vq.data() + (static_cast<std::size_t>(s) * c.cap_q + t) * std::max(1, c.v_words);
    const std::uint16_t* vm = c.vqm.data() + (static_cast<std::size_t>(s) * c.cap_q + t) * 2 * std::max(1, c.v_groups);
    for (int e = 0; e < D; ++e) {
      const int j = e / c.v_group;
      r.acc[static_cast<std::size_t>(e)] += p * (code_at(vw, e, c.bits_v) * half_at(vm + 2 * j) + half_at(vm + 2 * j + 1));
    }
  }
  if (logits) *logits = lg;
  return r;
}

// ThinKDecodeParams::mma_unpaired of the cases params_of builds (path 3's paired tiles, or not)
int g_mma_unpaired = 0;

// Every region of an exported case in ThinKDecodeParams (host pointers), full blocks or the block
// lists; o, lse and the raw logits into the given buffers.
mk::ThinKDecodeParams params_of(const ComposedCase& c, bool full, std::vector<float>* out, std::vector<float>* lse,
                                std::vector<float>* scores) {
  const int S = c.B * c.Hkv, G = c.Hq / c.Hkv, dk = c.d_keep, D = c.D;
  mk::ThinKDecodeParams p{};
  p.mma_unpaired = g_mma_unpaired;
  p.k_old = c.k_old.data();
  p.old_seg_stride = static_cast<long long>(c.cap_old) * dk;
  p.old_row_stride = dk;
  p.channels = c.channels.data();
  p.d_keep = dk;
  p.k_new = c.k_new.data();
  p.new_seg_stride = static_cast<long long>(c.cap_new) * D;
  p.v = c.v_new.data();
  p.v_seg_stride = static_cast<long long>(c.cap_new) * D;
  p.v_old = c.v_old.data();  // old values apart, full width
  p.v_old_seg_stride = static_cast<long long>(c.cap_old) * D;
  p.old_v_row_stride = D;
  p.n_old = c.n_old.data();
  p.n_new = c.n_new.data();
  p.n_q = c.n_q.data();
  if (!full) {
    p.kq_first = c.kq_first.data();
    p.kq_first_seg_stride = c.cap_blocks;
    p.n_blocks = c.n_blocks.data();
  } else {
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < c.n_blocks[static_cast<std::size_t>(s)]; ++i)
        REQUIRE(c.kq_first[static_cast<std::size_t>(s * c.cap_blocks + i)] == i * c.qgroup);
  }
  p.kq = c.kq.data();
  p.kq_seg_stride = static_cast<long long>(c.cap_blocks) * std::max(1, c.k_block_words);
  p.kq_block_words = c.k_block_words;
  p.kqm = c.kqm.data();
  p.kqm_seg_stride = static_cast<long long>(c.cap_blocks) * 2 * dk;
  p.vq = c.vq.data();
  p.vq_seg_stride = static_cast<long long>(c.cap_q) * std::max(1, c.v_words);
  p.v_words = c.v_words;
  p.vqm = c.vqm.data();
  p.vqm_seg_stride = static_cast<long long>(c.cap_q) * 2 * std::max(1, c.v_groups);
  p.qgroup = c.qgroup, p.bits_k = c.bits_k, p.bits_v = c.bits_v, p.v_group = c.v_group;
  p.q = c.q.data();
  out->assign(c.q.size(), NAN);
  lse->assign(static_cast<std::size_t>(c.B) * c.Hq, NAN);
  scores->assign(static_cast<std::size_t>(S) * G * c.cap_total, NAN);
  p.o = out->data();
  p.lse = lse->data();
  p.scores = scores->data();
  p.scores_seg_stride = static_cast<long long>(G) * c.cap_total;
  p.scores_row_stride = c.cap_total;
  p.batch = c.B, p.q_heads = c.Hq, p.kv_heads = c.Hkv, p.head_dim = D;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  return p;
}

template <int D, int KB, int VB>
void run_kernel(const mk::ThinKDecodeParams& p, const mk::ThinKSplit& sp, int segments, int splits) {
  const mk::think_mma::StageGeom geo = mk::think_mma::stage_geom(p.d_keep, KB, D * VB / 8, D);
  const int smem = mk::think_mma::smem_bytes(geo, D);
  memattn_emu::launch(dim3(static_cast<unsigned>(segments), static_cast<unsigned>(splits)), dim3(mk::think_mma::kThreads),
                      static_cast<std::size_t>(smem), [&] {
                        mk::with_mma_chunks<D>(p.d_keep, [&](auto kc) { mk::think_decode_mma_kernel<D, KB, VB, decltype(kc)::value>(p, sp); });
                      });
}

template <int D>
void dispatch(const mk::ThinKDecodeParams& p, const mk::ThinKSplit& sp, int segments, int splits) {
  if (p.bits_k == 2 && p.bits_v == 2) run_kernel<D, 2, 2>(p, sp, segments, splits);
  else if (p.bits_k == 2) run_kernel<D, 2, 4>(p, sp, segments, splits);
  else if (p.bits_v == 2) run_kernel<D, 4, 2>(p, sp, segments, splits);
  else run_kernel<D, 4, 4>(p, sp, segments, splits);
}

// Extreme metadata (quantization spec Q-D4) written over an exported case, for the fp16 prescales
// and the bias: per 32-token stretch alternately tiny (x 2^-20: subnormal fp16 scales) and large
// value (scale, zero) pairs, every 5th token the +-65504 block (s 8736, z -65504: the top 4-bit
// code reconstructs 65536, past fp16); key channel 0 with a zero point of 1000 over a scale of
// 1/64, odd blocks' keys x 2^-12.
void make_extreme(ComposedCase* c) {
  auto h = [](float x) { return memattn::float_to_half(x).bits; };
  auto f = [](std::uint16_t b) { return memattn::half_to_float(memattn::Half{b}); };
  const int S = c->B * c->Hkv, ng = std::max(1, c->v_groups), dk = c->d_keep;
  for (int s = 0; s < S; ++s) {
    for (int t = 0; t < c->cap_q; ++t) {
      std::uint16_t* m = c->vqm.data() + (static_cast<std::size_t>(s) * c->cap_q + t) * 2 * ng;
      for (int j = 0; j < ng; ++j) {
        if (t % 5 == 0) {
          m[2 * j] = h(8736.f), m[2 * j + 1] = h(-65504.f);
          continue;
        }
        const float k = (t / 32) % 2 == 0 ? 0x1p-20f : 64.f;
        m[2 * j] = h(f(m[2 * j]) * k), m[2 * j + 1] = h(f(m[2 * j + 1]) * k);
      }
    }
    for (int i = 0; i < c->cap_blocks; ++i) {
      std::uint16_t* m = c->kqm.data() + (static_cast<std::size_t>(s) * c->cap_blocks + i) * 2 * dk;
      m[0] = h(1.f / 64.f), m[1] = h(1000.f);
      if (i % 2 == 1)
        for (int e = 2; e < 2 * dk; ++e) m[e] = h(f(m[e]) * 0x1p-12f);
    }
  }
}

// Pads every V code row by 4 words (v_words larger than the codes need, as a caller's layout may
// be): the kernels must take the row stride from v_words.
void pad_value_rows(ComposedCase* c) {
  const int vw = std::max(1, c->v_words), nw = vw + 4;
  const std::size_t rows = static_cast<std::size_t>(c->B) * c->Hkv * c->cap_q;
  std::vector<std::uint32_t> padded(rows * static_cast<std::size_t>(nw), 0xFFFFFFFFu);
  for (std::size_t r = 0; r < rows; ++r)
    std::copy_n(c->vq.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(vw)), vw,
                padded.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(nw)));
  c->vq = std::move(padded);
  c->v_words = nw;
}

// Puts an empty block (first token equal to the next block's) before every odd block of every
// segment, as a caller's block list may have them (the composed cache drops its empty blocks):
// a warp's tile walk then has empty tiles between full ones (path 3's paired tiles: an empty even
// tile before an odd one with keys).
void insert_empty_blocks(ComposedCase* c) {
  const int S = c->B * c->Hkv, kw = std::max(1, c->k_block_words), mw = 2 * c->d_keep;
  const int cap = c->cap_blocks + (c->cap_blocks + 1) / 2;
  std::vector<int> first(static_cast<std::size_t>(S) * cap, 0), nb(static_cast<std::size_t>(S), 0);
  std::vector<std::uint32_t> kq(static_cast<std::size_t>(S) * cap * kw, 0u);
  std::vector<std::uint16_t> kqm(static_cast<std::size_t>(S) * cap * mw, 0);
  for (int s = 0; s < S; ++s) {
    int n = 0;
    for (int i = 0; i < c->n_blocks[static_cast<std::size_t>(s)]; ++i) {
      const std::size_t from = static_cast<std::size_t>(s) * c->cap_blocks + i;
      const int f = c->kq_first[from];
      if (i % 2 == 1) first[static_cast<std::size_t>(s) * cap + n++] = f;  // empty: [f, f)
      const std::size_t to = static_cast<std::size_t>(s) * cap + n++;
      first[to] = f;
      std::copy_n(c->kq.begin() + static_cast<std::ptrdiff_t>(from * kw), kw, kq.begin() + static_cast<std::ptrdiff_t>(to * kw));
      std::copy_n(c->kqm.begin() + static_cast<std::ptrdiff_t>(from * mw), mw, kqm.begin() + static_cast<std::ptrdiff_t>(to * mw));
    }
    nb[static_cast<std::size_t>(s)] = n;
  }
  c->kq_first = std::move(first), c->n_blocks = std::move(nb), c->kq = std::move(kq), c->kqm = std::move(kqm);
  c->cap_blocks = cap;
}

// (head_dim, chunks of kept channels) of the cases check() ran
std::set<std::pair<int, int>>& chunk_counts_seen() {
  static std::set<std::pair<int, int>> seen;
  return seen;
}

void check(ComposedKind kind, int B, int Hq, int Hkv, int D, int bits_k, int bits_v, int prefill, int steps, bool full,
           int split_keys, bool extreme = false, float prune = 0.4f, bool pad_v = false, int v_group = 0,
           bool empty_blocks = false) {
  INFO("kind " << static_cast<int>(kind) << " B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " bits " << bits_k
               << "/" << bits_v << " full " << full << " split " << split_keys << " extreme " << extreme << " prune " << prune
               << " padded V rows " << pad_v << " v_group " << v_group << " empty blocks " << empty_blocks);
  ComposedCase c;
  REQUIRE(composed_cpu_case(kind, B, Hq, Hkv, D, bits_k, bits_v, prefill, steps, 777u + static_cast<unsigned>(D), &c, 8, prune, v_group));
  REQUIRE(c.v_group == (v_group > 0 ? v_group : 32));
  if (extreme) make_extreme(&c);
  if (pad_v) pad_value_rows(&c);
  if (empty_blocks) insert_empty_blocks(&c);
  const int S = B * Hkv, G = Hq / Hkv, dk = c.d_keep;
  REQUIRE(dk % 8 == 0);
  REQUIRE(c.v_group % 32 == 0);
  std::vector<float> out, lse, scores;
  const mk::ThinKDecodeParams p = params_of(c, full, &out, &lse, &scores);
  const int max_q = *std::max_element(c.n_q.begin(), c.n_q.end());
  REQUIRE(max_q > 0);
  const int splits = (max_q + split_keys - 1) / split_keys;
  std::vector<float> acc(static_cast<std::size_t>(splits) * S * G * D, NAN), ml(static_cast<std::size_t>(splits) * S * G * 2, NAN);
  mk::ThinKSplit sp;
  sp.splits = splits;
  sp.split_keys = split_keys;
  sp.acc = acc.data();
  sp.ml = ml.data();
  if (D == 64) dispatch<64>(p, sp, S, splits);
  else dispatch<128>(p, sp, S, splits);

  double worst_o = 0, worst_lse = 0, worst_logit = 0;
  int compared = 0;
  for (int s = 0; s < S; ++s) {
    const int nq = c.n_q[static_cast<std::size_t>(s)];
    for (int sl = 0; sl < splits; ++sl)
      for (int g = 0; g < G; ++g) {
        const int t0 = std::min(nq, sl * split_keys), t1 = std::min(nq, t0 + split_keys);
        const std::size_t slot = (static_cast<std::size_t>(sl) * S + s) * G + g;
        const double m = ml[slot * 2], l = ml[slot * 2 + 1];
        if (t0 >= t1) {
          CHECK(m == -std::numeric_limits<double>::infinity());
          continue;
        }
        std::vector<double> lg;
        const Partial r = reference(c, s, g, t0, t1, &lg);
        ++compared;
        INFO("segment " << s << " split " << sl << " head " << g << " tokens " << t0 << ".." << t1 << " m " << m << " l " << l);
        REQUIRE(std::isfinite(m));
        REQUIRE(l > 0);
        const double lse_ref = r.m + std::log(r.l);  // relative past 1, as the logits: fp32 carries ~2^-23 of a large logit
        worst_lse = memattn_test::worse(worst_lse, std::abs((m + std::log(l)) - lse_ref) / std::max(1.0, std::abs(lse_ref)));
        double row = 0;
        for (double x : r.acc) row = std::max(row, std::abs(x / r.l));
        for (int e = 0; e < D; ++e)
          worst_o = memattn_test::worse(worst_o, std::abs(acc[slot * D + static_cast<std::size_t>(e)] / l - r.acc[static_cast<std::size_t>(e)] / r.l) /
                                          std::max(row, 1e-30));
        for (int t = t0; t < t1; ++t) {
          const double got = scores[(static_cast<std::size_t>(s) * G + g) * c.cap_total + static_cast<std::size_t>(t)];
          worst_logit = memattn_test::worse(worst_logit, std::abs(got - lg[static_cast<std::size_t>(t - t0)]) / std::max(1.0, std::abs(lg[static_cast<std::size_t>(t - t0)])));
        }
      }
  }
  INFO("compared " << compared << " partials: output " << worst_o << ", lse " << worst_lse << ", logits " << worst_logit);
  CHECK(compared > 0);
  CHECK(worst_o <= kQK1Output);
  CHECK(worst_lse <= 1e-5);  // q' and the bias are fp32-exact to ~2^-22
  CHECK(worst_logit <= 1e-5);
  chunk_counts_seen().insert({D, mk::think_mma::chunks_of(dk)});
}

// The whole call as cuda::think_decode makes it (checks, path, plan, workspace, the kernels in
// order, the combine) on every path (1 tile kernel, 2 lane groups, 3 tensor cores + lane groups,
// 4 tensor cores over every region) and split mode (one CTA per segment, 32-token splits, planned
// splits) the layout allows; then f(path) with the output in place. Returns the calls run.
template <class F>
int each_path(mk::ThinKDecodeParams p, int max_tokens, std::vector<float>& out, F&& f) {
  namespace td = memattn::cuda::think_detail;
  int runs = 0;
  for (int path = 1; path <= 4; ++path)
    for (int mode = 0; mode < 3; ++mode) {
      INFO("path " << path << " mode " << mode);
      p.path = path;
      if ((path == 2 && p.d_keep % 8 != 0) || (path >= 3 && (mode == 0 || !td::mma_layout(p)))) continue;
      mk::ThinKSplit sp;
      if (mode > 0) REQUIRE(td::plan(p, max_tokens, mode == 1 ? 32 : 0, 132, &sp) == Status::kSuccess);
      std::vector<float> ws(td::workspace_bytes(p, sp) / sizeof(float) + 4, NAN);
      if (sp.splits > 1) td::carve(p, ws.data(), td::workspace_bytes(p, sp), &sp);
      std::fill(out.begin(), out.end(), NAN);
      REQUIRE(td::think_launches(p, sp, memattn_emu_test::emu_launch) == Status::kSuccess);
      ++runs;
      f(path);
    }
  return runs;
}

// The whole call as cuda::think_decode makes it (checks, path, plan, workspace, the kernels in
// order, the combine) for path 1 (tile kernel), 2 (lane-group kernel), 3 (tensor cores +
// lane groups) and 4 (tensor cores over every region), with one CTA per segment, 32-token splits
// and the planned splits: the output equals the CPU composed cache's (row-relative 1e-4 on paths
// 1, 2, whose values are fp32; 2e-3, the spec's Q-K1, on paths 3 and 4, whose KIVI values are
// fp16), and every path gives the same LSE.
void check_paths(ComposedKind kind, int B, int Hq, int Hkv, int D, int bits_k, int bits_v, int prefill, int steps, int granularity) {
  namespace td = memattn::cuda::think_detail;
  INFO("kind " << static_cast<int>(kind) << " B " << B << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " bits " << bits_k
               << "/" << bits_v << " granularity " << granularity << " reversed " << memattn_emu::reverse_ctas());
  ComposedCase c;
  REQUIRE(composed_cpu_case(kind, B, Hq, Hkv, D, bits_k, bits_v, prefill, steps, 4321u + static_cast<unsigned>(D), &c, granularity));
  std::vector<float> out, lse, scores;
  mk::ThinKDecodeParams p = params_of(c, false, &out, &lse, &scores);
  REQUIRE(memattn::cuda::think_decode_check(p) == Status::kSuccess);
  const int max_tokens = *std::max_element(c.n_total.begin(), c.n_total.end());
  std::vector<float> ref_lse;
  const int runs = each_path(p, max_tokens, out, [&](int path) {
    double worst = 0;
    for (int r = 0; r < B * Hq; ++r) {
      double row = 0;
      for (int e = 0; e < D; ++e) row = std::max(row, std::abs(static_cast<double>(c.out_cpu[static_cast<std::size_t>(r * D + e)])));
      for (int e = 0; e < D; ++e) {
        const std::size_t i = static_cast<std::size_t>(r * D + e);
        worst = memattn_test::worse(worst, std::abs(static_cast<double>(out[i]) - c.out_cpu[i]) / std::max(row, 1e-30));
      }
    }
    INFO("output " << worst);
    CHECK(worst <= (path >= 3 ? kQK1Output : 1e-4));
    if (ref_lse.empty()) ref_lse = lse;
    double wl = 0;
    for (std::size_t i = 0; i < lse.size(); ++i) wl = memattn_test::worse(wl, static_cast<double>(std::abs(lse[i] - ref_lse[i])));
    CHECK(wl <= 1e-4);
  });
  CHECK(runs >= 5);
  if (td::mma_layout(p)) CHECK(runs == 10);  // paths 3 and 4 ran (split-KV modes)
}

// Poison is never laundered: one KIVI block's key channel of segment 0 holding the quantiser's
// poison meta (scale = zero = fp16 NaN, as for a non-finite input) makes every output of that
// segment's heads non-finite on every path and split mode, and leaves the other segments as
// they were.
void check_poison(ComposedKind kind, int B, int Hq, int Hkv, int D, int bits_k, int bits_v, int prefill, int steps) {
  INFO("kind " << static_cast<int>(kind) << " D " << D << " bits " << bits_k << "/" << bits_v << " reversed "
               << memattn_emu::reverse_ctas());
  ComposedCase c;
  REQUIRE(composed_cpu_case(kind, B, Hq, Hkv, D, bits_k, bits_v, prefill, steps, 99u + static_cast<unsigned>(D), &c, 8));
  std::vector<float> out, lse, scores;
  mk::ThinKDecodeParams p = params_of(c, false, &out, &lse, &scores);
  REQUIRE(c.n_q[0] > 0);
  std::uint16_t* meta = const_cast<std::uint16_t*>(p.kqm);  // segment 0, block 0, kept channel slot 1
  meta[2] = meta[3] = 0x7E00;
  const int G = Hq / Hkv, max_tokens = *std::max_element(c.n_total.begin(), c.n_total.end());
  const int runs = each_path(p, max_tokens, out, [&](int) {
    int laundered = 0, lost = 0;
    for (int r = 0; r < B * Hq; ++r)
      for (int e = 0; e < D; ++e) {
        const float x = out[static_cast<std::size_t>(r * D + e)];
        if (r < G) laundered += std::isfinite(x);  // segment 0 = (b 0, KV head 0): query heads 0 .. G - 1
        else lost += !std::isfinite(x);
      }
    CHECK(laundered == 0);
    CHECK(lost == 0);
    for (int r = 0; r < G; ++r) CHECK_FALSE(std::isfinite(lse[static_cast<std::size_t>(r)]));
  });
  CHECK(runs >= 5);
}

}  // namespace

// Each case runs path 3's tensor-core kernel with both stage pipelines: bulk copies on mbarriers
// (sm_90) and the lanes' cp.async pieces (sm_80; KIVI records everywhere).
TEST_CASE("emulated composed decode: a poisoned KIVI block stays non-finite on every path", "[emu][compose]") {
  for (bool bulk : {true, false})
  for (bool reverse : {false, true}) {
    memattn_emu::BulkCopies copies(bulk);
    memattn_emu::ReverseCtas order(reverse);
    check_poison(ComposedKind::kThinkKivi, 2, 8, 2, 64, 4, 2, 90, 3);
    check_poison(ComposedKind::kKivi, 2, 4, 2, 128, 2, 2, 120, 2);
  }
}

TEST_CASE("emulated composed decode, all paths (tile, lane groups, tensor cores: KIVI region, every region) == CPU composed cache", "[emu][compose]") {
  for (bool bulk : {true, false})
  for (bool reverse : {false, true}) {
    memattn_emu::BulkCopies copies(bulk);
    memattn_emu::ReverseCtas order(reverse);
    check_paths(ComposedKind::kThinkKivi, 3, 8, 2, 64, 4, 2, 90, 5, 8);
    check_paths(ComposedKind::kKivi, 2, 4, 4, 128, 2, 2, 120, 3, 1);
    check_paths(ComposedKind::kH2oThinkKivi, 2, 8, 1, 128, 2, 4, 150, 3, 8);
  }
}

TEST_CASE("emulated tensor-core composed decode (path 3) == fp64 over the KIVI region", "[emu][compose]") {
  for (bool bulk : {true, false})
  for (bool reverse : {false, true})
  for (int split : {32, 160}) {
    memattn_emu::BulkCopies copies(bulk);
    memattn_emu::ReverseCtas order(reverse);
    g_mma_unpaired = reverse ? 1 : 0;  // paired and unpaired tiles with either pipeline
    for (bool full : {false, true}) {
      check(ComposedKind::kKivi, 2, 8, 2, 64, 4, 2, 150, 3, full, split);
      check(ComposedKind::kThinkKivi, 2, 8, 2, 64, 2, 4, 150, 3, full, split);
    }
    check(ComposedKind::kKivi, 1, 4, 2, 128, 2, 2, 200, 2, false, split);
    check(ComposedKind::kThinkKivi, 1, 8, 1, 128, 4, 4, 200, 2, false, split);
    check(ComposedKind::kThinkKivi, 2, 8, 2, 128, 4, 2, 200, 2, false, split);  // the benchmark's K4 / V2
    check(ComposedKind::kKivi, 1, 8, 2, 128, 2, 4, 150, 2, true, split);
    check(ComposedKind::kKivi, 1, 4, 1, 64, 4, 4, 150, 2, false, split);
    // H2O eviction inside KIVI blocks: partly filled blocks (kq_first)
    check(ComposedKind::kH2oKivi, 2, 8, 2, 64, 4, 2, 220, 6, false, split);
    check(ComposedKind::kH2oThinkKivi, 2, 4, 1, 128, 2, 2, 260, 6, false, split);
    check(ComposedKind::kThinkKivi, 1, 8, 2, 128, 4, 4, 200, 2, false, split, true);
    check(ComposedKind::kKivi, 2, 4, 1, 64, 2, 2, 150, 3, true, split, true);
    // every chunk count of kept channels (the kernel's KC): 1 and 2 at head_dim 128, 1 at 64
    check(ComposedKind::kThinkKivi, 1, 8, 2, 128, 4, 2, 200, 2, false, split, false, 0.8f);
    check(ComposedKind::kH2oThinkKivi, 2, 4, 1, 128, 2, 4, 220, 6, false, split, false, 0.6f);
    check(ComposedKind::kH2oThinkKivi, 2, 8, 2, 64, 4, 2, 220, 6, false, split, false, 0.6f);
    check(ComposedKind::kH2oThinkKivi, 2, 8, 2, 128, 4, 2, 200, 4, false, split, false, 0.4f, true);
    check(ComposedKind::kKivi, 1, 4, 1, 64, 2, 4, 150, 2, true, split, false, 0.4f, true);
    // value groups of 64 and 128 channels (a lane's group v_grp; blocks of 64 / 128 tokens, several
    // tiles each), extreme scales too
    check(ComposedKind::kThinkKivi, 2, 8, 2, 128, 4, 2, 300, 2, false, split, false, 0.4f, false, 64);
    check(ComposedKind::kH2oKivi, 2, 8, 2, 128, 2, 4, 420, 6, false, split, true, 0.4f, false, 128);
    check(ComposedKind::kKivi, 2, 4, 1, 64, 4, 4, 300, 3, true, split, true, 0.4f, false, 64);
    // empty blocks in the block lists (empty tiles between full ones)
    check(ComposedKind::kH2oThinkKivi, 2, 4, 1, 128, 4, 2, 420, 6, false, split, false, 0.4f, false, 0, true);
    check(ComposedKind::kKivi, 1, 8, 2, 64, 2, 2, 300, 2, false, split, false, 0.4f, false, 0, true);
  }
  g_mma_unpaired = 0;
  for (int kc = 1; kc <= 4; ++kc) CHECK(chunk_counts_seen().count({128, kc}) == 1);
  for (int kc = 1; kc <= 2; ++kc) CHECK(chunk_counts_seen().count({64, kc}) == 1);
}

// The split plan of the tensor-core kernel over a KIVI region (path 3 and cuda::kivi_decode's
// tensor-core call): one wave of think_mma::kMinCtas CTAs per SM (a partial last wave of equal
// splits idles its share of the step), splits of at least kThinKMmaMinSplit tokens covering L.
TEST_CASE("tensor-core composed decode (path 3): the split plan fills one wave", "[compose][emu]") {
  namespace td = memattn::cuda::think_detail;
  static const int n_q[1] = {0};
  for (auto [B, D, L] : {std::tuple<int, int, int>{16, 128, 65536}, {1, 128, 65536}, {16, 128, 4096}, {4, 64, 32768}, {128, 128, 8192}}) {
    mk::ThinKDecodeParams p{};
    p.batch = B, p.kv_heads = 8, p.q_heads = 32, p.head_dim = D, p.path = 3, p.n_q = n_q;
    mk::ThinKSplit sp;
    REQUIRE(td::plan(p, L, 0, 132, &sp) == Status::kSuccess);
    const long long segments = 8LL * B, grid_splits = sp.splits / 2;  // slots: the KIVI kernel's, then the fp16 regions'
    INFO("B " << B << " D " << D << " L " << L << " splits " << grid_splits << " keys " << sp.split_keys);
    CHECK(sp.splits % 2 == 0);
    CHECK(grid_splits * segments <= std::max(segments, 132LL * mk::think_mma::kMinCtas));
    CHECK(grid_splits * sp.split_keys >= L);
    CHECK(sp.split_keys >= td::kThinKMmaMinSplit);
    if (B == 16 && L == 65536) CHECK(grid_splits * segments > 132LL * mk::think_mma::kMinCtas * 3 / 4);  // most of the wave
  }
}
