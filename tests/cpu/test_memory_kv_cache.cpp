// VirtualKvCache<HostVmBackend>: both layouts grow and trim slots with exact commit accounting,
// stable pointers and data kept; cpu::dense_decode reads the cache through plain strided views
// and gives bitwise the same result as on an ordinary allocation (tokens past a sequence's length
// are PROT_NONE, so a read past it would crash the test); the identity page table addresses the
// same memory; ensure_tokens is all-or-nothing under injected faults; every bad input.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/memory_test_util.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/memory/host_vm_backend.hpp"
#include "memattn/memory/virtual_kv_cache.hpp"

using memattn::Half;
using memattn::Status;
using memattn::TensorView;
using memattn::memory::HostVmBackend;
using memattn::memory::HostVmOptions;
using memattn::memory::IdentityPageTable;
using memattn::memory::KvLayout;
using memattn::memory::VirtualKvCache;
using memattn::memory::VirtualKvCacheConfig;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

VirtualKvCacheConfig small_config(KvLayout layout) {
  VirtualKvCacheConfig c;
  c.slots = 4;
  c.layers = 3;
  c.kv_heads = 2;
  c.head_dim = 64;
  c.max_tokens = 8192;
  c.elem_bytes = 2;
  c.layout = layout;
  return c;
}

std::size_t align_up(std::size_t x, std::size_t a) { return (x + a - 1) / a * a; }

// Value of element (slot, layer, kv, token, head, d): distinct per position and exact in fp16.
Half value(std::int64_t s, std::int64_t l, int kv, std::int64_t t, std::int64_t h, std::int64_t d) {
  const std::uint32_t x = static_cast<std::uint32_t>(((s * 7 + l) * 2 + kv) * 1000003 + t * 131 + h * 17 + d);
  return memattn::float_to_half(static_cast<float>(static_cast<int>(x % 2001) - 1000) / 256.f);
}

void write_token(const VirtualKvCache<HostVmBackend>& kv, std::int64_t s, std::int64_t t) {
  const auto& c = kv.config();
  for (std::int64_t l = 0; l < c.layers; ++l)
    for (int which = 0; which < 2; ++which) {
      Half* base = which == 0 ? kv.k<Half>(s, l) : kv.v<Half>(s, l);
      for (std::int64_t h = 0; h < c.kv_heads; ++h)
        for (std::int64_t d = 0; d < c.head_dim; ++d)
          base[t * kv.token_stride() + h * kv.head_stride() + d] = value(s, l, which, t, h, d);
    }
}

bool check_token(const VirtualKvCache<HostVmBackend>& kv, std::int64_t s, std::int64_t t) {
  const auto& c = kv.config();
  for (std::int64_t l = 0; l < c.layers; ++l)
    for (int which = 0; which < 2; ++which) {
      const Half* base = which == 0 ? kv.k<Half>(s, l) : kv.v<Half>(s, l);
      for (std::int64_t h = 0; h < c.kv_heads; ++h)
        for (std::int64_t d = 0; d < c.head_dim; ++d)
          if (base[t * kv.token_stride() + h * kv.head_stride() + d].bits != value(s, l, which, t, h, d).bits)
            return false;
    }
  return true;
}

// Bytes one slot commits for n tokens.
std::size_t slot_commit(const VirtualKvCache<HostVmBackend>& kv, std::int64_t n) {
  const auto& c = kv.config();
  const std::size_t row = static_cast<std::size_t>(c.kv_heads * c.head_dim) * c.elem_bytes;
  const std::size_t G = kv.granularity();
  if (c.layout == KvLayout::kPerLayer) return 2 * static_cast<std::size_t>(c.layers) * align_up(n * row, G);
  return align_up(n * row * 2 * static_cast<std::size_t>(c.layers), G);
}

}  // namespace

TEST_CASE("VirtualKvCache: grow and trim, exact commits, stable pointers, data kept", "[memory][kv]") {
  for (KvLayout layout : {KvLayout::kPerLayer, KvLayout::kInterleaved}) {
    INFO("layout " << static_cast<int>(layout));
    const VirtualKvCacheConfig cfg = small_config(layout);
    VirtualKvCache<HostVmBackend> kv;
    REQUIRE(kv.init(cfg) == Status::kSuccess);
    REQUIRE(kv.initialized());
    REQUIRE(kv.committed_bytes() == 0);
    REQUIRE(kv.reserved_bytes() == static_cast<std::size_t>(cfg.slots) * kv.slot_bytes());
    REQUIRE(kv.regions_per_slot() == (layout == KvLayout::kPerLayer ? 6u : 1u));
    REQUIRE(kv.head_stride() == 64);
    REQUIRE(kv.token_stride() == (layout == KvLayout::kPerLayer ? 128 : 128 * 2 * 3));
    REQUIRE(kv.slot_stride() * 2 == static_cast<std::int64_t>(kv.slot_bytes()));
    Half* const k00 = kv.k<Half>(0, 0);
    REQUIRE(k00 != nullptr);

    // Sequences of different lengths grow token by token (ensure_tokens before each write).
    const std::int64_t target[4] = {3000, 1, 8192, 517};
    std::int64_t len[4] = {0, 0, 0, 0};
    bool growing = true;
    while (growing) {
      growing = false;
      for (std::int64_t s = 0; s < cfg.slots; ++s) {
        for (int step = 0; step < 97 && len[s] < target[s]; ++step) {
          REQUIRE(kv.ensure_tokens(s, len[s] + 1) == Status::kSuccess);
          write_token(kv, s, len[s]);
          ++len[s];
        }
        growing = growing || len[s] < target[s];
      }
    }
    std::size_t expect = 0;
    for (std::int64_t s = 0; s < cfg.slots; ++s) {
      expect += slot_commit(kv, len[s]);
      REQUIRE(kv.backed_tokens(s) >= len[s]);
      REQUIRE(kv.backed_tokens(s) <= cfg.max_tokens);
    }
    REQUIRE(kv.committed_bytes() == expect);
    REQUIRE(kv.k<Half>(0, 0) == k00);
    for (std::int64_t s = 0; s < cfg.slots; ++s)
      for (std::int64_t t = 0; t < len[s]; ++t) REQUIRE(check_token(kv, s, t));

    // Trim slot 2 to 100 tokens and free slot 0: memory goes back, the rest is untouched.
    const std::size_t rss_before = memattn_test::rss_bytes();
    REQUIRE(kv.trim(2, 100) == Status::kSuccess);
    REQUIRE(kv.trim(0, 0) == Status::kSuccess);
    REQUIRE(kv.trim(0, 0) == Status::kSuccess);      // again: no-op
    REQUIRE(kv.trim(3, 8000) == Status::kSuccess);   // beyond what is backed: no-op
    const std::size_t rss_after = memattn_test::rss_bytes();
    REQUIRE(kv.backed_tokens(0) == 0);
    REQUIRE(kv.backed_tokens(2) >= 100);
    REQUIRE(kv.committed_bytes() == slot_commit(kv, 1) + slot_commit(kv, 100) + slot_commit(kv, 517));
    REQUIRE(rss_after + (slot_commit(kv, 8192) - slot_commit(kv, 100)) / 2 <= rss_before);
    for (std::int64_t t = 0; t < 100; ++t) REQUIRE(check_token(kv, 2, t));
    for (std::int64_t t = 0; t < 517; ++t) REQUIRE(check_token(kv, 3, t));
    REQUIRE(check_token(kv, 1, 0));

    // Regrow slot 2: the kept tokens are intact, and the pointer has not moved.
    REQUIRE(kv.ensure_tokens(2, 5000) == Status::kSuccess);
    for (std::int64_t t = 0; t < 100; ++t) REQUIRE(check_token(kv, 2, t));
    REQUIRE(kv.k<Half>(0, 0) == k00);

    for (std::int64_t s = 0; s < cfg.slots; ++s) REQUIRE(kv.trim(s, 0) == Status::kSuccess);
    REQUIRE(kv.committed_bytes() == 0);
  }
}

TEST_CASE("VirtualKvCache: interleaving commits once per granule for all layers", "[memory][kv]") {
  VirtualKvCacheConfig cfg;
  cfg.slots = 2;
  cfg.layers = 32;
  cfg.kv_heads = 8;
  cfg.head_dim = 128;
  cfg.max_tokens = 4096;
  cfg.layout = KvLayout::kInterleaved;
  VirtualKvCache<HostVmBackend> inter;
  REQUIRE(inter.init(cfg) == Status::kSuccess);
  cfg.layout = KvLayout::kPerLayer;
  VirtualKvCache<HostVmBackend> per;
  REQUIRE(per.init(cfg) == Status::kSuccess);
  // 2 KiB per token row: per-layer a 2 MiB granule holds 1024 tokens of one (layer, K/V);
  // interleaved a token is 128 KiB across the model, so a granule holds 16 tokens of all layers.
  REQUIRE(per.tokens_per_granule() == 1024);
  REQUIRE(inter.tokens_per_granule() == 16);
  REQUIRE(per.ensure_tokens(0, 17) == Status::kSuccess);
  REQUIRE(inter.ensure_tokens(0, 17) == Status::kSuccess);
  REQUIRE(per.committed_bytes() == 64 * 2 * kMiB);  // a granule in each of the 64 regions
  REQUIRE(inter.committed_bytes() == 2 * 2 * kMiB);  // two granules in all: 32 tokens backed
  REQUIRE(inter.backed_tokens(0) == 32);
  REQUIRE(per.backed_tokens(0) == 1024);
  // Slot padding: per-layer pads each of the 64 regions, interleaved only the slot.
  REQUIRE(per.slot_bytes() == 64 * 8 * kMiB);
  REQUIRE(inter.slot_bytes() == 512 * kMiB);
}

TEST_CASE("VirtualKvCache: dense decode reads the virtual cache unmodified (bitwise)", "[memory][kv][decode]") {
  for (KvLayout layout : {KvLayout::kPerLayer, KvLayout::kInterleaved}) {
    INFO("layout " << static_cast<int>(layout));
    VirtualKvCacheConfig cfg = small_config(layout);
    cfg.layers = 2;
    VirtualKvCache<HostVmBackend> kv;
    REQUIRE(kv.init(cfg) == Status::kSuccess);
    // Lengths; 2048 ends exactly on a granule in the interleaved layout (1 KiB per token), so a
    // read past the sequence would hit a PROT_NONE page.
    const std::int64_t B = 3, Hq = 8, D = cfg.head_dim, Hkv = cfg.kv_heads, L = cfg.max_tokens;
    const std::int32_t lens[B] = {2048, 77, 1500};
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t s = b + 1;  // slots 1..3: a batch that does not start at slot 0
      REQUIRE(kv.ensure_tokens(s, lens[b]) == Status::kSuccess);
      for (std::int64_t t = 0; t < lens[b]; ++t) write_token(kv, s, t);
    }
    if (layout == KvLayout::kInterleaved) REQUIRE(kv.backed_tokens(1) == 2048);

    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<Half> q(B * Hq * D);
    for (auto& x : q) x = memattn::float_to_half(nd(rng));

    IdentityPageTable pt;
    REQUIRE(kv.paged_view(16, &pt) == Status::kSuccess);
    REQUIRE(pt.contiguous_pages == (layout == KvLayout::kPerLayer));
    std::vector<std::int32_t> table(static_cast<std::size_t>(B * pt.slot_pages));
    REQUIRE(pt.fill(table.data(), 1, B, pt.slot_pages) == Status::kSuccess);

    for (std::int64_t layer = 0; layer < cfg.layers; ++layer) {
      TensorView<const Half, 4> kview, vview;
      REQUIRE(kv.layer_views<const Half>(layer, 1, B, &kview, &vview) == Status::kSuccess);
      REQUIRE(kview.shape[0] == B);
      REQUIRE(kview.shape[2] == L);

      // The same data in an ordinary [B, Hkv, L, D] allocation, gathered through the identity
      // page table (so the table is checked to address the same memory as the views).
      std::vector<Half> kp(B * Hkv * L * D, memattn::float_to_half(0.f)), vp(kp.size(), memattn::float_to_half(0.f));
      const Half* kpool = kv.k<Half>(0, layer);
      const Half* vpool = kv.v<Half>(0, layer);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < lens[b]; ++t) {
          const std::int64_t page = table[static_cast<std::size_t>(b * pt.slot_pages + t / pt.page_tokens)];
          const std::int64_t off = page * pt.page_stride + (t % pt.page_tokens) * pt.token_stride;
          for (std::int64_t h = 0; h < Hkv; ++h) {
            REQUIRE(kpool + off + h * pt.head_stride == kview.ptr(b, h, t));
            std::memcpy(&kp[((b * Hkv + h) * L + t) * D], kpool + off + h * pt.head_stride, D * sizeof(Half));
            std::memcpy(&vp[((b * Hkv + h) * L + t) * D], vpool + off + h * pt.head_stride, D * sizeof(Half));
          }
        }

      std::vector<Half> o_virtual(q.size()), o_plain(q.size());
      std::vector<float> lse_virtual(B * Hq), lse_plain(B * Hq);
      memattn::attention::DecodeArgs<Half> a;
      a.q = memattn::make_view<4>(static_cast<const Half*>(q.data()), {B, 1, Hq, D});
      a.k_cache = kview;
      a.v_cache = vview;
      a.seq_lens = lens;
      a.o = memattn::make_view<4>(o_virtual.data(), {B, 1, Hq, D});
      a.lse = memattn::make_view<3>(lse_virtual.data(), {B, 1, Hq});
      REQUIRE(memattn::cpu::dense_decode(a) == Status::kSuccess);

      a.k_cache = memattn::make_view<4>(static_cast<const Half*>(kp.data()), {B, Hkv, L, D});
      a.v_cache = memattn::make_view<4>(static_cast<const Half*>(vp.data()), {B, Hkv, L, D});
      a.o = memattn::make_view<4>(o_plain.data(), {B, 1, Hq, D});
      a.lse = memattn::make_view<3>(lse_plain.data(), {B, 1, Hq});
      REQUIRE(memattn::cpu::dense_decode(a) == Status::kSuccess);

      for (std::size_t i = 0; i < o_plain.size(); ++i) REQUIRE(o_virtual[i].bits == o_plain[i].bits);
      REQUIRE(std::memcmp(lse_virtual.data(), lse_plain.data(), lse_plain.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("VirtualKvCache: identity page table", "[memory][kv][paged]") {
  for (KvLayout layout : {KvLayout::kPerLayer, KvLayout::kInterleaved}) {
    VirtualKvCache<HostVmBackend> kv;
    REQUIRE(kv.init(small_config(layout)) == Status::kSuccess);
    const auto& c = kv.config();
    for (std::int64_t page_tokens : {1, 16, 256}) {
      IdentityPageTable pt;
      REQUIRE(kv.paged_view(page_tokens, &pt) == Status::kSuccess);
      REQUIRE(pt.page_tokens == page_tokens);
      REQUIRE(pt.slot_pages == (c.max_tokens + page_tokens - 1) / page_tokens);
      REQUIRE(pt.pages_per_slot >= pt.slot_pages);
      REQUIRE(pt.num_pages == pt.pages_per_slot * c.slots);
      for (std::int64_t s = 0; s < c.slots; ++s)
        for (std::int64_t l = 0; l < c.layers; ++l)
          for (std::int64_t t : {std::int64_t{0}, page_tokens - 1, page_tokens, std::int64_t{4097}, c.max_tokens - 1})
            for (std::int64_t h = 0; h < c.kv_heads; ++h) {
              const std::int64_t rel = pt.page(s, t / page_tokens) * pt.page_stride + (t % page_tokens) * pt.token_stride +
                                       h * pt.head_stride;
              REQUIRE(kv.k<Half>(0, l) + rel == kv.k<Half>(s, l) + t * kv.token_stride() + h * kv.head_stride());
              REQUIRE(kv.v<Half>(0, l) + rel == kv.v<Half>(s, l) + t * kv.token_stride() + h * kv.head_stride());
            }
    }
    IdentityPageTable pt;
    REQUIRE(kv.paged_view(16, &pt) == Status::kSuccess);
    std::vector<std::int32_t> table(2 * 8, -1);
    REQUIRE(pt.fill(table.data(), 2, 2, 8) == Status::kSuccess);
    for (std::int64_t r = 0; r < 2; ++r)
      for (std::int64_t i = 0; i < 8; ++i) REQUIRE(table[static_cast<std::size_t>(r * 8 + i)] == pt.page(2 + r, i));
    // Bad inputs.
    REQUIRE(pt.fill(nullptr, 0, 1, 1) == Status::kErrorNullPointer);
    REQUIRE(pt.fill(table.data(), 0, 1, pt.slot_pages + 1) == Status::kErrorInvalidArgument);
    REQUIRE(pt.fill(table.data(), 3, 2, 1) == Status::kErrorInvalidArgument);  // past the last slot
    REQUIRE(pt.fill(table.data(), -1, 1, 1) == Status::kErrorInvalidArgument);
    REQUIRE(kv.paged_view(0, &pt) == Status::kErrorInvalidArgument);
    REQUIRE(kv.paged_view(c.max_tokens + 1, &pt) == Status::kErrorInvalidArgument);
    REQUIRE(kv.paged_view(7, &pt) == Status::kErrorInvalidArgument);  // slot stride not a page multiple
    REQUIRE(kv.paged_view(16, nullptr) == Status::kErrorNullPointer);
  }
}

TEST_CASE("VirtualKvCache: ensure_tokens is all-or-nothing (fault injection)", "[memory][kv][faults]") {
  HostVmOptions opt;
  opt.granule_bytes = 64 * 1024;
  memattn_test::FaultPlan plan;
  VirtualKvCacheConfig cfg = small_config(KvLayout::kPerLayer);
  VirtualKvCache<memattn_test::FaultyBackend> kv;
  REQUIRE(kv.init(cfg, memattn_test::FaultyBackend{opt, &plan}) == Status::kSuccess);
  REQUIRE(kv.ensure_tokens(1, 300) == Status::kSuccess);  // 256 B rows: 300 tokens = 2 granules
  auto* k = kv.k<Half>(1, 2);
  k[299 * kv.token_stride()] = memattn::float_to_half(3.f);
  const std::size_t committed = kv.committed_bytes();
  const std::int64_t backed = kv.backed_tokens(1);
  REQUIRE(backed == 512);
  // The 4th region's commit fails: regions 0..2 are rolled back.
  plan.fail_commit_call = plan.commit_calls + 4;
  REQUIRE(kv.ensure_tokens(1, 2000) == Status::kErrorOutOfMemory);
  REQUIRE(kv.committed_bytes() == committed);
  REQUIRE(plan.committed_granules * opt.granule_bytes == committed);
  REQUIRE(kv.backed_tokens(1) == backed);
  REQUIRE(memattn::half_to_float(k[299 * kv.token_stride()]) == 3.f);
  plan.fail_commit_call = 0;
  REQUIRE(kv.ensure_tokens(1, 2000) == Status::kSuccess);
  REQUIRE(kv.backed_tokens(1) == 2048);
  REQUIRE(memattn::half_to_float(k[299 * kv.token_stride()]) == 3.f);

  // A trim whose decommit fails part-way: no longer promised past the target, and a later trim
  // finishes the job.
  plan.fail_decommit_call = plan.decommit_calls + 3;
  REQUIRE(kv.trim(1, 100) == Status::kErrorOutOfMemory);
  REQUIRE(kv.backed_tokens(1) == 256);
  plan.fail_decommit_call = 0;
  REQUIRE(kv.trim(1, 100) == Status::kSuccess);
  REQUIRE(kv.committed_bytes() == static_cast<std::size_t>(2 * cfg.layers) * opt.granule_bytes);
  REQUIRE(plan.committed_granules * opt.granule_bytes == kv.committed_bytes());
  REQUIRE(memattn::half_to_float(k[99 * kv.token_stride()]) == 0.f);
}

TEST_CASE("VirtualKvCache: bad input", "[memory][kv][bad_input]") {
  SECTION("config") {
    const VirtualKvCacheConfig good = small_config(KvLayout::kPerLayer);
    auto with = [&](auto mutate) {
      VirtualKvCacheConfig c = good;
      mutate(c);
      VirtualKvCache<HostVmBackend> kv;
      const Status st = kv.init(c);
      REQUIRE(!kv.initialized());
      return st;
    };
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.slots = 0; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.layers = -1; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.kv_heads = 0; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.head_dim = 0; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.max_tokens = 0; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.elem_bytes = 0; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.elem_bytes = 3; }) == Status::kErrorInvalidArgument);
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.layout = static_cast<KvLayout>(7); }) == Status::kErrorInvalidArgument);
    // Larger than any address space: overflow or mmap failure, never a crash.
    REQUIRE(with([](VirtualKvCacheConfig& c) { c.max_tokens = std::numeric_limits<std::int64_t>::max(); }) ==
            Status::kErrorOutOfMemory);
    REQUIRE(with([](VirtualKvCacheConfig& c) {
              c.slots = 1 << 20;
              c.max_tokens = 1 << 20;
            }) == Status::kErrorOutOfMemory);
    VirtualKvCache<HostVmBackend> kv;
    REQUIRE(kv.init(good) == Status::kSuccess);
    REQUIRE(kv.init(good) == Status::kErrorInvalidArgument);  // twice
  }
  SECTION("calls") {
    VirtualKvCache<HostVmBackend> none;
    REQUIRE(none.ensure_tokens(0, 1) == Status::kErrorNullPointer);
    REQUIRE(none.trim(0, 0) == Status::kErrorNullPointer);
    REQUIRE(none.k<Half>(0, 0) == nullptr);
    REQUIRE(none.backed_tokens(0) == 0);
    TensorView<Half, 4> kvw, vvw;
    REQUIRE(none.layer_views<Half>(0, 0, 1, &kvw, &vvw) == Status::kErrorNullPointer);

    VirtualKvCache<HostVmBackend> kv;
    const VirtualKvCacheConfig c = small_config(KvLayout::kInterleaved);
    REQUIRE(kv.init(c) == Status::kSuccess);
    REQUIRE(kv.ensure_tokens(0, 10) == Status::kSuccess);
    const std::size_t committed = kv.committed_bytes();
    REQUIRE(kv.ensure_tokens(-1, 1) == Status::kErrorInvalidArgument);
    REQUIRE(kv.ensure_tokens(c.slots, 1) == Status::kErrorInvalidArgument);
    REQUIRE(kv.ensure_tokens(0, -1) == Status::kErrorInvalidArgument);
    REQUIRE(kv.ensure_tokens(0, c.max_tokens + 1) == Status::kErrorCapacityExceeded);
    REQUIRE(kv.trim(c.slots, 0) == Status::kErrorInvalidArgument);
    REQUIRE(kv.trim(0, -5) == Status::kErrorInvalidArgument);
    REQUIRE(kv.trim(0, c.max_tokens + 1) == Status::kErrorCapacityExceeded);
    REQUIRE(kv.committed_bytes() == committed);
    REQUIRE(kv.ensure_tokens(0, c.max_tokens) == Status::kSuccess);  // exactly full is fine
    REQUIRE(kv.backed_tokens(0) == c.max_tokens);

    REQUIRE(kv.k<float>(0, 0) == nullptr);  // wrong element size
    REQUIRE(kv.k<Half>(0, c.layers) == nullptr);
    REQUIRE(kv.v<Half>(-1, 0) == nullptr);
    REQUIRE(kv.layer_views<Half>(0, 0, 1, nullptr, &vvw) == Status::kErrorNullPointer);
    TensorView<float, 4> fk, fv;
    REQUIRE(kv.layer_views<float>(0, 0, 1, &fk, &fv) == Status::kErrorInvalidArgument);
    REQUIRE(kv.layer_views<Half>(c.layers, 0, 1, &kvw, &vvw) == Status::kErrorInvalidArgument);
    REQUIRE(kv.layer_views<Half>(0, 0, 0, &kvw, &vvw) == Status::kErrorInvalidArgument);
    REQUIRE(kv.layer_views<Half>(0, 2, c.slots - 1, &kvw, &vvw) == Status::kErrorInvalidArgument);
    REQUIRE(kv.layer_views<Half>(0, 0, c.slots, &kvw, &vvw) == Status::kSuccess);
  }
}
