// The fragment bookkeeping of the tensor-core composed decode (kernels/think_mma_layout.hpp):
// the code-to-fp16 tricks give the exact codes at every position (fp16 subnormals times the power
// of two the kernel puts in the other factor, in fp64, exact here), and the key / channel maps are the
// bijections the kernel's reductions rely on. The kernel itself runs on the CPU emulator
// (tests/emu/test_think_mma_emu.cpp) and on the GPU (test_composed_cuda, path 3).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>

#include "memattn/core/dtype.hpp"
#include "memattn/kernels/think_mma_layout.hpp"

using namespace memattn;
namespace mm = memattn::kernels::think_mma;
using u32 = std::uint32_t;

namespace {

double lo_half(u32 x) { return half_to_float(Half{static_cast<std::uint16_t>(x & 0xFFFFu)}); }
double hi_half(u32 x) { return half_to_float(Half{static_cast<std::uint16_t>(x >> 16)}); }
// the kernel's codes: fp16 subnormal pairs 2^(k - 24) c (exponent fields 0); times 2^(24 - k)
// (what q' or the values' scale carries) they are the codes, exactly
template <int kBits>
void exact(u32 pair, int i, double* lo, double* hi) {
  CHECK((pair & 0x7C007C00u) == 0u);
  const double unit = std::ldexp(1.0, 24 - mm::code_shift<kBits>(i));
  *lo = lo_half(pair) * unit;
  *hi = hi_half(pair) * unit;
}

}  // namespace

TEST_CASE("think mma layout: code pairs give the exact codes the channel maps name", "[think][mma]") {
  std::mt19937 rng(7);
  for (int it = 0; it < 300; ++it) {
    const u32 w = static_cast<u32>(rng()), a = static_cast<u32>(rng()), b = static_cast<u32>(rng());
    // keys: 8 codes per lane and chunk, pair i = (code i, code i + 4)
    u32 p4[4], p2[4];
    mm::codes8_to_pairs<4>(w, p4);
    mm::codes8_to_pairs<2>(w & 0xFFFFu, p2);
    for (int i = 0; i < 4; ++i) {
      double lo, hi;
      exact<4>(p4[i], i, &lo, &hi);
      CHECK(lo == static_cast<double>((w >> (4 * i)) & 15u));
      CHECK(hi == static_cast<double>((w >> (4 * (i + 4))) & 15u));
      exact<2>(p2[i], i, &lo, &hi);
      CHECK(lo == static_cast<double>((w >> (2 * i)) & 3u));
      CHECK(hi == static_cast<double>((w >> (2 * (i + 4))) & 3u));
    }
    // values: half `upper` of keys a and b, position i = channel 16 upper / bits + i of the lane
    for (int upper = 0; upper < 2; ++upper) {
      const u32 x = mm::halves(a, b, upper != 0);
      const u32 ca = upper ? a >> 16 : a & 0xFFFFu, cb = upper ? b >> 16 : b & 0xFFFFu;
      for (int i = 0; i < 8; ++i) {
        double lo, hi;
        exact<2>(mm::code_pair<2>(x, i), i, &lo, &hi);
        CHECK(lo == static_cast<double>((ca >> (2 * i)) & 3u));
        CHECK(hi == static_cast<double>((cb >> (2 * i)) & 3u));
        if (i >= 4) continue;
        exact<4>(mm::code_pair<4>(x, i), i, &lo, &hi);
        CHECK(lo == static_cast<double>((ca >> (4 * i)) & 15u));
        CHECK(hi == static_cast<double>((cb >> (4 * i)) & 15u));
      }
    }
  }
}

TEST_CASE("think mma layout: pow2_pair is the fp16 pair of 2^e", "[think][mma]") {
  for (int e = -14; e <= 15; ++e) {
    CHECK(lo_half(mm::pow2_pair(e)) == std::ldexp(1.0, e));
    CHECK(hi_half(mm::pow2_pair(e)) == std::ldexp(1.0, e));
  }
}

TEST_CASE("think mma layout: the key and channel maps are the bijections the products need", "[think][mma]") {
  // QK keys and PV keys cover a tile once each (both key pair strides)
  for (int ps : {4, 8})
    for (int m = 0; m < 2; ++m) {
      int hit[32] = {};
      for (int k = 0; k < 16; ++k) ++hit[mm::pv_key(m, k, ps)];
      for (int n = 2 * m; n < 2 * m + 2; ++n)
        for (int col = 0; col < 8; ++col) CHECK(mm::qk_key(n, col, ps) / 16 == m);
      for (int k = 16 * m; k < 16 * m + 16; ++k) CHECK(hit[k] == 1);
    }
  // QK slots over two chunks, PV channels over head_dim 64 and 128 (D / 8 n-tiles x 8 columns)
  int ch[64] = {};
  for (int j = 0; j < 4; ++j)
    for (int k = 0; k < 16; ++k) ++ch[mm::qk_channel(j, k)];
  for (int c = 0; c < 64; ++c) CHECK(ch[c] == 1);
  for (int D : {64, 128}) {
    int vch[128] = {};
    for (int n = 0; n < D / 8; ++n)
      for (int col = 0; col < 8; ++col) ++vch[mm::pv_channel(n, col, D / 8)];
    for (int c = 0; c < D; ++c) CHECK(vch[c] == 1);
    // a lane's channels (one per n-tile) are consecutive and inside one 32-channel value group
    for (int col = 0; col < 8; ++col)
      for (int n = 0; n < D / 8; ++n) {
        CHECK(mm::pv_channel(n, col, D / 8) == mm::pv_channel(0, col, D / 8) + n);
        CHECK(mm::pv_channel(n, col, D / 8) / 32 == mm::pv_channel(0, col, D / 8) / 32);
      }
  }
  // what a lane reads is what the maps name: its chunk slots in codes8_to_pairs order (pair i =
  // slots i, i + 4; k-step 2c takes pairs 0, 1, k-step 2c + 1 pairs 2, 3), its PV keys
  for (int c = 0; c < 2; ++c)
    for (int t4 = 0; t4 < 4; ++t4)
      for (int j = 0; j < 2; ++j) {
        const int step = 2 * c + j, base = mm::qk_lane_slot(c, t4);
        CHECK(mm::qk_channel(step, 2 * t4) == base + 2 * j);
        CHECK(mm::qk_channel(step, 2 * t4 + 1) == base + 2 * j + 4);
        CHECK(mm::qk_channel(step, 2 * t4 + 8) == base + 2 * j + 1);
        CHECK(mm::qk_channel(step, 2 * t4 + 9) == base + 2 * j + 5);
      }
  for (int ps : {4, 8})
    for (int m = 0; m < 2; ++m)
      for (int t4 = 0; t4 < 4; ++t4)
        for (int e = 0; e < 2; ++e) {
          CHECK(mm::pv_key(m, 2 * t4 + e, ps) == mm::pv_lane_key(m, t4, e, ps));
          CHECK(mm::pv_key(m, 2 * t4 + 8 + e, ps) == mm::pv_lane_key(m, t4, 2 + e, ps));
        }
  // the B registers' key pairs: (t, t + 4), (t + 8, t + 12) as the token-major codes are read
  // (two keys' code words), (t, t + 8), (t + 4, t + 12) as one word of channel-major 2-bit codes
  // pairs them (keys i, i + 8 in its halves)
  for (int t4 = 0; t4 < 4; ++t4) {
    CHECK(mm::pv_lane_key(0, t4, 1) - mm::pv_lane_key(0, t4, 0) == 4);
    CHECK(mm::pv_lane_key(0, t4, 2) == t4 + 8);
    CHECK(mm::pv_lane_key(0, t4, 1, 8) - mm::pv_lane_key(0, t4, 0, 8) == 8);
    CHECK(mm::pv_lane_key(0, t4, 2, 8) == t4 + 4);
    CHECK(mm::pv_lane_key(0, t4, 3, 8) == t4 + 12);
  }
  // C columns of n-tiles 2m, 2m + 1 are the A columns of PV k-step m: same keys
  for (int ps : {4, 8})
    for (int t4 = 0; t4 < 4; ++t4)
      for (int m = 0; m < 2; ++m)
        for (int e = 0; e < 2; ++e) {
          CHECK(mm::qk_key(2 * m, 2 * t4 + e, ps) == mm::pv_key(m, 2 * t4 + e, ps));
          CHECK(mm::qk_key(2 * m + 1, 2 * t4 + e, ps) == mm::pv_key(m, 2 * t4 + 8 + e, ps));
        }
}
