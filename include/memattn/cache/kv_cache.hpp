// The KV-cache interface an inference engine drives. Every KV policy (full, quantised, evicting,
// pruned, composed) implements it, so an engine plugs any of them in without code changes:
//
//   for each chunk of new tokens of a sequence (prefill chunk or one decode step):
//     for each layer: compute q, k, v (RoPE applied) and call cache.attend(seq, layer, q, k, v, out)
//     cache.end_chunk(seq, signals)        -- after the last layer: policies compact/flush here
//
// attend() appends the chunk's keys/values to the sequence's cache of that layer and returns the
// attention of the chunk's queries over everything the cache holds for the sequence, causally
// within the chunk. Activations cross the interface in fp32, tokens-major; storage is the
// policy's business (fp16 by default). The bytes the cache reports are real bytes held,
// metadata included.
#pragma once

#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cache {

struct CacheShape {
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int max_tokens = 0;     // per sequence: the most tokens a sequence may ever append
  int max_sequences = 1;  // sequence ids are [0, max_sequences)
};

inline Status validate_shape(const CacheShape& s) {
  if (s.layers <= 0 || s.q_heads <= 0 || s.kv_heads <= 0 || s.head_dim <= 0 || s.max_tokens <= 0 ||
      s.max_sequences <= 0)
    return Status::kErrorInvalidShape;
  if (s.q_heads % s.kv_heads != 0) return Status::kErrorGqaRatio;
  return Status::kSuccess;
}

// Signals a policy may ask the engine for (wanted_signals()); the engine passes them with
// end_chunk(). Bits grow with the policies that need them.
enum CacheSignal : std::uint32_t {
  kSignalNone = 0,
  kSignalTokenIds = 1u << 0,       // token ids of the chunk
  kSignalTokenLogProbs = 1u << 1,  // log p(x_j | x_<j) of the chunk's tokens (SirLLM)
  kSignalSentenceEnds = 1u << 2,   // per token: 1 where it ends a sentence (SentenceKV; the
                                   // engine's tokenizer knows which pieces end sentences)
  kSignalPromptEnd = 1u << 3,      // ChunkSignals::prompt_end on the chunk that completes the prompt
                                   // (prefill-only compression: evicting specs with once=1)
};

struct ChunkSignals {
  const std::int32_t* token_ids = nullptr;  // [count] or nullptr
  const float* token_logprobs = nullptr;    // [count] or nullptr
  const std::uint8_t* sentence_ends = nullptr;  // [count] or nullptr
  int count = 0;
  bool prompt_end = false;  // this chunk completes the prompt (the engine's caller knows; kSignalPromptEnd)
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  // Canonical policy spec of this cache (e.g. "full").
  virtual const char* spec() const = 0;
  virtual const CacheShape& shape() const = 0;
  virtual std::uint32_t wanted_signals() const { return kSignalNone; }

  // Appends n tokens to (seq, layer) and writes the chunk's attention output.
  //   q: [n, Hq, D], k, v: [n, Hkv, D] (keys after RoPE), out: [n, Hq, D]; fp32, inner dim contiguous.
  // Query i sits at logical position tokens(seq) + i (tokens() advances at end_chunk) and sees every
  // token the cache holds for the sequence plus chunk tokens 0..i. Errors leave the cache unchanged;
  // K/V that the cache's storage cannot hold (NaN, inf, beyond fp16's range for fp16 caches) are
  // kErrorNonFinite, as is a non-finite query for caches that score tokens with it.
  virtual Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                        TensorView<const float, 3> v, TensorView<float, 3> out) = 0;

  // Appends n tokens to (seq, layer) without computing attention: restoring a saved or shared
  // prefix whose outputs are already known. Same chunk rules as attend() (every layer once, then
  // end_chunk). Policies that need the queries or attention of every token (eviction scorers)
  // return kErrorNotSupported, as does the default.
  virtual Status append(int seq, int layer, TensorView<const float, 3> k, TensorView<const float, 3> v) {
    (void)seq;
    (void)layer;
    (void)k;
    (void)v;
    return Status::kErrorNotSupported;
  }

  // Closes the chunk of `seq` once every layer has attended it (compaction/flush point).
  virtual Status end_chunk(int seq, const ChunkSignals& signals) = 0;

  // Forgets a sequence (its memory is released).
  virtual Status reset(int seq) = 0;

  // Capacity hint: the sequence will hold about `tokens` tokens (avoids regrowth).
  virtual Status reserve(int /*seq*/, int /*tokens*/) { return Status::kSuccess; }

  // Logical tokens appended to `seq` so far (closed chunks), compressed or not.
  virtual std::int64_t tokens(int seq) const = 0;
  // Real bytes held now / at most so far, all sequences and layers, metadata included.
  virtual std::size_t bytes() const = 0;
  virtual std::size_t peak_bytes() const = 0;
  // Real bytes held in host memory (KV offloaded off the device, e.g. SentenceKV's sentence pool);
  // bytes()/peak_bytes() count the device-resident part only. 0 for caches that offload nothing.
  virtual std::size_t host_bytes() const { return 0; }
  virtual std::size_t host_peak_bytes() const { return host_bytes(); }
};

// Bytes of an uncompressed fp16 cache of `tokens` tokens (the "kv_bytes_full" baseline).
inline std::size_t full_fp16_bytes(const CacheShape& s, std::int64_t tokens) {
  return static_cast<std::size_t>(tokens) * static_cast<std::size_t>(s.layers) * static_cast<std::size_t>(s.kv_heads) *
         static_cast<std::size_t>(s.head_dim) * 2u * 2u;
}

}  // namespace cache
MEMATTN_NAMESPACE_END
