// memattn: memory-efficient attention primitives (header-only, C++17).
//
// Umbrella header: every host-compilable public header (.hpp). The CUDA wrappers (.cuh, under
// memattn/cuda/) need nvcc and are included on their own. This is an explicit list on purpose;
// tests/headers checks that it names every .hpp under include/memattn.
#pragma once

// core: configuration, status, dtypes, tensor views, two-phase workspace
#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/core/status.hpp"
#include "memattn/core/tensor.hpp"
#include "memattn/core/workspace.hpp"

// attention: dense attention arguments and the math shared by every back-end
#include "memattn/attention/dense_args.hpp"
#include "memattn/attention/online_softmax.hpp"

// linear: linear / Lightning attention math (decay schedules, feature maps, arguments)
#include "memattn/linear/decay.hpp"
#include "memattn/linear/feature_map.hpp"
#include "memattn/linear/linear_args.hpp"
#include "memattn/linear/linear_plan.hpp"
#include "memattn/linear/mom.hpp"
#include "memattn/linear/window_args.hpp"

// quant: low-bit KV formats and quantizer math (host and device)
#include "memattn/quant/kivi.hpp"
#include "memattn/quant/mixed.hpp"
#include "memattn/quant/mixed_block_store.hpp"
#include "memattn/quant/mixed_format.hpp"
#include "memattn/quant/mixed_store.hpp"
#include "memattn/quant/qmath.hpp"

// evict: token-eviction policy composition, selection keys, reference policies
#include "memattn/evict/episode.hpp"
#include "memattn/evict/key.hpp"
#include "memattn/evict/lazy.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/tiered.hpp"
#include "memattn/evict/sentence.hpp"
#include "memattn/evict/compresskv.hpp"
#include "memattn/evict/layer_scores.hpp"
#include "memattn/evict/table_text.hpp"
#include "memattn/evict/merge.hpp"
#include "memattn/evict/merge_policies.hpp"
#include "memattn/evict/variance_softmax.hpp"
#include "memattn/evict/retention.hpp"
#include "memattn/evict/sirllm.hpp"
#include "memattn/evict/windowkv.hpp"

// prune: key-channel pruning (ThinK)
#include "memattn/prune/think.hpp"

// cache (the engine-facing KV-cache interface and the --kv spec language)
#include "memattn/cache/compose.hpp"
#include "memattn/cache/kv_cache.hpp"
#include "memattn/cache/kv_spec.hpp"

// cpu: Eigen implementations (also the reference for the CUDA path)
#include "memattn/cpu/code_unpack.hpp"
#include "memattn/cpu/compresskv_kv_cache.hpp"
#include "memattn/cpu/compresskv_scores.hpp"
#include "memattn/cpu/composed_kv_cache.hpp"
#include "memattn/cpu/composed_kv_factory.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/cpu/dense_block_decode.hpp"
#include "memattn/cpu/dense_kv_cache.hpp"
#include "memattn/cpu/epicache_kv_cache.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/cpu/evict_merge.hpp"
#include "memattn/cpu/evict_merge_registry.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/evict_tiered.hpp"
#include "memattn/cpu/evict_pin.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/token_logprobs.hpp"
#include "memattn/cpu/kivi_block_decode.hpp"
#include "memattn/cpu/kivi_kv_cache.hpp"
#include "memattn/cpu/kivi_quantize.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/cpu/kv_cache_factory.hpp"
#include "memattn/cpu/linear_attention.hpp"
#include "memattn/cpu/mikv_decode.hpp"
#include "memattn/cpu/mikv_kv_cache.hpp"
#include "memattn/cpu/mom.hpp"
#include "memattn/cpu/quantize_codes.hpp"
#include "memattn/cpu/sentencekv_kv_cache.hpp"
#include "memattn/cpu/simd_avx2.hpp"
#include "memattn/cpu/sliding_window.hpp"

// memory: virtual KV buffers (contiguous virtual ranges backed on demand; the CUDA VMM backend is
// memattn/memory/cuda_vmm_backend.cuh, which needs the CUDA toolkit headers)
#include "memattn/memory/host_vm_backend.hpp"
#include "memattn/memory/virtual_buffer.hpp"
#include "memattn/memory/virtual_kv_cache.hpp"
