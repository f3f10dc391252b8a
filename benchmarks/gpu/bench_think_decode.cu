// GPU ThinK two-segment decode benchmark (issue 7): cuda::think_decode with λ = 0.4 / 0.5 against
// the same kernel with λ = 0 (every key full width: the dense peer of identical code), for both
// kernels ("tile": rows of d_keep halves; "lanes": rows padded to 8 halves), one new
// token, GQA 32 / 8 heads, head_dim 128, fp16, B sequences of L tokens (L - 32 pruned, 32 full
// width). CUDA events around each launch, median of --iters. One JSON line per case: us, ratio to
// λ = 0 in the same run, bytes of K+V read and effective GB/s. Split-KV entry (think_decode with
// max_tokens = L and a workspace). Value extension rows (vprune = 0.4 with λ = 0.4): old values
// compact too. KIVI rows (issue 7's "ratio against KIVI alone"): cuda::kivi_decode over a cache of
// the same shape (group 32, residual 128, 4/2 and 2/2 bits), records of random codes with finite
// meta, timed the same way; ratio to the λ = 0 ThinK time of the same run. Composed rows
// (think:prune=0.4+kivi:kbits=4,vbits=2, and with h2o the kernel's raw logits + the score epilogue):
// the same kernel over KIVI blocks of kept key channels + a 128-token full-width tail, for the
// tile, lane-group and tensor-core (path 3; path 4 with the fp16 tail on tensor cores too)
// kernels, and the tensor-core one without pruning (KIVI alone through the composed decode);
// pct_copy_bw is issue 7's gate (>= 80% of the copy rate). ThinK rows: path 4 ("mma16") is the
// fp16 tensor-core kernel, timed against its own lambda = 0; the lanes and mma16 rows at lambda 0
// and 0.4 also time the decode writing raw logits + LSE and the H2O epilogue after it
// (h2o_overhead: their sum over the plain decode - 1, issue 5's fused-score cost on these kernels).
//
//   bench_think_decode_cuda [--iters N] [--smoke] [--shape B:L]     exits 77 without a device
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "memattn/cuda/evict_scores.cuh"
#include "memattn/cuda/kivi.cuh"
#include "memattn/cuda/think.cuh"
#include "bench_cuda_check.cuh"

namespace {

using memattn::Half;

__global__ void fill(Half* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = memattn::float_to_half(static_cast<float>(z >> 40) * (2.f / 16777216.f) - 1.f);
  }
}

// Median microseconds of launch() over `iters` runs after 2 warm-up runs, CUDA events around each
// (events created once, destroyed at the end).
template <class F>
double median_us(int iters, F&& launch) {
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < iters + 2; ++i) {
    BENCH_CUDA(cudaEventRecord(a));
    launch();
    BENCH_CUDA(cudaEventRecord(b));
    BENCH_CUDA(cudaEventSynchronize(b));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, a, b));
    if (i >= 2) ms.push_back(t);
  }
  BENCH_CUDA(cudaEventDestroy(a));
  BENCH_CUDA(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;
}

// Median us of the split-KV cuda::think_decode over segments of at most L tokens (workspace
// allocated and freed here).
double time_think_decode(const memattn::kernels::ThinKDecodeParams& p, int L, int iters, bool* ok, int split_keys = 0) {
  std::size_t ws_bytes = 0;
  void* ws = nullptr;
  if (memattn::cuda::think_decode_workspace_size(p, L, &ws_bytes, split_keys) != memattn::Status::kSuccess) *ok = false;
  if (ws_bytes) BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
  const double us = median_us(iters, [&] {
    if (memattn::cuda::think_decode(p, L, ws, ws_bytes, nullptr, split_keys) != memattn::Status::kSuccess) *ok = false;
  });
  if (ws) BENCH_CUDA(cudaFree(ws));
  return us;
}

// H2O scores of a decode over B x Hkv segments of L tokens (issue 5's fused scores): the kernel's
// raw logits and LSE (attached to p) and the epilogue's accumulators (evict_accumulate_scores,
// per-segment lengths L).
struct H2oScores {
  float *sc = nullptr, *lse = nullptr, *acc = nullptr;
  std::int32_t* lens = nullptr;
  memattn::kernels::EvictScoreParams e;
  H2oScores(memattn::kernels::ThinKDecodeParams* p, int B, int Hq, int Hkv, int L) {
    const int G = Hq / Hkv, S = B * Hkv;
    BENCH_CUDA(cudaMalloc(&sc, sizeof(float) * static_cast<std::size_t>(S) * G * L));
    BENCH_CUDA(cudaMalloc(&lse, sizeof(float) * B * Hq));
    BENCH_CUDA(cudaMalloc(&acc, sizeof(float) * static_cast<std::size_t>(S) * L));
    BENCH_CUDA(cudaMalloc(&lens, sizeof(std::int32_t) * S));
    BENCH_CUDA(cudaMemset(acc, 0, sizeof(float) * static_cast<std::size_t>(S) * L));
    const std::vector<std::int32_t> hl(S, L);
    BENCH_CUDA(cudaMemcpy(lens, hl.data(), sizeof(std::int32_t) * S, cudaMemcpyHostToDevice));
    p->scores = sc, p->scores_seg_stride = static_cast<long long>(G) * L, p->scores_row_stride = L, p->lse = lse;
    e.scores = sc;
    e.scores_stride[0] = static_cast<std::int64_t>(Hkv) * G * L, e.scores_stride[1] = static_cast<std::int64_t>(G) * L;
    e.scores_stride[2] = L;
    e.lse = lse, e.lse_stride[0] = Hq, e.lse_stride[1] = 0, e.lse_stride[2] = 1;
    e.seg_lens = lens, e.acc = acc;
    e.state_stride[0] = static_cast<std::int64_t>(Hkv) * L, e.state_stride[1] = L;
    e.batch = B, e.kv_heads = Hkv, e.group = G, e.q_tokens = 1, e.kv_capacity = L;
  }
  H2oScores(const H2oScores&) = delete;
  H2oScores& operator=(const H2oScores&) = delete;
  ~H2oScores() {
    for (void* ptr : {static_cast<void*>(sc), static_cast<void*>(lse), static_cast<void*>(acc), static_cast<void*>(lens)})
      cudaFree(ptr);
  }
  double epilogue_us(int iters, bool* ok) {
    return median_us(iters, [&] {
      if (memattn::cuda::evict_accumulate_scores(e, memattn::kernels::EvictScoreMode::kAccumulate, nullptr) !=
          memattn::Status::kSuccess)
        *ok = false;
    });
  }
};

// path 1: the tile kernel on rows of d_keep halves; 2: the lane-group kernel, 4: the fp16
// tensor-core kernel, on rows padded to a multiple of 8 halves. h2o (not null): also the decode
// writing raw logits + LSE (h2o[0], us) and the H2O epilogue after it (h2o[1], us).
double time_case(int B, int L, float lambda, int iters, bool* ok, float vlambda = 0.f, int path = 1, double* h2o = nullptr) {
  const int Hq = 32, Hkv = 8, D = 128, recent = 32;
  const int dk = D - static_cast<int>(lambda * D), n_old = L - recent, S = B * Hkv;
  const int stride = path >= 2 ? (dk + 7) / 8 * 8 : dk;
  const int dvk = D - static_cast<int>(vlambda * D), v_rows = vlambda > 0.f ? recent : L;
  const int vstride = path >= 2 ? (dvk + 7) / 8 * 8 : dvk;  // compact old value rows
  Half *k_old, *k_new, *v, *v_old = nullptr;
  std::uint8_t *ch, *vch = nullptr;
  int *no, *nn;
  float *q, *o;
  BENCH_CUDA(cudaMalloc(&k_old, sizeof(Half) * static_cast<std::size_t>(S) * n_old * stride));
  BENCH_CUDA(cudaMalloc(&k_new, sizeof(Half) * static_cast<std::size_t>(S) * recent * D));
  BENCH_CUDA(cudaMalloc(&v, sizeof(Half) * static_cast<std::size_t>(S) * v_rows * D));
  BENCH_CUDA(cudaMalloc(&ch, static_cast<std::size_t>(S) * dk));
  BENCH_CUDA(cudaMalloc(&no, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&nn, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&q, sizeof(float) * B * Hq * D));
  BENCH_CUDA(cudaMalloc(&o, sizeof(float) * B * Hq * D));
  fill<<<1024, 256>>>(k_old, static_cast<std::size_t>(S) * n_old * stride, 1);
  fill<<<1024, 256>>>(k_new, static_cast<std::size_t>(S) * recent * D, 2);
  fill<<<1024, 256>>>(v, static_cast<std::size_t>(S) * v_rows * D, 3);
  std::vector<std::uint8_t> hch(static_cast<std::size_t>(S) * dk);
  for (std::size_t i = 0; i < hch.size(); ++i) hch[i] = static_cast<std::uint8_t>((i % dk) * D / dk);
  std::vector<int> hno(S, n_old), hnn(S, recent);
  std::vector<float> hq(static_cast<std::size_t>(B) * Hq * D, 0.01f);
  BENCH_CUDA(cudaMemcpy(ch, hch.data(), hch.size(), cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(no, hno.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(nn, hnn.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(q, hq.data(), sizeof(float) * hq.size(), cudaMemcpyHostToDevice));
  memattn::kernels::ThinKDecodeParams p{k_old, static_cast<long long>(n_old) * stride, stride, ch, dk, k_new,
                                        static_cast<long long>(recent) * D, v, static_cast<long long>(L) * D, no, nn, q, o,
                                        B, Hq, Hkv, D, memattn::cuda::think_scale(D)};
  p.path = path;
  if (vlambda > 0.f) {
    BENCH_CUDA(cudaMalloc(&v_old, sizeof(Half) * static_cast<std::size_t>(S) * n_old * vstride));
    BENCH_CUDA(cudaMalloc(&vch, static_cast<std::size_t>(S) * dvk));
    fill<<<1024, 256>>>(v_old, static_cast<std::size_t>(S) * n_old * vstride, 4);
    std::vector<std::uint8_t> hv(static_cast<std::size_t>(S) * dvk);
    for (std::size_t i = 0; i < hv.size(); ++i) hv[i] = static_cast<std::uint8_t>((i % dvk) * D / dvk);
    BENCH_CUDA(cudaMemcpy(vch, hv.data(), hv.size(), cudaMemcpyHostToDevice));
    p.v_old = v_old;
    p.v_old_seg_stride = static_cast<long long>(n_old) * vstride;
    p.old_v_row_stride = vstride;
    p.v_channels = vch;
    p.dv_keep = dvk;
    p.v_seg_stride = static_cast<long long>(recent) * D;
  }
  const double us = time_think_decode(p, L, iters, ok);
  if (h2o != nullptr) {
    H2oScores sc(&p, B, Hq, Hkv, L);
    h2o[0] = time_think_decode(p, L, iters, ok);
    h2o[1] = sc.epilogue_us(iters, ok);
  }
  std::vector<float> out(static_cast<std::size_t>(B) * Hq * D);
  BENCH_CUDA(cudaMemcpy(out.data(), o, sizeof(float) * out.size(), cudaMemcpyDeviceToHost));
  for (float x : out) *ok = *ok && x == x;
  for (void* ptr : {static_cast<void*>(k_old), static_cast<void*>(k_new), static_cast<void*>(v), static_cast<void*>(ch),
                    static_cast<void*>(no), static_cast<void*>(nn), static_cast<void*>(q), static_cast<void*>(o),
                    static_cast<void*>(v_old), static_cast<void*>(vch)})
    if (ptr) BENCH_CUDA(cudaFree(ptr));
  return us;
}

// Random codes; every 16-bit meta word (scale, zero) set to 2^-4: finite, no NaN/Inf in the decode.
__global__ void fill_records(std::uint8_t* blocks, std::size_t records, memattn::quant::BlockLayout l, std::uint64_t seed) {
  const std::size_t n = records * l.bytes;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t off = i % l.bytes;
    const bool meta = (off >= l.km && off < l.vc) || off >= l.vm;
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z ^= z >> 29;
    blocks[i] = meta ? static_cast<std::uint8_t>(off % 2 ? 0x2C : 0x00) : static_cast<std::uint8_t>(z >> 17);
  }
}

// The KIVI cache's own decode (cuda::kivi_decode): kernel 0 the one-CTA-per-head call, 1 the
// split-KV call on CUDA cores, 2 on tensor cores (the composed cache's kernel over the records).
// append_us: also the decode quantize-append of one token per sequence at N = L (a step that
// flushes a block: issue 4's "< 5% of the decode step"). split_keys: the split call's forced
// tokens per split (0: its plan).
double time_kivi(int B, int L, int bits_k, int bits_v, int iters, bool* ok, double* bytes_read, int kernel = 0,
                 double* append_us = nullptr, int split_keys = 0) {
  const int Hq = 32, Hkv = 8, D = 128;
  memattn::quant::KvQuantConfig cfg;
  cfg.head_dim = D;
  cfg.bits_k = bits_k;
  cfg.bits_v = bits_v;
  cfg.group = 32;
  cfg.residual = 128;
  const memattn::quant::BlockLayout lay = memattn::quant::block_layout(cfg);
  const int nq = (L - cfg.residual) / cfg.group * cfg.group, max_blocks = nq / cfg.group + 1;
  const std::size_t records = static_cast<std::size_t>(B) * max_blocks * Hkv;
  const std::size_t ring = static_cast<std::size_t>(B) * (cfg.residual + cfg.group) * Hkv * D;
  std::uint8_t* blocks;
  Half *rk, *rv;
  int* n;
  float *q, *o;
  BENCH_CUDA(cudaMalloc(&blocks, records * lay.bytes));
  BENCH_CUDA(cudaMalloc(&rk, sizeof(Half) * ring));
  BENCH_CUDA(cudaMalloc(&rv, sizeof(Half) * ring));
  BENCH_CUDA(cudaMalloc(&n, sizeof(int) * B));
  BENCH_CUDA(cudaMalloc(&q, sizeof(float) * B * Hq * D));
  BENCH_CUDA(cudaMalloc(&o, sizeof(float) * B * Hq * D));
  fill_records<<<1024, 256>>>(blocks, records, lay, 5);
  fill<<<1024, 256>>>(rk, ring, 6);
  fill<<<1024, 256>>>(rv, ring, 7);
  std::vector<int> hn(B, L);
  std::vector<float> hq(static_cast<std::size_t>(B) * Hq * D, 0.01f);
  BENCH_CUDA(cudaMemcpy(n, hn.data(), sizeof(int) * B, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(q, hq.data(), sizeof(float) * hq.size(), cudaMemcpyHostToDevice));
  const memattn::kernels::KiviCacheView view{cfg, lay, blocks, rk, rv, Hkv, max_blocks};
  std::size_t ws_bytes = 0;
  void* ws = nullptr;
  if (kernel > 0) {
    if (memattn::cuda::kivi_decode_workspace_size(view, B, Hq, L, &ws_bytes, split_keys, kernel == 2) != memattn::Status::kSuccess) *ok = false;
    BENCH_CUDA(cudaMalloc(&ws, ws_bytes + 1));
  }
  const double us = median_us(iters, [&] {
    const memattn::Status st = kernel == 0 ? memattn::cuda::kivi_decode(view, q, o, n, B, Hq, nullptr)
                                           : memattn::cuda::kivi_decode(view, q, o, n, B, Hq, L, ws, ws_bytes, nullptr, split_keys, kernel == 2);
    if (st != memattn::Status::kSuccess) *ok = false;
  });
  if (ws != nullptr) BENCH_CUDA(cudaFree(ws));
  if (append_us != nullptr) {
    Half *k, *v;
    int* nb;
    std::uint32_t* flags;
    BENCH_CUDA(cudaMalloc(&k, sizeof(Half) * B * Hkv * D));
    BENCH_CUDA(cudaMalloc(&v, sizeof(Half) * B * Hkv * D));
    BENCH_CUDA(cudaMalloc(&nb, sizeof(int) * B));
    BENCH_CUDA(cudaMalloc(&flags, sizeof(std::uint32_t) * B));
    fill<<<64, 256>>>(k, static_cast<std::size_t>(B) * Hkv * D, 8);
    fill<<<64, 256>>>(v, static_cast<std::size_t>(B) * Hkv * D, 9);
    std::vector<int> before(B, L - 1);
    BENCH_CUDA(cudaMemcpy(nb, before.data(), sizeof(int) * B, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaMemset(flags, 0, sizeof(std::uint32_t) * B));
    *append_us = median_us(iters, [&] {
      if (memattn::cuda::kivi_append_decode(view, k, v, nb, flags, B, nullptr) != memattn::Status::kSuccess) *ok = false;
    });
    for (void* ptr : {static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(nb), static_cast<void*>(flags)})
      BENCH_CUDA(cudaFree(ptr));
  }
  std::vector<float> out(static_cast<std::size_t>(B) * Hq * D);
  BENCH_CUDA(cudaMemcpy(out.data(), o, sizeof(float) * out.size(), cudaMemcpyDeviceToHost));
  for (float x : out) *ok = *ok && x == x;
  for (void* ptr : {static_cast<void*>(blocks), static_cast<void*>(rk), static_cast<void*>(rv), static_cast<void*>(n),
                    static_cast<void*>(q), static_cast<void*>(o)})
    BENCH_CUDA(cudaFree(ptr));
  *bytes_read = static_cast<double>(B) * Hkv * (static_cast<double>(nq / cfg.group) * lay.bytes + (L - nq) * 2.0 * D * 2);
  return us;
}

__global__ void fill_words(std::uint32_t* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z ^= z >> 29;
    p[i] = static_cast<std::uint32_t>(z >> 17);
  }
}

// The composed cache h2o + think + kivi (issue 7) at λ = 0.4 and KIVI bits_k / bits_v: L - 128
// quantised tokens in full blocks of 32 (kept key channels only), no fp16 old rows, a full-width
// tail of 128 (KIVI's residual), every meta word 2^-4. With scores: the kernel also writes the raw
// logits and LSE and the H2O epilogue (evict_accumulate_scores, per-segment lengths) runs after
// it; *epi_us is that epilogue's median time. *bytes_read: codes + meta + tail + scores written.
// path 1: tile kernel, d_keep 77 (ThinK's granularity 1); path 2: lane-group kernel, d_keep 80
// (granularity 8); path 3: tensor-core kernel over the KIVI blocks + lane-group kernel over the
// tail, d_keep 80; path 4: tensor cores over the tail too. lambda 0: no pruning (KIVI alone through the composed decode, d_keep 128).
// split_keys > 0 forces the split size (0: the wrapper's choice); cp_async: path 3's stages by
// cp.async pieces instead of bulk copies (ThinKDecodeParams::mma_cp_async); unpaired: path 3
// without its paired tiles (mma_unpaired).
double time_composed(int B, int L, int bits_k, int bits_v, bool scores, int path, int iters, bool* ok, double* bytes_read,
                     double* epi_us, float lambda = 0.4f, int split_keys = 0, bool cp_async = false, bool unpaired = false) {
  const int Hq = 32, Hkv = 8, D = 128, G = Hq / Hkv, tail = 128, qg = 32, S = B * Hkv;
  const int dk77 = D - static_cast<int>(lambda * D), dk = path >= 2 ? (dk77 + 7) / 8 * 8 : dk77;
  const int nq = L - tail, blocks = nq / qg;
  const int kbw = (qg * dk * bits_k + 31) / 32, vw = (D * bits_v + 31) / 32, ngv = D / qg;
  std::uint32_t *kq, *vq;
  std::uint16_t *kqm, *vqm;
  Half *k_old, *k_new, *v;
  std::uint8_t* ch;
  int *nqd, *no, *nn;
  float *q, *o;
  BENCH_CUDA(cudaMalloc(&kq, sizeof(std::uint32_t) * static_cast<std::size_t>(S) * blocks * kbw));
  BENCH_CUDA(cudaMalloc(&kqm, sizeof(std::uint16_t) * static_cast<std::size_t>(S) * blocks * 2 * dk));
  BENCH_CUDA(cudaMalloc(&vq, sizeof(std::uint32_t) * static_cast<std::size_t>(S) * nq * vw));
  BENCH_CUDA(cudaMalloc(&vqm, sizeof(std::uint16_t) * static_cast<std::size_t>(S) * nq * 2 * ngv));
  BENCH_CUDA(cudaMalloc(&k_old, sizeof(Half)));
  BENCH_CUDA(cudaMalloc(&k_new, sizeof(Half) * static_cast<std::size_t>(S) * tail * D));
  BENCH_CUDA(cudaMalloc(&v, sizeof(Half) * static_cast<std::size_t>(S) * tail * D));
  BENCH_CUDA(cudaMalloc(&ch, static_cast<std::size_t>(S) * dk));
  BENCH_CUDA(cudaMalloc(&nqd, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&no, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&nn, sizeof(int) * S));
  BENCH_CUDA(cudaMalloc(&q, sizeof(float) * B * Hq * D));
  BENCH_CUDA(cudaMalloc(&o, sizeof(float) * B * Hq * D));
  fill_words<<<1024, 256>>>(kq, static_cast<std::size_t>(S) * blocks * kbw, 8);
  fill_words<<<1024, 256>>>(vq, static_cast<std::size_t>(S) * nq * vw, 9);
  BENCH_CUDA(cudaMemset(kqm, 0x2C, sizeof(std::uint16_t) * static_cast<std::size_t>(S) * blocks * 2 * dk));  // 0x2C2C ~ 2^-4
  BENCH_CUDA(cudaMemset(vqm, 0x2C, sizeof(std::uint16_t) * static_cast<std::size_t>(S) * nq * 2 * ngv));
  fill<<<1024, 256>>>(k_new, static_cast<std::size_t>(S) * tail * D, 10);
  fill<<<1024, 256>>>(v, static_cast<std::size_t>(S) * tail * D, 11);
  std::vector<std::uint8_t> hch(static_cast<std::size_t>(S) * dk);
  for (std::size_t i = 0; i < hch.size(); ++i) hch[i] = static_cast<std::uint8_t>((i % dk) * D / dk);
  std::vector<int> hq_n(S, nq), h0(S, 0), ht(S, tail);
  std::vector<float> hq(static_cast<std::size_t>(B) * Hq * D, 0.01f);
  BENCH_CUDA(cudaMemcpy(ch, hch.data(), hch.size(), cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(nqd, hq_n.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(no, h0.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(nn, ht.data(), sizeof(int) * S, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(q, hq.data(), sizeof(float) * hq.size(), cudaMemcpyHostToDevice));
  memattn::kernels::ThinKDecodeParams p{k_old, 0, dk, ch, dk, k_new, static_cast<long long>(tail) * D, v,
                                        static_cast<long long>(tail) * D, no, nn, q, o, B, Hq, Hkv, D,
                                        memattn::cuda::think_scale(D)};
  p.n_q = nqd;
  p.kq = kq, p.kq_seg_stride = static_cast<long long>(blocks) * kbw, p.kq_block_words = kbw;
  p.kqm = kqm, p.kqm_seg_stride = static_cast<long long>(blocks) * 2 * dk;
  p.vq = vq, p.vq_seg_stride = static_cast<long long>(nq) * vw, p.v_words = vw;
  p.vqm = vqm, p.vqm_seg_stride = static_cast<long long>(nq) * 2 * ngv;
  p.qgroup = qg, p.bits_k = bits_k, p.bits_v = bits_v, p.v_group = qg;
  p.path = path;
  p.mma_cp_async = cp_async ? 1 : 0;
  p.mma_unpaired = unpaired ? 1 : 0;
  double us = 0;
  *epi_us = 0;
  if (scores) {
    H2oScores h2o(&p, B, Hq, Hkv, L);
    us = time_think_decode(p, L, iters, ok, split_keys);
    *epi_us = h2o.epilogue_us(iters, ok);
  } else {
    us = time_think_decode(p, L, iters, ok, split_keys);
  }
  std::vector<float> out(static_cast<std::size_t>(B) * Hq * D);
  BENCH_CUDA(cudaMemcpy(out.data(), o, sizeof(float) * out.size(), cudaMemcpyDeviceToHost));
  for (float x : out) *ok = *ok && x == x;
  for (void* ptr : {static_cast<void*>(kq), static_cast<void*>(kqm), static_cast<void*>(vq), static_cast<void*>(vqm),
                    static_cast<void*>(k_old), static_cast<void*>(k_new), static_cast<void*>(v), static_cast<void*>(ch),
                    static_cast<void*>(nqd), static_cast<void*>(no), static_cast<void*>(nn), static_cast<void*>(q),
                    static_cast<void*>(o)})
    if (ptr) BENCH_CUDA(cudaFree(ptr));
  *bytes_read = static_cast<double>(S) * (4.0 * blocks * kbw + 4.0 * blocks * dk + 4.0 * nq * vw + 4.0 * nq * ngv +
                                          2.0 * tail * D * 2 + (scores ? 4.0 * G * L : 0.0));
  return us;
}

// Device-to-device copy bandwidth (read + write bytes / time, median): the achievable HBM rate the
// composed rows' pct_copy_bw compares against (issue 7's gate: >= 80% on the bytes read).
double copy_gbps(bool smoke, int iters) {
  const std::size_t bytes = smoke ? (std::size_t{64} << 20) : (std::size_t{1} << 30);
  void *src = nullptr, *dst = nullptr;
  BENCH_CUDA(cudaMalloc(&src, bytes));
  BENCH_CUDA(cudaMalloc(&dst, bytes));
  BENCH_CUDA(cudaMemset(src, 1, bytes));
  const double us = median_us(iters, [&] { BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  BENCH_CUDA(cudaFree(src));
  BENCH_CUDA(cudaFree(dst));
  return 2.0 * static_cast<double>(bytes) / (us * 1e-6) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  bool smoke = false;
  int iters = 20;
  int shape_b = 0, shape_l = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--smoke")) smoke = true, iters = 2;
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--shape") && i + 1 < argc && std::sscanf(argv[++i], "%d:%d", &shape_b, &shape_l) != 2) {
      std::printf("--shape wants B:L\n");
      return 2;
    }
  }
  bool ok = true;
  const double copy = copy_gbps(smoke, iters);
  // mma_min_ctas: path 3's __launch_bounds__ (bench_think_decode_cuda_ctas3 is built with 3)
  std::printf("{\"bench\": \"copy\", \"GBps\": %.1f, \"mma_min_ctas\": %d}\n", copy, memattn::kernels::think_mma::kMinCtas);
  const std::vector<std::pair<int, int>> shapes =
      shape_b > 0 && shape_l > 0 ? std::vector<std::pair<int, int>>{{shape_b, shape_l}}
      : smoke                    ? std::vector<std::pair<int, int>>{{2, 256}}
                                 : std::vector<std::pair<int, int>>{{16, 4096}, {16, 65536}, {1, 65536}};
  // KIVI's own decode: split-KV on tensor cores and on CUDA cores; the one-CTA call (4/2 only,
  // ~100x slower: few iterations)
  auto kivi_rows = [&](int B, int L, double base, bool one_cta) {
    for (auto [bk, bv] : {std::pair<int, int>{4, 2}, std::pair<int, int>{2, 2}, std::pair<int, int>{4, 4}})
      for (int kernel : {2, 1, 0}) {
        if (kernel == 0 && (!one_cta || bk != 4 || bv != 2)) continue;
        double kb = 0, app = 0;
        const double kus = time_kivi(B, L, bk, bv, kernel == 0 ? 3 : iters, &ok, &kb, kernel, kernel == 2 ? &app : nullptr);
        const char* names[] = {"cta", "split", "mma"};
        char extra[96] = "";
        if (app > 0) std::snprintf(extra, sizeof extra, ", \"append_us\": %.2f, \"append_over_decode\": %.4f", app, app / kus);
        std::printf("{\"bench\": \"kivi_decode\", \"kernel\": \"%s\", \"B\": %d, \"L\": %d, \"kbits\": %d, \"vbits\": %d, "
                    "\"us\": %.2f, \"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f, \"pct_copy_bw\": %.1f%s}\n",
                    names[kernel], B, L, bk, bv, kus, kus / base, kb, kb / kus * 1e-3, 100.0 * kb / kus * 1e-3 / copy, extra);
      }
    // B = 1 leaves most SMs idle unless the splits are short: the plan's 2048-token splits give 1.3
    // waves of the tensor-core kernel at 128K (3 CTAs per SM); forced sizes incl. one wave (1344 /
    // 2688 tokens at 64K / 128K: 49 splits x 8 heads <= 396 slots)
    if (B == 1)
      for (int keys : {1024, 1344, 2688, 4096}) {
        if (keys >= L) continue;
        double kb = 0;
        const double kus = time_kivi(B, L, 2, 2, iters, &ok, &kb, 2, nullptr, keys);
        std::printf("{\"bench\": \"kivi_decode\", \"kernel\": \"mma\", \"split_keys\": %d, \"B\": %d, \"L\": %d, \"kbits\": 2, "
                    "\"vbits\": 2, \"us\": %.2f, \"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f, \"pct_copy_bw\": %.1f}\n",
                    keys, B, L, kus, kus / base, kb, kb / kus * 1e-3, 100.0 * kb / kus * 1e-3 / copy);
      }
  };
  for (auto [B, L] : shapes) {
    const double base = time_case(B, L, 0.f, iters, &ok);  // tile kernel, lambda 0: the rows' ratio base
    for (int path : {1, 2, 4}) {
      // lanes / mma16 at lambda 0 and 0.4 also with H2O scores (raw logits + LSE, then the epilogue)
      double h2o0[2] = {0, 0};
      const double base_path = path == 1 ? base : time_case(B, L, 0.f, iters, &ok, 0.f, path, h2o0);
      for (float lambda : {0.f, 0.4f, 0.5f}) {
        double h2o[2] = {0, 0};
        const double us = lambda == 0.f ? base_path
                                        : time_case(B, L, lambda, iters, &ok, 0.f, path, path >= 2 && lambda < 0.45f ? h2o : nullptr);
        const double* hs = lambda == 0.f ? h2o0 : h2o;
        const int dk = 128 - static_cast<int>(lambda * 128), stride = path >= 2 ? (dk + 7) / 8 * 8 : dk;
        const double bytes = 2.0 * B * 8 * ((L - 32.0) * stride + 32.0 * 128 + L * 128.0);
        char extra[160] = "";
        if (hs[0] > 0)
          std::snprintf(extra, sizeof extra, ", \"h2o_decode_us\": %.2f, \"h2o_epilogue_us\": %.2f, \"h2o_overhead\": %.3f",
                        hs[0], hs[1], (hs[0] + hs[1]) / us - 1.0);
        std::printf("{\"bench\": \"think_decode\", \"kernel\": \"%s\", \"B\": %d, \"L\": %d, \"prune\": %.2f, "
                    "\"d_keep\": %d, \"us\": %.2f, \"ratio_vs_prune0\": %.3f, \"ratio_vs_tile_prune0\": %.3f, "
                    "\"bytes\": %.0f, \"GBps\": %.1f%s}\n",
                    path == 1 ? "tile" : path == 2 ? "lanes" : "mma16", B, L, lambda, dk, us, us / base_path, us / base, bytes,
                    bytes / us * 1e-3, extra);
      }
    }
    // value extension (vprune 0.4 with prune 0.4): the tile kernel and path 4, against the tile
    // kernel's lambda = 0
    for (int path : {1, 4}) {
      const double us = time_case(B, L, 0.4f, iters, &ok, 0.4f, path);
      const int dk = 128 - static_cast<int>(0.4f * 128), dk_read = path >= 2 ? (dk + 7) / 8 * 8 : dk;
      const double bytes = 2.0 * B * 8 * ((L - 32.0) * 2 * dk_read + 32.0 * 256);
      std::printf("{\"bench\": \"think_decode\", \"kernel\": \"%s\", \"B\": %d, \"L\": %d, \"prune\": 0.40, \"vprune\": 0.40, "
                  "\"d_keep\": %d, \"us\": %.2f, \"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f}\n",
                  path == 1 ? "tile" : "mma16", B, L, dk, us, us / base, bytes, bytes / us * 1e-3);
    }
    // kernels: tile, lanes, mma (tensor cores over the KIVI blocks, lane groups over the tail),
    // mma+mma16 (tensor cores over both, path 4); with and without H2O scores; the mma kernel also
    // without pruning (KIVI alone through the composed decode)
    const char* kernel_names[] = {"tile", "lanes", "mma", "mma+mma16"};
    for (int c = 0; c < 10; ++c) {
      const bool scores = c % 2 == 1;
      const int path = c < 6 ? 1 + c / 2 : (c < 8 ? 3 : 4);
      const float lambda = c < 6 || c >= 8 ? 0.4f : 0.f;
      double cb = 0, epi = 0;
      const double cus = time_composed(B, L, 4, 2, scores, path, iters, &ok, &cb, &epi, lambda);
      const char* spec = lambda > 0.f ? (scores ? "h2o+think:prune=0.4+kivi:kbits=4,vbits=2" : "think:prune=0.4+kivi:kbits=4,vbits=2")
                                      : (scores ? "h2o+kivi:kbits=4,vbits=2" : "kivi:kbits=4,vbits=2");
      std::printf("{\"bench\": \"composed_decode\", \"kernel\": \"%s\", \"B\": %d, \"L\": %d, \"spec\": \"%s\", \"us\": %.2f, "
                  "\"epilogue_us\": %.2f, \"ratio_vs_prune0\": %.3f, \"bytes\": %.0f, \"GBps\": %.1f, \"pct_copy_bw\": %.1f}\n",
                  kernel_names[path - 1], B, L, spec, cus, epi, cus / base, cb, cb / cus * 1e-3, 100.0 * cb / cus * 1e-3 / copy);
    }
    // the tensor-core path at forced split sizes (the wrapper plans one wave of its CTAs; split
    // size trades the per-split set-up against waves and combine), and (split_keys 0, -1) with its
    // stages by cp.async pieces instead of bulk copies (the sm_90 pipeline's A/B) or without its
    // paired tiles (one q' set-up per tile again)
    for (int keys : {0, -1, 2048, 4096, 8192}) {
      if (keys >= L) continue;
      double cb = 0, epi = 0;
      const double cus = time_composed(B, L, 4, 2, false, 3, iters, &ok, &cb, &epi, 0.4f, keys > 0 ? keys : 0, keys == 0, keys == -1);
      std::printf("{\"bench\": \"composed_decode\", \"kernel\": \"%s\", \"split_keys\": %d, \"B\": %d, \"L\": %d, "
                  "\"spec\": \"think:prune=0.4+kivi:kbits=4,vbits=2\", \"us\": %.2f, \"epilogue_us\": 0, \"ratio_vs_prune0\": %.3f, "
                  "\"bytes\": %.0f, \"GBps\": %.1f, \"pct_copy_bw\": %.1f}\n",
                  keys == 0 ? "mma_cp_async" : (keys < 0 ? "mma_unpaired" : "mma"), keys > 0 ? keys : 0, B, L, cus, cus / base, cb,
                  cb / cus * 1e-3, 100.0 * cb / cus * 1e-3 / copy);
    }
    // after the composed rows: device-check's ncu steps profile the first think_decode_mma_kernel
    // launches, the composed cache's
    kivi_rows(B, L, base, true);
  }
  // issue 4's second shape (B 1 x 128K; SDPA's peer rows have it), KIVI rows only
  if (!smoke && shape_b == 0) kivi_rows(1, 131072, time_case(1, 131072, 0.f, iters, &ok), false);
  return ok ? 0 : 1;
}
