#include "gpu/linear_cpu_bridge.hpp"

#include "memattn/cpu/linear_attention.hpp"

namespace memattn_test {

memattn::Status cpu_linear_prefill(const memattn::linear::LinearArgs<memattn::BFloat16>& args) {
  return memattn::cpu::linear_prefill(args);
}
memattn::Status cpu_linear_prefill(const memattn::linear::LinearArgs<memattn::Half>& args) {
  return memattn::cpu::linear_prefill(args);
}

}  // namespace memattn_test
