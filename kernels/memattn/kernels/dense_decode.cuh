// Split-KV ("flash-decoding") dense decode attention: the __global__ kernels behind
// memattn/cuda/dense_decode.cuh. Semantics are those of memattn/attention/dense_args.hpp.
//
// Work decomposition
//  * One CTA (kDecodeThreads = 128 threads) handles one (batch b, kv head h, row tile, split s).
//    The rows of a KV head are the Tq x G query rows that read it (G = Hq / Hkv), flattened as
//    f = t * G + g. A row tile holds R of them (R in {1, 2, 4, 8}: the smallest power of two
//    >= Tq * G, capped at 8); when Tq * G > 8 the rows are split into ceil(Tq * G / 8) tiles and
//    every tile reads the KV range once, so KV is re-read once per extra tile. Within a tile every
//    KV element is loaded from memory once and used for all R rows (GQA served from one read).
//  * Lane groups: D / 8 consecutive lanes share one key; each lane owns 8 contiguous head-dim
//    elements (one 16-byte load of K and one of V per key). The partial dot products are summed
//    with xor shuffles inside the lane group (all lanes end with the same, bitwise identical
//    score). A CTA has 128 / (D / 8) lane groups; each is an independent online-softmax stream
//    over the keys base + group * kUnroll + u (u < kUnroll: 4, or 2 for R = 8) of every chunk, so
//    one chunk of groups * kUnroll keys is read as contiguous rows, and the lane groups of a warp
//    hold consecutive keys (the optional raw logits fill whole 32-byte sectors of a row in fp32, half
//    of one per warp in fp16).
//  * Bytes in flight: a multi-stage cp.async (16-byte, L2-only) pipeline into shared memory
//    (3 stages, or 5 for R = 8): 8 keys of K and V per thread (256 B) are in flight while one
//    chunk is computed. Each thread copies exactly the pieces it later reads, so the pipeline
//    needs only cp.async.wait_group, no barrier (48 KiB, or 40 KiB for R = 8, of static shared
//    memory per CTA; registers stay free for q, acc and scores).
//  * Registers (nvcc 13.0 ptxas, sm_90, with the optional fp32 / fp16 raw-logit output): R = 1: 88,
//    R = 2: 112-114, R = 4: 157-163, R = 8: 246-255; no spills, no stack, no local memory
//    (tests/compile builds them with -warn-spills). With 128 threads that is 4, 4, 3 and 2 resident CTAs per SM
//    (shared memory allows 4 on sm_90, 3 on sm_80).
//  * Softmax rescaling is lazy (the running max moves only when a score exceeds it by more than
//    8 in the base-2 domain, a factor 2^8), so most chunks skip the R x 8 multiplies of acc.
//  * q is pre-scaled by scale * log2(e) on load and the softmax works in base 2 (ex2.approx);
//    partial log-sum-exps are kept in base 2 and converted to natural log only when written out.
//  * At the end of a split the lane groups' (m, l, acc) states are merged through shared memory
//    (R * 4 KiB, aliasing the drained pipeline), in a fixed order. With one split the CTA writes
//    o / lse directly; otherwise it writes a normalised fp32 partial and its base-2 lse to the
//    workspace and dense_decode_merge_kernel combines the splits (LSE merge, fixed order: deterministic; one
//    CTA per output row, splits spread over the CTA so the merge is not latency-bound when B is
//    small and the split count large).
//  * Splits cover the key range a tile needs, [lo, hi): hi = L_b - Tq + t_last + 1 and lo = 0
//    (or max(0, L_b - Tq + t_first - W + 1) with a window). The host picks num_splits from the
//    upper bound of that range (max_seq_len or Lcap); each sequence divides its own range into
//    num_splits pieces of ceil(n / num_splits) keys rounded up to a whole chunk, so shorter
//    sequences still use every split. A split with no key writes lse = -inf and is ignored by
//    the merge; a row masked over a whole split (window, Tq > 1) likewise.
//  * A sequence with L_b < Tq, L_b <= 0 or L_b > Lcap (only possible when the caller gave no host
//    copy of seq_lens, otherwise the host wrapper rejects it) is skipped by both kernels: its
//    rows of o and lse are left untouched.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kDecodeThreads = 128;
constexpr int kMergeThreads = 128;
constexpr int kDecodeMaxRowTile = 8;

// Compile-time shape of one decode instantiation.
template <int D, int R>
struct DenseDecodeConfig {
  static_assert(D == 64 || D == 128 || D == 256, "head_dim must be 64, 128 or 256");
  static_assert(R == 1 || R == 2 || R == 4 || R == 8, "row tile must be 1, 2, 4 or 8");
  static constexpr int kThreads = kDecodeThreads;
  static constexpr int kLanes = D / 8;                 // lanes per key (8 elements = 16 B each)
  static constexpr int kGroups = kThreads / kLanes;    // independent softmax streams per CTA
  // Keys per group per chunk, and cp.async pipeline depth in chunks: 8 keys per thread in flight
  // beyond the chunk being computed either way (R = 8 unrolls less to stay under 255 registers).
  static constexpr int kUnroll = R == 8 ? 2 : 4;
  static constexpr int kChunk = kGroups * kUnroll;     // keys per CTA iteration
  static constexpr int kStages = R == 8 ? 5 : 3;
  // Resident CTAs per SM the register budget is capped for (R = 4 needs ~145 registers, R = 8
  // ~235; the 48 KiB pipeline allows 4 CTAs per SM on sm_90, 3 on sm_80).
  static constexpr int kMinBlocksPerSm = R <= 2 ? 4 : (R == 4 ? 3 : 2);
  // Pipeline: per stage, per key slot u, K and V: one 16-byte piece per thread.
  static constexpr int kPipeBytes = kStages * kUnroll * 2 * kThreads * 16;
  // Epilogue (aliases the pipeline): every group's acc [R][D] plus its m and l per row.
  static constexpr int kEpilogueBytes = kGroups * R * (D + 2) * 4;
  static constexpr int kSmemBytes = kPipeBytes > kEpilogueBytes ? kPipeBytes : kEpilogueBytes;
  static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

// Everything the kernels need; built and validated by the host wrapper. Strides in elements.
struct DenseDecodeParams {
  const void* q = nullptr;   // [B, Tq, Hq, D]
  const void* k = nullptr;   // [B, Hkv, Lcap, D]
  const void* v = nullptr;   // [B, Hkv, Lcap, D]
  void* o = nullptr;         // [B, Tq, Hq, D]
  float* lse = nullptr;      // [B, Tq, Hq] natural log, optional
  float* part_o = nullptr;   // [B * Tq * Hq, num_splits, D] normalised partials (num_splits > 1)
  float* part_lse = nullptr; // [B * Tq * Hq, num_splits] base-2 lse of each partial
  const std::int32_t* seq_lens = nullptr;  // device, optional
  // Optional (token eviction, spec eviction.md §4.3): raw logits scale * q.k of every (row f of a
  // KV head, key j) the kernel computes, [B, Hkv, Tq * G, Lcap], -inf for keys the row does not
  // see. Written as the chunk is scored (whole sectors per warp): 4 * Tq * G bytes per key next to the
  // 4 * D bytes of K and V read, so the eviction epilogue needs no second pass over K. fp32, or
  // fp16 with scores_half (half the bytes written here and read by the epilogue).
  void* scores = nullptr;
  bool scores_half = false;
  std::int64_t scores_stride[3] = {};  // b, h, f (keys contiguous), elements
  std::int64_t q_stride[3] = {};    // b, t, h
  std::int64_t k_stride[3] = {};    // b, h, l
  std::int64_t v_stride[3] = {};    // b, h, l
  std::int64_t o_stride[3] = {};    // b, t, h
  std::int64_t lse_stride[3] = {};  // b, t, h
  int batch = 0, q_tokens = 0, q_heads = 0, kv_heads = 0, group = 0, kv_capacity = 0;
  int row_tiles = 1, num_splits = 1;
  int window = 0;
  float scale_log2 = 0.f;  // softmax scale * log2(e)
  // K and V copied with an L2 evict-first policy (DenseDecodeTuning::kv_evict_first).
  bool kv_evict_first = false;
};

namespace detail {

constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;

// (Under tests/emu/simt.hpp, the CPU emulator: exp2f, and its model of cp.async groups.)
#if defined(MEMATTN_SIMT_EMULATION)
MEMATTN_DEVICE float fast_exp2(float x) { return exp2f(x); }
MEMATTN_DEVICE void cp_async_16(void* smem, const void* gmem) { memattn_emu::async_copy(smem, gmem, 16); }
MEMATTN_DEVICE void cp_async_16(void* smem, const void* gmem, std::uint64_t) { memattn_emu::async_copy(smem, gmem, 16); }
MEMATTN_DEVICE std::uint64_t evict_first_policy() { return 0; }
MEMATTN_DEVICE void cp_async_commit() { memattn_emu::async_commit(); }
template <int N>
MEMATTN_DEVICE void cp_async_wait() {
  memattn_emu::async_wait(N);
}
#else
MEMATTN_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 16-byte asynchronous copy global -> shared, cached in L2 only (K/V are streamed once per tile).
MEMATTN_DEVICE void cp_async_16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
// The same with an L2 cache policy (evict_first_policy). An explicit evict-normal policy is not
// the same as none: it made the plain decode 10% slower on an H200 (1004 -> 1109 us at B 16, L 64K).
MEMATTN_DEVICE void cp_async_16(void* smem, const void* gmem, std::uint64_t policy) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "l"(policy) : "memory");
}
MEMATTN_DEVICE std::uint64_t evict_first_policy() {
  std::uint64_t pol;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}
MEMATTN_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
MEMATTN_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

// K / V piece copy: with the evict-first policy when hinted (DenseDecodeParams::kv_evict_first).
MEMATTN_DEVICE void cp_async_kv(void* smem, const void* gmem, bool hint, std::uint64_t pol) {
  if (hint) cp_async_16(smem, gmem, pol);
  else cp_async_16(smem, gmem);
}

MEMATTN_DEVICE uint4 load_ro(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// 8 packed 16-bit values <-> 8 floats.
template <class T>
struct Pack8;

template <>
struct Pack8<BFloat16> {
  MEMATTN_DEVICE static void unpack(const uint4& u, float (&f)[8]) {
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
  MEMATTN_DEVICE static uint4 pack(const float (&f)[8]) {
    std::uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
      w[i] = *reinterpret_cast<const std::uint32_t*>(&h);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
};

template <>
struct Pack8<Half> {
  MEMATTN_DEVICE static void unpack(const uint4& u, float (&f)[8]) {
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
  MEMATTN_DEVICE static uint4 pack(const float (&f)[8]) {
    std::uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2 h = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
      w[i] = *reinterpret_cast<const std::uint32_t*>(&h);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
};

// A sequence the kernels must skip (rows left untouched).
MEMATTN_DEVICE bool sequence_invalid(int len, int q_tokens, int capacity) {
  return len <= 0 || len < q_tokens || len > capacity;
}

// Issues the cp.async copies of chunk [base, base + kChunk) of one lane group into a pipeline
// stage. Keys at or past s1 are clamped to s1 - 1 (never read past the split; masked later).
// Each thread copies exactly the 16-byte pieces it will read itself, so the pipeline needs no
// barrier: cp.async.wait_group of the thread's own groups is enough.
template <class T, int D, int R>
MEMATTN_DEVICE void issue_chunk(uint4* stage, const T* kb, const T* vb, std::int64_t ks, std::int64_t vs, int base,
                                int group, int s1, int tid, bool hint, std::uint64_t pol) {
  using Cfg = DenseDecodeConfig<D, R>;
#pragma unroll
  for (int u = 0; u < Cfg::kUnroll; ++u) {
    int j = base + group * Cfg::kUnroll + u;
    j = j < s1 ? j : s1 - 1;
    cp_async_kv(stage + (u * 2 + 0) * Cfg::kThreads + tid, kb + static_cast<std::int64_t>(j) * ks, hint, pol);
    cp_async_kv(stage + (u * 2 + 1) * Cfg::kThreads + tid, vb + static_cast<std::int64_t>(j) * vs, hint, pol);
  }
}

// Which keys the rows of a tile see: row r (flat f = row0 + r, f < rows) sits at position
// pos0 + f / group and sees keys (pos - window, pos] (window 0: [0, pos]). Recomputed in the
// (rare) masked chunks instead of holding 2 * R registers.
struct RowBounds {
  int pos0;  // L_b - Tq
  int row0;
  int rows;  // Tq * G
  int group;
  int window;
  MEMATTN_DEVICE void range(int r, int* lo, int* hi) const {
    const int f = row0 + r;
    const int pos = pos0 + f / group;
    *hi = f < rows ? pos + 1 : 0;
    *lo = window > 0 ? pos - window + 1 : 0;
  }
};

// Same for a chunk entirely inside the split: kp / vp point at this thread's piece of the group's
// first key (key base + group * kUnroll), consecutive u are kstep / vstep elements apart (one row).
template <class T, int D, int R>
MEMATTN_DEVICE void issue_full_chunk(uint4* stage, const T* kp, const T* vp, std::int64_t kstep, std::int64_t vstep,
                                     int tid, bool hint, std::uint64_t pol) {
  using Cfg = DenseDecodeConfig<D, R>;
#pragma unroll
  for (int u = 0; u < Cfg::kUnroll; ++u) {
    cp_async_kv(stage + (u * 2 + 0) * Cfg::kThreads + tid, kp + u * kstep, hint, pol);
    cp_async_kv(stage + (u * 2 + 1) * Cfg::kThreads + tid, vp + u * vstep, hint, pol);
  }
}

// The raw-logit rows of a tile (ptr == nullptr: not requested): row r at element r * row_stride,
// fp32, or rounded to fp16 with half.
struct ScoreRows {
  void* ptr = nullptr;
  std::int64_t row_stride = 0;
  bool half = false;
  MEMATTN_DEVICE void store(std::int64_t at, float v) const {
    if (half) static_cast<__half*>(ptr)[at] = __float2half_rn(v);
    else static_cast<float*>(ptr)[at] = v;
  }
};

// How a lane's 16-byte pipeline pieces become 8 fp32 key / value elements (key j of the chunk):
// 8 packed 16-bit floats here; other layouts (the composed cache's KIVI codes,
// think_decode_lanes.cuh) pass their own.
template <class T>
struct Pack8Pieces {
  MEMATTN_DEVICE void key(const uint4& u, int, float (&f)[8]) const { Pack8<T>::unpack(u, f); }
  MEMATTN_DEVICE void value(const uint4& u, int, float (&f)[8]) const { Pack8<T>::unpack(u, f); }
};

// One chunk of kChunk keys for one lane group, from a pipeline stage: scores, online-softmax
// update, V accumulation. kMasked: some key of the chunk is outside [s0, s1) or outside a row's
// causal/window range (such scores become -inf; a row with no visible key so far keeps m = -inf
// and l = acc = 0).
template <class T, int D, int R, bool kMasked, class Pieces = Pack8Pieces<T>>
MEMATTN_DEVICE void decode_chunk(const uint4* stage, int tid, int base, int group, int s1, const RowBounds& rb,
                                 const float (&q)[R][8], float (&m)[R], float (&l)[R], float (&acc)[R][8],
                                 const ScoreRows& scores, const Pieces& pieces = Pieces{}) {
  using Cfg = DenseDecodeConfig<D, R>;
  constexpr int U = Cfg::kUnroll;

  uint4 kr[U];
#pragma unroll
  for (int u = 0; u < U; ++u) kr[u] = stage[(u * 2 + 0) * Cfg::kThreads + tid];

  float sc[U][R];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    float kf[8];
    pieces.key(kr[u], base + group * U + u, kf);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float d = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) d = fmaf(q[r][i], kf[i], d);
      sc[u][r] = d;
    }
  }
  // Sum over the D/8 lanes of the group (xor butterfly: every lane gets the identical sum).
#pragma unroll
  for (int off = Cfg::kLanes / 2; off > 0; off >>= 1) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int r = 0; r < R; ++r) sc[u][r] += __shfl_xor_sync(0xffffffffu, sc[u][r], off);
    }
  }
  if (kMasked) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      int lo, hi;  // visible keys of row r: [lo, hi); empty for padding rows
      rb.range(r, &lo, &hi);
      hi = hi < s1 ? hi : s1;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = base + group * U + u;
        if (j < lo || j >= hi) sc[u][r] = -INFINITY;
      }
    }
  }
  // Raw logits for the eviction epilogue (uniform branch). Every lane of a group holds all U x R
  // sums, so lane l stores value (u, r) with r * U + u = round * kLanes + l: one store instruction
  // per round, and the warp's lane groups (consecutive keys) fill whole sectors of each row. The
  // value is picked by a tree of selects on the index bits (U * R - 1 selects; registers cannot be
  // indexed at run time), not by comparing the index with every (u, r).
  if (scores.ptr != nullptr) {
    constexpr int kN = U * R;
    static_assert((kN & (kN - 1)) == 0, "U * R must be a power of two");
    constexpr int kRounds = (kN + Cfg::kLanes - 1) / Cfg::kLanes;
    const int lane = tid % Cfg::kLanes;
#pragma unroll
    for (int round = 0; round < kRounds; ++round) {
      const int idx = round * Cfg::kLanes + lane;
      float pick[kN];
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int r = 0; r < R; ++r) pick[r * U + u] = sc[u][r];
      }
#pragma unroll
      for (int level = 1; level < kN; level <<= 1) {  // half = kN / 2, kN / 4, ..., 1
        const int half = kN / (2 * level);
        const bool upper = (idx & half) != 0;
#pragma unroll
        for (int k = 0; k < kN / 2; ++k) {
          if (k < half) pick[k] = upper ? pick[k + half] : pick[k];
        }
      }
      const int su = idx % U, sr = idx / U;
      const int j = base + group * U + su;
      if (idx < kN && j < s1 && rb.row0 + sr < rb.rows) scores.store(sr * scores.row_stride + j, pick[0] * kLn2);
    }
  }
  // Online softmax (base 2) with lazy rescaling: the running max m only moves (and acc, l are
  // rescaled) when a score exceeds it by more than kRescaleSlack, so p = 2^(s - m) <= 2^8 stays
  // small in fp32 and most chunks skip the rescale. (m, l, acc) stay consistent either way:
  // acc = sum 2^(s - m) v and l = sum 2^(s - m) for whatever m is held.
  constexpr float kRescaleSlack = 8.f;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float mx = sc[0][r];
#pragma unroll
    for (int u = 1; u < U; ++u) mx = fmaxf(mx, sc[u][r]);
    // True when m = -inf and mx is finite; false while every key so far is masked (both -inf).
    if (mx > m[r] + kRescaleSlack) {
      const float alpha = fast_exp2(m[r] - mx);  // 0 when m = -inf
      l[r] *= alpha;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r][i] *= alpha;
      m[r] = mx;
    }
    // All keys so far masked: keep exponents finite (exp2(-inf - 0) = 0 for every score).
    const float m_use = (kMasked && m[r] == -INFINITY) ? 0.f : m[r];
    float ls = l[r];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      sc[u][r] = fast_exp2(sc[u][r] - m_use);
      ls += sc[u][r];
    }
    l[r] = ls;
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    float vf[8];
    pieces.value(stage[(u * 2 + 1) * Cfg::kThreads + tid], base + group * U + u, vf);
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r][i] = fmaf(sc[u][r], vf[i], acc[r][i]);
    }
  }
}

// End of a split: lane group `group`'s (m, l, acc) stream into shared memory (aliasing the drained
// pipeline: acc [kGroups][R][D], then m and l [kGroups][R]), for merge_group_states after a barrier.
template <int D, int R>
MEMATTN_DEVICE void stash_group_state(unsigned char* smem, int group, int lane, const float (&m)[R], const float (&l)[R],
                                      const float (&acc)[R][8]) {
  constexpr int kGroups = DenseDecodeConfig<D, R>::kGroups;
  float(*sm_acc)[R][D] = reinterpret_cast<float(*)[R][D]>(smem);
  float(*sm_m)[R] = reinterpret_cast<float(*)[R]>(smem + kGroups * R * D * 4);
  float(*sm_l)[R] = reinterpret_cast<float(*)[R]>(smem + kGroups * R * D * 4 + kGroups * R * 4);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float4* dst = reinterpret_cast<float4*>(&sm_acc[group][r][lane * 8]);
    dst[0] = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    dst[1] = make_float4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
    if (lane == 0) {
      sm_m[group][r] = m[r];
      sm_l[group][r] = l[r];
    }
  }
}

// A merged row's l: keys were seen (l > 0), or poison (NaN), which its output and LSE keep.
MEMATTN_DEVICE bool keys_or_poison(float lsum) { return lsum > 0.f || lsum != lsum; }

// Row r, channels [c * 8, c * 8 + 8) of the stashed streams merged in a fixed group order: o =
// sum_g 2^(m_g - mx) acc_g (not normalised), *mx = max_g m_g (base 2; -inf when every stream is
// empty), *lsum = sum_g 2^(m_g - mx) l_g. NaN is never laundered: a stream whose logits were all
// NaN keeps m = -inf (the running max drops NaN) but l = NaN, and makes o, *mx and *lsum NaN.
template <int D, int R>
MEMATTN_DEVICE void merge_group_states(const unsigned char* smem, int r, int c, float (&o)[8], float* mx_out, float* lsum_out) {
  constexpr int kGroups = DenseDecodeConfig<D, R>::kGroups;
  const float(*sm_acc)[R][D] = reinterpret_cast<const float(*)[R][D]>(smem);
  const float(*sm_m)[R] = reinterpret_cast<const float(*)[R]>(smem + kGroups * R * D * 4);
  const float(*sm_l)[R] = reinterpret_cast<const float(*)[R]>(smem + kGroups * R * D * 4 + kGroups * R * 4);
  float mx = -INFINITY;
  bool poisoned = false;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    mx = fmaxf(mx, sm_m[g][r]);
    poisoned = poisoned || sm_l[g][r] != sm_l[g][r];
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i] = 0.f;
  float lsum = 0.f;
  if (poisoned) {
    mx = lsum = __int_as_float(0x7FC00000);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = mx;
  } else if (mx != -INFINITY) {
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const float mg = sm_m[g][r];
      if (mg == -INFINITY) continue;
      const float w = fast_exp2(mg - mx);
      lsum = fmaf(w, sm_l[g][r], lsum);
      const float4 a0 = *reinterpret_cast<const float4*>(&sm_acc[g][r][c * 8]);
      const float4 a1 = *reinterpret_cast<const float4*>(&sm_acc[g][r][c * 8 + 4]);
      o[0] = fmaf(w, a0.x, o[0]);
      o[1] = fmaf(w, a0.y, o[1]);
      o[2] = fmaf(w, a0.z, o[2]);
      o[3] = fmaf(w, a0.w, o[3]);
      o[4] = fmaf(w, a1.x, o[4]);
      o[5] = fmaf(w, a1.y, o[5]);
      o[6] = fmaf(w, a1.z, o[6]);
      o[7] = fmaf(w, a1.w, o[7]);
    }
  }
  *mx_out = mx;
  *lsum_out = lsum;
}

}  // namespace detail

// grid.x = B * Hkv * row_tiles * num_splits (split fastest), block = kDecodeThreads.
template <class T, int D, int R>
MEMATTN_KERNEL void __launch_bounds__(kDecodeThreads, (DenseDecodeConfig<D, R>::kMinBlocksPerSm))
dense_decode_split_kernel(const DenseDecodeParams p) {
  using Cfg = DenseDecodeConfig<D, R>;
  constexpr int kLanes = Cfg::kLanes;
  constexpr int kChunk = Cfg::kChunk;

  constexpr int kStages = Cfg::kStages;
  constexpr int kStageVecs = Cfg::kUnroll * 2 * kDecodeThreads;  // uint4 per pipeline stage

  MEMATTN_SHARED(__align__(16) unsigned char, smem, [Cfg::kSmemBytes]);
  uint4* pipe = reinterpret_cast<uint4*>(smem);

  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / kLanes;
  const int lane = tid % kLanes;  // owns head-dim elements [lane * 8, lane * 8 + 8)

  unsigned cta = blockIdx.x;  // < 2^31 (checked on the host)
  const int split = static_cast<int>(cta % static_cast<unsigned>(p.num_splits));
  cta /= static_cast<unsigned>(p.num_splits);
  const int tile = static_cast<int>(cta % static_cast<unsigned>(p.row_tiles));
  cta /= static_cast<unsigned>(p.row_tiles);
  const int h = static_cast<int>(cta % static_cast<unsigned>(p.kv_heads));
  const int b = static_cast<int>(cta / static_cast<unsigned>(p.kv_heads));

  const int Tq = p.q_tokens;
  const int len = p.seq_lens ? p.seq_lens[b] : p.kv_capacity;
  if (detail::sequence_invalid(len, Tq, p.kv_capacity)) return;  // uniform over the CTA

  const int rows = Tq * p.group;
  const int row0 = tile * R;
  const int row_last = min(row0 + R, rows) - 1;

  // Key ranges: rows are ordered by position, so the first row sees the fewest keys on the right
  // (hi_min) and the last active row starts furthest right (lo_max, window only).
  const detail::RowBounds rb{len - Tq, row0, rows, p.group, p.window};
  const int hi_min = len - Tq + row0 / p.group + 1;
  const int lo_max = p.window > 0 ? max(0, len - Tq + row_last / p.group - p.window + 1) : 0;

  // This split's keys.
  const int range_hi = len - Tq + row_last / p.group + 1;
  const int range_lo = p.window > 0 ? max(0, len - Tq + row0 / p.group - p.window + 1) : 0;
  const int n = range_hi - range_lo;  // >= 1
  // n <= Lcap < 2^31 - 4096 and num_splits <= 2^16 (host checks): 32-bit division is exact.
  std::int64_t per = static_cast<std::int64_t>(static_cast<unsigned>(n + p.num_splits - 1) / static_cast<unsigned>(p.num_splits));
  per = (per + kChunk - 1) / kChunk * kChunk;
  const std::int64_t s0l = range_lo + per * split;
  const int s0 = static_cast<int>(s0l < range_hi ? s0l : range_hi);
  const int s1 = static_cast<int>(s0l + per < range_hi ? s0l + per : range_hi);
  const int full_hi = min(s1, hi_min);

  float m[R], l[R], acc[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[r][i] = 0.f;
  }

  const T* kb = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1] + lane * 8;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1] + lane * 8;
  const std::int64_t ks = p.k_stride[2];
  const std::int64_t vs = p.v_stride[2];
  const int nchunks = s0 < s1 ? (s1 - s0 + kChunk - 1) / kChunk : 0;
  const bool hint = p.kv_evict_first;  // uniform
  const std::uint64_t pol = hint ? detail::evict_first_policy() : 0;
  // Copies chunk c into its stage: full chunks with pointer steps, the tail chunk clamped.
  auto issue = [&](int c) {
    uint4* stage = pipe + (c % kStages) * kStageVecs;
    const int base = s0 + c * kChunk;
    if (base + kChunk <= s1) {
      const std::int64_t j = base + group * Cfg::kUnroll;
      detail::issue_full_chunk<T, D, R>(stage, kb + j * ks, vb + j * vs, ks, vs, tid, hint, pol);
    } else {
      detail::issue_chunk<T, D, R>(stage, kb, vb, ks, vs, base, group, s1, tid, hint, pol);
    }
  };

  // Multi-stage cp.async pipeline: kStages - 1 chunks in flight while one is computed. A group is
  // committed every step (possibly empty) so wait_group<kStages - 1> always means "chunk c landed".
#pragma unroll
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < nchunks) issue(c);
    detail::cp_async_commit();
  }
  // q rows, pre-scaled into the base-2 domain (loaded while the first chunks are in flight).
  float q[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int f = row0 + r;
    if (f < rows) {
      const int t = f / p.group;
      const int hq = h * p.group + f % p.group;
      const T* qp = static_cast<const T*>(p.q) + b * p.q_stride[0] + t * p.q_stride[1] + hq * p.q_stride[2] + lane * 8;
      detail::Pack8<T>::unpack(detail::load_ro(qp), q[r]);
#pragma unroll
      for (int i = 0; i < 8; ++i) q[r][i] *= p.scale_log2;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) q[r][i] = 0.f;
    }
  }

  // Row row0 of this tile in the optional raw-logit output (nullptr: not requested).
  detail::ScoreRows srow;
  if (p.scores != nullptr) {
    const std::int64_t at = b * p.scores_stride[0] + h * p.scores_stride[1] + row0 * p.scores_stride[2];
    srow.ptr = static_cast<char*>(p.scores) + at * (p.scores_half ? 2 : 4);
    srow.row_stride = p.scores_stride[2];
    srow.half = p.scores_half;
  }
  for (int c = 0; c < nchunks; ++c) {
    const int next = c + kStages - 1;
    // The stage `next` lands in was last read by this same thread in iteration c - 1.
    if (next < nchunks) issue(next);
    detail::cp_async_commit();
    detail::cp_async_wait<kStages - 1>();
    const uint4* stage = pipe + (c % kStages) * kStageVecs;
    const int base = s0 + c * kChunk;
    // Uniform over the CTA: every key of the chunk is inside [s0, s1) and visible to every row.
    if (base >= lo_max && base + kChunk <= full_hi) {
      detail::decode_chunk<T, D, R, false>(stage, tid, base, group, s1, rb, q, m, l, acc, srow);
    } else {
      detail::decode_chunk<T, D, R, true>(stage, tid, base, group, s1, rb, q, m, l, acc, srow);
    }
  }
  detail::cp_async_wait<0>();
  __syncthreads();  // the epilogue reuses the pipeline's shared memory

  // Merge the lane groups' streams (fixed order over groups: deterministic).
  detail::stash_group_state<D, R>(smem, group, lane, m, l, acc);
  __syncthreads();

  const bool direct = p.num_splits == 1;
  for (int item = tid; item < R * kLanes; item += kDecodeThreads) {
    const int r = item / kLanes;
    const int c = item % kLanes;
    const int f = row0 + r;
    if (f >= rows) continue;
    float o[8], mx, lsum;
    detail::merge_group_states<D, R>(smem, r, c, o, &mx, &lsum);
    const bool some = detail::keys_or_poison(lsum);
    const float inv = some ? __fdividef(1.f, lsum) : 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] *= inv;
    const float lse2 = some ? mx + log2f(lsum) : -INFINITY;
    const int t = f / p.group;
    const int hq = h * p.group + f % p.group;
    if (direct) {
      T* op = static_cast<T*>(p.o) + b * p.o_stride[0] + t * p.o_stride[1] + hq * p.o_stride[2] + c * 8;
      *reinterpret_cast<uint4*>(op) = detail::Pack8<T>::pack(o);
      if (p.lse && c == 0) p.lse[b * p.lse_stride[0] + t * p.lse_stride[1] + hq * p.lse_stride[2]] = lse2 * detail::kLn2;
    } else {
      const std::int64_t prow = (static_cast<std::int64_t>(b) * Tq + t) * p.q_heads + hq;
      float4* dst = reinterpret_cast<float4*>(p.part_o + (prow * p.num_splits + split) * D + c * 8);
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (c == 0) p.part_lse[prow * p.num_splits + split] = lse2;
    }
  }
}

namespace detail {

// Block-wide max / sum over kMergeThreads threads in a fixed order (deterministic).
template <bool kMax>
MEMATTN_DEVICE float block_reduce(float x, float* sm_warp) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, off);
    x = kMax ? fmaxf(x, y) : x + y;
  }
  const int warp = static_cast<int>(threadIdx.x) / 32;
  if ((threadIdx.x & 31) == 0) sm_warp[warp] = x;
  __syncthreads();
  float r = sm_warp[0];
#pragma unroll
  for (int w = 1; w < kMergeThreads / 32; ++w) r = kMax ? fmaxf(r, sm_warp[w]) : r + sm_warp[w];
  return r;
}

}  // namespace detail

// Combines the num_splits partials of each output row: one CTA (kMergeThreads) per row of
// [B, Tq, Hq]. The split lse's are reduced by the whole CTA (max, then the sum of weights
// 2^(lse_s - max)); the partial outputs are read by D / 8 lanes x (kMergeThreads / (D / 8))
// split slices (16-byte loads, several splits in flight per thread) and the slices are summed
// through shared memory in a fixed order. Empty splits (lse = -inf, o = 0) get weight 0.
template <class T, int D>
MEMATTN_KERNEL void __launch_bounds__(kMergeThreads) dense_decode_merge_kernel(const DenseDecodeParams p) {
  constexpr int kLanes = D / 8;
  constexpr int kSlices = kMergeThreads / kLanes;
  MEMATTN_SHARED(float, sm_max, [kMergeThreads / 32]);
  MEMATTN_SHARED(float, sm_sum, [kMergeThreads / 32]);
  MEMATTN_SHARED(__align__(16) float, sm_acc, [kSlices][D]);

  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t row = blockIdx.x;  // (b * Tq + t) * Hq + hq
  const int hq = static_cast<int>(row % p.q_heads);
  const int t = static_cast<int>((row / p.q_heads) % p.q_tokens);
  const int b = static_cast<int>(row / (static_cast<std::int64_t>(p.q_heads) * p.q_tokens));
  const int len = p.seq_lens ? p.seq_lens[b] : p.kv_capacity;
  if (detail::sequence_invalid(len, p.q_tokens, p.kv_capacity)) return;  // uniform over the CTA

  const int S = p.num_splits;
  const float* pl = p.part_lse + row * S;
  float mx = -INFINITY;
  for (int s = tid; s < S; s += kMergeThreads) mx = fmaxf(mx, pl[s]);
  mx = detail::block_reduce<true>(mx, sm_max);
  // Every row of a valid sequence sees at least one key, so mx is finite; stay safe anyway.
  const float m_use = mx == -INFINITY ? 0.f : mx;
  float wsum = 0.f;
  for (int s = tid; s < S; s += kMergeThreads) wsum += detail::fast_exp2(pl[s] - m_use);
  wsum = detail::block_reduce<false>(wsum, sm_sum);

  const int lane = tid % kLanes;
  const int slice = tid / kLanes;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  const float* po = p.part_o + row * S * D + lane * 8;
#pragma unroll 4
  for (int s = slice; s < S; s += kSlices) {
    const float w = detail::fast_exp2(pl[s] - m_use);
    const float4 a0 = *reinterpret_cast<const float4*>(po + static_cast<std::int64_t>(s) * D);
    const float4 a1 = *reinterpret_cast<const float4*>(po + static_cast<std::int64_t>(s) * D + 4);
    acc[0] = fmaf(w, a0.x, acc[0]);
    acc[1] = fmaf(w, a0.y, acc[1]);
    acc[2] = fmaf(w, a0.z, acc[2]);
    acc[3] = fmaf(w, a0.w, acc[3]);
    acc[4] = fmaf(w, a1.x, acc[4]);
    acc[5] = fmaf(w, a1.y, acc[5]);
    acc[6] = fmaf(w, a1.z, acc[6]);
    acc[7] = fmaf(w, a1.w, acc[7]);
  }
  float4* dst = reinterpret_cast<float4*>(&sm_acc[slice][lane * 8]);
  dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
  dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
  __syncthreads();
  if (slice != 0) return;
#pragma unroll
  for (int sl = 1; sl < kSlices; ++sl) {
    const float4 b0 = *reinterpret_cast<const float4*>(&sm_acc[sl][lane * 8]);
    const float4 b1 = *reinterpret_cast<const float4*>(&sm_acc[sl][lane * 8 + 4]);
    acc[0] += b0.x;
    acc[1] += b0.y;
    acc[2] += b0.z;
    acc[3] += b0.w;
    acc[4] += b1.x;
    acc[5] += b1.y;
    acc[6] += b1.z;
    acc[7] += b1.w;
  }
  const float inv = wsum > 0.f ? __fdividef(1.f, wsum) : 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] *= inv;
  T* op = static_cast<T*>(p.o) + b * p.o_stride[0] + t * p.o_stride[1] + hq * p.o_stride[2] + lane * 8;
  *reinterpret_cast<uint4*>(op) = detail::Pack8<T>::pack(acc);
  if (p.lse && lane == 0) {
    const float lse2 = wsum > 0.f ? mx + log2f(wsum) : -INFINITY;
    p.lse[b * p.lse_stride[0] + t * p.lse_stride[1] + hq * p.lse_stride[2]] = lse2 * detail::kLn2;
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
