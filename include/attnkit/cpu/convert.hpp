#pragma once
// Bulk storage -> float conversion for packing rows: F16C for half where the compiler may use
// it, shifts for bfloat16 (vectorised by the compiler), plain copies for float.
#include <cstring>
#include <type_traits>

#include "../core/dtype.hpp"
#include "../core/tensor.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace attnkit::cpu {

template <class T>
inline void to_float_row(const T* src, float* dst, index_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, std::size_t(n) * sizeof(float));
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    for (index_t d = 0; d < n; ++d) {
      const std::uint32_t u = std::uint32_t(src[d].bits) << 16;
      std::memcpy(dst + d, &u, 4);
    }
  } else {
    index_t d = 0;
#if defined(__F16C__)
    for (; d + 8 <= n; d += 8)
      _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
#endif
    for (; d < n; ++d) dst[d] = to_float(src[d]);
  }
}

}  // namespace attnkit::cpu
