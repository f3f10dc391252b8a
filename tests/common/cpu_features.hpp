// What the running CPU executes, for test binaries built with -mavx2 -mfma -mf16c (the vector
// decode paths): on a CPU without them they must skip instead of dying on an illegal instruction.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace memattn_test {

// CPUID leaf 1 ECX: FMA (12), OSXSAVE (27), AVX (28), F16C (29); leaf 7 EBX: AVX2 (5).
inline bool cpu_has_avx2_fma_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const unsigned need1 = (1u << 12) | (1u << 27) | (1u << 28) | (1u << 29);
  if ((c & need1) != need1) return false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  return (b & (1u << 5)) != 0;
#else
  return false;
#endif
}

}  // namespace memattn_test
