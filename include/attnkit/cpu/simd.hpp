#pragma once
// The CPU backend's SIMD vocabulary: xsimd batches of the best instruction set the compiler
// was told it may use (-mavx2 -mfma, -mavx512f, ...), and math<> for them so score-function
// policies run vectorised.
#include <xsimd/xsimd.hpp>

#include "../core/math.hpp"

namespace attnkit {

namespace cpu {
using vfloat = xsimd::batch<float>;
inline constexpr int simd_width = int(vfloat::size);
}  // namespace cpu

template <class A>
struct math<xsimd::batch<float, A>> {
  using T = xsimd::batch<float, A>;
  static T exp(const T& x) { return xsimd::exp(x); }
  static T log(const T& x) { return xsimd::log(x); }
  static T log1p(const T& x) { return xsimd::log1p(x); }
  static T tanh(const T& x) { return xsimd::tanh(x); }
  static T pow(const T& x, const T& y) { return xsimd::pow(x, y); }
  static T abs(const T& x) { return xsimd::abs(x); }
  static T max(const T& a, const T& b) { return xsimd::max(a, b); }
  static T min(const T& a, const T& b) { return xsimd::min(a, b); }
  // max(x, 0) + log1p(e) with e = e^{-|x|} in (0, 1]: log1p(e) = 2 atanh(t), t = e / (2 + e)
  // in (0, 1/3], by its odd series to t^15 (relative error < 2e-8 before rounding, and exact
  // in the limit e -> 0 where 1 + e would round to 1).
  static T softplus(const T& x) {
    const T e = xsimd::exp(-xsimd::abs(x));
    const T t = e / (T(2.f) + e), t2 = t * t;
    T poly = T(1.f / 15.f);
    poly = xsimd::fma(poly, t2, T(1.f / 13.f));
    poly = xsimd::fma(poly, t2, T(1.f / 11.f));
    poly = xsimd::fma(poly, t2, T(1.f / 9.f));
    poly = xsimd::fma(poly, t2, T(1.f / 7.f));
    poly = xsimd::fma(poly, t2, T(1.f / 5.f));
    poly = xsimd::fma(poly, t2, T(1.f / 3.f));
    poly = xsimd::fma(poly, t2, T(1.f));
    return xsimd::max(x, T(0.f)) + T(2.f) * t * poly;
  }
};

}  // namespace attnkit
