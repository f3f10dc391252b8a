// The CPU path (Eigen) behind a plain function boundary, so the GPU tests compare against it
// without compiling Eigen through nvcc. Implemented in cpu_bridge.cpp (host compiler).
#pragma once

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"

namespace memattn_test {

// memattn::cpu::dense_decode(args) (seq_lens in host memory).
memattn::Status cpu_dense_decode(const memattn::attention::DecodeArgs<memattn::Half>& args);
memattn::Status cpu_dense_decode(const memattn::attention::DecodeArgs<memattn::BFloat16>& args);

}  // namespace memattn_test
