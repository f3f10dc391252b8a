// Catch2's implementation, compiled once for every test binary (CATCH_CONFIG_RUNNER: no main).
// The mains are small translation units that call run_catch: catch_main.cpp (plain),
// tests/gpu/gpu_test_main.cpp (skips without a device), and the tests/llama binaries that skip
// without their data.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "common/catch_run.hpp"

namespace memattn_test {

int run_catch(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }

}  // namespace memattn_test
