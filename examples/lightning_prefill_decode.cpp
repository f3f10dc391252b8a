// Lightning attention on the CPU: a chunked prefill of a prompt into an fp32 state pool, then
// token-by-token decode from that state, for a MiniMax-style layer (64 heads would be typical;
// 8 here), bf16 activations, explicit scale, MiniMax decay rates. Checks that decoding the last
// tokens gives the same outputs as prefilling them (the decay convention that makes prefill state
// and decode state the same object) and prints the difference.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <memattn/memattn.hpp>

using memattn::BFloat16;

int main() {
  const std::int64_t H = 8, D = 64, T = 300, prompt = 256;  // decode the last 44 tokens
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  auto randn = [&](std::size_t n) {
    std::vector<BFloat16> v(n);
    for (auto& x : v) x = memattn::from_float<BFloat16>(nd(rng));
    return v;
  };
  const auto q = randn(static_cast<std::size_t>(T * H * D)), k = randn(q.size()), v = randn(q.size());
  const std::vector<float> decay = memattn::linear::decay_rates_minimax(static_cast<int>(H), /*layer=*/0, /*layers=*/80);

  // Token tensors are [rows, heads, dim] views; one sequence, one state slot (fp32 [H, D, D]).
  auto args_for = [&](std::int64_t r0, std::int64_t r1, std::vector<BFloat16>& o, std::vector<float>& pool) {
    memattn::linear::LinearArgs<BFloat16> a;
    a.q = memattn::make_view<3>(q.data() + r0 * H * D, {r1 - r0, H, D});
    a.k = memattn::make_view<3>(k.data() + r0 * H * D, {r1 - r0, H, D});
    a.v = memattn::make_view<3>(v.data() + r0 * H * D, {r1 - r0, H, D});
    a.o = memattn::make_view<3>(o.data() + r0 * H * D, {r1 - r0, H, D});
    a.seq.num_seqs = 1;
    a.state.pool = pool.data();
    a.state.num_slots = 1;
    a.decay_rate = decay.data();
    a.scale = 1.f / std::sqrt(static_cast<float>(D));  // required: no hidden default
    return a;
  };

  // Reference: one prefill over all T tokens.
  std::vector<BFloat16> o_ref(q.size());
  std::vector<float> pool_ref(static_cast<std::size_t>(H * D * D), 0.f);
  memattn::Status st = memattn::cpu::linear_prefill(args_for(0, T, o_ref, pool_ref));
  if (!memattn::ok(st)) return std::fprintf(stderr, "prefill: %s\n", memattn::status_message(st)), 1;

  // Engine flow: prefill the prompt (two-phase workspace), then decode one token per step.
  std::vector<BFloat16> o(q.size());
  std::vector<float> pool(pool_ref.size(), 0.f);
  auto pa = args_for(0, prompt, o, pool);
  std::size_t bytes = 0;
  st = memattn::cpu::linear_prefill_workspace_size(pa, &bytes);
  memattn::HostWorkspace ws(bytes);
  if (memattn::ok(st)) st = memattn::cpu::linear_prefill(pa, ws.data(), bytes);
  if (!memattn::ok(st)) return std::fprintf(stderr, "prefill: %s\n", memattn::status_message(st)), 1;
  auto step0 = args_for(prompt, prompt + 1, o, pool);
  std::size_t dbytes = 0;
  st = memattn::cpu::linear_decode_workspace_size(step0, &dbytes);
  memattn::HostWorkspace dws(dbytes);
  for (std::int64_t t = prompt; t < T && memattn::ok(st); ++t)
    st = memattn::cpu::linear_decode(args_for(t, t + 1, o, pool), dws.data(), dbytes);
  if (!memattn::ok(st)) return std::fprintf(stderr, "decode: %s\n", memattn::status_message(st)), 1;

  double num = 0, den = 0, snum = 0, sden = 0;
  for (std::size_t i = static_cast<std::size_t>(prompt * H * D); i < o.size(); ++i) {
    const double a = memattn::to_float(o[i]), b = memattn::to_float(o_ref[i]);
    num += (a - b) * (a - b);
    den += b * b;
  }
  for (std::size_t i = 0; i < pool.size(); ++i) {
    snum += (double(pool[i]) - pool_ref[i]) * (double(pool[i]) - pool_ref[i]);
    sden += double(pool_ref[i]) * pool_ref[i];
  }
  const double eo = std::sqrt(num / den), es = std::sqrt(snum / sden);
  std::printf("Lightning prefill(%lld) + %lld decode steps vs one prefill(%lld): output relRMS %.2e, state relRMS %.2e\n",
              static_cast<long long>(prompt), static_cast<long long>(T - prompt), static_cast<long long>(T), eo, es);
  std::printf("state per (sequence, head): %lld x %lld fp32 = %lld KiB, independent of context length\n",
              static_cast<long long>(D), static_cast<long long>(D), static_cast<long long>(D * D * 4 / 1024));
  return eo < 5e-3 && es < 1e-3 ? 0 : 1;
}
