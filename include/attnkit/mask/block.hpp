#pragma once
// Block-sparse layouts over (query block, key block): each tile of block_q x block_k
// (query positions x key indices) is all in or all out. Two storage forms over caller memory:
// a dense row-major bitmap, or BSR lists (row_ptr / sorted col_idx).
#include <string>

#include "concepts.hpp"

namespace attnkit {

namespace detail {
// Shared tile classification for block layouts: visit the blocks a tile covers.
template <class Layout>
ATTNKIT_HD TileKind classify_blocks(const Layout& L, const TileRect& r) {
  if (r.q_hi <= 0) return TileKind::skip;
  const index_t q0 = r.q_lo < 0 ? 0 : r.q_lo;
  const index_t qb0 = q0 / L.block_q, qb1 = (r.q_hi - 1) / L.block_q;
  const index_t kb0 = r.k_lo / L.block_k, kb1 = (r.k_hi - 1) / L.block_k;
  bool any = false, all = r.q_lo >= 0;
  for (index_t qb = qb0; qb <= qb1; ++qb)
    for (index_t kb = kb0; kb <= kb1; ++kb) {
      const bool on = qb < L.q_blocks && kb < L.k_blocks && L.block_on(qb, kb);
      any |= on;
      all &= on;
    }
  return all ? TileKind::full : (any ? TileKind::partial : TileKind::skip);
}

inline void validate_block_grid(index_t q_blocks, index_t k_blocks, index_t block_q, index_t block_k,
                                const ProblemInfo& p) {
  require(block_q > 0 && block_k > 0, "mask.block", "block sizes must be positive");
  require(p.q_offset >= 0, "mask", "block layouts need q_offset >= 0 (query positions index block rows)");
  const index_t want_q = (p.q_offset + p.Nq + block_q - 1) / block_q;
  const index_t want_k = (p.Nk + block_k - 1) / block_k;
  require(q_blocks == want_q && k_blocks == want_k, "mask.layout", [&] {
    return "layout is " + std::to_string(q_blocks) + "x" + std::to_string(k_blocks) + " blocks, problem needs " +
           std::to_string(want_q) + "x" + std::to_string(want_k) + " (ceil((q_offset+Nq)/block_q) x ceil(Nk/block_k))";
  });
}
}  // namespace detail

// Dense bitmap: bitmap[qb * k_blocks + kb] != 0 means block (qb, kb) is allowed.
struct BlockMask {
  static constexpr const char* name = "block";
  const unsigned char* bitmap = nullptr;
  index_t q_blocks = 0, k_blocks = 0;
  index_t block_q = 64, block_k = 64;

  void validate(const ProblemInfo& p) const {
    detail::validate_block_grid(q_blocks, k_blocks, block_q, block_k, p);
    require(bitmap != nullptr || q_blocks * k_blocks == 0, "mask.bitmap", "null layout");
  }
  ATTNKIT_HD bool block_on(index_t qb, index_t kb) const { return bitmap[qb * k_blocks + kb] != 0; }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const {
    if (pos < 0) return false;
    const index_t qb = pos / block_q, kb = j / block_k;
    return qb < q_blocks && kb < k_blocks && block_on(qb, kb);
  }
  ATTNKIT_HD TileKind classify(const TileRect& r) const { return detail::classify_blocks(*this, r); }
  // BlockConstMask: a row takes all or none of key block kb.
  ATTNKIT_HD index_t span_block() const { return block_k; }
  ATTNKIT_HD bool block_allows(index_t pos, index_t kb) const { return allowed(pos, kb * block_k); }
};

// BSR lists: the allowed key blocks of query block qb are col_idx[row_ptr[qb] .. row_ptr[qb+1]),
// sorted ascending.
struct BlockMaskBSR {
  static constexpr const char* name = "block_bsr";
  const int* row_ptr = nullptr;  // q_blocks + 1 entries
  const int* col_idx = nullptr;
  index_t q_blocks = 0, k_blocks = 0;
  index_t block_q = 64, block_k = 64;

  void validate(const ProblemInfo& p) const {
    detail::validate_block_grid(q_blocks, k_blocks, block_q, block_k, p);
    require(row_ptr != nullptr, "mask.row_ptr", "null");
    require(row_ptr[0] == 0, "mask.row_ptr", "must start at 0");
    for (index_t qb = 0; qb < q_blocks; ++qb) {
      require(row_ptr[qb + 1] >= row_ptr[qb], "mask.row_ptr", "must be non-decreasing");
      for (int e = row_ptr[qb]; e < row_ptr[qb + 1]; ++e) {
        require(col_idx != nullptr, "mask.col_idx", "null");
        require(col_idx[e] >= 0 && col_idx[e] < k_blocks, "mask.col_idx", [&] {
          return "entry " + std::to_string(e) + " = " + std::to_string(col_idx[e]) + " outside [0, k_blocks)";
        });
        require(e == row_ptr[qb] || col_idx[e] > col_idx[e - 1], "mask.col_idx",
                "each row's block indices must be strictly increasing");
      }
    }
  }
  ATTNKIT_HD bool block_on(index_t qb, index_t kb) const {
    int lo = row_ptr[qb], hi = row_ptr[qb + 1];
    while (lo < hi) {  // binary search in the sorted row
      const int mid = (lo + hi) / 2;
      if (col_idx[mid] < kb) lo = mid + 1;
      else hi = mid;
    }
    return lo < row_ptr[qb + 1] && col_idx[lo] == kb;
  }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const {
    if (pos < 0) return false;
    const index_t qb = pos / block_q, kb = j / block_k;
    return qb < q_blocks && kb < k_blocks && block_on(qb, kb);
  }
  ATTNKIT_HD TileKind classify(const TileRect& r) const { return detail::classify_blocks(*this, r); }
  // BlockConstMask: a row takes all or none of key block kb. Composed with a band (causal,
  // window), a partial tile inside one key block then asks the lists once per row, not once
  // per key (a binary search each).
  ATTNKIT_HD index_t span_block() const { return block_k; }
  ATTNKIT_HD bool block_allows(index_t pos, index_t kb) const { return allowed(pos, kb * block_k); }
};

}  // namespace attnkit
