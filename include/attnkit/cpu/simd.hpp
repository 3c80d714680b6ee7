#pragma once
// The CPU backend's SIMD vocabulary: xsimd batches of the best instruction set the compiler
// was told it may use (-mavx2 -mfma, -mavx512f, ...), and math<> for them so score-function
// policies run vectorised.
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "../core/math.hpp"
#include "../core/tensor.hpp"  // index_t

namespace attnkit {

namespace cpu {
using vfloat = xsimd::batch<float>;
inline constexpr int simd_width = int(vfloat::size);

// Allocates on 64-byte boundaries (a cache line, the widest vector). The kernels' scratch rows
// (query rows, score tiles, accumulators) are read with full-width loads: from malloc's 16-byte
// alignment, every other 32-byte load crossed a cache line (measured on the AVX2 EPYC, decode
// Q K^T and P V with their rows in L1: 1.4x the time of aligned rows).
template <class T>
struct LineAllocator {
  using value_type = T;
  static constexpr std::align_val_t alignment{64};
  LineAllocator() = default;
  template <class U>
  LineAllocator(const LineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), alignment)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, alignment); }
  template <class U>
  bool operator==(const LineAllocator<U>&) const noexcept { return true; }
};
template <class T>
using line_vector = std::vector<T, LineAllocator<T>>;

// Requests the cache lines of elements [from, from + n) of a row, into L1 (Near) or L2.
template <bool Near = true, class T>
ATTNKIT_INLINE void prefetch_row(const T* row, index_t n, index_t from = 0) {
  const char* bytes = reinterpret_cast<const char*>(row + from);
  for (index_t b = 0; b < index_t(n * sizeof(T)); b += 64) __builtin_prefetch(bytes + b, 0, Near ? 3 : 2);
}

// Bit c set where lane c of m is true: one instruction on AVX / AVX-512.
inline unsigned lane_bits(const xsimd::batch_bool<float>& m) {
#if defined(__AVX512F__)
  static_assert(simd_width == 16);
  return unsigned(__mmask16(m));
#elif defined(__AVX__)
  static_assert(simd_width == 8);
  return unsigned(_mm256_movemask_ps(m));
#else
  alignas(64) float t[simd_width];
  xsimd::select(m, vfloat(1.f), vfloat(0.f)).store_aligned(t);
  unsigned bits = 0;
  for (int c = 0; c < simd_width; ++c) bits |= t[c] != 0.f ? 1u << c : 0u;
  return bits;
#endif
}

// True where p * 2^k takes one instruction (AVX-512's vscalefps, which also rounds results
// past the normal range correctly: below it to subnormals and 0, above it to inf).
template <class F>
inline constexpr bool has_scalef =
#if defined(__AVX512F__)
    sizeof(F) == 64;
#else
    false;
#endif

// p * 2^k for integer-valued k with the result in the normal range (and more on AVX-512).
template <class A>
inline xsimd::batch<float, A> scale_by_pow2(const xsimd::batch<float, A>& p, const xsimd::batch<float, A>& k) {
  using F = xsimd::batch<float, A>;
  if constexpr (has_scalef<F>) {
    return F(_mm512_scalef_ps(p, k));
  } else {
    using I = xsimd::batch<std::int32_t, A>;
    return xsimd::bitwise_cast<F>(xsimd::bitwise_cast<I>(p) + (xsimd::to_int(k) << 23));
  }
}

// e^x for x in [-87.3, 88.7228] on a batch: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite,
// two-part ln2), e^r by its Taylor polynomial to r^7 (truncation < 6e-9 relative), scaled by
// 2^k. Max relative error < 3e-7 (7.7e-8 measured; checked in tests/test_numerics.cpp). The
// callers below handle the ends of the range.
template <class A>
inline xsimd::batch<float, A> exp_in_range(const xsimd::batch<float, A>& xc) {
  using F = xsimd::batch<float, A>;
  const F k = xsimd::nearbyint(xc * F(1.44269504088896341f));
  F r = xsimd::fma(k, F(-0.693359375f), xc);  // ln2 = 0.693359375 - 2.12194440e-4
  r = xsimd::fma(k, F(2.12194440e-4f), r);
  F p = F(1.f / 5040.f);
  p = xsimd::fma(p, r, F(1.f / 720.f));
  p = xsimd::fma(p, r, F(1.f / 120.f));
  p = xsimd::fma(p, r, F(1.f / 24.f));
  p = xsimd::fma(p, r, F(1.f / 6.f));
  p = xsimd::fma(p, r, F(0.5f));
  p = xsimd::fma(p, r, F(1.f));
  p = xsimd::fma(p, r, F(1.f));
  return scale_by_pow2(p, k);
}

// e^x on a batch: 0 below -87.33 (so e^-inf = 0; no subnormal weights, which would slow the
// products that use them), inf above 88.72, NaN stays NaN.
template <class A>
inline xsimd::batch<float, A> fast_exp(const xsimd::batch<float, A>& x) {
  using F = xsimd::batch<float, A>;
  if constexpr (has_scalef<F>) {
    // vscalefps overflows to inf by itself (x up to 89 is in reach of the reduction), and the
    // clamps keep a NaN (max and min return their second operand, x, when one is NaN): only
    // the low end needs a select. Eight vector instructions fewer than below.
    const F y = exp_in_range(xsimd::min(F(89.f), xsimd::max(F(-87.3f), x)));
    return xsimd::select(x < F(-87.3f), F(0.f), y);
  } else {
    // (88.7228 < 128 ln 2: e^r < 1 there, so 2^128 e^r stays below the exponent field's end)
    F y = exp_in_range(xsimd::min(xsimd::max(x, F(-87.3f)), F(88.7228f)));
    y = xsimd::select(x < F(-87.3f), F(0.f), y);
    y = xsimd::select(x > F(88.7228f), F(__builtin_huge_valf()), y);
    return xsimd::select(xsimd::isnan(x), x, y);
  }
}

// e^x for x <= 0 (e^-inf = 0), fewer compares and blends than fast_exp: softplus's
// e^{-|x|}. A NaN x gives some value in [0, 1]; the caller propagates the NaN itself.
template <class A>
inline xsimd::batch<float, A> fast_exp_nonpositive(const xsimd::batch<float, A>& x) {
  using F = xsimd::batch<float, A>;
  return xsimd::select(x < F(-87.3f), F(0.f), exp_in_range(xsimd::max(x, F(-87.3f))));
}
}  // namespace cpu

template <class A>
struct math<xsimd::batch<float, A>> {
  using T = xsimd::batch<float, A>;
  static T exp(const T& x) { return cpu::fast_exp(x); }
  static T log(const T& x) { return xsimd::log(x); }
  static T log1p(const T& x) { return xsimd::log1p(x); }
  static T tanh(const T& x) { return xsimd::tanh(x); }
  static T sigmoid(const T& x) { return T(1.f) / (T(1.f) + cpu::fast_exp(-x)); }
  static T pow(const T& x, const T& y) { return xsimd::pow(x, y); }
  static T abs(const T& x) { return xsimd::abs(x); }
  static T max(const T& a, const T& b) { return xsimd::max(a, b); }
  static T min(const T& a, const T& b) { return xsimd::min(a, b); }
  // max(x, 0) + log1p(e) with e = e^{-|x|} in (0, 1]: log1p(e) = e q(e), q a degree-7
  // polynomial fitted to log1p(e) / e on [0, 1] (relative error < 4e-7 in float, measured;
  // exact in the limit e -> 0 where 1 + e would round to 1). Seven FMAs and a multiply: no
  // division, which the previous atanh series needed.
  static T softplus(const T& x) {
    const T e = cpu::fast_exp_nonpositive(x | T(-0.f));  // -|x|: the sign bit set
    T q = T(-0.0085746762f);
    q = xsimd::fma(q, e, T(0.0442141923f));
    q = xsimd::fma(q, e, T(-0.107853679f));
    q = xsimd::fma(q, e, T(0.17757024f));
    q = xsimd::fma(q, e, T(-0.244996117f));
    q = xsimd::fma(q, e, T(0.332761766f));
    q = xsimd::fma(q, e, T(-0.499974494f));
    q = xsimd::fma(q, e, T(0.99999981f));
    return xsimd::fma(e, q, xsimd::max(T(0.f), x));  // max_ps returns its second operand, a NaN x
  }
};

}  // namespace attnkit
