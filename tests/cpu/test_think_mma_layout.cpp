// The fragment bookkeeping of the tensor-core composed decode (kernels/think_mma_layout.hpp,
// think_decode_mma.cuh), checked on the CPU by emulating one warp: every lane builds its
// registers the way the kernel does (the same layout functions and code-to-fp16 tricks, fp16
// hi / lo splits rounded to nearest), a reference mma.m16n8k16 combines them with the PTX ISA's
// fragment layout, and the logits of a 32-key tile (2- / 4-bit keys over d_keep kept channels) and
// its value products (2- / 4-bit values, per-token groups of 32 / 64 channels) must equal an fp64
// evaluation of the dequantised tile, each (head, key) and (head, channel) produced exactly once.
// This is what can be checked without a GPU: the device test (test_composed_cuda, path 3) runs the
// kernel itself.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/kernels/think_mma_layout.hpp"
#include "memattn/quant/qmath.hpp"

using namespace memattn;
namespace mm = memattn::kernels::think_mma;
using u32 = std::uint32_t;

namespace {

float lo_half(u32 x) { return half_to_float(Half{static_cast<std::uint16_t>(x & 0xFFFFu)}); }
float hi_half(u32 x) { return half_to_float(Half{static_cast<std::uint16_t>(x >> 16)}); }
u32 pack(float a, float b) {
  return static_cast<u32>(float_to_half(a).bits) | (static_cast<u32>(float_to_half(b).bits) << 16);
}
// the kernel's sub.f16x2 of (1024, 1024)
u32 unbias(u32 x) { return pack(lo_half(x) - 1024.f, hi_half(x) - 1024.f); }
// the kernel's split2: hi = rn(x), lo = rn(x - hi)
void split2(float x0, float x1, u32* hi, u32* lo) {
  *hi = pack(x0, x1);
  *lo = pack(x0 - lo_half(*hi), x1 - hi_half(*hi));
}
// the kernel's pow2_scale<14>: a power of two putting m in [2^14, 2^15)
void pow2_scale(float m, float* scale, float* inv) {
  int e = 0;
  std::frexp(m > 0.f ? m : 1.f, &e);  // m in [2^(e-1), 2^e)
  *scale = std::ldexp(1.f, 15 - e);
  *inv = std::ldexp(1.f, e - 15);
}

// mma.m16n8k16.row.col, f16 inputs, f32 accumulation, fragments per the PTX ISA:
// A: a[lane][r] halves (lo, hi) at rows g (r = 0, 2) / g + 8 (r = 1, 3), cols 2t + {0, 1} (+8 for r >= 2)
// B: b[lane][r] halves at rows 2t + {0, 1} (+8 for r = 1), col g;  C: rows g / g + 8, cols 2t + {0, 1}
void mma_ref(const u32 (&a)[32][4], const u32 (&b)[32][2], float (&c)[32][4]) {
  double A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
      A[row][col] = lo_half(a[lane][r]);
      A[row][col + 1] = hi_half(a[lane][r]);
    }
    for (int r = 0; r < 2; ++r) {
      B[2 * t + 8 * r][g] = lo_half(b[lane][r]);
      B[2 * t + 8 * r + 1][g] = hi_half(b[lane][r]);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
      double s = c[lane][i];
      for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
      c[lane][i] = static_cast<float>(s);
    }
  }
}

struct Tile {
  int dk, kbits, vbits, D, vg, G;
  std::vector<unsigned char> k_rows;  // 32 token-major rows of dk codes (+16 bytes slack)
  std::vector<float> ks, kz;          // per kept channel (fp16 values)
  std::vector<unsigned char> v_rows;  // 32 rows of D codes
  std::vector<float> vs, vz;          // [key][group]
  std::vector<float> q;               // [G][dk] (base-2 domain)
  std::vector<float> p;               // [G][32]
  std::vector<int> kcode, vcode;      // [32][dk], [32][D]
};

Tile make_tile(int dk, int kbits, int vbits, int D, int vg, int G, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.f, 1.f), pos(0.01f, 1.f);
  Tile t{dk, kbits, vbits, D, vg, G, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  const int ngv = D / vg;
  std::vector<u32> kw(static_cast<std::size_t>(32 * dk * kbits / 32 + 8), 0u), vw(static_cast<std::size_t>(32 * D * vbits / 32), 0u);
  t.kcode.resize(static_cast<std::size_t>(32 * dk));
  t.vcode.resize(static_cast<std::size_t>(32 * D));
  for (int i = 0; i < 32 * dk; ++i) {
    t.kcode[static_cast<std::size_t>(i)] = static_cast<int>(rng() % (1u << kbits));
    quant::pack_code(kw.data(), i, kbits, static_cast<u32>(t.kcode[static_cast<std::size_t>(i)]));
  }
  for (int i = 0; i < 32 * D; ++i) {
    t.vcode[static_cast<std::size_t>(i)] = static_cast<int>(rng() % (1u << vbits));
    quant::pack_code(vw.data(), i, vbits, static_cast<u32>(t.vcode[static_cast<std::size_t>(i)]));
  }
  t.k_rows.assign(kw.size() * 4 + 16, 0);
  std::memcpy(t.k_rows.data(), kw.data(), kw.size() * 4);
  t.v_rows.assign(vw.size() * 4, 0);
  std::memcpy(t.v_rows.data(), vw.data(), vw.size() * 4);
  auto h = [](float x) { return half_to_float(float_to_half(x)); };
  for (int c = 0; c < dk; ++c) {
    t.ks.push_back(h(pos(rng) * (c % 5 == 0 ? 8.f : 0.3f)));  // some heavy channels
    t.kz.push_back(h(uni(rng)));
  }
  for (int k = 0; k < 32 * ngv; ++k) {
    t.vs.push_back(h(pos(rng) * (k % 7 == 0 ? 20.f : 0.05f)));  // value scales over ~3 decades
    t.vz.push_back(h(uni(rng)));
  }
  for (int i = 0; i < G * dk; ++i) t.q.push_back(uni(rng) * 3.f);
  for (int i = 0; i < G * 32; ++i) t.p.push_back(i % 11 == 0 ? 1.f : std::exp2(-20.f * pos(rng)));
  return t;
}

// QK: logits[g][key] of the kernel's recipe; `seen` counts how often each (g, key) is produced.
void qk_emulate(const Tile& t, std::vector<double>* logits, std::vector<int>* seen) {
  const int chunks = (t.dk + 31) / 32, k_row = t.dk * t.kbits / 8;
  u32 afr[32][4][2][4];
  float q_inv[32], beta[32];
  for (int quad0 = 0; quad0 < 32; quad0 += 4) {
    float x[4][4][8] = {}, mx = 0.f, bsum = 0.f;
    for (int t4 = 0; t4 < 4; ++t4) {
      const int gi = quad0 / 4;
      for (int c = 0; c < chunks; ++c)
        for (int e = 0; e < 8; ++e) {
          const int slot = mm::qk_lane_slot(c, t4) + e;
          const float qv = gi < t.G && slot < t.dk ? t.q[static_cast<std::size_t>(gi * t.dk + slot)] : 0.f;
          const float s = slot < t.dk ? t.ks[static_cast<std::size_t>(slot)] : 0.f, z = slot < t.dk ? t.kz[static_cast<std::size_t>(slot)] : 0.f;
          x[t4][c][e] = qv * s;
          bsum += qv * z;
          mx = std::max(mx, std::fabs(x[t4][c][e]));
        }
    }
    float qs, qi;
    pow2_scale(mx, &qs, &qi);
    for (int t4 = 0; t4 < 4; ++t4) {
      const int lane = quad0 + t4;
      q_inv[lane] = qi;
      beta[lane] = bsum;
      for (int c = 0; c < chunks; ++c)
        for (int j = 0; j < 2; ++j) {
          split2(x[t4][c][2 * j] * qs, x[t4][c][2 * j + 4] * qs, &afr[lane][c][j][0], &afr[lane][c][j][1]);
          split2(x[t4][c][2 * j + 1] * qs, x[t4][c][2 * j + 5] * qs, &afr[lane][c][j][2], &afr[lane][c][j][3]);
        }
    }
  }
  for (int n = 0; n < 4; ++n) {
    float acc[32][4] = {};
    for (int c = 0; c < chunks; ++c)
      for (int j = 0; j < 2; ++j) {
        u32 a[32][4], b[32][2];
        for (int lane = 0; lane < 32; ++lane) {
          const int gi = mm::row_group(lane), t4 = mm::quad(lane);
          const unsigned char* row = t.k_rows.data() + mm::qk_key(n, gi) * k_row;
          u32 w = 0;
          if (t.kbits == 4) std::memcpy(&w, row + mm::qk_lane_slot(c, t4) / 2, 4);
          else std::memcpy(&w, row + mm::qk_lane_slot(c, t4) / 4, 2);
          u32 pr[4];
          if (t.kbits == 4) mm::codes8_to_pairs<4>(w, pr);
          else mm::codes8_to_pairs<2>(w, pr);
          b[lane][0] = unbias(pr[2 * j]);
          b[lane][1] = unbias(pr[2 * j + 1]);
          for (int r = 0; r < 4; ++r) a[lane][r] = afr[lane][c][j][r];
        }
        mma_ref(a, b, acc);
      }
    for (int lane = 0; lane < 32; ++lane) {
      const int gi = mm::row_group(lane), t4 = mm::quad(lane);
      if (gi >= t.G) continue;
      for (int e = 0; e < 2; ++e) {
        const int key = mm::qk_key(n, 2 * t4 + e);
        (*logits)[static_cast<std::size_t>(gi * 32 + key)] = (acc[lane][e] + acc[lane][e + 2]) * q_inv[lane] + beta[lane];
        ++(*seen)[static_cast<std::size_t>(gi * 32 + key)];
      }
    }
  }
}

// PV: out[g][ch] of the kernel's recipe for p[g][key] (all 32 keys valid).
void pv_emulate(const Tile& t, std::vector<double>* out, std::vector<int>* seen) {
  const int ngv = t.D / t.vg, units = t.D / 32, v_row = t.D * t.vbits / 8;
  float smax = 0.f;
  for (float s : t.vs) smax = std::max(smax, std::fabs(s));
  float vsc, vinv;
  pow2_scale(smax, &vsc, &vinv);
  std::vector<std::array<float, 4>> o(static_cast<std::size_t>(32 * units * 4), std::array<float, 4>{});
  std::vector<double> z(static_cast<std::size_t>(32 * units), 0.0);  // [lane][first unit of a group]
  for (int ms = 0; ms < 2; ++ms) {
    for (int u = 0; u < units; ++u) {
      const int j = u * 32 / t.vg;
      const bool first = u * 32 % t.vg == 0;
      u32 pa[32][4];
      u32 b01[32][4], b23[32][4];
      for (int lane = 0; lane < 32; ++lane) {
        const int gi = mm::row_group(lane), t4 = mm::quad(lane);
        float y[4];
        for (int k = 0; k < 4; ++k) {
          const int key = mm::pv_lane_key(ms, t4, k);
          const float pk = gi < t.G ? t.p[static_cast<std::size_t>(gi * 32 + key)] : 0.5f;
          y[k] = pk * t.vs[static_cast<std::size_t>(key * ngv + j)] * vsc;
          if (first) z[static_cast<std::size_t>(lane * units + u)] += pk * t.vz[static_cast<std::size_t>(key * ngv + j)];
        }
        split2(y[0], y[1], &pa[lane][0], &pa[lane][1]);
        split2(y[2], y[3], &pa[lane][2], &pa[lane][3]);
        u32 pc[4];
        for (int k = 0; k < 4; ++k) {
          const unsigned char* vr = t.v_rows.data() + mm::pv_lane_key(ms, t4, k) * v_row + mm::pv_lane_channel(u, gi) * t.vbits / 8;
          pc[k] = t.vbits == 4 ? static_cast<u32>(vr[0] | (vr[1] << 8)) : static_cast<u32>(vr[0]);
        }
        if (t.vbits == 4) {
          mm::pieces_to_pairs<4>(pc[0], pc[1], b01[lane]);
          mm::pieces_to_pairs<4>(pc[2], pc[3], b23[lane]);
        } else {
          mm::pieces_to_pairs<2>(pc[0], pc[1], b01[lane]);
          mm::pieces_to_pairs<2>(pc[2], pc[3], b23[lane]);
        }
      }
      for (int i = 0; i < 4; ++i) {
        u32 b[32][2];
        float acc[32][4];
        for (int lane = 0; lane < 32; ++lane) {
          b[lane][0] = unbias(b01[lane][i]);
          b[lane][1] = unbias(b23[lane][i]);
          for (int r = 0; r < 4; ++r) acc[lane][r] = o[static_cast<std::size_t>(lane * units * 4 + 4 * u + i)][static_cast<std::size_t>(r)];
        }
        mma_ref(pa, b, acc);
        for (int lane = 0; lane < 32; ++lane)
          for (int r = 0; r < 4; ++r) o[static_cast<std::size_t>(lane * units * 4 + 4 * u + i)][static_cast<std::size_t>(r)] = acc[lane][r];
      }
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int gi = mm::row_group(lane), t4 = mm::quad(lane);
    if (gi >= t.G) continue;
    for (int n = 0; n < units * 4; ++n) {
      const int u = n >> 2, first_u = (u * 32 / t.vg) * t.vg / 32;
      double zq = 0.0;  // the quad's sum (the kernel's quad_sum)
      for (int w = 0; w < 4; ++w) zq += z[static_cast<std::size_t>((4 * gi + w) * units + first_u)];
      for (int e = 0; e < 2; ++e) {
        const int ch = mm::pv_channel(n, 2 * t4 + e);
        const auto& acc = o[static_cast<std::size_t>(lane * units * 4 + n)];
        (*out)[static_cast<std::size_t>(gi * t.D + ch)] = (acc[static_cast<std::size_t>(e)] + acc[static_cast<std::size_t>(e + 2)]) * vinv + zq;
        ++(*seen)[static_cast<std::size_t>(gi * t.D + ch)];
      }
    }
  }
}

}  // namespace

TEST_CASE("think mma layout: code pairs hold the codes the channel maps name", "[think][mma]") {
  std::mt19937 rng(7);
  for (int it = 0; it < 200; ++it) {
    const u32 w = static_cast<u32>(rng());
    u32 p4[4], p2[4], v4[4], v2[4];
    mm::codes8_to_pairs<4>(w, p4);
    mm::codes8_to_pairs<2>(w & 0xFFFFu, p2);
    const u32 a = static_cast<u32>(rng()) & 0xFFFFu, b = static_cast<u32>(rng()) & 0xFFFFu;
    mm::pieces_to_pairs<4>(a, b, v4);
    mm::pieces_to_pairs<2>(a & 0xFFu, b & 0xFFu, v2);
    for (int i = 0; i < 4; ++i) {
      CHECK(lo_half(p4[i]) == 1024.f + static_cast<float>((w >> (4 * i)) & 15u));
      CHECK(hi_half(p4[i]) == 1024.f + static_cast<float>((w >> (4 * (i + 4))) & 15u));
      CHECK(lo_half(p2[i]) == 1024.f + static_cast<float>((w >> (2 * i)) & 3u));
      CHECK(hi_half(p2[i]) == 1024.f + static_cast<float>((w >> (2 * (i + 4))) & 3u));
      CHECK(lo_half(v4[i]) == 1024.f + static_cast<float>((a >> (4 * i)) & 15u));
      CHECK(hi_half(v4[i]) == 1024.f + static_cast<float>((b >> (4 * i)) & 15u));
      CHECK(lo_half(v2[i]) == 1024.f + static_cast<float>((a >> (2 * i)) & 3u));
      CHECK(hi_half(v2[i]) == 1024.f + static_cast<float>((b >> (2 * i)) & 3u));
    }
  }
  // the permutations are bijections: QK keys and PV keys over a tile, channels over a chunk / unit
  for (int m = 0; m < 2; ++m) {
    int hit[32] = {};
    for (int k = 0; k < 16; ++k) ++hit[mm::pv_key(m, k)];
    for (int n = 2 * m; n < 2 * m + 2; ++n)
      for (int col = 0; col < 8; ++col) CHECK(mm::qk_key(n, col) / 16 == m);
    for (int k = 16 * m; k < 16 * m + 16; ++k) CHECK(hit[k] == 1);
  }
  int ch[64] = {}, vch[64] = {};
  for (int j = 0; j < 4; ++j)
    for (int k = 0; k < 16; ++k) ++ch[mm::qk_channel(j, k)];
  for (int n = 0; n < 8; ++n)
    for (int col = 0; col < 8; ++col) ++vch[mm::pv_channel(n, col)];
  for (int c = 0; c < 64; ++c) {
    CHECK(ch[c] == 1);
    CHECK(vch[c] == 1);
  }
  // what a lane reads is what the maps name: its chunk slots in codes8_to_pairs order (pair i =
  // slots e = i, i + 4; k-step 2c takes pairs 0, 1, k-step 2c + 1 pairs 2, 3), its PV keys, its
  // value piece's channels
  for (int c = 0; c < 2; ++c)
    for (int t4 = 0; t4 < 4; ++t4)
      for (int j = 0; j < 2; ++j) {
        const int step = 2 * c + j, base = mm::qk_lane_slot(c, t4);
        CHECK(mm::qk_channel(step, 2 * t4) == base + 2 * j);
        CHECK(mm::qk_channel(step, 2 * t4 + 1) == base + 2 * j + 4);
        CHECK(mm::qk_channel(step, 2 * t4 + 8) == base + 2 * j + 1);
        CHECK(mm::qk_channel(step, 2 * t4 + 9) == base + 2 * j + 5);
      }
  for (int m = 0; m < 2; ++m)
    for (int t4 = 0; t4 < 4; ++t4)
      for (int e = 0; e < 2; ++e) {
        CHECK(mm::pv_key(m, 2 * t4 + e) == mm::pv_lane_key(m, t4, e));
        CHECK(mm::pv_key(m, 2 * t4 + 8 + e) == mm::pv_lane_key(m, t4, 2 + e));
      }
  for (int u = 0; u < 2; ++u)
    for (int col = 0; col < 8; ++col)
      for (int i = 0; i < 4; ++i) CHECK(mm::pv_channel(4 * u + i, col) == mm::pv_lane_channel(u, col) + i);
  // C columns of n-tiles 2m, 2m + 1 are the A columns of PV k-step m: same keys
  for (int t4 = 0; t4 < 4; ++t4)
    for (int m = 0; m < 2; ++m)
      for (int e = 0; e < 2; ++e) {
        CHECK(mm::qk_key(2 * m, 2 * t4 + e) == mm::pv_key(m, 2 * t4 + e));
        CHECK(mm::qk_key(2 * m + 1, 2 * t4 + e) == mm::pv_key(m, 2 * t4 + 8 + e));
      }
}

TEST_CASE("think mma layout: an emulated warp computes the tile's logits and value sums", "[think][mma]") {
  struct Shape {
    int dk, kbits, vbits, D, vg, G;
  };
  const Shape shapes[] = {{80, 4, 2, 128, 32, 4}, {128, 2, 4, 128, 64, 8}, {72, 2, 2, 128, 128, 3},
                          {8, 4, 4, 64, 32, 1},   {64, 4, 2, 64, 64, 7},   {40, 2, 4, 64, 32, 2}};
  unsigned seed = 11;
  for (const Shape& sh : shapes) {
    INFO("dk " << sh.dk << " bits " << sh.kbits << "/" << sh.vbits << " D " << sh.D << " vg " << sh.vg << " G " << sh.G);
    const Tile t = make_tile(sh.dk, sh.kbits, sh.vbits, sh.D, sh.vg, sh.G, seed++);
    std::vector<double> lg(static_cast<std::size_t>(sh.G * 32), NAN);
    std::vector<int> seen(lg.size(), 0);
    qk_emulate(t, &lg, &seen);
    double worst = 0.0;
    for (int g = 0; g < sh.G; ++g)
      for (int key = 0; key < 32; ++key) {
        double ref = 0.0, mag = 0.0;
        for (int c = 0; c < sh.dk; ++c) {
          const double q = t.q[static_cast<std::size_t>(g * sh.dk + c)];
          const double k = static_cast<double>(t.ks[static_cast<std::size_t>(c)]) * t.kcode[static_cast<std::size_t>(key * sh.dk + c)] +
                           t.kz[static_cast<std::size_t>(c)];
          ref += q * k;
          mag += std::fabs(q * t.ks[static_cast<std::size_t>(c)] * t.kcode[static_cast<std::size_t>(key * sh.dk + c)]) +
                 std::fabs(q * t.kz[static_cast<std::size_t>(c)]);
        }
        CHECK(seen[static_cast<std::size_t>(g * 32 + key)] == 1);
        worst = std::max(worst, std::fabs(lg[static_cast<std::size_t>(g * 32 + key)] - ref) / (mag + 1e-30));
      }
    CHECK(worst <= 2e-6);

    std::vector<double> out(static_cast<std::size_t>(sh.G * sh.D), NAN);
    std::vector<int> seen_o(out.size(), 0);
    pv_emulate(t, &out, &seen_o);
    const int ngv = sh.D / sh.vg;
    double worst_o = 0.0;
    for (int g = 0; g < sh.G; ++g)
      for (int c = 0; c < sh.D; ++c) {
        double ref = 0.0, mag = 0.0;
        for (int key = 0; key < 32; ++key) {
          const double p = t.p[static_cast<std::size_t>(g * 32 + key)];
          const double s = t.vs[static_cast<std::size_t>(key * ngv + c / sh.vg)], z = t.vz[static_cast<std::size_t>(key * ngv + c / sh.vg)];
          ref += p * (s * t.vcode[static_cast<std::size_t>(key * sh.D + c)] + z);
          mag += p * (std::fabs(s) * t.vcode[static_cast<std::size_t>(key * sh.D + c)] + std::fabs(z));
        }
        CHECK(seen_o[static_cast<std::size_t>(g * sh.D + c)] == 1);
        worst_o = std::max(worst_o, std::fabs(out[static_cast<std::size_t>(g * sh.D + c)] - ref) / (mag + 1e-30));
      }
    CHECK(worst_o <= 2e-6);
  }
}
