#pragma once
// Public monoid operations on partial states, for split-KV, cascade / shared-prefix attention
// and any engine that computes attention over key ranges separately.
#include "../core/problem.hpp"
#include "partial_state.hpp"

namespace attnkit {

namespace detail {
inline void check_state(const PartialState& s, const char* name, const std::array<index_t, 4>& shape) {
  require(s.o.shape == shape, name, "o shape differs between the states");
  require(s.m.data && s.l.data, name, "m and l views are required");
  require(s.m.shape[0] == shape[0] && s.m.shape[1] == shape[1] && s.m.shape[2] == shape[2] &&
              s.l.shape[0] == shape[0] && s.l.shape[1] == shape[1] && s.l.shape[2] == shape[2],
          name, "m and l must be [B, H, N]");
}
}  // namespace detail

// acc <- acc (+) other, row by row.
template <class Score>
void merge_states(const Score&, const PartialState& acc, const PartialState& other) {
  detail::check_state(acc, "acc", acc.o.shape);
  detail::check_state(other, "other", acc.o.shape);
  const auto& s = acc.o.shape;
  for (index_t b = 0; b < s[0]; ++b)
    for (index_t h = 0; h < s[1]; ++h)
      for (index_t i = 0; i < s[2]; ++i)
        combine_rows<Score>(acc.m.at(b, h, i), acc.l.at(b, h, i), acc.o.row(b, h, i), other.m.at(b, h, i),
                            other.l.at(b, h, i), static_cast<const float*>(other.o.row(b, h, i)), s[3]);
}

// o = finalize(state); lse (softmax) if requested.
template <class Score, class TO>
void finalize_state(const Score& score, const PartialState& state, TensorView<TO> o, RowView lse = {}) {
  detail::check_state(state, "state", o.shape);
  const auto& s = o.shape;
  for (index_t b = 0; b < s[0]; ++b)
    for (index_t h = 0; h < s[1]; ++h)
      for (index_t i = 0; i < s[2]; ++i) {
        const float m = state.m.at(b, h, i), l = state.l.at(b, h, i);
        const float f = score.template finalize_factor<float>(m, l);
        const float* src = state.o.row(b, h, i);
        TO* dst = o.row(b, h, i);
        for (index_t d = 0; d < s[3]; ++d) dst[d] = from_float<TO>(src[d] * f);
        if (lse) lse.at(b, h, i) = row_lse(m, l);
      }
}

}  // namespace attnkit
