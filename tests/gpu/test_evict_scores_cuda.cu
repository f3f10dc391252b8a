// Fused token-eviction scores on the GPU (issue 5, spec eviction.md §4.3): dense_decode with the
// raw-logit output, then the score epilogue, against an fp64 reference computed from the same
// fp16 inputs: the logits, H2O accumulation (gamma 1 and 0.9; GQA mean, max, sum) and the
// Scissorhands history bits, for Tq 1 and 3, per-sequence lengths, a window, forced split counts.
// The decode output must not change when the logits are requested. Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

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

}  // namespace

TEST_CASE("decode raw logits + score epilogue == fp64 reference (H2O accumulation, Scissorhands history)",
          "[evict][gpu]") {
  const Case cases[] = {{2, 2, 4, 128, 700, 1, 0, 0}, {2, 2, 4, 128, 700, 1, 0, 5}, {1, 3, 3, 64, 333, 3, 0, 2},
                        {2, 1, 8, 128, 513, 1, 100, 0}, {1, 2, 1, 256, 129, 3, 0, 1}};
  std::mt19937 rng(77);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (const Case& c : cases) {
    const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
    INFO("B " << c.B << " Hkv " << c.Hkv << " G " << c.G << " D " << c.D << " L " << c.L << " Tq " << c.Tq << " window "
              << c.window << " splits " << c.splits);
    std::vector<Half> q(static_cast<std::size_t>(c.B) * c.Tq * Hq * c.D), k(static_cast<std::size_t>(c.B) * c.Hkv * c.L * c.D),
        v(k.size());
    for (auto& x : q) x = memattn::from_float<Half>(nd(rng));
    for (auto& x : k) x = memattn::from_float<Half>(nd(rng));
    for (auto& x : v) x = memattn::from_float<Half>(nd(rng));
    std::vector<std::int32_t> lens(static_cast<std::size_t>(c.B));
    for (int b = 0; b < c.B; ++b) lens[static_cast<std::size_t>(b)] = b == 0 ? c.L : std::max(c.Tq, c.L / 2 + 1);
    std::vector<float> acc0(static_cast<std::size_t>(c.B) * c.Hkv * c.L);
    for (auto& x : acc0) x = std::fabs(nd(rng));
    std::vector<std::uint64_t> hist0(acc0.size());
    for (auto& x : hist0) x = (static_cast<std::uint64_t>(rng()) << 32) | rng();

    Half *dq = upload(q), *dk = upload(k), *dv = upload(v);
    std::int32_t* dlens = upload(lens);
    std::vector<Half> o(q.size());
    Half* d_o = upload(o);
    Half* d_o_plain = upload(o);
    std::vector<float> lse(static_cast<std::size_t>(c.B) * c.Tq * Hq), scores(static_cast<std::size_t>(c.B) * c.Hkv * rows * c.L, NAN);
    float *dlse = upload(lse), *dscores = upload(scores);

    memattn::attention::DecodeArgs<Half> a;
    a.q = memattn::make_view<4>(static_cast<const Half*>(dq), {c.B, c.Tq, Hq, c.D});
    a.k_cache = memattn::make_view<4>(static_cast<const Half*>(dk), {c.B, c.Hkv, c.L, c.D});
    a.v_cache = memattn::make_view<4>(static_cast<const Half*>(dv), {c.B, c.Hkv, c.L, c.D});
    a.seq_lens = dlens;
    a.seq_lens_host = lens.data();
    a.window = c.window;
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

    // fp64 reference: logits, lse, then each mode.
    const double tau = 1.0 / std::sqrt(static_cast<double>(c.D));
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
        int bad_logit = 0, bad_acc = 0, bad_hist = 0;
        for (int b = 0; b < c.B; ++b) {
          const int len = lens[static_cast<std::size_t>(b)];
          for (int h = 0; h < c.Hkv; ++h) {
            // logits and lse of every row in fp64
            std::vector<double> s(static_cast<std::size_t>(rows) * len, -INFINITY), l(static_cast<std::size_t>(rows));
            for (int f = 0; f < rows; ++f) {
              const int t = f / c.G, hq = h * c.G + f % c.G, pos = len - c.Tq + t;
              const int lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
              double mx = -INFINITY;
              for (int j = lo; j <= pos; ++j) {
                double d = 0;
                for (int e = 0; e < c.D; ++e)
                  d += static_cast<double>(memattn::to_float(q[((static_cast<std::size_t>(b) * c.Tq + t) * Hq + hq) * c.D + e])) *
                       memattn::to_float(k[((static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j) * c.D + e]);
                s[static_cast<std::size_t>(f) * len + j] = d * tau;
                mx = std::max(mx, d * tau);
              }
              double sum = 0;
              for (int j = lo; j <= pos; ++j) sum += std::exp(s[static_cast<std::size_t>(f) * len + j] - mx);
              l[static_cast<std::size_t>(f)] = mx + std::log(sum);
              for (int j = lo; j <= pos; ++j) {
                const double g = s_gpu[((static_cast<std::size_t>(b) * c.Hkv + h) * rows + f) * c.L + j];
                if (reduce == 0 && gamma == 1.f && !(std::fabs(g - s[static_cast<std::size_t>(f) * len + j]) <= 2e-3 * (1 + std::fabs(g))))
                  ++bad_logit;
              }
            }
            for (int j = 0; j < len; ++j) {
              double ref = acc0[(static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j];
              std::uint64_t href = hist0[(static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j];
              bool ambiguous = false;
              for (int t = 0; t < c.Tq; ++t) {
                const int pos = len - c.Tq + t, lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
                if (j > pos || j < lo) continue;
                double pbar = 0;
                for (int g = 0; g < c.G; ++g) {
                  const int f = t * c.G + g;
                  const double pr = std::exp(s[static_cast<std::size_t>(f) * len + j] - l[static_cast<std::size_t>(f)]);
                  pbar = g == 0 ? pr : (reduce == 1 ? std::max(pbar, pr) : pbar + pr);
                }
                if (reduce == 0) pbar /= c.G;
                ref = gamma * ref + pbar;
                const double thr = 1.0 / (pos - lo + 1);
                ambiguous = ambiguous || std::fabs(pbar - thr) <= 1e-3 * thr;
                href = (href << 1) | (pbar < thr ? 1u : 0u);
              }
              const std::size_t at = (static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j;
              if (!(std::fabs(acc[at] - ref) <= 1e-4 * std::fabs(ref) + 1e-6)) ++bad_acc;
              if (!ambiguous && hist[at] != href) ++bad_hist;
            }
            // keys past the sequence keep their state
            for (int j = len; j < c.L; ++j) {
              const std::size_t at = (static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j;
              if (acc[at] != acc0[at] || hist[at] != hist0[at]) ++bad_acc;
            }
          }
        }
        CHECK(bad_logit == 0);
        CHECK(bad_acc == 0);
        CHECK(bad_hist == 0);
        cudaFree(dacc);
        cudaFree(dhist);
      }
    }
    (void)lse_gpu;
    cudaFree(ws);
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dlens);
    cudaFree(d_o);
    cudaFree(d_o_plain);
    cudaFree(dlse);
    cudaFree(dscores);
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
  cudaFree(f);
  cudaFree(d);
  cudaFree(o);
}
