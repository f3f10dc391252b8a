// The AVX2 quantiser (cpu/quantize_codes.hpp, cpu/kivi_quantize.hpp) against the scalar fp64 one
// that the GPU shares (quant/qmath.hpp, quant::quantize_block): every byte of the KIVI record and
// the flags, for every bit width, group, value group and head_dim the config allows, on random,
// tied, constant, subnormal, large and non-finite data (both records start as garbage, so a byte
// the vector path leaves unwritten fails too); the pieces at any key width; the Codec the MiKV
// pools and the composed cache use. Built with -mavx2 -mfma -mf16c; main: avx2_main.cpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "memattn/cpu/kivi_quantize.hpp"
#include "memattn/cpu/quantize_codes.hpp"
#include "memattn/quant/mixed_block_store.hpp"
#include "memattn/quant/mixed_store.hpp"

#if !defined(MEMATTN_QUANT_AVX2)
#error "test_kivi_quantize is built with -mavx2 -mfma -mf16c: the vector quantiser must be enabled"
#endif

using namespace memattn;

namespace {

enum class Data { kNormal, kTies, kConstant, kTiny, kLarge, kNonFinite, kSignedZeros };

std::vector<Half> make_rows(Data kind, int G, int D, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> small(-6, 6);
  std::vector<Half> x(static_cast<std::size_t>(G) * D);
  for (std::size_t i = 0; i < x.size(); ++i) {
    float f = 0.f;
    switch (kind) {
      case Data::kNormal: f = nd(rng) * (1.f + static_cast<float>(i % 7)); break;
      case Data::kTies: f = 0.25f * static_cast<float>(small(rng)); break;  // (x - z) / s lands on .5
      case Data::kConstant: f = 1.5f; break;  // s = 2^-24, every code 0
      case Data::kTiny: f = nd(rng) * 3e-7f; break;  // fp16 subnormals, scale floor 2^-24
      case Data::kLarge: f = nd(rng) * 20000.f; break;
      case Data::kNonFinite: f = nd(rng); break;
      case Data::kSignedZeros: f = (rng() & 1) ? 0.f : -0.f; break;
    }
    x[i] = float_to_half(f);
  }
  if (kind == Data::kLarge) x[0] = float_to_half(65504.f), x[1] = float_to_half(-65504.f);
  if (kind == Data::kNonFinite) {
    const float bad[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                         std::numeric_limits<float>::quiet_NaN()};
    for (int i = 0; i < 5; ++i) x[rng() % x.size()] = float_to_half(bad[i % 3]);
    x[x.size() - 1].bits = 0x7C01;  // a signalling-NaN pattern
  }
  return x;
}

}  // namespace

TEST_CASE("AVX2 KIVI quantiser writes quant::quantize_block's record bit for bit", "[kivi][quant][avx2]") {
  std::mt19937 rng(11);
  const Data kinds[] = {Data::kNormal, Data::kTies, Data::kConstant, Data::kTiny, Data::kLarge, Data::kNonFinite, Data::kSignedZeros};
  int configs = 0, blocks = 0, vector_blocks = 0;
  for (int D : {8, 16, 40, 64, 96, 128, 256})
    for (int G : {32, 64, 128})
      for (int GV : {0, 8, 12, 16, 32, 64})
        for (int bk : {2, 4, 8})
          for (int bv : {2, 4, 8}) {
            quant::KvQuantConfig cfg;
            cfg.head_dim = D;
            cfg.group = G;
            cfg.v_group = GV;
            cfg.bits_k = bk;
            cfg.bits_v = bv;
            cfg.residual = G;
            if (cfg.validate() != Status::kSuccess) continue;
            ++configs;
            const quant::BlockLayout lay = quant::block_layout(cfg);
            for (Data kind : kinds) {
              if (kind != Data::kNormal && (bk != bv || G != 32) && kind != Data::kNonFinite) continue;
              const std::vector<Half> k = make_rows(kind, G, D, rng), v = make_rows(kind, G, D, rng);
              std::vector<const Half*> kr(static_cast<std::size_t>(G)), vr(kr.size());
              for (int t = 0; t < G; ++t) {
                kr[static_cast<std::size_t>(t)] = k.data() + static_cast<std::ptrdiff_t>(t) * D;
                vr[static_cast<std::size_t>(t)] = v.data() + static_cast<std::ptrdiff_t>(t) * D;
              }
              std::vector<std::uint32_t> want(lay.bytes / 4, 0xA5A5A5A5u), got(lay.bytes / 4, 0x5A5A5A5Au);
              std::vector<std::uint8_t> scratch(cpu::kivi_quant::scratch_bytes(cfg), 0xEE);
              const std::uint32_t fw = quant::quantize_block(cfg, kr.data(), vr.data(), reinterpret_cast<std::uint8_t*>(want.data()));
              const std::uint32_t fg =
                  cpu::kivi_quant::quantize_block(cfg, kr.data(), vr.data(), reinterpret_cast<std::uint8_t*>(got.data()), scratch.data());
              INFO("D " << D << " G " << G << " GV " << cfg.vg() << " bits " << bk << "/" << bv << " data " << static_cast<int>(kind));
              REQUIRE(fg == fw);
              REQUIRE(std::memcmp(want.data(), got.data(), lay.bytes) == 0);
              if (kind == Data::kNonFinite) CHECK(fw == quant::kQuantNonFinite);
              ++blocks;
              vector_blocks += cfg.vg() % 8 == 0;
            }
          }
  CHECK(configs > 300);
  CHECK(vector_blocks > 1000);
  CHECK(vector_blocks < blocks);  // value groups of 12 take the scalar path
}

// The pieces the composed cache uses directly: per-channel groups of any width (its pruned keys)
// and per-token groups, each packed as a stream from element 0, against group_params / encode /
// pack_code on a zeroed stream (tails of n B % 32 bits included).
TEST_CASE("AVX2 quantiser pieces: any key width and per-token groups == the scalar quantiser", "[kivi][quant][avx2]") {
  std::mt19937 rng(5);
  const Data kinds[] = {Data::kNormal, Data::kTies, Data::kTiny, Data::kNonFinite, Data::kSignedZeros};
  for (int bits : {2, 4, 8})
    for (int G : {1, 3, 32, 64})
      for (int width : {1, 5, 8, 13, 77, 128})
        for (Data kind : kinds) {
          INFO("bits " << bits << " G " << G << " width " << width << " data " << static_cast<int>(kind));
          const int L = (1 << bits) - 1;
          const std::vector<Half> x = make_rows(kind, G, width, rng);
          std::vector<const Half*> rows(static_cast<std::size_t>(G));
          for (int t = 0; t < G; ++t) rows[static_cast<std::size_t>(t)] = x.data() + static_cast<std::ptrdiff_t>(t) * width;
          const std::size_t words = (static_cast<std::size_t>(G) * width * bits + 31) / 32;
          std::vector<std::uint32_t> want(words, 0u), got(words, 0u);
          std::vector<std::uint16_t> want_meta(2 * static_cast<std::size_t>(width)), got_meta(want_meta.size(), 0xBEEF);
          std::uint32_t want_flags = 0;
          std::vector<Half> col(static_cast<std::size_t>(G));
          for (int c = 0; c < width; ++c) {
            for (int t = 0; t < G; ++t) col[static_cast<std::size_t>(t)] = x[static_cast<std::size_t>(t * width + c)];
            quant::GroupMeta m;
            want_flags |= quant::group_params(col.data(), G, 1, L, &m);
            want_meta[2 * static_cast<std::size_t>(c)] = m.scale.bits;
            want_meta[2 * static_cast<std::size_t>(c) + 1] = m.zero.bits;
            for (int t = 0; t < G; ++t)
              quant::pack_code(want.data(), static_cast<std::int64_t>(t) * width + c, bits, quant::encode(col[static_cast<std::size_t>(t)], m, L));
          }
          std::vector<std::uint8_t> codes(static_cast<std::size_t>(G) * width);
          const std::uint32_t got_flags = cpu::quant_codes::channel_groups(rows.data(), G, width, L, got_meta.data(), codes.data());
          cpu::quant_codes::pack_stream(codes.data(), static_cast<std::int64_t>(codes.size()), bits, reinterpret_cast<std::uint8_t*>(got.data()));
          CHECK(got_flags == want_flags);
          CHECK(got_meta == want_meta);
          CHECK(got == want);
        }
  for (int bits : {2, 4, 8})
    for (int D : {8, 16, 64, 128, 256})
      for (int GV : {8, 16, 32, 64})
        for (Data kind : kinds) {
          if (D % GV != 0) continue;
          INFO("bits " << bits << " D " << D << " GV " << GV << " data " << static_cast<int>(kind));
          const int L = (1 << bits) - 1;
          const std::vector<Half> x = make_rows(kind, 1, D, rng);
          const std::size_t words = (static_cast<std::size_t>(D) * bits + 31) / 32;
          std::vector<std::uint32_t> want(words, 0u), got(words, 0u);
          std::vector<std::uint16_t> want_meta(2 * static_cast<std::size_t>(D / GV)), got_meta(want_meta.size(), 0xBEEF);
          std::uint32_t want_flags = 0;
          for (int j = 0; j < D / GV; ++j) {
            quant::GroupMeta m;
            want_flags |= quant::group_params(x.data() + j * GV, GV, 1, L, &m);
            want_meta[2 * static_cast<std::size_t>(j)] = m.scale.bits;
            want_meta[2 * static_cast<std::size_t>(j) + 1] = m.zero.bits;
            for (int c = j * GV; c < (j + 1) * GV; ++c) quant::pack_code(want.data(), c, bits, quant::encode(x[static_cast<std::size_t>(c)], m, L));
          }
          std::vector<std::uint8_t> codes(static_cast<std::size_t>(D));
          const std::uint32_t got_flags = cpu::quant_codes::token_groups(x.data(), D, GV, L, got_meta.data(), codes.data());
          cpu::quant_codes::pack_stream(codes.data(), D, bits, reinterpret_cast<std::uint8_t*>(got.data()));
          CHECK(got_flags == want_flags);
          CHECK(got_meta == want_meta);
          CHECK(got == want);
        }
}

// cpu::quant_codes::Codec, which the MiKV pools and the composed cache are built with, against
// quant::ScalarCodec: 2/4/8-bit codes take the vector path, 3-bit codes and value groups that are
// not whole vectors the scalar one; then whole MiKV records and lowk=1 blocks built both ways.
TEST_CASE("quant_codes::Codec writes quant::ScalarCodec's bits (MiKV rows and blocks, composed blocks)", "[kivi][quant][avx2]") {
  using Codec = cpu::quant_codes::Codec;
  using Scalar = quant::ScalarCodec;
  std::mt19937 rng(9);
  for (int bits : {2, 3, 4, 8})
    for (Data kind : {Data::kNormal, Data::kTies, Data::kNonFinite}) {
      for (int G : {1, 32})
        for (int width : {5, 77, 128}) {
          INFO("channels: bits " << bits << " G " << G << " width " << width);
          const std::vector<Half> x = make_rows(kind, G, width, rng);
          std::vector<const Half*> rows(static_cast<std::size_t>(G));
          for (int t = 0; t < G; ++t) rows[static_cast<std::size_t>(t)] = x.data() + static_cast<std::ptrdiff_t>(t) * width;
          const std::size_t words = static_cast<std::size_t>(quant::packed_words(static_cast<std::int64_t>(G) * width, bits));
          std::vector<std::uint32_t> a(words, 0u), b(words, 0u);
          std::vector<std::uint16_t> ma(2 * static_cast<std::size_t>(width)), mb(ma.size(), 0xBEEF);
          CHECK(Codec::channels(rows.data(), G, width, bits, mb.data(), b.data()) ==
                Scalar::channels(rows.data(), G, width, bits, ma.data(), a.data()));
          CHECK(a == b);
          CHECK(ma == mb);
        }
      for (int n : {16, 96, 256})
        for (int GV : {8, 12, 16, 32}) {
          if (n % GV != 0) continue;
          INFO("tokens: bits " << bits << " n " << n << " GV " << GV);
          const std::vector<Half> x = make_rows(kind, 1, n, rng);
          const std::size_t words = static_cast<std::size_t>(quant::packed_words(n, bits));
          std::vector<std::uint32_t> a(words, 0u), b(words, 0u);
          std::vector<std::uint16_t> ma(2 * static_cast<std::size_t>(n / GV)), mb(ma.size(), 0xBEEF);
          CHECK(Codec::tokens(x.data(), n, GV, bits, mb.data(), b.data()) == Scalar::tokens(x.data(), n, GV, bits, ma.data(), a.data()));
          CHECK(a == b);
          CHECK(ma == mb);
        }
    }
  for (int bits : {2, 3, 4, 8})
    for (int groups : {1, 2, 4}) {
      INFO("MiKV bits " << bits << " groups " << groups);
      quant::MixedRowConfig cfg;
      cfg.head_dim = 64;
      cfg.bits = bits;
      cfg.groups = groups;
      REQUIRE(cfg.validate() == Status::kSuccess);
      quant::MixedRowPool<float> rows_s(cfg);
      quant::MixedRowPool<float, Codec> rows_v(cfg);
      quant::MixedBlockPool<float> blocks_s(cfg);
      quant::MixedBlockPool<float, Codec> blocks_v(cfg);
      std::uint32_t fs = 0, fv = 0;
      for (int t = 0; t < 70; ++t) {
        const std::vector<Half> k = make_rows(t % 9 == 4 ? Data::kTies : Data::kNormal, 1, 64, rng),
                                v = make_rows(Data::kNormal, 1, 64, rng);
        rows_s.insert(k.data(), v.data(), t, 0.f, &fs);
        rows_v.insert(k.data(), v.data(), t, 0.f, &fv);
        blocks_s.insert(k.data(), v.data(), t, 0.f, &fs);
        blocks_v.insert(k.data(), v.data(), t, 0.f, &fv);
      }
      CHECK(fs == fv);
      const std::size_t rec = rows_s.layout().bytes * static_cast<std::size_t>(rows_s.slots());
      CHECK(std::memcmp(rows_s.records(), rows_v.records(), rec) == 0);
      REQUIRE(blocks_s.blocks() == 2);
      const std::size_t nb = static_cast<std::size_t>(blocks_s.blocks()), G = 32;
      CHECK(std::memcmp(blocks_s.key_codes(), blocks_v.key_codes(), nb * blocks_s.key_words() * 4) == 0);
      CHECK(std::memcmp(blocks_s.key_meta_bits(), blocks_v.key_meta_bits(), nb * 64 * 2 * 2) == 0);
      CHECK(std::memcmp(blocks_s.value_codes(), blocks_v.value_codes(), nb * G * static_cast<std::size_t>(cfg.code_words()) * 4) == 0);
      CHECK(std::memcmp(blocks_s.value_meta_bits(), blocks_v.value_meta_bits(), nb * G * static_cast<std::size_t>(groups) * 2 * 2) == 0);
    }
}

// The stream <-> byte conversions every build uses (the composed cache's compaction unpacks a
// block's keys, moves the kept rows and packs them again): against quant::pack_code / unpack_code
// for every length up to 70 codes (tails of every size).
TEST_CASE("pack_stream / unpack_stream == quant::pack_code / unpack_code at every length", "[kivi][quant]") {
  std::mt19937 rng(13);
  for (int bits : {2, 4, 8})
    for (std::int64_t n = 1; n <= 70; ++n) {
      INFO("bits " << bits << " n " << n);
      std::vector<std::uint8_t> codes(static_cast<std::size_t>(n));
      for (auto& c : codes) c = static_cast<std::uint8_t>(rng() & ((1u << bits) - 1));
      const std::size_t words = static_cast<std::size_t>((n * bits + 31) / 32);
      std::vector<std::uint32_t> want(words, 0u), got(words, 0u);
      for (std::int64_t e = 0; e < n; ++e) quant::pack_code(want.data(), e, bits, codes[static_cast<std::size_t>(e)]);
      cpu::quant_codes::pack_stream(codes.data(), n, bits, reinterpret_cast<std::uint8_t*>(got.data()));
      REQUIRE(got == want);
      std::vector<std::uint8_t> back(static_cast<std::size_t>(n) + 8, 0xEE);
      cpu::quant_codes::unpack_stream(reinterpret_cast<const std::uint8_t*>(want.data()), n, bits, back.data());
      for (std::int64_t e = 0; e < n; ++e) REQUIRE(back[static_cast<std::size_t>(e)] == quant::unpack_code(want.data(), e, bits));
      for (std::size_t e = static_cast<std::size_t>(n); e < back.size(); ++e) REQUIRE(back[e] == 0xEE);  // nothing past n
    }
}
