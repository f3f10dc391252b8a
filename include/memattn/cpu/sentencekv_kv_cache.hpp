// SentenceKV on the CPU (spec eviction.md §3.14, COLM'25 arXiv 2504.00970): sentence-level KV
// with the sentences' tokens offloaded to host memory and fetched back by query similarity.
//
// Per (sequence, layer, KV head):
//  * device: one attention buffer [sinks | selected sentences | recent | chunk] (fp16 K/V +
//    positions, chronological), the per-sentence key sums Σ k (fp32, [S][D]; k̄_s = Σ/count), and
//    the partial sentence's query sum (GQA mean over the group, fp32 [D]).
//  * host: every token that is neither a sink nor recent, in position order (fp16 K/V; positions
//    are implicit: host row i holds position sink + i). Sentence s covers positions
//    [start_s, start_{s+1}); the sentence starts are per sequence (shared by layers and heads).
// Sentence boundaries: a token ends a sentence when ChunkSignals::sentence_ends says so (the
// engine's tokenizer decides which pieces end sentences), or, without that array, when its id
// (ChunkSignals::token_ids) is in Config::sentence_end_ids (the reference's `punctuations_ids`).
// Neither given: no boundaries (the history is one long sentence).
// attend(): q̄ = mean query of the partial sentence, this chunk included (GQA mean per KV head);
// sim_s = k̄_s · q̄ for every sentence with host tokens; evict::choose_sentences takes them in
// descending order while they fit into room = budget - sink - recent; their rows are copied from
// the host pool into the buffer; dense causal attention (cpu/dense_attention.hpp) over
// [sinks | chosen | recent | chunk]. So a step attends at most budget + chunk tokens.
// end_chunk(): the chunk's tokens become sinks (the first `sink` positions) or recent; recent
// overflow moves to the host pool and into its sentence's key sum; the buffer drops the fetched
// sentences (refetched per chunk).
// Reference deviations ([lib], see §3.14): per KV head with a GQA-mean q̄ (reference: per query
// head); the selection never falls back to the whole cache while the partial sentence is short
// (RG-20); every sentence stays retrievable whatever its length (RG-21); the host pool keeps every
// token (the reference first keeps semantic_factor × budget tokens by SnapKV scores).
// bytes() = device bytes, host_bytes() = host pool + sentence starts.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/evict/sentence.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

struct SentenceKvConfig {
  int budget = 128;  // tokens attended per (layer, KV head) besides the chunk: sinks + sentences + recent
  int sink = 32;     // first positions always attended
  int recent = 32;   // newest positions always attended
  std::vector<std::int32_t> sentence_end_ids;  // used when the engine passes token ids but no sentence_ends

  Status validate(const cache::CacheShape& s) const {
    if (budget < 1 || sink < 0 || recent < 0) return Status::kErrorInvalidArgument;
    if (static_cast<std::int64_t>(sink) + recent >= budget) return Status::kErrorInvalidArgument;
    if (budget > s.max_tokens) return Status::kErrorCapacityExceeded;
    return Status::kSuccess;
  }
};

template <class T = Half>
class SentenceKvCache final : public cache::KvCache {
 public:
  static constexpr std::int64_t kGranule = 16;

  static Status create(const cache::CacheShape& shape, const SentenceKvConfig& cfg, const std::string& spec,
                       const Executor& executor, std::unique_ptr<SentenceKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    MEMATTN_RETURN_IF_ERROR(cfg.validate(shape));
    out->reset(new SentenceKvCache(shape, cfg, spec, executor));
    return Status::kSuccess;
  }

  const char* spec() const override { return spec_.c_str(); }
  const cache::CacheShape& shape() const override { return shape_; }
  std::uint32_t wanted_signals() const override { return cache::kSignalTokenIds | cache::kSignalSentenceEnds; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_attend_args(shape_, seq, layer, q, k, v, out));
    const std::int64_t n = q.shape[0];
    Seq& sq = seqs_[static_cast<std::size_t>(seq)];
    Layer& ly = sq.layers[static_cast<std::size_t>(layer)];
    MEMATTN_RETURN_IF_ERROR(check_chunk_step(ly.pending, sq.pending, sq.len, n, shape_.max_tokens));
    if (!all_finite(q) || !storable<T>(k) || !storable<T>(v)) return Status::kErrorNonFinite;

    const std::int64_t Hkv = shape_.kv_heads, D = shape_.head_dim, G = shape_.q_heads / Hkv;
    const std::int64_t S = static_cast<std::int64_t>(sq.starts.size());
    ly.chunk_q.assign(static_cast<std::size_t>(n * Hkv * D), 0.f);
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < Hkv; ++h)
        for (std::int64_t g = 0; g < G; ++g) {
          const float* qr = q.ptr(t, h * G + g);
          float* dst = ly.chunk_q.data() + (t * Hkv + h) * D;
          for (std::int64_t d = 0; d < D; ++d) dst[d] += qr[d] / static_cast<float>(G);
        }
    // Host token count per sentence (shared by the heads of the layer).
    sent_count(sq, ly.host_n, &ly.counts);
    const std::int64_t room = cfg_.budget - cfg_.sink - cfg_.recent;
    // Grow the buffers first (single-threaded), then fetch + attend per head in parallel.
    for (std::int64_t h = 0; h < Hkv; ++h) {
      Head& hd = ly.heads[static_cast<std::size_t>(h)];
      const std::int64_t need = ly.n_sink + std::min(room, ly.host_n) + ly.n_rec + n;
      if (need > hd.capacity) set_capacity(hd, ly.n_sink + ly.n_rec, (need + kGranule - 1) / kGranule * kGranule);
    }
    recount();
    std::size_t need_ws = 0;
    std::int32_t probe_len = static_cast<std::int32_t>(ly.n_sink + ly.n_rec + n);
    MEMATTN_RETURN_IF_ERROR(dense_decode_workspace_size(decode_args(ly.heads[0], q, out, 0, n, &probe_len), &need_ws));
    for (auto& w : workers_) {
      w.ws.resize(need_ws);
      w.score.resize(static_cast<std::size_t>(S));
      w.keys.resize(static_cast<std::size_t>(S));
      w.chosen.resize(static_cast<std::size_t>(S));
      w.qbar.resize(static_cast<std::size_t>(D));
    }
    std::vector<Status> st(static_cast<std::size_t>(Hkv), Status::kSuccess);
    std::vector<std::int32_t> lens(static_cast<std::size_t>(Hkv), 0);
    executor_.for_each(Hkv, [&](std::int64_t h, int worker) {
      Worker& w = workers_[static_cast<std::size_t>(worker)];
      Head& hd = ly.heads[static_cast<std::size_t>(h)];
      // q̄ over the partial sentence (closed tokens + this chunk)
      for (std::int64_t d = 0; d < D; ++d) {
        double acc = hd.qsum[static_cast<std::size_t>(d)];
        for (std::int64_t t = 0; t < n; ++t) acc += ly.chunk_q[static_cast<std::size_t>((t * Hkv + h) * D + d)];
        w.qbar[static_cast<std::size_t>(d)] = static_cast<float>(acc / static_cast<double>(sq.qcount + n));
      }
      evict::sentence_scores(hd.ksum.data(), ly.counts.data(), S, w.qbar.data(), D, w.score.data());
      std::int64_t n_chosen = 0, sel = 0;
      Status s = evict::choose_sentences(w.score.data(), ly.counts.data(), S, room, w.keys.data(), w.chosen.data(),
                                         &n_chosen, &sel);
      if (s == Status::kSuccess) {
        // [sinks | recent] -> [sinks | chosen | recent | chunk]
        move_rows(hd, ly.n_sink, ly.n_sink + sel, ly.n_rec);
        std::int64_t at = ly.n_sink;
        for (std::int64_t c = 0; c < n_chosen; ++c) {
          std::int64_t a = 0, b = 0;
          host_range(sq, w.chosen[static_cast<std::size_t>(c)], ly.host_n, &a, &b);
          std::copy(hd.hk.begin() + a * D, hd.hk.begin() + b * D, hd.k.begin() + at * D);
          std::copy(hd.hv.begin() + a * D, hd.hv.begin() + b * D, hd.v.begin() + at * D);
          for (std::int64_t i = a; i < b; ++i) hd.pos[static_cast<std::size_t>(at + i - a)] = static_cast<std::int32_t>(cfg_.sink + i);
          at += b - a;
        }
        const std::int64_t base = ly.n_sink + sel + ly.n_rec;
        for (std::int64_t t = 0; t < n; ++t) {
          from_float_n(k.ptr(t, h), D, hd.k.data() + (base + t) * D);
          from_float_n(v.ptr(t, h), D, hd.v.data() + (base + t) * D);
          hd.pos[static_cast<std::size_t>(base + t)] = static_cast<std::int32_t>(sq.len + t);
        }
        hd.n_sel = sel;
        lens[static_cast<std::size_t>(h)] = static_cast<std::int32_t>(base + n);
        s = dense_decode(decode_args(hd, q, out, h, n, &lens[static_cast<std::size_t>(h)]), w.ws.data(), need_ws);
      }
      st[static_cast<std::size_t>(h)] = s;
    });
    for (Status s : st) MEMATTN_RETURN_IF_ERROR(s);
    ly.pending = n;
    sq.pending = n;
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals& signals) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    Seq& sq = seqs_[static_cast<std::size_t>(seq)];
    const std::int64_t n = sq.pending;
    for (const Layer& ly : sq.layers)
      if (ly.pending != n) return Status::kErrorInvalidArgument;
    if ((signals.sentence_ends != nullptr || signals.token_ids != nullptr) && signals.count != n)
      return Status::kErrorInvalidShape;
    std::vector<std::uint8_t> ends(static_cast<std::size_t>(n), 0);
    for (std::int64_t t = 0; t < n; ++t) {
      if (signals.sentence_ends != nullptr) {
        ends[static_cast<std::size_t>(t)] = signals.sentence_ends[t] != 0;
      } else if (signals.token_ids != nullptr) {
        const auto& ids = cfg_.sentence_end_ids;
        ends[static_cast<std::size_t>(t)] = std::find(ids.begin(), ids.end(), signals.token_ids[t]) != ids.end();
      }
      if (ends[static_cast<std::size_t>(t)]) sq.starts.push_back(sq.len + t + 1);
    }
    const std::int64_t Hkv = shape_.kv_heads, D = shape_.head_dim;
    const std::int64_t new_len = sq.len + n;
    const std::int64_t n_sink = std::min<std::int64_t>(cfg_.sink, new_len);
    for (Layer& ly : sq.layers) {
      const std::int64_t rec = ly.n_rec + n - (n_sink - ly.n_sink);  // chunk tokens past the sinks are recent
      const std::int64_t spill = std::max<std::int64_t>(0, rec - cfg_.recent);
      const std::int64_t S = static_cast<std::int64_t>(sq.starts.size());
      for (std::int64_t h = 0; h < Hkv; ++h) {
        Head& hd = ly.heads[static_cast<std::size_t>(h)];
        move_rows(hd, ly.n_sink + hd.n_sel, ly.n_sink, ly.n_rec + n);  // drop the fetched sentences
        hd.n_sel = 0;
        // spill the oldest recent rows (slots [n_sink, n_sink + spill)) to the host pool
        if (ly.host_n + spill > hd.host_capacity) grow_host(hd, ly.host_n + spill);
        hd.ksum.resize(static_cast<std::size_t>(S * D), 0.f);
        for (std::int64_t i = 0; i < spill; ++i) {
          const std::int64_t slot = n_sink + i, hrow = ly.host_n + i;
          std::copy(hd.k.begin() + slot * D, hd.k.begin() + (slot + 1) * D, hd.hk.begin() + hrow * D);
          std::copy(hd.v.begin() + slot * D, hd.v.begin() + (slot + 1) * D, hd.hv.begin() + hrow * D);
          const std::int64_t s = sentence_of(sq, cfg_.sink + hrow);
          for (std::int64_t d = 0; d < D; ++d) hd.ksum[static_cast<std::size_t>(s * D + d)] += to_float(hd.k[static_cast<std::size_t>(slot * D + d)]);
        }
        move_rows(hd, n_sink + spill, n_sink, rec - spill);
        // partial sentence query sum
        for (std::int64_t t = 0; t < n; ++t) {
          for (std::int64_t d = 0; d < D; ++d) hd.qsum[static_cast<std::size_t>(d)] += ly.chunk_q[static_cast<std::size_t>((t * Hkv + h) * D + d)];
          if (ends[static_cast<std::size_t>(t)]) std::fill(hd.qsum.begin(), hd.qsum.end(), 0.0);
        }
        const std::int64_t used = n_sink + rec - spill;
        if (hd.capacity - used > 2 * kGranule) set_capacity(hd, used, (used + 1 + kGranule - 1) / kGranule * kGranule);
      }
      ly.host_n += spill;
      ly.n_sink = n_sink;
      ly.n_rec = rec - spill;
      ly.pending = 0;
      ly.chunk_q.clear();
      ly.chunk_q.shrink_to_fit();
    }
    for (std::int64_t t = 0; t < n; ++t) sq.qcount = ends[static_cast<std::size_t>(t)] ? 0 : sq.qcount + 1;
    sq.len = new_len;
    sq.pending = 0;
    recount();
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    seqs_[static_cast<std::size_t>(seq)] = make_seq();
    recount();
    return Status::kSuccess;
  }

  // Sizes every host pool for a sequence of `tokens` tokens (no regrowth slack in host_bytes()).
  Status reserve(int seq, int tokens) override {
    if (seq < 0 || seq >= shape_.max_sequences || tokens < 0) return Status::kErrorInvalidArgument;
    if (tokens > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    const std::int64_t rows = static_cast<std::int64_t>(tokens) - cfg_.sink - cfg_.recent;
    for (Layer& ly : seqs_[static_cast<std::size_t>(seq)].layers)
      for (Head& hd : ly.heads)
        if (rows > hd.host_capacity) grow_host(hd, rows, true);
    recount();
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override {
    return seq >= 0 && seq < shape_.max_sequences ? seqs_[static_cast<std::size_t>(seq)].len : 0;
  }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }
  std::size_t host_bytes() const override { return host_bytes_; }
  std::size_t host_peak_bytes() const override { return host_peak_; }

  // ---- inspection (tests) ----
  const SentenceKvConfig& config() const { return cfg_; }
  std::int64_t sentence_count(int seq) const { return static_cast<std::int64_t>(seqs_[static_cast<std::size_t>(seq)].starts.size()); }
  std::int64_t sentence_start(int seq, std::int64_t s) const { return seqs_[static_cast<std::size_t>(seq)].starts[static_cast<std::size_t>(s)]; }
  std::int64_t host_tokens(int seq, int layer) const { return seqs_[static_cast<std::size_t>(seq)].layers[static_cast<std::size_t>(layer)].host_n; }
  // Positions the last attend() of (seq, layer, head) attended, in buffer order (valid until end_chunk).
  std::vector<std::int32_t> attended_positions(int seq, int layer, int head) const {
    const Layer& ly = seqs_[static_cast<std::size_t>(seq)].layers[static_cast<std::size_t>(layer)];
    const Head& hd = ly.heads[static_cast<std::size_t>(head)];
    const std::int64_t used = ly.n_sink + hd.n_sel + ly.n_rec + ly.pending;
    return std::vector<std::int32_t>(hd.pos.begin(), hd.pos.begin() + used);
  }
  // Host-pool key row of position p (fp16 as stored), nullptr when p is not in the host pool.
  const T* host_key(int seq, int layer, int head, std::int64_t p) const {
    const Layer& ly = seqs_[static_cast<std::size_t>(seq)].layers[static_cast<std::size_t>(layer)];
    const std::int64_t i = p - cfg_.sink;
    if (i < 0 || i >= ly.host_n) return nullptr;
    return ly.heads[static_cast<std::size_t>(head)].hk.data() + i * shape_.head_dim;
  }
  const T* host_value(int seq, int layer, int head, std::int64_t p) const {
    const T* k = host_key(seq, layer, head, p);
    if (k == nullptr) return nullptr;
    const Layer& ly = seqs_[static_cast<std::size_t>(seq)].layers[static_cast<std::size_t>(layer)];
    return ly.heads[static_cast<std::size_t>(head)].hv.data() + (p - cfg_.sink) * shape_.head_dim;
  }

 private:
  struct Head {
    std::vector<T> k, v;             // device buffer [capacity][D]
    std::vector<std::int32_t> pos;   // [capacity]
    std::int64_t capacity = 0, n_sel = 0;
    std::vector<T> hk, hv;           // host pool [host_capacity][D]
    std::int64_t host_capacity = 0;
    std::vector<float> ksum;         // [S][D] key sums of the sentences' host tokens (device)
    std::vector<double> qsum;        // [D] partial sentence query sum (device; fp64 on the CPU)
  };
  struct Layer {
    std::vector<Head> heads;
    std::int64_t n_sink = 0, n_rec = 0, host_n = 0, pending = 0;
    std::vector<float> chunk_q;       // [n][Hkv][D] GQA-mean queries of the open chunk
    std::vector<std::int64_t> counts; // host tokens per sentence (scratch)
  };
  struct Seq {
    std::int64_t len = 0, pending = 0, qcount = 0;
    std::vector<std::int64_t> starts{0};  // sentence start positions (host metadata)
    std::vector<Layer> layers;
  };
  struct Worker {
    HostWorkspace ws;
    std::vector<float> score, qbar;
    std::vector<std::uint64_t> keys;
    std::vector<std::int32_t> chosen;
  };

  SentenceKvCache(const cache::CacheShape& shape, const SentenceKvConfig& cfg, const std::string& spec,
                  const Executor& executor)
      : shape_(shape), cfg_(cfg), spec_(spec), executor_(executor), workers_(static_cast<std::size_t>(executor.concurrency())) {
    for (int s = 0; s < shape.max_sequences; ++s) seqs_.push_back(make_seq());
    recount();
  }

  Seq make_seq() const {
    Seq s;
    s.layers.resize(static_cast<std::size_t>(shape_.layers));
    for (Layer& l : s.layers) {
      l.heads.resize(static_cast<std::size_t>(shape_.kv_heads));
      for (Head& h : l.heads) h.qsum.assign(static_cast<std::size_t>(shape_.head_dim), 0.0);
    }
    return s;
  }

  // Sentence of position p (p >= 0).
  static std::int64_t sentence_of(const Seq& sq, std::int64_t p) {
    return static_cast<std::int64_t>(std::upper_bound(sq.starts.begin(), sq.starts.end(), p) - sq.starts.begin()) - 1;
  }
  // Host rows [*a, *b) of sentence s when the pool holds host_n rows.
  void host_range(const Seq& sq, std::int64_t s, std::int64_t host_n, std::int64_t* a, std::int64_t* b) const {
    const std::int64_t lo = sq.starts[static_cast<std::size_t>(s)];
    const std::int64_t hi = s + 1 < static_cast<std::int64_t>(sq.starts.size()) ? sq.starts[static_cast<std::size_t>(s + 1)]
                                                                                 : cfg_.sink + host_n;
    *a = std::min(std::max<std::int64_t>(lo - cfg_.sink, 0), host_n);
    *b = std::min(std::max<std::int64_t>(hi - cfg_.sink, 0), host_n);
    if (*b < *a) *b = *a;
  }
  void sent_count(const Seq& sq, std::int64_t host_n, std::vector<std::int64_t>* counts) const {
    counts->resize(sq.starts.size());
    for (std::size_t s = 0; s < sq.starts.size(); ++s) {
      std::int64_t a = 0, b = 0;
      host_range(sq, static_cast<std::int64_t>(s), host_n, &a, &b);
      (*counts)[s] = b - a;
    }
  }

  // Moves `rows` rows from slot `from` to slot `to` (overlap-safe).
  void move_rows(Head& hd, std::int64_t from, std::int64_t to, std::int64_t rows) const {
    if (rows <= 0 || from == to) return;
    const std::size_t D = static_cast<std::size_t>(shape_.head_dim);
    std::memmove(hd.k.data() + to * static_cast<std::int64_t>(D), hd.k.data() + from * static_cast<std::int64_t>(D), static_cast<std::size_t>(rows) * D * sizeof(T));
    std::memmove(hd.v.data() + to * static_cast<std::int64_t>(D), hd.v.data() + from * static_cast<std::int64_t>(D), static_cast<std::size_t>(rows) * D * sizeof(T));
    std::memmove(hd.pos.data() + to, hd.pos.data() + from, static_cast<std::size_t>(rows) * sizeof(std::int32_t));
  }

  // New capacity keeping the `used` leading slots.
  void set_capacity(Head& hd, std::int64_t used, std::int64_t cap) const {
    const std::size_t D = static_cast<std::size_t>(shape_.head_dim), keep = static_cast<std::size_t>(std::min(used, cap));
    resize_rows(&hd.k, keep * D, static_cast<std::size_t>(cap) * D);
    resize_rows(&hd.v, keep * D, static_cast<std::size_t>(cap) * D);
    resize_rows(&hd.pos, keep, static_cast<std::size_t>(cap));
    hd.capacity = cap;
  }
  // Host pool growth to `need` rows (exact) or by 1.5x (resize keeps the rows).
  void grow_host(Head& hd, std::int64_t need, bool exact = false) const {
    const std::int64_t cap = exact ? need : std::max<std::int64_t>(need, hd.host_capacity + hd.host_capacity / 2 + kGranule);
    const std::size_t D = static_cast<std::size_t>(shape_.head_dim);
    hd.hk.resize(static_cast<std::size_t>(cap) * D);
    hd.hv.resize(static_cast<std::size_t>(cap) * D);
    hd.host_capacity = cap;
  }

  attention::DecodeArgs<T, float> decode_args(const Head& hd, const TensorView<const float, 3>& q,
                                              const TensorView<float, 3>& out, std::int64_t h, std::int64_t n,
                                              const std::int32_t* seq_len) const {
    const std::int64_t D = shape_.head_dim, G = shape_.q_heads / shape_.kv_heads;
    attention::DecodeArgs<T, float> a;
    a.q = make_strided_view<4>(q.ptr(0, h * G), {1, n, G, D}, {0, q.stride[0], q.stride[1], 1});
    a.o = make_strided_view<4>(out.ptr(0, h * G), {1, n, G, D}, {0, out.stride[0], out.stride[1], 1});
    a.k_cache = make_strided_view<4>(static_cast<const T*>(hd.k.data()), {1, 1, hd.capacity, D}, {0, 0, D, 1});
    a.v_cache = make_strided_view<4>(static_cast<const T*>(hd.v.data()), {1, 1, hd.capacity, D}, {0, 0, D, 1});
    a.seq_lens = seq_len;
    return a;
  }

  void recount() {
    std::size_t dev = 0, host = 0;
    for (const Seq& s : seqs_) {
      host += s.starts.size() * sizeof(std::int64_t);
      for (const Layer& l : s.layers) {
        dev += l.chunk_q.size() * sizeof(float);
        for (const Head& h : l.heads) {
          dev += (h.k.size() + h.v.size()) * sizeof(T) + h.pos.size() * sizeof(std::int32_t) + h.ksum.size() * sizeof(float) +
                 h.qsum.size() * sizeof(float);  // fp32 on a device
          host += (h.hk.size() + h.hv.size()) * sizeof(T);
        }
      }
    }
    bytes_ = dev;
    peak_ = std::max(peak_, dev);
    host_bytes_ = host;
    host_peak_ = std::max(host_peak_, host);
  }

  cache::CacheShape shape_;
  SentenceKvConfig cfg_;
  std::string spec_;
  Executor executor_;
  std::vector<Seq> seqs_;
  std::vector<Worker> workers_;
  std::size_t bytes_ = 0, peak_ = 0, host_bytes_ = 0, host_peak_ = 0;
};

// ---- --kv registry entry (cpu/kv_cache_factory.hpp lists it) -------------------------------------

inline const cache::PolicyInfo& sentencekv_policy_info() {
  static const cache::PolicyInfo info = {
      "sentencekv",
      "SentenceKV: sentences' KV offloaded to host memory, per-sentence mean keys on the device; each chunk attends "
      "sinks + the sentences most similar to the partial sentence's mean query + recent (bytes = device, host "
      "reported apart)",
      {{"budget", 128, 2, 10000000, true, "tokens attended per (layer, KV head): sink + sentences + recent"},
       {"sink", -1, -1, 1000000, true, "first positions always attended; -1: min(32, budget/4)"},
       {"recent", -1, -1, 1000000, true, "newest positions always attended; -1: min(32, budget/4)"}}};
  return info;
}

template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_sentencekv_kv_cache(const cache::ResolvedParams& p, const cache::CacheShape& shape,
                                       const Executor& executor, std::unique_ptr<cache::KvCache>* out,
                                       std::string* error) {
  SentenceKvConfig c;
  c.budget = p.get_int("budget");
  c.sink = p.get_int("sink") >= 0 ? p.get_int("sink") : std::min(32, c.budget / 4);
  c.recent = p.get_int("recent") >= 0 ? p.get_int("recent") : std::min(32, c.budget / 4);
  return build_kv_cache<SentenceKvCache<Half>>(c, sentencekv_policy_info(), p, shape, executor, "sink + recent must be smaller than budget", out, error);
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
