#pragma once
#include "concepts.hpp"

namespace attnkit {

// Additive bias tensor indexed [b, h, i, j] with free strides (0 broadcasts an axis).
// A -inf entry removes the key from the row, like a mask.
struct AdditiveBias {
  const float* data = nullptr;
  index_t stride_b = 0, stride_h = 0, stride_i = 0, stride_j = 1;
  void validate(const ProblemInfo& p) const {
    require(data != nullptr || p.empty() || p.Nk == 0, "mods.bias.data", "null");
    require(stride_b >= 0 && stride_h >= 0 && stride_i >= 0 && stride_j >= 0, "mods.bias.stride",
            "strides must be non-negative");
  }
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const {
    return s + T(data[c.b * stride_b + c.h * stride_h + c.i * stride_i + c.j * stride_j]);
  }
};

}  // namespace attnkit
