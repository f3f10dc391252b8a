// The plain main() of the CPU and emulator tests (Catch itself is in catch_impl.cpp).
#include "common/catch_run.hpp"

int main(int argc, char* argv[]) { return memattn_test::run_catch(argc, argv); }
