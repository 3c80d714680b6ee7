#pragma once
// Score modifiers: applied in order to the scaled logit s = scale * <q, k>.
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

// Multiplies the logit by a further factor (on top of Options::scale).
struct ScaleBy {
  float factor = 1.f;
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord&) const { return s * T(factor); }
};

// ALiBi: s + slope[h] * (j - pos), slopes per query head (caller memory, Hq floats).
struct Alibi {
  const float* slopes = nullptr;
  void validate(const ProblemInfo& p) const { require(slopes != nullptr || p.Hq == 0, "mods.alibi.slopes", "null"); }
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const {
    return s + T(slopes[c.h]) * T(c.j - c.pos);
  }
};

// Soft-cap: c * tanh(s / c) (Gemma 2).
struct SoftCap {
  float cap = 50.f;
  void validate(const ProblemInfo&) const { require(cap > 0.f, "mods.softcap.cap", "must be positive"); }
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord&) const {
    return T(cap) * math<T>::tanh(s / T(cap));
  }
};

// Additive bias tensor indexed [b, h, i, j] with free strides (0 broadcasts an axis).
// A -inf entry removes the key from the row, like a mask.
struct AdditiveBias {
  const float* data = nullptr;
  index_t stride_b = 0, stride_h = 0, stride_i = 0, stride_j = 1;
  void validate(const ProblemInfo& p) const {
    require(data != nullptr || p.empty() || p.Nk == 0, "mods.bias.data", "null");
    require(stride_b >= 0 && stride_h >= 0 && stride_i >= 0 && stride_j >= 0, "mods.bias.stride",
            "strides must be non-negative");
  }
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const {
    return s + T(data[c.b * stride_b + c.h * stride_h + c.i * stride_i + c.j * stride_j]);
  }
};

// Any callable f(s, b, h, i, j) (i the query index), e.g. a lambda capturing pointers.
template <class F>
struct ScoreFn {
  F f;
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const {
    return f(s, c.b, c.h, c.i, c.j);
  }
};
template <class F> ScoreFn(F) -> ScoreFn<F>;

template <class M>
void mod_validate(const M& m, const ProblemInfo& p) {
  if constexpr (requires { m.validate(p); }) m.validate(p);
}

}  // namespace attnkit
