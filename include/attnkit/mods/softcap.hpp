#pragma once
#include "concepts.hpp"

namespace attnkit {

// Soft-cap: c * tanh(s / c) (Gemma 2).
struct SoftCap {
  float cap = 50.f;
  void validate(const ProblemInfo&) const { require(cap > 0.f, "mods.softcap.cap", "must be positive"); }
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord&) const {
    return T(cap) * math<T>::tanh(s / T(cap));
  }
};

}  // namespace attnkit
