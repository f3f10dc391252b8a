// sm_90 bulk copies (cp.async.bulk, global -> shared, the TMA unit's one-instruction copy of a
// contiguous range) completing on an mbarrier with a transaction count: a stage of a pipeline is
// issued by one lane (expect_tx of its bytes, then its copies) and awaited by parity, instead of
// every lane issuing 16-byte cp.async pieces with their own address arithmetic. Sizes and both
// addresses must be multiples of 16 bytes. Under tests/emu/simt.hpp the CPU emulator models the
// barrier's phases and the copies landing at the wait (simt.hpp: mbarrier_*, bulk_copy).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace bulk {

// Whether this compilation has the instructions: device code for sm_90+; under the emulator as
// its tests choose (memattn_emu::bulk_copies, on by default), so that both pipelines run there.
#if defined(MEMATTN_SIMT_EMULATION)
MEMATTN_DEVICE bool available() { return memattn_emu::bulk_copies(); }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
MEMATTN_DEVICE constexpr bool available() { return true; }
#else
MEMATTN_DEVICE constexpr bool available() { return false; }
#endif

#if defined(MEMATTN_SIMT_EMULATION)
MEMATTN_DEVICE void init(std::uint64_t* bar, int count) { memattn_emu::mbarrier_init(bar, count); }
MEMATTN_DEVICE void fence_init() {}
MEMATTN_DEVICE void fence_proxy() {}
MEMATTN_DEVICE void arrive_expect_tx(std::uint64_t* bar, int bytes) { memattn_emu::mbarrier_arrive_expect_tx(bar, bytes); }
MEMATTN_DEVICE void copy(void* smem, const void* gmem, int bytes, std::uint64_t* bar) { memattn_emu::bulk_copy(smem, gmem, bytes, bar); }
MEMATTN_DEVICE void wait(std::uint64_t* bar, unsigned parity) { memattn_emu::mbarrier_wait(bar, parity); }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
MEMATTN_DEVICE unsigned smem_addr(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
// count arrivals complete a phase (with the expected bytes landed)
MEMATTN_DEVICE void init(std::uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// makes initialised barriers visible to the async proxy (the copies' completions)
MEMATTN_DEVICE void fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// orders this thread's earlier generic-proxy shared accesses before its later bulk copies (a stage
// the threads wrote, e.g. masked metadata, that a copy overwrites next)
MEMATTN_DEVICE void fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// one arrival that also expects `bytes` more bytes in the current phase
MEMATTN_DEVICE void arrive_expect_tx(std::uint64_t* bar, int bytes) {
  asm volatile(
      "{\n .reg .b64 state;\n mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(smem_addr(bar)), "r"(bytes)
      : "memory");
}
MEMATTN_DEVICE void copy(void* smem, const void* gmem, int bytes, std::uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(smem_addr(smem)),
               "l"(gmem), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// until the phase of parity `parity` has completed
MEMATTN_DEVICE void wait(std::uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred done;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n @!done bra WAIT;\n}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
#else
// Not on this architecture: callers test available() first; reaching one of these is a bug, and
// the kernel stops with an error rather than running on without its data.
MEMATTN_DEVICE void unavailable() { __trap(); }
MEMATTN_DEVICE void init(std::uint64_t*, int) { unavailable(); }
MEMATTN_DEVICE void fence_init() { unavailable(); }
MEMATTN_DEVICE void fence_proxy() { unavailable(); }
MEMATTN_DEVICE void arrive_expect_tx(std::uint64_t*, int) { unavailable(); }
MEMATTN_DEVICE void copy(void*, const void*, int, std::uint64_t*) { unavailable(); }
MEMATTN_DEVICE void wait(std::uint64_t*, unsigned) { unavailable(); }
#endif

MEMATTN_HOST_DEVICE bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

}  // namespace bulk
}  // namespace kernels
MEMATTN_NAMESPACE_END
