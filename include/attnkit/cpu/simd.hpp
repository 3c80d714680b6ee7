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
};

}  // namespace attnkit
