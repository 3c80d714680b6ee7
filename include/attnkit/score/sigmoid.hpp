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

  Sigmoid resolve(const ProblemInfo& p) const { return for_keys(p.Nk); }
  // The bias for nk keys (score_for_keys: ragged batches resolve each sequence on the device).
  ATTNKIT_HD Sigmoid for_keys(index_t nk) const {
    Sigmoid r = *this;
    if (auto_bias) r.bias = nk > 0 ? -math<float>::log(float(nk)) : 0.f;
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
