// Host side of the KIVI GPU append and decode apart from the launches (so also usable by
// tests/emu, the CPU emulator that runs the kernels in CI): the view and argument checks and the
// decode's kernel parameters. The CUDA wrappers and their contract: memattn/cuda/kivi.cuh.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/think_params.cuh"
#include "memattn/kernels/kivi_append.cuh"
#include "memattn/kernels/kivi_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status kivi_check_view(const kernels::KiviCacheView& c) {
  MEMATTN_RETURN_IF_ERROR(c.cfg.validate());
  if (c.blocks == nullptr || c.ring_k == nullptr || c.ring_v == nullptr) return Status::kErrorNullPointer;
  if (c.num_kv_heads <= 0 || c.max_blocks < 1) return Status::kErrorInvalidArgument;
  const quant::BlockLayout l = quant::block_layout(c.cfg);
  if (l.bytes != c.layout.bytes || l.kc != c.layout.kc || l.km != c.layout.km || l.vc != c.layout.vc || l.vm != c.layout.vm)
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

inline Status kivi_append_check(const kernels::KiviCacheView& cache, const Half* k, const Half* v, const int* n_before,
                                const std::uint32_t* flags, int batch) {
  MEMATTN_RETURN_IF_ERROR(kivi_check_view(cache));
  if (k == nullptr || v == nullptr || n_before == nullptr || flags == nullptr) return Status::kErrorNullPointer;
  if (batch <= 0) return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

// The view, the batch and the GQA ratio (what the decode's workspace size depends on).
inline Status kivi_check_shape(const kernels::KiviCacheView& cache, int batch, int q_heads) {
  MEMATTN_RETURN_IF_ERROR(kivi_check_view(cache));
  if (batch <= 0) return Status::kErrorInvalidShape;
  if (q_heads <= 0 || q_heads % cache.num_kv_heads != 0 || q_heads / cache.num_kv_heads > kernels::kKiviMaxGroup)
    return Status::kErrorGqaRatio;
  return Status::kSuccess;
}

inline Status kivi_decode_check(const kernels::KiviCacheView& cache, const float* q, const float* o, const int* n_tokens, int batch,
                                int q_heads) {
  MEMATTN_RETURN_IF_ERROR(kivi_check_view(cache));
  if (q == nullptr || o == nullptr || n_tokens == nullptr) return Status::kErrorNullPointer;
  return kivi_check_shape(cache, batch, q_heads);
}

inline kernels::KiviDecodeParams kivi_decode_params(const kernels::KiviCacheView& cache, const float* q, float* o, const int* n_tokens,
                                                    int batch, int q_heads) {
  return kernels::KiviDecodeParams{cache, q, o, n_tokens, batch, q_heads, 1.f / std::sqrt(static_cast<float>(cache.cfg.head_dim))};
}

// The split-KV call: the tensor-core kernel of the composed cache (think_decode_mma.cuh, over KIVI
// records) on the blocks where the layout allows it (kivi_mma_layout), with the ring in one more
// partial from the CUDA-core kernel; else the CUDA-core kernel split over its tiles.
struct KiviPlan {
  bool mma = false;
  int splits = 1;      // mma: the tensor-core kernel's grid splits (the ring's slot is `splits`); else the CUDA-core kernel's
  int split_keys = 0;  // mma: tokens per split (a multiple of 32)
  int split_tiles = 0; // CUDA-core: tiles per split
  int slots() const { return mma ? splits + 1 : splits; }
};

// The tensor-core kernel reads head_dim 64 / 128, 2- / 4-bit K and V, value groups of a multiple of
// 32 channels, records from a 16-byte aligned base (every section of a record is a multiple of 16
// bytes, quantization spec 5.1), Hkv records (one block of every KV head) in an int of bytes.
inline bool kivi_mma_layout(const kernels::KiviCacheView& c) {
  auto bits_ok = [](int b) { return b == 2 || b == 4; };
  return (c.cfg.head_dim == 64 || c.cfg.head_dim == 128) && bits_ok(c.cfg.bits_k) && bits_ok(c.cfg.bits_v) &&
         c.cfg.vg() % 32 == 0 && reinterpret_cast<std::uintptr_t>(c.blocks) % 16 == 0 && c.layout.bytes % 16 == 0 &&
         c.layout.bytes * static_cast<std::size_t>(c.num_kv_heads) <= 0x7FFFFFFFu;  // ThinKDecodeParams::rec_block_bytes
}

// Splits for sequences of at most max_tokens tokens on `sms` SMs: the tensor-core kernel one wave
// (think_detail::mma_wave_splits), splits of at least kThinKMmaMinSplit tokens; the CUDA-core
// kernel about 8 CTAs per SM, at least 256 tokens; split_keys
// > 0 forces the tokens per split, tensor_cores = false the CUDA-core kernel.
inline Status kivi_plan(const kernels::KiviCacheView& c, int batch, int max_tokens, int split_keys, bool tensor_cores, int sms,
                        KiviPlan* pl) {
  if (max_tokens < 1 || split_keys < 0 || batch < 1) return Status::kErrorInvalidArgument;
  KiviPlan r;
  r.mma = tensor_cores && kivi_mma_layout(c);
  int keys = split_keys;
  if (keys == 0) {
    if (sms < 1) return Status::kErrorInvalidArgument;
    const long long segments = static_cast<long long>(batch) * c.num_kv_heads;
    const long long want = r.mma ? think_detail::mma_wave_splits(segments, sms) : std::max<long long>(1, (8LL * sms + segments - 1) / segments);
    keys = static_cast<int>(std::max<long long>(r.mma ? think_detail::kThinKMmaMinSplit : 256, (max_tokens + want - 1) / want));
  }
  if (r.mma) {
    r.split_keys = (keys + kernels::kThinKTile - 1) / kernels::kThinKTile * kernels::kThinKTile;
    r.splits = (max_tokens + r.split_keys - 1) / r.split_keys;
  } else {
    const int G = c.cfg.group;
    r.split_tiles = (keys + G - 1) / G;
    const int tiles = (max_tokens + G - 1) / G;  // blocks + ring chunks of a sequence of max_tokens
    r.splits = (tiles + r.split_tiles - 1) / r.split_tiles;
  }
  if (r.splits > 65535) return Status::kErrorInvalidArgument;
  *pl = r;
  return Status::kSuccess;
}

// Workspace: the partials ([slots][B * Hq] rows of head_dim floats, then of (m, l)), and the
// tensor-core kernel's n_q ([B * Hkv] ints); none for one CUDA-core split.
struct KiviBuffers {
  float* acc = nullptr;
  float* ml = nullptr;
  int* n_q = nullptr;
};
inline KiviBuffers kivi_carve(Workspace& ws, const kernels::KiviCacheView& c, int batch, int q_heads, const KiviPlan& pl) {
  KiviBuffers b;
  if (!pl.mma && pl.splits <= 1) return b;
  const std::size_t rows = static_cast<std::size_t>(pl.slots()) * static_cast<std::size_t>(batch) * static_cast<std::size_t>(q_heads);
  b.acc = ws.take<float>(rows * static_cast<std::size_t>(c.cfg.head_dim));
  b.ml = ws.take<float>(rows * 2);
  if (pl.mma) b.n_q = ws.take<int>(static_cast<std::size_t>(batch) * static_cast<std::size_t>(c.num_kv_heads));
  return b;
}
inline std::size_t kivi_workspace_bytes(const kernels::KiviCacheView& c, int batch, int q_heads, const KiviPlan& pl) {
  Workspace sizing;
  kivi_carve(sizing, c, batch, q_heads, pl);
  return sizing.required();
}

struct KiviDecodeKernel {
  static constexpr auto kernel = kernels::kivi_decode_kernel<128>;
};

// The kernels of a checked, planned split-KV call (buffers carved by kivi_carve), in order (launch
// as in think_launches).
template <class Launch>
Status kivi_decode_launches(const kernels::KiviCacheView& c, const float* q, float* o, const int* n_tokens, int batch, int q_heads,
                            const KiviPlan& pl, const KiviBuffers& buf, Launch&& launch) {
  kernels::KiviDecodeParams kp = kivi_decode_params(c, q, o, n_tokens, batch, q_heads);
  const dim3 kgrid(static_cast<unsigned>(batch), static_cast<unsigned>(c.num_kv_heads));
  if (!pl.mma && pl.splits <= 1) return launch(KiviDecodeKernel{}, kgrid, dim3(128), 0, kp);
  const int D = c.cfg.head_dim;
  kernels::ThinKSplit sp;
  sp.splits = pl.slots();
  sp.split_keys = pl.split_keys;
  sp.acc = buf.acc;
  sp.ml = buf.ml;
  kp.part_acc = sp.acc;
  kp.part_ml = sp.ml;
  // what think_combine_kernel (and the tensor-core kernel) read of the ThinK parameters
  kernels::ThinKDecodeParams tp{};
  tp.q = q;
  tp.o = o;
  tp.batch = batch;
  tp.q_heads = q_heads;
  tp.kv_heads = c.num_kv_heads;
  tp.head_dim = D;
  tp.scale = kp.scale;
  tp.path = 3;
  const dim3 grid1(static_cast<unsigned>(batch) * static_cast<unsigned>(c.num_kv_heads));
  if (!pl.mma) {
    kp.split_tiles = pl.split_tiles;
    MEMATTN_RETURN_IF_ERROR(launch(KiviDecodeKernel{}, dim3(kgrid.x, kgrid.y, static_cast<unsigned>(pl.splits)), dim3(128), 0, kp));
    return launch(think_detail::CombineKernel{}, grid1, dim3(kernels::kThinKThreads), 0, tp, sp);
  }
  // the ring first: it also writes n_q, which the tensor-core kernel reads
  kp.ring_slot = pl.splits;
  kp.n_q_out = buf.n_q;
  MEMATTN_RETURN_IF_ERROR(launch(KiviDecodeKernel{}, kgrid, dim3(128), 0, kp));
  tp.n_q = buf.n_q;
  tp.d_keep = D;
  tp.kq = reinterpret_cast<const std::uint32_t*>(c.blocks + c.layout.kc);
  tp.kqm = reinterpret_cast<const std::uint16_t*>(c.blocks + c.layout.km);
  tp.vq = reinterpret_cast<const std::uint32_t*>(c.blocks + c.layout.vc);
  tp.vqm = reinterpret_cast<const std::uint16_t*>(c.blocks + c.layout.vm);
  tp.qgroup = c.cfg.group;
  tp.bits_k = c.cfg.bits_k;
  tp.bits_v = c.cfg.bits_v;
  tp.v_group = c.cfg.vg();
  tp.v_words = D * c.cfg.bits_v / 32;
  tp.rec_block_bytes = static_cast<int>(c.layout.bytes) * c.num_kv_heads;
  tp.rec_head_bytes = static_cast<int>(c.layout.bytes);
  tp.rec_seq_bytes = static_cast<long long>(c.layout.bytes) * c.num_kv_heads * c.max_blocks;
  const Status st = D == 64 ? think_detail::launch_mma_d<64, true>(tp, sp, pl.splits, launch)
                            : think_detail::launch_mma_d<128, true>(tp, sp, pl.splits, launch);
  MEMATTN_RETURN_IF_ERROR(st);
  return launch(think_detail::CombineKernel{}, grid1, dim3(kernels::kThinKThreads), 0, tp, sp);
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
