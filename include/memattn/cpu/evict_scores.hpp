// Attention-based eviction scores on the CPU without an N x N matrix (spec eviction.md §4):
//
//   logit_probs(...)    epilogue of the decode attention (§4.3): given the raw logits the decode
//                       wrote (DecodeArgs::scores) and the LSE it returned for one query token's
//                       G heads, p_{g,j} = exp(s_{g,j} - lse_g), GQA-reduced p̄_j = R_g p_{g,j},
//                       handed to a callback per slot (H2O accumulation, Scissorhands history).
//                       Applied to every query of a prefill chunk it yields the all-query column
//                       sums of §4.2 with pass 1 for free.
//   decode_probs(...)   the same without stored logits: recomputes tau*q_g.k_j from the keys (a
//                       second pass over them, for callers that cannot hold the logits).
//   query_lse(...)      pass 1 of §4.1: natural-log LSE of G query rows over a key prefix.
//   window_colsum(...)  §4.1: two passes (LSE, then exp(s - lse) summed per column), the G heads
//                       reduced (mean|max|sum) after the window sum, fixed loop order (deterministic).
//   pool_scores(...)    stride-1 pooling (avg|max, odd kernel, padding k/2, count_include_pad).
// Work is blockwise over keys (kBlock keys converted to fp32 at a time); scratch is caller-owned,
// sized by the *_scratch_elems helpers.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_block_decode.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace evict_detail {
constexpr std::int64_t kBlock = 128;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMatrix>;
using Map = Eigen::Map<RowMatrix>;
}  // namespace evict_detail

// out[c] = R_g P[g * ld + c] for c < n over G rows: evict::group_combine / group_finish in the
// same order, whole rows at a time (vectorised). out may be P's first row.
inline void group_reduce_rows(const float* P, std::int64_t ld, std::int64_t G, std::int64_t n, evict::GroupReduce reduce,
                              float* out) {
  using Row = Eigen::Map<Eigen::ArrayXf>;
  using ConstRow = Eigen::Map<const Eigen::ArrayXf>;
  Row acc(out, n);
  if (out != P) acc = ConstRow(P, n);
  for (std::int64_t g = 1; g < G; ++g) {
    if (reduce == evict::GroupReduce::kMax)
      acc = acc.max(ConstRow(P + g * ld, n));
    else
      acc += ConstRow(P + g * ld, n);
  }
  if (reduce == evict::GroupReduce::kMean) acc /= static_cast<float>(G);
}

namespace evict_detail {
// Block epilogue: the G rows of nb logits at s (row stride lds; may be P itself) become
// p = exp(s - lse_g) in P (G x nb, contiguous; Eigen's vector exp), reduced over the heads into
// P's row 0, then fn(j0 + c, R_g p_{g,c}) per column.
template <class Fn>
void reduce_probs(const float* s, std::int64_t lds, float* P, const float* lse, std::int64_t G, std::int64_t nb,
                  std::int64_t j0, evict::GroupReduce reduce, Fn& fn) {
  for (std::int64_t g = 0; g < G; ++g)
    Eigen::Map<Eigen::ArrayXf>(P + g * nb, nb) = (Eigen::Map<const Eigen::ArrayXf>(s + g * lds, nb) - lse[g]).exp();
  group_reduce_rows(P, nb, G, nb, reduce, P);
  for (std::int64_t c = 0; c < nb; ++c) fn(j0 + c, P[c]);
}
}  // namespace evict_detail

// Scratch floats for decode_probs / query_lse with `rows` query rows of dimension D.
inline std::size_t probs_scratch_elems(std::int64_t rows, std::int64_t D) {
  return static_cast<std::size_t>(evict_detail::kBlock * D + rows * evict_detail::kBlock + rows * D + rows);
}

// q: G rows of D fp32 (row stride q_stride), unscaled; lse[G] natural log of tau*q.k over the
// visible keys; k: key rows (T, row stride k_stride); visible: keys [0, visible).
// fn(slot, pbar) is called for every visible slot in increasing order.
template <class T, class Fn>
Status decode_probs(const float* q, std::int64_t q_stride, const float* lse, std::int64_t G, std::int64_t D,
                    float scale, const T* k, std::int64_t k_stride, std::int64_t visible, evict::GroupReduce reduce,
                    float* scratch, Fn&& fn) {
  using namespace evict_detail;
  if (q == nullptr || lse == nullptr || k == nullptr || scratch == nullptr) return Status::kErrorNullPointer;
  if (G <= 0 || D <= 0 || visible < 0) return Status::kErrorInvalidShape;
  float* kb = scratch;
  float* sb = kb + kBlock * D;
  float* qb = sb + G * kBlock;
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t d = 0; d < D; ++d) qb[g * D + d] = q[g * q_stride + d] * scale;
  ConstMap Q(qb, G, D);
  // AVX2 builds read the key rows in place (dense_block_decode.hpp) and take the exponentials
  // a row at a time in Eigen's vector exp: the scalar std::exp per (head, key) and the fp32 copy
  // of the keys were most of H2O's CPU step overhead.
  const bool direct = G <= dense_block::kMaxRows && dense_block::available<T>(D);
  for (std::int64_t j0 = 0; j0 < visible; j0 += kBlock) {
    const std::int64_t nb = std::min(kBlock, visible - j0);
    Map S(sb, G, nb);
    if (direct) {
      dense_block::scores(k + j0 * k_stride, k_stride, static_cast<int>(nb), static_cast<int>(D), qb, static_cast<int>(G), D,
                          sb, nb);
    } else {
      load_rows(k + j0 * k_stride, k_stride, nb, D, kb);
      ConstMap K(kb, nb, D);
      S.noalias() = Q.lazyProduct(K.transpose());
    }
    evict_detail::reduce_probs(sb, nb, sb, lse, G, nb, j0, reduce, fn);
  }
  return Status::kSuccess;
}

// Scratch floats for logit_probs with G heads.
inline std::size_t logit_probs_scratch_elems(std::int64_t G) { return static_cast<std::size_t>(G * evict_detail::kBlock); }

// s: the G logit rows of one query token (row g at s + g * ld, keys contiguous, as the decode
// wrote them); lse[G] as the decode returned it; scratch: logit_probs_scratch_elems(G) floats.
// fn(slot, pbar) for every slot of [0, visible) in increasing order; the logits are not modified.
template <class Fn>
Status logit_probs(const float* s, std::int64_t ld, const float* lse, std::int64_t G, std::int64_t visible,
                   evict::GroupReduce reduce, float* scratch, Fn&& fn) {
  using namespace evict_detail;
  if (s == nullptr || lse == nullptr || scratch == nullptr) return Status::kErrorNullPointer;
  if (G <= 0 || visible < 0 || ld < visible) return Status::kErrorInvalidShape;
  for (std::int64_t j0 = 0; j0 < visible; j0 += kBlock) {
    const std::int64_t nb = std::min(kBlock, visible - j0);
    reduce_probs(s + j0, ld, scratch, lse, G, nb, j0, reduce, fn);
  }
  return Status::kSuccess;
}

// Pass 1: lse[r] = log sum_{j < visible[r]} exp(scale * q_r . k_j) for `rows` query rows, all
// rows in one blockwise pass over the keys (each key block converted once), online max/sum.
template <class T>
Status query_lse(const float* q, std::int64_t q_stride, std::int64_t rows, std::int64_t D, float scale, const T* k,
                 std::int64_t k_stride, const std::int64_t* visible, float* lse, float* scratch) {
  using namespace evict_detail;
  if (q == nullptr || k == nullptr || visible == nullptr || lse == nullptr || scratch == nullptr)
    return Status::kErrorNullPointer;
  float* kb = scratch;
  float* sb = kb + kBlock * D;
  float* qb = sb + rows * kBlock;
  float* l = qb + rows * D;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::int64_t vmax = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (visible[r] <= 0) return Status::kErrorEmptyCache;
    vmax = std::max(vmax, visible[r]);
    for (std::int64_t d = 0; d < D; ++d) qb[r * D + d] = q[r * q_stride + d] * scale;
    lse[r] = kNegInf;  // running max
    l[r] = 0.f;
  }
  ConstMap Q(qb, rows, D);
  for (std::int64_t j0 = 0; j0 < vmax; j0 += kBlock) {
    const std::int64_t nb = std::min(kBlock, vmax - j0);
    load_rows(k + j0 * k_stride, k_stride, nb, D, kb);
    ConstMap K(kb, nb, D);
    Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> S(sb, rows, nb, Eigen::OuterStride<>(kBlock));
    S.noalias() = Q * K.transpose();
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t hi = std::min(nb, visible[r] - j0);
      if (hi <= 0) continue;
      const float mn = std::max(lse[r], S.row(r).head(hi).maxCoeff());
      l[r] = l[r] * std::exp(lse[r] - mn) + (S.row(r).head(hi).array() - mn).exp().sum();
      lse[r] = mn;
    }
  }
  for (std::int64_t r = 0; r < rows; ++r) lse[r] += std::log(l[r]);
  return Status::kSuccess;
}

// Observation-window column sums (§4.1). q: w window tokens x G heads, row (i, g) at
// q + i*q_tok_stride + g*q_head_stride (post-RoPE, unscaled); qpos[w]: their positions;
// k: N key rows, kpos[N] their positions (ascending); query i sees keys with kpos <= qpos[i].
// col[j] = R_g sum_i p_{g,i,j} (fp32, fixed order). scratch: window_colsum_scratch_elems floats;
// visible_scratch: w * G int64.
template <class T>
Status window_colsum(const float* q, std::int64_t q_tok_stride, std::int64_t q_head_stride, const std::int32_t* qpos,
                     std::int64_t w, std::int64_t G, std::int64_t D, float scale, const T* k, std::int64_t k_stride,
                     const std::int32_t* kpos, std::int64_t N, evict::GroupReduce reduce, float* col, float* scratch,
                     std::int64_t* visible_scratch) {
  using namespace evict_detail;
  if (q == nullptr || qpos == nullptr || k == nullptr || kpos == nullptr || col == nullptr || scratch == nullptr ||
      visible_scratch == nullptr)
    return Status::kErrorNullPointer;
  if (w <= 0 || G <= 0 || D <= 0 || N <= 0) return Status::kErrorInvalidShape;
  const std::int64_t rows = G * w;
  // Gather the rows (i, g) contiguously: row r = i*G + g.
  float* qrows = scratch;  // rows x D, row r = i*G + g
  float* probs_scratch = qrows + rows * D;
  float* lse = probs_scratch + probs_scratch_elems(rows, D);
  float* percol = lse + rows;  // G x N
  std::int64_t* vis = visible_scratch;
  for (std::int64_t i = 0; i < w; ++i) {
    const std::int64_t vi = std::upper_bound(kpos, kpos + N, qpos[i]) - kpos;
    if (vi <= 0) return Status::kErrorEmptyCache;
    for (std::int64_t g = 0; g < G; ++g) {
      vis[i * G + g] = vi;
      for (std::int64_t d = 0; d < D; ++d) qrows[(i * G + g) * D + d] = q[i * q_tok_stride + g * q_head_stride + d];
    }
  }
  // pass 1: every (i, g) row over its own visible prefix, one pass over the keys
  MEMATTN_RETURN_IF_ERROR(query_lse(qrows, D, rows, D, scale, k, k_stride, vis, lse, probs_scratch));
  // pass 2: columns per head, queries in increasing order
  std::fill(percol, percol + G * N, 0.f);
  float* kb = probs_scratch;
  float* sb = kb + kBlock * D;
  float* qb = sb + rows * kBlock;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t d = 0; d < D; ++d) qb[r * D + d] = qrows[r * D + d] * scale;
  ConstMap Q(qb, rows, D);
  const std::int64_t vmax = *std::max_element(vis, vis + rows);
  for (std::int64_t j0 = 0; j0 < vmax; j0 += kBlock) {
    const std::int64_t nb = std::min(kBlock, vmax - j0);
    load_rows(k + j0 * k_stride, k_stride, nb, D, kb);
    ConstMap K(kb, nb, D);
    Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> S(sb, rows, nb, Eigen::OuterStride<>(kBlock));
    S.noalias() = Q * K.transpose();
    for (std::int64_t i = 0; i < w; ++i) {
      const std::int64_t hi = std::min(nb, vis[i * G] - j0);
      for (std::int64_t g = 0; g < G; ++g) {
        const std::int64_t r = i * G + g;
        float* pc = percol + g * N + j0;
        for (std::int64_t c = 0; c < hi; ++c) pc[c] += std::exp(S(r, c) - lse[r]);
      }
    }
  }
  for (std::int64_t j = 0; j < N; ++j) {
    float acc = 0.f;
    for (std::int64_t g = 0; g < G; ++g) acc = evict::group_combine(reduce, acc, percol[g * N + j], static_cast<int>(g));
    col[j] = evict::group_finish(reduce, acc, static_cast<int>(G));
  }
  return Status::kSuccess;
}

// Total scratch floats window_colsum needs (its own query copy included).
inline std::size_t window_colsum_scratch_elems(std::int64_t G, std::int64_t w, std::int64_t D, std::int64_t N) {
  const std::int64_t rows = G * w;
  return static_cast<std::size_t>(rows * D) + probs_scratch_elems(rows, D) + static_cast<std::size_t>(rows) +
         static_cast<std::size_t>(G * N);
}

// Stride-1 pooling over v[0, n): window [j - k/2, j + k/2] (k odd); avg divides by k when
// count_include_pad (zero padding counted, reference parity) else by the in-range count; max
// takes the in-range maximum.
inline Status pool_scores(const float* v, std::int64_t n, int kernel, evict::PoolKind kind, bool count_include_pad,
                          float* out) {
  if ((v == nullptr || out == nullptr) && n > 0) return Status::kErrorNullPointer;
  if (kernel < 1 || kernel % 2 == 0 || n < 0) return Status::kErrorInvalidArgument;
  const std::int64_t h = kernel / 2;
  for (std::int64_t j = 0; j < n; ++j) {
    const std::int64_t a = std::max<std::int64_t>(0, j - h), b = std::min<std::int64_t>(n - 1, j + h);
    if (kind == evict::PoolKind::kMax) {
      float m = v[a];
      for (std::int64_t x = a + 1; x <= b; ++x) m = std::max(m, v[x]);
      out[j] = m;
    } else {
      float s = 0.f;
      for (std::int64_t x = a; x <= b; ++x) s += v[x];
      out[j] = s / static_cast<float>(count_include_pad ? kernel : (b - a + 1));
    }
  }
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
