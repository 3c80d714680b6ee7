#pragma once
// Score modifiers: what one is. Applied in order to the scaled logit s = scale * <q, k>.
// A modifier is a trivially copyable struct with
//   template <class T> T operator()(T s, const LogitCoord& c) const
// LogitCoord carries the batch, query head, query index i, its position, and key index j.
#include <concepts>
#include <type_traits>

#include "../core/math.hpp"
#include "../core/problem.hpp"

namespace attnkit {

struct LogitCoord {
  index_t b, h, i, pos, j;
};

template <class M>
concept ScoreMod = std::is_trivially_copyable_v<M> && requires(const M m, float s, double d, LogitCoord c) {
  { m(s, c) } -> std::convertible_to<float>;
  { m(d, c) } -> std::convertible_to<double>;
};

template <class M>
void mod_validate(const M& m, const ProblemInfo& p) {
  if constexpr (requires { m.validate(p); }) m.validate(p);
}

}  // namespace attnkit
