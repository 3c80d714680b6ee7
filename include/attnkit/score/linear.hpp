#pragma once
// linear: p_ij = <phi(q_i), phi(k_j)>, o_i = sum p v / (sum p + eps) (normalisation
// switchable). There is no logit: the scale and score modifiers do not apply. With a full or
// causal mask backends use the chunked O(N D^2) form; under other masks the masked
// quadratic form with weight(s) = s on s = <phi(q), phi(k)>.
#include "../core/math.hpp"
#include "../core/problem.hpp"

namespace attnkit {

// Feature maps: element-wise functors written over the value type.
// Written branch-free so that they also run on SIMD batches.
struct EluPlusOne {  // x + 1 for x > 0, e^x otherwise
  template <class T>
  ATTNKIT_HD T operator()(T x) const { return math<T>::max(x, T(0)) + math<T>::exp(math<T>::min(x, T(0))); }
};
struct Relu {
  template <class T>
  ATTNKIT_HD T operator()(T x) const { return math<T>::max(x, T(0)); }
};
struct Identity {
  template <class T>
  ATTNKIT_HD T operator()(T x) const { return x; }
};

template <class FeatureMap = EluPlusOne>
struct Linear {
  static constexpr const char* name = "linear";
  static constexpr bool tracks_max = false;
  static constexpr bool has_lse = false;
  static constexpr bool is_linear = true;

  FeatureMap phi{};
  bool normalize = true;
  float eps = 1e-6f;

  Linear resolve(const ProblemInfo&) const {
    require(eps >= 0.f, "score.eps", "must be non-negative");
    return *this;
  }
  template <class T>
  ATTNKIT_HD T feature(T x) const { return phi(x); }
  template <class T>
  ATTNKIT_HD T weight(T s, T /*m*/, T /*row_scale*/) const { return s; }
  template <class T>
  ATTNKIT_HD T finalize_factor(T /*m*/, T l) const {
    if (!normalize) return T(1);
    const T den = l + T(eps);
    return den != T(0) ? T(1) / den : T(0);
  }
};

}  // namespace attnkit
