#pragma once
// Content-dependent selection by logit.
//   TopK<Base>:       among the keys Base allows, each query keeps the k with the largest
//                     logits (after score modifiers), ties to the lower key index.
//   TopKBlocks<Base>: each query block keeps the k key blocks with the largest pooled score
//                     mean(q over the block) . mean(k over the key block), among key blocks
//                     Base allows for it (Quest / NSA style), ties to the lower block index.
// Backends bind them per head: TopK to per-row thresholds (TopKRows), TopKBlocks to a block
// bitmap (BlockMask) and'ed with Base.
#include <limits>
#include <string>

#include "block.hpp"
#include "combinators.hpp"
#include "concepts.hpp"
#include "full.hpp"

namespace attnkit {

// A row keeps key j iff (s, -j) >= (threshold, -threshold_index) in lexicographic order.
struct RowThreshold {
  float value = -__builtin_huge_valf();
  index_t index = std::numeric_limits<index_t>::max();  // keep-all default
  index_t kept = 0;                                      // keys the row keeps
};

template <class Base = Full>
struct TopK {
  static constexpr const char* name = "topk";
  static constexpr bool content_dependent = true;
  static constexpr bool selects_by_logit = true;
  static_assert(!is_content_dependent<Base>() || !requires { Base::selects_by_logit; },
                "attnkit: TopK cannot be nested inside another TopK");
  index_t k = 0;
  Base base{};

  void validate(const ProblemInfo& p) const {
    require(k > 0, "mask.k", [&] { return "top-k needs k > 0 (got " + std::to_string(k) + ")"; });
    mask_validate(base, p);
  }
};

// Bound form of TopK over one range of query rows: thresholds[pos - pos0].
template <class BoundBase>
struct TopKRows {
  BoundBase base;
  const RowThreshold* thresholds;
  index_t pos0;

  ATTNKIT_HD bool allowed(index_t pos, index_t j, float s) const {
    if (!mask_allows(base, pos, j, s)) return false;
    const RowThreshold t = thresholds[pos - pos0];
    return s > t.value || (s == t.value && j <= t.index);
  }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    const TileKind c = mask_classify(base, r);
    return c == TileKind::full ? TileKind::partial : c;
  }
  ATTNKIT_HD KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const {
    return mask_key_bounds(base, q_lo, q_hi, nk);
  }
};

template <class T>
inline constexpr bool is_topk_mask_v = false;
template <class B>
inline constexpr bool is_topk_mask_v<TopK<B>> = true;

template <class Base = Full>
struct TopKBlocks {
  static constexpr const char* name = "topk_blocks";
  static constexpr bool content_dependent = true;
  index_t k = 0;
  index_t block_q = 64, block_k = 64;
  Base base{};

  void validate(const ProblemInfo& p) const {
    require(k > 0, "mask.k", [&] { return "top-k needs k > 0 (got " + std::to_string(k) + ")"; });
    require(block_q > 0 && block_k > 0, "mask.block", "block sizes must be positive");
    require(p.q_offset >= 0, "q_offset", "block top-k needs q_offset >= 0");
    mask_validate(base, p);
  }
  index_t q_blocks(const ProblemInfo& p) const { return (p.q_offset + p.Nq + block_q - 1) / block_q; }
  index_t k_blocks(const ProblemInfo& p) const { return (p.Nk + block_k - 1) / block_k; }
};

}  // namespace attnkit
