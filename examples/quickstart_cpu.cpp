// Quickstart: one decode step of dense GQA attention on the CPU over a synthetic fp16 KV cache.
//
//   cache [B, Hkv, Lcap, D] fp16, per-sequence lengths, query [B, 1, Hq, D] fp16
//   -> output [B, 1, Hq, D] fp16 and log-sum-exp [B, 1, Hq] fp32
//
// Scratch is two-phase: ask dense_decode_workspace_size() once, keep the buffer, and pass it to
// every dense_decode() call (nothing is allocated on that path). Every call returns a Status.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include <memattn/memattn.hpp>

int main() {
  using memattn::Half;
  constexpr std::int64_t B = 2, Hq = 32, Hkv = 8, D = 128, Lcap = 4096;
  const std::int32_t seq_lens[B] = {4096, 1500};  // tokens cached per sequence, this step's included

  // Synthetic cache and query: N(0, 1) values stored in fp16.
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<Half> k(B * Hkv * Lcap * D), v(k.size()), q(B * Hq * D), o(q.size());
  for (auto* buf : {&k, &v, &q})
    for (auto& x : *buf) x = memattn::float_to_half(normal(rng));
  std::vector<float> lse(B * Hq);

  memattn::attention::DecodeArgs<Half> args;
  args.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {B, 1, Hq, D});
  args.k_cache = memattn::make_view<4>(static_cast<const Half*>(k.data()), {B, Hkv, Lcap, D});
  args.v_cache = memattn::make_view<4>(static_cast<const Half*>(v.data()), {B, Hkv, Lcap, D});
  args.seq_lens = seq_lens;
  args.o = memattn::make_view<4>(o.data(), {B, 1, Hq, D});
  args.lse = memattn::make_view<3>(lse.data(), {B, 1, Hq});  // optional; scale 0 = 1/sqrt(D)

  // 1) Size the scratch, 2) allocate it once (aligned to kWorkspaceAlign), 3) run.
  std::size_t ws_bytes = 0;
  memattn::Status st = memattn::cpu::dense_decode_workspace_size(args, &ws_bytes);
  memattn::HostWorkspace ws(ws_bytes);
  if (memattn::ok(st)) st = memattn::cpu::dense_decode(args, ws.data(), ws_bytes);
  std::printf("dense_decode: %s (workspace %zu bytes)\n", memattn::status_message(st), ws_bytes);
  if (!memattn::ok(st)) return 1;

  std::int64_t kv_bytes = 0;  // K and V actually read: 2 * sum_b(L_b) * Hkv * D * sizeof(fp16)
  for (std::int64_t b = 0; b < B; ++b) kv_bytes += 2 * std::int64_t{seq_lens[b]} * Hkv * D * sizeof(Half);
  std::printf("KV cache read: %.2f MiB fp16 (capacity %.2f MiB)\n", kv_bytes / 1048576.0,
              2.0 * B * Hkv * Lcap * D * sizeof(Half) / 1048576.0);

  bool finite = true;
  for (const Half& x : o) finite = finite && std::isfinite(memattn::half_to_float(x));
  for (std::int64_t b = 0; b < B; ++b) {
    std::printf("seq %lld (L=%d) head 0: lse = %.4f  o[0:8] =", static_cast<long long>(b), seq_lens[b], lse[b * Hq]);
    for (int d = 0; d < 8; ++d) std::printf(" %+.4f", memattn::half_to_float(o[b * Hq * D + d]));
    std::printf("\n");
  }

  // Invalid arguments come back as a Status and leave the outputs untouched.
  const std::int32_t too_long[B] = {5000, 1500};  // more tokens than the cache holds
  memattn::attention::DecodeArgs<Half> bad = args;
  bad.seq_lens = too_long;
  std::printf("with L=5000 > Lcap=4096: %s\n", memattn::status_message(memattn::cpu::dense_decode(bad, ws.data(), ws_bytes)));
  return finite ? 0 : 1;
}
