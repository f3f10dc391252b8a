// Writes the seed corpus for fuzz_gguf (scripts/fuzz.sh): small valid GGUF files from
// tests/llama/gguf_builder.hpp that between them use every metadata type and every ggml type.
//   fuzz_gguf_seeds OUT_DIR
#include <cstdio>
#include <string>

#include "llama/gguf_builder.hpp"

using namespace gguf_test;

static bool write(const std::string& dir, const std::string& name, const Bytes& b) {
  const std::string p = dir + "/" + name;
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(b.data(), 1, b.size(), f) == b.size();
  return std::fclose(f) == 0 && ok;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = write(dir, "sample.gguf", sample_file());
  ok = write(dir, "header_only.gguf", GgufBuilder().build()) && ok;
  // One tensor of each ggml type (block, bytes per block), pseudo-random payload.
  const struct { uint32_t type; uint64_t block, bytes; } types[] = {
      {0, 1, 4},     {1, 1, 2},      {2, 32, 18},   {3, 32, 20},   {6, 32, 22},   {7, 32, 24},
      {8, 32, 34},   {9, 32, 36},    {10, 256, 84}, {11, 256, 110}, {12, 256, 144}, {13, 256, 176},
      {14, 256, 210}, {15, 256, 292}, {16, 256, 66}, {20, 32, 18},  {24, 1, 1},    {25, 1, 2},
      {26, 1, 4},    {27, 1, 8},     {28, 1, 8},    {30, 1, 2},    {39, 32, 17},  {41, 128, 18},
  };
  GgufBuilder all;
  all.alignment(16);
  for (const auto& t : types) {
    GgufBuilder g;
    const uint64_t n = t.block == 1 ? 8 : t.block;
    const Bytes data = lcg_bytes(t.type + 1, t.bytes * (n / t.block) * 2);
    g.tensor("w", {n, 2}, t.type, data);
    ok = write(dir, "type_" + std::to_string(t.type) + ".gguf", g.build()) && ok;
    all.tensor("t" + std::to_string(t.type), {n, 2}, t.type, data);
  }
  ok = write(dir, "all_types.gguf", all.build()) && ok;
  // Tokenizer-like metadata: string and int32 arrays, ids.
  GgufBuilder tok;
  tok.kv("tokenizer.ggml.model", kStr, enc::str("gpt2"));
  tok.kv("tokenizer.ggml.tokens", kArr, enc::array(kStr, {enc::str("<s>"), enc::str("a"), enc::str("\xc4\xa0" "b")}));
  tok.kv("tokenizer.ggml.token_type", kArr, enc::array(kI32, {enc::i32(3), enc::i32(1), enc::i32(1)}));
  tok.kv("tokenizer.ggml.merges", kArr, enc::array(kStr, {enc::str("a b")}));
  tok.kv("tokenizer.ggml.bos_token_id", kU32, enc::u32(0));
  tok.kv("tokenizer.ggml.add_bos_token", kBool, enc::boolean(false));
  tok.kv("llama.rope.freq_base", kF32, enc::f32(100000.f));
  tok.kv("x.f64s", kArr, enc::array(kF64, {enc::f64(1.0), enc::f64(-2.0)}));
  tok.kv("x.u64", kU64, enc::u64(~0ull));
  tok.kv("x.i64s", kArr, enc::array(kI64, {enc::i64(-1)}));
  tok.kv("x.nested", kArr, enc::array(kArr, {enc::array(kI8, {enc::i8(-1)}), enc::array(kBool, {enc::boolean(true)})}));
  tok.kv("x.u16", kU16, enc::u16(7)).kv("x.i16", kI16, enc::i16(-7)).kv("x.u8", kU8, enc::u8(7));
  ok = write(dir, "metadata.gguf", tok.build()) && ok;
  if (!ok) {
    std::fprintf(stderr, "fuzz_gguf_seeds: cannot write into %s\n", dir.c_str());
    return 1;
  }
  return 0;
}
