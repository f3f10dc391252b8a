// Stand-in for CUB's BlockScan under the CPU emulator (tests/emu/simt.hpp; this folder precedes
// the toolkit's headers on the emulated tests' include path). Same interface as the members the
// kernels call, same results: an exclusive prefix sum in thread order over the CTA, written
// through TempStorage between two CTA barriers (O(threads) per thread: fine for tests).
#pragma once

namespace cub {

template <class T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T v[kThreads];
  };
  explicit BlockScan(TempStorage& t) : t_(t) {}
  void ExclusiveSum(T x, T& excl) {
    T total;
    ExclusiveSum(x, excl, total);
  }
  void ExclusiveSum(T x, T& excl, T& total) {
    const int me = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    t_.v[me] = x;
    __syncthreads();
    T acc = T(0), all = T(0);
    for (int i = 0; i < kThreads; ++i) {
      if (i == me) acc = all;
      all = all + t_.v[i];
    }
    excl = acc;
    total = all;
    __syncthreads();
  }

 private:
  TempStorage& t_;
};

}  // namespace cub
