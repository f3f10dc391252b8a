// Helpers for the memory/ tests: a fault-injecting VirtualBuffer backend (wraps HostVmBackend and
// fails chosen commit/decommit calls), and process memory readings (RSS, VmData, VmSize).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

#include "memattn/memory/host_vm_backend.hpp"

namespace memattn_test {

// Counts the backend calls and fails the n-th commit (1-based; 0: never) / n-th decommit with
// kErrorOutOfMemory, without touching memory -- the backend contract's all-or-nothing failure.
struct FaultPlan {
  int fail_commit_call = 0;
  int fail_decommit_call = 0;
  int commit_calls = 0;
  int decommit_calls = 0;
  std::size_t committed_granules = 0;  // as the backend sees it
};

class FaultyBackend {
 public:
  FaultyBackend() = default;
  FaultyBackend(const memattn::memory::HostVmOptions& o, FaultPlan* plan) : inner_(o), plan_(plan) {}
  memattn::Status granularity(std::size_t* b) { return inner_.granularity(b); }
  memattn::Status reserve(std::size_t bytes, void** base) { return inner_.reserve(bytes, base); }
  memattn::Status commit(std::size_t first, std::size_t count) {
    if (plan_ && ++plan_->commit_calls == plan_->fail_commit_call) return memattn::Status::kErrorOutOfMemory;
    const memattn::Status st = inner_.commit(first, count);
    if (plan_ && st == memattn::Status::kSuccess) plan_->committed_granules += count;
    return st;
  }
  memattn::Status decommit(std::size_t first, std::size_t count) {
    if (plan_ && ++plan_->decommit_calls == plan_->fail_decommit_call) return memattn::Status::kErrorOutOfMemory;
    const memattn::Status st = inner_.decommit(first, count);
    if (plan_ && st == memattn::Status::kSuccess) plan_->committed_granules -= count;
    return st;
  }
  void release() { inner_.release(); }

 private:
  memattn::memory::HostVmBackend inner_;
  FaultPlan* plan_ = nullptr;
};

inline std::size_t rss_bytes() {
  std::size_t b = 0;
  return memattn::memory::host_resident_bytes(&b) == memattn::Status::kSuccess ? b : 0;
}

// A field of /proc/self/status in bytes ("VmData", "VmSize"); 0 when unavailable.
inline std::size_t proc_status_bytes(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  std::size_t kb = 0;
  const std::size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      unsigned long long v = 0;
      if (std::sscanf(line + n + 1, "%llu", &v) == 1) kb = static_cast<std::size_t>(v);
      break;
    }
  }
  std::fclose(f);
  return kb * 1024;
}

// True when [p, p + bytes) is mapped at all (any protection): msync fails with ENOMEM on holes.
inline bool is_mapped(const void* p, std::size_t bytes) {
  return msync(const_cast<void*>(p), bytes, MS_ASYNC) == 0;
}

// Pages of [p, p + bytes) resident in memory (mincore), in bytes.
inline std::size_t resident_in(const void* p, std::size_t bytes) {
  const std::size_t page = memattn::memory::host_page_size();
  const std::size_t n = (bytes + page - 1) / page;
  unsigned char vec_small[4096];
  std::size_t total = 0;
  for (std::size_t done = 0; done < n; done += sizeof vec_small) {
    const std::size_t m = n - done < sizeof vec_small ? n - done : sizeof vec_small;
    if (mincore(const_cast<unsigned char*>(static_cast<const unsigned char*>(p)) + done * page, m * page, vec_small) != 0)
      return 0;
    for (std::size_t i = 0; i < m; ++i) total += (vec_small[i] & 1) ? page : 0;
  }
  return total;
}

}  // namespace memattn_test
