#pragma once
// Storage types. Inputs and outputs may be float, half (IEEE binary16) or bfloat16;
// all arithmetic is float. The 16-bit types are plain bit containers with the same layout
// as CUDA's __half / __nv_bfloat16, so device pointers can be reinterpreted.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"

namespace attnkit {

namespace detail {
ATTNKIT_HD inline std::uint32_t float_bits(float f) {
#if defined(ATTNKIT_ON_DEVICE)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
ATTNKIT_HD inline float bits_float(std::uint32_t u) {
#if defined(ATTNKIT_ON_DEVICE)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
}  // namespace detail

struct bfloat16 {
  std::uint16_t bits = 0;
  bfloat16() = default;
  ATTNKIT_HD explicit bfloat16(float f) : bits(from_float(f)) {}
  ATTNKIT_HD explicit operator float() const { return detail::bits_float(std::uint32_t(bits) << 16); }

  // Round to nearest even; NaN stays a (quiet) NaN.
  ATTNKIT_HD static std::uint16_t from_float(float f) {
    std::uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return std::uint16_t(u >> 16);
  }
};

struct half {
  std::uint16_t bits = 0;
  half() = default;
  ATTNKIT_HD explicit half(float f) : bits(from_float(f)) {}
  ATTNKIT_HD explicit operator float() const { return to_float(bits); }

  ATTNKIT_HD static float to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return detail::bits_float(sign | 0x7f800000u | (man << 13));  // inf/nan
    if (exp == 0) {
      if (man == 0) return detail::bits_float(sign);
      // Subnormal: value = man * 2^-24.
      float v = float(man) * 5.9604644775390625e-8f;
      return sign ? -v : v;
    }
    return detail::bits_float(sign | ((exp + 112) << 23) | (man << 13));
  }

  // Round to nearest even, overflow to inf, gradual underflow.
  ATTNKIT_HD static std::uint16_t from_float(float f) {
    std::uint32_t u = detail::float_bits(f);
    const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);        // nan
    if (u >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);       // >= 65520 rounds to inf
    if (u < 0x38800000u) {                                            // below 2^-14: subnormal
      if (u < 0x33000000u) return sign;                               // below 2^-25: zero
      const std::uint32_t e = u >> 23, m = (u & 0x7fffffu) | 0x800000u;
      const std::uint32_t shift = 126 - e;                            // 14..24 (+ 10-bit field)
      std::uint32_t r = m >> shift;
      const std::uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
      if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
      return std::uint16_t(sign | r);
    }
    u += 0xfffu + ((u >> 13) & 1u);
    return std::uint16_t(sign | (((u >> 13) - (112u << 10)) & 0xffffu));
  }
};

template <class T>
inline constexpr bool is_storage_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>;

template <class T>
ATTNKIT_HD ATTNKIT_INLINE float to_float(T x) {
  static_assert(is_storage_type_v<T>, "attnkit: storage type must be float, attnkit::half or attnkit::bfloat16");
  return static_cast<float>(x);
}

template <class T>
ATTNKIT_HD ATTNKIT_INLINE T from_float(float x) {
  static_assert(is_storage_type_v<T>, "attnkit: storage type must be float, attnkit::half or attnkit::bfloat16");
  if constexpr (std::is_same_v<T, float>) return x;
  else return T(x);
}

template <class T> inline constexpr const char* dtype_name = "?";
template <> inline constexpr const char* dtype_name<float> = "f32";
template <> inline constexpr const char* dtype_name<half> = "f16";
template <> inline constexpr const char* dtype_name<bfloat16> = "bf16";

}  // namespace attnkit
