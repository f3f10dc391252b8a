// Non-owning tensor views (pointer + shape + strides in elements, rank 1..4) and the argument
// checks every entry point runs before it touches memory. A view with data == nullptr is "absent"
// (used for optional outputs such as the log-sum-exp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN

template <class T, int Rank>
struct TensorView {
  static_assert(Rank >= 1 && Rank <= 4, "memattn tensor views have rank 1..4");
  using value_type = T;
  static constexpr int kRank = Rank;

  T* data = nullptr;
  std::int64_t shape[Rank] = {};
  std::int64_t stride[Rank] = {};

  MEMATTN_HOST_DEVICE bool present() const { return data != nullptr; }

  MEMATTN_HOST_DEVICE std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < Rank; ++i) n *= shape[i];
    return n;
  }

  MEMATTN_HOST_DEVICE std::int64_t offset(std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0,
                                          std::int64_t i3 = 0) const {
    const std::int64_t idx[4] = {i0, i1, i2, i3};
    std::int64_t off = 0;
    for (int i = 0; i < Rank; ++i) off += idx[i] * stride[i];
    return off;
  }

  MEMATTN_HOST_DEVICE T* ptr(std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0, std::int64_t i3 = 0) const {
    return data + offset(i0, i1, i2, i3);
  }

  // Read-only view of the same memory.
  MEMATTN_HOST_DEVICE TensorView<const T, Rank> as_const() const {
    TensorView<const T, Rank> v;
    v.data = data;
    for (int i = 0; i < Rank; ++i) {
      v.shape[i] = shape[i];
      v.stride[i] = stride[i];
    }
    return v;
  }
};

// Row-major contiguous view.
template <int Rank, class T>
TensorView<T, Rank> make_view(T* data, std::initializer_list<std::int64_t> shape) {
  TensorView<T, Rank> v;
  v.data = data;
  int i = 0;
  for (std::int64_t s : shape) {
    if (i < Rank) v.shape[i++] = s;
  }
  std::int64_t st = 1;
  for (int d = Rank - 1; d >= 0; --d) {
    v.stride[d] = st;
    st *= v.shape[d];
  }
  return v;
}

// View with explicit strides (in elements).
template <int Rank, class T>
TensorView<T, Rank> make_strided_view(T* data, std::initializer_list<std::int64_t> shape,
                                      std::initializer_list<std::int64_t> stride) {
  TensorView<T, Rank> v;
  v.data = data;
  int i = 0;
  for (std::int64_t s : shape) {
    if (i < Rank) v.shape[i++] = s;
  }
  i = 0;
  for (std::int64_t s : stride) {
    if (i < Rank) v.stride[i++] = s;
  }
  return v;
}

// ---- argument checks ------------------------------------------------------------------------

template <class T, int R>
Status check_present(const TensorView<T, R>& v) {
  return v.data ? Status::kSuccess : Status::kErrorNullPointer;
}

// Shapes positive; strides non-negative; innermost dimension contiguous (stride 1) so rows can be
// read with vector loads.
template <class T, int R>
Status check_layout(const TensorView<T, R>& v) {
  for (int i = 0; i < R; ++i) {
    if (v.shape[i] <= 0) return Status::kErrorInvalidShape;
    if (v.stride[i] < 0) return Status::kErrorInvalidStride;
  }
  if (v.stride[R - 1] != 1) return Status::kErrorInvalidStride;
  return Status::kSuccess;
}

// Every entry of `expected` that is >= 0 must equal the view's extent.
template <class T, int R>
Status check_shape(const TensorView<T, R>& v, std::initializer_list<std::int64_t> expected) {
  int i = 0;
  for (std::int64_t e : expected) {
    if (i >= R) return Status::kErrorInvalidShape;
    if (e >= 0 && v.shape[i] != e) return Status::kErrorInvalidShape;
    ++i;
  }
  return i == R ? Status::kSuccess : Status::kErrorInvalidShape;
}

// Present, well laid out, and of the expected shape.
template <class T, int R>
Status check_tensor(const TensorView<T, R>& v, std::initializer_list<std::int64_t> expected) {
  MEMATTN_RETURN_IF_ERROR(check_present(v));
  MEMATTN_RETURN_IF_ERROR(check_layout(v));
  return check_shape(v, expected);
}

// Absent is fine; present must satisfy check_tensor.
template <class T, int R>
Status check_optional_tensor(const TensorView<T, R>& v, std::initializer_list<std::int64_t> expected) {
  return v.data ? check_tensor(v, expected) : Status::kSuccess;
}

// Distinct indices address distinct elements (an output must not alias itself, e.g. through a
// zero stride). Dimensions of extent 1 are ignored.
template <class T, int R>
Status check_no_self_overlap(const TensorView<T, R>& v) {
  int dims[R];
  int n = 0;
  for (int i = 0; i < R; ++i)
    if (v.shape[i] > 1) dims[n++] = i;
  for (int i = 1; i < n; ++i)  // insertion sort by stride
    for (int j = i; j > 0 && v.stride[dims[j]] < v.stride[dims[j - 1]]; --j) {
      const int t = dims[j];
      dims[j] = dims[j - 1];
      dims[j - 1] = t;
    }
  std::int64_t span = 1;  // elements spanned by the dimensions checked so far
  for (int i = 0; i < n; ++i) {
    const std::int64_t st = v.stride[dims[i]];
    if (st < span) return Status::kErrorInvalidStride;
    span += st * (v.shape[dims[i]] - 1);
  }
  return Status::kSuccess;
}

// Alignment (in bytes) of a view's base pointer and of every non-inner stride.
template <class T, int R>
bool is_aligned(const TensorView<T, R>& v, std::size_t bytes) {
  if (reinterpret_cast<std::uintptr_t>(v.data) % bytes != 0) return false;
  for (int i = 0; i < R - 1; ++i) {
    if ((static_cast<std::size_t>(v.stride[i]) * sizeof(T)) % bytes != 0) return false;
  }
  return true;
}

MEMATTN_NAMESPACE_END
