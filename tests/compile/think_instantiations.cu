// Compile check: the ThinK two-segment decode kernel and its host wrapper, built to real SASS for
// each architecture in CMAKE_CUDA_ARCHITECTURES. compile.think_cubins checks the cubins.
#include <cstdint>
#include <cstdio>

#include "memattn/cuda/think.cuh"

namespace mk = memattn::kernels;
// The decode and combine kernels are plain __global__ functions: the wrappers below instantiate them.

int main() {
  // Argument checks run without a device: bad arguments are rejected before any launch.
  mk::ThinKDecodeParams p{};
  memattn::Status s = memattn::cuda::think_decode(p, nullptr);
  if (s != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  static const memattn::Half dummy_h[1] = {};
  static const unsigned char ch[1] = {0};
  static const int n[1] = {1};
  static const float q[1] = {0};
  static float o[1];
  p = mk::ThinKDecodeParams{dummy_h, 0, 1, ch, 1, dummy_h, 0, dummy_h, 0, n, n, q, o, 1, 1, 1, 300, 1.f};
  s = memattn::cuda::think_decode(p, nullptr);
  if (s != memattn::Status::kErrorUnsupportedHeadDim) {
    std::printf("unexpected status %s (head_dim 300)\n", memattn::status_message(s));
    return 1;
  }
  p.head_dim = 64;
  p.d_keep = 65;
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.d_keep = 1;
  p.q_heads = 9;  // 9 query heads on 1 KV head > 8
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorGqaRatio) return 1;
  p.q_heads = 1;
  // KIVI region (composed cache): every pointer, bit width, group and word count is checked.
  static const std::uint32_t words[1] = {};
  static const std::uint16_t meta[2] = {};
  p.n_q = n;
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorNullPointer) return 1;
  p.kq = words, p.kqm = meta, p.vq = words, p.vqm = meta;
  p.bits_k = 3, p.bits_v = 2, p.qgroup = 32, p.v_group = 32, p.kq_block_words = 4, p.v_words = 4;
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;  // 3 bits
  p.bits_k = 2;
  p.qgroup = 16;
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;  // group
  p.qgroup = 32;
  p.kq_block_words = 1;  // 32 tokens x 1 channel x 2 bits = 2 words
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.kq_block_words = 2;
  p.v_group = 48;  // does not divide head_dim 64
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.v_group = 32;
  p.kq_first = n;  // block list without its counts
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.kq_first = nullptr;
  p.path = 5;
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.path = 0;
  p.mma_cp_async = 2;  // path 3's stage copies: 0 (bulk where it can) or 1 (cp.async)
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.mma_cp_async = 0;
  p.mma_unpaired = -1;  // path 3's paired tiles: 0 (where they apply) or 1 (never)
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.mma_unpaired = 0;
  // Path 3 (tensor-core KIVI region) is a layout question: head_dim 64 / 128, 2- / 4-bit codes,
  // d_keep % 8, v_group % 32, 16-byte aligned code rows; it needs the fp16 parts on the lane path.
  {
    mk::ThinKDecodeParams m = p;
    alignas(16) static const std::uint32_t w16[4] = {};
    alignas(16) static const std::uint16_t m16[8] = {};
    alignas(16) static const memattn::Half h16[8] = {};
    m.k_old = h16, m.k_new = h16, m.v = h16, m.old_row_stride = 8, m.d_keep = 8, m.kq = w16, m.kqm = m16,
    m.vq = w16, m.vqm = m16, m.kq_block_words = 4, m.v_words = 4;
    if (!memattn::cuda::think_detail::mma_layout(m)) return 1;
    m.bits_k = 8;
    if (memattn::cuda::think_detail::mma_layout(m)) return 1;
    m.bits_k = 2, m.d_keep = 4;
    if (memattn::cuda::think_detail::mma_layout(m)) return 1;
    m.d_keep = 8, m.v_words = 2;
    if (memattn::cuda::think_detail::mma_layout(m)) return 1;
    m.v_words = 4;
    // path 4 (fp16 regions on tensor cores) needs path 3's layout for a KIVI region, 16-byte rows
    if (!memattn::cuda::think_detail::mma16_layout(m)) return 1;
    m.head_dim = 256;
    if (memattn::cuda::think_detail::mma_layout(m) || memattn::cuda::think_detail::mma16_layout(m)) return 1;
    m.head_dim = 64, m.n_q = nullptr, m.old_row_stride = 12;
    if (memattn::cuda::think_detail::mma16_layout(m)) return 1;
  }
  static float sc[1];
  p.scores = sc;  // row stride 0
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p = mk::ThinKDecodeParams{dummy_h, 0, 1, ch, 1, dummy_h, 0, dummy_h, 0, n, n, q, o, 1, 1, 1, 64, 1.f};
  // The split-KV entry checks its bound and workspace the same way.
  if (memattn::cuda::think_decode_workspace_size(p, 4096, nullptr) != memattn::Status::kErrorNullPointer) return 1;
  if (memattn::cuda::think_decode(p, 4096, nullptr, 0, nullptr) == memattn::Status::kSuccess) return 1;
  std::printf("think instantiations: ok\n");
  return 0;
}
