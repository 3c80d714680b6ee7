#pragma once
// Top-k selection on the CPU: a kept (logit, key) pair as one 64-bit integer whose order is the
// top-k rank, and a branch-free quickselect over such integers. TopK keeps key j over key j'
// when s_j > s_j', or at equal logits when j < j' (mask/topk.hpp's RowThreshold): the packed
// value holds the logit's bits mapped to an unsigned order above the complement of j, so one
// integer compare ranks two keys. On random logits std::nth_element took ~6000 cycles to halve
// 128 {float, index} pairs (its compares are unpredictable branches, two fields each); the
// quickselect below takes ~1700 on the packed values (AVX2 EPYC).
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <utility>

#include "../core/tensor.hpp"  // index_t

namespace attnkit::cpu {

// Key indices a RankedKey holds: below 2^32.
inline constexpr index_t ranked_key_limit = index_t(1) << 32;

struct RankedKey {
  std::uint64_t bits = 0;

  // s must not be NaN (callers rank NaN as -inf); -0 ranks with +0, as float compares do.
  static RankedKey make(float s, index_t j) {
    std::uint32_t u = std::bit_cast<std::uint32_t>(s + 0.f);  // -0 + 0 = +0
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);          // unsigned order = float order
    return {(std::uint64_t(u) << 32) | std::uint64_t(0xffffffffu - std::uint32_t(j))};
  }
  float logit() const {
    const std::uint32_t u = std::uint32_t(bits >> 32);
    return std::bit_cast<float>((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
  }
  index_t key() const { return index_t(0xffffffffu - std::uint32_t(bits)); }
  friend bool operator>(RankedKey a, RankedKey b) { return a.bits > b.bits; }
  friend bool operator<(RankedKey a, RankedKey b) { return a.bits < b.bits; }
};

// Moves the kk best of x[0, n) to x[0, kk) (in no particular order) and the worst of those to
// x[kk - 1], for 0 < kk <= n; tmp holds n values. Quickselect with median-of-three pivots; each
// partition writes every value to both ends of tmp and advances one end (no branch on the
// comparison).
inline void select_best(RankedKey* x, index_t n, index_t kk, RankedKey* tmp) {
  index_t lo = 0, hi = n;  // [0, lo) are among the kk best; the kk-th best lies in [lo, hi)
  while (hi - lo > 16 && lo < kk) {
    const std::uint64_t a = x[lo].bits, b = x[lo + (hi - lo) / 2].bits, c = x[hi - 1].bits;
    const std::uint64_t p = std::max(std::min(a, b), std::min(std::max(a, b), c));
    index_t front = 0, back = hi - lo;
    for (index_t i = lo; i < hi; ++i) {
      const RankedKey v = x[i];
      const bool better = v.bits > p;
      tmp[front] = v;
      tmp[back - 1] = v;
      front += better;
      back -= !better;
    }
    std::memcpy(x + lo, tmp, sizeof(RankedKey) * std::size_t(hi - lo));
    const index_t mid = lo + front;  // [lo, mid): better than the pivot; [mid, hi): the pivot and worse
    if (mid == kk) {
      lo = kk;
    } else if (mid > kk) {
      hi = mid;
    } else {  // the pivot, the best of [mid, hi), is kept too
      for (index_t i = mid; i < hi; ++i)
        if (x[i].bits == p) {
          std::swap(x[i], x[mid]);
          break;
        }
      lo = mid + 1;
    }
  }
  for (; lo < kk; ++lo) {  // a short range: selection
    index_t best = lo;
    for (index_t i = lo + 1; i < hi; ++i) best = x[i] > x[best] ? i : best;
    std::swap(x[lo], x[best]);
  }
  index_t worst = 0;
  for (index_t i = 1; i < kk; ++i) worst = x[i] < x[worst] ? i : worst;
  std::swap(x[worst], x[kk - 1]);
}

}  // namespace attnkit::cpu
