#pragma once
// A mask answers at two levels:
//   allowed(qpos, j)           per element, qpos = i + q_offset the query's absolute position
//   classify(TileRect)         per tile: skip / partial / full (optional; default partial)
//   key_bounds(q_lo, q_hi, nk) the key range a query range can touch (optional; default all)
// Content-dependent masks (top-k, routing) set `content_dependent = true` and are bound to a
// head's Q/K content by the backend before the tile loop; the bound object answers the same
// questions. Masks that test the logit itself expose allowed(qpos, j, s).
#include <concepts>
#include <type_traits>

#include "../core/problem.hpp"

namespace attnkit {

enum class TileKind : unsigned char { skip, partial, full };

// Queries with positions [q_lo, q_hi) against keys [k_lo, k_hi).
struct TileRect {
  index_t q_lo, q_hi, k_lo, k_hi;
};

struct KeyBounds {
  index_t lo, hi;
};

// A row that is a band of keys [lo, hi) plus the sink keys [0, sinks) below hi: allowed(j) iff
// j < hi && (j >= lo || j < sinks). Masks of this shape (causal, sliding windows) may give
// `RowSpan row_span(qpos)`; the GPU kernel then tests its partial tiles with two integer
// compares per key instead of a call to allowed() per key.
struct RowSpan {
  index_t lo, hi, sinks;
};

template <class M>
concept ElementMask = requires(const M m, index_t i, index_t j) {
  { m.allowed(i, j) } -> std::convertible_to<bool>;
};
template <class M>
concept LogitMask = requires(const M m, index_t i, index_t j, float s) {
  { m.allowed(i, j, s) } -> std::convertible_to<bool>;
};
template <class M>
constexpr bool is_content_dependent() {
  if constexpr (requires { M::content_dependent; }) return M::content_dependent;
  else return false;
}

template <class M>
concept SpanMask = requires(const M m, index_t pos) {
  { m.row_span(pos) } -> std::same_as<RowSpan>;
};

// Masks whose allowed keys inside one block of span_block() keys form a band plus sinks per
// row (bound MoBA: all of a routed block up to the causal limit): block_span(pos, kb) holds
// for the keys of block kb (outside it, it says nothing), and a tile that lies inside one
// block then needs one block_span() per row and two compares per key.
template <class M>
concept BlockSpanMask = requires(const M m, index_t pos, index_t kb) {
  { m.block_span(pos, kb) } -> std::same_as<RowSpan>;
  { m.span_block() } -> std::convertible_to<index_t>;
};

// Masks that give each row all or none of a block of span_block() keys (block layouts).
// And-ed with a SpanMask they make a BlockSpanMask (block top-k over a causal base).
template <class M>
concept BlockConstMask = requires(const M m, index_t pos, index_t kb) {
  { m.block_allows(pos, kb) } -> std::convertible_to<bool>;
  { m.span_block() } -> std::convertible_to<index_t>;
};

template <class M>
concept Mask = std::is_trivially_copyable_v<M> && (ElementMask<M> || is_content_dependent<M>());

template <class M>
constexpr void check_mask() {
  static_assert(std::is_trivially_copyable_v<M>,
                "attnkit: a mask must be trivially copyable (hold pointers to data, not containers)");
  static_assert(ElementMask<M> || is_content_dependent<M>(),
                "attnkit: a mask needs `bool allowed(index_t qpos, index_t j) const` "
                "(or `static constexpr bool content_dependent = true` and a backend binding)");
}

template <class M>
ATTNKIT_HD TileKind mask_classify(const M& m, const TileRect& r) {
  if constexpr (requires { m.classify(r); }) return m.classify(r);
  else return TileKind::partial;
}

template <class M>
ATTNKIT_HD KeyBounds mask_key_bounds(const M& m, index_t q_lo, index_t q_hi, index_t nk) {
  if constexpr (requires { m.key_bounds(q_lo, q_hi, nk); }) {
    KeyBounds b = m.key_bounds(q_lo, q_hi, nk);
    return {b.lo < 0 ? 0 : b.lo, b.hi > nk ? nk : b.hi};
  } else {
    return {0, nk};
  }
}

// Element test that also serves masks which look at the logit.
template <class M>
ATTNKIT_HD bool mask_allows(const M& m, index_t qpos, index_t j, float s) {
  if constexpr (LogitMask<M>) return m.allowed(qpos, j, s);
  else return m.allowed(qpos, j);
}

// A mask seen from one query row. Backends that test many keys of the same row (the GPU
// kernel's partial tiles) bind it once per row; masks may provide `row(pos)` returning an
// object with `allowed(j)` that hoists the per-row work (a neighborhood's window).
template <class M>
struct RowOf {
  M mask;  // by value: masks are small, and a pointer would pin a kernel argument to memory
  index_t pos;
  ATTNKIT_HD bool allowed(index_t j) const { return mask.allowed(pos, j); }
};
template <class M>
ATTNKIT_HD auto mask_row(const M& m, index_t pos) {
  if constexpr (requires { m.row(pos); }) return m.row(pos);
  else return RowOf<M>{m, pos};
}

template <class M>
void mask_validate(const M& m, const ProblemInfo& p) {
  if constexpr (requires { m.validate(p); }) m.validate(p);
}

// Combining tile classes.
ATTNKIT_HD constexpr TileKind tile_and(TileKind a, TileKind b) {
  if (a == TileKind::skip || b == TileKind::skip) return TileKind::skip;
  if (a == TileKind::full && b == TileKind::full) return TileKind::full;
  return TileKind::partial;
}
ATTNKIT_HD constexpr TileKind tile_or(TileKind a, TileKind b) {
  if (a == TileKind::full || b == TileKind::full) return TileKind::full;
  if (a == TileKind::skip && b == TileKind::skip) return TileKind::skip;
  return TileKind::partial;
}

}  // namespace attnkit
