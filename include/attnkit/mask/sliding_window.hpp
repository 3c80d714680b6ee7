#pragma once
// Sliding window with attention sinks: allowed iff j - pos <= right and (j - pos >= -left or
// j < sinks). The sinks (StreamingLLM) stay under the right bound, so a causal window with
// sinks never lets an early query see a later sink token.
#include <limits>

#include "concepts.hpp"

namespace attnkit {

inline constexpr index_t unbounded = std::numeric_limits<index_t>::max() / 4;

struct SlidingWindow {
  static constexpr const char* name = "window";
  index_t left = unbounded;
  index_t right = 0;
  index_t sinks = 0;

  void validate(const ProblemInfo&) const {
    require(left >= 0 && left <= unbounded, "mask.left", "window extent must be in [0, unbounded]");
    require(right >= 0 && right <= unbounded, "mask.right", "window extent must be in [0, unbounded]");
    require(sinks >= 0, "mask.sinks", "must be non-negative");
  }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const {
    return j <= pos + right && (j < sinks || j >= pos - left);
  }
  ATTNKIT_HD RowSpan row_span(index_t pos) const { return {pos - left, pos + right + 1, sinks}; }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    const bool right_all = (r.k_hi - 1) <= r.q_lo + right, right_none = r.k_lo > (r.q_hi - 1) + right;
    const bool left_all = r.k_lo >= (r.q_hi - 1) - left || r.k_hi <= sinks;
    const bool left_none = (r.k_hi - 1) < r.q_lo - left && r.k_lo >= sinks;
    if (right_none || left_none) return TileKind::skip;
    return right_all && left_all ? TileKind::full : TileKind::partial;
  }
  ATTNKIT_HD KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const {
    const index_t lo = sinks > 0 ? 0 : q_lo - left;
    const index_t hi = q_hi + right;
    return {lo < 0 ? 0 : lo, hi > nk ? nk : (hi < 0 ? 0 : hi)};
  }
};

// Causal: every key at or before the query's position.
struct Causal {
  static constexpr const char* name = "causal";
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const { return j <= pos; }
  ATTNKIT_HD RowSpan row_span(index_t pos) const { return {0, pos + 1, 0}; }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    if (r.k_hi - 1 <= r.q_lo) return TileKind::full;
    if (r.k_lo > r.q_hi - 1) return TileKind::skip;
    return TileKind::partial;
  }
  ATTNKIT_HD KeyBounds key_bounds(index_t, index_t q_hi, index_t nk) const {
    return {0, q_hi < nk ? (q_hi < 0 ? 0 : q_hi) : nk};
  }
};

}  // namespace attnkit
