#pragma once
// Content-based routing of queries to keys.
//   MoBA: each query routes to the key blocks with the largest q . mean(K_block) among the
//         blocks wholly before its own, keeping top_k blocks in all with its own block always
//         kept (causal inside it); ties to the lower block index.
//   ClusterRouting: shared centroids [n_clusters, D]; q and k interact iff their nearest
//         centroid (Euclidean, ties to the lower index) is the same (Routing Transformer).
// Backends bind them per head to the plain masks below (MoBARows, ClusterIds); the CUDA
// backend's prefills instead gather each block's or cluster's rows (cuda/moba_gather.cuh,
// cuda/cluster_gather.cuh).
//   OwnBlockCausal: the part of MoBA that needs no routing, each query's own block up to
//         itself (the CUDA backend runs it apart from the routed blocks).
#include <cstdint>
#include <string>

#include "concepts.hpp"

namespace attnkit {

struct MoBA {
  static constexpr const char* name = "moba";
  static constexpr bool content_dependent = true;
  index_t block = 64;
  index_t top_k = 3;  // blocks per query, its own block included

  void validate(const ProblemInfo& p) const {
    require(block > 0, "mask.block", "must be positive");
    require(top_k >= 1, "mask.top_k", "MoBA keeps at least the query's own block (top_k >= 1)");
    require(p.q_offset >= 0, "q_offset", "MoBA needs q_offset >= 0");
  }
  index_t k_blocks(index_t nk) const { return (nk + block - 1) / block; }
  index_t words_per_row(index_t nk) const { return (k_blocks(nk) + 63) / 64; }
};

// Bound MoBA over query rows [pos0, ...): bit kb of row (pos - pos0) says block kb is routed.
struct MoBARows {
  const std::uint64_t* bits;
  index_t words;  // per row
  index_t pos0;
  index_t block;

  ATTNKIT_HD bool routed(index_t pos, index_t kb) const {
    return (bits[(pos - pos0) * words + kb / 64] >> (kb % 64)) & 1u;
  }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const { return j <= pos && routed(pos, j / block); }
  // Keys of block kb that row pos attends (BlockSpanMask): the block up to pos if routed.
  ATTNKIT_HD index_t span_block() const { return block; }
  ATTNKIT_HD RowSpan block_span(index_t pos, index_t kb) const {
    if (!routed(pos, kb)) return {0, 0, 0};
    const index_t end = (kb + 1) * block;
    return {kb * block, pos + 1 < end ? pos + 1 : end, 0};
  }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    if (r.k_lo > r.q_hi - 1) return TileKind::skip;
    const bool causal_full = r.k_hi - 1 <= r.q_lo;
    bool any = false, all = causal_full;
    for (index_t kb = r.k_lo / block; kb <= (r.k_hi - 1) / block; ++kb)
      for (index_t pos = r.q_lo; pos < r.q_hi; ++pos) {
        const bool on = routed(pos, kb);
        any |= on;
        all &= on;
      }
    return all ? TileKind::full : (any ? TileKind::partial : TileKind::skip);
  }
  ATTNKIT_HD KeyBounds key_bounds(index_t, index_t q_hi, index_t nk) const { return {0, q_hi < nk ? q_hi : nk}; }
};

// Keys of the query's own block of `block` keys, up to the query: allowed(pos, j) iff
// pos / block == j / block and j <= pos (block-diagonal causal).
struct OwnBlockCausal {
  static constexpr const char* name = "own_block_causal";
  index_t block = 64;

  void validate(const ProblemInfo&) const { require(block > 0, "mask.block", "must be positive"); }
  ATTNKIT_HD index_t start(index_t pos) const { return pos / block * block; }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const { return j <= pos && j >= start(pos); }
  ATTNKIT_HD RowSpan row_span(index_t pos) const { return {start(pos), pos + 1, 0}; }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    if (r.k_lo > r.q_hi - 1 || r.k_hi - 1 < start(r.q_lo)) return TileKind::skip;
    // every row allows every key: past the latest row's block start, before the first row
    if (r.k_lo >= start(r.q_hi - 1) && r.k_hi - 1 <= r.q_lo) return TileKind::full;
    return TileKind::partial;
  }
  ATTNKIT_HD KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const {
    return {start(q_lo), q_hi < nk ? q_hi : nk};
  }
};

struct ClusterRouting {
  static constexpr const char* name = "cluster";
  static constexpr bool content_dependent = true;
  static constexpr index_t max_clusters = 64;
  const float* centroids = nullptr;  // [n_clusters, D] row-major
  index_t n_clusters = 0;

  void validate(const ProblemInfo&) const {
    require(n_clusters >= 1 && n_clusters <= max_clusters, "mask.n_clusters",
            [&] { return "must be in [1, 64] (got " + std::to_string(n_clusters) + ")"; });
    require(centroids != nullptr, "mask.centroids", "null");
  }
};

// Bound clustering: cluster id per query row (pos - pos0) and per key.
struct ClusterIds {
  const std::uint8_t* q_cluster;
  const std::uint8_t* k_cluster;
  index_t pos0;

  ATTNKIT_HD bool allowed(index_t pos, index_t j) const { return q_cluster[pos - pos0] == k_cluster[j]; }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    std::uint64_t qs = 0, ks = 0;
    for (index_t pos = r.q_lo; pos < r.q_hi; ++pos) qs |= std::uint64_t(1) << q_cluster[pos - pos0];
    for (index_t j = r.k_lo; j < r.k_hi; ++j) ks |= std::uint64_t(1) << k_cluster[j];
    if ((qs & ks) == 0) return TileKind::skip;
    if (qs == ks && (qs & (qs - 1)) == 0) return TileKind::full;  // one shared cluster
    return TileKind::partial;
  }
};

}  // namespace attnkit
