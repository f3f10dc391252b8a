// Deterministic random tensors and comparison helpers shared by the CPU and GPU tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "memattn/core/dtype.hpp"

namespace memattn_test {

template <class T>
std::vector<T> random_vector(std::size_t n, std::uint32_t seed, float stddev = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<T> out(n);
  for (auto& x : out) x = memattn::from_float<T>(dist(rng));
  return out;
}

// Largest |a - b| / (atol + rtol * |b|); <= 1 means within tolerance.
template <class T>
double max_scaled_error(const T* got, const std::vector<double>& want, double atol, double rtol) {
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = memattn::to_float(got[i]);
    const double e = std::abs(g - want[i]) / (atol + rtol * std::abs(want[i]));
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

// Output rounding of each storage dtype (half an ulp at 1.0) plus fp32 accumulation slack.
template <class T>
constexpr double output_tolerance() {
  return sizeof(T) == 4 ? 2e-5 : (memattn::DTypeOf<T>::value == memattn::DType::kF16 ? 1.5e-3 : 1e-2);
}

// max(worst, e) that keeps a NaN error visible (+inf): std::max(worst, NaN) returns worst, so a
// test taking maxima of errors would pass on NaN output.
inline double worse(double worst, double e) { return e != e ? static_cast<double>(INFINITY) : (e > worst ? e : worst); }

}  // namespace memattn_test
