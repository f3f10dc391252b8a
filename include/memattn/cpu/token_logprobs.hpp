// Token log-probabilities from a chunk of logits (spec eviction.md §3.9 / §4.5, SirLLM's signal):
//   out[i] = log p(next[i] | row i) = logits[i][next[i]] - logsumexp(logits[i])
// one row at a time (streaming over rows, nothing but the output kept), max-shifted log-sum-exp
// accumulated in fp64, result fp32: finite for any finite logit gap (RG-16: the reference's
// -log(softmax) in the model dtype underflows to inf at a gap of ~100 in fp16/bf16).
// Alignment: the engine hands row i = the logits that predict token i + 1, so log p(x_j | x_<j)
// of a chunk's token j comes from the previous row (the previous chunk's last row for j = 0; a
// sequence's first token has no predictor and gets NaN -- SirLLM then uses its rule for it).
// Parity (RG-23): the reference gathers id x_i from row i and shifts the list by one, so token i
// stores log p(x_{i-1} | x_{<=i-1}); reference_alignment() reproduces that list.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

// logits: rows x vocab, row stride `stride`; next[rows]: ids in [0, vocab). Non-finite logits ->
// kErrorNonFinite, bad ids -> kErrorInvalidArgument, nothing written.
inline Status token_logprobs(const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                             const std::int32_t* next, float* out) {
  if (rows == 0) return Status::kSuccess;
  if (logits == nullptr || next == nullptr || out == nullptr) return Status::kErrorNullPointer;
  if (rows < 0 || vocab <= 0 || stride < vocab) return Status::kErrorInvalidShape;
  for (std::int64_t i = 0; i < rows; ++i) {
    if (next[i] < 0 || next[i] >= vocab) return Status::kErrorInvalidArgument;
    const float* r = logits + i * stride;
    for (std::int64_t v = 0; v < vocab; ++v)
      if (!std::isfinite(r[v])) return Status::kErrorNonFinite;
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    const float* r = logits + i * stride;
    float m = r[0];
    for (std::int64_t v = 1; v < vocab; ++v) m = r[v] > m ? r[v] : m;
    double s = 0;
    for (std::int64_t v = 0; v < vocab; ++v) s += std::exp(static_cast<double>(r[v]) - m);
    out[i] = static_cast<float>(static_cast<double>(r[next[i]]) - m - std::log(s));
  }
  return Status::kSuccess;
}

// SirLLM reference alignment (RG-23) over a whole sequence of n tokens with logits rows 0..n-1:
// out[0] = NaN, out[i] = log softmax(row i-1)[ids[i-1]] for i >= 1.
inline Status reference_alignment(const float* logits, std::int64_t n, std::int64_t vocab, std::int64_t stride,
                                  const std::int32_t* ids, float* out) {
  if (n == 0) return Status::kSuccess;
  if (out == nullptr) return Status::kErrorNullPointer;
  if (n > 1) MEMATTN_RETURN_IF_ERROR(token_logprobs(logits, n - 1, vocab, stride, ids, out + 1));
  out[0] = std::numeric_limits<float>::quiet_NaN();
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
