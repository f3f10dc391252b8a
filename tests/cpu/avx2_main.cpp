// main() of the test binaries built with -mavx2 -mfma -mf16c: exits 77 (ctest: skipped) on a CPU
// without them, before any vector code runs.
#include <cstdio>

#include "common/catch_run.hpp"
#include "common/cpu_features.hpp"

int main(int argc, char* argv[]) {
  if (!memattn_test::cpu_has_avx2_fma_f16c()) {
    std::printf("skipped: this CPU lacks AVX2 / FMA / F16C (the test checks the vector decode paths)\n");
    return 77;
  }
  return memattn_test::run_catch(argc, argv);
}
