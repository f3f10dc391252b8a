// Decay of linear attention: S_t = λ_h S_{t-1} + φ(k_t) v_tᵀ with λ_h = exp(-s_h), s_h >= 0 the
// fp32 per-state-head decay rate the caller passes (no schedule is baked in). This header holds
// the schedule helpers of popular models and the rules for evaluating decay powers
// (../shared/specs/linear-attention.md §1.3, §1.5):
//  * every power is λ^m = exp2(g2·m) with g2 = -s·log2(e) computed once in fp32 and m an integer
//    in [0, C] (never repeated multiplication, never pow(λ_fp32, m), never a negative exponent:
//    λ^{i-j} is never factorised as λ^i·λ^{-j}, which overflows for large s);
//  * accumulated state decays in expm1 form: μ_m = -expm1(-m·s), S <- fma(-μ_m, S, S).
// Convention (§1.6, MiniMax/fla/cuLA): inside a chunk the query factor is λ^{i+1}, the key
// factor λ^{n_c-1-j}, the chunk factor λ^{n_c}; the carried state is the exact recurrent state.
#pragma once

#include <cmath>
#include <vector>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace linear {

constexpr int kChunk = 64;               // chunk length C of the Lightning form
constexpr float kMaxDecayRate = 80.f;    // beyond this every power underflows fp32
constexpr float kLog2eF = 1.4426950408889634f;

// g2 = -s·log2(e): λ^m = exp2(g2·m).
MEMATTN_HOST_DEVICE float decay_log2(float s) { return -s * kLog2eF; }
MEMATTN_HOST_DEVICE float decay_pow(float g2, int m) { return exp2f(g2 * static_cast<float>(m)); }
// μ_m = 1 - λ^m = -expm1(-m·s), so λ^m·S = S - μ_m·S = fma(-μ_m, S, S).
MEMATTN_HOST_DEVICE float decay_mu(float s, int m) { return -expm1f(-s * static_cast<float>(m)); }

// True when s is an acceptable decay rate: finite and in [0, 80].
MEMATTN_HOST_DEVICE bool valid_decay_rate(float s) { return s >= 0.f && s <= kMaxDecayRate; }

// ---- schedules (host; computed in double, rounded once to float) ------------------------------

// MiniMax-01 (HF modular_minimax.py get_slope_rate): s_h = 2^{-8(h+1)/H}·(1 - l/(L-1+1e-5) + 1e-5).
inline std::vector<float> decay_rates_minimax(int num_heads, int layer, int num_layers) {
  std::vector<float> s(num_heads > 0 ? static_cast<std::size_t>(num_heads) : 0u);
  const double factor = 1.0 - static_cast<double>(layer) / (static_cast<double>(num_layers) - 1.0 + 1e-5) + 1e-5;
  for (int h = 0; h < num_heads; ++h)
    s[static_cast<std::size_t>(h)] =
        static_cast<float>(std::exp2(-8.0 * (h + 1) / static_cast<double>(num_heads)) * factor);
  return s;
}

// TransNormerLLM / fla chunk_lightning_attn: s_h = (8/H)·(1 - l/L)·h (head 0 has no decay).
inline std::vector<float> decay_rates_tnl(int num_heads, int layer, int num_layers) {
  std::vector<float> s(num_heads > 0 ? static_cast<std::size_t>(num_heads) : 0u);
  const double f = 8.0 / num_heads * (1.0 - static_cast<double>(layer) / num_layers);
  for (int h = 0; h < num_heads; ++h) s[static_cast<std::size_t>(h)] = static_cast<float>(f * h);
  return s;
}

// RetNet: γ_h = 1 - 2^{-5-h}, s_h = -log(γ_h) = -log1p(-2^{-5-h}).
inline std::vector<float> decay_rates_retnet(int num_heads) {
  std::vector<float> s(num_heads > 0 ? static_cast<std::size_t>(num_heads) : 0u);
  for (int h = 0; h < num_heads; ++h) s[static_cast<std::size_t>(h)] = static_cast<float>(-std::log1p(-std::exp2(-5.0 - h)));
  return s;
}

}  // namespace linear
MEMATTN_NAMESPACE_END
