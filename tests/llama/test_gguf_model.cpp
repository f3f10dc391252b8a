// GGUF reader on the real model: SmolLM2-135M-Instruct.Q4_1.gguf (scripts/get-models.sh).
// The file is looked up as $MEMATTN_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf, else in the
// folder CMake was configured with (MEMATTN_MODELS_DIR), else ~/.cache/memattn/models. When it
// is absent the binary prints why and exits 77 (ctest: skipped).
#include <catch2/catch.hpp>
#include "common/catch_run.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "gguf.hpp"

using namespace memattn_llama;

#ifndef MEMATTN_MODELS_DIR_DEFAULT
#define MEMATTN_MODELS_DIR_DEFAULT ""
#endif

namespace {

const char* kModelName = "SmolLM2-135M-Instruct.Q4_1.gguf";
std::string g_model_path;

std::string find_model() {
  std::vector<std::string> dirs;
  if (const char* e = std::getenv("MEMATTN_MODELS_DIR"); e && *e) dirs.push_back(e);
  if (*MEMATTN_MODELS_DIR_DEFAULT) dirs.push_back(MEMATTN_MODELS_DIR_DEFAULT);
  if (const char* h = std::getenv("HOME"); h && *h) dirs.push_back(std::string(h) + "/.cache/memattn/models");
  for (const std::string& d : dirs) {
    const std::string p = d + "/" + kModelName;
    if (FILE* f = std::fopen(p.c_str(), "rb")) {
      std::fclose(f);
      return p;
    }
  }
  return "";
}

const GgufFile& model() {
  static GgufFile f;
  static bool loaded = false;
  if (!loaded) {
    std::string err;
    const bool ok = GgufFile::open(g_model_path, &f, &err);
    INFO(err);
    REQUIRE(ok);
    loaded = true;
  }
  return f;
}

}  // namespace

TEST_CASE("gguf model: header and llama metadata", "[gguf][model]") {
  const GgufFile& f = model();
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.size() == 98362432);
  CHECK(f.tensors().size() == 272);
  CHECK(f.metadata().size() == 33);
  CHECK(f.data_offset() == 1785664);

  std::string s;
  CHECK(f.get_string("general.architecture", &s));
  CHECK(s == "llama");
  uint32_t u = 0;
  const std::map<std::string, uint32_t> ints = {
      {"llama.block_count", 30},          {"llama.context_length", 8192},
      {"llama.embedding_length", 576},    {"llama.feed_forward_length", 1536},
      {"llama.attention.head_count", 9},  {"llama.attention.head_count_kv", 3},
      {"llama.vocab_size", 49152},        {"llama.rope.dimension_count", 64},
      {"tokenizer.ggml.bos_token_id", 1}, {"tokenizer.ggml.eos_token_id", 2},
      {"tokenizer.ggml.unknown_token_id", 0}, {"tokenizer.ggml.padding_token_id", 2},
      {"general.file_type", 3},           {"general.quantization_version", 2},
  };
  for (const auto& [key, want] : ints) {
    INFO(key);
    CHECK(f.get_u32(key, &u));
    CHECK(u == want);
  }
  float x = 0;
  CHECK(f.get_f32("llama.rope.freq_base", &x));
  CHECK(x == 100000.f);
  CHECK(f.get_f32("llama.attention.layer_norm_rms_epsilon", &x));
  CHECK(x == 1e-5f);
  CHECK(f.get_string("tokenizer.ggml.model", &s));
  CHECK(s == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.pre", &s));
  CHECK(s == "smollm");
  bool b = true;
  CHECK(f.get_bool("tokenizer.ggml.add_bos_token", &b));
  CHECK_FALSE(b);
  CHECK(f.get_bool("tokenizer.ggml.add_space_prefix", &b));
  CHECK_FALSE(b);
  std::vector<std::string> tokens, merges;
  CHECK(f.get_string_array("tokenizer.ggml.tokens", &tokens));
  CHECK(tokens.size() == 49152);
  CHECK(tokens[1] == "<|im_start|>");
  CHECK(tokens[2] == "<|im_end|>");
  CHECK(f.get_string_array("tokenizer.ggml.merges", &merges));
  CHECK(merges.size() == 48900);
  std::vector<int32_t> types;
  CHECK(f.get_i32_array("tokenizer.ggml.token_type", &types));
  CHECK(types.size() == 49152);
  CHECK(f.get_string("tokenizer.chat_template", &s));
  CHECK(s.find("<|im_start|>") != std::string::npos);
}

TEST_CASE("gguf model: tensor types and shapes", "[gguf][model]") {
  const GgufFile& f = model();
  std::map<uint32_t, int> count;
  for (const GgufTensorInfo& t : f.tensors()) ++count[t.type];
  CHECK(count.size() == 3);
  CHECK(count[kGgmlF32] == 61);    // the norms: 2 per layer + output_norm
  CHECK(count[kGgmlQ4_1] == 210);  // 7 matrices per layer
  CHECK(count[kGgmlQ8_0] == 1);    // token_embd (tied classifier: no output.weight)
  CHECK(f.tensor("output.weight") == nullptr);
  const GgufTensorInfo* e = f.tensor("token_embd.weight");
  REQUIRE(e);
  CHECK(e->type == kGgmlQ8_0);
  CHECK(e->ne[0] == 576);
  CHECK(e->ne[1] == 49152);
  CHECK(e->file_offset == 1785664);
  struct Shape { const char* suffix; int64_t ne0, ne1; };
  for (int l = 0; l < 30; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const Shape& s : {Shape{"attn_q.weight", 576, 576}, Shape{"attn_k.weight", 576, 192},
                           Shape{"attn_v.weight", 576, 192}, Shape{"attn_output.weight", 576, 576},
                           Shape{"ffn_gate.weight", 576, 1536}, Shape{"ffn_up.weight", 576, 1536},
                           Shape{"ffn_down.weight", 1536, 576}, Shape{"attn_norm.weight", 576, 1},
                           Shape{"ffn_norm.weight", 576, 1}}) {
      const GgufTensorInfo* t = f.tensor(p + s.suffix);
      INFO(p + s.suffix);
      REQUIRE(t);
      CHECK(t->ne[0] == s.ne0);
      CHECK(t->ne[1] == s.ne1);
      CHECK(t->type == (s.ne1 == 1 ? kGgmlF32 : kGgmlQ4_1));
    }
  }
}

TEST_CASE("gguf model: every tensor dequantizes to finite values; spot values", "[gguf][model]") {
  const GgufFile& f = model();
  // Values measured with llama.cpp's Python package (gguf==0.19.0, numpy==2.4.6):
  //   r = gguf.GGUFReader(path); t = <tensor>
  //   w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)   # row-major, ne[0] fastest
  // and math.fsum(w) for the sums. The C++ reader matched that package bit for bit on all
  // 134,515,008 elements of this file when this test was written.
  struct Spot { const char* tensor; int64_t index; float value; };
  const Spot spots[] = {
      {"token_embd.weight", 0, -0.106544495f},
      {"token_embd.weight", 581, -0.00793457031f},
      {"token_embd.weight", 1727, -0.150426865f},
      {"token_embd.weight", 28311076, -0.0269126892f},
      {"blk.0.attn_q.weight", 0, -0.0963134766f},
      {"blk.0.attn_q.weight", 57800, -0.0343017578f},
      {"blk.0.attn_q.weight", 331775, -0.255859375f},
      {"blk.0.attn_k.weight", 7, 0.505371094f},
      {"blk.0.attn_k.weight", 110516, 0.078125f},
      {"blk.29.ffn_down.weight", 0, -0.27331543f},
      {"blk.29.ffn_down.weight", 884735, 0.056640625f},
      {"blk.14.ffn_gate.weight", 12345, 0.00323486328f},
      {"blk.0.attn_norm.weight", 0, 0.0139770508f},
      {"blk.0.attn_norm.weight", 3, -0.0302734375f},
      {"output_norm.weight", 0, 1.7578125f},
      {"output_norm.weight", 575, 1.984375f},
  };
  const std::map<std::string, double> sums = {
      {"token_embd.weight", -15353.044494152069},    {"blk.0.attn_q.weight", 59.223220825195312},
      {"blk.0.attn_k.weight", 26.937057495117188},   {"blk.29.ffn_down.weight", 49.835708618164062},
      {"blk.14.ffn_gate.weight", 122.89456939697266}, {"blk.0.attn_norm.weight", 0.61294364929199219},
      {"output_norm.weight", 1038.33203125},
  };
  std::vector<float> w;
  int64_t total = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    INFO(t.name);
    w.assign(static_cast<size_t>(t.n_elements), NAN);
    std::string err;
    REQUIRE(f.dequantize(t, w.data(), &err));
    total += t.n_elements;
    double s = 0;
    bool finite = true;
    for (float v : w) {
      finite = finite && std::isfinite(v);
      s += v;
    }
    CHECK(finite);
    if (const auto it = sums.find(t.name); it != sums.end()) CHECK(std::abs(s - it->second) <= 1e-9 * (1 + std::abs(it->second)));
    for (const Spot& sp : spots) {
      if (t.name != sp.tensor) continue;
      INFO("index " << sp.index);
      CHECK(w[static_cast<size_t>(sp.index)] == sp.value);
    }
  }
  CHECK(total == 134515008);
  // One embedding row on its own equals the same row of the whole tensor.
  const GgufTensorInfo* e = f.tensor("token_embd.weight");
  std::vector<float> row(576);
  std::string err;
  REQUIRE(f.dequantize_rows(*e, 49151, 1, row.data(), &err));
  CHECK(row[100] == -0.0269126892f);
}

int main(int argc, char* argv[]) {
  g_model_path = find_model();
  if (g_model_path.empty()) {
    std::printf("%s not found (looked in $MEMATTN_MODELS_DIR, '%s', ~/.cache/memattn/models); "
                "run scripts/get-models.sh: skipping\n", kModelName, MEMATTN_MODELS_DIR_DEFAULT);
    return 77;
  }
  std::printf("model: %s\n", g_model_path.c_str());
  return memattn_test::run_catch(argc, argv);
}
