// A KvCache decorator that records every layer's q, k (after RoPE) and v before handing the call
// to the real cache: how `memattn-llama dump-kv` captures real activations without touching the
// engine. Only sequence 0 is recorded.
#pragma once

#include <memattn/cache/kv_cache.hpp>
#include <vector>

namespace memattn_llama {

class RecordingCache final : public memattn::cache::KvCache {
 public:
  explicit RecordingCache(memattn::cache::KvCache& inner)
      : inner_(inner), q_(static_cast<std::size_t>(inner.shape().layers)), k_(q_.size()), v_(q_.size()) {}

  const char* spec() const override { return inner_.spec(); }
  const memattn::cache::CacheShape& shape() const override { return inner_.shape(); }
  std::uint32_t wanted_signals() const override { return inner_.wanted_signals(); }

  memattn::Status attend(int seq, int layer, memattn::TensorView<const float, 3> q, memattn::TensorView<const float, 3> k,
                         memattn::TensorView<const float, 3> v, memattn::TensorView<float, 3> out) override {
    const memattn::Status st = inner_.attend(seq, layer, q, k, v, out);
    if (memattn::ok(st) && seq == 0) {
      append(q, &q_[static_cast<std::size_t>(layer)]);
      append(k, &k_[static_cast<std::size_t>(layer)]);
      append(v, &v_[static_cast<std::size_t>(layer)]);
    }
    return st;
  }
  memattn::Status end_chunk(int seq, const memattn::cache::ChunkSignals& s) override { return inner_.end_chunk(seq, s); }
  memattn::Status reset(int seq) override { return inner_.reset(seq); }
  memattn::Status reserve(int seq, int tokens) override { return inner_.reserve(seq, tokens); }
  std::int64_t tokens(int seq) const override { return inner_.tokens(seq); }
  std::size_t bytes() const override { return inner_.bytes(); }
  std::size_t peak_bytes() const override { return inner_.peak_bytes(); }
  std::size_t host_bytes() const override { return inner_.host_bytes(); }
  std::size_t host_peak_bytes() const override { return inner_.host_peak_bytes(); }

  const std::vector<float>& q(int layer) const { return q_[static_cast<std::size_t>(layer)]; }
  const std::vector<float>& k(int layer) const { return k_[static_cast<std::size_t>(layer)]; }
  const std::vector<float>& v(int layer) const { return v_[static_cast<std::size_t>(layer)]; }

 private:
  static void append(const memattn::TensorView<const float, 3>& t, std::vector<float>* dst) {
    for (std::int64_t i = 0; i < t.shape[0]; ++i)
      for (std::int64_t h = 0; h < t.shape[1]; ++h) dst->insert(dst->end(), t.ptr(i, h), t.ptr(i, h) + t.shape[2]);
  }

  memattn::cache::KvCache& inner_;
  std::vector<std::vector<float>> q_, k_, v_;
};

}  // namespace memattn_llama
