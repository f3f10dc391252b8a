// VirtualBuffer<HostVmBackend>: reserve 1 GiB, grow and shrink, stable base pointer, data kept
// across growth, memory returned to the OS (RSS and mincore measured), idempotent commit and
// decommit, every bad input, move semantics and release; the all-or-nothing commit through a
// fault-injecting backend.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "common/memory_test_util.hpp"
#include "memattn/memory/host_vm_backend.hpp"
#include "memattn/memory/virtual_buffer.hpp"

using memattn::Status;
using memattn::memory::HostVmBackend;
using memattn::memory::HostVmOptions;
using memattn::memory::VirtualBuffer;
using memattn_test::FaultPlan;
using memattn_test::FaultyBackend;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;

// A byte pattern that depends on the granule and offset, so misplaced data is caught.
unsigned char pattern(std::size_t granule, std::size_t off) {
  return static_cast<unsigned char>((granule * 131 + off * 7 + 1) & 0xff);
}

void fill_granule(unsigned char* base, std::size_t g, std::size_t unit) {
  for (std::size_t off = 0; off < unit; off += 4096) base[g * unit + off] = pattern(g, off);
  base[g * unit + unit - 1] = pattern(g, unit - 1);
}

bool check_granule(const unsigned char* base, std::size_t g, std::size_t unit) {
  for (std::size_t off = 0; off < unit; off += 4096)
    if (base[g * unit + off] != pattern(g, off)) return false;
  return base[g * unit + unit - 1] == pattern(g, unit - 1);
}

bool granule_is_zero(const unsigned char* base, std::size_t g, std::size_t unit) {
  for (std::size_t off = 0; off < unit; off += 512)
    if (base[g * unit + off] != 0) return false;
  return true;
}

}  // namespace

TEST_CASE("host VirtualBuffer: reserve 1 GiB, grow, shrink, stable pointer, data kept", "[memory]") {
  VirtualBuffer<HostVmBackend> buf;
  REQUIRE(!buf.reserved());
  REQUIRE(buf.reserve(kGiB) == Status::kSuccess);
  const std::size_t G = buf.granularity();
  REQUIRE(G == 2 * kMiB);
  REQUIRE(buf.size() == kGiB);
  REQUIRE(buf.granule_count() == 512);
  REQUIRE(buf.committed_bytes() == 0);
  unsigned char* const base = buf.bytes();
  REQUIRE(base != nullptr);
  REQUIRE(reinterpret_cast<std::uintptr_t>(base) % G == 0);  // granule-aligned reservation
  REQUIRE(memattn_test::is_mapped(base, kGiB));               // reserved (PROT_NONE) ...
  REQUIRE(memattn_test::resident_in(base, kGiB) == 0);        // ... and not backed

  // Grow 2 MiB -> 256 MiB one granule at a time, writing each new granule; earlier data stays.
  const std::size_t steps = 128;
  for (std::size_t g = 0; g < steps; ++g) {
    REQUIRE(buf.commit(0, (g + 1) * G) == Status::kSuccess);  // re-commits [0, g) idempotently
    REQUIRE(buf.data() == base);
    REQUIRE(buf.committed_bytes() == (g + 1) * G);
    fill_granule(base, g, G);
  }
  for (std::size_t g = 0; g < steps; ++g) REQUIRE(check_granule(base, g, G));
  REQUIRE(buf.is_committed(0, steps * G));
  REQUIRE(buf.is_committed(3, 5));                // any offsets
  REQUIRE(!buf.is_committed(steps * G - 1, 2));   // crosses into an uncommitted granule

  // Shrink to 64 MiB: the rest is decommitted; kept granules keep their data.
  REQUIRE(buf.decommit(32 * G, (steps - 32) * G) == Status::kSuccess);
  REQUIRE(buf.committed_bytes() == 32 * G);
  REQUIRE(buf.data() == base);
  for (std::size_t g = 0; g < 32; ++g) REQUIRE(check_granule(base, g, G));
  REQUIRE(memattn_test::resident_in(base + 32 * G, (steps - 32) * G) == 0);

  // Grow again: the new granules read as zero; the old ones still hold their data.
  REQUIRE(buf.commit(0, 96 * G) == Status::kSuccess);
  for (std::size_t g = 32; g < 96; ++g) REQUIRE(granule_is_zero(base, g, G));
  for (std::size_t g = 0; g < 32; ++g) REQUIRE(check_granule(base, g, G));

  // Holes: commit the last granule alone, decommit one in the middle.
  REQUIRE(buf.commit(kGiB - G, G) == Status::kSuccess);
  base[kGiB - 1] = 0x5a;
  REQUIRE(buf.decommit(10 * G, G) == Status::kSuccess);
  REQUIRE(!buf.granule_committed(10));
  REQUIRE(buf.granule_committed(9));
  REQUIRE(buf.granule_committed(511));
  REQUIRE(buf.committed_granules() == 96);
  REQUIRE(base[kGiB - 1] == 0x5a);

  REQUIRE(buf.decommit_all() == Status::kSuccess);
  REQUIRE(buf.committed_bytes() == 0);
  REQUIRE(memattn_test::resident_in(base, kGiB) == 0);
  REQUIRE(buf.data() == base);
}

TEST_CASE("host VirtualBuffer: decommit returns memory to the OS (RSS)", "[memory][rss]") {
  VirtualBuffer<HostVmBackend> buf;
  REQUIRE(buf.reserve(kGiB) == Status::kSuccess);
  const std::size_t bytes = 256 * kMiB;
  const std::size_t rss0 = memattn_test::rss_bytes();
  REQUIRE(rss0 > 0);
  REQUIRE(buf.commit(0, bytes) == Status::kSuccess);
  const std::size_t rss_committed = memattn_test::rss_bytes();
  std::memset(buf.data(), 0x3c, bytes);  // first touch allocates the pages
  const std::size_t rss_touched = memattn_test::rss_bytes();
  REQUIRE(buf.decommit(0, bytes) == Status::kSuccess);
  const std::size_t rss_after = memattn_test::rss_bytes();
  std::printf("RSS: before %.1f MiB, committed %.1f MiB, touched %.1f MiB, after decommit %.1f MiB\n",
              rss0 / double(kMiB), rss_committed / double(kMiB), rss_touched / double(kMiB), rss_after / double(kMiB));
  // Lazy commit: nothing is resident until touched.
  CHECK(rss_committed < rss0 + 16 * kMiB);
  REQUIRE(rss_touched >= rss0 + bytes - 16 * kMiB);
  // Decommit gives the pages back at once.
  REQUIRE(rss_after + bytes - 16 * kMiB <= rss_touched);
  REQUIRE(rss_after < rss0 + 16 * kMiB);

  // Re-committed memory reads as zero (the old contents are gone).
  REQUIRE(buf.commit(0, 4 * buf.granularity()) == Status::kSuccess);
  const unsigned char* p = buf.bytes();
  bool zero = true;
  for (std::size_t i = 0; i < 4 * buf.granularity(); i += 1024) zero = zero && p[i] == 0;
  REQUIRE(zero);
}

TEST_CASE("host VirtualBuffer: populate backs the pages at commit", "[memory][rss]") {
  HostVmOptions opt;
  opt.populate = true;
  VirtualBuffer<HostVmBackend> buf{HostVmBackend{opt}};
  REQUIRE(buf.reserve(256 * kMiB) == Status::kSuccess);
  const std::size_t bytes = 64 * kMiB;
  REQUIRE(buf.commit(0, bytes) == Status::kSuccess);
  REQUIRE(memattn_test::resident_in(buf.data(), bytes) == bytes);  // resident before any touch
  REQUIRE(buf.decommit(0, bytes) == Status::kSuccess);
  REQUIRE(memattn_test::resident_in(buf.data(), bytes) == 0);
}

TEST_CASE("host VirtualBuffer: granule sizes and huge pages", "[memory]") {
  const std::size_t page = memattn::memory::host_page_size();
  for (std::size_t granule : {page, 16 * page, 2 * kMiB, 16 * kMiB}) {
    for (bool huge : {false, true}) {
      HostVmOptions opt;
      opt.granule_bytes = granule;
      opt.huge_pages = huge;
      VirtualBuffer<HostVmBackend> buf{HostVmBackend{opt}};
      REQUIRE(buf.reserve(64 * kMiB + 1) == Status::kSuccess);  // rounded up to the granule
      REQUIRE(buf.granularity() == granule);
      REQUIRE(buf.size() % granule == 0);
      REQUIRE(buf.size() >= 64 * kMiB + 1);
      REQUIRE(reinterpret_cast<std::uintptr_t>(buf.data()) % granule == 0);
      REQUIRE(buf.commit(granule, 2 * granule) == Status::kSuccess);
      buf.bytes()[granule] = 1;
      buf.bytes()[3 * granule - 1] = 2;
      REQUIRE(buf.committed_bytes() == 2 * granule);
      REQUIRE(buf.decommit(granule, granule) == Status::kSuccess);
      REQUIRE(buf.bytes()[3 * granule - 1] == 2);
    }
  }
}

TEST_CASE("host VirtualBuffer: idempotent commit, double decommit", "[memory]") {
  VirtualBuffer<HostVmBackend> buf;
  REQUIRE(buf.reserve(64 * kMiB) == Status::kSuccess);
  const std::size_t G = buf.granularity();
  REQUIRE(buf.commit(0, 4 * G) == Status::kSuccess);
  buf.bytes()[0] = 42;
  REQUIRE(buf.commit(0, 4 * G) == Status::kSuccess);  // again: no-op, data kept
  REQUIRE(buf.commit(G, G) == Status::kSuccess);
  REQUIRE(buf.bytes()[0] == 42);
  REQUIRE(buf.committed_bytes() == 4 * G);
  REQUIRE(buf.commit(0, 0) == Status::kSuccess);  // empty range
  REQUIRE(buf.commit(buf.size(), 0) == Status::kSuccess);

  REQUIRE(buf.decommit(2 * G, 2 * G) == Status::kSuccess);
  REQUIRE(buf.decommit(2 * G, 2 * G) == Status::kSuccess);  // double decommit: defined no-op
  REQUIRE(buf.decommit(8 * G, 8 * G) == Status::kSuccess);  // never committed: no-op
  REQUIRE(buf.committed_bytes() == 2 * G);
  REQUIRE(buf.bytes()[0] == 42);
}

TEST_CASE("host VirtualBuffer: bad input returns a Status and changes nothing", "[memory][bad_input]") {
  const std::size_t kMax = std::numeric_limits<std::size_t>::max();
  SECTION("calls before reserve") {
    VirtualBuffer<HostVmBackend> buf;
    REQUIRE(buf.commit(0, 0) == Status::kErrorNullPointer);
    REQUIRE(buf.decommit(0, 0) == Status::kErrorNullPointer);
    REQUIRE(buf.decommit_all() == Status::kErrorNullPointer);
    REQUIRE(buf.data() == nullptr);
    REQUIRE(!buf.is_committed(0, 0));
    buf.reset();  // no-op
  }
  SECTION("reserve: zero, twice, larger than the address space") {
    VirtualBuffer<HostVmBackend> buf;
    REQUIRE(buf.reserve(0) == Status::kErrorInvalidArgument);
    REQUIRE(buf.reserve(kMax) == Status::kErrorOutOfMemory);            // rounding overflows
    REQUIRE(buf.reserve(kMax - (kMax % (2 * kMiB)) - 2 * kMiB) == Status::kErrorOutOfMemory);
    REQUIRE(buf.reserve(std::size_t{1} << 60) == Status::kErrorOutOfMemory);  // > 47/57-bit VA
    REQUIRE(!buf.reserved());
    REQUIRE(buf.reserve(4 * kMiB) == Status::kSuccess);  // still usable after the failures
    void* const base = buf.data();
    REQUIRE(buf.reserve(4 * kMiB) == Status::kErrorInvalidArgument);
    REQUIRE(buf.data() == base);
  }
  SECTION("bad granules") {
    for (std::size_t g : {std::size_t{0}, std::size_t{1000}, memattn::memory::host_page_size() + 1}) {
      HostVmOptions opt;
      opt.granule_bytes = g;
      VirtualBuffer<HostVmBackend> buf{HostVmBackend{opt}};
      REQUIRE(buf.reserve(kMiB) == Status::kErrorInvalidArgument);
      REQUIRE(!buf.reserved());
    }
  }
  SECTION("misaligned and out-of-range commits and decommits") {
    VirtualBuffer<HostVmBackend> buf;
    REQUIRE(buf.reserve(64 * kMiB) == Status::kSuccess);
    const std::size_t G = buf.granularity();
    REQUIRE(buf.commit(0, 2 * G) == Status::kSuccess);
    buf.bytes()[0] = 7;
    for (auto op : {0, 1}) {
      auto call = [&](std::size_t off, std::size_t n) { return op == 0 ? buf.commit(off, n) : buf.decommit(off, n); };
      REQUIRE(call(1, G) == Status::kErrorInvalidArgument);          // misaligned offset
      REQUIRE(call(G / 2, G) == Status::kErrorInvalidArgument);
      REQUIRE(call(0, G + 4096) == Status::kErrorInvalidArgument);   // misaligned size
      REQUIRE(call(0, 1) == Status::kErrorInvalidArgument);
      REQUIRE(call(buf.size(), G) == Status::kErrorCapacityExceeded);         // past the end
      REQUIRE(call(buf.size() - G, 2 * G) == Status::kErrorCapacityExceeded); // straddles it
      REQUIRE(call(0, buf.size() + G) == Status::kErrorCapacityExceeded);
      REQUIRE(call(buf.size() + G, 0) == Status::kErrorCapacityExceeded);
      REQUIRE(call(G, kMax - (kMax % G)) == Status::kErrorCapacityExceeded);  // offset + bytes overflows
      REQUIRE(call(kMax - (kMax % G), G) == Status::kErrorCapacityExceeded);
      REQUIRE(buf.committed_bytes() == 2 * G);
      REQUIRE(buf.bytes()[0] == 7);
    }
  }
}

TEST_CASE("host VirtualBuffer: move and release", "[memory]") {
  VirtualBuffer<HostVmBackend> a;
  REQUIRE(a.reserve(64 * kMiB) == Status::kSuccess);
  const std::size_t G = a.granularity();
  REQUIRE(a.commit(0, 3 * G) == Status::kSuccess);
  unsigned char* const base = a.bytes();
  base[5] = 99;

  VirtualBuffer<HostVmBackend> b(std::move(a));
  REQUIRE(b.bytes() == base);
  REQUIRE(b.committed_bytes() == 3 * G);
  REQUIRE(b.bytes()[5] == 99);
  REQUIRE(!a.reserved());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  REQUIRE(a.commit(0, G) == Status::kErrorNullPointer);

  VirtualBuffer<HostVmBackend> c;
  REQUIRE(c.reserve(8 * kMiB) == Status::kSuccess);
  unsigned char* const other = c.bytes();
  c = std::move(b);  // releases c's own reservation first
  REQUIRE(!memattn_test::is_mapped(other, 8 * kMiB));
  REQUIRE(c.bytes() == base);
  REQUIRE(c.bytes()[5] == 99);

  c.reset();
  REQUIRE(!c.reserved());
  REQUIRE(!memattn_test::is_mapped(base, 64 * kMiB));  // the whole range is unmapped
  unsigned char* p = nullptr;
  {
    VirtualBuffer<HostVmBackend> d;
    REQUIRE(d.reserve(16 * kMiB) == Status::kSuccess);
    REQUIRE(d.commit(0, 16 * kMiB) == Status::kSuccess);
    std::memset(d.data(), 1, 16 * kMiB);
    p = d.bytes();
  }  // the destructor releases
  REQUIRE(!memattn_test::is_mapped(p, 16 * kMiB));
}

TEST_CASE("VirtualBuffer: commit is all-or-nothing (fault injection)", "[memory][faults]") {
  HostVmOptions opt;
  opt.granule_bytes = 64 * 1024;
  const std::size_t G = opt.granule_bytes;
  FaultPlan plan;
  VirtualBuffer<FaultyBackend> buf{FaultyBackend{opt, &plan}};
  REQUIRE(buf.reserve(16 * G) == Status::kSuccess);
  // Granules 0, 2 and 5 committed with data.
  for (std::size_t g : {0, 2, 5}) {
    REQUIRE(buf.commit(g * G, G) == Status::kSuccess);
    fill_granule(buf.bytes(), g, G);
  }
  REQUIRE(plan.commit_calls == 3);

  // commit [0, 8): runs {1}, {3, 4}, {6, 7}; the second run fails -> {1} is rolled back.
  plan.fail_commit_call = plan.commit_calls + 2;
  REQUIRE(buf.commit(0, 8 * G) == Status::kErrorOutOfMemory);
  REQUIRE(plan.commit_calls == 5);  // {1} then {3, 4}; {6, 7} never tried
  REQUIRE(plan.decommit_calls == 1);
  REQUIRE(buf.committed_granules() == 3);
  REQUIRE(plan.committed_granules == 3);  // the backend agrees
  for (std::size_t g = 0; g < 16; ++g) REQUIRE(buf.granule_committed(g) == (g == 0 || g == 2 || g == 5));
  for (std::size_t g : {0, 2, 5}) REQUIRE(check_granule(buf.bytes(), g, G));

  // The buffer stays usable: the same commit succeeds once the fault is gone.
  plan.fail_commit_call = 0;
  REQUIRE(buf.commit(0, 8 * G) == Status::kSuccess);
  REQUIRE(buf.committed_granules() == 8);
  for (std::size_t g : {0, 2, 5}) REQUIRE(check_granule(buf.bytes(), g, G));
  REQUIRE(granule_is_zero(buf.bytes(), 1, G));

  // A rollback that cannot decommit records the truth: that run stays committed.
  REQUIRE(buf.decommit(0, 16 * G) == Status::kSuccess);
  REQUIRE(buf.commit(0, G) == Status::kSuccess);
  REQUIRE(buf.commit(2 * G, G) == Status::kSuccess);  // {0, 2}: commit [0, 4) runs {1}, {3}
  plan.fail_commit_call = plan.commit_calls + 2;      // run {3} fails ...
  plan.fail_decommit_call = plan.decommit_calls + 1;  // ... and undoing run {1} fails too
  REQUIRE(buf.commit(0, 4 * G) == Status::kErrorOutOfMemory);
  REQUIRE(buf.granule_committed(1));
  REQUIRE(!buf.granule_committed(3));
  REQUIRE(buf.committed_granules() == 3);
  REQUIRE(plan.committed_granules == 3);
  plan.fail_commit_call = plan.fail_decommit_call = 0;
  REQUIRE(buf.commit(0, 4 * G) == Status::kSuccess);
  REQUIRE(buf.committed_granules() == 4);
  REQUIRE(plan.committed_granules == 4);

  // decommit failing part-way: the runs before the failure are decommitted, the rest not.
  REQUIRE(buf.commit(6 * G, G) == Status::kSuccess);  // runs {0..3} and {6}
  plan.fail_decommit_call = plan.decommit_calls + 2;
  REQUIRE(buf.decommit(0, 8 * G) == Status::kErrorOutOfMemory);
  for (std::size_t g = 0; g < 4; ++g) REQUIRE(!buf.granule_committed(g));
  REQUIRE(buf.granule_committed(6));
  REQUIRE(plan.committed_granules == buf.committed_granules());
  plan.fail_decommit_call = 0;
  REQUIRE(buf.decommit(0, 8 * G) == Status::kSuccess);
  REQUIRE(buf.committed_granules() == 0);
  REQUIRE(plan.committed_granules == 0);
}
