// A downstream program, built out of tree against memattn (installed, or added as a
// subdirectory): one real fp16 GQA decode through memattn::cpu, checked against an fp64 loop,
// plus one rejected call. Prints "memattn consumer: ok" and returns 0 only when all checks pass.
#include <memattn/memattn.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#if defined(EXPECT_MEMATTN_VERSION_MAJOR)
static_assert(MEMATTN_VERSION_MAJOR == EXPECT_MEMATTN_VERSION_MAJOR &&
                  MEMATTN_VERSION_MINOR == EXPECT_MEMATTN_VERSION_MINOR &&
                  MEMATTN_VERSION_PATCH == EXPECT_MEMATTN_VERSION_PATCH,
              "the headers' version differs from the CMake package version");
#endif

int main() {
  using memattn::Half;
  constexpr std::int64_t B = 1, Tq = 1, Hq = 4, Hkv = 2, D = 64, Lcap = 48;
  const std::int32_t seq_len = 41;  // the last token of the 41 cached is the query's own

  std::uint32_t state = 12345u;
  auto next = [&state] {  // deterministic values in [-1, 1)
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 8388608.f - 1.f;
  };
  std::vector<Half> q(B * Tq * Hq * D), k(B * Hkv * Lcap * D), v(k.size()), o(q.size());
  for (auto& x : q) x = memattn::float_to_half(next());
  for (auto& x : k) x = memattn::float_to_half(next());
  for (auto& x : v) x = memattn::float_to_half(next());
  std::vector<float> lse(B * Tq * Hq, 0.f);

  memattn::attention::DecodeArgs<Half> args;
  args.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {B, Tq, Hq, D});
  args.k_cache = memattn::make_view<4>(static_cast<const Half*>(k.data()), {B, Hkv, Lcap, D});
  args.v_cache = memattn::make_view<4>(static_cast<const Half*>(v.data()), {B, Hkv, Lcap, D});
  args.seq_lens = &seq_len;
  args.o = memattn::make_view<4>(o.data(), {B, Tq, Hq, D});
  args.lse = memattn::make_view<3>(lse.data(), {B, Tq, Hq});

  // Two-phase scratch: ask the size, hand over an aligned buffer, run.
  std::size_t ws_bytes = 0;
  memattn::Status st = memattn::cpu::dense_decode_workspace_size(args, &ws_bytes);
  if (st != memattn::Status::kSuccess) {
    std::printf("workspace_size failed: %s\n", memattn::status_message(st));
    return 1;
  }
  std::vector<unsigned char> ws(ws_bytes + memattn::kWorkspaceAlign);
  void* ws_ptr = ws.data();
  std::size_t space = ws.size();
  ws_ptr = std::align(memattn::kWorkspaceAlign, ws_bytes, ws_ptr, space);
  st = memattn::cpu::dense_decode(args, ws_ptr, ws_bytes);
  if (st != memattn::Status::kSuccess) {
    std::printf("dense_decode failed: %s\n", memattn::status_message(st));
    return 1;
  }

  // fp64 reference: query head h reads KV head h / (Hq / Hkv), keys 0 .. seq_len-1.
  double max_err_o = 0, max_err_lse = 0;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (std::int64_t h = 0; h < Hq; ++h) {
    const std::int64_t kh = h / (Hq / Hkv);
    std::vector<double> s(seq_len);
    double m = -INFINITY;
    for (std::int32_t j = 0; j < seq_len; ++j) {
      double acc = 0;
      for (std::int64_t d = 0; d < D; ++d)
        acc += double(memattn::half_to_float(q[h * D + d])) * memattn::half_to_float(k[(kh * Lcap + j) * D + d]);
      s[j] = acc * scale;
      m = std::max(m, s[j]);
    }
    double l = 0;
    for (double& x : s) l += (x = std::exp(x - m));
    for (std::int64_t d = 0; d < D; ++d) {
      double acc = 0;
      for (std::int32_t j = 0; j < seq_len; ++j) acc += s[j] * memattn::half_to_float(v[(kh * Lcap + j) * D + d]);
      max_err_o = std::max(max_err_o, std::abs(acc / l - memattn::half_to_float(o[h * D + d])));
    }
    max_err_lse = std::max(max_err_lse, std::abs(m + std::log(l) - lse[h]));
  }
  // fp16 output: half an ulp at |o| < 1 is < 5e-4; fp32 accumulation adds far less.
  if (!(max_err_o < 2e-3) || !(max_err_lse < 1e-4)) {
    std::printf("result mismatch: max |o - ref| = %.3g, max |lse - ref| = %.3g\n", max_err_o, max_err_lse);
    return 1;
  }

  // Invalid arguments are reported, and nothing is written.
  const std::vector<Half> before = o;
  args.q.data = nullptr;
  st = memattn::cpu::dense_decode(args);
  if (st != memattn::Status::kErrorNullPointer) {
    std::printf("a null query gave '%s', expected a null-pointer error\n", memattn::status_message(st));
    return 1;
  }
  for (std::size_t i = 0; i < o.size(); ++i) {
    if (o[i].bits != before[i].bits) {
      std::printf("a rejected call wrote its output\n");
      return 1;
    }
  }

  std::printf("memattn consumer: ok (memattn %d.%d.%d, max |o - ref| = %.2e, max |lse - ref| = %.2e)\n",
              MEMATTN_VERSION_MAJOR, MEMATTN_VERSION_MINOR, MEMATTN_VERSION_PATCH, max_err_o, max_err_lse);
  return 0;
}
