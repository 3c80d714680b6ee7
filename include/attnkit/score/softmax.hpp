#pragma once
// softmax: o_i = sum_j e^{s_ij} v_j / sum_j e^{s_ij}, over allowed j. Online form: the
// partial state (m, l, o) holds the running max m, l = sum e^{s-m}, o = sum e^{s-m} v.
#include "../core/math.hpp"
#include "../core/problem.hpp"

namespace attnkit {

struct Softmax {
  static constexpr const char* name = "softmax";
  static constexpr bool tracks_max = true;  // weights are taken relative to the running row max
  static constexpr bool has_lse = true;

  Softmax resolve(const ProblemInfo&) const { return *this; }

  // Weight of logit s given the row's current max m (row_scale unused).
  template <class T>
  ATTNKIT_HD T weight(T s, T m, T /*row_scale*/) const {
    return math<T>::exp(s - m);
  }
  // Factor applied to the accumulated o at the end; an empty row (l == 0) yields 0.
  template <class T>
  ATTNKIT_HD T finalize_factor(T /*m*/, T l) const {
    return l > T(0) ? T(1) / l : T(0);
  }
};

}  // namespace attnkit
