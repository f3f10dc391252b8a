// Catch::Session().run, from the one object that holds Catch's implementation (tests/catch_impl.cpp):
// a test binary with its own main() (one that first skips, exit code 77, without a device or its
// data) calls this instead of compiling Catch's implementation again.
#pragma once

namespace memattn_test {

int run_catch(int argc, char* argv[]);

}  // namespace memattn_test
