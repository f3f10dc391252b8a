// KIVI's observation on real activations (specs/quantization.md §10.7 Q-R1): at 2 bits, keys
// quantised per channel (groups of G = 32 tokens) and values per token (groups of min(32, D)
// channels) reconstruct better than the transposed choices, in aggregate and in every layer.
// Input: dumps written by `memattn-llama dump-kv` (post-RoPE K, V), named by the environment:
//   MEMATTN_KIVI_DUMPS="stories.kvdump+v:smollm2.kvdump"
// The K claim (per-channel K beats per-token K: aggregate ratio >= 1.3, > 1 in every layer) is
// asserted on every dump. The V claim (aggregate >= 1.2, > 1 in every layer) only on dumps marked
// "+v": it holds on stories260K (1.45-1.60 per layer) but NOT on SmolLM2-135M, where per-channel
// V reconstructs better in 27 of 30 layers (aggregate 0.90; the spec's Q-R1 claims otherwise).
// Without the variable (or with a missing file) the test exits 77 (skipped), unless
// MEMATTN_REQUIRE_REALDATA=1.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "memattn/quant/kivi.hpp"

using namespace memattn;

namespace {

struct Dump {
  std::uint32_t layers = 0, tokens = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  std::vector<std::vector<float>> k, v;  // per layer [T][Hkv][D]
};

bool load(const std::string& path, Dump* d) {
  std::ifstream f(path, std::ios::binary);
  char magic[8];
  std::uint32_t hdr[6];
  if (!f.read(magic, 8) || std::memcmp(magic, "MAKVDUMP", 8) != 0 || !f.read(reinterpret_cast<char*>(hdr), sizeof hdr) || hdr[0] != 1)
    return false;
  d->layers = hdr[1];
  d->tokens = hdr[2];
  d->q_heads = hdr[3];
  d->kv_heads = hdr[4];
  d->head_dim = hdr[5];
  f.seekg(static_cast<std::streamoff>(d->tokens) * 4, std::ios::cur);
  const std::size_t nq = static_cast<std::size_t>(d->tokens) * d->q_heads * d->head_dim;
  const std::size_t nk = static_cast<std::size_t>(d->tokens) * d->kv_heads * d->head_dim;
  std::vector<float> q(nq);
  for (std::uint32_t l = 0; l < d->layers; ++l) {
    d->k.emplace_back(nk);
    d->v.emplace_back(nk);
    if (!f.read(reinterpret_cast<char*>(q.data()), static_cast<std::streamsize>(nq * 4)) ||
        !f.read(reinterpret_cast<char*>(d->k.back().data()), static_cast<std::streamsize>(nk * 4)) ||
        !f.read(reinterpret_cast<char*>(d->v.back().data()), static_cast<std::streamsize>(nk * 4)))
      return false;
  }
  return true;
}

// Squared reconstruction error of x [T][H][D] (fp16-rounded first) at `bits`, grouped per channel
// over 32 tokens (per_channel) or per token over gv channels; also the squared norm.
void error(const std::vector<float>& x, int T, int H, int D, int bits, bool per_channel, int gv, double* err2, double* norm2) {
  const int L = (1 << bits) - 1, G = 32, Tq = T / G * G;
  std::vector<Half> hx(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) hx[i] = float_to_half(x[i]);
  *err2 = *norm2 = 0;
  auto acc = [&](const Half* base, int n, int stride) {
    quant::GroupMeta m;
    quant::group_params(base, n, stride, L, &m);
    for (int i = 0; i < n; ++i) {
      const Half e = base[static_cast<std::size_t>(i) * stride];
      const double xv = quant::half_to_double(e);
      const double d = xv - quant::decode(quant::encode(e, m, L), m);
      *err2 += d * d;
      *norm2 += xv * xv;
    }
  };
  for (int h = 0; h < H; ++h) {
    if (per_channel) {
      for (int t0 = 0; t0 < Tq; t0 += G)
        for (int c = 0; c < D; ++c) acc(&hx[(static_cast<std::size_t>(t0) * H + h) * D + c], G, H * D);
    } else {
      for (int t = 0; t < Tq; ++t)
        for (int j = 0; j < D / gv; ++j) acc(&hx[(static_cast<std::size_t>(t) * H + h) * D + j * gv], gv, 1);
    }
  }
}

}  // namespace

int main() {
  const char* env = std::getenv("MEMATTN_KIVI_DUMPS");
  const bool required = std::getenv("MEMATTN_REQUIRE_REALDATA") && std::string(std::getenv("MEMATTN_REQUIRE_REALDATA")) == "1";
  if (env == nullptr || *env == '\0') {
    std::printf("MEMATTN_KIVI_DUMPS not set: skipping\n");
    return required ? 1 : 77;
  }
  int failures = 0, files = 0;
  std::string list = env;
  for (std::size_t pos = 0; pos <= list.size();) {
    const std::size_t end = std::min(list.find(':', pos), list.size());
    std::string path = list.substr(pos, end - pos);
    pos = end + 1;
    const bool check_v = path.size() > 2 && path.compare(path.size() - 2, 2, "+v") == 0;
    if (check_v) path.resize(path.size() - 2);
    if (path.empty()) continue;
    Dump d;
    if (!load(path, &d)) {
      std::printf("%s: missing or unreadable\n", path.c_str());
      if (required) ++failures;
      continue;
    }
    ++files;
    const int T = static_cast<int>(d.tokens), H = static_cast<int>(d.kv_heads), D = static_cast<int>(d.head_dim);
    const int gv = std::min(32, D);
    double ke_ch = 0, ke_tok = 0, ve_tok = 0, ve_ch = 0, kn = 0, vn = 0;
    std::printf("%s: %u layers, %d tokens, %d KV heads, head_dim %d (2 bits, G = 32, G_V = %d)\n", path.c_str(), d.layers, T, H, D, gv);
    std::printf("  layer | K per-channel | K per-token | ratio | V per-token | V per-channel | ratio\n");
    for (std::uint32_t l = 0; l < d.layers; ++l) {
      double a, b, c, e, n1, n2;
      error(d.k[l], T, H, D, 2, true, gv, &a, &n1);
      error(d.k[l], T, H, D, 2, false, gv, &b, &n1);
      error(d.v[l], T, H, D, 2, false, gv, &c, &n2);
      error(d.v[l], T, H, D, 2, true, gv, &e, &n2);
      const double rk = std::sqrt(b / a), rv = std::sqrt(e / c);
      std::printf("  %5u | %13.4f | %11.4f | %5.2f | %11.4f | %13.4f | %5.2f\n", l, std::sqrt(a / n1), std::sqrt(b / n1), rk,
                  std::sqrt(c / n2), std::sqrt(e / n2), rv);
      if (!(rk > 1.0) || (check_v && !(rv > 1.0))) {
        std::printf("  FAIL: layer %u does not show KIVI's observation\n", l);
        ++failures;
      }
      ke_ch += a;
      ke_tok += b;
      ve_tok += c;
      ve_ch += e;
      kn += n1;
      vn += n2;
    }
    const double rk = std::sqrt(ke_tok / ke_ch), rv = std::sqrt(ve_ch / ve_tok);
    std::printf("  all   | %13.4f | %11.4f | %5.2f | %11.4f | %13.4f | %5.2f\n", std::sqrt(ke_ch / kn), std::sqrt(ke_tok / kn), rk,
                std::sqrt(ve_tok / vn), std::sqrt(ve_ch / vn), rv);
    if (!(rk >= 1.3)) {
      std::printf("  FAIL: aggregate K ratio %.2f < 1.3\n", rk);
      ++failures;
    }
    if (check_v && !(rv >= 1.2)) {
      std::printf("  FAIL: aggregate V ratio %.2f < 1.2\n", rv);
      ++failures;
    }
  }
  if (files == 0 && !required) return 77;
  std::printf(failures ? "FAILED (%d)\n" : "passed\n", failures);
  return failures ? 1 : 0;
}
