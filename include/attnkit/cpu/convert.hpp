#pragma once
// Storage -> float conversion: whole rows into a buffer (packing tiles), and one SIMD batch
// straight into registers (the decode kernel streams a 16-bit KV cache without a buffer).
// F16C / AVX-512 conversion for half, a widen-and-shift for bfloat16, plain loads for float.
#include <cstring>
#include <type_traits>

#include "../core/dtype.hpp"
#include "../core/tensor.hpp"
#include "simd.hpp"

#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace attnkit::cpu {

template <class T>
inline void to_float_row(const T* src, float* dst, index_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, std::size_t(n) * sizeof(float));
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    index_t d = 0;  // bfloat16 is the top half of a float: widen and shift
#if defined(__AVX512F__)
    for (; d + 16 <= n; d += 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + d));
      _mm512_storeu_si512(dst + d, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
#elif defined(__AVX2__)
    for (; d + 8 <= n; d += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d), _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
#endif
    for (; d < n; ++d) {
      const std::uint32_t u = std::uint32_t(src[d].bits) << 16;
      std::memcpy(dst + d, &u, 4);
    }
  } else {
    index_t d = 0;
#if defined(__AVX512F__)
    for (; d + 16 <= n; d += 16)
      _mm512_storeu_ps(dst + d, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + d))));
#endif
#if defined(__F16C__)
    for (; d + 8 <= n; d += 8)
      _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
#endif
    for (; d < n; ++d) dst[d] = to_float(src[d]);
  }
}

// simd_width storage elements at src as a float batch, converted in registers.
template <class T>
ATTNKIT_INLINE vfloat load_floats(const T* src) {
  if constexpr (std::is_same_v<T, float>) {
    return vfloat::load_unaligned(src);
  } else {
#if defined(__AVX512F__)
    static_assert(simd_width == 16);
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    if constexpr (std::is_same_v<T, bfloat16>) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else return _mm512_cvtph_ps(h);
#elif defined(__AVX2__) && defined(__F16C__)
    static_assert(simd_width == 8);
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    if constexpr (std::is_same_v<T, bfloat16>) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else return _mm256_cvtph_ps(h);
#else
    alignas(64) float tmp[simd_width];
    to_float_row(src, tmp, simd_width);
    return vfloat::load_aligned(tmp);
#endif
  }
}

// The first `avail` of simd_width elements (any avail; <= 0 gives zeros), zero padded.
template <class T>
ATTNKIT_INLINE vfloat load_floats(const T* src, index_t avail) {
  if (avail >= simd_width) return load_floats(src);
  alignas(64) float tmp[simd_width] = {};
  if (avail > 0) to_float_row(src, tmp, avail);
  return vfloat::load_aligned(tmp);
}

}  // namespace attnkit::cpu
