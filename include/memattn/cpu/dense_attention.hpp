// Dense attention on the CPU (Eigen): causal prefill and decode, GQA, optional sliding window,
// online softmax over key blocks, fp32 accumulation, log-sum-exp output. This is also the
// reference the CUDA kernels are checked against. Conventions: attention/dense_args.hpp.
//
// Work is organised per (sequence, KV head, block of query tokens): the rows of a block are all
// query heads of the GQA group for those tokens, so every key block is read once for the whole
// group. Up to 16 rows (decode) on AVX2 builds, Q·Kᵀ and P·V read the cache rows directly
// (dense_block_decode.hpp); otherwise each key block is converted to fp32 scratch and Q·Kᵀ, P·V
// are small Eigen products. Decode can also write the raw logits scale * q.k it computes
// (DecodeArgs::scores / scores_half, the token-eviction epilogue's input), in the layout the CUDA
// kernel writes them. Scratch is two-phase:
//   dense_decode_workspace_size(args, &bytes); dense_decode(args, ws, bytes);
// the overloads without a workspace allocate it themselves (convenience, not for hot paths).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_block_decode.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {
namespace detail {

constexpr std::int64_t kKeyBlock = 128;   // keys converted and scored per step
constexpr std::int64_t kQueryBlock = 64;  // query tokens per block (rows = tokens x group)
constexpr std::int64_t kLazyRows = 16;    // up to this many rows, Q·Kᵀ skips GEMM packing

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix, Eigen::Aligned16>;

struct Scratch {
  float* q = nullptr;    // rows x D (pre-scaled queries)
  float* k = nullptr;    // kKeyBlock x D
  float* v = nullptr;    // kKeyBlock x D
  float* s = nullptr;    // rows x kKeyBlock (scores, then probabilities)
  float* acc = nullptr;  // rows x D
  float* m = nullptr;    // rows: running max
  float* l = nullptr;    // rows: running sum
  std::int64_t* lo = nullptr;  // rows: first visible key
  std::int64_t* hi = nullptr;  // rows: one past the last visible key
  float* lse = nullptr;        // rows: log-sum-exp of the block
};

template <class W>
void plan(W& ws, std::int64_t max_rows, std::int64_t D, Scratch* s) {
  s->q = ws.template take<float>(static_cast<std::size_t>(max_rows * D));
  s->k = ws.template take<float>(static_cast<std::size_t>(kKeyBlock * D));
  s->v = ws.template take<float>(static_cast<std::size_t>(kKeyBlock * D));
  s->s = ws.template take<float>(static_cast<std::size_t>(max_rows * kKeyBlock));
  s->acc = ws.template take<float>(static_cast<std::size_t>(max_rows * D));
  s->m = ws.template take<float>(static_cast<std::size_t>(max_rows));
  s->l = ws.template take<float>(static_cast<std::size_t>(max_rows));
  s->lo = ws.template take<std::int64_t>(static_cast<std::size_t>(max_rows));
  s->hi = ws.template take<std::int64_t>(static_cast<std::size_t>(max_rows));
  s->lse = ws.template take<float>(static_cast<std::size_t>(max_rows));
}

// Raw-logit rows of one block (DecodeArgs::scores or scores_half): block row r at r * stride,
// keys contiguous. Absent when both pointers are null.
struct LogitRows {
  float* f32 = nullptr;
  Half* f16 = nullptr;
  std::int64_t stride = 0;
  bool present() const { return f32 != nullptr || f16 != nullptr; }
  void put(std::int64_t r, std::int64_t j0, const float* src, std::int64_t n) const {
    if (f32 != nullptr)
      std::copy(src, src + n, f32 + r * stride + j0);
    else
      from_float_n(src, n, f16 + r * stride + j0);
  }
  void mask(std::int64_t r, std::int64_t j0, std::int64_t j1) const {  // -inf on keys [j0, j1)
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    if (f32 != nullptr)
      std::fill(f32 + r * stride + j0, f32 + r * stride + std::max(j0, j1), kNegInf);
    else
      std::fill(f16 + r * stride + j0, f16 + r * stride + std::max(j0, j1), from_float<Half>(kNegInf));
  }
};

// The optional logit outputs of a decode, [B, Hkv, Tq * G, Lcap].
struct LogitOut {
  TensorView<float, 4> f32;
  TensorView<Half, 4> f16;
  LogitRows rows(std::int64_t b, std::int64_t kh, std::int64_t f0) const {
    if (f32.data != nullptr) return LogitRows{f32.ptr(b, kh, f0, 0), nullptr, f32.stride[2]};
    if (f16.data != nullptr) return LogitRows{nullptr, f16.ptr(b, kh, f0, 0), f16.stride[2]};
    return LogitRows{};
  }
};

inline std::int64_t max_rows(std::int64_t q_tokens, std::int64_t group) {
  return std::min(q_tokens, kQueryBlock) * group;
}

// Attends `rows` pre-scaled query rows (sc.q) to the keys of one KV head; row r sees keys
// [sc.lo[r], sc.hi[r]), a non-empty range. Writes normalised outputs into sc.acc and the lse
// (natural log, unscaled by log2e) into lse_out, and, when `logits` is present, each row's raw
// logits over the keys [kmin, kmax) of all rows (-inf where the row does not see the key).
template <class T>
void attend_rows(const Scratch& sc, std::int64_t rows, std::int64_t D, const T* k_base, std::int64_t k_stride,
                 const T* v_base, std::int64_t v_stride, float* lse_out, const LogitRows& logits) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::int64_t kmin = sc.lo[0], kmax = sc.hi[0];
  for (std::int64_t r = 1; r < rows; ++r) {
    kmin = std::min(kmin, sc.lo[r]);
    kmax = std::max(kmax, sc.hi[r]);
  }
  MatrixMap Q(sc.q, rows, D);
  MatrixMap Acc(sc.acc, rows, D);
  Acc.setZero();
  std::fill(sc.m, sc.m + rows, kNegInf);
  std::fill(sc.l, sc.l + rows, 0.f);

  // Few rows (one decode token's GQA group): vector builds read K and V straight from the cache
  // (dense_block_decode.hpp); others convert each block to fp32 and skip GEMM packing for Q·Kᵀ.
  const bool direct = rows <= kLazyRows && dense_block::available<T>(D);
  for (std::int64_t j0 = kmin; j0 < kmax; j0 += kKeyBlock) {
    const std::int64_t n = std::min(kKeyBlock, kmax - j0);
    Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> S(sc.s, rows, n, Eigen::OuterStride<>(kKeyBlock));
    if (direct) {
      dense_block::scores(k_base + j0 * k_stride, k_stride, static_cast<int>(n), static_cast<int>(D), sc.q,
                          static_cast<int>(rows), D, sc.s, kKeyBlock);
    } else {
      load_rows(k_base + j0 * k_stride, k_stride, n, D, sc.k);
      load_rows(v_base + j0 * v_stride, v_stride, n, D, sc.v);
      MatrixMap K(sc.k, n, D);
      if (rows <= kLazyRows) {
        S.noalias() = Q.lazyProduct(K.transpose());
      } else {
        S.noalias() = Q * K.transpose();
      }
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      auto srow = S.row(r).array();
      const std::int64_t vis_lo = std::max<std::int64_t>(sc.lo[r] - j0, 0);
      const std::int64_t vis_hi = std::min<std::int64_t>(sc.hi[r] - j0, n);
      if (vis_lo >= vis_hi) {  // nothing visible in this block for this row
        if (logits.present()) logits.mask(r, j0, j0 + n);
        srow.setZero();
        continue;
      }
      for (std::int64_t c = 0; c < vis_lo; ++c) srow(c) = kNegInf;
      for (std::int64_t c = vis_hi; c < n; ++c) srow(c) = kNegInf;
      if (logits.present()) logits.put(r, j0, sc.s + r * kKeyBlock, n);
      const float m_new = std::max(sc.m[r], srow.segment(vis_lo, vis_hi - vis_lo).maxCoeff());
      const float alpha = std::exp(sc.m[r] - m_new);  // 0 when the running max was -inf
      srow = (srow - m_new).exp();
      sc.l[r] = sc.l[r] * alpha + srow.sum();
      Acc.row(r) *= alpha;
      sc.m[r] = m_new;
    }
    if (direct) {
      dense_block::values(v_base + j0 * v_stride, v_stride, static_cast<int>(n), static_cast<int>(D), sc.s,
                          static_cast<int>(rows), kKeyBlock, sc.acc, D);
    } else {
      Acc.noalias() += S * MatrixMap(sc.v, n, D);
    }
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    Acc.row(r) /= sc.l[r];
    lse_out[r] = sc.m[r] + std::log(sc.l[r]);
  }
}

// Shared driver: for each (b, kv head, block of query tokens) gather the group's query rows,
// attend, scatter. `range(b, t, &lo, &hi)` gives query token t's visible keys; `kv(b, kh)`
// returns {k_base, k_row_stride, v_base, v_row_stride} for that head. With `logits` present, row
// f = t * G + g gets the raw logits of every key some query token of b sees (-inf where it does
// not see it); other keys are not written (the CUDA kernel's contract, dense_args.hpp).
template <class T, class TQ, class RangeFn, class KvFn>
void run_blocks(const TensorView<const TQ, 4>& q, const TensorView<TQ, 4>& o, const TensorView<float, 3>& lse,
                const attention::AttentionDims& d, float scale, const Scratch& sc, RangeFn range, KvFn kv,
                const LogitOut& logits = {}) {
  const std::int64_t G = d.group(), D = d.head_dim;
  for (std::int64_t b = 0; b < d.batch; ++b) {
    std::int64_t b_lo = 0, b_hi = 0;  // keys some query token of b sees
    for (std::int64_t t = 0; t < d.q_tokens; ++t) {
      std::int64_t lo = 0, hi = 0;
      range(b, t, &lo, &hi);
      b_lo = t == 0 ? lo : std::min(b_lo, lo);
      b_hi = t == 0 ? hi : std::max(b_hi, hi);
    }
    for (std::int64_t kh = 0; kh < d.kv_heads; ++kh) {
      const auto head = kv(b, kh);
      for (std::int64_t t0 = 0; t0 < d.q_tokens; t0 += kQueryBlock) {
        const std::int64_t nt = std::min(kQueryBlock, d.q_tokens - t0);
        const std::int64_t rows = nt * G;
        for (std::int64_t t = 0; t < nt; ++t) {
          std::int64_t lo = 0, hi = 0;
          range(b, t0 + t, &lo, &hi);
          for (std::int64_t g = 0; g < G; ++g) {
            const std::int64_t r = t * G + g;
            sc.lo[r] = lo;
            sc.hi[r] = hi;
            float* qr = sc.q + r * D;
            to_float_n(q.ptr(b, t0 + t, kh * G + g), D, qr);
            for (std::int64_t x = 0; x < D; ++x) qr[x] *= scale;
          }
        }
        const LogitRows lr = logits.rows(b, kh, t0 * G);
        attend_rows(sc, rows, D, head.k, head.k_stride, head.v, head.v_stride, sc.lse, lr);
        if (lr.present()) {  // keys other token blocks see, outside this block's [kmin, kmax)
          const std::int64_t kmin = *std::min_element(sc.lo, sc.lo + rows);
          const std::int64_t kmax = *std::max_element(sc.hi, sc.hi + rows);
          for (std::int64_t r = 0; r < rows; ++r) {
            lr.mask(r, b_lo, kmin);
            lr.mask(r, kmax, b_hi);
          }
        }
        for (std::int64_t t = 0; t < nt; ++t) {
          for (std::int64_t g = 0; g < G; ++g) {
            const std::int64_t r = t * G + g;
            from_float_n(sc.acc + r * D, D, o.ptr(b, t0 + t, kh * G + g));
            if (lse.present()) *lse.ptr(b, t0 + t, kh * G + g) = sc.lse[r];
          }
        }
      }
    }
  }
}

template <class T>
struct KvHead {
  const T* k;
  std::int64_t k_stride;
  const T* v;
  std::int64_t v_stride;
};

template <class W, class T, class TQ>
Status plan_decode(W& ws, const attention::DecodeArgs<T, TQ>& a, attention::AttentionDims* d, Scratch* sc) {
  MEMATTN_RETURN_IF_ERROR(attention::validate_decode(a, a.seq_lens, d));
  plan(ws, max_rows(d->q_tokens, d->group()), d->head_dim, sc);
  return Status::kSuccess;
}

template <class W, class T>
Status plan_prefill(W& ws, const attention::PrefillArgs<T>& a, attention::AttentionDims* d, Scratch* sc) {
  MEMATTN_RETURN_IF_ERROR(attention::validate_prefill(a, d));
  plan(ws, max_rows(d->q_tokens, d->group()), d->head_dim, sc);
  return Status::kSuccess;
}

// Runs `run(ptr, bytes)` over a freshly allocated, aligned scratch of `bytes`.
template <class RunFn>
Status with_owned_workspace(std::size_t bytes, RunFn run) {
  HostWorkspace ws(bytes);
  return run(ws.data(), bytes);
}

}  // namespace detail

// ---- decode ---------------------------------------------------------------------------------

template <class T, class TQ>
Status dense_decode_workspace_size(const attention::DecodeArgs<T, TQ>& a, std::size_t* bytes) {
  if (!bytes) return Status::kErrorNullPointer;
  Workspace ws;
  attention::AttentionDims d;
  detail::Scratch sc;
  MEMATTN_RETURN_IF_ERROR(detail::plan_decode(ws, a, &d, &sc));
  *bytes = ws.required();
  return Status::kSuccess;
}

template <class T, class TQ>
Status dense_decode(const attention::DecodeArgs<T, TQ>& a, void* workspace, std::size_t workspace_bytes) {
  Workspace ws(workspace, workspace_bytes);
  attention::AttentionDims d;
  detail::Scratch sc;
  MEMATTN_RETURN_IF_ERROR(detail::plan_decode(ws, a, &d, &sc));
  MEMATTN_RETURN_IF_ERROR(ws.status());
  const float scale = attention::resolve_scale(a.scale, d.head_dim);
  const std::int64_t Tq = d.q_tokens;
  auto range = [&](std::int64_t b, std::int64_t t, std::int64_t* lo, std::int64_t* hi) {
    const std::int64_t L = a.seq_lens ? a.seq_lens[b] : d.kv_capacity;
    const std::int64_t pos = L - Tq + t;
    *hi = pos + 1;
    *lo = a.window > 0 ? std::max<std::int64_t>(0, pos - a.window + 1) : 0;
  };
  auto kv = [&](std::int64_t b, std::int64_t kh) {
    return detail::KvHead<T>{a.k_cache.ptr(b, kh, 0), a.k_cache.stride[2], a.v_cache.ptr(b, kh, 0),
                             a.v_cache.stride[2]};
  };
  detail::run_blocks<T>(a.q, a.o, a.lse, d, scale, sc, range, kv, detail::LogitOut{a.scores, a.scores_half});
  return Status::kSuccess;
}

// Convenience: allocates its own scratch.
template <class T, class TQ>
Status dense_decode(const attention::DecodeArgs<T, TQ>& a) {
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(dense_decode_workspace_size(a, &bytes));
  return detail::with_owned_workspace(bytes, [&](void* p, std::size_t n) { return dense_decode(a, p, n); });
}

// ---- prefill --------------------------------------------------------------------------------

template <class T>
Status dense_prefill_workspace_size(const attention::PrefillArgs<T>& a, std::size_t* bytes) {
  if (!bytes) return Status::kErrorNullPointer;
  Workspace ws;
  attention::AttentionDims d;
  detail::Scratch sc;
  MEMATTN_RETURN_IF_ERROR(detail::plan_prefill(ws, a, &d, &sc));
  *bytes = ws.required();
  return Status::kSuccess;
}

template <class T>
Status dense_prefill(const attention::PrefillArgs<T>& a, void* workspace, std::size_t workspace_bytes) {
  Workspace ws(workspace, workspace_bytes);
  attention::AttentionDims d;
  detail::Scratch sc;
  MEMATTN_RETURN_IF_ERROR(detail::plan_prefill(ws, a, &d, &sc));
  MEMATTN_RETURN_IF_ERROR(ws.status());
  const float scale = attention::resolve_scale(a.scale, d.head_dim);
  auto range = [&](std::int64_t, std::int64_t t, std::int64_t* lo, std::int64_t* hi) {
    *hi = t + 1;
    *lo = a.window > 0 ? std::max<std::int64_t>(0, t - a.window + 1) : 0;
  };
  auto kv = [&](std::int64_t b, std::int64_t kh) {
    return detail::KvHead<T>{a.k.ptr(b, 0, kh), a.k.stride[1], a.v.ptr(b, 0, kh), a.v.stride[1]};
  };
  detail::run_blocks<T>(a.q, a.o, a.lse, d, scale, sc, range, kv);
  return Status::kSuccess;
}

template <class T>
Status dense_prefill(const attention::PrefillArgs<T>& a) {
  std::size_t bytes = 0;
  MEMATTN_RETURN_IF_ERROR(dense_prefill_workspace_size(a, &bytes));
  return detail::with_owned_workspace(bytes, [&](void* p, std::size_t n) { return dense_prefill(a, p, n); });
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
