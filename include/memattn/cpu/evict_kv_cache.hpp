// Evicting KV policies on the CPU (spec eviction.md §1-§5, §6): a cache::KvCache that composes an
// evict::EvictionPolicy over per-(sequence, layer, KV head) segments.
//
// Segment = its own fp16 (default) K and V rows [capacity][D], original positions pos[slot]
// (int32), and the policy's per-token state (H2O acc fp32, Scissorhands hist uint64, KNorm norm
// fp32). Segments have their own lengths and capacities, so per-layer/per-head budgets (PyramidKV)
// save real memory. A chunk is appended at the tail, so every held token precedes it and the dense
// decode attention runs on a segment as is (keys post-RoPE, original positions). Compaction either
// keeps slots chronological or fills the evicted slots from the tail (kCanFillHoles, §5.5).
//
// attend(): append the chunk to every KV head's segment, dense decode attention of the chunk's G
// query heads per KV head (returns the LSE and the raw logits), then the policy's decode epilogue:
// for each chunk query p̄_j = R_g exp(s_{g,j} - lse_g) over the slots it saw (H2O accumulation,
// Scissorhands history) -- the column sums of a prefill chunk and the per-step probabilities of
// decode, with the keys read once (chunks too long to hold their logits recompute them from the
// keys, cpu::decode_probs). Window scorers (SnapKV, PyramidKV)
// keep the last w queries (fp16, per layer) as their observation window.
// end_chunk(): the trigger decides per segment; budgets (allocator, P = tokens seen) -> scores ->
// deterministic top-k with protected ranges -> in-place ordered compaction of K, V, pos and state
// (one permutation). Storage shrinks when a segment holds far less than its capacity.
// Mergers (D2O, KVMerger; evict/merge.hpp, cpu/evict_merge.hpp): group before selection
// (KVMerger), then fold evicted rows into kept rows in place before the gather; a merged row keeps
// its target's position. kAllLayers allocators (D2O's VarianceSoftmax) plan each sequence's layer
// budgets once, from every layer's per-token scores, at the first chunk end that takes it over C.
// Bytes reported: allocated K/V + positions + state + window queries, all segments.
// Positions: kOriginal only (the engine hands post-RoPE keys; StreamingLLM's cache-relative mode
// needs pre-RoPE keys and is not available through this interface).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/compresskv_scores.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/cpu/evict_merge.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/evict/compresskv.hpp"
#include "memattn/evict/lazy.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/retention.hpp"
#include "memattn/evict/sirllm.hpp"
#include "memattn/evict/windowkv.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

// Retention ranges on a cache (spec §2.10): pin(range) for one sequence now (cleared by reset),
// pin_template(range) re-installed at every sequence start (--kv ...+pin:start=A,end=B,ttl=S), its
// expires_at read as a TTL in steps from the start. The clock is tokens(seq).
class RetentionKvCache : public cache::KvCache {
 public:
  virtual Status pin(const evict::RetentionRange& r) = 0;
  virtual Status pin_template(const evict::RetentionRange& r, const std::string& spec_suffix) = 0;
  virtual const evict::RetentionTable& retention() const = 0;
};

template <class Policy, class T = Half>
class EvictKvCache final : public RetentionKvCache {
 public:
  using Params = typename Policy::Params;
  using Scorer = typename Policy::scorer_type;
  using Merger = typename Policy::merger_type;
  using Allocator = typename Policy::allocator_type;
  static constexpr bool kPlansLayers = Allocator::kScope == evict::Scope::kAllLayers;
  using State = typename Policy::State;
  static constexpr bool kHasState = Policy::kState != evict::StateKind::kNone;
  static constexpr bool kWindow = Scorer::kNeedsWindowQueries;
  // A per-layer selector (CompressKV) picks one keep set per (sequence, layer), scored once and
  // applied to every KV head of the layer, so the heads of a layer always hold the same positions.
  static constexpr bool kLayerShared =
      static_cast<int>(Policy::selector_type::kGranularity) >= static_cast<int>(evict::Granularity::kPerLayer) &&
      std::is_same<Scorer, evict::HeadSubsetWindow>::value;
  static constexpr bool kShared = Policy::kSharedAcrossLayers;
  // Hole filling (spec §5.5 slot replacement, for any chunk size): kept rows from beyond the budget
  // move into the evicted slots below it, so a compaction moves at most one row per token over
  // budget (decode: one) instead of every row after the first victim. Slots then stop being
  // chronological, which only window scorers (their protected tail is found by slot), shared
  // selections and consecutive-set mergers (KVMerger) rely on: those compact in order.
  static constexpr bool kCanFillHoles = !kWindow && !kLayerShared && !kShared && !Merger::kGroupsBeforeSelect;
  static constexpr std::int64_t kGranule = 16;  // capacity granule (tokens)
  static constexpr std::int64_t kMaxLogitFloats = std::int64_t{1} << 22;  // decode logits per worker (16 MiB)

  const char* spec() const override { return spec_.c_str(); }
  std::uint32_t wanted_signals() const override {
    std::uint32_t w = cache::kSignalNone;
    if (Policy::kSignals & evict::kTokenLogProbs) w |= cache::kSignalTokenLogProbs;
    if (Policy::kSignals & evict::kTokenIds) w |= cache::kSignalTokenIds;
    if (params_.once) w |= cache::kSignalPromptEnd;
    return w;
  }

  Status pin(const evict::RetentionRange& r) override {
    if (r.seq < 0 || r.seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    MEMATTN_RETURN_IF_ERROR(table_.add(r));
    recount();
    return Status::kSuccess;
  }
  Status pin_template(const evict::RetentionRange& r, const std::string& spec_suffix) override {
    evict::RetentionTable probe;
    MEMATTN_RETURN_IF_ERROR(probe.add(r));
    templates_.push_back(r);
    spec_ += spec_suffix;
    for (int s = 0; s < shape_.max_sequences; ++s)
      if (chunks_.len(s) == 0) install_templates(s);
    recount();
    return Status::kSuccess;
  }
  const evict::RetentionTable& retention() const override { return table_; }
  const cache::CacheShape& shape() const override { return shape_; }
  const Params& params() const { return params_.policy; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_attend_args(shape_, seq, layer, q, k, v, out));
    const std::int64_t n = q.shape[0], len = chunks_.len(seq);
    MEMATTN_RETURN_IF_ERROR(chunks_.check_step(seq, layer, n, shape_.max_tokens));
    // NaN keys would poison the scores; values beyond fp16 would be stored as inf.
    if (!all_finite(q) || !storable<T>(k) || !storable<T>(v)) return Status::kErrorNonFinite;

    const std::int64_t Hkv = shape_.kv_heads, D = shape_.head_dim, G = shape_.q_heads / Hkv;
    for (std::int64_t h = 0; h < Hkv; ++h) grow(segment(seq, layer, h), segment(seq, layer, h).size + n);
    // Scratch: dense decode workspace + lse + epilogue scratch, per worker.
    std::size_t need = 0;
    {
      std::int32_t probe = 0;
      const Segment& s0 = segment(seq, layer, 0);
      MEMATTN_RETURN_IF_ERROR(dense_decode_workspace_size(decode_args(s0, q, out, 0, n, &probe), &need));
    }
    // Probability scorers take p = exp(s - lse) from the logits the decode writes (one pass over
    // the keys); a chunk whose logits would not fit kMaxLogitFloats recomputes them per token.
    std::int64_t cap = 0;
    for (std::int64_t h = 0; h < Hkv; ++h) cap = std::max(cap, segment(seq, layer, h).capacity);
    const bool fused_probs = Scorer::kNeedsDecodeProbs && n * G * cap <= kMaxLogitFloats;
    for (auto& w : workers_) {
      w.ws.resize(need);
      if (w.lse.size() < static_cast<std::size_t>(n * G)) w.lse.resize(static_cast<std::size_t>(n * G));
      if (w.probs.size() < probs_scratch_elems(G, D)) w.probs.resize(probs_scratch_elems(G, D));
      if (fused_probs && w.logits.size() < static_cast<std::size_t>(n * G * cap))
        w.logits.resize(static_cast<std::size_t>(n * G * cap));
    }
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    std::vector<Status> status(static_cast<std::size_t>(Hkv), Status::kSuccess);
    executor_.for_each(Hkv, [&](std::int64_t h, int worker) {
      Segment& sg = segment(seq, layer, h);
      Worker& w = workers_[static_cast<std::size_t>(worker)];
      const std::int64_t base = sg.size;
      for (std::int64_t t = 0; t < n; ++t) {
        from_float_n(k.ptr(t, h), D, sg.k.data() + (base + t) * D);
        from_float_n(v.ptr(t, h), D, sg.v.data() + (base + t) * D);
        sg.pos[static_cast<std::size_t>(base + t)] = static_cast<std::int32_t>(len + t);
        if constexpr (kHasState)
          Policy::init_token(sg.state.data(), base + t, k.ptr(t, h), static_cast<int>(D), static_cast<std::int32_t>(len + t));
      }
      std::int32_t seq_len = 0;
      auto a = decode_args(sg, q, out, h, n, &seq_len);
      seq_len = static_cast<std::int32_t>(base + n);
      a.lse = make_view<3>(w.lse.data(), {1, n, G});
      if (fused_probs) a.scores = make_view<4>(w.logits.data(), {1, 1, n * G, sg.capacity});
      Status st = dense_decode(a, w.ws.data(), need);
      if (st == Status::kSuccess && Scorer::kNeedsDecodeProbs) {
        for (std::int64_t t = 0; t < n && st == Status::kSuccess; ++t) {
          const std::int64_t visible = base + t + 1;
          auto on_prob = [&](std::int64_t slot, float pbar) {
            Policy::on_decode_prob(params_.policy, sg.state.data(), slot, pbar, visible, static_cast<std::int32_t>(len + t));
          };
          if (fused_probs)
            st = logit_probs(w.logits.data() + t * G * sg.capacity, sg.capacity, w.lse.data() + t * G, G, visible,
                             params_.scorer_reduce(), w.probs.data(), on_prob);
          else
            st = decode_probs(q.ptr(t, h * G), q.stride[1], w.lse.data() + t * G, G, D, scale, sg.k.data(), D, visible,
                              params_.scorer_reduce(), w.probs.data(), on_prob);
        }
      }
      sg.size = base + n;
      status[static_cast<std::size_t>(h)] = st;
    });
    for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    if constexpr (kWindow) push_window_queries(seq, layer, q, len);
    chunks_.record(seq, layer, n);
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals& signals) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    if (!chunks_.complete(seq)) return Status::kErrorInvalidArgument;  // a layer was skipped
    const std::int64_t n = chunks_.pending(seq);
    if constexpr ((Policy::kSignals & evict::kTokenLogProbs) != 0) {
      // the policy scores from the engine's log-probs: one per chunk token (wanted_signals())
      if (n > 0 && (signals.token_logprobs == nullptr || signals.count != n)) return Status::kErrorInvalidArgument;
    }
    if constexpr (Policy::kOnChunk) {
      if (n > 0) {
        evict::TokenSignals ts;
        ts.logprobs = signals.token_logprobs;
        ts.ids = signals.token_ids;
        ts.count = n;
        ts.first_pos = chunks_.len(seq);
        for (int l = 0; l < shape_.layers; ++l)
          for (int h = 0; h < shape_.kv_heads; ++h) {
            Segment& sg = segment(seq, l, h);
            Scorer::on_chunk(params_.policy.scorer, sg.state.data(), sg.pos.data(), sg.size - n, sg.size, ts);
          }
      }
    }
    chunks_.close(seq);
    if (chunks_.len(seq) == 0) return Status::kSuccess;
    if (params_.once) {  // compress at the prompt's end only, once per sequence
      if (!signals.prompt_end || compressed_[seq]) {
        recount();
        return Status::kSuccess;
      }
      compressed_[seq] = 1;
    }
    if constexpr (kPlansLayers) MEMATTN_RETURN_IF_ERROR(plan_layer_budgets(seq));
    const std::int64_t L = shape_.layers, Hkv = shape_.kv_heads;
    if constexpr (kShared) {
      const std::int64_t gs = Policy::group_layers(params_.policy, shape_.layers);
      const std::int64_t groups = (L + gs - 1) / gs;
      std::vector<Status> status(static_cast<std::size_t>(groups), Status::kSuccess);
      executor_.for_each(groups, [&](std::int64_t g, int worker) {
        status[static_cast<std::size_t>(g)] = compact_group(seq, static_cast<int>(g * gs),
                                                            static_cast<int>(std::min(L, (g + 1) * gs)),
                                                            workers_[static_cast<std::size_t>(worker)]);
      });
      for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    } else {
      const std::int64_t tasks = kLayerShared ? L : L * Hkv;
      std::vector<Status> status(static_cast<std::size_t>(tasks), Status::kSuccess);
      executor_.for_each(tasks, [&](std::int64_t task, int worker) {
        Worker& wk = workers_[static_cast<std::size_t>(worker)];
        status[static_cast<std::size_t>(task)] = kLayerShared ? compact_layer(seq, static_cast<int>(task), wk)
                                                               : compact(seq, static_cast<int>(task / Hkv), task % Hkv, wk);
      });
      for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    }
    recount();
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    for (int l = 0; l < shape_.layers; ++l) {
      for (int h = 0; h < shape_.kv_heads; ++h) segment(seq, l, h) = Segment{};
      if constexpr (kWindow) windows_[static_cast<std::size_t>(seq) * shape_.layers + l] = Window{};
    }
    chunks_.reset(seq);
    compressed_[seq] = 0;
    if constexpr (kPlansLayers)
      std::fill(plan_.begin() + static_cast<std::ptrdiff_t>(seq) * shape_.layers,
                plan_.begin() + static_cast<std::ptrdiff_t>(seq + 1) * shape_.layers, std::int64_t(-1));
    table_.clear(seq);
    install_templates(seq);
    recount();
    return Status::kSuccess;
  }

  // Reserves min(tokens, budget + one granule) per segment: an evicting cache holds its budget
  // plus at most one chunk.
  Status reserve(int seq, int tokens) override {
    if (seq < 0 || seq >= shape_.max_sequences || tokens < 0) return Status::kErrorInvalidArgument;
    if (tokens > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    for (int l = 0; l < shape_.layers; ++l) {
      const std::int64_t b = Policy::budget(params_.policy, l, shape_.layers, tokens);
      for (int h = 0; h < shape_.kv_heads; ++h) {
        Segment& sg = segment(seq, l, h);
        const std::int64_t want = std::min<std::int64_t>(tokens, b + kGranule);
        if (want > sg.capacity) set_capacity(sg, want);
      }
    }
    recount();
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override { return seq >= 0 && seq < shape_.max_sequences ? chunks_.len(seq) : 0; }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }

  // ---- inspection (tests, reports) ----
  std::int64_t segment_size(int seq, int layer, int head) const { return segment(seq, layer, head).size; }
  const std::int32_t* segment_positions(int seq, int layer, int head) const {
    return segment(seq, layer, head).pos.data();
  }
  const T* segment_keys(int seq, int layer, int head) const { return segment(seq, layer, head).k.data(); }
  const T* segment_values(int seq, int layer, int head) const { return segment(seq, layer, head).v.data(); }
  const State* segment_state(int seq, int layer, int head) const {
    return kHasState ? segment(seq, layer, head).state.data() : nullptr;
  }
  // Budget of (layer) for a sequence that has seen P tokens.
  std::int64_t budget(int layer, std::int64_t P) const { return Policy::budget(params_.policy, layer, shape_.layers, P); }
  // Budget a segment of (seq, layer) compacts to now: the sequence's plan (kAllLayers allocators)
  // or the allocator's function of P.
  std::int64_t segment_budget(int seq, int layer) const {
    if constexpr (kPlansLayers) {
      const std::int64_t b = plan_[static_cast<std::size_t>(seq) * shape_.layers + layer];
      if (b >= 0) return b;
    }
    return Policy::budget(params_.policy, layer, shape_.layers, chunks_.len(seq));
  }

  // Runtime parameters: the policy's Params plus the GQA reduction of its probability scorers.
  struct Config {
    Params policy;
    evict::GroupReduce reduce = evict::GroupReduce::kMean;
    bool ordered = false;  // true: ordered compaction even where hole filling applies (kCanFillHoles)
    // Prefill-only compression (spec §7.5 E1, kvpress's setting): compact once, at the end of the
    // chunk the engine marks prompt_end, then append without eviction (segments grow).
    bool once = false;
    evict::GroupReduce scorer_reduce() const { return reduce; }
  };

 private:
  struct Segment {
    std::vector<T> k, v;             // [capacity][D]
    std::vector<std::int32_t> pos;   // [capacity]
    std::vector<State> state;        // [capacity] when the scorer keeps state
    typename Merger::SegmentState merge;  // e.g. D2O's similarity threshold
    std::int64_t size = 0;
    std::int64_t capacity = 0;
    std::size_t bytes() const {
      return (k.size() + v.size()) * sizeof(T) + pos.size() * sizeof(std::int32_t) + state.size() * sizeof(State);
    }
  };
  struct Window {  // last w queries of a (seq, layer), oldest first, fp16 as the cache
    std::vector<T> q;               // [w][Hq][D]
    std::vector<std::int32_t> pos;  // [w]
    std::int64_t count = 0;
    std::size_t bytes() const { return q.size() * sizeof(T) + pos.size() * sizeof(std::int32_t); }
  };
  struct Worker {
    HostWorkspace ws;
    std::vector<float> lse, probs, logits, scores, colsum, qrows, headcol, tok, wscore;
    std::vector<std::int64_t> order;
    std::vector<std::uint8_t> prio;
    std::vector<std::uint64_t> keys;
    std::vector<std::int32_t> keep;
    std::vector<std::int64_t> visible;
    MergeScratch merge;
  };

 public:
  // The factory builds the cache from a Config (policy params + GQA reduction).
  static Status create(const cache::CacheShape& shape, const Config& config, const std::string& spec,
                       const Executor& executor, std::unique_ptr<EvictKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    MEMATTN_RETURN_IF_ERROR(Policy::check(config.policy, shape.max_tokens));
    out->reset(new EvictKvCache(shape, config, spec, executor));
    return Status::kSuccess;
  }

 private:
  EvictKvCache(const cache::CacheShape& shape, const Config& config, const std::string& spec, const Executor& executor)
      : shape_(shape),
        params_(config),
        executor_(executor),
        spec_(spec),
        segments_(static_cast<std::size_t>(shape.max_sequences) * shape.layers * shape.kv_heads),
        windows_(kWindow ? static_cast<std::size_t>(shape.max_sequences) * shape.layers : 0),
        chunks_(shape.max_sequences, shape.layers),
        compressed_(static_cast<std::size_t>(shape.max_sequences), 0),
        plan_(kPlansLayers ? static_cast<std::size_t>(shape.max_sequences) * shape.layers : 0, -1),
        workers_(static_cast<std::size_t>(executor.concurrency())) {}

  Segment& segment(int seq, int layer, std::int64_t h) {
    return segments_[(static_cast<std::size_t>(seq) * shape_.layers + layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }
  const Segment& segment(int seq, int layer, std::int64_t h) const {
    return segments_[(static_cast<std::size_t>(seq) * shape_.layers + layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }

  void set_capacity(Segment& sg, std::int64_t cap) {
    const std::size_t rows = static_cast<std::size_t>(cap), D = static_cast<std::size_t>(shape_.head_dim);
    const std::size_t keep = static_cast<std::size_t>(std::min(sg.size, cap));
    std::vector<T> k(rows * D), v(rows * D);
    std::copy(sg.k.begin(), sg.k.begin() + static_cast<std::ptrdiff_t>(keep * D), k.begin());
    std::copy(sg.v.begin(), sg.v.begin() + static_cast<std::ptrdiff_t>(keep * D), v.begin());
    std::vector<std::int32_t> pos(rows);
    std::copy(sg.pos.begin(), sg.pos.begin() + static_cast<std::ptrdiff_t>(keep), pos.begin());
    sg.k.swap(k);
    sg.v.swap(v);
    sg.pos.swap(pos);
    if constexpr (kHasState) {
      std::vector<State> st(rows);
      std::copy(sg.state.begin(), sg.state.begin() + static_cast<std::ptrdiff_t>(keep), st.begin());
      sg.state.swap(st);
    }
    sg.capacity = cap;
  }

  // Growth while appending (single-threaded part of attend; bytes recounted right after).
  void grow(Segment& sg, std::int64_t need) {
    if (need <= sg.capacity) return;
    // A segment never holds more than its budget plus one chunk: grow to the need, in granules.
    const std::int64_t cap = (need + kGranule - 1) / kGranule * kGranule;
    set_capacity(sg, std::min<std::int64_t>(cap, shape_.max_tokens));
    recount();
  }

  void recount() {
    std::size_t b = 0;
    for (const Segment& s : segments_) b += s.bytes();
    for (const Window& w : windows_) b += w.bytes();
    b += table_.bytes();
    bytes_ = b;
    peak_ = std::max(peak_, bytes_);
  }

  attention::DecodeArgs<T, float> decode_args(const Segment& sg, const TensorView<const float, 3>& q,
                                              const TensorView<float, 3>& out, std::int64_t h, std::int64_t n,
                                              std::int32_t* seq_len) const {
    const std::int64_t D = shape_.head_dim, G = shape_.q_heads / shape_.kv_heads;
    *seq_len = static_cast<std::int32_t>(sg.size + n);
    attention::DecodeArgs<T, float> a;
    a.q = make_strided_view<4>(q.ptr(0, h * G), {1, n, G, D}, {0, q.stride[0], q.stride[1], 1});
    a.o = make_strided_view<4>(out.ptr(0, h * G), {1, n, G, D}, {0, out.stride[0], out.stride[1], 1});
    a.k_cache = make_strided_view<4>(static_cast<const T*>(sg.k.data()), {1, 1, sg.capacity, D}, {0, 0, D, 1});
    a.v_cache = make_strided_view<4>(static_cast<const T*>(sg.v.data()), {1, 1, sg.capacity, D}, {0, 0, D, 1});
    a.seq_lens = seq_len;
    return a;
  }

  void push_window_queries(int seq, int layer, const TensorView<const float, 3>& q, std::int64_t len) {
    Window& w = windows_[static_cast<std::size_t>(seq) * shape_.layers + layer];
    const std::int64_t W = params_.policy.scorer.window, Hq = shape_.q_heads, D = shape_.head_dim, n = q.shape[0];
    const std::int64_t row = Hq * D;
    if (w.q.empty()) {
      w.q.resize(static_cast<std::size_t>(W * row));
      w.pos.resize(static_cast<std::size_t>(W));
    }
    const std::int64_t take = std::min(n, W);
    const std::int64_t keep_old = std::min(w.count, W - take);
    // shift the newest keep_old entries to the front, then append the chunk's last `take` queries
    const std::int64_t drop = w.count - keep_old;
    if (drop > 0 && keep_old > 0) {
      std::memmove(w.q.data(), w.q.data() + drop * row, static_cast<std::size_t>(keep_old * row) * sizeof(T));
      std::memmove(w.pos.data(), w.pos.data() + drop, static_cast<std::size_t>(keep_old) * sizeof(std::int32_t));
    }
    for (std::int64_t i = 0; i < take; ++i) {
      const std::int64_t t = n - take + i;
      for (std::int64_t hq = 0; hq < Hq; ++hq) from_float_n(q.ptr(t, hq), D, w.q.data() + (keep_old + i) * row + hq * D);
      w.pos[static_cast<std::size_t>(keep_old + i)] = static_cast<std::int32_t>(len + t);
    }
    w.count = keep_old + take;
    recount();
  }

  Status compact(int seq, int layer, std::int64_t h, Worker& wk) {
    Segment& sg = segment(seq, layer, h);
    const std::int64_t N = sg.size, P = chunks_.len(seq);
    const std::int64_t C = segment_budget(seq, layer);
    if (!Policy::should_compact(params_.policy, N, C)) return Status::kSuccess;
    const std::int32_t t_cur = static_cast<std::int32_t>(P - 1);
    const evict::Protection pr = Policy::protection(params_.policy);
    wk.scores.resize(static_cast<std::size_t>(N));
    wk.keys.resize(static_cast<std::size_t>(N));
    wk.keep.resize(static_cast<std::size_t>(N));
    if constexpr (kWindow) {
      MEMATTN_RETURN_IF_ERROR(window_scores(seq, layer, h, sg, t_cur, pr, wk));
    } else {
      for (std::int64_t j = 0; j < N; ++j)
        wk.scores[static_cast<std::size_t>(j)] = Policy::score(params_.policy, sg.state.data(), sg.pos.data(), j, t_cur);
    }
    const std::int64_t D = shape_.head_dim;
    if constexpr (Merger::kGroupsBeforeSelect)
      MEMATTN_RETURN_IF_ERROR(CpuMerger<Merger>::group(params_.policy.merger, sg.k.data(), D, sg.pos.data(), N, t_cur,
                                                       pr, wk.scores.data(), &wk.merge));
    std::int64_t count = 0;
    const std::uint8_t* prio = priorities(seq, layer, layer + 1, sg, wk);
    MEMATTN_RETURN_IF_ERROR(select_keep(wk.scores.data(), sg.pos.data(), prio, N, C, t_cur, pr,
                                        params_.policy.selector.tie, wk.keys.data(), wk.keep.data(), &count));
    if constexpr (Policy::kMerges)
      MEMATTN_RETURN_IF_ERROR(CpuMerger<Merger>::merge(params_.policy.merger, &sg.merge, sg.k.data(), sg.v.data(), D, N,
                                                       wk.keep.data(), count, kHasState ? sg.state.data() : nullptr,
                                                       &wk.merge));
    apply_keep(sg, wk.keep.data(), count);
    return Status::kSuccess;
  }

  // Retention priorities of a segment's slots over layers [l0, l1) (max), or nullptr when no
  // range of the sequence is active (the plain key, bit-identical to a cache without ranges).
  const std::uint8_t* priorities(int seq, int l0, int l1, const Segment& sg, Worker& wk) const {
    const std::int64_t now = chunks_.len(seq);
    bool any = false;
    for (int l = l0; l < l1 && !any; ++l) any = table_.any_active(seq, l, now);
    if (!any) return nullptr;
    wk.prio.assign(static_cast<std::size_t>(sg.size), 0);
    for (std::int64_t j = 0; j < sg.size; ++j)
      for (int l = l0; l < l1; ++l)
        wk.prio[static_cast<std::size_t>(j)] =
            std::max(wk.prio[static_cast<std::size_t>(j)], table_.priority(seq, l, sg.pos[static_cast<std::size_t>(j)], now));
    return wk.prio.data();
  }

  void install_templates(int seq) {
    for (evict::RetentionRange r : templates_) {
      r.seq = seq;  // expires_at holds the TTL in steps; the sequence starts at step 0
      (void)table_.add(r);
    }
  }

  // Shared selection (WindowKV, §2.4): one keep set per layer group, computed at its first layer
  // from every KV head's window column sums, applied to every head of every layer of the group.
  Status compact_group(int seq, int l0, int l1, Worker& wk) {
    const Segment& lead = segment(seq, l0, 0);
    const std::int64_t N = lead.size, P = chunks_.len(seq), Hkv = shape_.kv_heads;
    const std::int64_t C = Policy::budget(params_.policy, l0, shape_.layers, P);
    if (!Policy::should_compact(params_.policy, N, C)) return Status::kSuccess;
    for (int l = l0; l < l1; ++l)  // the group's segments hold the same positions by construction
      for (std::int64_t h = 0; h < Hkv; ++h) {
        const Segment& sg = segment(seq, l, h);
        if (sg.size != N || !std::equal(sg.pos.begin(), sg.pos.begin() + N, lead.pos.begin()))
          return Status::kErrorInvalidArgument;
      }
    const std::int32_t t_cur = static_cast<std::int32_t>(P - 1);
    const evict::Protection pr = Policy::protection(params_.policy);
    wk.scores.assign(static_cast<std::size_t>(N), 0.f);
    wk.keys.resize(static_cast<std::size_t>(N));
    wk.keep.resize(static_cast<std::size_t>(N));
    wk.headcol.resize(static_cast<std::size_t>(Hkv * N));
    for (std::int64_t h = 0; h < Hkv; ++h)
      MEMATTN_RETURN_IF_ERROR(window_column_sums(seq, l0, h, lead, wk, wk.headcol.data() + h * N));
    const std::int64_t tail = review_end(lead, t_cur, pr);
    Scorer::unit_scores(params_.policy.scorer, wk.headcol.data(), Hkv, N, tail, wk.scores.data(), wk.tok, wk.wscore,
                        wk.order);
    std::int64_t count = 0;
    const std::uint8_t* prio = priorities(seq, l0, l1, lead, wk);
    MEMATTN_RETURN_IF_ERROR(select_keep(wk.scores.data(), lead.pos.data(), prio, N, C, t_cur, pr,
                                        params_.policy.selector.tie, wk.keys.data(), wk.keep.data(), &count));
    for (int l = l0; l < l1; ++l)
      for (std::int64_t h = 0; h < Hkv; ++h) apply_keep(segment(seq, l, h), wk.keep.data(), count);
    return Status::kSuccess;
  }

  // One permutation for K, V, positions and state; storage given back when the segment holds far
  // less than its capacity (room for one more decode token), so kept bytes track the budget.
  void apply_keep(Segment& sg, const std::int32_t* keep, std::int64_t count) {
    const std::int64_t D = shape_.head_dim;
    if (kCanFillHoles && !params_.ordered) {
      fill_holes(sg.k.data(), D, keep, count);
      fill_holes(sg.v.data(), D, keep, count);
      fill_holes(sg.pos.data(), 1, keep, count);
      if constexpr (kHasState) fill_holes(sg.state.data(), 1, keep, count);
    } else {
      compact_rows(sg.k.data(), D, keep, count);
      compact_rows(sg.v.data(), D, keep, count);
      compact_rows(sg.pos.data(), 1, keep, count);
      if constexpr (kHasState) compact_rows(sg.state.data(), 1, keep, count);
    }
    sg.size = count;
    if (sg.capacity - count > 2 * kGranule) set_capacity(sg, (count + 1 + kGranule - 1) / kGranule * kGranule);
  }

  // Layer-shared selection (kLayerShared): score the layer once from its selected heads, select on
  // head 0's positions (every head of the layer holds the same ones), compact every head alike.
  Status compact_layer(int seq, int layer, Worker& wk) {
    Segment& s0 = segment(seq, layer, 0);
    const std::int64_t N = s0.size, P = chunks_.len(seq), Hkv = shape_.kv_heads;
    const std::int64_t C = Policy::budget(params_.policy, layer, shape_.layers, P);
    if (!Policy::should_compact(params_.policy, N, C)) return Status::kSuccess;
    const std::int32_t t_cur = static_cast<std::int32_t>(P - 1);
    const evict::Protection pr = Policy::protection(params_.policy);
    wk.scores.resize(static_cast<std::size_t>(N));
    wk.keys.resize(static_cast<std::size_t>(N));
    wk.keep.resize(static_cast<std::size_t>(N));
    if constexpr (kLayerShared) MEMATTN_RETURN_IF_ERROR(head_subset_scores(seq, layer, s0, t_cur, pr, wk));
    std::int64_t count = 0;
    const std::uint8_t* prio = priorities(seq, layer, layer + 1, s0, wk);
    MEMATTN_RETURN_IF_ERROR(select_keep(wk.scores.data(), s0.pos.data(), prio, N, C, t_cur, pr,
                                        params_.policy.selector.tie, wk.keys.data(), wk.keep.data(), &count));
    for (std::int64_t h = 0; h < Hkv; ++h) apply_keep(segment(seq, layer, h), wk.keep.data(), count);
    return Status::kSuccess;
  }

  // CompressKV: window attention of the layer's retrieval heads (cpu/compresskv_scores.hpp).
  Status head_subset_scores(int seq, int layer, const Segment& s0, std::int32_t t_cur, const evict::Protection& pr,
                            Worker& wk) {
    const Window& w = windows_[static_cast<std::size_t>(seq) * shape_.layers + layer];
    const auto& sp = params_.policy.scorer;
    const std::int64_t N = s0.size, D = shape_.head_dim, Hkv = shape_.kv_heads;
    if (w.count <= 0 || !sp.plan) return Status::kErrorInvalidArgument;
    const std::int64_t tail = review_end(s0, t_cur, pr);
    std::vector<const T*> keys(static_cast<std::size_t>(Hkv));
    for (std::int64_t h = 0; h < Hkv; ++h) keys[static_cast<std::size_t>(h)] = segment(seq, layer, h).k.data();
    wk.colsum.resize(head_subset_scratch_elems(w.count, D, N));
    wk.visible.resize(head_subset_visible_elems(w.count));
    return head_subset_window_scores(w.q.data(), w.pos.data(), w.count, shape_.q_heads, Hkv, D, keys.data(),
                                     s0.pos.data(), N, tail, sp.plan->layer_heads(layer), sp.plan->first_k, sp.kernel,
                                     sp.pool, sp.count_include_pad, wk.scores.data(), wk.colsum.data(),
                                     wk.visible.data());
  }

  // kAllLayers allocators: once per sequence, when it first exceeds C, from every layer's
  // per-token scores (D2O: H2O column sums) -> per-layer densities -> exact layer budgets.
  Status plan_layer_budgets(int seq) {
    std::int64_t* plan = plan_.data() + static_cast<std::size_t>(seq) * shape_.layers;
    if (plan[0] >= 0 || chunks_.len(seq) <= params_.policy.budget) return Status::kSuccess;
    static_assert(Policy::kState == evict::StateKind::kF32, "a kAllLayers allocator reads fp32 per-token scores");
    const int L = shape_.layers, Hkv = shape_.kv_heads;
    std::vector<double> head_var(static_cast<std::size_t>(Hkv)), density(static_cast<std::size_t>(L));
    for (int l = 0; l < L; ++l) {
      for (int h = 0; h < Hkv; ++h) {
        const Segment& sg = segment(seq, l, h);
        head_var[static_cast<std::size_t>(h)] = Allocator::head_variance(sg.state.data(), sg.size);
      }
      density[static_cast<std::size_t>(l)] = Allocator::layer_density(head_var.data(), Hkv);
    }
    const evict::Protection pr = Policy::protection(params_.policy);
    return Allocator::plan(params_.policy.allocator, density.data(), L, params_.policy.budget,
                           static_cast<std::int64_t>(pr.n_sink) + pr.n_recent, plan);
  }

  // First slot of the protected recent tail (the observation window of window scorers).
  static std::int64_t review_end(const Segment& sg, std::int32_t t_cur, const evict::Protection& pr) {
    std::int64_t tail = sg.size;
    while (tail > 0 && evict::is_protected(sg.pos[static_cast<std::size_t>(tail - 1)], t_cur, evict::Protection{0, pr.n_recent}))
      --tail;
    return tail;
  }

  // Observation-window column sums of (seq, layer, h) (two passes, GQA-reduced) into col[N].
  Status window_column_sums(int seq, int layer, std::int64_t h, const Segment& sg, Worker& wk, float* col) {
    const Window& w = windows_[static_cast<std::size_t>(seq) * shape_.layers + layer];
    const std::int64_t N = sg.size, D = shape_.head_dim, Hq = shape_.q_heads, G = Hq / shape_.kv_heads;
    const std::int64_t Wn = w.count;
    if (Wn <= 0) return Status::kErrorInvalidArgument;
    wk.qrows.resize(static_cast<std::size_t>(Wn * G * D));
    for (std::int64_t i = 0; i < Wn; ++i)
      to_float_n(w.q.data() + i * Hq * D + h * G * D, G * D, wk.qrows.data() + i * G * D);
    wk.colsum.resize(window_colsum_scratch_elems(G, Wn, D, N));
    wk.visible.resize(static_cast<std::size_t>(Wn * G));
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    return window_colsum(wk.qrows.data(), G * D, D, w.pos.data(), Wn, G, D, scale, sg.k.data(), D, sg.pos.data(), N,
                         params_.scorer_reduce(), col, wk.colsum.data(), wk.visible.data());
  }

  // SnapKV/PyramidKV scores: observation-window column sums (two passes, GQA-reduced), pooled over
  // the candidate region (slots before the protected tail).
  Status window_scores(int seq, int layer, std::int64_t h, const Segment& sg, std::int32_t t_cur,
                       const evict::Protection& pr, Worker& wk) {
    const std::int64_t N = sg.size;
    wk.headcol.resize(static_cast<std::size_t>(N));
    MEMATTN_RETURN_IF_ERROR(window_column_sums(seq, layer, h, sg, wk, wk.headcol.data()));
    const std::int64_t tail = review_end(sg, t_cur, pr);
    std::fill(wk.scores.begin(), wk.scores.begin() + N, 0.f);
    const auto& sp = params_.policy.scorer;
    return pool_scores(wk.headcol.data(), tail, sp.kernel, sp.pool, sp.count_include_pad, wk.scores.data());
  }

  cache::CacheShape shape_;
  Config params_;
  Executor executor_;
  std::string spec_;
  std::vector<Segment> segments_;          // [seq][layer][kv head]
  std::vector<Window> windows_;            // [seq][layer] (window scorers)
  ChunkLedger chunks_;  // held tokens per sequence, the open chunk's per sequence and layer
  std::vector<std::uint8_t> compressed_;   // Config::once: the prompt was compressed
  std::vector<std::int64_t> plan_;           // [seq][layer]: planned budgets, -1 = none (kAllLayers)
  std::vector<Worker> workers_;
  evict::RetentionTable table_;                  // active pins of every sequence
  std::vector<evict::RetentionRange> templates_;  // spec pins, installed at every sequence start
  std::size_t bytes_ = 0;
  std::size_t peak_ = 0;
};


// ---- --kv registry entries (cpu/kv_cache_factory.hpp lists them) ---------------------------------

inline const std::vector<cache::PolicyInfo>& evict_policy_infos() {
  static const std::vector<cache::PolicyInfo> infos = [] {
    std::vector<cache::PolicyInfo> v = {
      {"streaming", "StreamingLLM: the first `sink` tokens + the newest `window` (budget sink + window per KV head)",
       {{"sink", 4, 0, 1000000, true, "attention-sink tokens kept"},
        {"window", 252, 1, 10000000, true, "newest tokens kept"}}},
      {"h2o", "H2O: heavy hitters by accumulated attention (GQA-reduced) + the newest `recent`, `budget` per KV head",
       {{"budget", 256, 1, 10000000, true, "tokens kept per (layer, KV head), recent included"},
        {"recent", -1, -1, 10000000, true, "newest tokens protected; -1: budget/2 (heavy:recent 1:1)"},
        {"gamma", 1, 0, 1, false, "decay of the accumulated score (1 = H2O, <1 = A2SF)"},
        {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}},
      {"scissorhands", "Scissorhands: drop the `drop` tokens most often below uniform attention over the last `history` steps",
       {{"budget", 256, 1, 10000000, true, "tokens kept per (layer, KV head) after a drop"},
        {"history", 32, 1, 64, true, "history window w_h (steps)"},
        {"recent", 32, 0, 10000000, true, "newest tokens protected"},
        {"drop", 64, 1, 1000000, true, "tokens dropped per compaction (m)"},
        {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}},
      {"snapkv", "SnapKV: observation-window attention (last `window` queries), pooled, top budget - window + the window",
       {{"budget", 2048, 1, 10000000, true, "tokens kept per (layer, KV head), window included"},
        {"window", 32, 1, 4096, true, "observation window w"},
        {"kernel", 7, 1, 63, true, "pooling kernel (odd)"},
        {"pool", 1, 0, 1, true, "0 avg, 1 max"},
        {"pad", 1, 0, 1, true, "avg pooling counts the zero padding (reference parity)"},
        {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}},
      {"pyramidkv", "PyramidKV: SnapKV scores with the pyramidal layer budget (average `budget` per layer)",
       {{"budget", 2048, 1, 10000000, true, "average tokens kept per (layer, KV head), window included"},
        {"window", 32, 1, 4096, true, "observation window w"},
        {"kernel", 5, 1, 63, true, "pooling kernel (odd)"},
        {"pool", 0, 0, 1, true, "0 avg, 1 max"},
        {"pad", 1, 0, 1, true, "avg pooling counts the zero padding (reference parity)"},
        {"beta", 20, 1, 1000, true, "pyramid ratio beta"},
        {"exact", 1, 0, 1, true, "1: layer budgets sum exactly to layers x budget; 0: reference (floored step)"},
        {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}},
      {"knorm", "KNorm: keep the lowest-norm keys (query-free), `budget` per KV head",
       {{"budget", 256, 1, 10000000, true, "tokens kept per (layer, KV head)"},
        {"sink", 0, 0, 1000000, true, "first tokens protected"},
        {"recent", 0, 0, 10000000, true, "newest tokens protected"}}},
      // issue 6 (evict/lazy.hpp, evict/sirllm.hpp, evict/windowkv.hpp)
      {"lazy", "LazyEviction: max-recurrence-interval score (mri - idle, hits p >= alpha), compaction every `window` steps to `budget`, the newest `window` protected",
       {{"budget", 256, 1, 10000000, true, "tokens kept per (layer, KV head) after a compaction (peak budget + window)"},
        {"window", -1, -1, 1000000, true, "observation window W (lag, compaction period); -1: min(175, budget/2)"},
        {"alpha", 1e-4, 0, 1, false, "hit threshold on the GQA-reduced probability"},
        {"acctie", 1, 0, 1, true, "1: ties of the integer score go to the higher accumulated attention"},
        {"raw", 0, 0, 1, true, "1: score = mri - idle (spec); 0: min(mri - idle, 0) (every token inside its interval ranks equal)"},
        {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}},
      {"sirllm", "SirLLM: sinks + top token surprisal (-log p from the model's log-probs, decayed per turn) + recent",
       {{"budget", 1024, 1, 10000000, true, "tokens kept (start + entropy + recent), every layer and head"},
        {"start", 4, 0, 1000000, true, "attention-sink tokens kept"},
        {"recent", 0, 0, 10000000, true, "newest tokens kept"},
        {"decay", 1, 0, 1, false, "per-turn decay of the kept surprisal scores"},
        {"turn", 0, 0, 10000000, true, "tokens per turn for the decay; 0: every chunk is a turn"}}},
      {"windowkv", "WindowKV: suffix-window attention scored per window of `block` tokens, one index set per `shared` layers, arithmetic group budgets",
       {{"budget", 2048, 1, 10000000, true, "average tokens kept per (layer, KV head), suffix included"},
        {"window", -1, -1, 4096, true, "suffix (observation) window s; -1: 16 (mode 0) or 32 (mode 1)"},
        {"block", 8, 1, 4096, true, "window (block) size R"},
        {"mode", 0, 0, 1, true, "window score: 0 average (non-QA), 1 max of the top R/2 (QA)"},
        {"shared", 8, 1, 1024, true, "layers per group sharing one index set"},
        {"beta", 14, 1, 1000, true, "group budget ratio beta"},
        {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}},
    };
    // every evicting policy: prefill-only compression (E1), written back only when set
    for (auto& info : v)
      info.params.push_back({"once", 0, 0, 1, true,
                             "1: compress once, at the end of the prompt (the engine's prompt_end), then append "
                             "without eviction (kvpress-style prefill compression, spec E1)",
                             false, true});
    return v;
  }();
  return infos;
}

inline const cache::PolicyInfo& evict_policy_info(const char* name) {
  for (const auto& p : evict_policy_infos())
    if (std::string(name) == p.name) return p;
  return evict_policy_infos().front();
}

inline bool is_evict_policy(const std::string& name) {
  for (const auto& p : evict_policy_infos())
    if (name == p.name) return true;
  return false;
}

namespace evict_registry {
template <class Policy>
Status build(const typename EvictKvCache<Policy>::Config& cfg, const cache::PolicyInfo& info,
             const cache::ResolvedParams& rp, const cache::CacheShape& shape, const Executor& executor,
             std::unique_ptr<cache::KvCache>* out, std::string* error) {
  const Status st = Policy::check(cfg.policy, shape.max_tokens);
  if (st != Status::kSuccess) {
    *error = std::string(info.name) + ": " +
             (st == Status::kErrorCapacityExceeded
                  ? "budget " + std::to_string(cfg.policy.budget) + " is larger than the cache capacity " +
                        std::to_string(shape.max_tokens)
                  : std::string("the budget must be >= 1 and cover the protected tokens (sinks + recent/window)"));
    return st;
  }
  typename EvictKvCache<Policy>::Config c_once = cfg;
  c_once.once = rp.is_set("once");
  std::unique_ptr<EvictKvCache<Policy>> c;
  MEMATTN_RETURN_IF_ERROR(EvictKvCache<Policy>::create(shape, c_once, cache::canonical_spec(info, rp), executor, &c));
  *out = std::move(c);
  return Status::kSuccess;
}
inline evict::GroupReduce reduce_of(const cache::ResolvedParams& p) {
  return static_cast<evict::GroupReduce>(p.get_int("gqa"));
}
}  // namespace evict_registry

template <class Policy>
struct PolicyTag {
  using type = Policy;
};

// Builds the Config of the evicting policy `info` names (one of evict_policy_infos()) and hands it
// to fn(PolicyTag<Policy>{}, config) -- shared by the evicting cache and the composed cache.
template <class Fn>
Status visit_evict_config(const cache::PolicyInfo& info, const cache::ResolvedParams& p, std::string* error, Fn&& fn) {
  using namespace evict_registry;
  const std::string name = info.name;
  if (name == "streaming") {
    EvictKvCache<evict::StreamingLLM>::Config c;
    c.policy = evict::streaming_llm_params(p.get_int("sink"), p.get_int("window"));
    return fn(PolicyTag<evict::StreamingLLM>{}, c);
  }
  if (name == "h2o") {
    EvictKvCache<evict::H2O>::Config c;
    c.policy = evict::h2o_params(p.get_int("budget"), p.get_int("recent"));
    c.policy.scorer.gamma = static_cast<float>(p.get("gamma"));
    c.policy.scorer.reduce = c.reduce = reduce_of(p);
    return fn(PolicyTag<evict::H2O>{}, c);
  }
  if (name == "scissorhands") {
    EvictKvCache<evict::Scissorhands>::Config c;
    c.policy = evict::scissorhands_params(p.get_int("budget"));
    c.policy.scorer.history = p.get_int("history");
    c.policy.selector.n_recent = p.get_int("recent");
    c.policy.trigger.m = p.get_int("drop");
    c.policy.scorer.reduce = c.reduce = reduce_of(p);
    return fn(PolicyTag<evict::Scissorhands>{}, c);
  }
  if (name == "snapkv" || name == "pyramidkv") {
    auto fill = [&](auto& pol) {
      pol.budget = p.get_int("budget");
      pol.scorer.window = p.get_int("window");
      pol.scorer.kernel = p.get_int("kernel");
      pol.scorer.pool = static_cast<evict::PoolKind>(p.get_int("pool"));
      pol.scorer.count_include_pad = p.get_int("pad") != 0;
      pol.scorer.reduce = reduce_of(p);
    };
    if (p.get_int("kernel") % 2 == 0) {
      *error = name + ": kernel must be odd";
      return Status::kErrorInvalidArgument;
    }
    if (name == "snapkv") {
      EvictKvCache<evict::SnapKV>::Config c;
      fill(c.policy);
      c.reduce = reduce_of(p);
      return fn(PolicyTag<evict::SnapKV>{}, c);
    }
    EvictKvCache<evict::PyramidKV>::Config c;
    fill(c.policy);
    c.policy.allocator.beta = p.get_int("beta");
    c.policy.allocator.exact_total = p.get_int("exact") != 0;
    c.reduce = reduce_of(p);
    return fn(PolicyTag<evict::PyramidKV>{}, c);
  }
  if (name == "knorm") {
    EvictKvCache<evict::KNormPolicy>::Config c;
    c.policy = evict::knorm_params(p.get_int("budget"));
    c.policy.selector.n_sink = p.get_int("sink");
    c.policy.selector.n_recent = p.get_int("recent");
    return fn(PolicyTag<evict::KNormPolicy>{}, c);
  }
  if (name == "lazy") {
    EvictKvCache<evict::LazyEviction>::Config c;
    const int budget = p.get_int("budget");
    const int window = p.get_int("window") < 0 ? std::max(1, std::min(175, budget / 2)) : p.get_int("window");
    c.policy = evict::lazy_params(budget, window, static_cast<float>(p.get("alpha")));
    c.policy.scorer.acc_tie = p.get_int("acctie") != 0;
    c.policy.scorer.raw = p.get_int("raw") != 0;
    c.policy.scorer.reduce = c.reduce = reduce_of(p);
    if (window < 1 || window > budget) {
      *error = "lazy: window must be in [1, budget]";
      return Status::kErrorInvalidArgument;
    }
    return fn(PolicyTag<evict::LazyEviction>{}, c);
  }
  if (name == "sirllm") {
    EvictKvCache<evict::SirLLM>::Config c;
    c.policy = evict::sirllm_params(p.get_int("budget"), p.get_int("start"), p.get_int("recent"),
                                    static_cast<float>(p.get("decay")));
    c.policy.scorer.turn = p.get_int("turn");
    return fn(PolicyTag<evict::SirLLM>{}, c);
  }
  if (name == "windowkv") {
    EvictKvCache<evict::WindowKV>::Config c;
    const auto mode = static_cast<evict::WindowMode>(p.get_int("mode"));
    c.policy = evict::windowkv_params(p.get_int("budget"), mode);
    if (p.get_int("window") > 0) c.policy.scorer.window = p.get_int("window");
    c.policy.scorer.block = p.get_int("block");
    c.policy.allocator.shared = p.get_int("shared");
    c.policy.allocator.beta = p.get_int("beta");
    c.policy.scorer.reduce = c.reduce = reduce_of(p);
    return fn(PolicyTag<evict::WindowKV>{}, c);
  }
  *error = "'" + name + "' is not an eviction policy";
  return Status::kErrorInvalidArgument;
}

// Builds the evicting cache `info` names (one of evict_policy_infos()).
template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_evict_kv_cache(const cache::PolicyInfo& info, const cache::ResolvedParams& p,
                                  const cache::CacheShape& shape, const Executor& executor,
                                  std::unique_ptr<cache::KvCache>* out, std::string* error) {
  return visit_evict_config(info, p, error, [&](auto tag, const auto& c) {
    using Policy = typename decltype(tag)::type;
    return evict_registry::build<Policy>(c, info, p, shape, executor, out, error);
  });
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
