#pragma once
// Strided 4-D views in the logical order [batch, head, sequence, feature].
// The feature dimension must be contiguous; the other three strides are free, so one view
// type covers BHSD ([B,H,S,D] contiguous), BSHD ([B,S,H,D] contiguous) and padded caches.
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "config.hpp"
#include "dtype.hpp"

namespace attnkit {

using index_t = std::int64_t;

template <class T>
struct TensorView {
  T* data = nullptr;
  std::array<index_t, 4> shape{};   // B, H, S, D
  std::array<index_t, 3> stride{};  // elements between consecutive b, h, s (feature stride is 1)

  ATTNKIT_HD index_t batch() const { return shape[0]; }
  ATTNKIT_HD index_t heads() const { return shape[1]; }
  ATTNKIT_HD index_t seq() const { return shape[2]; }
  ATTNKIT_HD index_t dim() const { return shape[3]; }
  ATTNKIT_HD T* row(index_t b, index_t h, index_t s) const {
    return data + b * stride[0] + h * stride[1] + s * stride[2];
  }
  ATTNKIT_HD std::size_t elements() const {
    return std::size_t(shape[0] * shape[1] * shape[2] * shape[3]);
  }
  // A view of the same memory as read-only.
  template <class U = T>
    requires(!std::is_const_v<U>)
  operator TensorView<const U>() const {
    return {data, shape, stride};
  }
};

// Contiguous [B, H, S, D].
template <class T>
TensorView<T> bhsd(T* data, index_t B, index_t H, index_t S, index_t D) {
  return {data, {B, H, S, D}, {H * S * D, S * D, D}};
}

// Contiguous [B, S, H, D] (the layout of most inference engines' activations).
template <class T>
TensorView<T> bshd(T* data, index_t B, index_t S, index_t H, index_t D) {
  return {data, {B, H, S, D}, {S * H * D, D, H * D}};
}

// Per-row float output such as log-sum-exp: [B, H, S] with free strides.
struct RowView {
  float* data = nullptr;
  std::array<index_t, 3> shape{};
  std::array<index_t, 3> stride{};
  ATTNKIT_HD float& at(index_t b, index_t h, index_t s) const {
    return data[b * stride[0] + h * stride[1] + s * stride[2]];
  }
  explicit operator bool() const { return data != nullptr; }
};

inline RowView rows_bhs(float* data, index_t B, index_t H, index_t S) {
  return {data, {B, H, S}, {H * S, S, 1}};
}

}  // namespace attnkit
