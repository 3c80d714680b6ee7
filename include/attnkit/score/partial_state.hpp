#pragma once
// The score-function monoid on one row: state (m, l, o[Dv]).
//   identity:  m = -inf (tracks_max) or 0, l = 0, o = 0
//   combine:   rescale both sides to the larger max (tracks_max) or add
//   finalize:  o *= finalize_factor(m, l); lse = m + log l
// Every backend's tile loop, split-KV and the public merge step use these.
#include "../core/math.hpp"
#include "concepts.hpp"

namespace attnkit {

template <class S, class T = float>
ATTNKIT_HD constexpr T initial_row_max() {
  if constexpr (S::tracks_max) return T(-__builtin_huge_val());
  else return T(0);
}

// (m, l, o) <- (m, l, o) (+) (m2, l2, o2)
template <class S, class T, class IndexT>
ATTNKIT_HD void combine_rows(T& m, T& l, T* o, T m2, T l2, const T* o2, IndexT dv) {
  if constexpr (S::tracks_max) {
    const T mn = m2 > m ? m2 : m;
    if (mn == T(-__builtin_huge_val())) return;  // both sides empty
    const T a = math<T>::exp(m - mn), b = math<T>::exp(m2 - mn);
    for (IndexT d = 0; d < dv; ++d) o[d] = a * o[d] + b * o2[d];
    l = a * l + b * l2;
    m = mn;
  } else {
    for (IndexT d = 0; d < dv; ++d) o[d] += o2[d];
    l += l2;
  }
}

template <class T>
ATTNKIT_HD T row_lse(T m, T l) {
  return l > T(0) ? m + math<T>::log(l) : T(-__builtin_huge_val());
}

}  // namespace attnkit
