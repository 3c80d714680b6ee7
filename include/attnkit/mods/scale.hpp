#pragma once
#include "concepts.hpp"

namespace attnkit {

// Multiplies the logit by a further factor (on top of Options::scale).
struct ScaleBy {
  float factor = 1.f;
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord&) const { return s * T(factor); }
};

}  // namespace attnkit
