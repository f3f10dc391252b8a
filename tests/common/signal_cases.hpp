// SirLLM / EpiCache cases for the GPU test and the emulated one (tests/emu): logits rows with
// 1e4 gaps and the log-prob tolerance vs the CPU's fp64 (2e-5 + 1e-6 |x|); SirLLM chunks of
// log-probs with -inf / NaN / 0 / no finite value; EpiCache probe-score cases (strided keys and
// probes, lengths around the 64-key tile, probe-less episodes, huge logits) checked against the
// CPU cache's window_colsum (host bridge) and an fp64 oracle (2e-4 relative + 1e-6); routing
// scenarios (a clustered stream, or duplicate / zero centroids) vs OnlineKMeans::nearest (host
// bridge) and the fp64 rule on fp32 values. With them the checks both run: log-prob rows, the
// poisoned logits' NaN rows, a SirLLM turn's chunk append, parameters, CPU mirror (on_chunk,
// select_keep, compact_rows) and the kernels' state / keep lists against it, and the inconsistent
// segment case.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gpu/evict_signals_cpu_bridge.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/token_logprobs.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/sirllm.hpp"
#include "memattn/kernels/evict_episode.cuh"
#include "memattn/kernels/evict_select.cuh"
#include "memattn/kernels/evict_sirllm.cuh"

namespace memattn_test {

// ---- token log-probs ------------------------------------------------------------------------

inline bool logprob_close(float gpu, float cpu) {
  return std::fabs(static_cast<double>(gpu) - cpu) <= 2e-5 + 1e-6 * std::fabs(static_cast<double>(cpu));
}

// rows x vocab logits (stride, first element at `offset` floats into the buffer) with the gap
// rows: row 0 one logit at +1e4, row 1 everything at -1e4 but one 0, row 2 the id at the +1e4
// logit; NaN padding past vocab (must not be read).
struct LogitCase {
  std::int64_t rows, vocab, stride, offset;
  std::vector<float> buf;
  std::vector<std::int32_t> ids;
  const float* host() const { return buf.data() + offset; }
};
inline LogitCase make_logits(std::int64_t rows, std::int64_t vocab, std::int64_t stride, std::int64_t offset, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 3.f);
  LogitCase c{rows, vocab, stride, offset, {}, {}};
  c.buf.assign(static_cast<std::size_t>(offset + rows * stride), -7.f);  // padding must not be read
  c.ids.resize(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = c.buf.data() + offset + r * stride;
    for (std::int64_t v = 0; v < vocab; ++v) row[v] = nd(rng);
    c.ids[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(rng() % vocab);
    const std::int64_t hot = static_cast<std::int64_t>(rng() % vocab);
    if (r % 4 == 0) row[hot] = 1e4f;
    if (r % 4 == 1) {
      for (std::int64_t v = 0; v < vocab; ++v) row[v] = -1e4f;
      row[hot] = 0.f;
      if (vocab > 1 && c.ids[static_cast<std::size_t>(r)] == hot) c.ids[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((hot + 1) % vocab);
    }
    if (r % 4 == 2) {
      row[hot] = 1e4f;
      c.ids[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(hot);
    }
    for (std::int64_t v = vocab; v < stride; ++v) row[v] = std::numeric_limits<float>::quiet_NaN();
  }
  return c;
}

// Kernel log-probs vs the CPU's: finite and within the tolerance.
inline void check_logprob_rows(const std::vector<float>& out, const std::vector<float>& ref) {
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CAPTURE(i, out[i], ref[i]);
    REQUIRE(std::isfinite(out[i]));
    REQUIRE(logprob_close(out[i], ref[i]));
  }
}

// Kernel reference alignment vs the CPU's: row 0 NaN (no previous token), the rest within the
// tolerance.
inline void check_alignment_rows(const std::vector<float>& out, const std::vector<float>& ref) {
  CHECK(std::isnan(out[0]));
  for (std::size_t i = 1; i < ref.size(); ++i) {
    CAPTURE(i, out[i], ref[i]);
    REQUIRE(logprob_close(out[i], ref[i]));
  }
}

// 8 x 512 logits with NaN (row 1), +inf (row 3), -inf (row 6) and bad ids (rows 4, 5).
inline LogitCase poisoned_logits() {
  LogitCase c = make_logits(8, 512, 512, 0, 77);
  c.buf[1 * 512 + 17] = std::numeric_limits<float>::quiet_NaN();
  c.buf[3 * 512 + 511] = std::numeric_limits<float>::infinity();
  c.buf[6 * 512 + 0] = -std::numeric_limits<float>::infinity();
  c.ids[4] = -1;
  c.ids[5] = 512;
  return c;
}

// The kernel's rows of poisoned_logits(): NaN where poisoned, the CPU's value elsewhere.
inline void check_poisoned_rows(const LogitCase& c, const std::vector<float>& out) {
  for (int r : {1, 3, 4, 5, 6}) CHECK(std::isnan(out[static_cast<std::size_t>(r)]));
  for (int r : {0, 2, 7}) {
    float ref = 0.f;
    REQUIRE(memattn::cpu::token_logprobs(c.host() + r * 512, 1, 512, 512, c.ids.data() + r, &ref) == memattn::Status::kSuccess);
    CHECK(logprob_close(out[static_cast<std::size_t>(r)], ref));
  }
}

// ---- SirLLM turns ---------------------------------------------------------------------------

// Turn configurations: decay per turn, turn length (0: every chunk), budget, sinks, recent window,
// segments per sequence, tie rule.
struct SirllmTurnConfig {
  float decay;
  std::int64_t turn;
  int budget, sink, recent, spq;
  memattn::evict::TieBreak tie;
};
inline std::vector<SirllmTurnConfig> sirllm_turn_configs() {
  using memattn::evict::TieBreak;
  return {{1.f, 0, 60, 4, 0, 1, TieBreak::kPreferEarlier},
          {0.7f, 0, 100, 4, 8, 2, TieBreak::kPreferEarlier},
          {0.9f, 7, 37, 0, 3, 3, TieBreak::kPreferLater},
          {0.f, 3, 20, 2, 0, 1, TieBreak::kPreferEarlier},
          {0.5f, 0, 300, 4, 0, 2, TieBreak::kPreferEarlier}};
}

// One chunk per sequence b of a turn: cnt[b] tokens from position first[b] = len[b] (step 0: 40..89,
// later 0..39; sequence 1 at step 3 none) with log-probs lp[b * max_chunk + i]: -inf, NaN and 0 in
// some, no finite value in sequence 2 at step 5, and a NaN for a sequence's first token.
struct SirllmChunk {
  std::vector<std::int32_t> cnt, first;
  std::vector<float> lp;
};
inline SirllmChunk make_sirllm_chunk(std::mt19937& rng, int step, const std::vector<std::int64_t>& len, int max_chunk) {
  const int B = static_cast<int>(len.size());
  SirllmChunk c;
  c.cnt.resize(static_cast<std::size_t>(B));
  c.first.resize(static_cast<std::size_t>(B));
  c.lp.assign(static_cast<std::size_t>(B * max_chunk), std::numeric_limits<float>::quiet_NaN());
  for (int b = 0; b < B; ++b) {
    std::int32_t& cnt = c.cnt[static_cast<std::size_t>(b)];
    cnt = step == 0 ? 40 + static_cast<std::int32_t>(rng() % 50) : static_cast<std::int32_t>(rng() % 40);
    if (b == 1 && step == 3) cnt = 0;  // an empty chunk: nothing happens (the CPU skips on_chunk)
    c.first[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(len[static_cast<std::size_t>(b)]);
    for (int i = 0; i < cnt; ++i) {
      const int r = static_cast<int>(rng() % 20);
      float x = -std::uniform_real_distribution<float>(0.f, 12.f)(rng);
      if (r == 0) x = -std::numeric_limits<float>::infinity();
      if (r == 1) x = std::numeric_limits<float>::quiet_NaN();
      if (r == 2) x = 0.f;
      if (b == 2 && step == 5) x = std::numeric_limits<float>::quiet_NaN();  // no finite value: max = 0
      c.lp[static_cast<std::size_t>(b * max_chunk + i)] = x;
    }
    if (len[static_cast<std::size_t>(b)] == 0 && cnt > 0) c.lp[static_cast<std::size_t>(b * max_chunk)] = std::numeric_limits<float>::quiet_NaN();
  }
  return c;
}

inline memattn::evict::Surprisal::Params surprisal_params(const SirllmTurnConfig& cfg) {
  memattn::evict::Surprisal::Params sp;
  sp.decay = cfg.decay;
  sp.turn = cfg.turn;
  return sp;
}

inline memattn::evict::Protection protection(const SirllmTurnConfig& cfg) {
  memattn::evict::Protection pr;
  pr.n_sink = cfg.sink;
  pr.n_recent = cfg.recent;
  return pr;
}

inline bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// A turn's segments (spq per sequence, `stride` slots each): the CPU mirror's state and positions
// and the kernels' copies, sizes shared.
struct SirllmTurnState {
  std::int64_t stride;
  int S, spq;
  std::vector<float> st, gst;
  std::vector<std::int32_t> pos, gpos, size, tcur;
  SirllmTurnState(int S_, int spq_, std::int64_t stride_)
      : stride(stride_), S(S_), spq(spq_), st(static_cast<std::size_t>(S_ * stride_), 0.f), gst(st),
        pos(static_cast<std::size_t>(S_ * stride_), 0), gpos(pos), size(static_cast<std::size_t>(S_), 0),
        tcur(static_cast<std::size_t>(S_), 0) {}

  // Append the chunk: positions to both sides, the CPU's new state 0 and the kernels' garbage (the
  // update must overwrite it); sizes and t_cur advance.
  void append(const SirllmChunk& chunk) {
    for (int s = 0; s < S; ++s) {
      const std::size_t b = static_cast<std::size_t>(s / spq);
      for (int i = 0; i < chunk.cnt[b]; ++i) {
        const std::size_t at = static_cast<std::size_t>(s * stride + size[static_cast<std::size_t>(s)] + i);
        pos[at] = gpos[at] = chunk.first[b] + i;
        st[at] = 0.f;
        gst[at] = -555.f;
      }
      size[static_cast<std::size_t>(s)] += chunk.cnt[b];
      tcur[static_cast<std::size_t>(s)] = chunk.first[b] + chunk.cnt[b] - 1;
    }
  }

  // The CPU: on_chunk per segment with a non-empty chunk (as EvictKvCache::end_chunk).
  void cpu_update(const memattn::evict::Surprisal::Params& sp, const SirllmChunk& chunk, int max_chunk) {
    for (int s = 0; s < S; ++s) {
      const std::size_t b = static_cast<std::size_t>(s / spq);
      if (chunk.cnt[b] == 0) continue;
      memattn::evict::TokenSignals ts;
      ts.logprobs = chunk.lp.data() + b * static_cast<std::size_t>(max_chunk);
      ts.count = chunk.cnt[b];
      ts.first_pos = chunk.first[b];
      const std::int64_t sz = size[static_cast<std::size_t>(s)];
      memattn::evict::Surprisal::on_chunk(sp, st.data() + s * stride, pos.data() + s * stride, sz - chunk.cnt[b], sz, ts);
    }
  }

  // The kernels' updated state `got` bit-identical to the CPU's over every segment's size.
  void check_state(const std::vector<float>& got) const {
    for (int s = 0; s < S; ++s)
      for (std::int32_t j = 0; j < size[static_cast<std::size_t>(s)]; ++j) {
        const std::size_t at = static_cast<std::size_t>(s * stride + j);
        CAPTURE(s, j, got[at], st[at]);
        REQUIRE(same_bits(got[at], st[at]));
      }
  }

  // cpu::select_keep per segment vs the kernels' keep lists (identical) and counts; then the CPU's
  // compaction (evict_gather's) of its state and positions, and of the kernels' copies when
  // `compact_kernel_side` (their compaction is not a kernel's); sizes shrink to the counts.
  void check_select(const SirllmTurnConfig& cfg, const memattn::evict::Protection& pr, const std::vector<std::int32_t>& gkeep,
                    const std::vector<std::int32_t>& gcount, bool compact_kernel_side) {
    std::vector<std::uint64_t> scratch(static_cast<std::size_t>(stride));
    std::vector<std::int32_t> keep(static_cast<std::size_t>(stride));
    for (int s = 0; s < S; ++s) {
      std::int64_t count = 0;
      const std::int64_t sz = size[static_cast<std::size_t>(s)];
      REQUIRE(memattn::cpu::select_keep(st.data() + s * stride, pos.data() + s * stride, sz, cfg.budget, tcur[static_cast<std::size_t>(s)],
                                        pr, cfg.tie, scratch.data(), keep.data(), &count) == memattn::Status::kSuccess);
      REQUIRE(gcount[static_cast<std::size_t>(s)] == count);
      for (std::int64_t i = 0; i < count; ++i) REQUIRE(gkeep[static_cast<std::size_t>(s * stride + i)] == keep[static_cast<std::size_t>(i)]);
      CHECK(count == std::min<std::int64_t>(sz, cfg.budget));  // sinks + recent fit in every budget here
      memattn::cpu::compact_rows(st.data() + s * stride, 1, keep.data(), count);
      memattn::cpu::compact_rows(pos.data() + s * stride, 1, keep.data(), count);
      if (compact_kernel_side) {
        memattn::cpu::compact_rows(gst.data() + s * stride, 1, keep.data(), count);
        memattn::cpu::compact_rows(gpos.data() + s * stride, 1, keep.data(), count);
      }
      size[static_cast<std::size_t>(s)] = static_cast<std::int32_t>(count);
    }
  }
};

// sirllm_update's parameters for a turn of `t` at the given (host or device) pointers.
inline memattn::kernels::SirllmUpdateParams sirllm_update_params(const SirllmTurnConfig& cfg, const SirllmTurnState& t, float* state,
                                                                 std::int32_t* pos, const std::int32_t* size, const float* lp,
                                                                 int max_chunk, const std::int32_t* cnt, const std::int32_t* first,
                                                                 std::int32_t* error) {
  memattn::kernels::SirllmUpdateParams u;
  u.state = state;
  u.pos = pos;
  u.size = size;
  u.stride = t.stride;
  u.segments = t.S;
  u.segments_per_sequence = cfg.spq;
  u.logprobs = lp;
  u.logprob_stride = max_chunk;
  u.count = cnt;
  u.first_pos = first;
  u.decay = cfg.decay;
  u.turn = cfg.turn;
  u.error = error;
  return u;
}

// evict_select's parameters over a turn's segments (scores: the SirLLM state).
inline memattn::kernels::EvictSelectParams sirllm_select_params(const SirllmTurnConfig& cfg, const memattn::evict::Protection& pr,
                                                                const SirllmTurnState& t, const float* state, const std::int32_t* pos,
                                                                const std::int32_t* size, const std::int32_t* budget,
                                                                const std::int32_t* tcur, std::int32_t* keep, std::int32_t* keep_count,
                                                                std::int32_t* error) {
  memattn::kernels::EvictSelectParams sel;
  sel.scores = state;
  sel.pos = pos;
  sel.len = size;
  sel.budget = budget;
  sel.t_cur = tcur;
  sel.stride = t.stride;
  sel.segments = t.S;
  sel.protect = pr;
  sel.tie = cfg.tie;
  sel.keep = keep;
  sel.keep_count = keep_count;
  sel.error = error;
  return sel;
}

// sirllm_update's inconsistent segments: 3 segments of one sequence each (stride 8); segment 1:
// size < count; segment 2: a position outside the chunk. After the update (decay 0.5): flag 1,
// segment 0 decayed and its position 4 set to -lp, segments 1 and 2 untouched.
struct SirllmBadSegments {
  std::vector<float> st = std::vector<float>(24, 2.f);
  std::vector<std::int32_t> pos = {0, 1, 2, 3, 4, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 9, 4, 0, 0, 0};
  std::vector<std::int32_t> size = {6, 2, 5}, cnt = {2, 3, 2}, first = {4, 0, 3};
  std::vector<float> lp = {-1.f, -2.f, -3.f, -4.f, -5.f, -6.f, -7.f, -8.f, -9.f};

  static memattn::kernels::SirllmUpdateParams params(float* state, std::int32_t* pos, const std::int32_t* size, const float* lp,
                                                     const std::int32_t* cnt, const std::int32_t* first, std::int32_t* error) {
    memattn::kernels::SirllmUpdateParams u;
    u.state = state;
    u.pos = pos;
    u.size = size;
    u.stride = 8;
    u.segments = 3;
    u.logprobs = lp;
    u.logprob_stride = 3;
    u.count = cnt;
    u.first_pos = first;
    u.decay = 0.5f;
    u.error = error;
    return u;
  }
  static void check(const std::vector<float>& out, std::int32_t err) {
    CHECK(err == 1);
    for (int j = 0; j < 4; ++j) CHECK(out[static_cast<std::size_t>(j)] == 1.f);  // decayed
    CHECK(out[4] == 1.f);                                                      // -lp of position 4
    CHECK(out[5] == 2.f);
    for (int j = 8; j < 24; ++j) CHECK(out[static_cast<std::size_t>(j)] == 2.f);  // untouched
  }
};

// ---- EpiCache probe scores ------------------------------------------------------------------

// fp64 oracle of the same scores: s_j = R_g sum_i softmax_j(scale q_{i,g} . k_j) over all N keys.
inline std::vector<double> oracle_scores(const std::vector<float>& q /*[P][G][D]*/, int P, int G, int D,
                                         const std::vector<float>& k /*[N][D]*/, int N, float scale, int reduce) {
  std::vector<double> col(static_cast<std::size_t>(G) * N, 0.0), s(static_cast<std::size_t>(N));
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < P; ++i) {
      double m = -INFINITY;
      for (int j = 0; j < N; ++j) {
        double acc = 0.0;
        for (int d = 0; d < D; ++d)
          acc += static_cast<double>(q[static_cast<std::size_t>((i * G + g) * D + d)]) * k[static_cast<std::size_t>(j * D + d)];
        s[static_cast<std::size_t>(j)] = acc * scale;
        m = std::max(m, s[static_cast<std::size_t>(j)]);
      }
      double l = 0.0;
      for (int j = 0; j < N; ++j) l += std::exp(s[static_cast<std::size_t>(j)] - m);
      for (int j = 0; j < N; ++j) col[static_cast<std::size_t>(g * N + j)] += std::exp(s[static_cast<std::size_t>(j)] - m) / l;
    }
  std::vector<double> out(static_cast<std::size_t>(N), 0.0);
  if (P == 0) return out;
  for (int j = 0; j < N; ++j) {
    double acc = col[static_cast<std::size_t>(j)];
    for (int g = 1; g < G; ++g)
      acc = reduce == 1 ? std::max(acc, col[static_cast<std::size_t>(g * N + j)]) : acc + col[static_cast<std::size_t>(g * N + j)];
    out[static_cast<std::size_t>(j)] = reduce == 0 ? acc / G : acc;
  }
  return out;
}

inline bool score_close(double gpu, double ref) { return std::fabs(gpu - ref) <= 2e-4 * std::fabs(ref) + 1e-6; }

struct ScoreShape {
  int E, Hkv, G, D, max_tokens, max_probe, reduce;
  bool huge;  // probe rows = 1000 x a key: logit gaps of thousands
};

// E episodes x Hkv heads of keys (row stride D + 8, segment stride padded) and E probes
// [max_probe][Hq][D] (padded per episode); segment lengths max_tokens, 1, 64, 65, 127, 63, then
// random; probe counts max_probe, 0 (scores 0), then random.
template <class TK, class TQ>
struct EpisodeScoreCase {
  int S, Hq, D;
  std::int64_t row_stride, seg_stride, q_tok, q_seg, score_stride;
  float scale;
  std::vector<TK> k;
  std::vector<TQ> q;
  std::vector<std::int32_t> len, pc;

  EpisodeScoreCase(const ScoreShape& sh, unsigned seed)
      : S(sh.E * sh.Hkv), Hq(sh.Hkv * sh.G), D(sh.D), row_stride(sh.D + 8),
        seg_stride(static_cast<std::int64_t>(sh.max_tokens) * (sh.D + 8) + 3), q_tok(static_cast<std::int64_t>(sh.Hkv * sh.G) * sh.D),
        q_seg(sh.max_probe * q_tok + 5), score_stride(sh.max_tokens + 2), scale(1.f / std::sqrt(static_cast<float>(sh.D))) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    k.resize(static_cast<std::size_t>(S * seg_stride));
    for (auto& x : k) x = memattn::from_float<TK>(nd(rng));
    len.resize(static_cast<std::size_t>(S));
    pc.resize(static_cast<std::size_t>(sh.E));
    const int lens[] = {sh.max_tokens, 1, 64, 65, 127, 63};
    for (int s = 0; s < S; ++s)
      len[static_cast<std::size_t>(s)] = s < 6 ? std::min(sh.max_tokens, lens[s]) : 1 + static_cast<int>(rng() % sh.max_tokens);
    for (int o = 0; o < sh.E; ++o)
      pc[static_cast<std::size_t>(o)] = o == 0 ? sh.max_probe : o == 1 ? 0 : 1 + static_cast<int>(rng() % sh.max_probe);
    q.resize(static_cast<std::size_t>(sh.E * q_seg));
    for (auto& x : q) x = memattn::from_float<TQ>(nd(rng));
    if (sh.huge) {  // probe row (i, head) = 1000 x a key of the head's segment
      for (int o = 0; o < sh.E; ++o)
        for (int i = 0; i < sh.max_probe; ++i)
          for (int hq = 0; hq < Hq; ++hq) {
            const int s = o * sh.Hkv + hq / sh.G;
            const int j = static_cast<int>(rng() % len[static_cast<std::size_t>(s)]);
            for (int d = 0; d < D; ++d)
              q[static_cast<std::size_t>(o * q_seg + i * q_tok + hq * D + d)] =
                  memattn::from_float<TQ>(1000.f * memattn::to_float(k[static_cast<std::size_t>(s * seg_stride + j * row_stride + d)]));
          }
    }
  }
};

// The probe-score parameters of case c held at k, q, len, pc (the case's layouts), scores to
// `scores` [S][score_stride].
template <class TK, class TQ>
memattn::kernels::EpisodeScoreParams<TK, TQ> episode_params(const ScoreShape& sh, const EpisodeScoreCase<TK, TQ>& c, const TK* k,
                                                            const TQ* q, const std::int32_t* len, const std::int32_t* pc,
                                                            float* scores, std::int32_t* error) {
  memattn::kernels::EpisodeScoreParams<TK, TQ> p;
  p.k = k;
  p.k_seg_stride = c.seg_stride;
  p.k_row_stride = c.row_stride;
  p.len = len;
  p.q = q;
  p.q_seg_stride = c.q_seg;
  p.q_tok_stride = c.q_tok;
  p.q_head_stride = c.D;
  p.probe_count = pc;
  p.scores = scores;
  p.score_stride = c.score_stride;
  p.segments = c.S;
  p.kv_heads = sh.Hkv;
  p.group = sh.G;
  p.head_dim = c.D;
  p.max_probe = sh.max_probe;
  p.max_tokens = sh.max_tokens;
  p.scale = c.scale;
  p.reduce = sh.reduce;
  p.error = error;
  return p;
}

// The scores out [S][score_stride] vs the CPU cache's (bridge) and the fp64 oracle; slots past a
// segment keep `sentinel`; with the sum reduction every probe row's softmax sums to 1.
// The probe-score shapes both tests run (E, Hkv, G, D, max_tokens, max_probe, reduce, huge).
inline std::vector<ScoreShape> episode_score_shapes() {
  return {
      {3, 2, 3, 64, 272, 16, 1, false},   // SmolLM2-like: C + block, 16 probe rows, max over the group
      {2, 3, 1, 128, 200, 5, 2, false},   // MHA, sum
      {3, 1, 4, 80, 130, 70, 0, false},   // head_dim 80, probe rows over two chunks, mean
      {2, 2, 2, 36, 65, 3, 1, false},     // head_dim not a multiple of 8
      {2, 1, 2, 7, 64, 64, 2, false},     // head_dim 7, exactly one tile and one row chunk
      {3, 2, 8, 256, 300, 9, 1, false},   // head_dim 256 (> 48 KiB of shared memory: opt-in), G = 8
      {3, 2, 3, 64, 150, 6, 2, true},     // huge logits: one-hot softmax, sums stay G * P
  };
}

// The bad-argument case's parameters: 2 segments of N keys (D 64) on 2 KV heads, 2 probe rows
// (q [2][2][D]), scale 0.125.
inline memattn::kernels::EpisodeScoreParams<memattn::Half, memattn::Half> episode_small_params(
    int N, int D, const memattn::Half* k, const std::int32_t* len, const memattn::Half* q, const std::int32_t* pc, float* scores,
    std::int32_t* error) {
  memattn::kernels::EpisodeScoreParams<memattn::Half, memattn::Half> p;
  p.k = k;
  p.k_seg_stride = static_cast<std::int64_t>(N) * D;
  p.k_row_stride = D;
  p.len = len;
  p.q = q;
  p.q_tok_stride = 2 * D;
  p.q_head_stride = D;
  p.probe_count = pc;
  p.scores = scores;
  p.score_stride = N;
  p.segments = 2;
  p.kv_heads = 2;
  p.group = 1;
  p.head_dim = D;
  p.max_probe = 2;
  p.max_tokens = N;
  p.scale = 0.125f;
  p.error = error;
  return p;
}

template <class TK, class TQ>
void check_episode_scores(const ScoreShape& sh, const EpisodeScoreCase<TK, TQ>& c, const std::vector<float>& out, float sentinel) {
  const int D = c.D, Hq = c.Hq;
  for (int s = 0; s < c.S; ++s) {
    const int o = s / sh.Hkv, h = s % sh.Hkv, N = c.len[static_cast<std::size_t>(s)], P = c.pc[static_cast<std::size_t>(o)];
    CAPTURE(s, N, P);
    std::vector<TK> kc(static_cast<std::size_t>(N * D));
    std::vector<float> kf(kc.size());
    for (int j = 0; j < N; ++j)
      for (int d = 0; d < D; ++d) {
        kc[static_cast<std::size_t>(j * D + d)] = c.k[static_cast<std::size_t>(s * c.seg_stride + j * c.row_stride + d)];
        kf[static_cast<std::size_t>(j * D + d)] = memattn::to_float(kc[static_cast<std::size_t>(j * D + d)]);
      }
    std::vector<TQ> probe(static_cast<std::size_t>(std::max(P, 1)) * Hq * D);
    std::vector<float> qg(static_cast<std::size_t>(std::max(P, 1)) * sh.G * D);
    for (int i = 0; i < P; ++i)
      for (int x = 0; x < Hq * D; ++x) {
        probe[static_cast<std::size_t>(i * Hq * D + x)] = c.q[static_cast<std::size_t>(o * c.q_seg + i * c.q_tok + x)];
        if (x >= h * sh.G * D && x < (h + 1) * sh.G * D)
          qg[static_cast<std::size_t>(i * sh.G * D + x - h * sh.G * D)] = memattn::to_float(probe[static_cast<std::size_t>(i * Hq * D + x)]);
      }
    std::vector<float> ref(static_cast<std::size_t>(N));
    REQUIRE(cpu_episode_scores(probe.data(), P, Hq, h, sh.G, D, c.scale, kc.data(), N, sh.reduce, ref.data()) ==
            memattn::Status::kSuccess);
    const std::vector<double> ora = oracle_scores(qg, P, sh.G, D, kf, N, c.scale, sh.reduce);
    double total = 0.0;
    for (int j = 0; j < N; ++j) {
      const float g = out[static_cast<std::size_t>(s * c.score_stride + j)];
      CAPTURE(j, g, ref[static_cast<std::size_t>(j)], ora[static_cast<std::size_t>(j)]);
      REQUIRE(std::isfinite(g));
      REQUIRE(score_close(g, ref[static_cast<std::size_t>(j)]));
      REQUIRE(score_close(g, ora[static_cast<std::size_t>(j)]));
      total += g;
    }
    if (sh.reduce == 2) CHECK(std::fabs(total - static_cast<double>(sh.G) * P) <= 1e-4 * std::max(1, sh.G * P));
    for (std::int64_t j = N; j < c.score_stride; ++j) REQUIRE(out[static_cast<std::size_t>(s * c.score_stride + j)] == sentinel);
  }
}

// ---- EpiCache routing -----------------------------------------------------------------------

// The CPU rule on the first `count` centroids, fp64 over the given values (for fp32 inputs).
inline int naive_route(const std::vector<double>& c, int count, int dim, const double* x, double* sim) {
  double nx = 0;
  for (int d = 0; d < dim; ++d) nx += x[d] * x[d];
  nx = std::sqrt(nx);
  int best = -1;
  double bs = -2.0;
  for (int i = 0; i < count; ++i) {
    double dot = 0, cc = 0;
    for (int d = 0; d < dim; ++d) {
      dot += x[d] * c[static_cast<std::size_t>(i * dim + d)];
      cc += c[static_cast<std::size_t>(i * dim + d)] * c[static_cast<std::size_t>(i * dim + d)];
    }
    const double nc = std::sqrt(cc);
    const double s = nx > 0 && nc > 0 ? dot / (nx * nc) : 0.0;
    if (s > bs) {
      bs = s;
      best = i;
    }
  }
  *sim = bs;
  return best;
}

// One routing scenario vs evict::OnlineKMeans::nearest (bridge): variant 0 a clustered stream
// (k_max 6); variant 1 open_below 1.5 opens a centroid per add, with a duplicate direction (tie)
// and a zero vector (zero centroid). Queries: random rows, then 3 v (ties between the duplicates),
// -v and a zero query (every similarity 0 -> index 0). run(T{}, centroids, max_centroids, counts,
// queries, dim, &route, &sim, &error) routes with T embeddings: fp64 against the CPU's routes and
// similarities, then fp32 with per-sequence centroid counts (0 .. count) against the rule on the
// fp32 values.
template <class Run>
void check_route_scenario(int dim, int variant, std::mt19937& rng, std::normal_distribution<double>& nd, Run&& run) {
  CAPTURE(dim, variant);
  std::vector<double> adds, queries;
  int n_adds = 0, k_max = 6;
  double open = 0.3;
  std::vector<double> v(static_cast<std::size_t>(dim)), w(static_cast<std::size_t>(dim));
  for (auto& x : v) x = nd(rng);
  for (auto& x : w) x = nd(rng);
  if (variant == 0) {
    n_adds = 40;
    for (int a = 0; a < n_adds; ++a)
      for (int d = 0; d < dim; ++d) adds.push_back(nd(rng) + (a % 3 == 0 ? 2.0 * v[static_cast<std::size_t>(d)] : 0.0));
  } else {
    open = 1.5;
    k_max = 5;
    n_adds = 5;
    for (double x : v) adds.push_back(x);
    for (double x : v) adds.push_back(2.0 * x);  // same direction: a duplicate centroid
    for (int d = 0; d < dim; ++d) adds.push_back(0.0);
    for (double x : w) adds.push_back(x);
    for (int d = 0; d < dim; ++d) adds.push_back(nd(rng));
  }
  const int n_random = 30;
  for (int i = 0; i < n_random * dim; ++i) queries.push_back(nd(rng));
  for (double x : v) queries.push_back(3.0 * x);  // ties between duplicates
  for (double x : v) queries.push_back(-x);
  for (int d = 0; d < dim; ++d) queries.push_back(0.0);  // zero query: every similarity 0 -> index 0
  const int nq = n_random + 3;
  RouteReference ref;
  REQUIRE(cpu_route(adds, n_adds, dim, k_max, open, queries, nq, &ref));
  REQUIRE(ref.count > 1);
  if (variant == 1) {
    CHECK(ref.count == 5);
    CHECK(ref.route[static_cast<std::size_t>(n_random)] == 0);
    CHECK(ref.route[static_cast<std::size_t>(n_random + 2)] == 0);
  }
  std::vector<std::int32_t> route;
  std::vector<double> sim;
  std::int32_t err = -1;
  run(double{}, ref.centroids, ref.count, std::vector<std::int32_t>(static_cast<std::size_t>(nq), ref.count), queries, dim, &route,
      &sim, &err);
  CHECK(err == 0);
  for (int i = 0; i < nq; ++i) {
    CAPTURE(i, route[static_cast<std::size_t>(i)], ref.route[static_cast<std::size_t>(i)], sim[static_cast<std::size_t>(i)],
            ref.sim[static_cast<std::size_t>(i)]);
    REQUIRE(route[static_cast<std::size_t>(i)] == ref.route[static_cast<std::size_t>(i)]);
    REQUIRE(std::fabs(sim[static_cast<std::size_t>(i)] - ref.sim[static_cast<std::size_t>(i)]) <= 1e-12);
  }
  std::vector<std::int32_t> counts(static_cast<std::size_t>(nq));
  for (int i = 0; i < nq; ++i) counts[static_cast<std::size_t>(i)] = i % (ref.count + 1);
  run(float{}, ref.centroids, ref.count, counts, queries, dim, &route, &sim, &err);
  CHECK(err == 0);
  std::vector<double> cf(ref.centroids.size()), qf(queries.size());
  for (std::size_t i = 0; i < cf.size(); ++i) cf[i] = static_cast<float>(ref.centroids[i]);
  for (std::size_t i = 0; i < qf.size(); ++i) qf[i] = static_cast<float>(queries[i]);
  for (int i = 0; i < nq; ++i) {
    double s = 0;
    const int r = naive_route(cf, counts[static_cast<std::size_t>(i)], dim, qf.data() + static_cast<std::size_t>(i) * dim, &s);
    CAPTURE(i, counts[static_cast<std::size_t>(i)], route[static_cast<std::size_t>(i)], r);
    REQUIRE(route[static_cast<std::size_t>(i)] == r);
    REQUIRE(std::fabs(sim[static_cast<std::size_t>(i)] - s) <= 1e-12);
    if (counts[static_cast<std::size_t>(i)] == 0) CHECK(sim[static_cast<std::size_t>(i)] == -2.0);
  }
}

}  // namespace memattn_test
