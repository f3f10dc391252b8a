// What the emulated tests share to run the wrappers' host halves on the emulator (the eviction
// tests, emulated_decode.hpp, the linear decode): the launcher their launch sequences call, and a
// kWorkspaceAlign-aligned host workspace (as cudaMalloc's) filled with 0xFF, so a partial, LSE or
// float read before it is written is a NaN. Include after emu/simt.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"

namespace memattn_emu_test {

// The launcher of the wrappers' launch sequences, on the emulator.
inline const auto emu_launch = [](auto kernel, dim3 grid, dim3 block, int smem, const auto&... args) {
  memattn_emu::launch(grid, block, static_cast<std::size_t>(smem), [&] { decltype(kernel)::kernel(args...); });
  return memattn::Status::kSuccess;
};

// A workspace of `bytes` at a kWorkspaceAlign-aligned base, 0xFF.
struct HostWs {
  std::vector<unsigned char> buf;
  std::size_t bytes;
  explicit HostWs(std::size_t n) : buf(n + memattn::kWorkspaceAlign, 0xFF), bytes(n) {}
  void* data() {
    const std::size_t a = memattn::kWorkspaceAlign;
    return buf.data() + (a - reinterpret_cast<std::uintptr_t>(buf.data()) % a) % a;
  }
};

}  // namespace memattn_emu_test
