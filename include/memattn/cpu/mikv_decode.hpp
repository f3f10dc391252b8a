// Attention over the quantised tiers of the MiKV mixed cache on the CPU (specs/quantization.md
// §6.1 applied to per-token records of quant/mixed_format.hpp). Logits and values are two passes
// over a pool's records with the scales folded out of the inner products, so the products run on
// the codes as exact small-integer floats:
//   logit_{r,t} = sum_j [ s^K_{t,j} * (q'_{r,Gj} . code^K_{t,Gj}) + z^K_{t,j} * sum(q'_{r,Gj}) ]
//   acc_{r,Gj} += (p_{r,:} * s^V_{:,j}) . code^V_{:,Gj} + (p_{r,:} . z^V_{:,j})
// with q' = tau * q / b (balanced keys, b = per-channel balancer) and Gj the channels of group j.
// Dead slots (live bit clear) get logit -inf. The cache (cpu/mikv_kv_cache.hpp) puts these
// logits, those of its exact rows and of the chunk into one stash and runs one softmax over all.
// Decode-sized row counts on AVX2 builds (mixed_direct()) read the codes in place with the KIVI decode's
// kernels (kivi_block_decode.hpp: scores_tokens / values_tokens for the per-token records,
// scores_codes for the per-channel key blocks of lowk=1); other builds and prefill unpack 64-slot
// tiles to fp32 for Eigen products. Same canonical values, different summation order.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/cpu/code_unpack.hpp"
#include "memattn/cpu/dense_block_decode.hpp"
#include "memattn/cpu/kivi_block_decode.hpp"
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

constexpr std::int64_t kDirectTile = kivi_block::kTokenTile;  // tokens per direct call

// Direct path scratch: per-group scale / zero rows of a tile, then the kernels' own scratch.
inline std::int64_t direct_scratch(const quant::MixedRowConfig& cfg) {
  const std::int64_t D = cfg.head_dim, J = cfg.groups, D8 = (D + 7) / 8 * 8;
  const std::int64_t kernels = std::max<std::int64_t>({kivi_block::scores_tokens_scratch(cfg.head_dim, cfg.groups),
                                                       2 * D + kivi_block::kRowChunk * (D8 + 1),  // scores_codes
                                                       kivi_block::kRowChunk * (kDirectTile + 1)});  // values_tokens
  return 2 * J * kDirectTile + kernels + 16;
}

// Token records [0, n) in tiles of kDirectTile: fn(t0, nt, first record, sc, ze, kernel scratch)
// with the metadata at byte meta_off of each record transposed into sc / ze (row stride
// kDirectTile).
template <class Fn>
void record_tiles(const std::uint8_t* records, std::int64_t n, const quant::MixedRowLayout& lay, std::size_t meta_off,
                  std::int64_t J, float* scratch, Fn&& fn) {
  float *sc = scratch, *ze = sc + J * kDirectTile, *ks = ze + J * kDirectTile;
  for (std::int64_t t0 = 0; t0 < n; t0 += kDirectTile) {
    const std::int64_t nt = std::min(kDirectTile, n - t0);
    const std::uint8_t* rec = records + static_cast<std::size_t>(t0) * lay.bytes;
    kivi_block::transpose_meta(reinterpret_cast<const std::uint16_t*>(rec + meta_off), lay.bytes / 2, nt, J, sc, ze, kDirectTile);
    fn(t0, static_cast<int>(nt), rec, sc, ze, ks);
  }
}
}  // namespace mikv_detail

// True when mixed_rows_* and block_pool_* read the codes in place for `rows` query rows.
inline bool mixed_direct(const quant::MixedRowConfig& cfg, std::int64_t rows) {
#if defined(MEMATTN_KIVI_FUSED_AVX2)
  const int GV = cfg.groups > 0 ? cfg.head_dim / cfg.groups : 0;
  return rows <= kivi_block::kMaxRows && (cfg.bits == 2 || cfg.bits == 4 || cfg.bits == 8) && cfg.head_dim % 8 == 0 &&
         GV > 0 && GV % 8 == 0 && dense_block::available<Half>(cfg.head_dim);
#else
  (void)cfg, (void)rows;
  return false;
#endif
}

// Scratch floats for mixed_rows_logits / mixed_rows_values and block_pool_logits / _values with
// `rows` query rows.
inline std::size_t mixed_rows_scratch_elems(std::int64_t rows, const quant::MixedRowConfig& cfg) {
  const std::int64_t T = mikv_detail::kTile, D = cfg.head_dim, J = cfg.groups;
  const std::int64_t tiled = T * D + 2 * T * J + rows * J + rows * T + rows * T;
  return static_cast<std::size_t>(std::max(tiled, mikv_detail::direct_scratch(cfg)));
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
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (mixed_direct(cfg, rows)) {
    record_tiles(records, n, lay, lay.km, J, scratch, [&](std::int64_t t0, int nt, const std::uint8_t* rec, const float* sc,
                                                          const float* ze, float* ks) {
      kivi_block::scores_tokens(reinterpret_cast<const std::uint32_t*>(rec + lay.kc), static_cast<std::int64_t>(lay.bytes / 4),
                                nt, static_cast<int>(D), static_cast<int>(GS), cfg.bits, sc, ze, kDirectTile, qb,
                                static_cast<int>(rows), D, S + t0, ld, ks);
    });
    for (std::int64_t s = 0; s < n; ++s)
      if (!((live[s >> 5] >> (s & 31)) & 1u))
        for (std::int64_t r = 0; r < rows; ++r) S[r * ld + s] = kNegInf;
    return Status::kSuccess;
  }
  float* code = scratch;
  float* sk = code + kTile * D;
  float* zk = sk + kTile * J;
  float* qsum = zk + kTile * J;
  float* part = qsum + rows * J;
  ConstMap Q(qb, rows, D);
  Map Qsum(qsum, rows, J);
  for (std::int64_t j = 0; j < J; ++j) Qsum.col(j) = Q.middleCols(j * GS, GS).rowwise().sum();
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
  if (mixed_direct(cfg, rows)) {
    record_tiles(records, n, lay, lay.vm, J, scratch, [&](std::int64_t t0, int nt, const std::uint8_t* rec, const float* sc,
                                                          const float* ze, float* ks) {
      kivi_block::values_tokens(reinterpret_cast<const std::uint32_t*>(rec + lay.vc), static_cast<std::int64_t>(lay.bytes / 4),
                                nt, static_cast<int>(D), static_cast<int>(GS), cfg.bits, sc, ze, kDirectTile, P + t0,
                                static_cast<int>(rows), ld, acc, D, ks);
    });
    return Status::kSuccess;
  }
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

// The lowk=1 Low tier (quant::MixedBlockPool) read in place, for mixed_direct(pool.config(), rows):
// S[r][s] = qb_r . k_s for every slot (row stride ld; dead slots -inf), the full blocks from their
// per-channel key codes, the staged rows as fp16.
template <class Pool>
void block_pool_logits(const Pool& pool, const float* qb, std::int64_t rows, float* S, std::int64_t ld, float* scratch) {
  const quant::MixedRowConfig& cfg = pool.config();
  const int D = cfg.head_dim;
  constexpr std::int64_t G = Pool::kBlock;
  for (std::int64_t b = 0; b < pool.blocks(); ++b)
    kivi_block::scores_codes(pool.key_codes() + b * static_cast<std::int64_t>(pool.key_words()),
                             static_cast<std::int64_t>(pool.key_words() * 4), pool.key_meta_bits() + b * 2 * D, static_cast<int>(G), D,
                             cfg.bits, qb, static_cast<int>(rows), D, S + b * G, ld, scratch);
  const std::int64_t staged = pool.slots() - pool.blocks() * G;
  if (staged > 0)
    dense_block::scores(pool.staged_keys(), D, static_cast<int>(staged), D, qb, static_cast<int>(rows), D, S + pool.blocks() * G, ld);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (std::int64_t s = 0; s < pool.slots(); ++s)
    if (!pool.is_live(s))
      for (std::int64_t r = 0; r < rows; ++r) S[r * ld + s] = kNegInf;
}

// acc (rows x D) += P (row stride ld; 0 on dead slots) times the pool's values.
template <class Pool>
void block_pool_values(const Pool& pool, const float* P, std::int64_t ld, std::int64_t rows, float* acc, float* scratch) {
  const quant::MixedRowConfig& cfg = pool.config();
  const std::int64_t D = cfg.head_dim, J = cfg.groups, T = mikv_detail::kDirectTile;
  const std::int64_t quantised = pool.blocks() * Pool::kBlock, words = static_cast<std::int64_t>(cfg.code_words());
  float *sc = scratch, *ze = sc + J * T, *ks = ze + J * T;
  for (std::int64_t t0 = 0; t0 < quantised; t0 += T) {
    const std::int64_t nt = std::min(T, quantised - t0);
    kivi_block::transpose_meta(pool.value_meta_bits() + t0 * 2 * J, static_cast<std::size_t>(2 * J), nt, J, sc, ze, T);
    kivi_block::values_tokens(pool.value_codes() + t0 * words, words, static_cast<int>(nt), static_cast<int>(D),
                              static_cast<int>(D / J), cfg.bits, sc, ze, T, P + t0, static_cast<int>(rows), ld, acc, D, ks);
  }
  const std::int64_t staged = pool.slots() - quantised;
  if (staged > 0)
    dense_block::values(pool.staged_values(), D, static_cast<int>(staged), static_cast<int>(D), P + quantised,
                        static_cast<int>(rows), ld, acc, D);
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
