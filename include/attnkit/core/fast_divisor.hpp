#pragma once
// Division by a divisor fixed before a launch (a page size): one multiply-high, an add and a
// shift per quotient instead of the ~20 instructions of a 32-bit integer division, and no
// branch between power-of-two and other divisors (Granlund and Montgomery's round-up method:
// with l = ceil(log2 d) and m = floor(2^32 (2^l - d) / d) + 1, n / d = (mulhi(m, n) + n) >> l;
// exact for every n < 2^31, where the sum cannot overflow).
#include <cstdint>

#include "config.hpp"
#include "error.hpp"

namespace attnkit {

struct FastDivisor {
  std::uint32_t d = 1, m = 1;  // d = 1: mulhi(1, n) = 0, quotient n
  std::uint32_t l = 0;

  FastDivisor() = default;
  explicit FastDivisor(std::int64_t divisor) {
    require(divisor >= 1 && divisor < (std::int64_t(1) << 31), "divisor", "must lie in [1, 2^31)");
    d = std::uint32_t(divisor);
    while ((std::uint64_t(1) << l) < d) ++l;
    m = std::uint32_t(((std::uint64_t(1) << 32) * ((std::uint64_t(1) << l) - d)) / d + 1);
  }

  // n / d and n % d for 0 <= n < 2^31.
  ATTNKIT_HD int quotient(int n) const {
    const std::uint32_t u = std::uint32_t(n);
#ifdef ATTNKIT_ON_DEVICE
    const std::uint32_t hi = __umulhi(m, u);
#else
    const std::uint32_t hi = std::uint32_t((std::uint64_t(m) * u) >> 32);
#endif
    return int((hi + u) >> l);
  }
  ATTNKIT_HD int remainder(int n, int q) const { return n - q * int(d); }
};

}  // namespace attnkit
