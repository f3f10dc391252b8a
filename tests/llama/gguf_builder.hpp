// Builds GGUF images in memory for the reader's tests and the fuzzer's seed corpus.
// Written from the format description in examples/llama/gguf.hpp, independently of the reader.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace gguf_test {

using Bytes = std::vector<uint8_t>;

// Little-endian encoders of single values (no type tag).
namespace enc {
inline Bytes uint(uint64_t v, int n) {
  Bytes b(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) b[static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
  return b;
}
inline Bytes u8(uint8_t v) { return uint(v, 1); }
inline Bytes i8(int8_t v) { return uint(static_cast<uint8_t>(v), 1); }
inline Bytes u16(uint16_t v) { return uint(v, 2); }
inline Bytes i16(int16_t v) { return uint(static_cast<uint16_t>(v), 2); }
inline Bytes u32(uint32_t v) { return uint(v, 4); }
inline Bytes i32(int32_t v) { return uint(static_cast<uint32_t>(v), 4); }
inline Bytes u64(uint64_t v) { return uint(v, 8); }
inline Bytes i64(int64_t v) { return uint(static_cast<uint64_t>(v), 8); }
inline Bytes f32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u32(u);
}
inline Bytes f64(double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return u64(u);
}
inline Bytes boolean(bool v) { return u8(v ? 1 : 0); }
inline Bytes str(const std::string& s) {
  Bytes b(8 + s.size());
  const Bytes n = u64(s.size());
  std::memcpy(b.data(), n.data(), 8);
  if (!s.empty()) std::memcpy(b.data() + 8, s.data(), s.size());
  return b;
}
// An array value: element type, count, then the already-encoded elements.
inline Bytes array(uint32_t elem_type, const std::vector<Bytes>& elems) {
  Bytes b = u32(elem_type);
  const Bytes n = u64(elems.size());
  b.insert(b.end(), n.begin(), n.end());
  for (const Bytes& e : elems) b.insert(b.end(), e.begin(), e.end());
  return b;
}
}  // namespace enc

// Value type tags (GGUF spec numbering).
enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kStr = 8, kArr = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Where build() put things, for tests that corrupt specific fields.
struct Layout {
  size_t kv_begin = 0;                 // first key/value
  std::vector<size_t> kv_pos;          // each key/value (its key's length field)
  std::vector<size_t> info_pos;        // each tensor info (its name's length field)
  std::vector<size_t> ndims_pos, dims_pos, type_pos, offset_pos;
  size_t infos_end = 0;
  size_t data_offset = 0;              // start of the data section
  std::vector<uint64_t> offsets;       // tensor offsets as written (relative)
};

class GgufBuilder {
 public:
  uint32_t version = 3;
  uint64_t layout_alignment = 32;  // used to place the data section and the tensors

  GgufBuilder& kv(const std::string& key, uint32_t type, Bytes payload) {
    kvs_.push_back({key, type, std::move(payload)});
    return *this;
  }
  // Adds general.alignment (uint32) and lays the file out with it.
  GgufBuilder& alignment(uint32_t a) {
    layout_alignment = a;
    return kv("general.alignment", kU32, enc::u32(a));
  }
  // ne innermost first; data = the tensor's bytes (placed at the next aligned offset).
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, Bytes data) {
    tensors_.push_back({name, std::move(ne), type, std::move(data)});
    return *this;
  }

  // The file: header, key/values, tensor infos, zero padding to the alignment, tensor data,
  // each tensor at an aligned offset; the file ends right after the last tensor's data.
  Bytes build(Layout* layout = nullptr) const {
    Layout lay;
    Bytes b;
    auto put = [&b](const Bytes& x) { b.insert(b.end(), x.begin(), x.end()); };
    put({'G', 'G', 'U', 'F'});
    put(enc::u32(version));
    put(enc::u64(tensors_.size()));
    put(enc::u64(kvs_.size()));
    lay.kv_begin = b.size();
    for (const Kv& k : kvs_) {
      lay.kv_pos.push_back(b.size());
      put(enc::str(k.key));
      put(enc::u32(k.type));
      put(k.payload);
    }
    const uint64_t a = layout_alignment ? layout_alignment : 1;
    uint64_t off = 0;
    for (const T& t : tensors_) {
      lay.info_pos.push_back(b.size());
      put(enc::str(t.name));
      lay.ndims_pos.push_back(b.size());
      put(enc::u32(static_cast<uint32_t>(t.ne.size())));
      lay.dims_pos.push_back(b.size());
      for (uint64_t d : t.ne) put(enc::u64(d));
      lay.type_pos.push_back(b.size());
      put(enc::u32(t.type));
      lay.offset_pos.push_back(b.size());
      off = (off + a - 1) / a * a;
      lay.offsets.push_back(off);
      put(enc::u64(off));
      off += t.data.size();
    }
    lay.infos_end = b.size();
    if (!tensors_.empty()) {
      const uint64_t start = (b.size() + a - 1) / a * a;
      lay.data_offset = static_cast<size_t>(start);
      b.resize(static_cast<size_t>(start), 0);
      for (size_t i = 0; i < tensors_.size(); ++i) {
        b.resize(static_cast<size_t>(start + lay.offsets[i]), 0);
        put(tensors_[i].data);
      }
    } else {
      lay.data_offset = static_cast<size_t>((b.size() + a - 1) / a * a);
    }
    if (layout) *layout = lay;
    return b;
  }

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    Bytes payload;
  };
  struct T {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    Bytes data;
  };
  std::vector<Kv> kvs_;
  std::vector<T> tensors_;
};

// Overwrites b[pos .. pos + x.size()) (tests that corrupt a field).
inline void patch(Bytes& b, size_t pos, const Bytes& x) {
  for (size_t i = 0; i < x.size() && pos + i < b.size(); ++i) b[pos + i] = x[i];
}

// The same pseudo-random bytes as tests/llama/dequant_vectors.py: 64-bit LCG, byte = x >> 56.
inline Bytes lcg_bytes(uint64_t seed, size_t n) {
  Bytes out(n);
  uint64_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out[i] = static_cast<uint8_t>(x >> 56);
  }
  return out;
}

// A small valid file that uses every metadata value type, nested arrays, a non-default
// alignment and a few tensors of different types; the last tensor ends at the end of the file.
inline Bytes sample_file(Layout* layout = nullptr) {
  GgufBuilder g;
  g.alignment(64);
  g.kv("general.architecture", kStr, enc::str("llama"));
  g.kv("t.u8", kU8, enc::u8(200));
  g.kv("t.i8", kI8, enc::i8(-100));
  g.kv("t.u16", kU16, enc::u16(60000));
  g.kv("t.i16", kI16, enc::i16(-30000));
  g.kv("t.u32", kU32, enc::u32(4000000000u));
  g.kv("t.i32", kI32, enc::i32(-2000000000));
  g.kv("t.f32", kF32, enc::f32(1.5f));
  g.kv("t.bool", kBool, enc::boolean(true));
  g.kv("t.str", kStr, enc::str("h\xc3\xa9llo"));
  g.kv("t.u64", kU64, enc::u64(0x8000000000000005ull));
  g.kv("t.i64", kI64, enc::i64(-4611686018427387904ll));
  g.kv("t.f64", kF64, enc::f64(1e300));
  g.kv("t.arr_str", kArr, enc::array(kStr, {enc::str("a"), enc::str(""), enc::str("ccc")}));
  g.kv("t.arr_i32", kArr, enc::array(kI32, {enc::i32(-1), enc::i32(7)}));
  g.kv("t.arr_nested", kArr,
       enc::array(kArr, {enc::array(kU16, {enc::u16(1), enc::u16(2)}), enc::array(kStr, {enc::str("x")})}));
  Bytes f16s;
  for (uint16_t h : {0x3c00, 0xc000, 0x3800, 0x0000}) {
    const Bytes e = enc::u16(h);
    f16s.insert(f16s.end(), e.begin(), e.end());
  }
  g.tensor("f16.weight", {4}, 1 /*F16*/, f16s);
  g.tensor("q8.weight", {32, 2}, 8 /*Q8_0*/, lcg_bytes(7, 2 * 34));
  g.tensor("q41.weight", {32}, 3 /*Q4_1*/, lcg_bytes(9, 20));
  return g.build(layout);
}

}  // namespace gguf_test
