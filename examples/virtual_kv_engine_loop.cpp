// An engine loop over a virtual KV cache (vAttention-style), on the CPU:
//
//   * a VirtualKvCache reserves room for `slots` sequences of up to max_tokens each, for every
//     layer, K and V -- address space only; physical memory is committed as sequences grow;
//   * continuous batching: every slot always serves a request; a finished request frees its slot
//     (trim(slot, 0) returns the memory to the OS) and the next request is admitted into it;
//   * speculative decoding: each step appends a few draft tokens, then rolls back the rejected
//     ones with trim(slot, accepted_len);
//   * attention is the library's ordinary dense decode (cpu::dense_decode), unmodified: it reads
//     the cache through plain strided views of the stable virtual addresses -- no block table;
//   * at the end one step is recomputed on an ordinary allocation and must match bit for bit.
//
// Usage: virtual_kv_engine_loop [--steps N] [--layout per-layer|interleaved|both]
// Prints the committed / reserved / resident memory as the batch evolves. Exit 0 on success.
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <memattn/memattn.hpp>

namespace {

using memattn::Half;
using memattn::Status;
namespace mem = memattn::memory;

constexpr std::int64_t kSlots = 8, kLayers = 4, kHq = 8, kHkv = 2, kD = 64, kMaxTokens = 16384;
constexpr std::size_t kGranule = 64 * 1024;  // host granule: 256 tokens of one (layer, K/V) row

struct Request {
  std::int64_t id = 0;
  std::int64_t prompt = 0;    // prompt tokens (prefilled at admission)
  std::int64_t generate = 0;  // tokens to decode
  std::int64_t len = 0;       // tokens in the cache now
};

// Synthetic K/V of (request, layer, K/V, token, head, d): what a model's projections would write.
Half kv_value(std::int64_t req, std::int64_t layer, int which, std::int64_t t, std::int64_t h, std::int64_t d) {
  std::uint32_t x = static_cast<std::uint32_t>(req * 2654435761u) ^ static_cast<std::uint32_t>(t * 40503u) ^
                    static_cast<std::uint32_t>(((layer * 2 + which) * kHkv + h) * 97 + d);
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return memattn::float_to_half(static_cast<float>(static_cast<int>(x % 2001u) - 1000) / 500.f);
}

void write_token(const mem::VirtualKvCache<mem::HostVmBackend>& kv, std::int64_t slot, const Request& r,
                 std::int64_t t) {
  for (std::int64_t l = 0; l < kLayers; ++l)
    for (int which = 0; which < 2; ++which) {
      Half* row = (which == 0 ? kv.k<Half>(slot, l) : kv.v<Half>(slot, l)) + t * kv.token_stride();
      for (std::int64_t h = 0; h < kHkv; ++h)
        for (std::int64_t d = 0; d < kD; ++d) row[h * kv.head_stride() + d] = kv_value(r.id, l, which, t, h, d);
    }
}

double mib(std::size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

#define CHECK_OK(expr)                                                                     \
  do {                                                                                     \
    const Status st_ = (expr);                                                             \
    if (st_ != Status::kSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, memattn::status_message(st_)); \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

int run(mem::KvLayout layout, int steps) {
  std::printf("== layout %s, %lld slots x %lld layers x {K, V}, Hkv %lld, D %lld, fp16, max %lld tokens/slot\n",
              layout == mem::KvLayout::kPerLayer ? "per-layer" : "interleaved", static_cast<long long>(kSlots),
              static_cast<long long>(kLayers), static_cast<long long>(kHkv), static_cast<long long>(kD),
              static_cast<long long>(kMaxTokens));
  mem::VirtualKvCacheConfig cfg;
  cfg.slots = kSlots;
  cfg.layers = kLayers;
  cfg.kv_heads = kHkv;
  cfg.head_dim = kD;
  cfg.max_tokens = kMaxTokens;
  cfg.elem_bytes = sizeof(Half);
  cfg.layout = layout;
  mem::HostVmOptions host;
  host.granule_bytes = kGranule;
  mem::VirtualKvCache<mem::HostVmBackend> kv;
  CHECK_OK(kv.init(cfg, mem::HostVmBackend{host}));
  const std::size_t static_bytes =
      static_cast<std::size_t>(kSlots * kLayers * 2 * kMaxTokens * kHkv * kD) * sizeof(Half);
  std::printf("reserved %.1f MiB of address space, committed %.1f MiB (a static cache allocates %.1f MiB); "
              "granule %zu KiB\n",
              mib(kv.reserved_bytes()), mib(kv.committed_bytes()), mib(static_bytes), kv.granularity() / 1024);

  std::mt19937 rng(2024);
  std::int64_t next_id = 0;
  auto new_request = [&]() {
    Request r;
    r.id = next_id++;
    r.prompt = std::uniform_int_distribution<std::int64_t>(16, 1500)(rng);
    r.generate = std::uniform_int_distribution<std::int64_t>(8, 400)(rng);
    return r;
  };
  // Admission = prefill: back the prompt, write its K/V (a real engine runs prefill attention).
  auto admit = [&](std::int64_t slot, Request r) -> Status {
    MEMATTN_RETURN_IF_ERROR(kv.ensure_tokens(slot, r.prompt));
    for (std::int64_t t = 0; t < r.prompt; ++t) write_token(kv, slot, r, t);
    r.len = r.prompt;
    return Status::kSuccess;
  };
  std::vector<Request> reqs(kSlots);
  for (std::int64_t s = 0; s < kSlots; ++s) {
    reqs[s] = new_request();
    CHECK_OK(admit(s, reqs[s]));
    reqs[s].len = reqs[s].prompt;
  }

  // Decode buffers: one query token per sequence; workspace sized once (two-phase).
  std::vector<Half> q(kSlots * kHq * kD), o(q.size());
  std::vector<std::int32_t> seq_lens(kSlots);
  memattn::attention::DecodeArgs<Half> args;
  args.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {kSlots, 1, kHq, kD});
  args.o = memattn::make_view<4>(o.data(), {kSlots, 1, kHq, kD});
  args.seq_lens = seq_lens.data();
  CHECK_OK(kv.layer_views<const Half>(0, 0, kSlots, &args.k_cache, &args.v_cache));
  for (std::int64_t s = 0; s < kSlots; ++s) seq_lens[s] = static_cast<std::int32_t>(reqs[s].len);
  std::size_t ws_bytes = 0;  // depends on the shapes only: the same for every step
  CHECK_OK(memattn::cpu::dense_decode_workspace_size(args, &ws_bytes));
  memattn::HostWorkspace ws(ws_bytes);

  std::normal_distribution<float> normal(0.f, 1.f);
  std::size_t peak = 0, rss_peak = 0;
  std::int64_t finished = 0, drafted = 0, rejected = 0;
  for (int step = 0; step < steps; ++step) {
    // 1) Every sequence appends its next token plus up to 3 draft tokens (speculative decoding).
    //    ensure_tokens commits memory only when a granule boundary is crossed.
    std::vector<std::int64_t> drafts(kSlots);
    for (std::int64_t s = 0; s < kSlots; ++s) {
      Request& r = reqs[s];
      drafts[s] = std::min<std::int64_t>(kMaxTokens - r.len - 1, std::uniform_int_distribution<int>(0, 3)(rng));
      CHECK_OK(kv.ensure_tokens(s, r.len + 1 + drafts[s]));
      for (std::int64_t t = r.len; t < r.len + 1 + drafts[s]; ++t) write_token(kv, s, r, t);
      seq_lens[s] = static_cast<std::int32_t>(r.len + 1 + drafts[s]);
    }
    // 2) Attention in every layer: the library's ordinary dense decode, reading the virtual cache
    //    through strided views (the addresses never move, so the views could be built once).
    for (std::int64_t l = 0; l < kLayers; ++l) {
      for (auto& x : q) x = memattn::float_to_half(normal(rng));
      CHECK_OK(kv.layer_views<const Half>(l, 0, kSlots, &args.k_cache, &args.v_cache));
      CHECK_OK(memattn::cpu::dense_decode(args, ws.data(), ws_bytes));
    }
    // 3) Verification accepts a prefix of the drafts; trim rolls the rejected ones back (and
    //    returns a granule when the rollback crosses one). Finished requests free their slot
    //    and the next request is admitted into it.
    for (std::int64_t s = 0; s < kSlots; ++s) {
      Request& r = reqs[s];
      const std::int64_t accept = std::uniform_int_distribution<std::int64_t>(0, drafts[s])(rng);
      drafted += drafts[s];
      rejected += drafts[s] - accept;
      r.len += 1 + accept;
      CHECK_OK(kv.trim(s, r.len));
      if (r.len - r.prompt >= r.generate || r.len + 4 > kMaxTokens) {
        CHECK_OK(kv.trim(s, 0));
        ++finished;
        r = new_request();
        CHECK_OK(admit(s, r));
        r.len = r.prompt;
      }
    }
    peak = std::max(peak, kv.committed_bytes());
    std::size_t rss = 0;
    (void)mem::host_resident_bytes(&rss);
    rss_peak = std::max(rss_peak, rss);
    if (step % 50 == 0 || step == steps - 1) {
      std::int64_t live = 0;
      for (const Request& r : reqs) live += r.len;
      const double live_bytes = static_cast<double>(live) * kLayers * 2 * kHkv * kD * sizeof(Half);
      std::printf("step %4d: %5lld live tokens, committed %6.2f MiB (%.0f%% holds live KV), RSS %6.1f MiB\n", step,
                  static_cast<long long>(live), mib(kv.committed_bytes()),
                  100.0 * live_bytes / static_cast<double>(std::max<std::size_t>(1, kv.committed_bytes())), mib(rss));
    }
  }
  std::printf("%d steps: %lld requests finished, %lld draft tokens (%lld rolled back); peak committed %.2f MiB of "
              "%.2f MiB a static cache needs\n",
              steps, static_cast<long long>(finished), static_cast<long long>(drafted),
              static_cast<long long>(rejected), mib(peak), mib(static_bytes));

  // Check: the virtual cache and an ordinary allocation holding the same tokens give bitwise the
  // same attention (layer 0, current lengths).
  for (std::int64_t s = 0; s < kSlots; ++s) seq_lens[s] = static_cast<std::int32_t>(reqs[s].len);
  CHECK_OK(kv.layer_views<const Half>(0, 0, kSlots, &args.k_cache, &args.v_cache));
  CHECK_OK(memattn::cpu::dense_decode(args, ws.data(), ws_bytes));
  const std::vector<Half> o_virtual = o;
  std::int64_t lcap = 0;  // an ordinary [slots, Hkv, lcap, D] cache just long enough
  for (const Request& r : reqs) lcap = std::max(lcap, r.len);
  std::vector<Half> k_plain(static_cast<std::size_t>(kSlots * kHkv * lcap * kD)), v_plain(k_plain.size());
  for (std::int64_t s = 0; s < kSlots; ++s)
    for (std::int64_t t = 0; t < reqs[s].len; ++t)
      for (std::int64_t h = 0; h < kHkv; ++h) {
        const std::size_t dst = static_cast<std::size_t>(((s * kHkv + h) * lcap + t) * kD);
        std::memcpy(&k_plain[dst], kv.k<Half>(s, 0) + t * kv.token_stride() + h * kv.head_stride(), kD * sizeof(Half));
        std::memcpy(&v_plain[dst], kv.v<Half>(s, 0) + t * kv.token_stride() + h * kv.head_stride(), kD * sizeof(Half));
      }
  args.k_cache = memattn::make_view<4>(static_cast<const Half*>(k_plain.data()), {kSlots, kHkv, lcap, kD});
  args.v_cache = memattn::make_view<4>(static_cast<const Half*>(v_plain.data()), {kSlots, kHkv, lcap, kD});
  CHECK_OK(memattn::cpu::dense_decode(args, ws.data(), ws_bytes));
  for (std::size_t i = 0; i < o.size(); ++i) {
    if (o[i].bits != o_virtual[i].bits) {
      std::fprintf(stderr, "mismatch at %zu: virtual cache and plain allocation differ\n", i);
      return 1;
    }
  }
  std::printf("dense decode on the virtual cache == on a plain allocation (bitwise, %zu outputs)\n", o.size());

  // Shut down: every slot freed, all memory back.
  for (std::int64_t s = 0; s < kSlots; ++s) CHECK_OK(kv.trim(s, 0));
  std::size_t rss_end = 0;
  (void)mem::host_resident_bytes(&rss_end);
  std::printf("all slots trimmed: committed %.2f MiB, RSS %.1f MiB (peak %.1f MiB)\n\n", mib(kv.committed_bytes()),
              mib(rss_end), mib(rss_peak));
  return kv.committed_bytes() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 300;
  std::string layout = "both";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--layout") && i + 1 < argc) {
      layout = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--steps N] [--layout per-layer|interleaved|both]\n", argv[0]);
      return 2;
    }
  }
  if (steps <= 0 || (layout != "both" && layout != "per-layer" && layout != "interleaved")) {
    std::fprintf(stderr, "bad --steps or --layout\n");
    return 2;
  }
  int rc = 0;
  if (layout != "interleaved") rc |= run(mem::KvLayout::kPerLayer, steps);
  if (layout != "per-layer") rc |= run(mem::KvLayout::kInterleaved, steps);
  return rc;
}
