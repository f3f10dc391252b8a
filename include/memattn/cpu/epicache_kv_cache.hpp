// EpiCache on the CPU (spec eviction.md §3.12, Apple arXiv 2509.17396): block-wise prefill with
// bounded peak memory, episodic clustering of the history, one compressed cache per episode, the
// query routed to the nearest episode centroid, sensitivity-driven layer budgets.
//
// What the cache sees is q/k/v per layer, so the method's notions are defined on them ([lib]):
//  * history segment: `segment` consecutive positions [s·segment, (s+1)·segment).
//  * segment embedding: the mean of the segment's layer-0 post-RoPE queries, all query heads
//    concatenated (Hq·D), L2-normalised -- a bag-of-tokens vector (layer-0 queries are a linear
//    map of the normed token embeddings; averaging over positions cancels the fast rotary pairs).
//  * query (for routing): the same embedding (mean layer-0 query) of the newest `segment` tokens,
//    the current chunk included (a ring of the last `segment` layer-0 query rows), so a question
//    chunk of >= `segment` tokens routes on its own tokens only and a decode step on its recent
//    context. Routing happens in layer 0's attend() and holds for every layer of the chunk (layer
//    0 must be attended first).
//  * episodes: OnlineKMeans (evict/episode.hpp) over closed segments, at most `episodes`; a
//    segment that opens a new episode starts it as a copy of the nearest episode's cache.
//  * probe (the reference's medoid text): per episode and layer the newest `probe` queries sampled
//    evenly from its segments (stride segment/probe). Before the first segment closes, episode 0's
//    probe is the newest `probe` queries (SnapKV-like window).
//  * score: observation-window column sums (cpu/evict_scores.hpp window_colsum) of the episode's
//    probe over the episode cache, probe rows at the end of the sequence (they see every key),
//    summed over probe rows and reduced over the GQA group (`gqa`, default max: the reference
//    takes a max over group and probe; the sum over probe rows is [lib]). Top-k with 64-bit keys
//    (cpu/evict_select.hpp), `sink` first and `recent` newest positions protected.
//  * block-wise prefill: attend() splits a chunk at block boundaries; every episode cache appends
//    the piece and, once it holds C_l + block tokens, is compressed to C_l before the next piece.
//    So each (episode, layer, KV head) never holds more than C_l + block tokens: with E episodes
//    the KV peak is E·Σ_l Hkv·(C_l + block) rows (spec [lib]: E·C + chunk; the block is appended
//    to every episode instead of being shared, which costs (E-1)·block rows and keeps each
//    episode cache one contiguous segment for the dense decode).
//  * layer budgets: Config::layer_scores (offline sensitivity per layer, higher = less
//    sensitive) -> evict::power_sensitivity_budgets(p, exact total); empty: uniform C. The --kv
//    entry reads them from `scores=PATH`, a table (evict/layer_scores.hpp) that
//    `memattn-llama layer-sensitivity` measures on the model with the reference's block mask.
// Attention of the chunk's queries runs over the routed episode's cache (cpu/dense_attention.hpp).
// Bytes: every episode cache + probes + pending samples + centroids + the open-segment sum.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/evict/episode.hpp"
#include "memattn/evict/layer_scores.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

struct EpiCacheConfig {
  int budget = 256;   // C: mean tokens per (episode, layer, KV head) after compression
  int block = 16;     // prefill block: an episode segment holds at most C_l + block tokens
  int episodes = 4;   // E: most episodes (clusters)
  int segment = 64;   // tokens per history segment (clustering unit)
  int probe = 16;     // probe queries per (episode, layer)
  int sink = 4;       // first positions protected
  int recent = 0;     // newest positions protected
  double open_below = 0.8;  // cosine similarity under which a segment opens a new episode (measured
                            // mean between 64-token segments: 0.77 stories260K, 0.78 SmolLM2)
  evict::GroupReduce reduce = evict::GroupReduce::kMax;
  std::vector<double> layer_scores;  // offline sensitivity per layer (empty: uniform budgets)
  double power = 1.1;                // p of the sensitivity allocator

  Status validate(const cache::CacheShape& s) const {
    if (budget < 1 || block < 1 || episodes < 1 || segment < 1 || probe < 1 || probe > segment || sink < 0 ||
        recent < 0 || !(open_below >= -1.0 && open_below <= 1.0))
      return Status::kErrorInvalidArgument;
    if (static_cast<std::int64_t>(sink) + recent >= budget) return Status::kErrorInvalidArgument;
    if (budget > s.max_tokens) return Status::kErrorCapacityExceeded;
    if (!layer_scores.empty() && static_cast<int>(layer_scores.size()) != s.layers) return Status::kErrorInvalidShape;
    return Status::kSuccess;
  }
};

template <class T = Half>
class EpiCacheKvCache final : public cache::KvCache {
 public:
  static constexpr std::int64_t kGranule = 16;

  static Status create(const cache::CacheShape& shape, const EpiCacheConfig& cfg, const std::string& spec,
                       const Executor& executor, std::unique_ptr<EpiCacheKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    MEMATTN_RETURN_IF_ERROR(cfg.validate(shape));
    std::vector<std::int64_t> budgets(static_cast<std::size_t>(shape.layers), cfg.budget);
    if (!cfg.layer_scores.empty())
      MEMATTN_RETURN_IF_ERROR(evict::power_sensitivity_budgets(cfg.layer_scores, cfg.budget, cfg.power, true, &budgets));
    for (std::int64_t& b : budgets) b = std::min<std::int64_t>(b, shape.max_tokens);
    out->reset(new EpiCacheKvCache(shape, cfg, spec, executor, std::move(budgets)));
    return Status::kSuccess;
  }

  const char* spec() const override { return spec_.c_str(); }
  const cache::CacheShape& shape() const override { return shape_; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_attend_args(shape_, seq, layer, q, k, v, out));
    const std::int64_t n = q.shape[0];
    Seq& sq = seqs_[static_cast<std::size_t>(seq)];
    MEMATTN_RETURN_IF_ERROR(check_chunk_step(sq.layer_pending[static_cast<std::size_t>(layer)], sq.pending, sq.len, n,
                                             shape_.max_tokens));
    if (layer != 0 && sq.layer_pending[0] == 0) return Status::kErrorInvalidArgument;  // layer 0 routes
    if (!all_finite(q) || !storable<T>(k) || !storable<T>(v)) return Status::kErrorNonFinite;

    if (layer == 0) route(sq, q);
    const std::int64_t cap = budgets_[static_cast<std::size_t>(layer)] + cfg_.block;
    std::int64_t t0 = 0;
    while (t0 < n) {
      const std::int64_t size = sq.size[static_cast<std::size_t>(layer)];
      if (size >= cap) {
        MEMATTN_RETURN_IF_ERROR(compress_layer(sq, layer, sq.len + t0 - 1));
        continue;
      }
      const std::int64_t piece = std::min(n - t0, cap - size);
      MEMATTN_RETURN_IF_ERROR(attend_piece(sq, layer, q, k, v, out, t0, piece));
      t0 += piece;
      if (sq.size[static_cast<std::size_t>(layer)] >= cap) MEMATTN_RETURN_IF_ERROR(compress_layer(sq, layer, sq.len + t0 - 1));
    }
    sq.layer_pending[static_cast<std::size_t>(layer)] = n;
    sq.pending = n;
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals&) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    Seq& sq = seqs_[static_cast<std::size_t>(seq)];
    const std::int64_t n = sq.pending;
    for (std::int64_t lp : sq.layer_pending)
      if (lp != n) return Status::kErrorInvalidArgument;
    sq.len += n;
    sq.pending = 0;
    std::fill(sq.layer_pending.begin(), sq.layer_pending.end(), 0);
    // Segments closed by this chunk join their episode (in position order).
    for (std::size_t c = 0; c < sq.closed.size(); ++c) close_segment(sq, sq.closed[c]);
    sq.closed.clear();
    recount();
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    seqs_[static_cast<std::size_t>(seq)] = make_seq();
    recount();
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override {
    return seq >= 0 && seq < shape_.max_sequences ? seqs_[static_cast<std::size_t>(seq)].len : 0;
  }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }

  // ---- inspection (tests, reports) ----
  std::size_t kv_bytes() const { return kv_bytes_; }
  std::size_t kv_peak_bytes() const { return kv_peak_; }
  std::int64_t layer_budget(int layer) const { return budgets_[static_cast<std::size_t>(layer)]; }
  const EpiCacheConfig& config() const { return cfg_; }
  int episode_count(int seq) const { return static_cast<int>(seqs_[static_cast<std::size_t>(seq)].episodes.size()); }
  int routed_episode(int seq) const { return seqs_[static_cast<std::size_t>(seq)].route; }
  // Bytes of one token row of one (episode, layer, KV head) segment: K + V + position.
  std::size_t row_bytes() const { return static_cast<std::size_t>(2 * shape_.head_dim) * sizeof(T) + sizeof(std::int32_t); }
  // Tokens every episode segment of (seq, layer) holds now.
  std::int64_t segment_size(int seq, int layer) const {
    return seqs_[static_cast<std::size_t>(seq)].size[static_cast<std::size_t>(layer)];
  }
  const std::int32_t* segment_positions(int seq, int episode, int layer, int head) const {
    return seg(seqs_[static_cast<std::size_t>(seq)], episode, layer, head).pos.data();
  }
  const T* segment_keys(int seq, int episode, int layer, int head) const {
    return seg(seqs_[static_cast<std::size_t>(seq)], episode, layer, head).k.data();
  }
  const T* segment_values(int seq, int episode, int layer, int head) const {
    return seg(seqs_[static_cast<std::size_t>(seq)], episode, layer, head).v.data();
  }

 private:
  struct Segment {  // one (episode, layer, KV head): K/V rows [capacity][D], positions, chronological
    std::vector<T> k, v;
    std::vector<std::int32_t> pos;
    std::int64_t capacity = 0;
    std::size_t bytes() const { return (k.size() + v.size()) * sizeof(T) + pos.size() * sizeof(std::int32_t); }
  };
  struct Probe {  // newest `probe` sampled queries [count][Hq][D], oldest first
    std::vector<T> q;
    std::int64_t count = 0;
    std::size_t bytes() const { return q.size() * sizeof(T); }
  };
  struct Episode {
    std::vector<Segment> segs;    // [layer][kv head]
    std::vector<Probe> probes;    // [layer]
  };
  struct Closed {  // a segment closed during the open chunk
    Eigen::VectorXd emb;
    std::vector<Probe> samples;  // [layer]
  };
  struct Seq {
    std::int64_t len = 0, pending = 0;
    std::vector<std::int64_t> layer_pending;  // [layer]
    std::vector<std::int64_t> size;           // [layer]: tokens held by every episode segment of the layer
    std::vector<Episode> episodes;
    evict::OnlineKMeans kmeans;
    Eigen::VectorXd open_sum;          // layer-0 query sum of the open segment (closed tokens)
    std::vector<float> ring;           // [segment][Hq*D] layer-0 queries of the newest positions (p % segment)
    std::vector<Probe> open_samples;   // [layer]: samples of the open segment
    std::vector<Closed> closed;
    int route = 0;
  };
  struct Worker {
    HostWorkspace ws;
    std::vector<float> qrows, colsum, scores;
    std::vector<std::int32_t> qpos, keep;
    std::vector<std::int64_t> visible;
    std::vector<std::uint64_t> keys;
  };

  EpiCacheKvCache(const cache::CacheShape& shape, const EpiCacheConfig& cfg, const std::string& spec,
                  const Executor& executor, std::vector<std::int64_t> budgets)
      : shape_(shape), cfg_(cfg), spec_(spec), executor_(executor), budgets_(std::move(budgets)),
        workers_(static_cast<std::size_t>(executor.concurrency())) {
    for (int s = 0; s < shape.max_sequences; ++s) seqs_.push_back(make_seq());
    recount();
  }

  std::int64_t emb_dim() const { return static_cast<std::int64_t>(shape_.q_heads) * shape_.head_dim; }
  std::int64_t qrow() const { return static_cast<std::int64_t>(shape_.q_heads) * shape_.head_dim; }

  Seq make_seq() const {
    Seq s;
    s.layer_pending.assign(static_cast<std::size_t>(shape_.layers), 0);
    s.size.assign(static_cast<std::size_t>(shape_.layers), 0);
    s.episodes.push_back(make_episode());
    s.kmeans = evict::OnlineKMeans(static_cast<int>(emb_dim()), cfg_.episodes, cfg_.open_below);
    s.open_sum = Eigen::VectorXd::Zero(emb_dim());
    s.ring.assign(static_cast<std::size_t>(cfg_.segment * emb_dim()), 0.f);
    s.open_samples.assign(static_cast<std::size_t>(shape_.layers), Probe{});
    return s;
  }
  Episode make_episode() const {
    Episode e;
    e.segs.assign(static_cast<std::size_t>(shape_.layers) * shape_.kv_heads, Segment{});
    e.probes.assign(static_cast<std::size_t>(shape_.layers), Probe{});
    return e;
  }
  static Segment& seg(Seq& s, int e, int layer, std::int64_t h, int Hkv) {
    return s.episodes[static_cast<std::size_t>(e)].segs[static_cast<std::size_t>(layer) * Hkv + static_cast<std::size_t>(h)];
  }
  const Segment& seg(const Seq& s, int e, int layer, std::int64_t h) const {
    return s.episodes[static_cast<std::size_t>(e)].segs[static_cast<std::size_t>(layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }

  // Routing embedding: layer-0 query sum of the newest `segment` tokens, this chunk included.
  void route(Seq& sq, const TensorView<const float, 3>& q) {
    const std::int64_t Hq = shape_.q_heads, D = shape_.head_dim, S = cfg_.segment, n = q.shape[0];
    const std::int64_t from_chunk = std::min(n, S), from_ring = std::min(S - from_chunk, sq.len);
    Eigen::VectorXd e = Eigen::VectorXd::Zero(emb_dim());
    for (std::int64_t p = sq.len - from_ring; p < sq.len; ++p) {
      const float* r = sq.ring.data() + (p % S) * emb_dim();
      for (std::int64_t i = 0; i < emb_dim(); ++i) e[i] += r[i];
    }
    for (std::int64_t t = n - from_chunk; t < n; ++t)
      for (std::int64_t h = 0; h < Hq; ++h)
        for (std::int64_t d = 0; d < D; ++d) e[h * D + d] += q.ptr(t, h)[d];
    const int c = sq.kmeans.nearest(e);
    sq.route = c < 0 ? 0 : c;
  }

  void set_capacity(Segment& sg, std::int64_t size, std::int64_t cap) const {
    const std::size_t D = static_cast<std::size_t>(shape_.head_dim), keep = static_cast<std::size_t>(size);
    resize_rows(&sg.k, keep * D, static_cast<std::size_t>(cap) * D);
    resize_rows(&sg.v, keep * D, static_cast<std::size_t>(cap) * D);
    resize_rows(&sg.pos, keep, static_cast<std::size_t>(cap));
    sg.capacity = cap;
  }

  // Pushes sampled query rows into a FIFO of `probe` rows.
  void push_probe(Probe& p, const float* const* rows, std::int64_t count) const {
    const std::int64_t P = cfg_.probe, R = qrow();
    if (p.q.empty()) p.q.resize(static_cast<std::size_t>(P * R));
    for (std::int64_t i = 0; i < count; ++i) {
      if (p.count == P) {
        std::copy(p.q.begin() + R, p.q.end(), p.q.begin());
        --p.count;
      }
      for (std::int64_t h = 0; h < shape_.q_heads; ++h)
        from_float_n(rows[i] + h * shape_.head_dim, shape_.head_dim, p.q.data() + p.count * R + h * shape_.head_dim);
      ++p.count;
    }
  }
  void push_probe_rows(Probe& dst, const Probe& src) const {
    std::vector<float> row(static_cast<std::size_t>(qrow()));
    for (std::int64_t i = 0; i < src.count; ++i) {
      to_float_n(src.q.data() + i * qrow(), qrow(), row.data());
      const float* r = row.data();
      push_probe(dst, &r, 1);
    }
  }

  // Appends chunk tokens [t0, t0 + piece) to every episode of `layer`, attends the routed one,
  // and records the layer's query samples (and layer 0's segment embedding sums).
  Status attend_piece(Seq& sq, int layer, const TensorView<const float, 3>& q, const TensorView<const float, 3>& k,
                      const TensorView<const float, 3>& v, const TensorView<float, 3>& out, std::int64_t t0,
                      std::int64_t piece) {
    const std::int64_t Hkv = shape_.kv_heads, D = shape_.head_dim, G = shape_.q_heads / Hkv;
    const std::int64_t size = sq.size[static_cast<std::size_t>(layer)];
    const std::int64_t cap = budgets_[static_cast<std::size_t>(layer)] + cfg_.block;
    const int E = static_cast<int>(sq.episodes.size());
    for (int e = 0; e < E; ++e)
      for (std::int64_t h = 0; h < Hkv; ++h) {
        Segment& sg = seg(sq, e, layer, h, shape_.kv_heads);
        if (size + piece > sg.capacity)
          set_capacity(sg, size, std::min<std::int64_t>(cap, (size + piece + kGranule - 1) / kGranule * kGranule));
        for (std::int64_t t = 0; t < piece; ++t) {
          from_float_n(k.ptr(t0 + t, h), D, sg.k.data() + (size + t) * D);
          from_float_n(v.ptr(t0 + t, h), D, sg.v.data() + (size + t) * D);
          sg.pos[static_cast<std::size_t>(size + t)] = static_cast<std::int32_t>(sq.len + t0 + t);
        }
      }
    sq.size[static_cast<std::size_t>(layer)] = size + piece;
    recount();
    // Dense causal attention over the routed episode's segment (per KV head, all G query heads).
    std::int32_t seq_len = static_cast<std::int32_t>(size + piece);
    std::size_t need = 0;
    auto args = [&](std::int64_t h) {
      const Segment& sg = seg(sq, sq.route, layer, h);
      attention::DecodeArgs<T, float> a;
      a.q = make_strided_view<4>(q.ptr(t0, h * G), {1, piece, G, D}, {0, q.stride[0], q.stride[1], 1});
      a.o = make_strided_view<4>(out.ptr(t0, h * G), {1, piece, G, D}, {0, out.stride[0], out.stride[1], 1});
      a.k_cache = make_strided_view<4>(static_cast<const T*>(sg.k.data()), {1, 1, sg.capacity, D}, {0, 0, D, 1});
      a.v_cache = make_strided_view<4>(static_cast<const T*>(sg.v.data()), {1, 1, sg.capacity, D}, {0, 0, D, 1});
      a.seq_lens = &seq_len;
      return a;
    };
    MEMATTN_RETURN_IF_ERROR(dense_decode_workspace_size(args(0), &need));
    for (auto& w : workers_) w.ws.resize(need);
    std::vector<Status> st(static_cast<std::size_t>(Hkv), Status::kSuccess);
    executor_.for_each(Hkv, [&](std::int64_t h, int worker) {
      st[static_cast<std::size_t>(h)] = dense_decode(args(h), workers_[static_cast<std::size_t>(worker)].ws.data(), need);
    });
    for (Status s : st) MEMATTN_RETURN_IF_ERROR(s);
    record_queries(sq, layer, q, t0, piece);
    return Status::kSuccess;
  }

  // Samples (segment offset o with (o + 1) % stride == 0) go to the open segment's samples; while
  // no episode exists yet every query also feeds episode 0's probe (window fallback).
  void record_queries(Seq& sq, int layer, const TensorView<const float, 3>& q, std::int64_t t0, std::int64_t piece) {
    const std::int64_t S = cfg_.segment, stride = S / cfg_.probe, Hq = shape_.q_heads, D = shape_.head_dim;
    std::vector<float> row(static_cast<std::size_t>(qrow()));
    for (std::int64_t t = t0; t < t0 + piece; ++t) {
      const std::int64_t p = sq.len + t, o = p % S;
      for (std::int64_t h = 0; h < Hq; ++h) std::copy(q.ptr(t, h), q.ptr(t, h) + D, row.begin() + h * D);
      const float* r = row.data();
      if (sq.kmeans.size() == 0) push_probe(sq.episodes[0].probes[static_cast<std::size_t>(layer)], &r, 1);
      if ((o + 1) % stride == 0 && o / stride < cfg_.probe)
        push_probe(sq.open_samples[static_cast<std::size_t>(layer)], &r, 1);
      if (layer == 0) {
        for (std::int64_t i = 0; i < qrow(); ++i) sq.open_sum[i] += row[static_cast<std::size_t>(i)];
        std::copy(row.begin(), row.end(), sq.ring.begin() + o * qrow());
      }
      if (o == S - 1) {  // the segment closes with this token
        if (layer == 0) {
          sq.closed.push_back(Closed{sq.open_sum, {}});
          sq.open_sum.setZero();
        }
        const std::size_t idx = static_cast<std::size_t>((p / S) - (sq.len / S));  // closed within this chunk
        if (idx < sq.closed.size()) {
          Closed& c = sq.closed[idx];
          if (c.samples.empty()) c.samples.assign(static_cast<std::size_t>(shape_.layers), Probe{});
          c.samples[static_cast<std::size_t>(layer)] = std::move(sq.open_samples[static_cast<std::size_t>(layer)]);
        }
        sq.open_samples[static_cast<std::size_t>(layer)] = Probe{};
      }
    }
  }

  void close_segment(Seq& sq, Closed& c) {
    bool opened = false;
    const int before = sq.kmeans.size();
    const int nearest = sq.kmeans.nearest(c.emb);
    const int e = sq.kmeans.add(c.emb, &opened);
    if (opened && before > 0) {
      // A new episode starts as a copy of the nearest episode's cache.
      Episode ep = sq.episodes[static_cast<std::size_t>(nearest < 0 ? 0 : nearest)];
      for (Probe& p : ep.probes) p = Probe{};
      sq.episodes.push_back(std::move(ep));
    }
    Episode& ep = sq.episodes[static_cast<std::size_t>(e)];
    for (int l = 0; l < shape_.layers; ++l) {
      Probe& p = ep.probes[static_cast<std::size_t>(l)];
      if (opened) p = Probe{};  // the first segment of an episode replaces the window fallback
      if (!c.samples.empty()) push_probe_rows(p, c.samples[static_cast<std::size_t>(l)]);
    }
  }

  // Compresses every episode of `layer` to C_l with its own probe.
  Status compress_layer(Seq& sq, int layer, std::int64_t t_cur) {
    const std::int64_t Hkv = shape_.kv_heads, C = budgets_[static_cast<std::size_t>(layer)];
    const int E = static_cast<int>(sq.episodes.size());
    std::vector<Status> st(static_cast<std::size_t>(E * Hkv), Status::kSuccess);
    std::vector<std::int64_t> kept(static_cast<std::size_t>(E * Hkv), 0);
    executor_.for_each(E * Hkv, [&](std::int64_t task, int worker) {
      const int e = static_cast<int>(task / Hkv);
      st[static_cast<std::size_t>(task)] =
          compress(sq, e, layer, task % Hkv, C, t_cur, workers_[static_cast<std::size_t>(worker)], &kept[static_cast<std::size_t>(task)]);
    });
    for (Status s : st) MEMATTN_RETURN_IF_ERROR(s);
    sq.size[static_cast<std::size_t>(layer)] = kept[0];
    recount();
    return Status::kSuccess;
  }

  Status compress(Seq& sq, int e, int layer, std::int64_t h, std::int64_t C, std::int64_t t_cur, Worker& wk,
                  std::int64_t* kept) {
    Segment& sg = seg(sq, e, layer, h, shape_.kv_heads);
    const Probe& pr = sq.episodes[static_cast<std::size_t>(e)].probes[static_cast<std::size_t>(layer)];
    const std::int64_t N = sq.size[static_cast<std::size_t>(layer)], D = shape_.head_dim;
    const std::int64_t G = shape_.q_heads / shape_.kv_heads, P = pr.count;
    wk.scores.assign(static_cast<std::size_t>(N), 0.f);
    if (P > 0) {
      wk.qrows.resize(static_cast<std::size_t>(P * G * D));
      for (std::int64_t i = 0; i < P; ++i) to_float_n(pr.q.data() + i * qrow() + h * G * D, G * D, wk.qrows.data() + i * G * D);
      wk.qpos.assign(static_cast<std::size_t>(P), std::numeric_limits<std::int32_t>::max());
      wk.colsum.resize(window_colsum_scratch_elems(G, P, D, N));
      wk.visible.resize(static_cast<std::size_t>(P * G));
      const float scale = 1.f / std::sqrt(static_cast<float>(D));
      MEMATTN_RETURN_IF_ERROR(window_colsum(wk.qrows.data(), G * D, D, wk.qpos.data(), P, G, D, scale, sg.k.data(), D,
                                            sg.pos.data(), N, cfg_.reduce, wk.scores.data(), wk.colsum.data(),
                                            wk.visible.data()));
    }
    wk.keys.resize(static_cast<std::size_t>(N));
    wk.keep.resize(static_cast<std::size_t>(N));
    std::int64_t count = 0;
    const evict::Protection protect{cfg_.sink, cfg_.recent};
    MEMATTN_RETURN_IF_ERROR(select_keep(wk.scores.data(), sg.pos.data(), N, C, static_cast<std::int32_t>(t_cur), protect,
                                        P > 0 ? evict::TieBreak::kPreferEarlier : evict::TieBreak::kPreferLater,
                                        wk.keys.data(), wk.keep.data(), &count));
    compact_rows(sg.k.data(), D, wk.keep.data(), count);
    compact_rows(sg.v.data(), D, wk.keep.data(), count);
    compact_rows(sg.pos.data(), 1, wk.keep.data(), count);
    *kept = count;
    return Status::kSuccess;
  }

  void recount() {
    std::size_t kv = 0, meta = 0;
    for (const Seq& s : seqs_) {
      for (const Episode& e : s.episodes) {
        for (const Segment& sg : e.segs) kv += sg.bytes();
        for (const Probe& p : e.probes) meta += p.bytes();
      }
      for (const Probe& p : s.open_samples) meta += p.bytes();
      for (const Closed& c : s.closed) {
        meta += static_cast<std::size_t>(c.emb.size()) * sizeof(double);
        for (const Probe& p : c.samples) meta += p.bytes();
      }
      meta += s.kmeans.bytes() + static_cast<std::size_t>(s.open_sum.size()) * sizeof(double) + s.ring.size() * sizeof(float);
    }
    kv_bytes_ = kv;
    kv_peak_ = std::max(kv_peak_, kv);
    bytes_ = kv + meta;
    peak_ = std::max(peak_, bytes_);
  }

  cache::CacheShape shape_;
  EpiCacheConfig cfg_;
  std::string spec_;
  Executor executor_;
  std::vector<std::int64_t> budgets_;  // C_l
  std::vector<Seq> seqs_;
  std::vector<Worker> workers_;
  std::size_t bytes_ = 0, peak_ = 0, kv_bytes_ = 0, kv_peak_ = 0;
};

// ---- --kv registry entry (cpu/kv_cache_factory.hpp lists it) -------------------------------------

inline const cache::PolicyInfo& epicache_policy_info() {
  static const cache::PolicyInfo info = {
      "epicache",
      "EpiCache: block-wise prefill (each cache <= budget + block), history segments clustered into episodes "
      "(online k-means on mean layer-0 queries), one cache per episode compressed by its probe queries, the chunk "
      "routed to the nearest episode",
      {{"budget", 256, 1, 10000000, true, "tokens kept per (episode, layer, KV head) after compression"},
       {"block", 16, 1, 100000, true, "prefill block: a cache holds at most budget + block tokens"},
       {"episodes", 4, 1, 64, true, "most episodes (k of the k-means)"},
       {"segment", 64, 1, 100000, true, "tokens per history segment (clustering unit)"},
       {"probe", 16, 1, 4096, true, "probe queries per (episode, layer), sampled evenly from its segments"},
       {"sink", 4, 0, 1000000, true, "first positions protected"},
       {"recent", 0, 0, 10000000, true, "newest positions protected"},
       {"open", 0.8, -1, 1, false, "cosine similarity under which a segment opens a new episode"},
       {"gqa", 1, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"},
       {"scores", 0, 0, 0, false, "layer-sensitivity table (memattn-llama layer-sensitivity): layer budgets", true, true},
       {"power", 1.1, 0.01, 16, false, "p of the sensitivity budgets C_l ~ (1 - minmax(score_l))^p", false, true}}};
  return info;
}

template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_epicache_kv_cache(const cache::ResolvedParams& p, const cache::CacheShape& shape,
                                     const Executor& executor, std::unique_ptr<cache::KvCache>* out, std::string* error) {
  EpiCacheConfig c;
  c.budget = p.get_int("budget");
  c.block = p.get_int("block");
  c.episodes = p.get_int("episodes");
  c.segment = p.get_int("segment");
  c.probe = p.get_int("probe");
  c.sink = p.get_int("sink");
  c.recent = p.get_int("recent");
  c.open_below = p.get("open");
  c.reduce = static_cast<evict::GroupReduce>(p.get_int("gqa"));
  c.power = p.get("power");
  const std::string path = p.get_text("scores");
  if (!path.empty()) {
    evict::LayerScoreTable table;
    MEMATTN_RETURN_IF_ERROR(read_table_file(path, "layer-score table", evict::parse_layer_score_table, &table, error));
    if (static_cast<int>(table.scores.size()) != shape.layers) {
      *error = "epicache: '" + path + "' has " + std::to_string(table.scores.size()) + " layers, the model " +
               std::to_string(shape.layers);
      return Status::kErrorInvalidShape;
    }
    c.layer_scores = table.scores;
  }
  return build_kv_cache<EpiCacheKvCache<Half>>(c, epicache_policy_info(), p, shape, executor, "probe must be <= segment and sink + recent < budget", out, error);
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
