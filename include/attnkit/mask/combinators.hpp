#pragma once
// And / Or of two masks. Tile classes combine conservatively (skip wins for And, full wins
// for Or); the result is content-dependent if either side is.
#include "concepts.hpp"

namespace attnkit {

template <class A, class B>
struct And {
  static_assert(!requires { A::selects_by_logit; } && !requires { B::selects_by_logit; },
                "attnkit: TopK selects among the keys of its base mask and must be the outermost mask: "
                "write TopK<And<A, B>>, not And<TopK<...>, ...>");
  static constexpr const char* name = "and";
  static constexpr bool content_dependent = is_content_dependent<A>() || is_content_dependent<B>();
  A a;
  B b;

  void validate(const ProblemInfo& p) const { mask_validate(a, p), mask_validate(b, p); }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const
    requires ElementMask<A> && ElementMask<B>
  {
    return a.allowed(pos, j) && b.allowed(pos, j);
  }
  ATTNKIT_HD bool allowed(index_t pos, index_t j, float s) const
    requires LogitMask<A> || LogitMask<B>
  {
    return mask_allows(a, pos, j, s) && mask_allows(b, pos, j, s);
  }
  ATTNKIT_HD TileKind classify(const TileRect& r) const { return tile_and(mask_classify(a, r), mask_classify(b, r)); }
  ATTNKIT_HD KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const {
    const KeyBounds x = mask_key_bounds(a, q_lo, q_hi, nk), y = mask_key_bounds(b, q_lo, q_hi, nk);
    return {x.lo > y.lo ? x.lo : y.lo, x.hi < y.hi ? x.hi : y.hi};
  }
  // A block layout and a band (block top-k over a causal base, as bound): inside one block a
  // row takes the band or nothing, so partial tiles inside a block need no allowed() per key
  // (BlockSpanMask; a call per key was two 64-bit divisions and a load).
  static constexpr bool block_and_band = (BlockConstMask<A> && SpanMask<B>) || (SpanMask<A> && BlockConstMask<B>);
  ATTNKIT_HD index_t span_block() const
    requires block_and_band
  {
    if constexpr (BlockConstMask<A>) return a.span_block();
    else return b.span_block();
  }
  ATTNKIT_HD RowSpan block_span(index_t pos, index_t kb) const
    requires block_and_band
  {
    if constexpr (BlockConstMask<A>) return a.block_allows(pos, kb) ? b.row_span(pos) : RowSpan{0, 0, 0};
    else return b.block_allows(pos, kb) ? a.row_span(pos) : RowSpan{0, 0, 0};
  }
};

template <class A, class B>
struct Or {
  static_assert(!requires { A::selects_by_logit; } && !requires { B::selects_by_logit; },
                "attnkit: TopK selects among the keys of its base mask and must be the outermost mask: "
                "write TopK<Or<A, B>>, not Or<TopK<...>, ...>");
  static constexpr const char* name = "or";
  static constexpr bool content_dependent = is_content_dependent<A>() || is_content_dependent<B>();
  A a;
  B b;

  void validate(const ProblemInfo& p) const { mask_validate(a, p), mask_validate(b, p); }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const
    requires ElementMask<A> && ElementMask<B>
  {
    return a.allowed(pos, j) || b.allowed(pos, j);
  }
  ATTNKIT_HD bool allowed(index_t pos, index_t j, float s) const
    requires LogitMask<A> || LogitMask<B>
  {
    return mask_allows(a, pos, j, s) || mask_allows(b, pos, j, s);
  }
  ATTNKIT_HD TileKind classify(const TileRect& r) const { return tile_or(mask_classify(a, r), mask_classify(b, r)); }
  ATTNKIT_HD KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const {
    const KeyBounds x = mask_key_bounds(a, q_lo, q_hi, nk), y = mask_key_bounds(b, q_lo, q_hi, nk);
    if (x.lo >= x.hi) return y;
    if (y.lo >= y.hi) return x;
    return {x.lo < y.lo ? x.lo : y.lo, x.hi > y.hi ? x.hi : y.hi};
  }
};

template <class A, class B> And(A, B) -> And<A, B>;
template <class A, class B> Or(A, B) -> Or<A, B>;

// a & b, a | b for masks of this library (found by argument-dependent lookup).
template <Mask A, Mask B>
constexpr And<A, B> operator&(const A& a, const B& b) { return {a, b}; }
template <Mask A, Mask B>
constexpr Or<A, B> operator|(const A& a, const B& b) { return {a, b}; }

}  // namespace attnkit
