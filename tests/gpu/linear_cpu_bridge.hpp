// The CPU linear-attention path behind a plain function boundary (Eigen stays out of nvcc).
#pragma once

#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/linear/linear_args.hpp"

namespace memattn_test {

memattn::Status cpu_linear_prefill(const memattn::linear::LinearArgs<memattn::BFloat16>& args);
memattn::Status cpu_linear_prefill(const memattn::linear::LinearArgs<memattn::Half>& args);

}  // namespace memattn_test
