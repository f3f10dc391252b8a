// Token-merging cases for the GPU test and the emulated one (tests/emu): fp16 key / value rows in
// consecutive runs around a shared random direction, and the merged rows' tolerance (one fp16
// rounding: both sides accumulate in fp64, in different orders).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "memattn/core/dtype.hpp"

namespace memattn_test {

// Consecutive runs of `run` keys around a shared random direction, fp16.
inline std::vector<memattn::Half> clustered(std::int64_t rows, std::int64_t D, int run, float noise, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<memattn::Half> k(static_cast<std::size_t>(rows * D));
  std::vector<float> base(static_cast<std::size_t>(D));
  for (std::int64_t j = 0; j < rows; ++j) {
    if (j % run == 0)
      for (auto& b : base) b = nd(rng);
    for (std::int64_t d = 0; d < D; ++d)
      k[static_cast<std::size_t>(j * D + d)] = memattn::from_float<memattn::Half>(base[static_cast<std::size_t>(d)] + noise * nd(rng));
  }
  return k;
}

inline void check_half_rows(const std::vector<memattn::Half>& got, const std::vector<memattn::Half>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = memattn::to_float(got[i]), w = memattn::to_float(want[i]);
    INFO("element " << i);
    REQUIRE(std::abs(g - w) <= 2e-3 * std::abs(w) + 1e-4);
  }
}

}  // namespace memattn_test
