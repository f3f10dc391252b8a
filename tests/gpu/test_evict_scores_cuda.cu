// Fused token-eviction scores on the GPU (issue 5, spec eviction.md §4.3): dense_decode with the
// raw-logit output, then the score epilogue, against an fp64 reference computed from the same
// fp16 inputs: the logits, H2O accumulation (gamma 1 and 0.9; GQA mean, max, sum) and the
// Scissorhands history bits, for Tq 1 and 3, per-sequence lengths, a window, forced split counts.
// The decode output must not change when the logits are requested; fp16 logits are the fp32 ones
// rounded, and the epilogue reads them the same way; cuda::decode_accumulate is bit for bit the
// fp16-logit decode + epilogue. Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/evict_score_reference.hpp"
#include "memattn/cuda/decode_accumulate.cuh"
#include "memattn/cuda/dense_decode.cuh"
#include "memattn/cuda/evict_scores.cuh"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;
using memattn_gpu_test::download;

using memattn::Half;
using memattn::Status;
namespace mc = memattn::cuda;
namespace mk = memattn::kernels;

namespace {


struct Case {
  int B, Hkv, G, D, L, Tq, window, splits;
};

// Random fp16 q, k, v (q scaled by q_scale), per-sequence lengths (L, then L / 2 + 1) and an fp32
// accumulator state, on the host and the device; args() fills a decode's inputs from them.
struct Inputs {
  std::vector<Half> q, k, v;
  std::vector<std::int32_t> lens;
  std::vector<float> acc0;
  Half *dq = nullptr, *dk = nullptr, *dv = nullptr;
  std::int32_t* dlens = nullptr;
  const Case c;
  Inputs(const Case& cs, std::mt19937& rng, float q_scale) : c(cs) {
    std::normal_distribution<float> nd(0.f, 1.f);
    q.resize(static_cast<std::size_t>(c.B) * c.Tq * c.Hkv * c.G * c.D);
    k.resize(static_cast<std::size_t>(c.B) * c.Hkv * c.L * c.D);
    v.resize(k.size());
    for (auto& x : q) x = memattn::from_float<Half>(q_scale * nd(rng));
    for (auto& x : k) x = memattn::from_float<Half>(nd(rng));
    for (auto& x : v) x = memattn::from_float<Half>(nd(rng));
    lens.resize(static_cast<std::size_t>(c.B));
    for (int b = 0; b < c.B; ++b) lens[static_cast<std::size_t>(b)] = b == 0 ? c.L : std::max(c.Tq, c.L / 2 + 1);
    acc0.resize(static_cast<std::size_t>(c.B) * c.Hkv * c.L);
    for (auto& x : acc0) x = std::fabs(nd(rng));
    dq = upload(q), dk = upload(k), dv = upload(v);
    dlens = upload(lens);
  }
  Inputs(const Inputs&) = delete;
  Inputs& operator=(const Inputs&) = delete;
  ~Inputs() {
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dlens);
  }
  memattn::attention::DecodeArgs<Half> args() const {
    const int Hq = c.Hkv * c.G;
    memattn::attention::DecodeArgs<Half> a;
    a.q = memattn::make_view<4>(static_cast<const Half*>(dq), {c.B, c.Tq, Hq, c.D});
    a.k_cache = memattn::make_view<4>(static_cast<const Half*>(dk), {c.B, c.Hkv, c.L, c.D});
    a.v_cache = memattn::make_view<4>(static_cast<const Half*>(dv), {c.B, c.Hkv, c.L, c.D});
    a.seq_lens = dlens;
    a.seq_lens_host = lens.data();
    a.window = c.window;
    return a;
  }
};

}  // namespace

TEST_CASE("decode raw logits + score epilogue == fp64 reference (H2O accumulation, Scissorhands history)",
          "[evict][gpu]") {
  const Case cases[] = {{2, 2, 4, 128, 700, 1, 0, 0}, {2, 2, 4, 128, 700, 1, 0, 5}, {1, 3, 3, 64, 333, 3, 0, 2},
                        {2, 1, 8, 128, 513, 1, 100, 0}, {1, 2, 1, 256, 129, 3, 0, 1},
                        // Lcap a multiple of 4: the four-keys-per-thread accumulate kernel (ragged
                        // lengths, Tq 3, sliding window); the others take the scalar one
                        {1, 3, 3, 64, 332, 3, 0, 2}, {2, 1, 8, 128, 512, 1, 100, 0}};
  std::mt19937 rng(77);
  for (const Case& c : cases) {
    const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
    INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq << " window "
              << c.window << " splits " << c.splits);
    const Inputs in(c, rng, 1.f);
    const auto& q = in.q;
    const auto& k = in.k;
    const auto& lens = in.lens;
    const auto& acc0 = in.acc0;
    std::vector<std::uint64_t> hist0(acc0.size());
    for (auto& x : hist0) x = (static_cast<std::uint64_t>(rng()) << 32) | rng();

    std::vector<Half> o(q.size());
    Half* d_o = upload(o);
    Half* d_o_plain = upload(o);
    std::vector<float> lse(static_cast<std::size_t>(c.B) * c.Tq * Hq), scores(static_cast<std::size_t>(c.B) * c.Hkv * rows * c.L, NAN);
    float *dlse = upload(lse), *dscores = upload(scores);

    memattn::attention::DecodeArgs<Half> a = in.args();
    a.lse = memattn::make_view<3>(dlse, {c.B, c.Tq, Hq});
    mc::DenseDecodeTuning tuning;
    tuning.num_splits = c.splits;
    // Plain decode first (no logits), then with logits: identical outputs.
    a.o = memattn::make_view<4>(d_o_plain, {c.B, c.Tq, Hq, c.D});
    std::size_t ws_bytes = 0;
    REQUIRE(mc::dense_decode_workspace_size(a, &ws_bytes, tuning) == Status::kSuccess);
    void* ws = nullptr;
    if (ws_bytes) REQUIRE(cudaMalloc(&ws, ws_bytes) == cudaSuccess);
    REQUIRE(mc::dense_decode(a, ws, ws_bytes, nullptr, tuning) == Status::kSuccess);
    a.o = memattn::make_view<4>(d_o, {c.B, c.Tq, Hq, c.D});
    a.scores = memattn::make_view<4>(dscores, {c.B, c.Hkv, rows, c.L});
    REQUIRE(mc::dense_decode(a, ws, ws_bytes, nullptr, tuning) == Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    {
      const auto o1 = download(d_o_plain, o.size()), o2 = download(d_o, o.size());
      bool same = true;
      for (std::size_t i = 0; i < o1.size(); ++i) same = same && o1[i].bits == o2[i].bits;
      CHECK(same);
    }
    const auto s_gpu = download(dscores, scores.size());
    const auto lse_gpu = download(dlse, lse.size());

    // fp64 reference (common/evict_score_reference.hpp): logits, lse, then each mode.
    for (const int reduce : {0, 1, 2}) {
      for (const float gamma : {1.f, 0.9f}) {
        float* dacc = upload(acc0);
        mk::EvictScoreParams p = mc::evict_score_params(a, gamma, reduce);
        p.acc = dacc;
        p.state_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.L;
        p.state_stride[1] = c.L;
        REQUIRE(mc::evict_accumulate_scores(p, mk::EvictScoreMode::kAccumulate, nullptr) == Status::kSuccess);
        std::uint64_t* dhist = upload(hist0);
        p.acc = nullptr;
        p.hist = dhist;
        REQUIRE(mc::evict_accumulate_scores(p, mk::EvictScoreMode::kHistory, nullptr) == Status::kSuccess);
        const auto acc = download(dacc, acc0.size());
        const auto hist = download(dhist, hist0.size());
        const memattn_test::ScoreMismatches bad = memattn_test::check_scores(
            {c.B, c.Hkv, c.G, c.D, c.L, c.Tq, c.window}, q, k, lens, acc0, hist0, s_gpu, acc, hist, reduce, gamma,
            reduce == 0 && gamma == 1.f);
        CHECK(bad.logits == 0);
        CHECK(bad.acc == 0);
        CHECK(bad.hist == 0);
        cudaFree(dacc);
        cudaFree(dhist);
      }
    }
    (void)lse_gpu;
    cudaFree(ws);
    cudaFree(d_o);
    cudaFree(d_o_plain);
    cudaFree(dlse);
    cudaFree(dscores);
  }
}

// fp16 logits (DecodeArgs::scores_half): the decode writes exactly the fp32 logits rounded to
// nearest even, its output is unchanged, and the epilogue applied to them equals a host
// recomputation from the same fp16 logits and LSE (and stays within the rounding's bound of the
// fp32-logit accumulators).
TEST_CASE("fp16 logits: rounded fp32 logits, same epilogue", "[evict][gpu]") {
  const Case cases[] = {{2, 2, 4, 128, 700, 1, 0, 3}, {1, 3, 3, 64, 333, 3, 40, 0}};
  std::mt19937 rng(78);
  for (const Case& c : cases) {
    const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
    INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq);
    const Inputs in(c, rng, 2.f);  // logits up to ~|20|: the fp16 rounding is visible
    const auto& lens = in.lens;
    const auto& acc0 = in.acc0;
    const std::size_t n_scores = static_cast<std::size_t>(c.B) * c.Hkv * rows * c.L;
    std::vector<Half> o(in.q.size());
    Half *d_o32 = upload(o), *d_o16 = upload(o);
    std::vector<float> lse(static_cast<std::size_t>(c.B) * c.Tq * Hq), s32(n_scores, NAN);
    std::vector<Half> s16(n_scores, memattn::from_float<Half>(NAN));
    float *dlse32 = upload(lse), *dlse16 = upload(lse), *ds32 = upload(s32);
    Half* ds16 = upload(s16);

    memattn::attention::DecodeArgs<Half> a = in.args();
    mc::DenseDecodeTuning tuning;
    tuning.num_splits = c.splits;
    a.o = memattn::make_view<4>(d_o32, {c.B, c.Tq, Hq, c.D});
    a.lse = memattn::make_view<3>(dlse32, {c.B, c.Tq, Hq});
    a.scores = memattn::make_view<4>(ds32, {c.B, c.Hkv, rows, c.L});
    std::size_t ws_bytes = 0;
    REQUIRE(mc::dense_decode_workspace_size(a, &ws_bytes, tuning) == Status::kSuccess);
    void* ws = nullptr;
    if (ws_bytes) REQUIRE(cudaMalloc(&ws, ws_bytes) == cudaSuccess);
    REQUIRE(mc::dense_decode(a, ws, ws_bytes, nullptr, tuning) == Status::kSuccess);
    memattn::attention::DecodeArgs<Half> a16 = a;
    a16.o = memattn::make_view<4>(d_o16, {c.B, c.Tq, Hq, c.D});
    a16.lse = memattn::make_view<3>(dlse16, {c.B, c.Tq, Hq});
    a16.scores = {};
    a16.scores_half = memattn::make_view<4>(ds16, {c.B, c.Hkv, rows, c.L});
    REQUIRE(mc::dense_decode(a16, ws, ws_bytes, nullptr, tuning) == Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const auto o32 = download(d_o32, o.size()), o16 = download(d_o16, o.size());
    const auto l32 = download(dlse32, lse.size()), l16 = download(dlse16, lse.size());
    const auto g32 = download(ds32, n_scores);
    const auto g16 = download(ds16, n_scores);
    int bad_out = 0, bad_round = 0;
    for (std::size_t i = 0; i < o32.size(); ++i) bad_out += o32[i].bits != o16[i].bits;
    for (std::size_t i = 0; i < l32.size(); ++i) bad_out += !(l32[i] == l16[i]);
    // Every written fp32 logit (NaN = not written) and its fp16 twin.
    std::size_t written = 0;
    for (std::size_t i = 0; i < n_scores; ++i) {
      if (std::isnan(g32[i])) {
        bad_round += !std::isnan(memattn::to_float(g16[i]));
        continue;
      }
      ++written;
      bad_round += memattn::from_float<Half>(g32[i]).bits != g16[i].bits;
    }
    CHECK(bad_out == 0);
    CHECK(bad_round == 0);
    CHECK(written > 0);

    for (const int reduce : {0, 1}) {
      float *dacc32 = upload(acc0), *dacc16 = upload(acc0);
      mk::EvictScoreParams p32 = mc::evict_score_params(a, 0.9f, reduce);
      mk::EvictScoreParams p16 = mc::evict_score_params(a16, 0.9f, reduce);
      REQUIRE(p16.scores == nullptr);
      REQUIRE(p16.scores_half != nullptr);
      for (mk::EvictScoreParams* p : {&p32, &p16}) {
        p->acc = p == &p32 ? dacc32 : dacc16;
        p->state_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.L;
        p->state_stride[1] = c.L;
        REQUIRE(mc::evict_accumulate_scores(*p, mk::EvictScoreMode::kAccumulate, nullptr) == Status::kSuccess);
      }
      const auto acc32 = download(dacc32, acc0.size()), acc16 = download(dacc16, acc0.size());
      int bad_host = 0, bad_bound = 0;
      for (int b = 0; b < c.B; ++b) {
        const int len = lens[static_cast<std::size_t>(b)];
        for (int h = 0; h < c.Hkv; ++h) {
          for (int j = 0; j < c.L; ++j) {
            const std::size_t at = (static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j;
            double ref = acc0[at], bound = 0;
            for (int t = 0; t < c.Tq && j < len; ++t) {
              const int pos = len - c.Tq + t, lo = c.window > 0 ? pos - c.window + 1 : 0;
              if (j > pos || j < lo) continue;
              double pbar = 0, pmax = 0;
              for (int g = 0; g < c.G; ++g) {
                const int f = t * c.G + g;
                const std::size_t si = ((static_cast<std::size_t>(b) * c.Hkv + h) * rows + f) * c.L + j;
                const double sv = memattn::to_float(g16[si]);
                const double pr = std::exp(sv - l16[(static_cast<std::size_t>(b) * c.Tq + t) * Hq + h * c.G + g]);
                pbar = g == 0 ? pr : (reduce == 1 ? std::max(pbar, pr) : pbar + pr);
                pmax = std::max(pmax, pr * (std::fabs(sv) + 1) * std::ldexp(1.0, -10));  // rounding bound of this term
              }
              if (reduce == 0) pbar /= c.G;
              ref = 0.9 * ref + pbar;
              bound = 0.9 * bound + pmax;
            }
            if (!(std::fabs(acc16[at] - ref) <= 1e-5 * std::fabs(ref) + 1e-7)) ++bad_host;
            if (!(std::fabs(acc16[at] - acc32[at]) <= bound + 1e-5 * std::fabs(ref) + 1e-7)) ++bad_bound;
          }
        }
      }
      CHECK(bad_host == 0);
      CHECK(bad_bound == 0);
      cudaFree(dacc32);
      cudaFree(dacc16);
    }
    cudaFree(ws);
    for (void* ptr : {static_cast<void*>(d_o32), static_cast<void*>(d_o16), static_cast<void*>(dlse32),
                      static_cast<void*>(dlse16), static_cast<void*>(ds32), static_cast<void*>(ds16)})
      cudaFree(ptr);
  }
}

TEST_CASE("score outputs: bad arguments get a Status", "[evict][gpu]") {
  memattn::attention::DecodeArgs<Half> a;
  std::vector<Half> h(4 * 64);
  Half* d = upload(h);
  float* f = nullptr;
  REQUIRE(cudaMalloc(&f, 4096) == cudaSuccess);
  a.q = memattn::make_view<4>(static_cast<const Half*>(d), {1, 1, 2, 64});
  a.k_cache = memattn::make_view<4>(static_cast<const Half*>(d), {1, 1, 2, 64});
  a.v_cache = memattn::make_view<4>(static_cast<const Half*>(d), {1, 1, 2, 64});
  Half* o = upload(h);
  a.o = memattn::make_view<4>(o, {1, 1, 2, 64});
  a.scores = memattn::make_view<4>(f, {1, 1, 2, 2});
  std::size_t bytes = 0;
  // scores without lse
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kErrorInvalidArgument);
  a.lse = memattn::make_view<3>(f + 8, {1, 1, 2});
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kSuccess);
  // wrong scores shape (rows must be Tq * G = 2, keys Lcap = 2)
  a.scores = memattn::make_view<4>(f, {1, 1, 1, 2});
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kErrorInvalidShape);
  // fp32 and fp16 logits together; fp16 logits of the wrong shape
  a.scores = memattn::make_view<4>(f, {1, 1, 2, 2});
  a.scores_half = memattn::make_view<4>(reinterpret_cast<Half*>(f + 64), {1, 1, 2, 2});
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kErrorInvalidArgument);
  a.scores = {};
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kSuccess);
  a.scores_half = memattn::make_view<4>(reinterpret_cast<Half*>(f + 64), {1, 1, 2, 3});
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kErrorInvalidShape);
  {
    memattn::kernels::EvictScoreParams p;
    p.scores = f;
    p.scores_half = reinterpret_cast<Half*>(f + 64);
    p.lse = f + 8;
    p.acc = f + 16;
    p.batch = p.kv_heads = p.group = p.q_tokens = 1;
    p.kv_capacity = 2;
    CHECK(mc::evict_accumulate_scores(p, mk::EvictScoreMode::kAccumulate, nullptr) == Status::kErrorInvalidArgument);
  }
  cudaFree(f);
  cudaFree(d);
  cudaFree(o);
}

// cuda::decode_accumulate (decode + epilogue over workspace fp16 logits, K and V evict-first):
// o, lse and the accumulators bit for bit those of dense_decode with fp16 logits + the epilogue,
// over three steps on one workspace, GQA mean / max / sum, gamma 0.9; long contexts with many
// splits, one split, Tq 2, a window, 9 rows (two row tiles), Lcap % 4 != 0.
TEST_CASE("decode_accumulate == decode (fp16 logits) + epilogue, bit for bit", "[evict][gpu]") {
  const Case cases[] = {{3, 8, 4, 128, 20000, 1, 0, 0}, {2, 2, 4, 128, 700, 1, 0, 1}, {2, 3, 4, 64, 4096, 2, 0, 0},
                        {2, 2, 8, 128, 9000, 1, 1000, 0}, {1, 3, 3, 64, 333, 3, 0, 2},     {2, 2, 4, 128, 701, 1, 0, 3}};
  std::mt19937 rng(93);
  for (const Case& c : cases) {
    const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
    INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq << " window " << c.window);
    const Inputs in(c, rng, 1.f);
    std::vector<Half> o(in.q.size());
    std::vector<float> lse(static_cast<std::size_t>(c.B) * c.Tq * Hq, NAN);
    Half *d_oref = upload(o), *d_o = upload(o);
    float *d_lref = upload(lse), *d_l = upload(lse);
    Half* d_logits = upload(std::vector<Half>(static_cast<std::size_t>(c.B) * c.Hkv * rows * c.L));
    mc::DenseDecodeTuning tuning;
    tuning.num_splits = c.splits;
    tuning.kv_evict_first = c.L > 1000;
    for (const int reduce : {0, 1, 2}) {
      INFO("reduce " << reduce);
      float *dacc_ref = upload(in.acc0), *dacc = upload(in.acc0);
      memattn::attention::DecodeArgs<Half> r = in.args();
      r.o = memattn::make_view<4>(d_oref, {c.B, c.Tq, Hq, c.D});
      r.lse = memattn::make_view<3>(d_lref, {c.B, c.Tq, Hq});
      r.scores_half = memattn::make_view<4>(d_logits, {c.B, c.Hkv, rows, c.L});
      mk::EvictScoreParams ep = mc::evict_score_params(r, 0.9f, reduce);
      ep.acc = dacc_ref;
      ep.state_stride[0] = static_cast<std::int64_t>(c.Hkv) * c.L;
      ep.state_stride[1] = c.L;
      memattn::attention::DecodeArgs<Half> a = in.args();
      a.o = memattn::make_view<4>(d_o, {c.B, c.Tq, Hq, c.D});
      a.lse = memattn::make_view<3>(d_l, {c.B, c.Tq, Hq});
      mc::DecodeScoreState st;
      st.acc = dacc;
      st.stride[0] = ep.state_stride[0];
      st.stride[1] = ep.state_stride[1];
      st.gamma = 0.9f;
      st.reduce = reduce;
      std::size_t ref_bytes = 0, bytes = 0;
      REQUIRE(mc::dense_decode_workspace_size(r, &ref_bytes, tuning) == Status::kSuccess);
      REQUIRE(mc::decode_accumulate_workspace_size(a, &bytes, tuning) == Status::kSuccess);
      void *ws_ref = nullptr, *ws = nullptr;
      REQUIRE(cudaMalloc(&ws_ref, ref_bytes + 256) == cudaSuccess);
      REQUIRE(cudaMalloc(&ws, bytes) == cudaSuccess);
      REQUIRE(cudaMemset(ws, 0xFF, bytes) == cudaSuccess);  // scratch: any content
      for (int step = 0; step < 3; ++step) {
        REQUIRE(mc::dense_decode(r, ws_ref, ref_bytes, nullptr, tuning) == Status::kSuccess);
        REQUIRE(mc::evict_accumulate_scores(ep, mk::EvictScoreMode::kAccumulate, nullptr) == Status::kSuccess);
        REQUIRE(mc::decode_accumulate(a, st, ws, bytes, nullptr, tuning) == Status::kSuccess);
      }
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      const auto acc_ref = download(dacc_ref, in.acc0.size()), acc = download(dacc, in.acc0.size());
      const auto oref = download(d_oref, o.size()), og = download(d_o, o.size());
      const auto lref = download(d_lref, lse.size()), lg = download(d_l, lse.size());
      int bad_acc = 0, bad_o = 0, changed = 0;
      for (std::size_t i = 0; i < acc.size(); ++i) {
        bad_acc += std::memcmp(&acc[i], &acc_ref[i], sizeof(float)) != 0;
        changed += acc[i] != in.acc0[i];
      }
      for (std::size_t i = 0; i < og.size(); ++i) bad_o += og[i].bits != oref[i].bits;
      for (std::size_t i = 0; i < lg.size(); ++i) bad_o += std::memcmp(&lg[i], &lref[i], sizeof(float)) != 0;
      CHECK(bad_acc == 0);
      CHECK(bad_o == 0);
      CHECK(changed > 0);
      for (void* p : {static_cast<void*>(dacc_ref), static_cast<void*>(dacc), ws_ref, ws}) cudaFree(p);
    }
    for (void* p : {static_cast<void*>(d_oref), static_cast<void*>(d_o), static_cast<void*>(d_lref), static_cast<void*>(d_l),
                    static_cast<void*>(d_logits)})
      cudaFree(p);
  }
}
