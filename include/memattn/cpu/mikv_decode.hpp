// Attention over the quantised tiers of the MiKV mixed cache on the CPU (specs/quantization.md
// §6.1 applied to per-token records of quant/mixed_format.hpp). Logits and values are two passes
// over a pool's records with the scales folded out of the inner products, so the products run on
// the codes as exact small-integer floats:
//   logit_{r,t} = sum_j [ s^K_{t,j} * (q'_{r,Gj} . code^K_{t,Gj}) + z^K_{t,j} * sum(q'_{r,Gj}) ]
//   acc_{r,Gj} += (p_{r,:} * s^V_{:,j}) . code^V_{:,Gj} + (p_{r,:} . z^V_{:,j})
// with q' = tau * q / b (balanced keys, b = per-channel balancer) and Gj the channels of group j.
// Dead slots (live bit clear) get logit -inf. The cache (cpu/mikv_kv_cache.hpp) puts these
// logits, those of its exact rows and of the chunk into one stash and runs one softmax over all.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/cpu/code_unpack.hpp"
#include "memattn/quant/mixed_format.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace mikv_detail {
constexpr std::int64_t kTile = 64;  // slots unpacked at a time
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMatrix>;
using ConstMap = Eigen::Map<const RowMatrix>;
using StrideMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

// One tile of T records: codes (T x D) and meta (T x groups) of K or V.
struct Tile {
  float* code;
  float* scale;
  float* zero;
};
inline void unpack_tile(const std::uint8_t* records, std::int64_t t0, std::int64_t T, const quant::MixedRowConfig& cfg,
                        const quant::MixedRowLayout& lay, bool keys, const Tile& out) {
  const int D = cfg.head_dim, J = cfg.groups;
  for (std::int64_t t = 0; t < T; ++t) {
    const quant::MixedRowView r{records + static_cast<std::size_t>(t0 + t) * lay.bytes, cfg, lay};
    unpack_codes(keys ? r.kc() : r.vc(), D, cfg.bits, out.code + t * D);
    for (int j = 0; j < J; ++j) {
      const quant::GroupMeta m = keys ? r.k_meta(j) : r.v_meta(j);
      out.scale[t * J + j] = half_to_float(m.scale);
      out.zero[t * J + j] = half_to_float(m.zero);
    }
  }
}
}  // namespace mikv_detail

// Scratch floats for mixed_rows_logits / mixed_rows_values with `rows` query rows.
inline std::size_t mixed_rows_scratch_elems(std::int64_t rows, const quant::MixedRowConfig& cfg) {
  const std::int64_t T = mikv_detail::kTile, D = cfg.head_dim, J = cfg.groups;
  return static_cast<std::size_t>(T * D + 2 * T * J + rows * J + rows * T + rows * T);
}

// Logits of `rows` query rows qb (rows x D, row-major, already tau-scaled and divided by the key
// balancer) over the slots [0, n) of a pool: S (rows x n, leading dimension ld).
inline Status mixed_rows_logits(const std::uint8_t* records, const std::uint32_t* live, std::int64_t n,
                                const quant::MixedRowConfig& cfg, const float* qb, std::int64_t rows, float* S,
                                std::int64_t ld, float* scratch) {
  using namespace mikv_detail;
  if (n == 0) return Status::kSuccess;
  if (records == nullptr || live == nullptr || qb == nullptr || S == nullptr || scratch == nullptr)
    return Status::kErrorNullPointer;
  const quant::MixedRowLayout lay = quant::mixed_row_layout(cfg);
  const std::int64_t D = cfg.head_dim, J = cfg.groups, GS = cfg.group_size();
  float* code = scratch;
  float* sk = code + kTile * D;
  float* zk = sk + kTile * J;
  float* qsum = zk + kTile * J;
  float* part = qsum + rows * J;
  ConstMap Q(qb, rows, D);
  Map Qsum(qsum, rows, J);
  for (std::int64_t j = 0; j < J; ++j) Qsum.col(j) = Q.middleCols(j * GS, GS).rowwise().sum();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (std::int64_t t0 = 0; t0 < n; t0 += kTile) {
    const std::int64_t T = std::min(kTile, n - t0);
    unpack_tile(records, t0, T, cfg, lay, true, Tile{code, sk, zk});
    ConstMap C(code, T, D), Sk(sk, T, J), Zk(zk, T, J);
    StrideMap St(S + t0, rows, T, Eigen::OuterStride<>(ld));
    Map A(part, rows, T);
    St.noalias() = Qsum * Zk.transpose();
    for (std::int64_t j = 0; j < J; ++j) {
      A.noalias() = Q.middleCols(j * GS, GS) * C.middleCols(j * GS, GS).transpose();
      St += A * Sk.col(j).asDiagonal();
    }
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t s = t0 + t;
      if (!((live[s >> 5] >> (s & 31)) & 1u)) St.col(t).setConstant(kNegInf);
    }
  }
  return Status::kSuccess;
}

// acc (rows x D, row-major) += P (rows x n, leading dimension ld; 0 on dead slots) times the
// pool's values.
inline Status mixed_rows_values(const std::uint8_t* records, std::int64_t n, const quant::MixedRowConfig& cfg,
                                const float* P, std::int64_t ld, std::int64_t rows, float* acc, float* scratch) {
  using namespace mikv_detail;
  if (n == 0) return Status::kSuccess;
  if (records == nullptr || P == nullptr || acc == nullptr || scratch == nullptr) return Status::kErrorNullPointer;
  const quant::MixedRowLayout lay = quant::mixed_row_layout(cfg);
  const std::int64_t D = cfg.head_dim, J = cfg.groups, GS = cfg.group_size();
  float* code = scratch;
  float* sv = code + kTile * D;
  float* zv = sv + kTile * J;
  float* zsum = zv + kTile * J;
  float* part = zsum + rows * J;
  Map Acc(acc, rows, D);
  for (std::int64_t t0 = 0; t0 < n; t0 += kTile) {
    const std::int64_t T = std::min(kTile, n - t0);
    unpack_tile(records, t0, T, cfg, lay, false, Tile{code, sv, zv});
    ConstMap C(code, T, D), Sv(sv, T, J), Zv(zv, T, J);
    Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>> Pt(P + t0, rows, T, Eigen::OuterStride<>(ld));
    Map Ps(part, rows, T);
    for (std::int64_t j = 0; j < J; ++j) {
      Ps.noalias() = Pt * Sv.col(j).asDiagonal();
      Acc.middleCols(j * GS, GS).noalias() += Ps * C.middleCols(j * GS, GS);
      Eigen::Map<Eigen::VectorXf> z(zsum, rows);
      z.noalias() = Pt * Zv.col(j);
      Acc.middleCols(j * GS, GS).colwise() += z;
    }
  }
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
