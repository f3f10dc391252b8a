// A GGUF v3 reader: header, metadata of every value type, tensor infos, data section, and
// dequantization of tensors to fp32 (block formats in gguf_dequant.hpp).
//
// Usage:
//   memattn_llama::GgufFile f;
//   std::string err;
//   if (!memattn_llama::GgufFile::open(path, &f, &err)) { fprintf(stderr, "%s\n", err.c_str()); ... }
//   uint32_t n_layer;  f.get_u32("llama.block_count", &n_layer, &err);
//   const GgufTensorInfo* t = f.tensor("token_embd.weight");
//   std::vector<float> w(t->n_elements);  f.dequantize(*t, w.data(), &err);   // row-major
//
// File layout (all little-endian): "GGUF", u32 version (3), u64 tensor_count, u64 kv_count;
// kv_count x {string key, u32 value_type, value}; tensor_count x {string name, u32 n_dims,
// u64 ne[n_dims], u32 ggml_type, u64 offset}; padding to `general.alignment` (default 32);
// the data section. A string is a u64 byte length and the bytes (no terminator). An array
// value is u32 element type, u64 count, then the elements (arrays may nest). Tensor offsets
// are relative to the start of the data section and multiples of the alignment.
//
// Shapes: ne[0] is the innermost (fastest) dimension, so a 2-D tensor with ne = {576, 49152}
// is 49152 rows of 576 contiguous elements; dequantize() writes that row-major, i.e. as the
// [ne[1]][ne[0]] matrix (for weights: [out_features][in_features], y = W x).
//
// Validation (every failure is an error message naming the problem and its byte offset, and
// leaves the output object untouched; no input makes the reader crash, read out of bounds or
// allocate more than a small multiple of the file size):
//   magic; version 3 only (1 and 2 are rejected by name; a byte-swapped version says
//   big-endian); counts bounded by the bytes left; every read bounds-checked; known value
//   types; bool bytes 0/1; arrays nested at most kMaxArrayDepth deep; unique keys and tensor
//   names; tensor names at most 64 bytes; general.alignment an integer power of two;
//   n_dims <= 4; dims >= 0 with no overflow of the element or byte counts; known ggml types;
//   row length (ne[0]) a multiple of the type's block size; offsets aligned; tensor data
//   inside the file and not overlapping.
//
// Threads: a GgufFile is immutable after open()/parse(); its const methods may be called
// concurrently. It is move-only; open() keeps a read-only POSIX mmap alive until destruction.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gguf_dequant.hpp"

namespace memattn_llama {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

inline const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

inline bool gguf_is_unsigned(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 || t == GgufValueType::kUint32 ||
         t == GgufValueType::kUint64;
}
inline bool gguf_is_signed(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}
inline bool gguf_is_integer(GgufValueType t) { return gguf_is_unsigned(t) || gguf_is_signed(t); }
inline bool gguf_is_float(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

// One metadata value. Scalars: unsigned integers and bool in `u`, signed integers in `i`,
// floats (widened to double, exactly) in `f`, strings in `s`. Arrays: `elem_type` and exactly
// one filled vector: `uints` (unsigned, bool), `ints` (signed), `floats`, `strings`, or
// `arrays` (nested arrays, each a GgufValue of type kArray).
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string s;
  GgufValueType elem_type = GgufValueType::kUint8;
  std::vector<uint64_t> uints;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<GgufValue> arrays;

  bool is_array() const { return type == GgufValueType::kArray; }
  // Number of elements of an array (0 for scalars).
  size_t array_size() const {
    if (!is_array()) return 0;
    return uints.size() + ints.size() + floats.size() + strings.size() + arrays.size();
  }
  // Scalar integer (any width or signedness) as u64 / i64; false when not an integer or out
  // of range.
  bool as_u64(uint64_t* out) const {
    if (gguf_is_unsigned(type)) { *out = u; return true; }
    if (gguf_is_signed(type) && i >= 0) { *out = static_cast<uint64_t>(i); return true; }
    return false;
  }
  bool as_i64(int64_t* out) const {
    if (gguf_is_signed(type)) { *out = i; return true; }
    if (gguf_is_unsigned(type) && u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      *out = static_cast<int64_t>(u);
      return true;
    }
    return false;
  }
  // Any numeric scalar (integer or float) as double.
  bool as_f64(double* out) const {
    if (gguf_is_float(type)) { *out = f; return true; }
    if (gguf_is_unsigned(type)) { *out = static_cast<double>(u); return true; }
    if (gguf_is_signed(type)) { *out = static_cast<double>(i); return true; }
    return false;
  }
};

struct GgufTensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] innermost; dimensions past n_dims are 1
  uint32_t type = 0;             // ggml type number (GgmlType); ggml_type_label() names it
  uint64_t offset = 0;           // as stored: relative to the data section
  uint64_t file_offset = 0;      // absolute byte offset in the file
  uint64_t n_bytes = 0;
  int64_t n_elements = 0;
  const uint8_t* data = nullptr;  // n_bytes bytes inside the file's buffer

  int64_t row_length() const { return ne[0]; }
  int64_t n_rows() const { return ne[0] == 0 ? 0 : n_elements / ne[0]; }
  uint64_t row_bytes() const {
    const GgmlTypeTraits t = ggml_type_traits(type);
    return t.name ? static_cast<uint64_t>(ne[0] / t.block_size) * t.type_size : 0;
  }
};

class GgufFile {
 public:
  static constexpr uint32_t kDefaultAlignment = 32;
  static constexpr int kMaxDims = 4;
  static constexpr int kMaxArrayDepth = 8;
  static constexpr size_t kMaxTensorName = 64;  // bytes (GGUF spec)

  GgufFile() = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  GgufFile(GgufFile&& o) noexcept { move_from(o); }
  GgufFile& operator=(GgufFile&& o) noexcept {
    if (this != &o) {
      release();
      move_from(o);
    }
    return *this;
  }
  ~GgufFile() { release(); }

  // Maps `path` read-only and parses it. On failure returns false, sets *error (when not null)
  // and leaves *out unchanged.
  static bool open(const std::string& path, GgufFile* out, std::string* error) {
    if (!out) return fail_plain(error, "gguf: null output");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_plain(error, "gguf: cannot open '" + path + "': " + std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      return fail_plain(error, "gguf: cannot stat '" + path + "': " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return fail_plain(error, "gguf: '" + path + "' is not a regular file");
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) {
      ::close(fd);
      return fail_plain(error, "gguf: '" + path + "' is empty (0 bytes), not a GGUF file");
    }
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_errno = errno;
    ::close(fd);
    if (map == MAP_FAILED) {
      return fail_plain(error, "gguf: cannot mmap '" + path + "': " + std::strerror(map_errno));
    }
    GgufFile f;
    f.map_ = map;
    f.map_size_ = size;
    std::string err;
    if (!f.parse_impl(static_cast<const uint8_t*>(map), size, &err)) {
      return fail_plain(error, "gguf: '" + path + "': " + err);
    }
    *out = std::move(f);
    return true;
  }

  // Parses a GGUF image in memory. The buffer is not copied: it must outlive *out.
  static bool parse(const uint8_t* data, size_t size, GgufFile* out, std::string* error) {
    if (!out) return fail_plain(error, "gguf: null output");
    if (!data && size != 0) return fail_plain(error, "gguf: null data");
    GgufFile f;
    std::string err;
    if (!f.parse_impl(data, size, &err)) return fail_plain(error, "gguf: " + err);
    *out = std::move(f);
    return true;
  }

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section
  size_t size() const { return size_; }
  const uint8_t* bytes() const { return data_; }

  // Metadata in file order, and lookup by key (nullptr when absent).
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const {
    const auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
  }

  // Typed getters: true and *out set on success; false (with *error when not null) when the
  // key is missing, has an incompatible type, or its value does not fit. Integers of any
  // width and signedness are accepted for integer outputs (range-checked); floats and
  // integers for float outputs.
  bool get_u32(const std::string& key, uint32_t* out, std::string* error = nullptr) const {
    uint64_t v = 0;
    if (!get_u64(key, &v, error)) return false;
    if (v > std::numeric_limits<uint32_t>::max()) return fail_plain(error, "gguf: key '" + key + "' = " + std::to_string(v) + " does not fit uint32");
    *out = static_cast<uint32_t>(v);
    return true;
  }
  bool get_u64(const std::string& key, uint64_t* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (!gguf_is_integer(v->type)) return type_error(key, *v, "a non-negative integer", error);
    if (!v->as_u64(out)) return fail_plain(error, "gguf: key '" + key + "' = " + std::to_string(v->i) + " is negative");
    return true;
  }
  bool get_i64(const std::string& key, int64_t* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (!gguf_is_integer(v->type)) return type_error(key, *v, "an integer", error);
    if (!v->as_i64(out)) return fail_plain(error, "gguf: key '" + key + "' = " + std::to_string(v->u) + " does not fit int64");
    return true;
  }
  bool get_f32(const std::string& key, float* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    double d;
    if (!v->as_f64(&d)) return type_error(key, *v, "a number", error);
    *out = static_cast<float>(d);
    return true;
  }
  bool get_bool(const std::string& key, bool* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (v->type != GgufValueType::kBool) return type_error(key, *v, "a bool", error);
    *out = v->u != 0;
    return true;
  }
  bool get_string(const std::string& key, std::string* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (v->type != GgufValueType::kString) return type_error(key, *v, "a string", error);
    *out = v->s;
    return true;
  }
  bool get_string_array(const std::string& key, std::vector<std::string>* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (!v->is_array() || v->elem_type != GgufValueType::kString) return type_error(key, *v, "an array of strings", error);
    *out = v->strings;
    return true;
  }
  bool get_f32_array(const std::string& key, std::vector<float>* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (!v->is_array() || !(gguf_is_float(v->elem_type) || gguf_is_integer(v->elem_type))) {
      return type_error(key, *v, "an array of numbers", error);
    }
    std::vector<float> r;
    r.reserve(v->array_size());
    for (double x : v->floats) r.push_back(static_cast<float>(x));
    for (uint64_t x : v->uints) r.push_back(static_cast<float>(x));
    for (int64_t x : v->ints) r.push_back(static_cast<float>(x));
    *out = std::move(r);
    return true;
  }
  bool get_i32_array(const std::string& key, std::vector<int32_t>* out, std::string* error = nullptr) const {
    const GgufValue* v = find_typed(key, error);
    if (!v) return false;
    if (!v->is_array() || !gguf_is_integer(v->elem_type)) return type_error(key, *v, "an array of integers", error);
    std::vector<int32_t> r;
    r.reserve(v->array_size());
    for (uint64_t x : v->uints) {
      if (x > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        return fail_plain(error, "gguf: key '" + key + "': element " + std::to_string(r.size()) + " = " + std::to_string(x) + " does not fit int32");
      }
      r.push_back(static_cast<int32_t>(x));
    }
    for (int64_t x : v->ints) {
      if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max()) {
        return fail_plain(error, "gguf: key '" + key + "': element " + std::to_string(r.size()) + " = " + std::to_string(x) + " does not fit int32");
      }
      r.push_back(static_cast<int32_t>(x));
    }
    *out = std::move(r);
    return true;
  }

  // Tensors in file order, and lookup by name (nullptr when absent).
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* tensor(const std::string& name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

  // Dequantizes the whole tensor into out[0 .. t.n_elements) (row-major, see top). `t` must be
  // one of this file's tensors. Unsupported types fail with their number and name; nothing is
  // written on failure.
  bool dequantize(const GgufTensorInfo& t, float* out, std::string* error) const {
    return dequantize_rows(t, 0, t.n_rows(), out, error);
  }
  // Rows [first_row, first_row + n_rows) (a row is ne[0] elements), e.g. one embedding row.
  bool dequantize_rows(const GgufTensorInfo& t, int64_t first_row, int64_t n_rows, float* out,
                       std::string* error) const {
    if (!owns(t)) return fail_plain(error, "gguf: tensor '" + t.name + "' does not belong to this file");
    const GgmlTypeTraits tr = ggml_type_traits(t.type);
    if (!tr.name || !tr.dequantizable) {
      return fail_plain(error, "gguf: tensor '" + t.name + "': dequantizing ggml type " + ggml_type_label(t.type) + " is not supported");
    }
    if (first_row < 0 || n_rows < 0 || first_row > t.n_rows() || n_rows > t.n_rows() - first_row) {
      return fail_plain(error, "gguf: tensor '" + t.name + "': rows [" + std::to_string(first_row) + ", +" +
                                   std::to_string(n_rows) + ") outside its " + std::to_string(t.n_rows()) + " rows");
    }
    if (n_rows == 0) return true;
    if (!out) return fail_plain(error, "gguf: null output");
    const uint64_t rb = t.row_bytes();
    const int64_t ne0 = t.ne[0];
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint8_t* src = t.data + static_cast<uint64_t>(first_row + r) * rb;
      if (!dequantize_row(t.type, src, ne0, out + r * ne0)) {
        return fail_plain(error, "gguf: tensor '" + t.name + "': cannot dequantize " + ggml_type_label(t.type));
      }
    }
    return true;
  }

 private:
  // ---- parsing ---------------------------------------------------------------------------
  class Reader {
   public:
    Reader(const uint8_t* p, size_t n, std::string* err) : p_(p), n_(n), err_(err) {}
    size_t pos() const { return pos_; }
    size_t left() const { return n_ - pos_; }
    bool fail(const std::string& msg) { return fail_at(pos_, msg); }
    bool fail_at(size_t at, const std::string& msg) {
      *err_ = msg + " (at byte offset " + std::to_string(at) + ")";
      return false;
    }
    bool need(size_t k, const char* what) {
      if (left() >= k) return true;
      return fail("file truncated: " + std::string(what) + " needs " + std::to_string(k) +
                  " bytes but only " + std::to_string(left()) + " remain of " + std::to_string(n_));
    }
    bool u8(uint8_t* v, const char* what) {
      if (!need(1, what)) return false;
      *v = p_[pos_++];
      return true;
    }
    bool u16(uint16_t* v, const char* what) {
      if (!need(2, what)) return false;
      *v = gguf_detail::load_u16(p_ + pos_);
      pos_ += 2;
      return true;
    }
    bool u32(uint32_t* v, const char* what) {
      if (!need(4, what)) return false;
      *v = gguf_detail::load_u32(p_ + pos_);
      pos_ += 4;
      return true;
    }
    bool u64(uint64_t* v, const char* what) {
      if (!need(8, what)) return false;
      *v = gguf_detail::load_u64(p_ + pos_);
      pos_ += 8;
      return true;
    }
    bool str(std::string* s, const char* what) {
      const size_t at = pos_;
      uint64_t len;
      if (!u64(&len, what)) return false;
      if (len > left()) {
        return fail_at(at, std::string(what) + ": string length " + std::to_string(len) + " exceeds the " +
                               std::to_string(left()) + " bytes left in the file");
      }
      s->assign(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
      pos_ += static_cast<size_t>(len);
      return true;
    }

   private:
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
    std::string* err_;
  };

  static bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }
  // Smallest encoding of one value of type t (bounds element counts before allocating).
  static size_t min_value_bytes(GgufValueType t) {
    switch (t) {
      case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
      case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
      case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
      case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
      case GgufValueType::kString: return 8;
      case GgufValueType::kArray: return 12;
    }
    return 1;
  }

  // Reads one scalar of type t (not array). Integers go to *u / *i, floats to *f, strings to *s.
  static bool read_scalar(Reader& r, GgufValueType t, uint64_t* u, int64_t* i, double* f, std::string* s) {
    switch (t) {
      case GgufValueType::kUint8: { uint8_t v; if (!r.u8(&v, "uint8 value")) return false; *u = v; return true; }
      case GgufValueType::kInt8: { uint8_t v; if (!r.u8(&v, "int8 value")) return false; *i = static_cast<int8_t>(v); return true; }
      case GgufValueType::kUint16: { uint16_t v; if (!r.u16(&v, "uint16 value")) return false; *u = v; return true; }
      case GgufValueType::kInt16: { uint16_t v; if (!r.u16(&v, "int16 value")) return false; *i = static_cast<int16_t>(v); return true; }
      case GgufValueType::kUint32: { uint32_t v; if (!r.u32(&v, "uint32 value")) return false; *u = v; return true; }
      case GgufValueType::kInt32: { uint32_t v; if (!r.u32(&v, "int32 value")) return false; *i = static_cast<int32_t>(v); return true; }
      case GgufValueType::kUint64: { uint64_t v; if (!r.u64(&v, "uint64 value")) return false; *u = v; return true; }
      case GgufValueType::kInt64: { uint64_t v; if (!r.u64(&v, "int64 value")) return false; *i = static_cast<int64_t>(v); return true; }
      case GgufValueType::kFloat32: { uint32_t v; if (!r.u32(&v, "float32 value")) return false; *f = gguf_detail::bits_to_f32(v); return true; }
      case GgufValueType::kFloat64: {
        uint64_t v;
        if (!r.u64(&v, "float64 value")) return false;
        std::memcpy(f, &v, 8);
        return true;
      }
      case GgufValueType::kBool: {
        const size_t at = r.pos();
        uint8_t v;
        if (!r.u8(&v, "bool value")) return false;
        if (v > 1) return r.fail_at(at, "bool value " + std::to_string(v) + " is neither 0 nor 1");
        *u = v;
        return true;
      }
      case GgufValueType::kString: return r.str(s, "string value");
      case GgufValueType::kArray: break;
    }
    return r.fail("internal: read_scalar on an array");
  }

  static bool read_value(Reader& r, GgufValueType t, GgufValue* v, int depth) {
    v->type = t;
    if (t != GgufValueType::kArray) return read_scalar(r, t, &v->u, &v->i, &v->f, &v->s);
    if (depth >= kMaxArrayDepth) {
      return r.fail("arrays nested more than " + std::to_string(kMaxArrayDepth) + " deep");
    }
    const size_t type_at = r.pos();
    uint32_t et;
    if (!r.u32(&et, "array element type")) return false;
    if (!valid_value_type(et)) return r.fail_at(type_at, "unknown array element type " + std::to_string(et));
    v->elem_type = static_cast<GgufValueType>(et);
    const size_t count_at = r.pos();
    uint64_t count;
    if (!r.u64(&count, "array length")) return false;
    const size_t min_bytes = min_value_bytes(v->elem_type);
    if (count > r.left() / min_bytes) {
      return r.fail_at(count_at, "array of " + std::to_string(count) + " " + gguf_value_type_name(v->elem_type) +
                                     " elements cannot fit in the " + std::to_string(r.left()) + " bytes left");
    }
    const size_t n = static_cast<size_t>(count);
    const GgufValueType e = v->elem_type;
    if (e == GgufValueType::kArray) {
      v->arrays.resize(n);
      for (size_t k = 0; k < n; ++k) {
        if (!read_value(r, e, &v->arrays[k], depth + 1)) return false;
      }
    } else if (e == GgufValueType::kString) {
      v->strings.resize(n);
      for (size_t k = 0; k < n; ++k) {
        if (!r.str(&v->strings[k], "array string element")) return false;
      }
    } else {
      uint64_t u = 0;
      int64_t i = 0;
      double f = 0;
      std::string unused;
      std::vector<uint64_t>* uv = gguf_is_unsigned(e) || e == GgufValueType::kBool ? &v->uints : nullptr;
      std::vector<int64_t>* iv = gguf_is_signed(e) ? &v->ints : nullptr;
      std::vector<double>* fv = gguf_is_float(e) ? &v->floats : nullptr;
      if (uv) uv->reserve(n);
      if (iv) iv->reserve(n);
      if (fv) fv->reserve(n);
      for (size_t k = 0; k < n; ++k) {
        if (!read_scalar(r, e, &u, &i, &f, &unused)) return false;
        if (uv) uv->push_back(u);
        if (iv) iv->push_back(i);
        if (fv) fv->push_back(f);
      }
    }
    return true;
  }

  bool parse_impl(const uint8_t* data, size_t size, std::string* err) {
    data_ = data;
    size_ = size;
    Reader r(data, size, err);
    // Header.
    if (size < 4) return r.fail("file truncated: " + std::to_string(size) + " bytes, too short for the GGUF magic");
    if (std::memcmp(data, "GGUF", 4) != 0) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "%02x %02x %02x %02x", data[0], data[1], data[2], data[3]);
      return r.fail(std::string("bad magic: expected \"GGUF\" (47 47 55 46), found ") + hex);
    }
    uint32_t magic;
    r.u32(&magic, "magic");
    const size_t version_at = r.pos();
    if (!r.u32(&version_, "version")) return false;
    if (version_ != 3) {
      if (version_ == 1 || version_ == 2) {
        return r.fail_at(version_at, "GGUF version " + std::to_string(version_) +
                                         " is not supported: only version 3 is (re-convert the model with a current llama.cpp)");
      }
      if (version_ == 0x03000000u) {
        return r.fail_at(version_at, "GGUF version bytes read as 0x03000000: a big-endian GGUF file; only little-endian version 3 is supported");
      }
      return r.fail_at(version_at, "unsupported GGUF version " + std::to_string(version_) + " (only version 3 is supported)");
    }
    const size_t tc_at = r.pos();
    uint64_t tensor_count, kv_count;
    if (!r.u64(&tensor_count, "tensor count")) return false;
    const size_t kc_at = r.pos();
    if (!r.u64(&kv_count, "metadata key/value count")) return false;
    // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info at
    // least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
    if (kv_count > r.left() / 13) {
      return r.fail_at(kc_at, "metadata key/value count " + std::to_string(kv_count) + " cannot fit in the " +
                                  std::to_string(r.left()) + " bytes left");
    }
    if (tensor_count > (r.left() - 13 * kv_count) / 24) {
      return r.fail_at(tc_at, "tensor count " + std::to_string(tensor_count) + " cannot fit in the " +
                                  std::to_string(r.left()) + " bytes left");
    }
    // Metadata.
    kv_.reserve(static_cast<size_t>(kv_count));
    for (uint64_t k = 0; k < kv_count; ++k) {
      const size_t key_at = r.pos();
      std::string key;
      if (!r.str(&key, "metadata key")) return false;
      if (kv_index_.count(key)) return r.fail_at(key_at, "duplicate metadata key '" + key + "'");
      const size_t type_at = r.pos();
      uint32_t t;
      if (!r.u32(&t, "metadata value type")) return false;
      if (!valid_value_type(t)) {
        return r.fail_at(type_at, "metadata key '" + key + "' has unknown value type " + std::to_string(t));
      }
      GgufValue v;
      if (!read_value(r, static_cast<GgufValueType>(t), &v, 0)) {
        *err = "metadata key '" + key + "': " + *err;
        return false;
      }
      kv_index_.emplace(key, kv_.size());
      kv_.emplace_back(std::move(key), std::move(v));
    }
    // Alignment.
    alignment_ = kDefaultAlignment;
    if (const GgufValue* a = find("general.alignment")) {
      uint64_t al = 0;
      if (!a->as_u64(&al) || al == 0 || (al & (al - 1)) != 0 || al > std::numeric_limits<uint32_t>::max()) {
        return r.fail("general.alignment must be a power-of-two integer that fits uint32 (type " +
                      std::string(gguf_value_type_name(a->type)) + ")");
      }
      alignment_ = al;
    }
    // Tensor infos.
    tensors_.reserve(static_cast<size_t>(tensor_count));
    for (uint64_t k = 0; k < tensor_count; ++k) {
      const size_t info_at = r.pos();
      GgufTensorInfo t;
      if (!r.str(&t.name, "tensor name")) return false;
      if (t.name.size() > kMaxTensorName) {
        return r.fail_at(info_at, "tensor name of " + std::to_string(t.name.size()) + " bytes (at most " +
                                      std::to_string(kMaxTensorName) + ")");
      }
      if (tensor_index_.count(t.name)) return r.fail_at(info_at, "duplicate tensor name '" + t.name + "'");
      const std::string who = "tensor '" + t.name + "'";
      const size_t dims_at = r.pos();
      if (!r.u32(&t.n_dims, "tensor n_dims")) return false;
      if (t.n_dims > static_cast<uint32_t>(kMaxDims)) {
        return r.fail_at(dims_at, who + " has " + std::to_string(t.n_dims) + " dimensions (at most " + std::to_string(kMaxDims) + ")");
      }
      uint64_t n_el = 1;
      bool zero = false;
      for (uint32_t d = 0; d < t.n_dims; ++d) {
        const size_t dim_at = r.pos();
        uint64_t ne;
        if (!r.u64(&ne, "tensor dimension")) return false;
        if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return r.fail_at(dim_at, who + ": dimension " + std::to_string(d) + " = " + std::to_string(ne) + " is negative as int64");
        }
        t.ne[d] = static_cast<int64_t>(ne);
        if (ne == 0) zero = true;
        else if (!zero && n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne) {
          return r.fail_at(dim_at, who + ": the element count overflows int64");
        }
        if (!zero) n_el *= ne;
      }
      t.n_elements = zero ? 0 : static_cast<int64_t>(n_el);
      const size_t type_at = r.pos();
      if (!r.u32(&t.type, "tensor type")) return false;
      const GgmlTypeTraits tr = ggml_type_traits(t.type);
      if (!tr.name) return r.fail_at(type_at, who + " has unknown ggml type " + std::to_string(t.type));
      if (t.ne[0] % tr.block_size != 0) {
        return r.fail_at(dims_at, who + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                                      ggml_type_label(t.type) + " block size " + std::to_string(tr.block_size));
      }
      // Bytes = blocks per row * block bytes * rows; bounded by the file size below, so first
      // make sure the product cannot overflow.
      const uint64_t rows = t.ne[0] == 0 ? 0 : static_cast<uint64_t>(t.n_elements / t.ne[0]);
      if (static_cast<uint64_t>(t.ne[0] / tr.block_size) > std::numeric_limits<uint64_t>::max() / tr.type_size) {
        return r.fail_at(dims_at, who + ": the row byte size overflows");
      }
      const uint64_t row_bytes = static_cast<uint64_t>(t.ne[0] / tr.block_size) * tr.type_size;
      if (row_bytes != 0 && rows > std::numeric_limits<uint64_t>::max() / row_bytes) {
        return r.fail_at(dims_at, who + ": the byte size overflows");
      }
      t.n_bytes = row_bytes * rows;
      const size_t off_at = r.pos();
      if (!r.u64(&t.offset, "tensor data offset")) return false;
      if (t.offset % alignment_ != 0) {
        return r.fail_at(off_at, who + ": data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                                     std::to_string(alignment_));
      }
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }
    // Data section: starts at the next multiple of the alignment.
    const uint64_t end_of_infos = r.pos();
    const uint64_t pad = (alignment_ - end_of_infos % alignment_) % alignment_;
    data_offset_ = end_of_infos + pad;
    if (!tensors_.empty() && data_offset_ > size) {
      return r.fail_at(static_cast<size_t>(end_of_infos), "file truncated: the data section would start at byte " +
                                                          std::to_string(data_offset_) + " but the file has " + std::to_string(size) + " bytes");
    }
    const uint64_t data_bytes = data_offset_ <= size ? size - data_offset_ : 0;
    for (GgufTensorInfo& t : tensors_) {
      if (t.offset > data_bytes || t.n_bytes > data_bytes - t.offset) {
        return r.fail_at(static_cast<size_t>(end_of_infos),
                         "tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) +
                             ") (relative to the data section at byte " + std::to_string(data_offset_) +
                             ") extends past the end of the file (" + std::to_string(data_bytes) + " data bytes)");
      }
      t.file_offset = data_offset_ + t.offset;
      t.data = data + t.file_offset;
    }
    // No two non-empty tensors may share bytes.
    std::vector<const GgufTensorInfo*> order;
    order.reserve(tensors_.size());
    for (const GgufTensorInfo& t : tensors_) if (t.n_bytes > 0) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
      return a->offset < b->offset || (a->offset == b->offset && a->name < b->name);
    });
    for (size_t k = 1; k < order.size(); ++k) {
      if (order[k - 1]->offset + order[k - 1]->n_bytes > order[k]->offset) {
        return r.fail_at(static_cast<size_t>(order[k]->file_offset),
                         "tensors '" + order[k - 1]->name + "' and '" + order[k]->name + "' overlap");
      }
    }
    return true;
  }

  // ---- helpers ---------------------------------------------------------------------------
  static bool fail_plain(std::string* error, const std::string& msg) {
    if (error) *error = msg;
    return false;
  }
  const GgufValue* find_typed(const std::string& key, std::string* error) const {
    const GgufValue* v = find(key);
    if (!v) fail_plain(error, "gguf: metadata key '" + key + "' is missing");
    return v;
  }
  static bool type_error(const std::string& key, const GgufValue& v, const char* expected, std::string* error) {
    std::string got = gguf_value_type_name(v.type);
    if (v.is_array()) got += std::string(" of ") + gguf_value_type_name(v.elem_type);
    return fail_plain(error, "gguf: metadata key '" + key + "' is " + got + ", expected " + expected);
  }
  bool owns(const GgufTensorInfo& t) const {
    const GgufTensorInfo* mine = tensor(t.name);
    return mine && mine->data == t.data && mine->n_bytes == t.n_bytes && mine->type == t.type &&
           mine->n_elements == t.n_elements && mine->ne[0] == t.ne[0];
  }
  void release() {
    if (map_) ::munmap(map_, map_size_);
    map_ = nullptr;
    map_size_ = 0;
  }
  void move_from(GgufFile& o) {
    map_ = o.map_;
    map_size_ = o.map_size_;
    data_ = o.data_;
    size_ = o.size_;
    version_ = o.version_;
    alignment_ = o.alignment_;
    data_offset_ = o.data_offset_;
    kv_ = std::move(o.kv_);
    kv_index_ = std::move(o.kv_index_);
    tensors_ = std::move(o.tensors_);
    tensor_index_ = std::move(o.tensor_index_);
    o.map_ = nullptr;
    o.map_size_ = 0;
    o.data_ = nullptr;
    o.size_ = 0;
    o.kv_.clear();
    o.kv_index_.clear();
    o.tensors_.clear();
    o.tensor_index_.clear();
  }

  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace memattn_llama
