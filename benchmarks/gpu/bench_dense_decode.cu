// GPU dense decode benchmark: memattn::cuda::dense_decode on GQA decode shapes (32 query / 8 KV
// heads, head_dim 128, bf16, one new token), timed with CUDA events around each launch (L2
// flushed before each, warm-up first, median of --iters). One JSON line per shape on stdout (and
// in --json PATH): shape, dtype, microseconds, effective TB/s of K+V bytes actually read
// (B * Hkv * L * D * 2 tensors * 2 bytes / time), num_splits. benchmarks/gpu/sdpa_peer.py times
// PyTorch SDPA on the same shapes; scripts/device-check.sh prints the ratio.
//
//   bench_dense_decode_cuda [--json PATH] [--iters N] [--warmup N] [--sweep] [--smoke] [--shape B:L]
//     --shape  only that shape (e.g. 16:65536, for a profiler run)
//     --sweep  also time forced split counts per shape (lines with "variant": "splits=N")
//     --smoke  tiny shapes, 2 iterations (ctest; checks that everything runs and is finite)
// Each shape also times the fused H2O scores ("variant": "h2o_scores", issue 5's <= 10% gate; with
// fp16 logits "h2o_scores_f16"; the decode writing logits alone "scores_only[_f16]"; the same
// with every (sequence, KV head) writing over one head's rows, which stay in L2, "scores_only_l2";
// cuda::decode_accumulate (decode + epilogue over workspace fp16 logits) "h2o_accumulate"; the
// suffix "_ef": K and V streamed with an L2 evict-first policy, DenseDecodeTuning::kv_evict_first)
// and the compaction of the whole cache to a 25% budget ("bench": "evict_compact", < one decode step).
// Exits 77 when no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "memattn/cuda/decode_accumulate.cuh"
#include "memattn/cuda/dense_decode.cuh"
#include "memattn/cuda/evict.cuh"
#include "memattn/cuda/evict_scores.cuh"
#include "bench_cuda_check.cuh"

namespace {

using memattn::BFloat16;
using memattn::Status;
namespace att = memattn::attention;
namespace mc = memattn::cuda;


__global__ void fill_uniform(BFloat16* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.f / 16777216.f);  // [0, 1)
    p[i] = memattn::float_to_bfloat16(2.f * u - 1.f);
  }
}

__global__ void count_nonfinite(const BFloat16* p, std::size_t n, unsigned* bad) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    if (!isfinite(memattn::bfloat16_to_float(p[i]))) atomicAdd(bad, 1u);
  }
}

struct Shape {
  int B, L;
};

struct Options {
  std::string json_path;
  int iters = 50;
  int warmup = 5;
  bool sweep = false;
  bool smoke = false;
  int only_b = 0, only_l = 0;  // --shape B:L (0: every shape)
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Device {
  cudaDeviceProp prop{};
  int sms = 0;
  int l2_bytes = 0;
};

// Warm-up, then --iters timed calls of step(stream), each after before(stream) (untimed set-up) and
// an L2 flush (cold L2: K/V of the small shapes would otherwise partly stay in the 50-60 MB L2).
// Fills *us with per-call microseconds unless a call fails; returns the first failing Status.
template <class Step, class Before>
Status time_steps(const Options& opt, cudaStream_t stream, unsigned char* flush, std::size_t flush_bytes, Step&& step,
                  Before&& before, std::vector<double>* us) {
  Status st = Status::kSuccess;
  for (int i = 0; i < opt.warmup && st == Status::kSuccess; ++i) {
    before(stream);
    st = step(stream);
  }
  std::vector<cudaEvent_t> ev(2 * static_cast<std::size_t>(opt.iters));
  for (auto& e : ev) BENCH_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < opt.iters && st == Status::kSuccess; ++i) {
    before(stream);
    BENCH_CUDA(cudaMemsetAsync(flush, i & 0xff, flush_bytes, stream));
    BENCH_CUDA(cudaEventRecord(ev[2 * i], stream));
    st = step(stream);
    BENCH_CUDA(cudaEventRecord(ev[2 * i + 1], stream));
  }
  BENCH_CUDA(cudaStreamSynchronize(stream));
  BENCH_CUDA(cudaGetLastError());
  us->clear();
  for (int i = 0; i < opt.iters && st == Status::kSuccess; ++i) {
    float ms = 0.f;
    BENCH_CUDA(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    us->push_back(1000.0 * ms);
  }
  for (auto& e : ev) BENCH_CUDA(cudaEventDestroy(e));
  return st;
}

// Diagnostic of issue 5's fused-score overhead: the decode writing its fp32 logits with every
// (sequence, KV head) over the same G x L rows (scores strides 0 over b and h: 1 MiB at L = 64K,
// resident in L2), so the stores never reach HBM. The wrapper refuses such aliased output, so this
// replays its launch (cuda/dense_decode.cuh, detail::prepare + launch_params) on params it edits. Against
// "scores_only" (same stores, all reaching HBM) it separates the stores' cost inside the kernel
// from their DRAM traffic. The logits it leaves are garbage (racing writes); only the time counts.
template <class T>
Status decode_logits_in_l2(const att::DecodeArgs<T>& a, void* ws, std::size_t ws_bytes, cudaStream_t stream,
                           const mc::DenseDecodeTuning& tuning) {
  mc::DenseDecodePlan pl;
  memattn::kernels::DenseDecodeParams p;
  const Status st = mc::detail::prepare(a, ws, ws_bytes, tuning, &p, &pl);
  if (st != Status::kSuccess) return st;
  p.scores_stride[0] = p.scores_stride[1] = 0;
  return mc::detail::launch_params<T>(p, pl, stream);
}

// Times one configuration; returns false on a memattn error (printed as a JSON line).
// h2o: also the fused eviction scores (raw logits + LSE from the decode, then the H2O epilogue
// over an fp32 accumulator), timed together: issue 5's "<= 10% over plain decode" gate;
// epilogue = false times the decode that writes the logits alone (the breakdown); half_logits
// writes and reads them as fp16 (DecodeArgs::scores_half); logits_in_l2 times decode_logits_in_l2
// (no epilogue).
bool run_one(const Options& opt, const Device& dev, const Shape& s, const mc::DenseDecodeTuning& tuning,
             const char* variant, BFloat16* q, BFloat16* k, BFloat16* v, BFloat16* o, unsigned char* flush,
             std::size_t flush_bytes, FILE* json, bool h2o = false, bool epilogue = true, bool half_logits = false,
             bool logits_in_l2 = false, bool accumulate = false) {
  const int Hq = 32, Hkv = 8, D = 128, Tq = 1;
  att::DecodeArgs<BFloat16> a;
  a.q = memattn::make_view<4>(static_cast<const BFloat16*>(q), {s.B, Tq, Hq, D});
  a.k_cache = memattn::make_view<4>(static_cast<const BFloat16*>(k), {s.B, Hkv, s.L, D});
  a.v_cache = memattn::make_view<4>(static_cast<const BFloat16*>(v), {s.B, Hkv, s.L, D});
  a.o = memattn::make_view<4>(o, {s.B, Tq, Hq, D});
  float *lse = nullptr, *acc = nullptr;
  void* scores = nullptr;
  if (h2o) {
    const int G = Hq / Hkv;
    BENCH_CUDA(cudaMalloc(&lse, static_cast<std::size_t>(s.B) * Tq * Hq * sizeof(float)));
    BENCH_CUDA(cudaMalloc(&scores, static_cast<std::size_t>(s.B) * Hkv * Tq * G * s.L * (half_logits ? 2 : 4)));
    BENCH_CUDA(cudaMalloc(&acc, static_cast<std::size_t>(s.B) * Hkv * s.L * sizeof(float)));
    BENCH_CUDA(cudaMemset(acc, 0, static_cast<std::size_t>(s.B) * Hkv * s.L * sizeof(float)));
    a.lse = memattn::make_view<3>(lse, {s.B, Tq, Hq});
    if (accumulate) {
      // cuda::decode_accumulate owns its (fp16) logits
    } else if (half_logits) a.scores_half = memattn::make_view<4>(static_cast<memattn::Half*>(scores), {s.B, Hkv, Tq * G, s.L});
    else a.scores = memattn::make_view<4>(static_cast<float*>(scores), {s.B, Hkv, Tq * G, s.L});
  }
  void* ws = nullptr;
  std::size_t ws_bytes = 0;
  auto ws_ptr = [&] { return ws; };
  auto ws_size = [&] { return ws_bytes; };
  memattn::kernels::EvictScoreParams ep = mc::evict_score_params(a, 1.f, 0);
  ep.acc = acc;
  ep.state_stride[0] = static_cast<std::int64_t>(Hkv) * s.L;
  ep.state_stride[1] = s.L;
  mc::DecodeScoreState state;
  state.acc = acc;
  state.stride[0] = ep.state_stride[0];
  state.stride[1] = ep.state_stride[1];
  auto step = [&](cudaStream_t st_) {
    if (accumulate) return mc::decode_accumulate(a, state, ws_ptr(), ws_size(), st_, tuning);
    Status r = logits_in_l2 ? decode_logits_in_l2(a, ws_ptr(), ws_size(), st_, tuning)
                            : mc::dense_decode(a, ws_ptr(), ws_size(), st_, tuning);
    if (r == Status::kSuccess && h2o && epilogue && !logits_in_l2) r = mc::evict_accumulate_scores(ep, memattn::kernels::EvictScoreMode::kAccumulate, st_);
    return r;
  };

  char head[512];
  std::snprintf(head, sizeof(head),
                "{\"bench\":\"dense_decode\",\"impl\":\"memattn\",\"variant\":\"%s\",\"shape\":{\"B\":%d,\"L\":%d,"
                "\"Hq\":%d,\"Hkv\":%d,\"D\":%d,\"Tq\":%d},\"dtype\":\"bf16\",\"device\":\"%s\",\"sms\":%d",
                variant, s.B, s.L, Hq, Hkv, D, Tq, dev.prop.name, dev.sms);
  auto emit = [&](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (json) {
      std::fprintf(json, "%s\n", line.c_str());
      std::fflush(json);
    }
  };

  mc::DenseDecodePlan plan;
  Status st = mc::dense_decode_plan(a, &plan, tuning);
  if (st == Status::kSuccess)
    st = accumulate ? mc::decode_accumulate_workspace_size(a, &ws_bytes, tuning) : mc::dense_decode_workspace_size(a, &ws_bytes, tuning);
  if (st != Status::kSuccess) {
    emit(std::string(head) + ",\"error\":\"" + memattn::status_message(st) + "\"}");
    return false;
  }
  if (ws_bytes) BENCH_CUDA(cudaMalloc(&ws, ws_bytes));

  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<double> us;
  st = time_steps(opt, stream, flush, flush_bytes, step, [](cudaStream_t) {}, &us);

  // The output must be finite (random data): guards against timing a broken kernel.
  unsigned* bad = nullptr;
  unsigned hbad = 0;
  BENCH_CUDA(cudaMalloc(&bad, sizeof(unsigned)));
  BENCH_CUDA(cudaMemsetAsync(bad, 0, sizeof(unsigned), stream));
  const std::size_t no = static_cast<std::size_t>(s.B) * Tq * Hq * D;
  count_nonfinite<<<64, 256, 0, stream>>>(o, no, bad);
  BENCH_CUDA(cudaMemcpyAsync(&hbad, bad, sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
  BENCH_CUDA(cudaStreamSynchronize(stream));
  BENCH_CUDA(cudaFree(bad));
  BENCH_CUDA(cudaStreamDestroy(stream));
  if (ws) BENCH_CUDA(cudaFree(ws));
  if (h2o) {
    BENCH_CUDA(cudaFree(lse));
    BENCH_CUDA(cudaFree(scores));
    BENCH_CUDA(cudaFree(acc));
  }

  if (st != Status::kSuccess) {
    emit(std::string(head) + ",\"error\":\"" + memattn::status_message(st) + "\"}");
    return false;
  }
  const double kv_bytes = static_cast<double>(s.B) * Hkv * s.L * D * 2.0 * sizeof(BFloat16);
  const double med = median(us);
  const double best = *std::min_element(us.begin(), us.end());
  char tail[768];
  std::snprintf(tail, sizeof(tail),
                ",\"us\":%.3f,\"us_min\":%.3f,\"tbps\":%.4f,\"kv_bytes\":%.0f,\"num_splits\":%d,\"keys_per_split\":%d,"
                "\"row_tile\":%d,\"decode_ctas\":%lld,\"workspace_bytes\":%zu,\"iters\":%d,\"nonfinite\":%u}",
                med, best, kv_bytes / (med * 1e-6) / 1e12, kv_bytes, plan.num_splits, plan.keys_per_split,
                plan.row_tile, static_cast<long long>(plan.decode_ctas), ws_bytes, opt.iters, hbad);
  emit(std::string(head) + tail);
  return hbad == 0;
}

__global__ void fill_compact_inputs(float* scores, std::int32_t* pos, std::int64_t n, int L, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = static_cast<std::uint64_t>(i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    scores[i] = static_cast<float>(z >> 40) * (1.f / 16777216.f);
    pos[i] = static_cast<std::int32_t>(i % L);
  }
}

__global__ void fill_i32(std::int32_t* p, int n, std::int32_t v) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] = v;
}

// Compaction of the whole cache to a 25% budget (issue 5's "< one decode step" gate): the
// per-(sequence, KV head) top-k over fp32 scores (sinks 4, recent 32 protected), then either the
// out-of-place gather of K, V, positions and the fp32 score state, or (holes) the in-place hole
// filling of the same four arrays (only kept rows beyond the budget move; positions and scores are
// restored before each timed step, untimed). Median of --iters, cold L2.
// Returns false on an error or when a segment does not keep exactly the budget.
bool run_compact(const Options& opt, const Device& dev, const Shape& s, BFloat16* k, BFloat16* v, bool holes,
                 unsigned char* flush, std::size_t flush_bytes, FILE* json) {
  const int Hkv = 8, D = 128, segs = s.B * Hkv, C = s.L / 4;
  const std::int64_t n = static_cast<std::int64_t>(segs) * s.L, nc = static_cast<std::int64_t>(segs) * C;
  float *scores, *scores_out, *scores0;
  std::int32_t *pos, *pos_out, *pos0, *len, *budget, *t_cur, *keep, *keep_count, *err;
  BFloat16 *k_out, *v_out;
  BENCH_CUDA(cudaMalloc(&scores, n * sizeof(float)));
  BENCH_CUDA(cudaMalloc(&scores_out, nc * sizeof(float)));
  BENCH_CUDA(cudaMalloc(&scores0, n * sizeof(float)));
  BENCH_CUDA(cudaMalloc(&pos0, n * sizeof(std::int32_t)));
  BENCH_CUDA(cudaMalloc(&pos, n * sizeof(std::int32_t)));
  BENCH_CUDA(cudaMalloc(&pos_out, nc * sizeof(std::int32_t)));
  BENCH_CUDA(cudaMalloc(&keep, n * sizeof(std::int32_t)));
  BENCH_CUDA(cudaMalloc(&len, 5 * segs * sizeof(std::int32_t)));
  budget = len + segs;
  t_cur = len + 2 * segs;
  keep_count = len + 3 * segs;
  err = len + 4 * segs;
  BENCH_CUDA(cudaMalloc(&k_out, nc * D * sizeof(BFloat16)));
  BENCH_CUDA(cudaMalloc(&v_out, nc * D * sizeof(BFloat16)));
  fill_compact_inputs<<<1024, 256>>>(scores0, pos0, n, s.L, 7);
  fill_i32<<<1, 256>>>(len, segs, s.L);
  fill_i32<<<1, 256>>>(budget, segs, C);
  fill_i32<<<1, 256>>>(t_cur, segs, s.L - 1);
  BENCH_CUDA(cudaMemset(err, 0, segs * sizeof(std::int32_t)));
  BENCH_CUDA(cudaGetLastError());

  memattn::kernels::EvictSelectParams p;
  p.scores = scores;
  p.pos = pos;
  p.len = len;
  p.budget = budget;
  p.t_cur = t_cur;
  p.stride = s.L;
  p.segments = segs;
  p.protect.n_sink = 4;
  p.protect.n_recent = 32;
  p.keep = keep;
  p.keep_count = keep_count;
  p.error = err;
  auto restore = [&](cudaStream_t st_) {
    BENCH_CUDA(cudaMemcpyAsync(scores, scores0, n * sizeof(float), cudaMemcpyDeviceToDevice, st_));
    BENCH_CUDA(cudaMemcpyAsync(pos, pos0, n * sizeof(std::int32_t), cudaMemcpyDeviceToDevice, st_));
  };
  auto step = [&](cudaStream_t st_) {
    Status r = mc::evict_select(p, st_);
    if (holes) {
      if (r == Status::kSuccess) r = mc::evict_fill_holes(k, s.L, D, segs, keep, s.L, keep_count, st_);
      if (r == Status::kSuccess) r = mc::evict_fill_holes(v, s.L, D, segs, keep, s.L, keep_count, st_);
      if (r == Status::kSuccess) r = mc::evict_fill_holes(pos, s.L, 1, segs, keep, s.L, keep_count, st_);
      if (r == Status::kSuccess) r = mc::evict_fill_holes(scores, s.L, 1, segs, keep, s.L, keep_count, st_);
      return r;
    }
    const BFloat16 *kc = k, *vc = v;
    if (r == Status::kSuccess) r = mc::evict_gather(kc, s.L, k_out, C, D, segs, keep, s.L, keep_count, st_);
    if (r == Status::kSuccess) r = mc::evict_gather(vc, s.L, v_out, C, D, segs, keep, s.L, keep_count, st_);
    if (r == Status::kSuccess) r = mc::evict_gather<std::int32_t>(pos, s.L, pos_out, C, 1, segs, keep, s.L, keep_count, st_);
    if (r == Status::kSuccess) r = mc::evict_gather<float>(scores, s.L, scores_out, C, 1, segs, keep, s.L, keep_count, st_);
    return r;
  };
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<double> us;
  const Status st = time_steps(opt, stream, flush, flush_bytes, step, restore, &us);
  std::vector<std::int32_t> counts(2 * static_cast<std::size_t>(segs));
  BENCH_CUDA(cudaMemcpy(counts.data(), keep_count, 2 * segs * sizeof(std::int32_t), cudaMemcpyDeviceToHost));
  int wrong = 0;  // keep_count must equal the budget and no segment may flag an error
  for (int i = 0; i < segs; ++i) wrong += counts[i] != C || counts[segs + i] != 0;
  BENCH_CUDA(cudaStreamDestroy(stream));
  for (void* ptr : {static_cast<void*>(scores), static_cast<void*>(scores_out), static_cast<void*>(pos),
                    static_cast<void*>(scores0), static_cast<void*>(pos0),
                    static_cast<void*>(pos_out), static_cast<void*>(keep), static_cast<void*>(len),
                    static_cast<void*>(k_out), static_cast<void*>(v_out)})
    BENCH_CUDA(cudaFree(ptr));

  char line[768];
  if (st != Status::kSuccess) {
    std::snprintf(line, sizeof(line), "{\"bench\":\"evict_compact\",\"shape\":{\"B\":%d,\"L\":%d},\"error\":\"%s\"}",
                  s.B, s.L, memattn::status_message(st));
  } else {
    const double moved = static_cast<double>(nc) * D * 2.0 * sizeof(BFloat16);  // K+V rows written (and read)
    std::snprintf(line, sizeof(line),
                  "{\"bench\":\"evict_compact\",\"impl\":\"memattn\",\"variant\":\"%s\",\"shape\":{\"B\":%d,"
                  "\"L\":%d,\"Hkv\":%d,\"D\":%d},\"budget\":%d,\"device\":\"%s\",\"us\":%.3f,\"us_min\":%.3f,"
                  "\"kv_bytes_moved\":%.0f,\"wrong_segments\":%d,\"iters\":%d}",
                  holes ? "select+fill_holes" : "select+gather", s.B, s.L, Hkv, D, C, dev.prop.name, median(us),
                  *std::min_element(us.begin(), us.end()), holes ? 0.0 : moved, wrong, opt.iters);
  }
  std::printf("%s\n", line);
  std::fflush(stdout);
  if (json) {
    std::fprintf(json, "%s\n", line);
    std::fflush(json);
  }
  return st == Status::kSuccess && wrong == 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      opt.json_path = argv[++i];
    } else if (a == "--iters" && i + 1 < argc) {
      opt.iters = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--warmup" && i + 1 < argc) {
      opt.warmup = std::max(0, std::atoi(argv[++i]));
    } else if (a == "--sweep") {
      opt.sweep = true;
    } else if (a == "--smoke") {
      opt.smoke = true;
    } else if (a == "--shape" && i + 1 < argc &&
               std::sscanf(argv[i + 1], "%d:%d", &opt.only_b, &opt.only_l) == 2 && opt.only_b > 0 && opt.only_l > 0) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--iters N] [--warmup N] [--sweep] [--smoke] [--shape B:L]\n",
                   argv[0]);
      return 2;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  Device dev;
  BENCH_CUDA(cudaGetDeviceProperties(&dev.prop, 0));
  dev.sms = dev.prop.multiProcessorCount;
  dev.l2_bytes = dev.prop.l2CacheSize;
  if (opt.smoke) {
    opt.iters = 2;
    opt.warmup = 1;
  }

  FILE* json = nullptr;
  if (!opt.json_path.empty()) {
    json = std::fopen(opt.json_path.c_str(), "w");
    if (!json) {
      std::fprintf(stderr, "cannot open %s\n", opt.json_path.c_str());
      return 2;
    }
  }

  std::vector<Shape> shapes = {{1, 32768}, {1, 131072}, {8, 32768}, {16, 65536}};
  if (opt.smoke) shapes = {{1, 1000}, {2, 4096}};
  if (opt.only_b > 0) shapes = {{opt.only_b, opt.only_l}};

  const std::size_t flush_bytes = std::max<std::size_t>(static_cast<std::size_t>(dev.l2_bytes) * 4, 64u << 20);
  unsigned char* flush = nullptr;
  BENCH_CUDA(cudaMalloc(&flush, flush_bytes));

  bool ok = true;
  for (const Shape& s : shapes) {
    const std::size_t nq = static_cast<std::size_t>(s.B) * 32 * 128;
    const std::size_t nkv = static_cast<std::size_t>(s.B) * 8 * s.L * 128;
    BFloat16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    BENCH_CUDA(cudaMalloc(&q, nq * sizeof(BFloat16)));
    BENCH_CUDA(cudaMalloc(&o, nq * sizeof(BFloat16)));
    BENCH_CUDA(cudaMalloc(&k, nkv * sizeof(BFloat16)));
    BENCH_CUDA(cudaMalloc(&v, nkv * sizeof(BFloat16)));
    fill_uniform<<<1024, 256>>>(q, nq, 1);
    fill_uniform<<<4096, 256>>>(k, nkv, 2);
    fill_uniform<<<4096, 256>>>(v, nkv, 3);
    BENCH_CUDA(cudaGetLastError());
    BENCH_CUDA(cudaDeviceSynchronize());

    mc::DenseDecodeTuning tuning;
    ok = run_one(opt, dev, s, tuning, "default", q, k, v, o, flush, flush_bytes, json) && ok;
    ok = run_one(opt, dev, s, tuning, "h2o_scores", q, k, v, o, flush, flush_bytes, json, true) && ok;
    // breakdown: the decode writing logits + LSE, without the H2O epilogue
    ok = run_one(opt, dev, s, tuning, "scores_only", q, k, v, o, flush, flush_bytes, json, true, false) && ok;
    // fp16 logits: half the bytes written by the decode and read by the epilogue
    ok = run_one(opt, dev, s, tuning, "h2o_scores_f16", q, k, v, o, flush, flush_bytes, json, true, true, true) && ok;
    ok = run_one(opt, dev, s, tuning, "scores_only_f16", q, k, v, o, flush, flush_bytes, json, true, false, true) && ok;
    // diagnostic: the same fp32 stores, kept in L2 (their cost without their HBM traffic)
    ok = run_one(opt, dev, s, tuning, "scores_only_l2", q, k, v, o, flush, flush_bytes, json, true, false, false, true) && ok;
    // L2 policy for the streamed K / V (the logits' write traffic cost +11% without one)
    mc::DenseDecodeTuning ef;
    ef.kv_evict_first = true;
    ok = run_one(opt, dev, s, ef, "default_ef", q, k, v, o, flush, flush_bytes, json) && ok;
    ok = run_one(opt, dev, s, ef, "h2o_scores_f16_ef", q, k, v, o, flush, flush_bytes, json, true, true, true) && ok;
    ok = run_one(opt, dev, s, ef, "scores_only_f16_ef", q, k, v, o, flush, flush_bytes, json, true, false, true) && ok;
    ok = run_one(opt, dev, s, ef, "h2o_scores_ef", q, k, v, o, flush, flush_bytes, json, true) && ok;
    ok = run_one(opt, dev, s, tuning, "h2o_accumulate", q, k, v, o, flush, flush_bytes, json, true, true, true, false, true) && ok;
    ok = run_one(opt, dev, s, ef, "h2o_accumulate_ef", q, k, v, o, flush, flush_bytes, json, true, true, true, false, true) && ok;
    ok = run_compact(opt, dev, s, k, v, false, flush, flush_bytes, json) && ok;
    ok = run_compact(opt, dev, s, k, v, true, flush, flush_bytes, json) && ok;
    if (opt.sweep) {
      for (int splits : {1, 8, 16, 32, 48, 64, 96, 128, 192, 256}) {
        mc::DenseDecodeTuning t;
        t.num_splits = splits;
        const std::string name = "splits=" + std::to_string(splits);
        ok = run_one(opt, dev, s, t, name.c_str(), q, k, v, o, flush, flush_bytes, json) && ok;
      }
    }
    BENCH_CUDA(cudaFree(q));
    BENCH_CUDA(cudaFree(o));
    BENCH_CUDA(cudaFree(k));
    BENCH_CUDA(cudaFree(v));
  }
  BENCH_CUDA(cudaFree(flush));
  if (json) std::fclose(json);
  return ok ? 0 : 1;
}
