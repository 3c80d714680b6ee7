#pragma once
// Binding content-dependent masks to a head's Q/K content on the CPU, in two steps:
//   bind_head (once per (batch, query head), in parallel before the tile loop): key-side
//     data such as key-block means and key cluster ids;
//   bind_tile (per query tile, inside the tile loop): query-side data, returning a plain
//     static mask (MoBARows, ClusterIds, BlockMask, ...) for the tile loop.
// Static masks bind to themselves. TopK's per-row thresholds need the kernel's own logits and
// are computed by the tile loop (see tile_loop.hpp).
#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "../mask/block.hpp"
#include "../mask/combinators.hpp"
#include "../mask/routing.hpp"
#include "../mask/topk.hpp"
#include "simd.hpp"

namespace attnkit::cpu {

// What bind steps may read: the head's queries and keys converted to float.
struct HeadInputs {
  const ProblemInfo* p;
  index_t b, h;
  // Fill out[0..D) with query row i / key row j of this head.
  std::function<void(index_t, float*)> q_row, k_row;
};

// Query rows of the current tile: positions [pos0, pos0 + rows).
struct TileRows {
  index_t pos0, rows;
};

template <class M>
struct Binder {  // static masks
  struct Head {};
  struct Store {};
  static Head bind_head(const M&, const HeadInputs&) { return {}; }
  static M bind_tile(const M& m, const Head&, Store&, const HeadInputs&, TileRows) { return m; }
};

template <class A, class B, template <class, class> class Comb>
struct CombBinder {
  struct Head {
    typename Binder<A>::Head a;
    typename Binder<B>::Head b;
  };
  struct Store {
    typename Binder<A>::Store a;
    typename Binder<B>::Store b;
  };
  static Head bind_head(const Comb<A, B>& m, const HeadInputs& in) {
    return {Binder<A>::bind_head(m.a, in), Binder<B>::bind_head(m.b, in)};
  }
  static auto bind_tile(const Comb<A, B>& m, const Head& h, Store& s, const HeadInputs& in, TileRows t) {
    auto a = Binder<A>::bind_tile(m.a, h.a, s.a, in, t);
    auto b = Binder<B>::bind_tile(m.b, h.b, s.b, in, t);
    return Comb<decltype(a), decltype(b)>{a, b};
  }
};
template <class A, class B>
struct Binder<And<A, B>> : CombBinder<A, B, And> {};
template <class A, class B>
struct Binder<Or<A, B>> : CombBinder<A, B, Or> {};

namespace detail {
// Means of key blocks [kb0, kb1) of a head into out[(kb - kb0) * D + d].
inline void key_block_means(const HeadInputs& in, index_t block, index_t kb0, index_t kb1, float* out) {
  const index_t D = in.p->D, Nk = in.p->Nk;
  std::vector<float> row(static_cast<std::size_t>(D));
  for (index_t kb = kb0; kb < kb1; ++kb) {
    float* dst = out + (kb - kb0) * D;
    std::fill(dst, dst + D, 0.f);
    const index_t j1 = std::min(Nk, (kb + 1) * block);
    for (index_t j = kb * block; j < j1; ++j) {
      in.k_row(j, row.data());
      for (index_t d = 0; d < D; ++d) dst[d] += row[d];
    }
    const float inv = 1.f / float(j1 - kb * block);
    for (index_t d = 0; d < D; ++d) dst[d] *= inv;
  }
}
inline std::vector<float> key_block_means(const HeadInputs& in, index_t block) {
  const index_t nb = (in.p->Nk + block - 1) / block;
  std::vector<float> means(static_cast<std::size_t>(nb * in.p->D));
  key_block_means(in, block, 0, nb, means.data());
  return means;
}

// Vectorised along n (a scalar sum is one dependent add per element: MoBA's routing of 4096
// rows against 64 block means took ~20 ms of a 30 ms call that way).
inline float dot(const float* x, const float* y, index_t n) {
  constexpr index_t W = simd_width;
  vfloat acc0(0.f), acc1(0.f);
  index_t d = 0;
  for (; d + 2 * W <= n; d += 2 * W) {
    acc0 = xsimd::fma(vfloat::load_unaligned(x + d), vfloat::load_unaligned(y + d), acc0);
    acc1 = xsimd::fma(vfloat::load_unaligned(x + d + W), vfloat::load_unaligned(y + d + W), acc1);
  }
  for (; d + W <= n; d += W) acc0 = xsimd::fma(vfloat::load_unaligned(x + d), vfloat::load_unaligned(y + d), acc0);
  float s = xsimd::hadd(acc0 + acc1);
  for (; d < n; ++d) s += x[d] * y[d];
  return s;
}

// Indices of the `keep` largest scores among candidates, ties to the lower index.
inline void top_indices(std::vector<index_t>& cand, const std::vector<float>& score, index_t keep) {
  keep = std::min<index_t>(keep, index_t(cand.size()));
  std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), [&](index_t x, index_t y) {
    return score[x] > score[y] || (score[x] == score[y] && x < y);
  });
  cand.resize(std::size_t(keep));
}
}  // namespace detail

template <>
struct Binder<MoBA> {
  struct Head {
    std::vector<float> kmeans;  // [k_blocks, D]
  };
  struct Store {
    std::vector<std::uint64_t> bits;
    std::vector<float> q, score;
    std::vector<index_t> cand;
  };
  static Head bind_head(const MoBA& m, const HeadInputs& in) { return {detail::key_block_means(in, m.block)}; }
  static MoBARows bind_tile(const MoBA& m, const Head& h, Store& s, const HeadInputs& in, TileRows t) {
    const index_t D = in.p->D, nkb = m.k_blocks(in.p->Nk), words = m.words_per_row(in.p->Nk);
    s.bits.assign(std::size_t(t.rows * words), 0);
    s.q.resize(std::size_t(D));
    s.score.resize(std::size_t(nkb));
    for (index_t r = 0; r < t.rows; ++r) {
      const index_t pos = t.pos0 + r, own = pos / m.block;
      std::uint64_t* row = s.bits.data() + r * words;
      if (own < nkb) row[own / 64] |= std::uint64_t(1) << (own % 64);
      in.q_row(pos - in.p->q_offset, s.q.data());
      s.cand.clear();
      for (index_t kb = 0; kb < std::min(own, nkb); ++kb) {
        s.score[kb] = detail::dot(s.q.data(), h.kmeans.data() + kb * D, D);
        s.cand.push_back(kb);
      }
      detail::top_indices(s.cand, s.score, m.top_k - 1);
      for (index_t kb : s.cand) row[kb / 64] |= std::uint64_t(1) << (kb % 64);
    }
    return {s.bits.data(), words, t.pos0, m.block};
  }
};

namespace detail {
// Nearest centroid of a float row (Euclidean, ties to the lower index), vectorised along D.
inline std::uint8_t nearest_centroid(const ClusterRouting& m, const float* x, index_t D) {
  constexpr index_t W = simd_width;
  const index_t Dfull = D / W * W;
  float best = 0.f;
  std::uint8_t id = 0;
  for (index_t c = 0; c < m.n_clusters; ++c) {
    const float* ctr = m.centroids + c * D;
    vfloat acc0(0.f), acc1(0.f);
    index_t d = 0;
    for (; d + 2 * W <= Dfull; d += 2 * W) {
      const vfloat t0 = vfloat::load_unaligned(x + d) - vfloat::load_unaligned(ctr + d);
      const vfloat t1 = vfloat::load_unaligned(x + d + W) - vfloat::load_unaligned(ctr + d + W);
      acc0 = xsimd::fma(t0, t0, acc0), acc1 = xsimd::fma(t1, t1, acc1);
    }
    for (; d < Dfull; d += W) {
      const vfloat t = vfloat::load_unaligned(x + d) - vfloat::load_unaligned(ctr + d);
      acc0 = xsimd::fma(t, t, acc0);
    }
    float d2 = xsimd::hadd(acc0 + acc1);
    for (; d < D; ++d) d2 += (x[d] - ctr[d]) * (x[d] - ctr[d]);
    if (c == 0 || d2 < best) best = d2, id = std::uint8_t(c);
  }
  return id;
}
}  // namespace detail

template <>
struct Binder<ClusterRouting> {
  struct Head {
    std::vector<std::uint8_t> kc;
  };
  struct Store {
    std::vector<std::uint8_t> qc;
    std::vector<float> row;
  };
  static Head bind_head(const ClusterRouting& m, const HeadInputs& in) {
    Head h{std::vector<std::uint8_t>(std::size_t(in.p->Nk))};
    std::vector<float> row(static_cast<std::size_t>(in.p->D));
    for (index_t j = 0; j < in.p->Nk; ++j) {
      in.k_row(j, row.data());
      h.kc[j] = detail::nearest_centroid(m, row.data(), in.p->D);
    }
    return h;
  }
  static ClusterIds bind_tile(const ClusterRouting& m, const Head& h, Store& s, const HeadInputs& in, TileRows t) {
    s.qc.resize(std::size_t(t.rows));
    s.row.resize(std::size_t(in.p->D));
    for (index_t r = 0; r < t.rows; ++r) {
      in.q_row(t.pos0 + r - in.p->q_offset, s.row.data());
      s.qc[r] = detail::nearest_centroid(m, s.row.data(), in.p->D);
    }
    return {s.qc.data(), h.kc.data(), t.pos0};
  }
};

template <class Base>
struct Binder<TopKBlocks<Base>> {
  using BaseBinder = Binder<Base>;
  struct Head {
    std::vector<unsigned char> bitmap;  // [q_blocks, k_blocks]
    typename BaseBinder::Head base;
  };
  struct Store {
    typename BaseBinder::Store base;
  };
  static Head bind_head(const TopKBlocks<Base>& m, const HeadInputs& in) {
    const ProblemInfo& p = *in.p;
    const index_t D = p.D, nqb = m.q_blocks(p), nkb = m.k_blocks(p);
    Head h{std::vector<unsigned char>(std::size_t(nqb * nkb), 0), BaseBinder::bind_head(m.base, in)};
    const std::vector<float> kmeans = detail::key_block_means(in, m.block_k);
    std::vector<float> qmean(static_cast<std::size_t>(D)), row(static_cast<std::size_t>(D)), score(static_cast<std::size_t>(nkb));
    std::vector<index_t> cand;
    typename BaseBinder::Store store;
    for (index_t qb = 0; qb < nqb; ++qb) {
      const index_t i_lo = std::max<index_t>(0, qb * m.block_q - p.q_offset);
      const index_t i_hi = std::min<index_t>(p.Nq, (qb + 1) * m.block_q - p.q_offset);
      if (i_lo >= i_hi) continue;
      std::fill(qmean.begin(), qmean.end(), 0.f);
      for (index_t i = i_lo; i < i_hi; ++i) {
        in.q_row(i, row.data());
        for (index_t d = 0; d < D; ++d) qmean[d] += row[d];
      }
      for (index_t d = 0; d < D; ++d) qmean[d] /= float(i_hi - i_lo);
      const auto base = BaseBinder::bind_tile(m.base, h.base, store, in, {p.pos(i_lo), i_hi - i_lo});
      cand.clear();
      for (index_t kb = 0; kb < nkb; ++kb) {
        const TileRect r{p.pos(i_lo), p.pos(i_hi), kb * m.block_k, std::min(p.Nk, (kb + 1) * m.block_k)};
        if (mask_classify(base, r) == TileKind::skip) continue;
        bool any = false;  // classification may be conservative: confirm an allowed pair exists
        for (index_t pos = r.q_lo; pos < r.q_hi && !any; ++pos)
          for (index_t j = r.k_lo; j < r.k_hi && !any; ++j) any = base.allowed(pos, j);
        if (!any) continue;
        score[kb] = detail::dot(qmean.data(), kmeans.data() + kb * D, D);
        cand.push_back(kb);
      }
      detail::top_indices(cand, score, m.k);
      for (index_t kb : cand) h.bitmap[qb * nkb + kb] = 1;
    }
    return h;
  }
  static auto bind_tile(const TopKBlocks<Base>& m, const Head& h, Store& s, const HeadInputs& in, TileRows t) {
    const ProblemInfo& p = *in.p;
    BlockMask blocks{h.bitmap.data(), m.q_blocks(p), m.k_blocks(p), m.block_q, m.block_k};
    return And{blocks, BaseBinder::bind_tile(m.base, h.base, s.base, in, t)};
  }
};

// TopK: the base binds as usual; the thresholds come from the tile loop.
template <class Base>
struct Binder<TopK<Base>> {
  using Head = typename Binder<Base>::Head;
  using Store = typename Binder<Base>::Store;
  static Head bind_head(const TopK<Base>& m, const HeadInputs& in) { return Binder<Base>::bind_head(m.base, in); }
  static auto bind_tile(const TopK<Base>& m, const Head& h, Store& s, const HeadInputs& in, TileRows t) {
    return Binder<Base>::bind_tile(m.base, h, s, in, t);  // the base; TopKRows wraps it later
  }
};

}  // namespace attnkit::cpu
