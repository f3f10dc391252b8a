// Llama-family model weights for the example engine, and their two loaders:
//   * llama2.c checkpoints (stories260K): int32 header + fp32 arrays (layout in
//     ../shared/data/README.md); RoPE on adjacent channel pairs (2i, 2i+1).
//   * GGUF (SmolLM2-135M-Instruct): llama.* metadata, tensors dequantised to fp32 at load.
//     llama.cpp's HF->GGUF converter permutes the rows of attn_q / attn_k so that the "normal"
//     (adjacent-pair) RoPE of ggml applies; a GGUF llama therefore also pairs (2i, 2i+1).
//     tests/llama/test_engine.cpp shows it: half-split RoPE on the same weights gives a far
//     worse perplexity.
// Weights are kept row-major (out x in) in fp32 so a chunk of tokens is one GEMM per matrix.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gguf.hpp"

namespace memattn_llama {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

enum class RopeStyle { kAdjacentPairs, kHalfSplit };

struct ModelConfig {
  int dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, context = 0;
  int head_dim = 0;
  float rope_theta = 10000.f;
  float norm_eps = 1e-5f;
  RopeStyle rope = RopeStyle::kAdjacentPairs;
  int bos = 1, eos = 2;
  std::string name;
};

struct LayerWeights {
  Vector attn_norm, ffn_norm;     // [dim]
  Matrix wq, wk, wv, wo;          // [heads*hd, dim], [kv*hd, dim], [kv*hd, dim], [dim, heads*hd]
  Matrix w1, w2, w3;              // gate [hidden, dim], down [dim, hidden], up [hidden, dim]
};

struct Model {
  ModelConfig cfg;
  Matrix embedding;               // [vocab, dim]
  std::vector<LayerWeights> layers;
  Vector final_norm;              // [dim]
  Matrix classifier;              // [vocab, dim]; empty when tied to the embedding
  const Matrix& output() const { return classifier.size() ? classifier : embedding; }
};

inline bool fail(std::string* error, const std::string& msg) {
  if (error) *error = msg;
  return false;
}

inline bool check_config(const ModelConfig& c, std::string* error) {
  const long long limit = 1 << 20;
  if (c.dim <= 0 || c.hidden <= 0 || c.layers <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.vocab <= 0 ||
      c.context <= 0 || c.dim > limit || c.hidden > limit || c.layers > 4096 || c.vocab > (1 << 24) ||
      c.context > (1 << 24))
    return fail(error, "model header has out-of-range sizes (dim " + std::to_string(c.dim) + ", hidden " +
                           std::to_string(c.hidden) + ", layers " + std::to_string(c.layers) + ", vocab " +
                           std::to_string(c.vocab) + ")");
  if (c.dim % c.heads != 0 || c.heads % c.kv_heads != 0 || (c.dim / c.heads) % 2 != 0)
    return fail(error, "model header: dim must split into an even head_dim and heads into KV groups");
  return true;
}

// ---- llama2.c ----------------------------------------------------------------------------

inline bool load_llama2c(const std::string& path, Model* m, std::string* error) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return fail(error, "cannot open checkpoint '" + path + "'");
  const std::streamoff size = f.tellg();
  f.seekg(0);
  std::int32_t h[7];
  if (size < static_cast<std::streamoff>(sizeof h) || !f.read(reinterpret_cast<char*>(h), sizeof h))
    return fail(error, "checkpoint '" + path + "' is truncated: shorter than its 28-byte header");
  ModelConfig c;
  c.dim = h[0];
  c.hidden = h[1];
  c.layers = h[2];
  c.heads = h[3];
  c.kv_heads = h[4];
  const bool tied = h[5] > 0;
  c.vocab = h[5] > 0 ? h[5] : -h[5];
  c.context = h[6];
  if (!check_config(c, error)) return fail(error, "checkpoint '" + path + "': " + *error);
  c.head_dim = c.dim / c.heads;
  c.rope = RopeStyle::kAdjacentPairs;
  c.name = "llama2c:" + path;
  const std::int64_t kv_dim = static_cast<std::int64_t>(c.kv_heads) * c.head_dim;
  const std::int64_t L = c.layers, D = c.dim, H = c.hidden;
  const std::int64_t floats = c.vocab * D + L * D + L * D * D + 2 * L * kv_dim * D + L * D * D + L * D + 3 * L * H * D +
                              D + c.context * (c.head_dim / 2) * 2 + (tied ? 0 : c.vocab * D);
  const std::int64_t want = 28 + floats * 4;
  if (size != want)
    return fail(error, "checkpoint '" + path + "' has " + std::to_string(size) + " bytes; its header implies " +
                           std::to_string(want) + (size < want ? " (truncated)" : " (trailing data)"));
  std::vector<float> all(static_cast<std::size_t>(floats));
  if (!f.read(reinterpret_cast<char*>(all.data()), floats * 4)) return fail(error, "checkpoint '" + path + "': read failed");
  for (float x : all)
    if (!std::isfinite(x)) return fail(error, "checkpoint '" + path + "' contains NaN/Inf weights (corrupt)");
  const float* p = all.data();
  auto take = [&](Matrix& mat, std::int64_t rows, std::int64_t cols) {
    mat = Eigen::Map<const Matrix>(p, rows, cols);
    p += rows * cols;
  };
  auto take_vec = [&](Vector& v, std::int64_t n) {
    v = Eigen::Map<const Vector>(p, n);
    p += n;
  };
  Model out;
  out.cfg = c;
  take(out.embedding, c.vocab, D);
  out.layers.resize(static_cast<std::size_t>(L));
  for (auto& l : out.layers) take_vec(l.attn_norm, D);
  for (auto& l : out.layers) take(l.wq, D, D);
  for (auto& l : out.layers) take(l.wk, kv_dim, D);
  for (auto& l : out.layers) take(l.wv, kv_dim, D);
  for (auto& l : out.layers) take(l.wo, D, D);
  for (auto& l : out.layers) take_vec(l.ffn_norm, D);
  for (auto& l : out.layers) take(l.w1, H, D);
  for (auto& l : out.layers) take(l.w2, D, H);
  for (auto& l : out.layers) take(l.w3, H, D);
  take_vec(out.final_norm, D);
  p += c.context * (c.head_dim / 2) * 2;  // legacy RoPE tables, unused
  if (!tied) take(out.classifier, c.vocab, D);
  *m = std::move(out);
  return true;
}

// ---- GGUF --------------------------------------------------------------------------------

inline bool gguf_matrix(const GgufFile& g, const std::string& name, std::int64_t rows, std::int64_t cols, Matrix* out,
                        std::string* error) {
  const GgufTensorInfo* t = g.tensor(name);
  if (!t) return fail(error, "GGUF has no tensor '" + name + "'");
  if (t->ne[0] != cols || t->n_rows() != rows)
    return fail(error, "GGUF tensor '" + name + "' has shape [" + std::to_string(t->n_rows()) + ", " +
                           std::to_string(t->ne[0]) + "], expected [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  out->resize(rows, cols);
  std::string err;
  if (!g.dequantize(*t, out->data(), &err)) return fail(error, err);
  if (!out->allFinite()) return fail(error, "GGUF tensor '" + name + "' has NaN/Inf values (corrupt)");
  return true;
}

inline bool gguf_vector(const GgufFile& g, const std::string& name, std::int64_t n, Vector* out, std::string* error) {
  Matrix m;
  if (!gguf_matrix(g, name, 1, n, &m, error)) return false;
  *out = Eigen::Map<const Vector>(m.data(), n);
  return true;
}

inline bool gguf_int(const GgufFile& g, const std::string& key, int* out, std::string* error) {
  const GgufValue* v = g.find(key);
  std::int64_t x = 0;
  if (!v || !v->as_i64(&x) || x <= 0 || x > (1ll << 30)) return fail(error, "GGUF metadata '" + key + "' missing or invalid");
  *out = static_cast<int>(x);
  return true;
}

inline bool load_gguf(const GgufFile& g, Model* m, std::string* error) {
  std::string arch;
  if (!g.get_string("general.architecture", &arch)) return fail(error, "GGUF has no general.architecture");
  if (arch != "llama") return fail(error, "GGUF architecture '" + arch + "' is not supported (only llama)");
  ModelConfig c;
  if (!gguf_int(g, "llama.embedding_length", &c.dim, error) || !gguf_int(g, "llama.feed_forward_length", &c.hidden, error) ||
      !gguf_int(g, "llama.block_count", &c.layers, error) || !gguf_int(g, "llama.attention.head_count", &c.heads, error) ||
      !gguf_int(g, "llama.context_length", &c.context, error))
    return false;
  c.kv_heads = c.heads;
  if (g.find("llama.attention.head_count_kv") && !gguf_int(g, "llama.attention.head_count_kv", &c.kv_heads, error)) return false;
  const GgufTensorInfo* emb = g.tensor("token_embd.weight");
  if (!emb) return fail(error, "GGUF has no tensor 'token_embd.weight'");
  c.vocab = static_cast<int>(emb->n_rows());
  double d = 0;
  const GgufValue* v = g.find("llama.rope.freq_base");
  if (v && v->as_f64(&d)) c.rope_theta = static_cast<float>(d);
  v = g.find("llama.attention.layer_norm_rms_epsilon");
  if (v && v->as_f64(&d)) c.norm_eps = static_cast<float>(d);
  std::int64_t id = 0;
  v = g.find("tokenizer.ggml.bos_token_id");
  if (v && v->as_i64(&id)) c.bos = static_cast<int>(id);
  v = g.find("tokenizer.ggml.eos_token_id");
  if (v && v->as_i64(&id)) c.eos = static_cast<int>(id);
  if (!check_config(c, error)) return false;
  c.head_dim = c.dim / c.heads;
  c.rope = RopeStyle::kAdjacentPairs;
  std::string name;
  c.name = g.get_string("general.name", &name) ? name : "gguf-llama";

  Model out;
  out.cfg = c;
  const std::int64_t D = c.dim, H = c.hidden, kv_dim = static_cast<std::int64_t>(c.kv_heads) * c.head_dim;
  if (!gguf_matrix(g, "token_embd.weight", c.vocab, D, &out.embedding, error)) return false;
  out.layers.resize(static_cast<std::size_t>(c.layers));
  for (int i = 0; i < c.layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    LayerWeights& l = out.layers[static_cast<std::size_t>(i)];
    if (!gguf_vector(g, b + "attn_norm.weight", D, &l.attn_norm, error) ||
        !gguf_matrix(g, b + "attn_q.weight", D, D, &l.wq, error) ||
        !gguf_matrix(g, b + "attn_k.weight", kv_dim, D, &l.wk, error) ||
        !gguf_matrix(g, b + "attn_v.weight", kv_dim, D, &l.wv, error) ||
        !gguf_matrix(g, b + "attn_output.weight", D, D, &l.wo, error) ||
        !gguf_vector(g, b + "ffn_norm.weight", D, &l.ffn_norm, error) ||
        !gguf_matrix(g, b + "ffn_gate.weight", H, D, &l.w1, error) ||
        !gguf_matrix(g, b + "ffn_down.weight", D, H, &l.w2, error) ||
        !gguf_matrix(g, b + "ffn_up.weight", H, D, &l.w3, error))
      return false;
  }
  if (!gguf_vector(g, "output_norm.weight", D, &out.final_norm, error)) return false;
  if (g.tensor("output.weight") && !gguf_matrix(g, "output.weight", c.vocab, D, &out.classifier, error)) return false;
  *m = std::move(out);
  return true;
}

inline bool is_gguf_path(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace memattn_llama
