// Two-phase scratch memory, as CUB and CUTLASS do it: an operation writes its carving once,
//   template <class W> void plan(W& ws, ...) { a = ws.template take<float>(n); b = ...; }
// and runs it on a sizing Workspace (no memory: records the bytes needed) to answer
// workspace_size(), then on a Workspace over the caller's buffer to get the sub-buffers.
// Nothing is allocated; a buffer that is too small or misaligned is reported, never overrun.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN

constexpr std::size_t kWorkspaceAlign = 256;  // cudaMalloc alignment; enough for any vector load

class Workspace {
 public:
  // Sizing mode: take() returns nullptr and only accumulates the requirement.
  Workspace() = default;
  // Carving mode over [base, base + bytes).
  Workspace(void* base, std::size_t bytes) : base_(static_cast<unsigned char*>(base)), capacity_(bytes), carving_(true) {}

  template <class T>
  T* take(std::size_t count, std::size_t align = kWorkspaceAlign) {
    used_ = (used_ + align - 1) / align * align;
    const std::size_t offset = used_;
    used_ += count * sizeof(T);
    if (!carving_ || base_ == nullptr || used_ > capacity_) return nullptr;
    return reinterpret_cast<T*>(base_ + offset);
  }

  std::size_t required() const { return used_; }

  // In carving mode: success only if every take() fitted and the base is aligned.
  Status status() const {
    if (!carving_) return Status::kSuccess;
    if (used_ == 0) return Status::kSuccess;
    if (base_ == nullptr) return Status::kErrorWorkspaceTooSmall;
    if (reinterpret_cast<std::uintptr_t>(base_) % kWorkspaceAlign != 0) return Status::kErrorWorkspaceTooSmall;
    return used_ <= capacity_ ? Status::kSuccess : Status::kErrorWorkspaceTooSmall;
  }

 private:
  unsigned char* base_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
  bool carving_ = false;
};

// Host scratch for CPU paths, tests and examples: an owned buffer whose data() is aligned to
// kWorkspaceAlign. resize() only grows (a hot loop reuses it without reallocating).
class HostWorkspace {
 public:
  HostWorkspace() = default;
  explicit HostWorkspace(std::size_t bytes) { resize(bytes); }
  void resize(std::size_t bytes) {
    if (bytes <= size_ && !storage_.empty()) return;
    storage_.assign(bytes + kWorkspaceAlign, 0);
    size_ = bytes;
  }
  void* data() {
    const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(storage_.data());
    return storage_.data() + ((kWorkspaceAlign - p % kWorkspaceAlign) % kWorkspaceAlign);
  }
  std::size_t size() const { return size_; }

 private:
  std::vector<unsigned char> storage_;
  std::size_t size_ = 0;
};

MEMATTN_NAMESPACE_END
