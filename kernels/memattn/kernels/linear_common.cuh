// Device helpers of the linear-attention kernels: tensor-core MMA (mma.sync m16n8k16, fp32
// accumulate; sm_80 and sm_90), packed 16-bit pairs, feature maps on pairs, warp reductions.
//
// mma.sync.m16n8k16 fragment layout (lane = 4·gid + tig):
//   A (16x16, row-major): a0 = A[gid][2tig..+1], a1 = A[gid+8][2tig..+1], a2 = A[gid][2tig+8..+9],
//                         a3 = A[gid+8][2tig+8..+9]
//   B (16x8, "col"):      b0 = B[2tig..+1][gid],  b1 = B[2tig+8..+9][gid]
//   C/D (16x8, fp32):     c0,c1 = C[gid][2tig..+1], c2,c3 = C[gid+8][2tig..+1]
// so an m16n8 accumulator pair (n-tiles 2t, 2t+1) re-packs directly into an A fragment.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/kernels/warp_reduce.cuh"
#include "memattn/linear/feature_map.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {
namespace lin {

template <class T>
struct Pair;
template <>
struct Pair<BFloat16> {
  MEMATTN_DEVICE static float2 unpack(std::uint32_t w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  }
  MEMATTN_DEVICE static std::uint32_t pack(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
  MEMATTN_DEVICE static float one(std::uint16_t bits) { return __uint_as_float(static_cast<std::uint32_t>(bits) << 16); }
  MEMATTN_DEVICE static std::uint16_t bits(float x) {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    return *reinterpret_cast<const std::uint16_t*>(&h);
  }
};
template <>
struct Pair<Half> {
  MEMATTN_DEVICE static float2 unpack(std::uint32_t w) { return __half22float2(*reinterpret_cast<const __half2*>(&w)); }
  MEMATTN_DEVICE static std::uint32_t pack(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
  MEMATTN_DEVICE static float one(std::uint16_t bits) { return __half2float(*reinterpret_cast<const __half*>(&bits)); }
  MEMATTN_DEVICE static std::uint16_t bits(float x) {
    const __half h = __float2half_rn(x);
    return *reinterpret_cast<const std::uint16_t*>(&h);
  }
};

// D += A·B, fp32 accumulate; T selects bf16 or fp16 operands.
template <class T>
MEMATTN_DEVICE void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1);

#if defined(MEMATTN_SIMT_EMULATION)
template <>
MEMATTN_DEVICE void mma<BFloat16>(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  memattn_emu::mma16816<true>(d, a, b0, b1);
}
template <>
MEMATTN_DEVICE void mma<Half>(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  memattn_emu::mma16816<false>(d, a, b0, b1);
}
#else
template <>
MEMATTN_DEVICE void mma<BFloat16>(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
MEMATTN_DEVICE void mma<Half>(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

MEMATTN_DEVICE std::uint32_t ld32(const void* p) { return *reinterpret_cast<const std::uint32_t*>(p); }
MEMATTN_DEVICE void st32(void* p, std::uint32_t v) { *reinterpret_cast<std::uint32_t*>(p) = v; }

// φ on a packed pair (elementwise maps only; identity is a no-op).
template <class T, linear::FeatureMap FM>
MEMATTN_DEVICE std::uint32_t phi_pair(std::uint32_t w) {
  if (FM == linear::FeatureMap::kIdentity || FM == linear::FeatureMap::kTaylor2) return w;
  const float2 f = Pair<T>::unpack(w);
  return Pair<T>::pack(linear::phi_elementwise(FM, f.x), linear::phi_elementwise(FM, f.y));
}

using kernels::quad_sum;  // warp_reduce.cuh
using kernels::warp_sum;

// Length and first row of sequence n (device), from cu_seqlens or the dense form.
MEMATTN_DEVICE void seq_rows(const std::int32_t* cu, const std::int32_t* lens, int t_pad, int n, int* row0, int* len) {
  if (cu != nullptr) {
    *row0 = cu[n];
    *len = cu[n + 1] - cu[n];
  } else {
    *row0 = n * t_pad;
    *len = lens != nullptr ? lens[n] : t_pad;
  }
}

}  // namespace lin
}  // namespace kernels
MEMATTN_NAMESPACE_END
