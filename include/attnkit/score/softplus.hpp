#pragma once
// softplus: p_ij = softplus(lambda_i * s_ij)^r, o_i = sum p v / sum p (l1 normalisation on by
// default). lambda_i is 1, or log(n_i) with n_i the number of keys row i may attend (the
// entropy-invariant length scale). Partial state: (o, l), summed.
#include "../core/math.hpp"
#include "../core/problem.hpp"

namespace attnkit {

enum class LengthScale { one, log_n };

struct Softplus {
  static constexpr const char* name = "softplus";
  static constexpr bool tracks_max = false;
  static constexpr bool has_lse = false;

  float power = 1.f;  // r >= 1 sharpens strong weights
  LengthScale length_scale = LengthScale::one;
  bool normalize = true;

  Softplus resolve(const ProblemInfo&) const {
    require(power >= 1.f, "score.power", "softplus re-weighting power must be >= 1");
    return *this;
  }
  // Per-row constant lambda_i from the row's allowed-key count (used when needs_row_count()).
  bool needs_row_count() const { return length_scale == LengthScale::log_n; }
  template <class T>
  ATTNKIT_HD T row_scale(T n_allowed) const {
    if (length_scale == LengthScale::one) return T(1);
    return n_allowed > T(1) ? math<T>::log(n_allowed) : T(0);
  }
  template <class T>
  ATTNKIT_HD T weight(T s, T /*m*/, T lambda) const {
    return power_of(math<T>::softplus(lambda * s), power);
  }
  template <class T>
  ATTNKIT_HD T finalize_factor(T /*m*/, T l) const {
    if (!normalize) return T(1);
    // Weights below the float range underflow (all lambda*s < ~-87): such a row ends like an
    // empty one (o = 0) rather than at 1/l = inf.
    const T f = T(1) / l;
    return l > T(0) && f <= T(3.40282347e+38f) ? f : T(0);
  }
};

}  // namespace attnkit
