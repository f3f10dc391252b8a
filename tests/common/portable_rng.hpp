// Portable random numbers for golden-number tests (specs/quantization.md §10, "RNG"): SplitMix64
// for the bits, Box-Muller in fp64 for normals. Unlike std::normal_distribution (whose algorithm
// differs between libstdc++ and libc++), the sequence is fixed by this file alone; only the libm
// log/cos/sin/sqrt/exp results may differ by an ulp between platforms, far below what a golden
// tolerance of 1e-9 resolves once the values are rounded to fp16.
#pragma once

#include <cmath>
#include <cstdint>

namespace memattn_test {

class PortableRng {
 public:
  explicit PortableRng(std::uint64_t seed) : state_(seed) {}

  // SplitMix64 (Steele, Lea, Flood 2014; the constants of Vigna's reference implementation).
  std::uint64_t next_u64() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, 1) on the 2^-53 lattice.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, n), n > 0 (floor(uniform * n): bias below 2^-53 * n).
  int below(int n) { return static_cast<int>(uniform() * n); }

  // Standard normal; Box-Muller yields pairs, the second is returned by the next call.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = static_cast<double>((next_u64() >> 11) + 1) * 0x1.0p-53;  // (0, 1]: log finite
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }

 private:
  std::uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace memattn_test
