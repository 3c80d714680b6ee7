#pragma once
// Bulk storage -> float conversion for packing rows: F16C for half where the compiler may use
// it, shifts for bfloat16 (vectorised by the compiler), plain copies for float.
#include <cstring>
#include <type_traits>

#include "../core/dtype.hpp"
#include "../core/tensor.hpp"

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

}  // namespace attnkit::cpu
