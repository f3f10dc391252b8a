// Faults of the host backend provoked for real, each in a forked child (the limits must not leak
// into the test process):
//  * commit when memory runs out: RLIMIT_DATA caps the process's private writable memory, which
//    is exactly what a commit (mprotect to read-write) charges. The commit fails with
//    kErrorOutOfMemory, the buffer is as before (nothing committed is lost, the data is intact),
//    and it stays usable: a smaller commit succeeds, and the same commit succeeds once memory is
//    freed. A multi-run commit whose later run fails is rolled back.
//  * VirtualKvCache::ensure_tokens under the same limit: all-or-nothing across layers.
//  * reserve larger than the address space: RLIMIT_AS caps it; reserve fails with
//    kErrorOutOfMemory and a smaller reservation still works.
// The child reports the first failed check as its exit code (0 = all passed).
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "common/memory_test_util.hpp"
#include "memattn/memory/host_vm_backend.hpp"
#include "memattn/memory/virtual_buffer.hpp"
#include "memattn/memory/virtual_kv_cache.hpp"

using memattn::Status;
using memattn::memory::HostVmBackend;
using memattn::memory::VirtualBuffer;
using memattn::memory::VirtualKvCache;
using memattn::memory::VirtualKvCacheConfig;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

// Runs fn() in a forked child; returns its exit code, or 1000 + signal when it was killed.
template <class Fn>
int in_child(Fn fn) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) _exit(fn());
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -2;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 1000 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// Lowers the soft limit only (the hard one stays, so the limit can be raised again).
bool set_limit(int resource, std::size_t bytes) {
  struct rlimit rl;
  if (getrlimit(resource, &rl) != 0) return false;
  rl.rlim_cur = static_cast<rlim_t>(bytes);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) return false;
  return setrlimit(resource, &rl) == 0;
}

unsigned char pattern(std::size_t i) { return static_cast<unsigned char>((i * 2654435761u) >> 24); }

bool check_pattern(const unsigned char* p, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; i += 4093)
    if (p[i] != pattern(i)) return false;
  return true;
}

void write_pattern(unsigned char* p, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; i += 4093) p[i] = pattern(i);
}

int commit_beyond_data_limit() {
  VirtualBuffer<HostVmBackend> buf;
  if (buf.reserve(std::size_t{1} << 30) != Status::kSuccess) return 10;
  const std::size_t G = buf.granularity();
  unsigned char* const base = buf.bytes();
  if (buf.commit(0, 16 * kMiB) != Status::kSuccess) return 11;
  write_pattern(base, 0, 16 * kMiB);

  const std::size_t vm_data = memattn_test::proc_status_bytes("VmData");
  if (vm_data == 0) return 12;
  if (!set_limit(RLIMIT_DATA, vm_data + 32 * kMiB)) return 13;

  // 256 MiB more does not fit under the limit.
  if (buf.commit(16 * kMiB, 256 * kMiB) != Status::kErrorOutOfMemory) return 20;
  if (buf.committed_bytes() != 16 * kMiB) return 21;
  if (!check_pattern(base, 0, 16 * kMiB)) return 22;
  if (buf.is_committed(16 * kMiB, G)) return 23;
  if (buf.data() != base) return 24;

  // Still usable: a commit that fits succeeds and is writable.
  if (buf.commit(16 * kMiB, 8 * kMiB) != Status::kSuccess) return 30;
  write_pattern(base, 16 * kMiB, 24 * kMiB);
  if (!check_pattern(base, 0, 16 * kMiB) || !check_pattern(base, 16 * kMiB, 24 * kMiB)) return 31;

  // Freeing memory makes room: decommit 16 MiB, then a 40 MiB commit fits.
  if (buf.decommit(0, 16 * kMiB) != Status::kSuccess) return 40;
  if (buf.commit(64 * kMiB, 40 * kMiB) != Status::kSuccess) return 41;
  if (!check_pattern(base, 16 * kMiB, 24 * kMiB)) return 42;

  // A commit made of several runs whose last run fails is rolled back: committed now are
  // [16, 24) MiB and [64, 104) MiB; commit [0, 512) MiB -> runs [0, 16), [24, 64), [104, 512).
  const std::size_t before = buf.committed_bytes();
  if (buf.commit(0, 512 * kMiB) != Status::kErrorOutOfMemory) return 50;
  if (buf.committed_bytes() != before) return 51;
  if (buf.is_committed(0, G) || buf.is_committed(24 * kMiB, G) || buf.is_committed(104 * kMiB, G)) return 52;
  if (!check_pattern(base, 16 * kMiB, 24 * kMiB)) return 53;
  // The rolled-back runs really are decommitted (they count against the limit no more):
  if (buf.decommit(64 * kMiB, 40 * kMiB) != Status::kSuccess) return 54;
  if (buf.commit(24 * kMiB, 40 * kMiB) != Status::kSuccess) return 55;
  return 0;
}

int ensure_tokens_beyond_data_limit() {
  using memattn::memory::KvLayout;
  for (KvLayout layout : {KvLayout::kPerLayer, KvLayout::kInterleaved}) {
    VirtualKvCacheConfig cfg;
    cfg.slots = 4;
    cfg.layers = 4;
    cfg.kv_heads = 2;
    cfg.head_dim = 128;
    cfg.max_tokens = 1 << 16;
    cfg.elem_bytes = 2;
    cfg.layout = layout;
    VirtualKvCache<HostVmBackend> kv;
    if (kv.init(cfg) != Status::kSuccess) return 10;
    // 512 B per token per region: 4096 tokens is 2 MiB per region.
    if (kv.ensure_tokens(0, 4096) != Status::kSuccess) return 11;
    for (std::int64_t layer = 0; layer < cfg.layers; ++layer) {
      auto* k = reinterpret_cast<unsigned char*>(kv.k<std::uint16_t>(0, layer));
      auto* v = reinterpret_cast<unsigned char*>(kv.v<std::uint16_t>(0, layer));
      k[0] = static_cast<unsigned char>(layer + 1);
      v[0] = static_cast<unsigned char>(layer + 101);
    }
    const std::size_t committed = kv.committed_bytes();
    const std::int64_t backed = kv.backed_tokens(0);
    const std::size_t vm_data = memattn_test::proc_status_bytes("VmData");
    if (vm_data == 0) return 12;
    struct rlimit old;
    if (getrlimit(RLIMIT_DATA, &old) != 0) return 14;
    if (!set_limit(RLIMIT_DATA, vm_data + 24 * kMiB)) return 13;
    // 64 MiB per slot more: does not fit; the regions committed before the failure are undone.
    if (kv.ensure_tokens(0, 4096 * 9) != Status::kErrorOutOfMemory) return 20;
    if (kv.committed_bytes() != committed) return 21;
    if (kv.backed_tokens(0) != backed) return 22;
    for (std::int64_t layer = 0; layer < cfg.layers; ++layer) {
      auto* k = reinterpret_cast<unsigned char*>(kv.k<std::uint16_t>(0, layer));
      auto* v = reinterpret_cast<unsigned char*>(kv.v<std::uint16_t>(0, layer));
      if (k[0] != layer + 1 || v[0] != layer + 101) return 23;
    }
    // Usable: a smaller growth fits, and trimming another slot makes room.
    if (kv.ensure_tokens(1, 4096) != Status::kSuccess) return 30;
    if (kv.trim(1, 0) != Status::kSuccess) return 31;
    if (kv.ensure_tokens(0, 4096 * 2) != Status::kSuccess) return 32;
    if (kv.trim(0, 0) != Status::kSuccess) return 33;
    if (setrlimit(RLIMIT_DATA, &old) != 0) return 34;
  }
  return 0;
}

int reserve_beyond_address_space_limit() {
  const std::size_t vm_size = memattn_test::proc_status_bytes("VmSize");
  if (vm_size == 0) return 10;
  if (!set_limit(RLIMIT_AS, vm_size + 256 * kMiB)) return 11;
  VirtualBuffer<HostVmBackend> buf;
  if (buf.reserve(std::size_t{1} << 30) != Status::kErrorOutOfMemory) return 20;
  if (buf.reserved()) return 21;
  if (buf.reserve(64 * kMiB) != Status::kSuccess) return 22;
  if (buf.commit(0, 64 * kMiB) != Status::kSuccess) return 23;
  std::memset(buf.data(), 0x11, 64 * kMiB);
  VirtualKvCacheConfig cfg;
  cfg.slots = 64;
  cfg.layers = 32;
  cfg.kv_heads = 8;
  cfg.head_dim = 128;
  cfg.max_tokens = 4096;
  VirtualKvCache<HostVmBackend> kv;  // 64 x 32 x 2 x 8 MiB = 32 GiB of address space
  if (kv.init(cfg) != Status::kErrorOutOfMemory) return 30;
  if (kv.initialized()) return 31;
  return 0;
}

}  // namespace

TEST_CASE("host backend: commit beyond the data limit fails cleanly, buffer stays usable", "[memory][faults]") {
  REQUIRE(in_child(commit_beyond_data_limit) == 0);
}

TEST_CASE("host backend: ensure_tokens beyond the data limit is all-or-nothing", "[memory][faults]") {
  REQUIRE(in_child(ensure_tokens_beyond_data_limit) == 0);
}

TEST_CASE("host backend: reserve beyond the address-space limit", "[memory][faults]") {
  REQUIRE(in_child(reserve_beyond_address_space_limit) == 0);
}
