#pragma once
// sigmoid: o_i = sum_j sigmoid(s_ij + b) v_j over allowed j, with no row normalisation
// (FlashSigmoid). b defaults to -log(Nk). Partial state: (o), summed.
#include <cmath>

#include "../core/math.hpp"
#include "../core/problem.hpp"

namespace attnkit {

struct Sigmoid {
  static constexpr const char* name = "sigmoid";
  static constexpr bool tracks_max = false;
  static constexpr bool has_lse = false;

  bool auto_bias = true;  // b = -log(Nk)
  float bias = 0.f;

  static Sigmoid with_bias(float b) { return Sigmoid{false, b}; }

  Sigmoid resolve(const ProblemInfo& p) const {
    Sigmoid r = *this;
    if (auto_bias) r.bias = p.Nk > 0 ? -std::log(float(p.Nk)) : 0.f;
    r.auto_bias = false;
    return r;
  }
  template <class T>
  ATTNKIT_HD T weight(T s, T /*m*/, T /*row_scale*/) const {
    return math<T>::sigmoid(s + T(bias));
  }
  template <class T>
  ATTNKIT_HD T finalize_factor(T /*m*/, T /*l*/) const {
    return T(1);
  }
};

}  // namespace attnkit
