#include "gpu/cpu_bridge.hpp"

#include "memattn/cpu/dense_attention.hpp"

namespace memattn_test {

memattn::Status cpu_dense_decode(const memattn::attention::DecodeArgs<memattn::Half>& args) {
  return memattn::cpu::dense_decode(args);
}

memattn::Status cpu_dense_decode(const memattn::attention::DecodeArgs<memattn::BFloat16>& args) {
  return memattn::cpu::dense_decode(args);
}

}  // namespace memattn_test
