#pragma once
// The score x mask test matrix: every mask (static, content-dependent and combined) on the
// standard shapes for fp32 storage, and on two shapes for half and bfloat16.
#include <attnkit/mask/block.hpp>
#include <attnkit/mask/combinators.hpp>
#include <attnkit/mask/full.hpp>
#include <attnkit/mask/neighborhood.hpp>
#include <attnkit/mask/routing.hpp>
#include <attnkit/mask/sliding_window.hpp>
#include <attnkit/mask/topk.hpp>
#include <attnkit/variant.hpp>

#include "common.hpp"

namespace attnkit::test {


inline std::array<index_t, 2> split2(index_t n) {
  index_t a = 1;
  for (index_t d = 2; d * d <= n; ++d)
    if (n % d == 0) a = d;
  return {a, n / a};
}

// Calls f(name, mask, inputs) for every mask that is valid on shape s.
template <class Store, class F>
void for_each_mask(const Shape& s, Store& st, F&& f) {
  const index_t pos0 = s.pos0(), pos_end = pos0 + s.Nq;
  const Inputs normal{}, exact{1.f, true};
  f("full", Full{}, normal);
  f("causal", Causal{}, normal);
  f("window", SlidingWindow{17, 5, 0}, normal);
  f("window+sinks", SlidingWindow{9, 0, 3}, normal);
  f("causal&window", Causal{} & SlidingWindow{20, 0}, normal);
  f("topk<causal>", TopK<Causal>{7}, exact);  // integer inputs: exact logits, deterministic ties
  f("topk<full>", TopK<Full>{12}, exact);
  if (pos0 >= 0 && s.Nk > 0) {
    const index_t bq = 32, bk = 16, qb = (pos_end + bq - 1) / bq, kb = (s.Nk + bk - 1) / bk;
    st.bitmap.assign(std::size_t(qb * kb), 0);
    std::bernoulli_distribution on(0.35);
    for (index_t r = 0; r + 1 < qb || (qb == 1 && r == 0); ++r)  // the last block row stays empty
      for (index_t c = 0; c < kb; ++c) st.bitmap[r * kb + c] = qb == 1 ? 1 : on(rng());
    st.row_ptr.assign(1, 0);
    st.col_idx.clear();
    for (index_t r = 0; r < qb; ++r) {
      for (index_t c = 0; c < kb; ++c)
        if (st.bitmap[r * kb + c]) st.col_idx.push_back(int(c));
      st.row_ptr.push_back(int(st.col_idx.size()));
    }
    const BlockMask block{st.bitmap.data(), qb, kb, bq, bk};
    f("block", block, normal);
    f("block_bsr", BlockMaskBSR{st.row_ptr.data(), st.col_idx.data(), qb, kb, bq, bk}, normal);
    f("window|block", SlidingWindow{4, 4} | block, normal);
    f("moba", MoBA{16, 3}, normal);
    f("topk_blocks<causal>", TopKBlocks<Causal>{2, 16, 32}, normal);
  }
  if (pos0 >= 0 && pos_end <= s.Nk && s.Nk > 0) {
    const index_t n = s.Nk;
    f("neighborhood1d", Neighborhood1D{{n}, {std::min<index_t>(7, n)}, {n >= 14 ? 2 : 1}}, normal);
    const auto [a, b] = split2(n);
    Neighborhood2D nb2{{a, b}, {std::min<index_t>(3, a), std::min<index_t>(5, b)}};
    nb2.dilation[1] = b >= 10 ? 2 : 1;
    f("neighborhood2d", nb2, normal);
    Neighborhood2D nb2c = nb2;
    nb2c.causal[0] = true;
    f("neighborhood2d causal axis", nb2c, normal);
    const auto [b1, c1] = split2(b);
    f("neighborhood3d", Neighborhood3D{{a, b1, c1}, {std::min<index_t>(3, a), std::min<index_t>(3, b1), std::min<index_t>(3, c1)}},
      normal);
  }
  st.centroids.resize(std::size_t(6 * s.D));
  fill_integer_centroids(st.centroids);
  f("cluster", ClusterRouting{st.centroids.data(), 6}, exact);  // exact distances, see fill_integer_centroids
}

// Mask sets: which mask types one (score, dtype) cell of a test matrix instantiates. Each mask
// type is its own kernel, so on the GPU the set decides the build time (see support_cuda.hpp).
struct EveryMask {
  template <class M>
  static constexpr bool covers = true;
};
// One mask per code path: no mask, the causal and banded geometry (with sinks), a per-block
// bitmap, an N-d neighbourhood, and a content-dependent routing pre-pass.
struct OnePerPath {
  template <class M>
  static constexpr bool covers = std::is_same_v<M, Full> || std::is_same_v<M, Causal> || std::is_same_v<M, SlidingWindow> ||
                                 std::is_same_v<M, BlockMask> || std::is_same_v<M, Neighborhood<2>> ||
                                 std::is_same_v<M, ClusterRouting>;
};
// The same plus exact per-key top-k (the CPU backend's own selection path).
struct OnePerPathAndTopK {
  template <class M>
  static constexpr bool covers = OnePerPath::covers<M> || std::is_same_v<M, TopK<Causal>>;
};
// No mask and causal only: a second storage type exercises the MMA and load paths, not the masks.
struct FullAndCausal {
  template <class M>
  static constexpr bool covers = std::is_same_v<M, Full> || std::is_same_v<M, Causal>;
};

// Every mask that MaskSet leaves out, and no mask at all: a matrix split over two translation
// units, so that two cores compile it side by side.
template <class MaskSet>
struct Except {
  template <class M>
  static constexpr bool covers = !MaskSet::template covers<M>;
};
struct NoMask {
  template <class M>
  static constexpr bool covers = false;
};

// Every mask of MaskSet that the backend supports (Backend::supports<Mask>) on shape s,
// against the reference within Backend::tolerance<T>.
template <class T, class MaskSet = EveryMask, class Backend, class Score>
void check_masks_with(const Backend& backend, const Score& score, const Shape& s) {
  typename Backend::mask_store st;
  for_each_mask(s, st, [&](const char* name, const auto& mask, Inputs in) {
    using M = std::decay_t<decltype(mask)>;
    if constexpr (Backend::template supports<M> && MaskSet::template covers<M>) {
      INFO("mask " << name);
      check_variant_on<T>(backend, make_attention(score, mask), s, {}, in, Backend::template tolerance<T>);
    }
  });
}

}  // namespace attnkit::test
