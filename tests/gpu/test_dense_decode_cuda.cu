// GPU dense decode (memattn::cuda::dense_decode) against the fp64 naive reference and the CPU
// path: random data, odd lengths, GQA 1/4/8, windows, Tq 1 and > 1, per-sequence lengths,
// strided caches and outputs, fp16 and bf16, head_dim 64/128/256, forced split counts (empty
// splits), LSE; determinism; and every bad input returns its Status and writes nothing.
//
// Tags: scripts/device-check.sh runs everything but [sweep] under compute-sanitizer memcheck and
// the small [sanitize] cases under racecheck and initcheck.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/naive_attention.hpp"
#include "gpu/cpu_bridge.hpp"
#include "memattn/cuda/dense_decode.cuh"

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
namespace att = memattn::attention;
namespace mc = memattn::cuda;

namespace {

#define CUDA_REQUIRE(expr)                                                        \
  do {                                                                            \
    const cudaError_t e_ = (expr);                                                \
    INFO(#expr << ": " << cudaGetErrorString(e_));                                \
    REQUIRE(e_ == cudaSuccess);                                                   \
  } while (0)

// ---- small helpers --------------------------------------------------------------------------

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  std::size_t count = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : count(n) {
    if (n > 0) CUDA_REQUIRE(cudaMalloc(&ptr, n * sizeof(T)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  void upload(const std::vector<T>& h) {
    REQUIRE(h.size() == count);
    if (count) CUDA_REQUIRE(cudaMemcpy(ptr, h.data(), count * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(count);
    if (count) CUDA_REQUIRE(cudaMemcpy(h.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

template <class T>
std::uint16_t bits_of(T x) {
  return x.bits;
}
std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// Sentinels: NaNs with payloads the kernels never produce.
template <class T>
T sentinel() {
  return T{static_cast<std::uint16_t>(std::is_same<T, Half>::value ? 0x7e5au : 0x7fa5u)};
}
float lse_sentinel() {
  const std::uint32_t u = 0x7fc0dead;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T>
const char* dtype_str() {
  return std::is_same<T, Half>::value ? "fp16" : "bf16";
}

// Tolerances on |gpu - ref| <= atol + rtol * |ref| (outputs are rounded to T: half an ulp of
// fp16 is ~2.4e-4, of bf16 ~2e-3, relative) and on the relative L2 error of the whole output.
template <class T>
struct Tol;
template <>
struct Tol<Half> {
  static constexpr double atol = 2e-3, rtol = 2e-3, rel_l2 = 2e-3;
};
template <>
struct Tol<BFloat16> {
  static constexpr double atol = 1.2e-2, rtol = 1.2e-2, rel_l2 = 1e-2;
};
constexpr double kLseTol = 2e-3;

enum class Layout { kContiguous, kTokensMajor, kPadded };

const char* layout_str(Layout l) {
  switch (l) {
    case Layout::kContiguous: return "contiguous";
    case Layout::kTokensMajor: return "tokens-major";
    case Layout::kPadded: return "padded";
  }
  return "?";
}

struct Case {
  int B = 1, Tq = 1, Hq = 4, Hkv = 1, D = 128, Lcap = 64;
  std::vector<std::int32_t> lens;  // empty: every sequence holds Lcap tokens (seq_lens = nullptr)
  bool host_lens = true;           // also pass seq_lens_host
  int max_seq_len = 0;
  int window = 0;
  float scale = 0.f;
  Layout layout = Layout::kContiguous;
  bool strided_out = false;  // o and lse with padded strides
  bool with_lse = true;
  int num_splits = 0;  // tuning override (0: heuristic)

  std::string name() const {
    std::ostringstream s;
    s << "B=" << B << " Tq=" << Tq << " Hq=" << Hq << " Hkv=" << Hkv << " D=" << D << " Lcap=" << Lcap << " lens=[";
    for (std::size_t i = 0; i < lens.size(); ++i) s << (i ? "," : "") << lens[i];
    s << "] host_lens=" << host_lens << " max_seq_len=" << max_seq_len << " W=" << window << " scale=" << scale
      << " layout=" << layout_str(layout) << " strided_out=" << strided_out << " lse=" << with_lse
      << " splits=" << num_splits;
    return s.str();
  }
};

struct Strides4 {
  std::int64_t s[4];
  std::int64_t storage;
};

Strides4 cache_strides(const Case& c) {
  const std::int64_t B = c.B, H = c.Hkv, L = c.Lcap, D = c.D;
  switch (c.layout) {
    case Layout::kContiguous: return {{H * L * D, L * D, D, 1}, B * H * L * D};
    case Layout::kTokensMajor: return {{L * H * D, D, H * D, 1}, B * L * H * D};
    case Layout::kPadded: {
      const std::int64_t row = D + 8, head = L * row + 16, batch = H * head + 24;
      return {{batch, head, row, 1}, B * batch};
    }
  }
  return {{0, 0, 0, 0}, 0};
}

Strides4 out_strides(const Case& c) {
  const std::int64_t B = c.B, T = c.Tq, H = c.Hq, D = c.D;
  if (!c.strided_out) return {{T * H * D, H * D, D, 1}, B * T * H * D};
  const std::int64_t head = D + 8, tok = H * head + 16, batch = T * tok + 8;
  return {{batch, tok, head, 1}, B * batch};
}

Strides4 lse_strides(const Case& c) {
  const std::int64_t B = c.B, T = c.Tq, H = c.Hq;
  if (!c.strided_out) return {{T * H, H, 1, 0}, B * T * H};
  const std::int64_t tok = H + 3, batch = T * tok + 5;
  return {{batch, tok, 1, 0}, B * batch};
}

bool sequence_valid(const Case& c, int b) {
  if (c.lens.empty()) return true;
  const int L = c.lens[static_cast<std::size_t>(b)];
  return L >= 1 && L >= c.Tq && L <= c.Lcap;
}

template <class T>
void fill_random(std::vector<T>& v, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : v) x = memattn::from_float<T>(u(rng));
}

// ---- one case ---------------------------------------------------------------------------------

template <class T>
void run_case(const Case& c, std::uint64_t seed) {
  INFO(dtype_str<T>() << " " << c.name() << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const Strides4 cs = cache_strides(c), os = out_strides(c), ls = lse_strides(c);
  const std::int64_t nq = static_cast<std::int64_t>(c.B) * c.Tq * c.Hq * c.D;

  std::vector<T> hq(static_cast<std::size_t>(nq)), hk(static_cast<std::size_t>(cs.storage)),
      hv(static_cast<std::size_t>(cs.storage));
  fill_random(hq, rng);
  fill_random(hk, rng);
  fill_random(hv, rng);
  const std::vector<T> o_init(static_cast<std::size_t>(os.storage), sentinel<T>());
  const std::vector<float> lse_init(static_cast<std::size_t>(ls.storage), lse_sentinel());

  DeviceBuffer<T> dq(hq.size()), dk(hk.size()), dv(hv.size()), dout(o_init.size());
  DeviceBuffer<float> dlse(lse_init.size());
  DeviceBuffer<std::int32_t> dlens(c.lens.size());
  dq.upload(hq);
  dk.upload(hk);
  dv.upload(hv);
  if (!c.lens.empty()) dlens.upload(c.lens);

  const int B = c.B, Tq = c.Tq, Hq = c.Hq, Hkv = c.Hkv, D = c.D, Lcap = c.Lcap;
  auto make_args = [&](const T* q, const T* k, const T* v, T* o, float* lse) {
    att::DecodeArgs<T> a;
    a.q = memattn::make_view<4>(q, {B, Tq, Hq, D});
    a.k_cache = memattn::make_strided_view<4>(k, {B, Hkv, Lcap, D}, {cs.s[0], cs.s[1], cs.s[2], 1});
    a.v_cache = memattn::make_strided_view<4>(v, {B, Hkv, Lcap, D}, {cs.s[0], cs.s[1], cs.s[2], 1});
    a.o = memattn::make_strided_view<4>(o, {B, Tq, Hq, D}, {os.s[0], os.s[1], os.s[2], 1});
    if (c.with_lse) a.lse = memattn::make_strided_view<3>(lse, {B, Tq, Hq}, {ls.s[0], ls.s[1], 1});
    a.scale = c.scale;
    a.window = c.window;
    a.max_seq_len = c.max_seq_len;
    return a;
  };

  // ---- GPU, twice (determinism) ----
  att::DecodeArgs<T> ga = make_args(dq.ptr, dk.ptr, dv.ptr, dout.ptr, dlse.ptr);
  if (!c.lens.empty()) {
    ga.seq_lens = dlens.ptr;
    if (c.host_lens) ga.seq_lens_host = c.lens.data();
  }
  mc::DenseDecodeTuning tuning;
  tuning.num_splits = c.num_splits;
  mc::DenseDecodePlan plan;
  REQUIRE(mc::dense_decode_plan(ga, &plan, tuning) == Status::kSuccess);
  std::size_t ws_bytes = 0;
  REQUIRE(mc::dense_decode_workspace_size(ga, &ws_bytes, tuning) == Status::kSuccess);
  REQUIRE(ws_bytes == plan.workspace_bytes);
  INFO("plan: row_tile=" << plan.row_tile << " row_tiles=" << plan.row_tiles << " splits=" << plan.num_splits
                         << " keys/split=" << plan.keys_per_split << " ws=" << ws_bytes);
  REQUIRE((plan.num_splits > 1) == (ws_bytes > 0));
  DeviceBuffer<unsigned char> dws(ws_bytes);

  std::vector<std::vector<T>> outs;
  std::vector<std::vector<float>> lses;
  for (int rep = 0; rep < 2; ++rep) {
    dout.upload(o_init);
    dlse.upload(lse_init);
    if (dws.count) CUDA_REQUIRE(cudaMemset(dws.ptr, 0xff, dws.count));  // NaN garbage in the workspace
    REQUIRE(mc::dense_decode(ga, dws.ptr, ws_bytes, cudaStream_t{0}, tuning) == Status::kSuccess);
    CUDA_REQUIRE(cudaGetLastError());
    CUDA_REQUIRE(cudaDeviceSynchronize());
    outs.push_back(dout.download());
    lses.push_back(dlse.download());
  }
  {
    INFO("determinism: two runs must agree bitwise");
    bool same = true;
    for (std::size_t i = 0; i < outs[0].size(); ++i) same = same && bits_of(outs[0][i]) == bits_of(outs[1][i]);
    for (std::size_t i = 0; i < lses[0].size(); ++i) same = same && bits_of(lses[0][i]) == bits_of(lses[1][i]);
    CHECK(same);
  }
  const std::vector<T>& go = outs[0];
  const std::vector<float>& glse = lses[0];

  // ---- references: fp64 naive and the CPU path, on lengths valid for them ----
  std::vector<std::int32_t> ref_lens = c.lens;
  for (int b = 0; b < static_cast<int>(ref_lens.size()); ++b)
    if (!sequence_valid(c, b)) ref_lens[static_cast<std::size_t>(b)] = Lcap;
  std::vector<T> co(o_init.size(), sentinel<T>());
  std::vector<float> clse(lse_init.size(), lse_sentinel());
  att::DecodeArgs<T> ha = make_args(hq.data(), hk.data(), hv.data(), co.data(), clse.data());
  ha.seq_lens = ref_lens.empty() ? nullptr : ref_lens.data();
  ha.max_seq_len = 0;
  const memattn_test::NaiveResult ref = memattn_test::naive_decode(ha, ha.seq_lens);
  REQUIRE(memattn_test::cpu_dense_decode(ha) == Status::kSuccess);

  // ---- compare ----
  double err2 = 0, ref2 = 0, max_err = 0, max_err_cpu = 0, max_lse_err = 0;
  std::int64_t bad = 0, bad_cpu = 0, bad_lse = 0, unwritten = 0, clobbered = 0;
  std::vector<char> owned(go.size(), 0), owned_lse(glse.size(), 0);
  for (int b = 0; b < B; ++b) {
    const bool valid = sequence_valid(c, b);
    for (int t = 0; t < Tq; ++t) {
      for (int h = 0; h < Hq; ++h) {
        const std::size_t row = static_cast<std::size_t>((b * Tq + t) * Hq + h);
        const std::size_t lse_at = static_cast<std::size_t>(b * ls.s[0] + t * ls.s[1] + h);
        for (int d = 0; d < D; ++d) {
          const std::size_t at = static_cast<std::size_t>(b * os.s[0] + t * os.s[1] + h * os.s[2] + d);
          owned[at] = 1;
          if (!valid) {
            if (bits_of(go[at]) != bits_of(sentinel<T>())) ++clobbered;
            continue;
          }
          if (bits_of(go[at]) == bits_of(sentinel<T>())) {
            ++unwritten;
            continue;
          }
          const double g = memattn::to_float(go[at]);
          const double r = ref.o[row * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)];
          const double cpu = memattn::to_float(co[at]);
          const double e = std::fabs(g - r);
          if (!(e <= Tol<T>::atol + Tol<T>::rtol * std::fabs(r))) ++bad;
          const double ec = std::fabs(g - cpu);
          if (!(ec <= Tol<T>::atol + Tol<T>::rtol * std::fabs(cpu))) ++bad_cpu;
          max_err = std::max(max_err, std::isfinite(e) ? e : 1e30);
          max_err_cpu = std::max(max_err_cpu, std::isfinite(ec) ? ec : 1e30);
          err2 += e * e;
          ref2 += r * r;
        }
        if (c.with_lse) {
          owned_lse[lse_at] = 1;
          if (!valid) {
            if (bits_of(glse[lse_at]) != bits_of(lse_sentinel())) ++clobbered;
          } else {
            const double e = std::fabs(glse[lse_at] - ref.lse[row]);
            const double ec = std::fabs(glse[lse_at] - clse[lse_at]);
            if (!(e <= kLseTol * std::max(1.0, std::fabs(ref.lse[row]))) || !(ec <= kLseTol * std::max(1.0, std::fabs(ref.lse[row])))) ++bad_lse;
            max_lse_err = std::max(max_lse_err, std::isfinite(e) ? e : 1e30);
          }
        }
      }
    }
  }
  // Padding between rows and every lse slot when lse is absent must be untouched.
  for (std::size_t i = 0; i < go.size(); ++i)
    if (!owned[i] && bits_of(go[i]) != bits_of(sentinel<T>())) ++clobbered;
  for (std::size_t i = 0; i < glse.size(); ++i)
    if (!owned_lse[i] && bits_of(glse[i]) != bits_of(lse_sentinel())) ++clobbered;

  INFO("max |gpu-naive|=" << max_err << " max |gpu-cpu|=" << max_err_cpu << " max lse err=" << max_lse_err
                          << " rel_l2=" << (ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0));
  CHECK(unwritten == 0);
  CHECK(clobbered == 0);
  CHECK(bad == 0);
  CHECK(bad_cpu == 0);
  CHECK(bad_lse == 0);
  if (ref2 > 0) CHECK(std::sqrt(err2 / ref2) <= Tol<T>::rel_l2);
}

void run_both_dtypes(const Case& c, std::uint64_t seed) {
  run_case<Half>(c, seed);
  run_case<BFloat16>(c, seed + 1);
}

}  // namespace

// ---- correctness ----------------------------------------------------------------------------

TEST_CASE("dense_decode: basic GQA 4, odd length, both dtypes", "[dense_decode][sanitize]") {
  Case c;
  c.Hq = 8;
  c.Hkv = 2;
  c.Lcap = 1001;
  run_both_dtypes(c, 1);
}

TEST_CASE("dense_decode: head_dim 64/128/256 x GQA 1/4/8", "[dense_decode]") {
  for (int D : {64, 128, 256}) {
    for (int G : {1, 4, 8}) {
      Case c;
      c.D = D;
      c.Hkv = 2;
      c.Hq = 2 * G;
      c.Lcap = 333 + D;
      run_both_dtypes(c, static_cast<std::uint64_t>(10 * D + G));
    }
  }
}

TEST_CASE("dense_decode: L = 1 and Tq = Lcap", "[dense_decode][sanitize]") {
  Case c;
  c.Lcap = 1;
  c.Hq = 4;
  c.Hkv = 1;
  run_both_dtypes(c, 2);
  c.Lcap = 5;
  c.Tq = 5;  // every cached token is new: causal within the block
  run_both_dtypes(c, 3);
  c.D = 64;
  c.Hq = 8;
  c.Hkv = 1;  // 40 rows: 5 row tiles
  run_both_dtypes(c, 4);
}

TEST_CASE("dense_decode: Tq > 1 with row tiles, window on and off", "[dense_decode][sanitize]") {
  for (int window : {0, 1, 7, 100, 5000}) {
    Case c;
    c.Tq = 3;
    c.Hq = 8;
    c.Hkv = 2;  // 12 rows per KV head: two row tiles of 8
    c.Lcap = 777;
    c.window = window;
    run_both_dtypes(c, static_cast<std::uint64_t>(100 + window));
  }
}

TEST_CASE("dense_decode: per-sequence lengths in a batch", "[dense_decode][sanitize]") {
  Case c;
  c.B = 5;
  c.Tq = 2;
  c.Hq = 4;
  c.Hkv = 2;
  c.D = 128;
  c.Lcap = 1024;
  c.lens = {2, 37, 1024, 513, 900};
  run_both_dtypes(c, 20);
  c.window = 64;
  run_both_dtypes(c, 21);
  c.window = 0;
  c.host_lens = false;  // device lengths only: the splits are sized from Lcap
  run_both_dtypes(c, 22);
  c.max_seq_len = 1024;
  run_both_dtypes(c, 23);
}

TEST_CASE("dense_decode: invalid device lengths leave their rows untouched", "[dense_decode]") {
  Case c;
  c.B = 4;
  c.Tq = 2;
  c.Hq = 4;
  c.Hkv = 1;
  c.Lcap = 300;
  c.lens = {0, 1, 301, 150};  // 0 and 1 (< Tq) and 301 (> Lcap) are skipped by the kernels
  c.host_lens = false;
  run_both_dtypes(c, 30);
  c.num_splits = 1;  // the direct (no merge) path too
  run_both_dtypes(c, 31);
}

TEST_CASE("dense_decode: strided caches and outputs", "[dense_decode][sanitize]") {
  for (Layout layout : {Layout::kTokensMajor, Layout::kPadded}) {
    for (bool strided_out : {false, true}) {
      Case c;
      c.B = 2;
      c.Hq = 16;
      c.Hkv = 4;
      c.D = 64;
      c.Lcap = 517;
      c.layout = layout;
      c.strided_out = strided_out;
      c.lens = {517, 260};
      run_both_dtypes(c, static_cast<std::uint64_t>(40 + static_cast<int>(layout) * 2 + strided_out));
    }
  }
}

TEST_CASE("dense_decode: forced split counts, empty splits, explicit scale, no lse", "[dense_decode]") {
  for (int splits : {1, 2, 7, 64, 256}) {
    Case c;
    c.B = 3;
    c.Tq = 1;
    c.Hq = 8;
    c.Hkv = 1;
    c.D = 128;
    c.Lcap = 1500;
    c.lens = {1500, 3, 700};  // short sequences leave most of 64 / 256 splits empty
    c.num_splits = splits;
    c.scale = 0.3f;
    c.with_lse = splits % 2 == 0;
    run_both_dtypes(c, static_cast<std::uint64_t>(50 + splits));
  }
}

TEST_CASE("dense_decode: long sequence with the split heuristic", "[dense_decode]") {
  Case c;
  c.B = 1;
  c.Hq = 8;
  c.Hkv = 2;
  c.D = 128;
  c.Lcap = 8191;
  run_both_dtypes(c, 60);
  c.window = 1000;
  c.Tq = 4;
  run_both_dtypes(c, 61);
}

TEST_CASE("dense_decode: random sweep", "[dense_decode][sweep]") {
  std::mt19937_64 rng(12345);
  for (int D : {64, 128, 256}) {
    for (int G : {1, 4, 8}) {
      for (int Tq : {1, 2, 5}) {
        Case c;
        c.D = D;
        c.Hkv = 1 + static_cast<int>(rng() % 2);
        c.Hq = c.Hkv * G;
        c.Tq = Tq;
        c.B = 1 + static_cast<int>(rng() % 3);
        c.Lcap = Tq + static_cast<int>(rng() % 700);
        c.window = rng() % 2 ? 1 + static_cast<int>(rng() % 200) : 0;
        c.layout = static_cast<Layout>(rng() % 3);
        c.strided_out = rng() % 2 == 0;
        if (rng() % 2) {
          for (int b = 0; b < c.B; ++b) c.lens.push_back(Tq + static_cast<int>(rng() % static_cast<unsigned>(c.Lcap - Tq + 1)));
          c.host_lens = rng() % 2 == 0;
        }
        run_both_dtypes(c, rng());
      }
    }
  }
}

// ---- bad inputs: the right Status, nothing written ---------------------------------------------

namespace {

template <class T>
void run_bad_inputs() {
  INFO(dtype_str<T>());
  const int B = 2, Tq = 2, Hq = 8, Hkv = 2, D = 128, Lcap = 1024;
  const std::int64_t nq = static_cast<std::int64_t>(B) * Tq * Hq * D;
  const std::int64_t nkv = static_cast<std::int64_t>(B) * Hkv * Lcap * D;
  std::mt19937_64 rng(77);
  std::vector<T> hq(static_cast<std::size_t>(nq) + 64), hkv(static_cast<std::size_t>(nkv) + 64);
  fill_random(hq, rng);
  fill_random(hkv, rng);
  const std::vector<T> o_init(static_cast<std::size_t>(nq) + 64, sentinel<T>());
  const std::vector<float> lse_init(static_cast<std::size_t>(B * Tq * Hq) + 16, lse_sentinel());
  DeviceBuffer<T> dq(hq.size()), dk(hkv.size()), dv(hkv.size()), dout(o_init.size());
  DeviceBuffer<float> dlse(lse_init.size());
  dq.upload(hq);
  dk.upload(hkv);
  dv.upload(hkv);
  dout.upload(o_init);
  dlse.upload(lse_init);
  const std::vector<std::int32_t> lens = {1024, 700};
  DeviceBuffer<std::int32_t> dlens(lens.size());
  dlens.upload(lens);

  att::DecodeArgs<T> good;
  good.q = memattn::make_view<4>(static_cast<const T*>(dq.ptr), {B, Tq, Hq, D});
  good.k_cache = memattn::make_view<4>(static_cast<const T*>(dk.ptr), {B, Hkv, Lcap, D});
  good.v_cache = memattn::make_view<4>(static_cast<const T*>(dv.ptr), {B, Hkv, Lcap, D});
  good.o = memattn::make_view<4>(dout.ptr, {B, Tq, Hq, D});
  good.lse = memattn::make_view<3>(dlse.ptr, {B, Tq, Hq});
  good.seq_lens = dlens.ptr;
  good.seq_lens_host = lens.data();
  mc::DenseDecodeTuning tuning;
  tuning.num_splits = 4;  // a workspace is needed
  std::size_t need = 0;
  REQUIRE(mc::dense_decode_workspace_size(good, &need, tuning) == Status::kSuccess);
  REQUIRE(need > 0);
  DeviceBuffer<unsigned char> dws(need + 512);

  auto expect = [&](const char* what, Status want, const att::DecodeArgs<T>& a, void* ws, std::size_t bytes) {
    INFO(what << ": want " << memattn::status_message(want));
    std::size_t sz = 0;
    const Status s1 = mc::dense_decode_workspace_size(a, &sz, tuning);
    const Status s2 = mc::dense_decode(a, ws, bytes, cudaStream_t{0}, tuning);
    if (want == Status::kErrorWorkspaceTooSmall) {
      CHECK(s1 == Status::kSuccess);
    } else {
      CHECK(memattn::status_message(s1) == std::string(memattn::status_message(want)));
    }
    CHECK(memattn::status_message(s2) == std::string(memattn::status_message(want)));
    CHECK(cudaGetLastError() == cudaSuccess);
  };
  auto expect_args = [&](const char* what, Status want, const att::DecodeArgs<T>& a) {
    expect(what, want, a, dws.ptr, need);
  };

  {
    auto a = good;
    a.q.data = nullptr;
    expect_args("null q", Status::kErrorNullPointer, a);
  }
  {
    auto a = good;
    a.k_cache.data = nullptr;
    expect_args("null k", Status::kErrorNullPointer, a);
  }
  {
    auto a = good;
    a.v_cache.data = nullptr;
    expect_args("null v", Status::kErrorNullPointer, a);
  }
  {
    auto a = good;
    a.o.data = nullptr;
    expect_args("null o", Status::kErrorNullPointer, a);
  }
  {
    auto a = good;
    a.v_cache.shape[2] = Lcap - 1;
    expect_args("v capacity differs", Status::kErrorInvalidShape, a);
  }
  {
    auto a = good;
    a.k_cache.shape[3] = 64;
    a.k_cache.stride[2] = 64;
    expect_args("k head_dim differs", Status::kErrorInvalidShape, a);
  }
  {
    auto a = good;
    a.o.shape[2] = Hq / 2;
    expect_args("o heads differ", Status::kErrorInvalidShape, a);
  }
  {
    auto a = good;
    a.lse.shape[1] = Tq + 1;
    expect_args("lse shape differs", Status::kErrorInvalidShape, a);
  }
  {
    auto a = good;
    a.k_cache.shape[0] = B + 1;
    a.v_cache.shape[0] = B + 1;
    expect_args("cache batch differs", Status::kErrorInvalidShape, a);
  }
  {
    auto a = good;
    a.k_cache.stride[3] = 2;
    expect_args("k inner stride 2", Status::kErrorInvalidStride, a);
  }
  {
    auto a = good;
    a.v_cache.stride[1] = -a.v_cache.stride[1];
    expect_args("negative stride", Status::kErrorInvalidStride, a);
  }
  {
    auto a = good;
    a.q.data = dq.ptr + 1;  // 2-byte offset: no 16-byte loads
    expect_args("misaligned q", Status::kErrorInvalidStride, a);
  }
  {
    auto a = good;
    a.k_cache.data = dk.ptr + 4;  // 8-byte offset
    expect_args("misaligned k", Status::kErrorInvalidStride, a);
  }
  {
    auto a = good;
    a.o.data = dout.ptr + 2;
    expect_args("misaligned o", Status::kErrorInvalidStride, a);
  }
  {
    auto a = good;
    a.v_cache.stride[2] = D + 4;  // rows 8 bytes off the 16-byte grid (checked before any access)
    expect_args("misaligned v row stride", Status::kErrorInvalidStride, a);
  }
  {
    auto a = good;  // head_dim 96 (16-byte aligned, but no kernel)
    a.q.shape[3] = 96;
    a.k_cache.shape[3] = 96;
    a.v_cache.shape[3] = 96;
    a.o.shape[3] = 96;
    expect_args("head_dim 96", Status::kErrorUnsupportedHeadDim, a);
    a.q.shape[3] = a.k_cache.shape[3] = a.v_cache.shape[3] = a.o.shape[3] = 32;
    expect_args("head_dim 32", Status::kErrorUnsupportedHeadDim, a);
  }
  {
    auto a = good;  // 8 query heads over 3 KV heads
    a.k_cache.shape[1] = 3;
    a.v_cache.shape[1] = 3;
    a.k_cache.stride[0] = a.v_cache.stride[0] = static_cast<std::int64_t>(3) * (Lcap / 2) * D;
    a.k_cache.shape[2] = a.v_cache.shape[2] = Lcap / 2;
    a.seq_lens_host = nullptr;
    a.seq_lens = nullptr;
    expect_args("GQA ratio 8/3", Status::kErrorGqaRatio, a);
  }
  {
    auto a = good;
    const std::vector<std::int32_t> zero = {1024, 0};
    a.seq_lens_host = zero.data();
    expect_args("L = 0 via seq_lens_host", Status::kErrorEmptyCache, a);
    const std::vector<std::int32_t> short_len = {1, 700};
    a.seq_lens_host = short_len.data();
    expect_args("L < Tq via seq_lens_host", Status::kErrorEmptyCache, a);
    const std::vector<std::int32_t> long_len = {1025, 700};
    a.seq_lens_host = long_len.data();
    expect_args("L > Lcap via seq_lens_host", Status::kErrorEmptyCache, a);
  }
  {
    auto a = good;
    a.seq_lens = nullptr;  // a host copy without the device array
    expect_args("seq_lens_host without seq_lens", Status::kErrorInvalidArgument, a);
  }
  {
    auto a = good;
    a.window = -1;
    expect_args("negative window", Status::kErrorInvalidArgument, a);
  }
  {
    auto a = good;
    a.max_seq_len = Lcap + 1;
    expect_args("max_seq_len > Lcap", Status::kErrorInvalidArgument, a);
  }
  {
    auto a = good;
    a.scale = -1.f;
    expect_args("negative scale", Status::kErrorInvalidArgument, a);
  }
  expect("workspace one byte short", Status::kErrorWorkspaceTooSmall, good, dws.ptr, need - 1);
  expect("null workspace", Status::kErrorWorkspaceTooSmall, good, nullptr, need);
  expect("misaligned workspace", Status::kErrorWorkspaceTooSmall, good, dws.ptr + 16, need + 256);
  {
    std::size_t* null_bytes = nullptr;
    CHECK(mc::dense_decode_workspace_size(good, null_bytes, tuning) == Status::kErrorNullPointer);
  }

  CUDA_REQUIRE(cudaDeviceSynchronize());
  const std::vector<T> o_after = dout.download();
  const std::vector<float> lse_after = dlse.download();
  std::int64_t touched = 0;
  for (std::size_t i = 0; i < o_after.size(); ++i) touched += bits_of(o_after[i]) != bits_of(o_init[i]);
  for (std::size_t i = 0; i < lse_after.size(); ++i) touched += bits_of(lse_after[i]) != bits_of(lse_init[i]);
  CHECK(touched == 0);

  // And the good arguments do run (the checks above were not vacuous).
  REQUIRE(mc::dense_decode(good, dws.ptr, need, cudaStream_t{0}, tuning) == Status::kSuccess);
  CUDA_REQUIRE(cudaDeviceSynchronize());
  const std::vector<T> o_good = dout.download();
  std::int64_t written = 0;
  for (std::size_t i = 0; i < static_cast<std::size_t>(nq); ++i) written += bits_of(o_good[i]) != bits_of(o_init[i]);
  CHECK(written == nq);
}

}  // namespace

TEST_CASE("dense_decode: bad inputs return their Status and write nothing", "[dense_decode][bad][sanitize]") {
  run_bad_inputs<Half>();
  run_bad_inputs<BFloat16>();
}

TEST_CASE("dense_decode: fp32 caches are rejected", "[dense_decode][bad]") {
  const int B = 1, Tq = 1, Hq = 4, Hkv = 1, D = 64, Lcap = 16;
  DeviceBuffer<float> dq(B * Tq * Hq * D), dk(B * Hkv * Lcap * D), dv(B * Hkv * Lcap * D), dout(B * Tq * Hq * D);
  std::vector<float> init(dout.count, lse_sentinel());
  dout.upload(init);
  att::DecodeArgs<float> a;
  a.q = memattn::make_view<4>(static_cast<const float*>(dq.ptr), {B, Tq, Hq, D});
  a.k_cache = memattn::make_view<4>(static_cast<const float*>(dk.ptr), {B, Hkv, Lcap, D});
  a.v_cache = memattn::make_view<4>(static_cast<const float*>(dv.ptr), {B, Hkv, Lcap, D});
  a.o = memattn::make_view<4>(dout.ptr, {B, Tq, Hq, D});
  std::size_t bytes = 0;
  CHECK(mc::dense_decode_workspace_size(a, &bytes) == Status::kErrorUnsupportedDtype);
  CHECK(mc::dense_decode(a, nullptr, 0, cudaStream_t{0}) == Status::kErrorUnsupportedDtype);
  CUDA_REQUIRE(cudaDeviceSynchronize());
  const auto after = dout.download();
  std::int64_t touched = 0;
  for (std::size_t i = 0; i < after.size(); ++i) touched += bits_of(after[i]) != bits_of(init[i]);
  CHECK(touched == 0);
}

TEST_CASE("dense_decode: plan fills the GPU and respects the key range", "[dense_decode][plan]") {
  const int B = 1, Tq = 1, Hq = 32, Hkv = 8, D = 128, Lcap = 32768;
  DeviceBuffer<BFloat16> dq(B * Tq * Hq * D), dout(B * Tq * Hq * D);
  DeviceBuffer<BFloat16> dk(static_cast<std::size_t>(B) * Hkv * Lcap * D);
  att::DecodeArgs<BFloat16> a;
  a.q = memattn::make_view<4>(static_cast<const BFloat16*>(dq.ptr), {B, Tq, Hq, D});
  a.k_cache = memattn::make_view<4>(static_cast<const BFloat16*>(dk.ptr), {B, Hkv, Lcap, D});
  a.v_cache = a.k_cache;
  a.o = memattn::make_view<4>(dout.ptr, {B, Tq, Hq, D});
  mc::DenseDecodePlan plan;
  REQUIRE(mc::dense_decode_plan(a, &plan) == Status::kSuccess);
  INFO("splits=" << plan.num_splits << " sms=" << plan.sm_count << " ctas=" << plan.decode_ctas);
  CHECK(plan.row_tile == 4);
  CHECK(plan.row_tiles == 1);
  CHECK(plan.decode_ctas >= plan.sm_count);  // at least one full wave
  CHECK(static_cast<std::int64_t>(plan.num_splits) * plan.keys_per_split >= Lcap);
  CHECK(plan.keys_per_split % plan.chunk_keys == 0);
  a.max_seq_len = 100;  // short sequences: few splits, no workspace
  REQUIRE(mc::dense_decode_plan(a, &plan) == Status::kSuccess);
  CHECK(plan.num_splits == 1);
  CHECK(plan.workspace_bytes == 0);
}
