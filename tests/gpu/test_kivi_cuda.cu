// KIVI on the GPU vs the shared host math: decode appends give block bytes identical to
// quant::quantize_block on the same fp16 tokens (the CPU cache's quantiser), rings bit-equal to
// the input, and the fused decode matches an fp64 oracle over the dequantised state, as does the
// split-KV call on CUDA cores (1e-5) and on tensor cores (where kivi_mma_layout holds: quantization
// spec Q-K1, 2e-3). Exits 77 without a device (gpu_test_main.cpp).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "memattn/cuda/kivi.cuh"
#include "row_error.hpp"

using namespace memattn;

namespace {

template <class T>
T* dev_alloc(std::size_t n) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemset(p, 0, n * sizeof(T)) == cudaSuccess);
  return static_cast<T*>(p);
}

void run_case(int D, int Hq, int Hkv, int kb, int vb, int R, int T) {
  INFO("D " << D << " g " << Hq / Hkv << " K" << kb << "V" << vb << " R " << R << " T " << T);
  const int B = 2, G = 32;
  quant::KvQuantConfig cfg;
  cfg.head_dim = D;
  cfg.bits_k = kb;
  cfg.bits_v = vb;
  cfg.group = G;
  cfg.residual = R;
  REQUIRE(cfg.validate() == Status::kSuccess);
  const quant::BlockLayout lay = quant::block_layout(cfg);
  const int max_blocks = T / G + 1, rows = R + G;
  kernels::KiviCacheView view{cfg, lay, dev_alloc<std::uint8_t>(static_cast<std::size_t>(B) * max_blocks * Hkv * lay.bytes),
                              dev_alloc<Half>(static_cast<std::size_t>(B) * rows * Hkv * D),
                              dev_alloc<Half>(static_cast<std::size_t>(B) * rows * Hkv * D), Hkv, max_blocks};
  std::mt19937 rng(static_cast<unsigned>(D * 131 + kb * 7 + vb + R));
  std::normal_distribution<float> nd(0.f, 1.f);
  // Host copies of every token (fp16), [b][t][h][D].
  std::vector<Half> hk(static_cast<std::size_t>(B) * T * Hkv * D), hv(hk.size());
  for (std::size_t i = 0; i < hk.size(); ++i) {
    hk[i] = float_to_half((i % 16 == 3 ? 5.f : 0.f) + nd(rng));
    hv[i] = float_to_half(nd(rng));
  }
  Half* dk = dev_alloc<Half>(static_cast<std::size_t>(B) * Hkv * D);
  Half* dv = dev_alloc<Half>(static_cast<std::size_t>(B) * Hkv * D);
  int* dn = dev_alloc<int>(B);
  std::uint32_t* dflags = dev_alloc<std::uint32_t>(B);
  float* dq = dev_alloc<float>(static_cast<std::size_t>(B) * Hq * D);
  float* dout = dev_alloc<float>(static_cast<std::size_t>(B) * Hq * D);
  std::vector<Half> step_k(static_cast<std::size_t>(B) * Hkv * D), step_v(step_k.size());
  std::vector<float> q(static_cast<std::size_t>(B) * Hq * D), out(q.size());
  // the split-KV call: CUDA cores, tensor cores (64-token splits, so several per sequence)
  std::vector<float> out_split[2] = {out, out};
  std::size_t ws_bytes[2] = {0, 0};
  void* ws[2] = {nullptr, nullptr};
  for (int tc = 0; tc < 2; ++tc) {
    REQUIRE(cuda::kivi_decode_workspace_size(view, B, Hq, T, &ws_bytes[tc], 64, tc == 1) == Status::kSuccess);
    ws[tc] = dev_alloc<unsigned char>(ws_bytes[tc] + 1);
  }
  const bool mma = cuda::kivi_mma_layout(view);
  // a short workspace or no bound: rejected, nothing written (n_tokens is not even read)
  CHECK(cuda::kivi_decode(view, dq, dout, dn, B, Hq, T, ws[1], ws_bytes[1] - 1, nullptr, 64) == Status::kErrorWorkspaceTooSmall);
  CHECK(cuda::kivi_decode(view, dq, dout, dn, B, Hq, 0, ws[1], ws_bytes[1], nullptr, 64) == Status::kErrorInvalidArgument);
  CHECK(cuda::kivi_decode(view, dq, dout, dn, B, Hq, T, nullptr, 0, nullptr, 64) == Status::kErrorNullPointer);
  REQUIRE(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
  for (float x : out) REQUIRE(x == 0.f);  // dev_alloc's zeros
  double worst = 0, worst_split[2] = {0, 0};
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < Hkv * D; ++i) {
        step_k[static_cast<std::size_t>(b * Hkv * D + i)] = hk[(static_cast<std::size_t>(b) * T + t) * Hkv * D + i];
        step_v[static_cast<std::size_t>(b * Hkv * D + i)] = hv[(static_cast<std::size_t>(b) * T + t) * Hkv * D + i];
      }
    const int n_before[2] = {t, t}, n_after[2] = {t + 1, t + 1};
    REQUIRE(cudaMemcpy(dk, step_k.data(), step_k.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cudaMemcpy(dv, step_v.data(), step_v.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cudaMemcpy(dn, n_before, sizeof(n_before), cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cuda::kivi_append_decode(view, dk, dv, dn, dflags, B, nullptr) == Status::kSuccess);
    for (auto& x : q) x = nd(rng);
    REQUIRE(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cudaMemcpy(dn, n_after, sizeof(n_after), cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cuda::kivi_decode(view, dq, dout, dn, B, Hq, nullptr) == Status::kSuccess);
    REQUIRE(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    if (t % 7 != 0 && t != T - 1) continue;
    for (int tc = 0; tc < 2; ++tc) {
      REQUIRE(cudaMemset(dout, 0xFF, out.size() * 4) == cudaSuccess);
      REQUIRE(cuda::kivi_decode(view, dq, dout, dn, B, Hq, T, ws[tc], ws_bytes[tc], nullptr, 64, tc == 1) == Status::kSuccess);
      REQUIRE(cudaMemcpy(out_split[tc].data(), dout, out.size() * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    }
    // Copy the state back; check bytes and the decode output.
    std::vector<std::uint8_t> blocks(static_cast<std::size_t>(B) * max_blocks * Hkv * lay.bytes);
    std::vector<Half> rk(static_cast<std::size_t>(B) * rows * Hkv * D), rv(rk.size());
    REQUIRE(cudaMemcpy(blocks.data(), view.blocks, blocks.size(), cudaMemcpyDeviceToHost) == cudaSuccess);
    REQUIRE(cudaMemcpy(rk.data(), view.ring_k, rk.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
    REQUIRE(cudaMemcpy(rv.data(), view.ring_v, rv.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
    const long long N = t + 1, nq = N - R > 0 ? (N - R) / G * G : 0;
    kernels::KiviCacheView host = view;
    host.blocks = blocks.data();
    host.ring_k = rk.data();
    host.ring_v = rv.data();
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < Hkv; ++h) {
        std::vector<std::vector<double>> K, V;
        for (long long j = 0; j < nq / G; ++j) {
          std::vector<const Half*> kr, vr;
          for (int u = 0; u < G; ++u) {
            kr.push_back(&hk[((static_cast<std::size_t>(b) * T + j * G + u) * Hkv + h) * D]);
            vr.push_back(&hv[((static_cast<std::size_t>(b) * T + j * G + u) * Hkv + h) * D]);
          }
          std::vector<std::uint8_t> want(lay.bytes);
          quant::quantize_block(cfg, kr.data(), vr.data(), want.data());
          REQUIRE(std::memcmp(want.data(), host.record(b, static_cast<int>(j), h), lay.bytes) == 0);
          const quant::BlockView bv{want.data(), cfg, lay};
          for (int u = 0; u < G; ++u) {
            std::vector<double> a(static_cast<std::size_t>(D)), c(a.size());
            for (int ch = 0; ch < D; ++ch) {
              a[static_cast<std::size_t>(ch)] = quant::half_to_double(bv.k_meta(ch).zero) + bv.k_code(u, ch) * quant::half_to_double(bv.k_meta(ch).scale);
              const quant::GroupMeta m = bv.v_meta(u, ch / cfg.vg());
              c[static_cast<std::size_t>(ch)] = quant::half_to_double(m.zero) + bv.v_code(u, ch) * quant::half_to_double(m.scale);
            }
            K.push_back(a);
            V.push_back(c);
          }
        }
        for (long long u = nq; u < N; ++u) {
          std::vector<double> a(static_cast<std::size_t>(D)), c(a.size());
          for (int ch = 0; ch < D; ++ch) {
            const Half x = rk[host.ring_offset(b, u, h) + ch], y = rv[host.ring_offset(b, u, h) + ch];
            REQUIRE(x.bits == hk[((static_cast<std::size_t>(b) * T + u) * Hkv + h) * D + ch].bits);
            REQUIRE(y.bits == hv[((static_cast<std::size_t>(b) * T + u) * Hkv + h) * D + ch].bits);
            a[static_cast<std::size_t>(ch)] = half_to_float(x);
            c[static_cast<std::size_t>(ch)] = half_to_float(y);
          }
          K.push_back(a);
          V.push_back(c);
        }
        const int g = Hq / Hkv;
        for (int gi = 0; gi < g; ++gi) {
          const float* qr = &q[(static_cast<std::size_t>(b) * Hq + h * g + gi) * D];
          std::vector<double> s(K.size());
          double m = -INFINITY, l = 0, vmax = 0;
          for (std::size_t u = 0; u < K.size(); ++u) {
            double a = 0;
            for (int ch = 0; ch < D; ++ch) a += qr[ch] * K[u][static_cast<std::size_t>(ch)];
            s[u] = a / std::sqrt(static_cast<double>(D));
            m = std::max(m, s[u]);
            for (double x : V[u]) vmax = std::max(vmax, std::abs(x));
          }
          std::vector<double> o(static_cast<std::size_t>(D), 0.0);
          for (std::size_t u = 0; u < K.size(); ++u) {
            const double pw = std::exp(s[u] - m);
            l += pw;
            for (int ch = 0; ch < D; ++ch) o[static_cast<std::size_t>(ch)] += pw * V[u][static_cast<std::size_t>(ch)];
          }
          for (int ch = 0; ch < D; ++ch) {
            const std::size_t i = (static_cast<std::size_t>(b) * Hq + h * g + gi) * D + ch;
            const double ref = o[static_cast<std::size_t>(ch)] / l;
            worst = memattn_gpu_test::worse(worst, std::abs(out[i] - ref) / vmax);
            for (int tc = 0; tc < 2; ++tc) worst_split[tc] = memattn_gpu_test::worse(worst_split[tc], std::abs(out_split[tc][i] - ref) / vmax);
          }
        }
      }
  }
  INFO("split-KV: CUDA cores " << worst_split[0] << ", tensor cores " << worst_split[1] << " (kernel: " << (mma ? "mma" : "CUDA cores") << ")");
  CHECK(worst < 1e-5);
  CHECK(worst_split[0] < 1e-5);
  CHECK(worst_split[1] < (mma ? 2e-3 : 1e-5));
  std::uint32_t flags[2] = {1, 1};
  REQUIRE(cudaMemcpy(flags, dflags, sizeof(flags), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(flags[0] == 0);
  CHECK(flags[1] == 0);
  cudaFree(view.blocks);
  cudaFree(view.ring_k);
  cudaFree(view.ring_v);
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dn);
  cudaFree(dflags);
  cudaFree(dq);
  cudaFree(dout);
  cudaFree(ws[0]);
  cudaFree(ws[1]);
}

}  // namespace

TEST_CASE("kivi cuda: append bytes == host quantiser, decode == fp64 oracle", "[kivi][gpu]") {
  for (int kb : {2, 4, 8})
    for (int vb : {2, 4, 8}) run_case(64, 9, 3, kb, vb, 32, 200);
  run_case(8, 8, 4, 2, 2, 0, 100);    // stories260K shape: D = 8, G_V = 8
  run_case(128, 32, 8, 4, 2, 128, 300);
}

TEST_CASE("kivi cuda: bad arguments rejected before any launch", "[kivi][gpu]") {
  quant::KvQuantConfig cfg;
  cfg.head_dim = 64;
  cfg.residual = 0;
  kernels::KiviCacheView view{cfg, quant::block_layout(cfg), nullptr, nullptr, nullptr, 2, 4};
  CHECK(cuda::kivi_decode(view, nullptr, nullptr, nullptr, 1, 4, nullptr) == Status::kErrorNullPointer);
  view.cfg.residual = 48;
  CHECK(cuda::kivi_decode(view, nullptr, nullptr, nullptr, 1, 4, nullptr) == Status::kErrorInvalidArgument);
  std::size_t bytes = 0;
  CHECK(cuda::kivi_decode_workspace_size(view, 1, 4, 1024, &bytes) == Status::kErrorInvalidArgument);
  CHECK(cuda::kivi_decode(view, nullptr, nullptr, nullptr, 1, 4, 1024, nullptr, 0, nullptr) == Status::kErrorInvalidArgument);
}
