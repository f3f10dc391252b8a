// libFuzzer target for the GGUF reader (examples/llama/gguf.hpp): GgufFile::parse on arbitrary
// bytes, then every getter on every key and dequantization of every tensor. Build and run with
// scripts/fuzz.sh gguf [SECONDS] (clang, -fsanitize=fuzzer,address,undefined). Any crash, sanitizer
// report, pointer outside the input, or failure without a message is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "gguf.hpp"

using namespace memattn_llama;

namespace {
void require(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GgufFile f;
  std::string err;
  if (!GgufFile::parse(data, size, &f, &err)) {
    require(!err.empty());
    require(f.tensors().empty() && f.metadata().empty());  // output untouched on failure
    return 0;
  }
  require(f.version() == 3);
  require(f.alignment() != 0 && (f.alignment() & (f.alignment() - 1)) == 0);
  for (const auto& kv : f.metadata()) {
    const std::string& k = kv.first;
    require(f.find(k) == &kv.second);
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float x;
    bool b;
    std::string s;
    std::vector<std::string> sa;
    std::vector<float> fa;
    std::vector<int32_t> ia;
    f.get_u32(k, &u32, &err);
    f.get_u64(k, &u64, &err);
    f.get_i64(k, &i64, &err);
    f.get_f32(k, &x, &err);
    f.get_bool(k, &b, &err);
    f.get_string(k, &s, &err);
    f.get_string_array(k, &sa, &err);
    f.get_f32_array(k, &fa, &err);
    f.get_i32_array(k, &ia, &err);
  }
  std::vector<float> y;
  for (const GgufTensorInfo& t : f.tensors()) {
    require(f.tensor(t.name) == &t);
    require(t.file_offset >= f.data_offset() && t.file_offset % f.alignment() == 0);
    require(t.n_bytes <= size && t.file_offset <= size - t.n_bytes);
    require(t.n_bytes == 0 || (t.data >= data && t.data + t.n_bytes <= data + size));
    require(t.n_elements >= 0 && static_cast<uint64_t>(t.n_rows()) * t.row_bytes() == t.n_bytes);
    if (t.n_elements > (int64_t{1} << 24)) continue;  // cannot happen (bytes <= input), but bound it
    y.assign(static_cast<size_t>(t.n_elements), 0.f);
    const bool ok = f.dequantize(t, y.data(), &err);
    const GgmlTypeTraits tr = ggml_type_traits(t.type);
    require(ok == tr.dequantizable || t.n_elements == 0);
    if (t.n_rows() > 0 && tr.dequantizable) {
      require(f.dequantize_rows(t, t.n_rows() - 1, 1, y.data(), &err));
      require(!f.dequantize_rows(t, t.n_rows(), 1, y.data(), &err));
    }
  }
  return 0;
}
