#pragma once
// Dense reference: materialises the full logit matrix per head with Eigen in Real (double
// or float) precision and applies the spec literally. It selects content-dependent masks
// with its own code, independent of the backends, so tests can compare selections too.
// O(Nq * Nk) memory per head: for testing and benchmarking only.
#include <Eigen/Dense>
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../mask/block.hpp"
#include "../mask/combinators.hpp"
#include "../mask/routing.hpp"
#include "../mask/topk.hpp"
#include "../score/partial_state.hpp"
#include "../variant.hpp"

namespace attnkit::reference {

template <class Real>
using Matrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using BoolMatrix = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// One head's inputs in Real precision.
template <class Real>
struct HeadData {
  Matrix<Real> q, k, s;  // s: logits after scale and modifiers (or <phi(q), phi(k)> for linear)
  const ProblemInfo* p;
  index_t b, h;
};

template <class Real, class T>
Matrix<Real> load(const TensorView<const T>& t, index_t b, index_t h) {
  Matrix<Real> m(t.seq(), t.dim());
  for (index_t s = 0; s < t.seq(); ++s) {
    const T* row = t.row(b, h, s);
    for (index_t d = 0; d < t.dim(); ++d) m(s, d) = Real(to_float(row[d]));
  }
  return m;
}

// ---- mask matrices: static masks element by element, content masks by their definition ----

template <class Real, class M>
BoolMatrix mask_matrix(const M& mask, const HeadData<Real>& hd) {
  const ProblemInfo& p = *hd.p;
  BoolMatrix a(p.Nq, p.Nk);
  for (index_t i = 0; i < p.Nq; ++i)
    for (index_t j = 0; j < p.Nk; ++j) a(i, j) = mask.allowed(p.pos(i), j);
  return a;
}

template <class Real, class A, class B>
BoolMatrix mask_matrix(const And<A, B>& m, const HeadData<Real>& hd) {
  return (mask_matrix(m.a, hd).array() * mask_matrix(m.b, hd).array()).matrix();
}
template <class Real, class A, class B>
BoolMatrix mask_matrix(const Or<A, B>& m, const HeadData<Real>& hd) {
  return (mask_matrix(m.a, hd).array().max(mask_matrix(m.b, hd).array())).matrix();
}

template <class Real, class Base>
BoolMatrix mask_matrix(const TopK<Base>& m, const HeadData<Real>& hd) {
  const ProblemInfo& p = *hd.p;
  BoolMatrix base = mask_matrix(m.base, hd), out = BoolMatrix::Zero(p.Nq, p.Nk);
  std::vector<index_t> keys;
  for (index_t i = 0; i < p.Nq; ++i) {
    keys.clear();
    for (index_t j = 0; j < p.Nk; ++j)
      if (base(i, j)) keys.push_back(j);
    const index_t keep = std::min<index_t>(m.k, index_t(keys.size()));
    std::stable_sort(keys.begin(), keys.end(), [&](index_t x, index_t y) { return hd.s(i, x) > hd.s(i, y); });
    for (index_t t = 0; t < keep; ++t) out(i, keys[t]) = 1;
  }
  return out;
}

template <class Real>
Matrix<Real> block_means(const Matrix<Real>& x, index_t first, index_t count, index_t block) {
  const index_t nb = (count + block - 1) / block;
  Matrix<Real> means = Matrix<Real>::Zero(nb, x.cols());
  for (index_t b = 0; b < nb; ++b) {
    const index_t lo = b * block, hi = std::min(count, lo + block);
    for (index_t r = lo; r < hi; ++r) means.row(b) += x.row(r - first);
    means.row(b) /= Real(hi - lo);
  }
  return means;
}

template <class Real, class Base>
BoolMatrix mask_matrix(const TopKBlocks<Base>& m, const HeadData<Real>& hd) {
  const ProblemInfo& p = *hd.p;
  const BoolMatrix base = mask_matrix(m.base, hd);
  const index_t nqb = m.q_blocks(p), nkb = m.k_blocks(p);
  Matrix<Real> kmean = block_means<Real>(hd.k, 0, p.Nk, m.block_k);
  BoolMatrix out = BoolMatrix::Zero(p.Nq, p.Nk);
  for (index_t qb = 0; qb < nqb; ++qb) {
    // queries of this block present in the call (positions -> indices)
    const index_t i_lo = std::max<index_t>(0, qb * m.block_q - p.q_offset);
    const index_t i_hi = std::min<index_t>(p.Nq, (qb + 1) * m.block_q - p.q_offset);
    if (i_lo >= i_hi) continue;
    Eigen::Matrix<Real, 1, Eigen::Dynamic> qmean = hd.q.middleRows(i_lo, i_hi - i_lo).colwise().mean();
    std::vector<index_t> cand;
    for (index_t kb = 0; kb < nkb; ++kb) {
      const index_t j_hi = std::min(p.Nk, (kb + 1) * m.block_k);
      if (base.block(i_lo, kb * m.block_k, i_hi - i_lo, j_hi - kb * m.block_k).any()) cand.push_back(kb);
    }
    std::vector<Real> score(nkb);
    for (index_t kb : cand) score[kb] = qmean.dot(kmean.row(kb));
    std::stable_sort(cand.begin(), cand.end(), [&](index_t x, index_t y) { return score[x] > score[y]; });
    for (index_t t = 0; t < std::min<index_t>(m.k, index_t(cand.size())); ++t) {
      const index_t kb = cand[t], j_hi = std::min(p.Nk, (kb + 1) * m.block_k);
      for (index_t i = i_lo; i < i_hi; ++i)
        for (index_t j = kb * m.block_k; j < j_hi; ++j) out(i, j) = base(i, j);
    }
  }
  return out;
}

template <class Real>
BoolMatrix mask_matrix(const MoBA& m, const HeadData<Real>& hd) {
  const ProblemInfo& p = *hd.p;
  Matrix<Real> kmean = block_means<Real>(hd.k, 0, p.Nk, m.block);
  BoolMatrix out = BoolMatrix::Zero(p.Nq, p.Nk);
  for (index_t i = 0; i < p.Nq; ++i) {
    const index_t pos = p.pos(i), own = pos / m.block;
    std::vector<index_t> past(std::min<index_t>(own, kmean.rows()));
    std::iota(past.begin(), past.end(), index_t(0));
    std::vector<Real> score(past.size());
    for (index_t kb : past) score[kb] = hd.q.row(i).dot(kmean.row(kb));
    std::stable_sort(past.begin(), past.end(), [&](index_t x, index_t y) { return score[x] > score[y]; });
    std::vector<std::uint8_t> routed(kmean.rows() + 1, 0);
    if (own < index_t(routed.size())) routed[own] = 1;
    for (index_t t = 0; t < std::min<index_t>(m.top_k - 1, index_t(past.size())); ++t) routed[past[t]] = 1;
    for (index_t j = 0; j < std::min(p.Nk, pos + 1); ++j) out(i, j) = routed[j / m.block];
  }
  return out;
}

template <class Real>
std::vector<int> nearest_centroid(const Matrix<Real>& x, const ClusterRouting& m) {
  std::vector<int> id(x.rows());
  for (index_t r = 0; r < x.rows(); ++r) {
    Real best = 0;
    for (index_t c = 0; c < m.n_clusters; ++c) {
      Real d2 = 0;
      for (index_t d = 0; d < x.cols(); ++d) {
        const Real t = x(r, d) - Real(m.centroids[c * x.cols() + d]);
        d2 += t * t;
      }
      if (c == 0 || d2 < best) best = d2, id[r] = int(c);
    }
  }
  return id;
}

template <class Real>
BoolMatrix mask_matrix(const ClusterRouting& m, const HeadData<Real>& hd) {
  const ProblemInfo& p = *hd.p;
  const std::vector<int> qc = nearest_centroid(hd.q, m), kc = nearest_centroid(hd.k, m);
  BoolMatrix out(p.Nq, p.Nk);
  for (index_t i = 0; i < p.Nq; ++i)
    for (index_t j = 0; j < p.Nk; ++j) out(i, j) = qc[i] == kc[j];
  return out;
}

// ---- the attention itself ----

template <class Real, class Variant, class TQ, class TK>
HeadData<Real> head_data(const Variant& attn, const TensorView<const TQ>& q, const TensorView<const TK>& k,
                         const ProblemInfo& p, index_t b, index_t h) {
  using Score = typename Variant::score_type;
  HeadData<Real> hd{load<Real>(q, b, h), load<Real>(k, b, p.kv_head(h)), {}, &p, b, h};
  if constexpr (is_linear_score<Score>()) {
    Matrix<Real> fq = hd.q.unaryExpr([&](Real x) { return attn.score.template feature<Real>(x); });
    Matrix<Real> fk = hd.k.unaryExpr([&](Real x) { return attn.score.template feature<Real>(x); });
    hd.s = fq * fk.transpose();
  } else {
    hd.s = (hd.q * hd.k.transpose()) * Real(p.scale);
    for (index_t i = 0; i < p.Nq; ++i)
      for (index_t j = 0; j < p.Nk; ++j) {
        Real s = hd.s(i, j);
        if constexpr (Variant::has_mods) s = attn.template modify<Real>(s, {b, h, i, p.pos(i), j});
        hd.s(i, j) = sanitize_logit(s);
      }
  }
  return hd;
}

// Mask matrix of head (b, h) as the reference sees it (1 = key allowed), for selection tests.
template <class Real = double, class Variant, class TQ, class TK, class TV, class TO>
BoolMatrix selection(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k, TensorView<const TV> v,
                     TensorView<TO> o, const Options& opt, index_t b, index_t h) {
  const ProblemInfo p = make_problem(q, k, v, o, opt);
  attn.validate(p);
  return mask_matrix(attn.mask, head_data<Real>(attn, q, k, p, b, h));
}

namespace detail {
template <class Real, class Variant, class TQ, class TK, class TV, class Sink>
void run_heads(const Variant& attn, const TensorView<const TQ>& q, const TensorView<const TK>& k,
               const TensorView<const TV>& v, const ProblemInfo& p, Sink&& sink) {
  using Score = typename Variant::score_type;
  const Score score = attn.score.resolve(p);
  for (index_t b = 0; b < p.B; ++b)
    for (index_t h = 0; h < p.Hq; ++h) {
      const HeadData<Real> hd = head_data<Real>(attn, q, k, p, b, h);
      const BoolMatrix allowed = mask_matrix(attn.mask, hd);
      const Matrix<Real> vv = load<Real>(v, b, p.kv_head(h));
      for (index_t i = 0; i < p.Nq; ++i) {
        Real m = initial_row_max<Score, Real>(), l = 0;
        Eigen::Matrix<Real, 1, Eigen::Dynamic> o = Eigen::Matrix<Real, 1, Eigen::Dynamic>::Zero(p.Dv);
        if constexpr (Score::tracks_max)
          for (index_t j = p.key_begin; j < p.key_end; ++j)
            if (allowed(i, j)) m = std::max(m, hd.s(i, j));
        const Real lambda = score_row_scale<Real>(score, Real(allowed.row(i).template cast<index_t>().sum()));
        if (!(Score::tracks_max && m == -std::numeric_limits<Real>::infinity()))
          for (index_t j = p.key_begin; j < p.key_end; ++j)
            if (allowed(i, j)) {
              const Real w = score.template weight<Real>(hd.s(i, j), m, lambda);
              l += w;
              o += w * vv.row(j);
            }
        sink(b, h, i, m, l, o, score);
      }
    }
}
}  // namespace detail

// Finalised attention: o = finalize(partial over the key range); lse for softmax.
template <class Real = double, class Variant, class TQ, class TK, class TV, class TO>
void attention(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k, TensorView<const TV> v,
               TensorView<TO> o, const Options& opt = {}) {
  const ProblemInfo p = make_problem(q, k, v, o, opt);
  attn.validate(p);
  detail::run_heads<Real>(attn, q, k, v, p, [&](index_t b, index_t h, index_t i, Real m, Real l, const auto& acc, const auto& score) {
    const Real f = score.template finalize_factor<Real>(m, l);
    TO* out = o.row(b, h, i);
    for (index_t d = 0; d < p.Dv; ++d) out[d] = from_float<TO>(float(acc(d) * f));
    if (opt.lse) opt.lse.at(b, h, i) = float(row_lse(m, l));
  });
}

// Unnormalised monoid state of the key range (split-KV partials).
template <class Real = double, class Variant, class TQ, class TK, class TV>
void partial(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k, TensorView<const TV> v,
             const PartialState& out, const Options& opt = {}) {
  const ProblemInfo p = make_problem(q, k, v, out.o, opt);
  attn.validate(p);
  detail::run_heads<Real>(attn, q, k, v, p, [&](index_t b, index_t h, index_t i, Real m, Real l, const auto& acc, const auto&) {
    float* dst = out.o.row(b, h, i);
    for (index_t d = 0; d < p.Dv; ++d) dst[d] = float(acc(d));
    out.m.at(b, h, i) = float(m);
    out.l.at(b, h, i) = float(l);
  });
}

}  // namespace attnkit::reference
