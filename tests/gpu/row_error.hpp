// NaN-safe error maxima for the GPU tests. max_row_rel_error: max over rows of the max-norm relative error of `got` against `want` ([rows][D]): per row
// max |got - want| / max(|want|, 1e-6). A NaN anywhere in `got` gives +inf (std::max would drop
// it, and the GPU tests pre-fill outputs with NaN to catch rows a kernel never writes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "common/test_data.hpp"

namespace memattn_gpu_test {

using memattn_test::worse;  // max(worst, e) that keeps a NaN error visible (+inf)

inline double max_row_rel_error(const std::vector<float>& want, const std::vector<float>& got, int rows, int D) {
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    double scale = 1e-6, e = 0;
    for (int x = 0; x < D; ++x) {
      const std::size_t i = static_cast<std::size_t>(r) * D + x;
      scale = std::max(scale, std::abs(static_cast<double>(want[i])));
      const double d = std::abs(static_cast<double>(got[i]) - want[i]);
      e = worse(e, d);
    }
    worst = worse(worst, e / scale);
  }
  return worst;
}

}  // namespace memattn_gpu_test
