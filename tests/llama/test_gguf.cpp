// GGUF reader and dequantization on synthetic files built in memory (tests/llama/gguf_builder.hpp):
// every metadata type, alignment, each block format with known values, and corrupt input
// (truncation at every byte, bad counts/offsets/types) that must give an error, never a crash.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "gguf.hpp"
#include "llama/gguf_builder.hpp"

using namespace memattn_llama;
using gguf_test::Bytes;
using gguf_test::GgufBuilder;
using gguf_test::Layout;
namespace enc = gguf_test::enc;

namespace {

bool parse(const Bytes& b, GgufFile* f, std::string* err) { return GgufFile::parse(b.data(), b.size(), f, err); }

// Parses b expecting failure; returns the message.
std::string parse_error(const Bytes& b) {
  GgufFile f;
  std::string err;
  const bool ok = parse(b, &f, &err);
  CHECK_FALSE(ok);
  CHECK_FALSE(err.empty());
  return err;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

uint16_t f32_to_half_exact(float x) {  // only for values exactly representable as half normals
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int exp = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = (u >> 13) & 0x3ffu;
  if ((u & 0x7fffffffu) == 0) return static_cast<uint16_t>(sign);
  REQUIRE(exp > 0);
  REQUIRE(exp < 31);
  REQUIRE((u & 0x1fffu) == 0);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | mant);
}

void put_half(Bytes& b, size_t pos, float x) {
  const uint16_t h = f32_to_half_exact(x);
  b[pos] = static_cast<uint8_t>(h & 0xff);
  b[pos + 1] = static_cast<uint8_t>(h >> 8);
}

// Dequantizes `block` of `type` through a one-tensor GGUF file (exercising the file path) and
// also through dequantize_row(); both must agree.
std::vector<float> dequant_via_file(uint32_t type, const Bytes& block, int64_t n) {
  GgufBuilder g;
  g.tensor("x", {static_cast<uint64_t>(n)}, type, block);
  const Bytes file = g.build();
  GgufFile f;
  std::string err;
  REQUIRE(parse(file, &f, &err));
  const GgufTensorInfo* t = f.tensor("x");
  REQUIRE(t != nullptr);
  REQUIRE(t->n_elements == n);
  REQUIRE(t->n_bytes == block.size());
  std::vector<float> y(static_cast<size_t>(n), -12345.f), y2(static_cast<size_t>(n));
  REQUIRE(f.dequantize(*t, y.data(), &err));
  REQUIRE(dequantize_row(type, block.data(), n, y2.data()));
  REQUIRE(std::memcmp(y.data(), y2.data(), y.size() * 4) == 0);
  return y;
}

void check_exact(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(got[i] == want[i]);
  }
}

}  // namespace

TEST_CASE("gguf: every metadata value type round-trips", "[gguf]") {
  const Bytes b = gguf_test::sample_file();
  GgufFile f;
  std::string err;
  REQUIRE(parse(b, &f, &err));
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.data_offset() % 64 == 0);
  CHECK(f.metadata().size() == 17);
  CHECK(f.metadata()[1].first == "general.architecture");  // file order

  const GgufValue* v = f.find("t.u8");
  REQUIRE(v);
  CHECK(v->type == GgufValueType::kUint8);
  CHECK(v->u == 200);
  CHECK(f.find("t.i8")->i == -100);
  CHECK(f.find("t.u16")->u == 60000);
  CHECK(f.find("t.i16")->i == -30000);
  CHECK(f.find("t.u32")->u == 4000000000u);
  CHECK(f.find("t.i32")->i == -2000000000);
  CHECK(f.find("t.f32")->f == 1.5);
  CHECK(f.find("t.bool")->u == 1);
  CHECK(f.find("t.str")->s == "h\xc3\xa9llo");
  CHECK(f.find("t.u64")->u == 0x8000000000000005ull);
  CHECK(f.find("t.i64")->i == -4611686018427387904ll);
  CHECK(f.find("t.f64")->f == 1e300);
  CHECK(f.find("missing") == nullptr);

  const GgufValue* a = f.find("t.arr_str");
  REQUIRE(a);
  CHECK(a->is_array());
  CHECK(a->elem_type == GgufValueType::kString);
  CHECK(a->strings == std::vector<std::string>{"a", "", "ccc"});
  CHECK(a->array_size() == 3);
  CHECK(f.find("t.arr_i32")->ints == std::vector<int64_t>{-1, 7});
  const GgufValue* n = f.find("t.arr_nested");
  REQUIRE(n);
  REQUIRE(n->arrays.size() == 2);
  CHECK(n->arrays[0].elem_type == GgufValueType::kUint16);
  CHECK(n->arrays[0].uints == std::vector<uint64_t>{1, 2});
  CHECK(n->arrays[1].strings == std::vector<std::string>{"x"});
}

TEST_CASE("gguf: typed getters convert integer widths and reject wrong types", "[gguf]") {
  const Bytes b = gguf_test::sample_file();
  GgufFile f;
  std::string err;
  REQUIRE(parse(b, &f, &err));
  uint32_t u32 = 0;
  CHECK(f.get_u32("t.u8", &u32));
  CHECK(u32 == 200);
  CHECK(f.get_u32("t.u32", &u32));
  CHECK(u32 == 4000000000u);
  CHECK_FALSE(f.get_u32("t.i8", &u32, &err));
  CHECK(contains(err, "negative"));
  CHECK_FALSE(f.get_u32("t.u64", &u32, &err));
  CHECK(contains(err, "does not fit"));
  CHECK_FALSE(f.get_u32("t.str", &u32, &err));
  CHECK(contains(err, "is string"));
  CHECK_FALSE(f.get_u32("nope", &u32, &err));
  CHECK(contains(err, "missing"));
  uint64_t u64 = 0;
  CHECK(f.get_u64("t.u64", &u64));
  CHECK(u64 == 0x8000000000000005ull);
  int64_t i64 = 0;
  CHECK(f.get_i64("t.i16", &i64));
  CHECK(i64 == -30000);
  CHECK_FALSE(f.get_i64("t.u64", &i64, &err));  // > INT64_MAX
  float x = 0;
  CHECK(f.get_f32("t.f32", &x));
  CHECK(x == 1.5f);
  CHECK(f.get_f32("t.i32", &x));  // integers are numbers
  CHECK(x == -2e9f);
  CHECK_FALSE(f.get_f32("t.arr_i32", &x, &err));
  CHECK(contains(err, "array of int32"));
  bool bo = false;
  CHECK(f.get_bool("t.bool", &bo));
  CHECK(bo);
  CHECK_FALSE(f.get_bool("t.u8", &bo));
  std::string s;
  CHECK(f.get_string("general.architecture", &s));
  CHECK(s == "llama");
  std::vector<std::string> sa;
  CHECK(f.get_string_array("t.arr_str", &sa));
  CHECK(sa.size() == 3);
  CHECK_FALSE(f.get_string_array("t.arr_i32", &sa, &err));
  std::vector<int32_t> ia;
  CHECK(f.get_i32_array("t.arr_i32", &ia));
  CHECK(ia == std::vector<int32_t>{-1, 7});
  std::vector<float> fa;
  CHECK(f.get_f32_array("t.arr_i32", &fa));
  CHECK(fa == std::vector<float>{-1.f, 7.f});
  CHECK_FALSE(f.get_f32_array("t.arr_str", &fa));
  CHECK_FALSE(f.get_i32_array("t.arr_nested", &ia));

  // Integer arrays of other widths, with range checks.
  GgufBuilder g;
  g.kv("u8s", gguf_test::kArr, enc::array(gguf_test::kU8, {enc::u8(0), enc::u8(255)}));
  g.kv("u32s", gguf_test::kArr, enc::array(gguf_test::kU32, {enc::u32(1), enc::u32(3000000000u)}));
  g.kv("f64s", gguf_test::kArr, enc::array(gguf_test::kF64, {enc::f64(0.25), enc::f64(-2)}));
  g.kv("bools", gguf_test::kArr, enc::array(gguf_test::kBool, {enc::boolean(true), enc::boolean(false)}));
  g.kv("empty", gguf_test::kArr, enc::array(gguf_test::kF32, {}));
  const Bytes b2 = g.build();
  GgufFile f2;
  REQUIRE(parse(b2, &f2, &err));
  CHECK(f2.get_i32_array("u8s", &ia));
  CHECK(ia == std::vector<int32_t>{0, 255});
  CHECK_FALSE(f2.get_i32_array("u32s", &ia, &err));
  CHECK(contains(err, "does not fit int32"));
  CHECK(f2.get_f32_array("f64s", &fa));
  CHECK(fa == std::vector<float>{0.25f, -2.f});
  CHECK(f2.find("bools")->uints == std::vector<uint64_t>{1, 0});
  CHECK(f2.get_f32_array("empty", &fa));
  CHECK(fa.empty());
  CHECK(f2.find("empty")->array_size() == 0);
}

TEST_CASE("gguf: tensor infos, alignment and layout", "[gguf]") {
  for (uint32_t al : {1u, 8u, 32u, 64u, 4096u}) {
    INFO("alignment " << al);
    GgufBuilder g;
    if (al != 32) g.alignment(al);
    g.kv("pad", gguf_test::kStr, enc::str("xyz"));  // makes the infos end unaligned
    Bytes d1(4 * 3 * 5);
    for (size_t i = 0; i < d1.size(); i += 4) {
      const Bytes e = enc::f32(static_cast<float>(i / 4));
      std::copy(e.begin(), e.end(), d1.begin() + static_cast<long>(i));
    }
    g.tensor("a", {3, 5}, kGgmlF32, d1);
    g.tensor("b", {7}, kGgmlI8, Bytes{1, 2, 3, 4, 5, 6, 0xff});
    g.tensor("c", {2, 1, 1, 2}, kGgmlF32, Bytes(16, 0));
    Layout lay;
    const Bytes b = g.build(&lay);
    GgufFile f;
    std::string err;
    REQUIRE(parse(b, &f, &err));
    CHECK(f.alignment() == al);
    CHECK(f.data_offset() == lay.data_offset);
    CHECK(f.data_offset() % al == 0);
    REQUIRE(f.tensors().size() == 3);
    const GgufTensorInfo* a = f.tensor("a");
    REQUIRE(a);
    CHECK(a == &f.tensors()[0]);
    CHECK(a->n_dims == 2);
    CHECK(a->ne[0] == 3);
    CHECK(a->ne[1] == 5);
    CHECK(a->ne[2] == 1);
    CHECK(a->row_length() == 3);
    CHECK(a->n_rows() == 5);
    CHECK(a->n_elements == 15);
    CHECK(a->n_bytes == 60);
    CHECK(a->type == kGgmlF32);
    CHECK(a->file_offset == f.data_offset() + a->offset);
    CHECK(a->data == b.data() + a->file_offset);
    std::vector<float> y(15);
    REQUIRE(f.dequantize(*a, y.data(), &err));
    for (int i = 0; i < 15; ++i) CHECK(y[static_cast<size_t>(i)] == static_cast<float>(i));
    // Rows 2..3 only.
    std::vector<float> r(6, -1.f);
    REQUIRE(f.dequantize_rows(*a, 2, 2, r.data(), &err));
    CHECK(r == std::vector<float>{6, 7, 8, 9, 10, 11});
    CHECK_FALSE(f.dequantize_rows(*a, 4, 2, r.data(), &err));
    CHECK(contains(err, "outside"));
    CHECK_FALSE(f.dequantize_rows(*a, -1, 1, r.data(), &err));
    const GgufTensorInfo* bt = f.tensor("b");
    REQUIRE(bt);
    CHECK(bt->offset % al == 0);
    std::vector<float> yb(7);
    REQUIRE(f.dequantize(*bt, yb.data(), &err));
    CHECK(yb == std::vector<float>{1, 2, 3, 4, 5, 6, -1});
    CHECK(f.tensor("c")->n_dims == 4);
    CHECK(f.tensor("c")->n_elements == 4);
    CHECK(f.tensor("nope") == nullptr);
  }
}

TEST_CASE("gguf: empty and zero-element files", "[gguf]") {
  GgufFile f;
  std::string err;
  const Bytes empty = GgufBuilder().build();  // header only: no metadata, no tensors
  REQUIRE(empty.size() == 24);
  REQUIRE(parse(empty, &f, &err));
  CHECK(f.tensors().empty());
  CHECK(f.metadata().empty());

  GgufBuilder g;
  g.tensor("z", {0, 4}, kGgmlQ4_0, {});
  g.tensor("s", {}, kGgmlF32, enc::f32(2.5f));  // zero dims: a scalar
  const Bytes b = g.build();
  REQUIRE(parse(b, &f, &err));
  CHECK(f.tensor("z")->n_elements == 0);
  CHECK(f.tensor("z")->n_bytes == 0);
  CHECK(f.dequantize(*f.tensor("z"), nullptr, &err));
  CHECK(f.tensor("s")->n_elements == 1);
  float s = 0;
  REQUIRE(f.dequantize(*f.tensor("s"), &s, &err));
  CHECK(s == 2.5f);
}

// ---- block formats with known values -----------------------------------------------------
// Each block is packed here from chosen codes and scales following the layouts documented in
// gguf_dequant.hpp, and the expected values are computed from the codes. Scales are powers of
// two (or small multiples) so every expected value is exact in fp32.

TEST_CASE("gguf: F32, F16, BF16, F64 and integer tensors", "[gguf][dequant]") {
  SECTION("F16 incl. subnormal, max, signed zero, inf, NaN") {
    const std::vector<uint16_t> h = {0x3c00, 0xc000, 0x3555, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0xb800};
    Bytes b;
    for (uint16_t x : h) {
      const Bytes e = enc::u16(x);
      b.insert(b.end(), e.begin(), e.end());
    }
    const std::vector<float> y = dequant_via_file(kGgmlF16, b, static_cast<int64_t>(h.size()));
    CHECK(y[0] == 1.f);
    CHECK(y[1] == -2.f);
    CHECK(y[2] == 0.333251953125f);
    CHECK(y[3] == std::ldexp(1.f, -24));
    CHECK(y[4] == std::ldexp(1023.f, -24));
    CHECK(y[5] == std::ldexp(1.f, -14));
    CHECK(y[6] == 65504.f);
    CHECK(y[7] == 0.f);
    CHECK(std::signbit(y[7]));
    CHECK(y[8] == INFINITY);
    CHECK(y[9] == -INFINITY);
    CHECK(std::isnan(y[10]));
    CHECK(y[11] == -0.5f);
  }
  SECTION("BF16") {
    Bytes b;
    for (uint16_t x : {0x3f80, 0xc040, 0x4049, 0x0000, 0x7f80}) {
      const Bytes e = enc::u16(x);
      b.insert(b.end(), e.begin(), e.end());
    }
    check_exact(dequant_via_file(kGgmlBF16, b, 5), {1.f, -3.f, 3.140625f, 0.f, INFINITY});
  }
  SECTION("F32 and F64") {
    Bytes b;
    for (float x : {1.f, -0.1f, 3e38f, 1e-45f}) {
      const Bytes e = enc::f32(x);
      b.insert(b.end(), e.begin(), e.end());
    }
    check_exact(dequant_via_file(kGgmlF32, b, 4), {1.f, -0.1f, 3e38f, 1e-45f});
    Bytes d;
    for (double x : {0.5, -1e10, 1e-3}) {
      const Bytes e = enc::f64(x);
      d.insert(d.end(), e.begin(), e.end());
    }
    check_exact(dequant_via_file(kGgmlF64, d, 3), {0.5f, -1e10f, static_cast<float>(1e-3)});
  }
  SECTION("I8, I16, I32") {
    check_exact(dequant_via_file(kGgmlI8, Bytes{0x80, 0x7f, 0xff, 0}, 4), {-128, 127, -1, 0});
    Bytes b16 = enc::i16(-32768), t16 = enc::i16(1234);
    b16.insert(b16.end(), t16.begin(), t16.end());
    check_exact(dequant_via_file(kGgmlI16, b16, 2), {-32768, 1234});
    Bytes b32 = enc::i32(-7), t32 = enc::i32(1 << 20);
    b32.insert(b32.end(), t32.begin(), t32.end());
    check_exact(dequant_via_file(kGgmlI32, b32, 2), {-7, 1048576});
  }
}

TEST_CASE("gguf: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 with known values", "[gguf][dequant]") {
  // Two blocks each, so per-block scales are exercised.
  auto codes = [](int j, int mul, int add, int mod) { return (j * mul + add) % mod; };
  SECTION("Q4_0") {
    Bytes b(36, 0);
    std::vector<float> want;
    for (int blk = 0; blk < 2; ++blk) {
      const float d = blk == 0 ? 0.25f : -2.f;
      put_half(b, 18 * blk, d);
      for (int j = 0; j < 32; ++j) {
        const int c = codes(j + blk, 5, 3, 16);
        b[18 * blk + 2 + j % 16] |= static_cast<uint8_t>(j < 16 ? c : c << 4);
        want.push_back(d * static_cast<float>(c - 8));
      }
    }
    check_exact(dequant_via_file(kGgmlQ4_0, b, 64), want);
  }
  SECTION("Q4_1") {
    Bytes b(40, 0);
    std::vector<float> want;
    for (int blk = 0; blk < 2; ++blk) {
      const float d = blk == 0 ? 0.5f : 0.125f, m = blk == 0 ? -1.5f : 4.f;
      put_half(b, 20 * blk, d);
      put_half(b, 20 * blk + 2, m);
      for (int j = 0; j < 32; ++j) {
        const int c = codes(j, 7, 1 + blk, 16);
        b[20 * blk + 4 + j % 16] |= static_cast<uint8_t>(j < 16 ? c : c << 4);
        want.push_back(d * static_cast<float>(c) + m);
      }
    }
    check_exact(dequant_via_file(kGgmlQ4_1, b, 64), want);
  }
  SECTION("Q5_0") {
    Bytes b(44, 0);
    std::vector<float> want;
    for (int blk = 0; blk < 2; ++blk) {
      const float d = blk == 0 ? 0.125f : 1.f;
      put_half(b, 22 * blk, d);
      uint32_t qh = 0;
      for (int j = 0; j < 32; ++j) {
        const int c = codes(j, 11, 5 + blk, 32);
        b[22 * blk + 6 + j % 16] |= static_cast<uint8_t>(j < 16 ? (c & 15) : (c & 15) << 4);
        qh |= static_cast<uint32_t>(c >> 4) << j;
        want.push_back(d * static_cast<float>(c - 16));
      }
      gguf_test::patch(b, 22 * blk + 2, enc::u32(qh));
    }
    check_exact(dequant_via_file(kGgmlQ5_0, b, 64), want);
  }
  SECTION("Q5_1") {
    Bytes b(48, 0);
    std::vector<float> want;
    for (int blk = 0; blk < 2; ++blk) {
      const float d = blk == 0 ? 0.0625f : 0.5f, m = blk == 0 ? 2.f : -8.f;
      put_half(b, 24 * blk, d);
      put_half(b, 24 * blk + 2, m);
      uint32_t qh = 0;
      for (int j = 0; j < 32; ++j) {
        const int c = codes(j, 13, 2 + blk, 32);
        b[24 * blk + 8 + j % 16] |= static_cast<uint8_t>(j < 16 ? (c & 15) : (c & 15) << 4);
        qh |= static_cast<uint32_t>(c >> 4) << j;
        want.push_back(d * static_cast<float>(c) + m);
      }
      gguf_test::patch(b, 24 * blk + 4, enc::u32(qh));
    }
    check_exact(dequant_via_file(kGgmlQ5_1, b, 64), want);
  }
  SECTION("Q8_0") {
    Bytes b(68, 0);
    std::vector<float> want;
    for (int blk = 0; blk < 2; ++blk) {
      const float d = blk == 0 ? 0.5f : -0.03125f;
      put_half(b, 34 * blk, d);
      for (int j = 0; j < 32; ++j) {
        const int c = codes(j, 37, 11 * blk, 256) - 128;
        b[34 * blk + 2 + j] = static_cast<uint8_t>(static_cast<int8_t>(c));
        want.push_back(d * static_cast<float>(c));
      }
    }
    check_exact(dequant_via_file(kGgmlQ8_0, b, 64), want);
  }
}

namespace {
// Packs 8 (scale, min) 6-bit pairs the way Q4_K/Q5_K store them (12 bytes).
void pack_k4_scales(uint8_t* s, const int* sc, const int* mn) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}
}  // namespace

TEST_CASE("gguf: K-quant blocks with known values", "[gguf][dequant]") {
  SECTION("Q4_K and Q5_K") {
    for (const bool five : {false, true}) {
      INFO(std::string(five ? "Q5_K" : "Q4_K"));
      const size_t bs = five ? 176 : 144;
      Bytes b(bs, 0);
      const float d = 0.5f, dmin = 0.25f;
      put_half(b, 0, d);
      put_half(b, 2, dmin);
      int sc[8], mn[8];
      for (int s = 0; s < 8; ++s) {
        sc[s] = (s * 9 + 7) % 64;   // 7, 16, 25, ... : values >= 16 use the high bits
        mn[s] = (s * 21 + 60) % 64;
      }
      pack_k4_scales(&b[4], sc, mn);
      uint8_t* qh = &b[16];
      uint8_t* qs = &b[five ? 48 : 16];
      std::vector<float> want(256);
      for (int j = 0; j < 256; ++j) {
        const int c = five ? (j * 7 + 3) % 32 : (j * 3 + 1) % 16;
        const int g = j / 64, within = j % 64, l = within % 32, hi = within / 32;
        qs[32 * g + l] |= static_cast<uint8_t>(hi ? (c & 15) << 4 : (c & 15));
        if (five) qh[l] |= static_cast<uint8_t>((c >> 4) << (2 * g + hi));
        const int s = j / 32;
        want[static_cast<size_t>(j)] = d * static_cast<float>(sc[s] * c) - dmin * static_cast<float>(mn[s]);
      }
      check_exact(dequant_via_file(five ? kGgmlQ5_K : kGgmlQ4_K, b, 256), want);
    }
  }
  SECTION("Q6_K") {
    Bytes b(210, 0);
    const float d = 0.125f;
    put_half(b, 208, d);
    int sc[16];
    for (int k = 0; k < 16; ++k) {
      sc[k] = (k * 23) % 256 - 128;
      b[192 + static_cast<size_t>(k)] = static_cast<uint8_t>(static_cast<int8_t>(sc[k]));
    }
    std::vector<float> want(256);
    for (int j = 0; j < 256; ++j) {
      const int c = (j * 5 + 9) % 64;
      const int h = j / 128, within = j % 128, r = within / 32, l = within % 32;
      uint8_t& low = b[64 * h + l + 32 * (r & 1)];
      low |= static_cast<uint8_t>(r < 2 ? (c & 15) : (c & 15) << 4);
      b[128 + 32 * h + l] |= static_cast<uint8_t>((c >> 4) << (2 * r));
      want[static_cast<size_t>(j)] = d * static_cast<float>(sc[j / 16]) * static_cast<float>(c - 32);
    }
    check_exact(dequant_via_file(kGgmlQ6_K, b, 256), want);
  }
  SECTION("Q2_K") {
    Bytes b(84, 0);
    const float d = 0.5f, dmin = 2.f;
    put_half(b, 80, d);
    put_half(b, 82, dmin);
    for (int k = 0; k < 16; ++k) b[static_cast<size_t>(k)] = static_cast<uint8_t>(((k * 7 + 1) % 16) | (((k * 3 + 5) % 16) << 4));
    std::vector<float> want(256);
    for (int j = 0; j < 256; ++j) {
      const int c = (j * 3 + j / 7) % 4;
      const int h = j / 128, t = (j % 128) / 32, p = (j % 32) / 16, l = j % 16;
      b[16 + 32 * h + 16 * p + l] |= static_cast<uint8_t>(c << (2 * t));
      const uint8_t s = b[static_cast<size_t>(8 * h + 2 * t + p)];
      want[static_cast<size_t>(j)] = d * static_cast<float>((s & 15) * c) - dmin * static_cast<float>(s >> 4);
    }
    check_exact(dequant_via_file(kGgmlQ2_K, b, 256), want);
  }
  SECTION("Q3_K") {
    Bytes b(110, 0);
    const float d = 0.25f;
    put_half(b, 108, d);
    int sc[16];
    for (int k = 0; k < 16; ++k) {
      sc[k] = (k * 19 + 3) % 64;  // stored 6-bit, value sc - 32
      b[96 + static_cast<size_t>(k % 8)] |= static_cast<uint8_t>(k < 8 ? (sc[k] & 15) : (sc[k] & 15) << 4);
      b[104 + static_cast<size_t>(k % 4)] |= static_cast<uint8_t>((sc[k] >> 4) << (2 * (k / 4)));
    }
    std::vector<float> want(256);
    for (int j = 0; j < 256; ++j) {
      const int v = (j * 5 + 1) % 8 - 4;  // -4 .. 3
      const int low = v & 3, hbit = v >= 0 ? 1 : 0;  // value = low - (hbit ? 0 : 4)
      const int h = j / 128, t = (j % 128) / 32, p = (j % 32) / 16, l = j % 16;
      b[32 + 32 * h + 16 * p + l] |= static_cast<uint8_t>(low << (2 * t));
      b[16 * p + l] |= static_cast<uint8_t>(hbit << (4 * h + t));
      want[static_cast<size_t>(j)] = d * static_cast<float>(sc[8 * h + 2 * t + p] - 32) * static_cast<float>(v);
    }
    check_exact(dequant_via_file(kGgmlQ3_K, b, 256), want);
  }
  SECTION("Q8_K") {
    Bytes b(292, 0);
    gguf_test::patch(b, 0, enc::f32(0.75f));
    std::vector<float> want(256);
    for (int j = 0; j < 256; ++j) {
      const int c = (j * 31) % 256 - 128;
      b[4 + static_cast<size_t>(j)] = static_cast<uint8_t>(static_cast<int8_t>(c));
      want[static_cast<size_t>(j)] = 0.75f * static_cast<float>(c);
    }
    check_exact(dequant_via_file(kGgmlQ8_K, b, 256), want);
  }
}

namespace {
struct Vector {
  uint32_t type;
  const char* name;
  int64_t n;
  double sum, wsum;
  std::vector<std::pair<int, float>> spots;
};
// From `python3 tests/llama/dequant_vectors.py` (llama.cpp's gguf package computes the values:
// gguf.quants.dequantize; plain types through numpy views; Q8_K through its numpy formula).
// Generated by tests/llama/dequant_vectors.py with gguf==0.19.0 numpy==2.4.6 (Q8_K: numpy formula, gguf.quants has none)
const std::vector<Vector> kVectors = {
    {0, "F32", 256, 13.160085737705231, 55.429479598999023, {{0, 1.28756952f}, {1, -1.80634165f}, {17, 0.541216791f}, {100, -0.685744762f}, {255, -0.880456209f}}},
    {1, "F16", 256, 15.76220703125, 78.00048828125, {{0, 0.927734375f}, {1, 0.960449219f}, {17, -0.509765625f}, {100, -0.690917969f}, {255, -0.85546875f}}},
    {30, "BF16", 256, -2.1640625, -0.28125, {{0, 0.92578125f}, {1, 1.859375f}, {17, -0.6796875f}, {100, -1.1484375f}, {255, 1.6640625f}}},
    {28, "F64", 256, -2.0003691686797538, -9.2631869674150948, {{0, -0.000297888299f}, {1, -0.0898235291f}, {17, 0.53570658f}, {100, -0.212405831f}, {255, -0.233209372f}}},
    {24, "I8", 256, -1561, -4649, {{0, 91.0f}, {1, -104.0f}, {17, -64.0f}, {100, -112.0f}, {255, 95.0f}}},
    {25, "I16", 256, 246461, 1303115, {{0, 180.0f}, {1, -26953.0f}, {17, 20954.0f}, {100, -17219.0f}, {255, 16686.0f}}},
    {26, "I32", 256, 19460893362, 74273063427, {{0, -1.8327529e+09f}, {1, 1.02758118e+09f}, {17, -1.16495526e+09f}, {100, 61551788.0f}, {255, 256424240.0f}}},
    {2, "Q4_0", 256, 1.9343377351760864, 5.7235921621322632, {{0, -0.0186157227f}, {1, 0.055847168f}, {17, 0.0744628906f}, {100, -0.00402832031f}, {255, -0.00309753418f}}},
    {3, "Q4_1", 256, 263.36463522911072, 1268.9702682495117, {{0, -1.69238281f}, {1, -1.69137859f}, {17, -1.69238281f}, {100, 0.00131702423f}, {255, -0.0110998154f}}},
    {6, "Q5_0", 256, 1.0062302350997925, -379.91630554199219, {{0, -0.000280380249f}, {1, 0.000227808952f}, {17, -0.000280380249f}, {100, 0.00586700439f}, {255, -7.76855469f}}},
    {7, "Q5_1", 256, -155.95913231372833, -579.87351316213608, {{0, -0.51852417f}, {1, -0.975006104f}, {17, -1.33004761f}, {100, -0.802154541f}, {255, 0.752075195f}}},
    {8, "Q8_0", 256, -158.68173825740814, -714.45993518829346, {{0, -0.00333786011f}, {1, -0.0216960907f}, {17, -0.0984668732f}, {100, 0.0f}, {255, 0.0826835632f}}},
    {10, "Q2_K", 2048, -759.40592050552368, -3071.273202419281, {{0, 0.0181884766f}, {1, -0.0658454895f}, {17, 0.0198249817f}, {100, -0.0612983704f}, {255, 0.0341033936f}}},
    {11, "Q3_K", 2048, -430.16471207141876, -6914.9259580373764, {{0, 0.0597381592f}, {1, 0.0f}, {17, 0.00995635986f}, {100, -0.119476318f}, {255, -0.0f}}},
    {12, "Q4_K", 2048, -10737.757650077343, -43120.973048448563, {{0, -16.6335907f}, {1, -41.66008f}, {17, -16.6335907f}, {100, -10.0880356f}, {255, -52.7098389f}}},
    {13, "Q5_K", 2048, 246637.50123238564, 975871.00080358982, {{0, 0.206652164f}, {1, 0.941820621f}, {17, 0.473986149f}, {100, 0.461814642f}, {255, 0.32475543f}}},
    {14, "Q6_K", 2048, -12180.651169538498, 38778.745539665222, {{0, -1678.35938f}, {1, -2517.53906f}, {17, 1398.63281f}, {100, 0.0f}, {255, 0.0f}}},
    {15, "Q8_K", 2048, -4920.5352477431297, -12979.939984977245, {{0, -77.300087f}, {1, -61.524559f}, {17, 62.3133354f}, {100, 61.524559f}, {255, -13.4091988f}}},
};

Bytes vector_bytes(const Vector& v) {
  const GgmlTypeTraits t = ggml_type_traits(v.type);
  if (t.block_size == 1) {
    const size_t n = static_cast<size_t>(v.n);
    Bytes raw = gguf_test::lcg_bytes(1000 + v.type, n * t.type_size);
    const bool is_float = v.type == kGgmlF32 || v.type == kGgmlF16 || v.type == kGgmlBF16 || v.type == kGgmlF64;
    if (is_float) {
      const uint8_t keep = v.type == kGgmlF16 ? 0x83 : 0x80, set = v.type == kGgmlF16 ? 0x38 : 0x3f;
      for (size_t e = 0; e < n; ++e) {
        uint8_t& top = raw[e * t.type_size + t.type_size - 1];
        top = static_cast<uint8_t>((top & keep) | set);
      }
    }
    return raw;
  }
  const size_t blocks = static_cast<size_t>(v.n / t.block_size);
  Bytes raw = gguf_test::lcg_bytes(1000 + v.type, blocks * t.type_size);
  std::vector<size_t> patch;
  switch (v.type) {
    case kGgmlQ4_0: case kGgmlQ5_0: case kGgmlQ8_0: patch = {1}; break;
    case kGgmlQ4_1: case kGgmlQ5_1: case kGgmlQ4_K: case kGgmlQ5_K: patch = {1, 3}; break;
    case kGgmlQ2_K: patch = {81, 83}; break;
    case kGgmlQ3_K: patch = {109}; break;
    case kGgmlQ6_K: patch = {209}; break;
    default: break;
  }
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t off : patch) raw[b * t.type_size + off] &= 0xbf;
    if (v.type == kGgmlQ8_K) raw[b * t.type_size + 3] = static_cast<uint8_t>((raw[b * t.type_size + 3] & 0x80) | 0x3f);
  }
  return raw;
}
}  // namespace

TEST_CASE("gguf: dequantization matches llama.cpp's gguf package on pseudo-random blocks", "[gguf][dequant]") {
  REQUIRE(kVectors.size() == 18);
  for (const Vector& v : kVectors) {
    INFO("type " << v.name);
    REQUIRE(ggml_type_label(v.type) == std::string(v.name) + " (" + std::to_string(v.type) + ")");
    const Bytes raw = vector_bytes(v);
    const std::vector<float> y = dequant_via_file(v.type, raw, v.n);
    double s = 0, ws = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      s += y[i];
      ws += static_cast<double>(y[i]) * static_cast<double>(i % 7 + 1);
    }
    CHECK(std::abs(s - v.sum) <= 1e-9 * (1 + std::abs(v.sum)));
    CHECK(std::abs(ws - v.wsum) <= 1e-9 * (1 + std::abs(v.wsum)));
    for (const auto& [i, want] : v.spots) {
      INFO("element " << i);
      CHECK(y[static_cast<size_t>(i)] == want);
    }
  }
}

TEST_CASE("gguf: unsupported types fail with their number and name", "[gguf][dequant]") {
  GgufBuilder g;
  g.tensor("iq", {256}, kGgmlIQ2_XXS, Bytes(66, 0));
  g.tensor("i64", {2}, kGgmlI64, Bytes(16, 0));
  g.tensor("q81", {32}, kGgmlQ8_1, Bytes(36, 0));
  const Bytes b = g.build();
  GgufFile f;
  std::string err;
  REQUIRE(parse(b, &f, &err));  // known types parse
  std::vector<float> y(256, 7.f);
  CHECK_FALSE(f.dequantize(*f.tensor("iq"), y.data(), &err));
  CHECK(contains(err, "IQ2_XXS (16)"));
  CHECK(y[0] == 7.f);  // nothing written
  CHECK_FALSE(f.dequantize(*f.tensor("i64"), y.data(), &err));
  CHECK(contains(err, "I64 (27)"));
  CHECK_FALSE(f.dequantize(*f.tensor("q81"), y.data(), &err));
  CHECK(contains(err, "Q8_1 (9)"));
  CHECK_FALSE(dequantize_row(kGgmlIQ4_NL, b.data(), 32, y.data()));
  CHECK_FALSE(dequantize_row(kGgmlQ4_0, b.data(), 31, y.data()));  // not a whole block
  CHECK_FALSE(dequantize_row(4, b.data(), 32, y.data()));          // retired type number
  CHECK(ggml_type_label(4) == "unknown (4)");

  // A tensor info that is not this file's.
  GgufTensorInfo fake = *f.tensor("iq");
  fake.name = "other";
  CHECK_FALSE(f.dequantize(fake, y.data(), &err));
  CHECK(contains(err, "does not belong"));
}

// ---- corrupt input -----------------------------------------------------------------------

TEST_CASE("gguf: truncation at every byte offset is an error", "[gguf][corrupt]") {
  Layout lay;
  const Bytes full = gguf_test::sample_file(&lay);
  {
    GgufFile f;
    std::string err;
    REQUIRE(parse(full, &f, &err));
    // The last tensor ends exactly at the end of the file, so every prefix is invalid.
    const GgufTensorInfo& last = f.tensors().back();
    REQUIRE(last.file_offset + last.n_bytes == full.size());
  }
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh heap copy of exactly n bytes, so a read past the end is caught by ASan.
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<long>(n));
    GgufFile f;
    std::string err;
    const bool ok = GgufFile::parse(cut.empty() ? nullptr : cut.data(), n, &f, &err);
    INFO("truncated to " << n << " bytes: " << err);
    REQUIRE_FALSE(ok);
    REQUIRE(contains(err, "byte offset"));
  }
}

TEST_CASE("gguf: every single-byte corruption parses or fails cleanly", "[gguf][corrupt]") {
  const Bytes full = gguf_test::sample_file();
  size_t accepted = 0, rejected = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t x : {0x00, 0xff, 0x80, 0x01}) {
      Bytes b = full;
      if (b[i] == x) continue;
      b[i] = x;
      GgufFile f;
      std::string err;
      if (parse(b, &f, &err)) {
        ++accepted;
        std::vector<float> y;
        for (const GgufTensorInfo& t : f.tensors()) {
          y.assign(static_cast<size_t>(t.n_elements), 0.f);
          f.dequantize(t, y.data(), &err);
        }
      } else {
        ++rejected;
        CHECK_FALSE(err.empty());
      }
    }
  }
  CHECK(rejected > 0);
  CHECK(accepted > 0);  // e.g. changed tensor data or string bytes
}

TEST_CASE("gguf: header errors name the problem", "[gguf][corrupt]") {
  Bytes b = GgufBuilder().build();
  SECTION("magic") {
    b[0] = 'g';
    CHECK(contains(parse_error(b), "bad magic"));
  }
  SECTION("versions 1 and 2") {
    for (uint32_t v : {1u, 2u}) {
      gguf_test::patch(b, 4, enc::u32(v));
      const std::string e = parse_error(b);
      CHECK(contains(e, "GGUF version " + std::to_string(v) + " is not supported"));
      CHECK(contains(e, "only version 3"));
    }
  }
  SECTION("big-endian and future versions") {
    gguf_test::patch(b, 4, Bytes{0, 0, 0, 3});
    CHECK(contains(parse_error(b), "big-endian"));
    gguf_test::patch(b, 4, enc::u32(4));
    CHECK(contains(parse_error(b), "unsupported GGUF version 4"));
  }
  SECTION("huge counts") {
    Bytes c = b;
    gguf_test::patch(c, 8, enc::u64(~0ull));
    CHECK(contains(parse_error(c), "tensor count"));
    c = b;
    gguf_test::patch(c, 16, enc::u64(1ull << 40));
    CHECK(contains(parse_error(c), "key/value count"));
    c = gguf_test::sample_file();
    gguf_test::patch(c, 8, enc::u64(1000));  // more tensors than the bytes can hold
    CHECK(contains(parse_error(c), "tensor count 1000"));
  }
}

TEST_CASE("gguf: metadata errors", "[gguf][corrupt]") {
  auto one_kv = [](uint32_t type, const Bytes& payload) {
    GgufBuilder g;
    g.kv("k", type, payload);
    return g.build();
  };
  CHECK(contains(parse_error(one_kv(13, enc::u32(0))), "unknown value type 13"));
  CHECK(contains(parse_error(one_kv(gguf_test::kBool, enc::u8(2))), "bool value 2"));
  CHECK(contains(parse_error(one_kv(gguf_test::kStr, enc::u64(1ull << 62))), "string length"));
  CHECK(contains(parse_error(one_kv(gguf_test::kArr, enc::array(99, {}))), "unknown array element type 99"));
  {
    Bytes p = enc::u32(gguf_test::kU32);
    const Bytes n = enc::u64(1ull << 61);
    p.insert(p.end(), n.begin(), n.end());
    CHECK(contains(parse_error(one_kv(gguf_test::kArr, p)), "cannot fit"));
  }
  {
    Bytes p = enc::u32(gguf_test::kArr);  // array of arrays with an absurd count
    const Bytes n = enc::u64(~0ull / 2);
    p.insert(p.end(), n.begin(), n.end());
    CHECK(contains(parse_error(one_kv(gguf_test::kArr, p)), "cannot fit"));
  }
  {
    Bytes nested = enc::array(gguf_test::kU8, {enc::u8(1)});
    for (int d = 0; d < GgufFile::kMaxArrayDepth; ++d) nested = enc::array(gguf_test::kArr, {nested});
    CHECK(contains(parse_error(one_kv(gguf_test::kArr, nested)), "nested"));
    // One level less is fine.
    Bytes ok = enc::array(gguf_test::kU8, {enc::u8(1)});
    for (int d = 0; d < GgufFile::kMaxArrayDepth - 1; ++d) ok = enc::array(gguf_test::kArr, {ok});
    GgufFile f;
    std::string err;
    CHECK(parse(one_kv(gguf_test::kArr, ok), &f, &err));
  }
  {
    GgufBuilder g;
    g.kv("dup", gguf_test::kU8, enc::u8(1)).kv("dup", gguf_test::kU8, enc::u8(2));
    CHECK(contains(parse_error(g.build()), "duplicate metadata key 'dup'"));
  }
  for (uint32_t bad : {0u, 3u, 48u}) {
    GgufBuilder g;
    g.kv("general.alignment", gguf_test::kU32, enc::u32(bad));
    CHECK(contains(parse_error(g.build()), "general.alignment"));
  }
  {
    GgufBuilder g;
    g.kv("general.alignment", gguf_test::kStr, enc::str("32"));
    CHECK(contains(parse_error(g.build()), "general.alignment"));
  }
  {
    // A key truncated mid-string reports the offset of its length field.
    Layout lay;
    GgufBuilder g;
    g.kv("abc", gguf_test::kU8, enc::u8(1));
    Bytes b = g.build(&lay);
    gguf_test::patch(b, lay.kv_pos[0], enc::u64(1000));
    const std::string e = parse_error(b);
    CHECK(contains(e, "metadata key"));
    CHECK(contains(e, "byte offset " + std::to_string(lay.kv_pos[0])));
  }
}

TEST_CASE("gguf: tensor info errors", "[gguf][corrupt]") {
  auto base = [](GgufBuilder& g) { g.tensor("a", {32, 2}, kGgmlQ8_0, Bytes(68, 1)); };
  SECTION("n_dims") {
    GgufBuilder g;
    base(g);
    Layout lay;
    Bytes b = g.build(&lay);
    gguf_test::patch(b, lay.ndims_pos[0], enc::u32(5));
    CHECK(contains(parse_error(b), "5 dimensions"));
  }
  SECTION("dimension overflow and negative dims") {
    GgufBuilder g;
    g.tensor("big", {1ull << 32, 1ull << 32}, kGgmlF32, {});
    CHECK(contains(parse_error(g.build()), "overflows"));
    GgufBuilder g2;
    g2.tensor("neg", {~0ull}, kGgmlF32, {});
    CHECK(contains(parse_error(g2.build()), "negative"));
    GgufBuilder g3;  // element count fits int64 but bytes (x8) would not
    g3.tensor("wide", {1ull << 62}, kGgmlF64, {});
    CHECK(contains(parse_error(g3.build()), "overflows"));
    GgufBuilder g4;  // fits every integer, but far more bytes than the file has
    g4.tensor("huge", {1ull << 40}, kGgmlF32, {});
    CHECK(contains(parse_error(g4.build()), "extends past the end"));
  }
  SECTION("unknown ggml types") {
    for (uint32_t t : {4u, 5u, 31u, 36u, 1000u}) {
      GgufBuilder g;
      g.tensor("x", {32}, t, Bytes(64, 0));
      CHECK(contains(parse_error(g.build()), "unknown ggml type " + std::to_string(t)));
    }
  }
  SECTION("row length not a multiple of the block size") {
    GgufBuilder g;
    g.tensor("x", {48, 2}, kGgmlQ4_1, Bytes(60, 0));
    const std::string e = parse_error(g.build());
    CHECK(contains(e, "row length 48"));
    CHECK(contains(e, "Q4_1 (3) block size 32"));
  }
  SECTION("tensor name length") {
    GgufBuilder g;
    g.tensor(std::string(64, 'n'), {1}, kGgmlF32, Bytes(4, 0));
    GgufFile f;
    std::string err;
    CHECK(parse(g.build(), &f, &err));
    GgufBuilder g2;
    g2.tensor(std::string(65, 'n'), {1}, kGgmlF32, Bytes(4, 0));
    CHECK(contains(parse_error(g2.build()), "tensor name of 65 bytes"));
  }
  SECTION("duplicate names") {
    GgufBuilder g;
    base(g);
    base(g);
    CHECK(contains(parse_error(g.build()), "duplicate tensor name 'a'"));
  }
  SECTION("misaligned, out-of-file and overlapping offsets") {
    GgufBuilder g;
    base(g);
    g.tensor("b", {32}, kGgmlF32, Bytes(128, 2));
    Layout lay;
    const Bytes good = g.build(&lay);
    Bytes b = good;
    gguf_test::patch(b, lay.offset_pos[1], enc::u64(lay.offsets[1] + 4));
    CHECK(contains(parse_error(b), "not a multiple of the alignment 32"));
    b = good;
    gguf_test::patch(b, lay.offset_pos[1], enc::u64(1ull << 40));
    CHECK(contains(parse_error(b), "extends past the end"));
    b = good;
    gguf_test::patch(b, lay.offset_pos[1], enc::u64(~0ull - 31));  // aligned, offset + size wraps
    CHECK(contains(parse_error(b), "extends past the end"));
    b = good;
    gguf_test::patch(b, lay.offset_pos[1], enc::u64(32));  // inside tensor a (68 bytes at 0)
    CHECK(contains(parse_error(b), "overlap"));
    b = good;
    b.pop_back();  // last tensor one byte short
    CHECK(contains(parse_error(b), "tensor 'b'"));
  }
  SECTION("failure leaves the output untouched") {
    const Bytes good = gguf_test::sample_file();
    GgufFile f;
    std::string err;
    REQUIRE(parse(good, &f, &err));
    Bytes bad = good;
    bad[4] = 2;
    CHECK_FALSE(parse(bad, &f, &err));
    CHECK(f.version() == 3);
    CHECK(f.tensors().size() == 3);
    CHECK(f.find("t.u8") != nullptr);
  }
}

TEST_CASE("gguf: open() maps files and reports I/O problems", "[gguf]") {
  char dir_tmpl[] = "/tmp/memattn_gguf_test_XXXXXX";
  const char* dir = mkdtemp(dir_tmpl);
  REQUIRE(dir != nullptr);
  const std::string path = std::string(dir) + "/sample.gguf";
  const Bytes b = gguf_test::sample_file();
  {
    FILE* fp = std::fopen(path.c_str(), "wb");
    REQUIRE(fp);
    REQUIRE(std::fwrite(b.data(), 1, b.size(), fp) == b.size());
    std::fclose(fp);
  }
  GgufFile f;
  std::string err;
  REQUIRE(GgufFile::open(path, &f, &err));
  CHECK(f.size() == b.size());
  CHECK(f.find("t.str")->s == "h\xc3\xa9llo");
  std::vector<float> y(4);
  REQUIRE(f.dequantize(*f.tensor("f16.weight"), y.data(), &err));
  CHECK(y == std::vector<float>{1.f, -2.f, 0.5f, 0.f});
  // Moving keeps the mapping (and tensor pointers) valid.
  GgufFile g = std::move(f);
  REQUIRE(g.dequantize(*g.tensor("f16.weight"), y.data(), &err));
  CHECK(y[1] == -2.f);
  CHECK(f.tensors().empty());

  CHECK_FALSE(GgufFile::open(std::string(dir) + "/missing.gguf", &f, &err));
  CHECK(contains(err, "missing.gguf"));
  CHECK_FALSE(GgufFile::open(dir, &f, &err));
  CHECK(contains(err, "not a regular file"));
  const std::string empty = std::string(dir) + "/empty.gguf";
  std::fclose(std::fopen(empty.c_str(), "wb"));
  CHECK_FALSE(GgufFile::open(empty, &f, &err));
  CHECK(contains(err, "empty"));
  const std::string trunc = std::string(dir) + "/trunc.gguf";
  {
    FILE* fp = std::fopen(trunc.c_str(), "wb");
    std::fwrite(b.data(), 1, b.size() - 1, fp);
    std::fclose(fp);
  }
  CHECK_FALSE(GgufFile::open(trunc, &f, &err));
  CHECK(contains(err, "trunc.gguf"));
  CHECK(contains(err, "extends past the end"));
  std::remove(path.c_str());
  std::remove(empty.c_str());
  std::remove(trunc.c_str());
  ::rmdir(dir);
}
