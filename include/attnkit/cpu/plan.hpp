#pragma once
// The CPU tile loop. A Plan validates a call and splits it into independent work items,
// one per (batch, query head, query tile) -- or per head for chunked linear attention --
// ordered so that the query heads sharing a key/value head come together. Engines drive the
// items from their own threads with execute(begin, end, worker); run() in run.hpp is the
// default driver.
//
// One work item: Q tile -> Q^T (scaled) in a buffer; for each key tile the mask does not
// skip: S^T = K Q^T (register-blocked GEMM), score modifiers, element mask on partial tiles
// only, the score function's monoid update vectorised across the tile's queries, O += P V.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "../score/partial_state.hpp"
#include "../variant.hpp"
#include "bind.hpp"
#include "convert.hpp"
#include "gemm.hpp"
#include "kv_rows.hpp"
#include "neighborhood_tiles.hpp"
#include "parallel.hpp"
#include "simd.hpp"
#include "topk_select.hpp"

namespace attnkit::cpu {

inline constexpr index_t tile_q = 64;  // queries per work item (a multiple of the SIMD width)
inline constexpr index_t tile_k = 64;  // keys per inner tile

struct TileCounters {
  index_t full = 0, partial = 0, skipped = 0;
  index_t visited() const { return full + partial; }
};

template <class Variant, class TQ, class TK, class TV, class TO>
class Plan {
  using Score = typename Variant::score_type;
  using MaskT = typename Variant::mask_type;
  using Bind = Binder<MaskT>;
  static constexpr bool linear = is_linear_score<Score>();
  static constexpr bool content = is_content_dependent<MaskT>();
  static constexpr index_t TQP = round_up(tile_q, simd_width);
  static constexpr int nb_rank = neighborhood_rank<MaskT>;  // > 0: patch-tiled neighborhood

 public:
  // Scratch memory of one thread; keep one per thread across execute() calls.
  struct Worker {
    line_vector<float> qt, qrow, st, valid, acc, m, l, lambda, alpha;
    std::vector<index_t> qi;            // query indices of the current tile
    line_vector<float> kcache, vcache;  // linear attention: phi(K) and V of one kv head
    line_vector<float> ktile, vtile;    // converted key / value tile
    // Head (b, kv head) held in kcache / vcache; valid within one execute() call only: the
    // next call may belong to another plan (other tensors, another Nk) or see new data.
    index_t cached_b = -1, cached_h = -1;
    std::vector<RankedKey> kept;        // top-k: each row's best keys so far (logits after modifiers), [tile_q, 2k]
    std::vector<RankedKey> kept_tmp;    // the selection's scratch, [2k]
    std::vector<index_t> kept_n, kept_seen;  // keys held, allowed keys seen (per row)
    line_vector<float> kept_worst;           // the bar a key must beat (after k keys seen), [TQP]
    std::vector<RowThreshold> thresholds;
    std::vector<float> sel;  // top-k: a row's kept logits, then their weights
    line_vector<float> kbuf, vbuf, qwin, kcoord;  // gathered keys of neighborhood patches
    std::vector<index_t> kidx;
    typename Bind::Store store;
    TileCounters counters;
  };

  Plan(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k, TensorView<const TV> v,
       TensorView<TO> o, const Options& opt, const PartialState* partial = nullptr, BatchSlot slot = {})
      : attn_(attn), q_(q), k_(k), v_(v), o_(o), opt_(opt), slot_(slot) {
    p_ = make_problem(q, k, v, o, opt);
    attn.validate(p_);
    if constexpr (is_topk_mask_v<MaskT>)
      require(p_.Nk <= ranked_key_limit, "k", "top-k on the CPU takes at most 2^32 keys per sequence");
    score_ = attn.score.resolve(p_);
    if (opt.lse)
      require(score_has_lse<Score>(), "lse",
              [&] { return std::string("score function '") + Score::name + "' has no log-sum-exp"; });
    if (partial) {
      require(partial->o.shape == o.shape, "partial.o", "must have the output's shape");
      require(partial->m.data && partial->l.data, "partial", "m and l views are required");
      partial_ = *partial;
      has_partial_ = true;
    }
    group_ = p_.group();
    n_qtiles_ = (p_.Nq + tile_q - 1) / tile_q;
    if constexpr (nb_rank > 0) {
      nb_tiling_.emplace(attn.mask);
      n_qtiles_ = nb_tiling_->tiles();
    }
    Dvp_ = round_up(p_.Dv, gemm_nr);
    chunked_ = linear && runs_chunked();
    if (chunked_) {
      // Few heads for many threads: also split the value columns (each split recomputes the
      // cheap intra-chunk logits but owns a slice of the D x Dv state).
      const index_t heads = std::max<index_t>(p_.B * p_.Hq, 1);
      const index_t threads = opt.threads > 0 ? opt.threads : default_threads();
      dv_splits_ = std::clamp<index_t>((threads + heads - 1) / heads, 1, Dvp_ / gemm_nr);
    }
    if constexpr (content) heads_.resize(std::size_t(p_.B * p_.Hq));
  }

  const ProblemInfo& problem() const { return p_; }

  // Phase 1 (content-dependent masks only): per-head binding, items [0, prepare_items()).
  index_t prepare_items() const { return content && !p_.empty() ? p_.B * p_.Hq : 0; }
  void prepare(index_t begin, index_t end) {
    for (index_t it = begin; it < end; ++it) {
      const index_t b = it / p_.Hq, h = it % p_.Hq;
      heads_[it] = Bind::bind_head(attn_.mask, inputs(b, h));
    }
  }

  // Phase 2: the attention itself, items [0, work_items()).
  index_t work_items() const {
    if (p_.empty()) return 0;
    return chunked_ ? p_.B * p_.Hq * dv_splits_ : p_.B * p_.Hq * n_qtiles_;
  }
  void execute(index_t begin, index_t end, Worker& w) {
    w.cached_b = w.cached_h = -1;
    for (index_t it = begin; it < end; ++it) {
      if (chunked_) run_linear_chunked(it, w);
      else run_tile(it, w);
    }
  }

  // The mask as this backend applies it to head (b, h): [Nq * Nk] bytes, 1 = key allowed.
  // Uses the same binding, classification and top-k logits as execute(); for tests.
  std::vector<std::uint8_t> selection(index_t b, index_t h, Worker& w) {
    std::vector<std::uint8_t> sel(std::size_t(p_.Nq * p_.Nk), 0);
    const index_t hkv = p_.kv_head(h);
    w.cached_b = w.cached_h = -1;
    if constexpr (content) heads_[b * p_.Hq + h] = Bind::bind_head(attn_.mask, inputs(b, h));
    for (index_t i0 = 0; i0 < p_.Nq; i0 += tile_q) {
      const index_t rows = std::min(tile_q, p_.Nq - i0), pos0 = p_.pos(i0);
      const HeadKV kv = load_head(w, b, hkv);
      pack_q(w, b, h, i0, rows);
      alloc_tile(w);
      with_tile_mask(w, kv, b, h, i0, rows, [&](const auto& bm) {
        for_each_key_tile(bm, pos0, rows, tile_keys(bm, pos0, rows, 0, p_.Nk), [&](index_t jlo, index_t n, TileKind kind) {
          if (kind == TileKind::skip) return;
          tile_logits(w, kv, jlo, n, b, h, rows);
          for (index_t c = 0; c < n; ++c)
            for (index_t r = 0; r < rows; ++r)
              sel[(i0 + r) * p_.Nk + jlo + c] =
                  kind == TileKind::full || mask_allows(bm, pos0 + r, jlo + c, w.st[c * TQP + r]);
        });
      });
    }
    return sel;
  }

  TileCounters counters() const {
    return {full_.load(), partial_tiles_.load(), skipped_.load()};
  }
  void add_counters(const Worker& w) {
    full_ += w.counters.full;
    partial_tiles_ += w.counters.partial;
    skipped_ += w.counters.skipped;
  }

 private:
  // ---------------------------------------------------------------- shared helpers
  HeadInputs inputs(index_t b, index_t h) const {
    const index_t hkv = p_.kv_head(h), D = p_.D;
    const auto q = q_;
    const HeadRows<TK> k = head_rows(k_, b, hkv, slot_, false);
    return {&p_, b, h,
            [q, b, h, D](index_t i, float* out) { to_float_row(q.row(b, h, i), out, D); },
            [k, D](index_t j, float* out) { to_float_row(k.row(j), out, D); }};
  }

  bool runs_chunked() const {
    if constexpr (std::is_same_v<MaskT, Full> || std::is_same_v<MaskT, Causal>) return true;
    else if constexpr (std::is_same_v<MaskT, SlidingWindow>) {
      // The chunked form computes Full or Causal, so the window may cut off no key of any
      // query of the call: positions run over [q_offset, q_offset + Nq - 1] (negative ones
      // included) and keys over [0, Nk - 1]. With the left bound at or before key 0 for
      // every query the sinks change nothing; the right bound must either be the query
      // itself (causal) or reach the last key from the first query.
      const auto& m = attn_.mask;
      const index_t first = p_.q_offset, last = p_.q_offset + p_.Nq - 1;
      return m.left >= last && (m.right == 0 || m.right >= p_.Nk - 1 - first);
    } else return false;
  }
  bool mask_is_causal() const {
    if constexpr (std::is_same_v<MaskT, Causal>) return true;
    else if constexpr (std::is_same_v<MaskT, SlidingWindow>) return attn_.mask.right == 0;
    else return false;
  }

  // Where the keys and values of one kv head come from. Strided float rows are read in place;
  // other storage and paged rows are converted / gathered tile by tile into L1-sized buffers
  // (no per-head copy), except for linear attention, which keeps phi(K) and V of the head in
  // float.
  struct HeadKV {
    HeadRows<TK> k;
    HeadRows<TV> v;
    const float* kf = nullptr;  // float rows when available
    const float* vf = nullptr;
    index_t kf_ld = 0, vf_ld = 0;
  };

  HeadKV load_head(Worker& w, index_t b, index_t hkv) {
    const index_t Nk = p_.Nk, D = p_.D;
    if (Nk == 0) return HeadKV{};  // no rows to point at
    HeadKV kv{head_rows(k_, b, hkv, slot_, false), head_rows(v_, b, hkv, slot_, true)};
    if constexpr (linear) {
      if (w.cached_b != b || w.cached_h != hkv) {
        w.kcache.resize(std::size_t(Nk * D));
        w.vcache.assign(std::size_t(Nk * Dvp_), 0.f);
        for (index_t j = 0; j < Nk; ++j) {
          float* dst = w.kcache.data() + j * D;
          to_float_row(kv.k.row(j), dst, D);
          apply_feature(dst, D);
          to_float_row(kv.v.row(j), w.vcache.data() + j * Dvp_, p_.Dv);
        }
        w.cached_b = b, w.cached_h = hkv;
      }
      kv.kf = w.kcache.data(), kv.kf_ld = D, kv.vf = w.vcache.data(), kv.vf_ld = Dvp_;
    } else {
      if constexpr (std::is_same_v<TK, float>)
        if (kv.k.strided()) kv.kf = kv.k.base, kv.kf_ld = kv.k.ld;
      if constexpr (std::is_same_v<TV, float>)
        if (kv.v.strided() && p_.Dv % gemm_nr == 0) kv.vf = kv.v.base, kv.vf_ld = kv.v.ld;
    }
    return kv;
  }
  // Float key rows [j, j + n): a pointer to row j and the row stride.
  const float* key_rows(Worker& w, const HeadKV& kv, index_t j, index_t n, index_t& ld) const {
    if (kv.kf) return ld = kv.kf_ld, kv.kf + j * kv.kf_ld;
    w.ktile.resize(std::size_t(tile_k * p_.D));
    for (index_t c = 0; c < n; ++c) to_float_row(kv.k.row(j + c), w.ktile.data() + c * p_.D, p_.D);
    return ld = p_.D, w.ktile.data();
  }
  // Float value rows [j, j + n), padded with zeros to Dvp columns.
  const float* value_rows(Worker& w, const HeadKV& kv, index_t j, index_t n, index_t& ld) const {
    if (kv.vf) return ld = kv.vf_ld, kv.vf + j * kv.vf_ld;
    w.vtile.resize(std::size_t(tile_k * Dvp_));
    for (index_t c = 0; c < n; ++c) {
      float* dst = w.vtile.data() + c * Dvp_;
      to_float_row(kv.v.row(j + c), dst, p_.Dv);
      std::fill(dst + p_.Dv, dst + Dvp_, 0.f);
    }
    return ld = Dvp_, w.vtile.data();
  }
  void key_row_into(const HeadKV& kv, index_t j, float* dst) const {
    if (kv.kf) std::copy_n(kv.kf + j * kv.kf_ld, p_.D, dst);
    else to_float_row(kv.k.row(j), dst, p_.D);
  }
  void value_row_into(const HeadKV& kv, index_t j, float* dst) const {
    if (kv.vf) return (void)std::copy_n(kv.vf + j * kv.vf_ld, Dvp_, dst);
    to_float_row(kv.v.row(j), dst, p_.Dv);
    std::fill(dst + p_.Dv, dst + Dvp_, 0.f);
  }

  // x <- phi(x) for linear attention's feature map, vectorised where the map allows it.
  void apply_feature(float* x, index_t n) const {
    index_t d = 0;
    if constexpr (requires(vfloat v) { score_.feature(v); })
      for (; d + simd_width <= n; d += simd_width) score_.feature(vfloat::load_unaligned(x + d)).store_unaligned(x + d);
    for (; d < n; ++d) x[d] = score_.feature(x[d]);
  }

  // Q^T of the query rows w.qi[0, rows) -- or [i0, i0 + rows) when i0 >= 0 -- into
  // w.qt [D][TQP], scaled (or feature-mapped), zero padded.
  void pack_q(Worker& w, index_t b, index_t h, index_t i0, index_t rows) const {
    const index_t D = p_.D;
    if (i0 >= 0) {
      w.qi.resize(std::size_t(rows));
      for (index_t r = 0; r < rows; ++r) w.qi[r] = i0 + r;
    }
    w.qt.assign(std::size_t(D * TQP), 0.f);
    w.qrow.resize(std::size_t(D));
    for (index_t r = 0; r < rows; ++r) {
      to_float_row(q_.row(b, h, w.qi[r]), w.qrow.data(), D);
      if constexpr (linear) {
        apply_feature(w.qrow.data(), D);
        for (index_t d = 0; d < D; ++d) w.qt[d * TQP + r] = w.qrow[d];
      } else {
        for (index_t d = 0; d < D; ++d) w.qt[d * TQP + r] = p_.scale * w.qrow[d];
      }
    }
  }

  void alloc_tile(Worker& w) const {
    w.st.resize(std::size_t(tile_k * TQP));
    w.valid.resize(std::size_t(tile_k * TQP));
    w.acc.assign(std::size_t(tile_q * Dvp_), 0.f);
    w.m.assign(std::size_t(TQP), initial_row_max<Score>());
    w.l.assign(std::size_t(TQP), 0.f);
    w.lambda.assign(std::size_t(TQP), 1.f);
    w.alpha.resize(std::size_t(TQP));
  }

  // S^T[c][r] for keys [jlo, jlo + n): logits after modifiers.
  // Logits of keys [jlo, jlo + n) -- or kidx[0, n) when given -- whose float rows are at
  // krows with stride ldk.
  void logits(Worker& w, const float* krows, index_t ldk, index_t jlo, index_t n, index_t b, index_t h, index_t rows,
              const index_t* kidx = nullptr) const {
    gemm<false>(n, TQP, p_.D, krows, ldk, 1, w.qt.data(), TQP, w.st.data(), TQP);
    if constexpr (Variant::has_mods) {
      for (index_t c = 0; c < n; ++c)
        for (index_t r = 0; r < rows; ++r) {
          float& s = w.st[c * TQP + r];
          const index_t i = w.qi[r];
          s = attn_.template modify<float>(s, {slot_.seq + b, h, i, p_.pos(i), kidx ? kidx[c] : jlo + c});
        }
    }
    if constexpr (!linear) {  // the spec's logit sanitisation, see sanitize_logit()
      float* st = w.st.data();
      for (index_t e = 0; e < n * TQP; e += simd_width) {
        const vfloat x = vfloat::load_unaligned(st + e);
        xsimd::select(x == x, xsimd::min(x, vfloat(max_logit)), vfloat(neg_inf)).store_unaligned(st + e);
      }
    }
  }

  void tile_logits(Worker& w, const HeadKV& kv, index_t jlo, index_t n, index_t b, index_t h, index_t rows) const {
    index_t ld = 0;
    const float* kr = key_rows(w, kv, jlo, n, ld);
    logits(w, kr, ld, jlo, n, b, h, rows);
  }

  template <class BM>
  KeyBounds tile_keys(const BM& bm, index_t pos0, index_t rows, index_t lo, index_t hi) const {
    KeyBounds kb = mask_key_bounds(bm, pos0, pos0 + rows, p_.Nk);
    return {std::max(kb.lo, lo), std::min(kb.hi, hi)};
  }

  // Iterates the key tiles of [kb.lo, kb.hi) with their class: f(jlo, n, kind).
  template <class BM, class F>
  void for_each_key_tile(const BM& bm, index_t pos0, index_t rows, KeyBounds kb, F&& f) const {
    for (index_t j0 = kb.lo / tile_k * tile_k; j0 < kb.hi; j0 += tile_k) {
      const index_t jlo = std::max(j0, kb.lo), jhi = std::min(j0 + tile_k, kb.hi);
      f(jlo, jhi - jlo, mask_classify(bm, TileRect{pos0, pos0 + rows, jlo, jhi}));
    }
  }

  // ---------------------------------------------------------------- quadratic tile loop
  void run_tile(index_t item, Worker& w) {
    if constexpr (nb_rank > 0) return run_patch(item, w);
    const index_t qt = item % n_qtiles_, t = item / n_qtiles_;
    const index_t g = t % group_, hkv = (t / group_) % p_.Hkv, b = t / (group_ * p_.Hkv);
    const index_t h = hkv * group_ + g;
    const index_t i0 = qt * tile_q, rows = std::min(tile_q, p_.Nq - i0);
    const HeadKV kv = load_head(w, b, hkv);
    pack_q(w, b, h, i0, rows);
    alloc_tile(w);
    with_tile_mask(w, kv, b, h, i0, rows, [&](const auto& bm) {
      if constexpr (is_topk_mask_v<MaskT> && !linear) attend_kept(w, bm, kv, b, h, i0, rows);
      else attend(w, bm, kv, b, h, i0, rows);
    });
  }

  // Binds the mask to the query tile (content-dependent masks, top-k thresholds) and calls
  // f with the plain mask the tile loop tests.
  template <class F>
  void with_tile_mask(Worker& w, const HeadKV& kv, index_t b, index_t h, index_t i0, index_t rows, F&& f) {
    const index_t pos0 = p_.pos(i0);
    const auto bound = [&] {
      if constexpr (content) return Bind::bind_tile(attn_.mask, heads_[b * p_.Hq + h], w.store, inputs(b, h), {pos0, rows});
      else return attn_.mask;
    }();
    if constexpr (is_topk_mask_v<MaskT>) {
      select_topk(w, bound, kv, b, h, i0, rows);
      f(TopKRows<std::remove_const_t<decltype(bound)>>{bound, w.thresholds.data(), pos0});
    } else {
      f(bound);
    }
  }

  // ---------------------------------------------------------------- neighborhood patches
  void run_patch(index_t item, Worker& w) {
    constexpr int R = nb_rank < 1 ? 1 : nb_rank;
    const auto& m = attn_.mask;
    const auto& tiling = *nb_tiling_;
    const index_t qt = item % n_qtiles_, t = item / n_qtiles_;
    const index_t g = t % group_, hkv = (t / group_) % p_.Hkv, b = t / (group_ * p_.Hkv);
    const index_t h = hkv * group_ + g;
    const auto seg = tiling.tile(qt);
    // Queries of the patch that this call holds, with their windows per axis.
    w.qi.clear();
    w.qwin.assign(std::size_t(2 * R * TQP), 0.f);
    float* qs = w.qwin.data();          // [R][TQP] window start (sub-grid coords)
    float* qe = qs + R * TQP;           // [R][TQP] window end
    std::fill(qs, qs + R * TQP, __builtin_huge_valf());
    std::fill(qe, qe + R * TQP, -__builtin_huge_valf());
    std::array<index_t, R> lo, hi, u{};
    for (int a = 0; a < R; ++a) lo[a] = std::numeric_limits<index_t>::max(), hi[a] = 0;
    for (;;) {
      index_t pos = 0;
      for (int a = 0; a < R; ++a) pos += (seg[a].group + m.dilation[a] * (seg[a].start + u[a])) * tiling.stride[a];
      const index_t i = pos - p_.q_offset;
      if (i >= 0 && i < p_.Nq) {
        const index_t r = index_t(w.qi.size());
        w.qi.push_back(i);
        for (int a = 0; a < R; ++a) {
          const auto win = m.window(a, seg[a].group + m.dilation[a] * (seg[a].start + u[a]));
          qs[a * TQP + r] = float(win.start), qe[a * TQP + r] = float(win.end);
          lo[a] = std::min(lo[a], win.start), hi[a] = std::max(hi[a], win.end);
        }
      }
      int a = R - 1;  // odometer over the patch
      while (a >= 0 && ++u[a] == seg[a].len) u[a--] = 0;
      if (a < 0) break;
    }
    const index_t rows = index_t(w.qi.size());
    if (rows == 0) return;
    const HeadKV kv = load_head(w, b, hkv);
    pack_q(w, b, h, -1, rows);
    alloc_tile(w);
    if (score_needs_row_count(score_))
      for (index_t r = 0; r < rows; ++r) {
        float n = 1.f;
        for (int a = 0; a < R; ++a) n *= qe[a * TQP + r] - qs[a * TQP + r];
        w.lambda[r] = score_row_scale<float>(score_, n);
      }
    // Keys: the union of the windows, one residue class per axis, inside the call's key range.
    w.kidx.clear();
    w.kcoord.clear();
    std::array<index_t, R> v = lo;
    for (bool more = true; more;) {
      index_t j = 0;
      for (int a = 0; a < R; ++a) j += (seg[a].group + m.dilation[a] * v[a]) * tiling.stride[a];
      if (j >= p_.key_begin && j < p_.key_end) {
        w.kidx.push_back(j);
        for (int a = 0; a < R; ++a) w.kcoord.push_back(float(v[a]));
      }
      int a = R - 1;
      while (a >= 0 && ++v[a] == hi[a]) v[a] = lo[a], --a;
      more = a >= 0;
    }
    const index_t nkeys = index_t(w.kidx.size()), D = p_.D;
    w.kbuf.resize(std::size_t(tile_k * D));
    w.vbuf.resize(std::size_t(tile_k * Dvp_));
    for (index_t c0 = 0; c0 < nkeys; c0 += tile_k) {
      const index_t n = std::min(tile_k, nkeys - c0);
      for (index_t c = 0; c < n; ++c) {
        key_row_into(kv, w.kidx[c0 + c], w.kbuf.data() + c * D);
        value_row_into(kv, w.kidx[c0 + c], w.vbuf.data() + c * Dvp_);
      }
      logits(w, w.kbuf.data(), D, 0, n, b, h, rows, w.kidx.data() + c0);
      for (index_t c = 0; c < n; ++c) {
        const float* kc = w.kcoord.data() + (c0 + c) * R;
        for (index_t r = 0; r < TQP; r += simd_width) {
          auto ok = vfloat(kc[0]) >= vfloat::load_unaligned(qs + r) && vfloat(kc[0]) < vfloat::load_unaligned(qe + r);
          for (int a = 1; a < R; ++a)
            ok = ok && vfloat(kc[a]) >= vfloat::load_unaligned(qs + a * TQP + r) &&
                 vfloat(kc[a]) < vfloat::load_unaligned(qe + a * TQP + r);
          float* st = w.st.data() + c * TQP + r;
          if constexpr (Score::tracks_max) {
            xsimd::select(ok, vfloat::load_unaligned(st), vfloat(neg_inf)).store_unaligned(st);
          } else {
            xsimd::select(ok, vfloat::load_unaligned(st), vfloat(0.f)).store_unaligned(st);
            xsimd::select(ok, vfloat(1.f), vfloat(0.f)).store_unaligned(w.valid.data() + c * TQP + r);
          }
        }
      }
      ++w.counters.partial;
      update_rows(w, n, true, rows);
      gemm<true>(rows, Dvp_, n, w.st.data(), 1, TQP, w.vbuf.data(), Dvp_, w.acc.data(), Dvp_);
    }
    finish_rows(w, b, h, rows);
  }

  // Keys a top-k row keeps at most: k, or every key when k exceeds them (bounds the buffers).
  index_t topk_keep() const {
    if constexpr (is_topk_mask_v<MaskT>) return std::min(attn_.mask.k, std::max<index_t>(p_.Nk, 1));
    else return 0;
  }

  // TopK: per-row threshold (value, index) of the k-th largest (s, -j) among base-allowed keys,
  // and the kept keys themselves. Each row holds its best k so far plus the keys that beat the
  // worst of them since, up to 2k; when full, a selection keeps the best k again. Keys arrive
  // in increasing index order, so a key is taken only with a logit above that worst (at equal
  // logits the kept lower index wins) and on typical logits costs one compare. (Collecting
  // every logit and selecting afterwards took 2-3x longer than the logits' own GEMM; a heap
  // per row spent most of its time in sift steps at N = 1024.)
  template <class BM>
  void select_topk(Worker& w, const BM& base, const HeadKV& kv, index_t b, index_t h, index_t i0,
                   index_t rows) const {
    const index_t pos0 = p_.pos(i0), kk = topk_keep();
    w.kept.resize(std::size_t(tile_q * 2 * kk));
    w.kept_tmp.resize(std::size_t(2 * kk));
    w.kept_n.assign(std::size_t(tile_q), 0);
    w.kept_seen.assign(std::size_t(tile_q), 0);
    w.kept_worst.assign(std::size_t(TQP), neg_inf);
    std::fill(w.kept_worst.begin() + rows, w.kept_worst.end(), __builtin_huge_valf());
    w.thresholds.assign(std::size_t(tile_q), RowThreshold{});
    // Keeps row r's best k at [0, k), the k-th best at k - 1.
    const auto prune = [&](index_t r) {
      RankedKey* row = w.kept.data() + r * 2 * kk;
      select_best(row, w.kept_n[r], kk, w.kept_tmp.data());
      w.kept_n[r] = kk;
      w.kept_worst[r] = row[kk - 1].logit();
    };
    const auto take = [&](index_t r, float s, index_t j) {
      w.kept[std::size_t(r * 2 * kk + w.kept_n[r]++)] = RankedKey::make(s == s ? s : neg_inf, j);  // NaN ranks lowest
      if (w.kept_n[r] == 2 * kk) prune(r);
    };
    for_each_key_tile(base, pos0, rows, tile_keys(base, pos0, rows, 0, p_.Nk), [&](index_t jlo, index_t n, TileKind kind) {
      if (kind == TileKind::skip) return;
      tile_logits(w, kv, jlo, n, b, h, rows);
      if (kind == TileKind::full && std::all_of(w.kept_seen.begin(), w.kept_seen.begin() + rows, [&](index_t x) { return x >= kk; })) {
        // Every row has its bar: simd_width rows per compare, then only the rows whose bar a
        // key beats (rows past the tile's queries have a bar of +inf). Visiting those rows by
        // their bits, not by a compare per row, keeps the unpredictable branches to one a take.
        for (index_t c = 0; c < n; ++c)
          for (index_t r0 = 0; r0 < rows; r0 += simd_width) {
            const float* st = w.st.data() + c * TQP + r0;
            unsigned beat = lane_bits(vfloat::load_unaligned(st) > vfloat::load_unaligned(w.kept_worst.data() + r0));
            for (; beat != 0; beat &= beat - 1) {
              const int lane = std::countr_zero(beat);
              take(r0 + lane, st[lane], jlo + c);
            }
          }
        for (index_t r = 0; r < rows; ++r) w.kept_seen[r] += n;
        return;
      }
      for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < n; ++c) {
          const float s = w.st[c * TQP + r];
          if (kind == TileKind::partial && !mask_allows(base, pos0 + r, jlo + c, s)) continue;
          // The first k allowed keys are all taken, and the worst of them is the bar; after
          // that only keys above it (not NaN, which ranks lowest; nor an equal logit: the
          // kept key's index is lower).
          if (w.kept_seen[r] >= kk) {
            ++w.kept_seen[r];
            if (s > w.kept_worst[r]) take(r, s, jlo + c);
            continue;
          }
          take(r, s, jlo + c);
          if (++w.kept_seen[r] == kk) {
            const RankedKey* row = w.kept.data() + r * 2 * kk;
            w.kept_worst[r] = std::min_element(row, row + kk)->logit();
          }
        }
    });
    for (index_t r = 0; r < rows; ++r) {
      if (w.kept_seen[r] <= kk) {  // keeps every allowed key
        w.thresholds[r].kept = w.kept_seen[r];
        continue;
      }
      prune(r);
      const RankedKey kth = w.kept[std::size_t(r * 2 * kk + kk - 1)];
      w.thresholds[r] = {kth.logit(), kth.key(), kk};
    }
  }

  // TopK's attention without a second pass over the keys: the selection kept each row's
  // keys with their logits (after modifiers, sanitised), so each row weighs its at most k
  // kept keys of the call's key range and sums their value rows directly -- O(k Dv) per row
  // instead of the tile loop's O(Nk D) over logits recomputed for a mask that keeps ~k/Nk.
  template <class BM>
  void attend_kept(Worker& w, const BM& bm, const HeadKV& kv, index_t b, index_t h, index_t i0, index_t rows) {
    constexpr int W = simd_width;
    const index_t pos0 = p_.pos(i0), Dv = p_.Dv;
    if (score_needs_row_count(score_)) count_rows(w, bm, kv, b, h, i0, rows);
    for_each_key_tile(bm, pos0, rows, tile_keys(bm, pos0, rows, p_.key_begin, p_.key_end),
                      [&](index_t, index_t, TileKind kind) {  // the tile loop's counts, for stats
                        ++(kind == TileKind::skip ? w.counters.skipped : w.counters.partial);
                      });
    const index_t kk = topk_keep();
    for (index_t r = 0; r < rows; ++r) {
      const RankedKey* kept = w.kept.data() + r * 2 * kk;
      w.sel.clear();
      w.kidx.clear();
      for (index_t e = 0; e < w.kept_n[r]; ++e) {
        const index_t j = kept[e].key();
        if (j >= p_.key_begin && j < p_.key_end) w.sel.push_back(kept[e].logit()), w.kidx.push_back(j);
      }
      const index_t n = index_t(w.kidx.size());
      // Weights in place, simd_width at a time (the tail padded with a logit of weight 0 for
      // max-tracking scores; other scores' tails are never read).
      w.sel.resize(std::size_t(round_up(n, index_t(W))), neg_inf);
      float m = 0.f;
      if constexpr (Score::tracks_max) {
        float top = neg_inf;
        for (index_t e = 0; e < n; ++e) top = std::max(top, w.sel[e]);
        w.m[r] = top;
        if (top == neg_inf) continue;  // nothing allowed: o = 0, l = 0
        m = top;
      }
      const float lambda = Score::tracks_max ? 1.f : w.lambda[r];  // as update_rows weighs
      float* pw = w.sel.data();
      for (index_t e = 0; e < n; e += W)
        score_.template weight<vfloat>(vfloat::load_unaligned(pw + e), vfloat(m), vfloat(lambda)).store_unaligned(pw + e);
      float l = 0.f;
      for (index_t e = 0; e < n; ++e) l += pw[e];
      w.l[r] = l;
      // O row += sum_e p_e v_e in column blocks held in registers across the kept keys (an
      // accumulator loaded and stored per key and vector chained each key's FMAs through memory).
      float* acc = w.acc.data() + r * Dvp_;
      auto block = [&]<int NB>(std::integral_constant<int, NB>, index_t d) ATTNKIT_INLINE_LAMBDA {
        vfloat a[NB];
        for (int u = 0; u < NB; ++u) a[u] = vfloat::load_unaligned(acc + d + u * W);
        for (index_t e = 0; e < n; ++e) {
          // The kept keys' rows are scattered over the cache: request the block of one a few keys ahead.
          if (e + 4 < n) prefetch_row(kv.v.row(w.kidx[e + 4]) + d, std::min<index_t>(NB * W, Dv - d));
          const vfloat pv(pw[e]);
          const TV* vrow = kv.v.row(w.kidx[e]) + d;
          for (int u = 0; u < NB; ++u)
            a[u] = xsimd::fma(pv, NB > 1 ? load_floats(vrow + u * W) : load_floats(vrow, Dv - d), a[u]);
        }
        for (int u = 0; u < NB; ++u) a[u].store_unaligned(acc + d + u * W);
      };
      constexpr int NB = 8;  // vectors per block: 8 accumulators, a value and p in 16 registers (AVX2)
      index_t d = 0;
      for (; d + NB * W <= Dv; d += NB * W) block(std::integral_constant<int, NB>{}, d);
      for (; d < Dv; d += W) block(std::integral_constant<int, 1>{}, d);
    }
    finish_rows(w, b, h, rows);
  }

  // Number of keys each row may attend over all keys (for length-scaled score functions).
  template <class BM>
  void count_rows(Worker& w, const BM& bm, const HeadKV& kv, index_t b, index_t h, index_t i0,
                  index_t rows) {
    std::vector<float> counts(std::size_t(rows), 0.f);
    if constexpr (is_topk_mask_v<MaskT>) {
      for (index_t r = 0; r < rows; ++r) counts[r] = float(w.thresholds[r].kept);
    } else {
      const index_t pos0 = p_.pos(i0);
      for_each_key_tile(bm, pos0, rows, tile_keys(bm, pos0, rows, 0, p_.Nk), [&](index_t jlo, index_t n, TileKind kind) {
        if (kind == TileKind::skip) return;
        if (kind == TileKind::full) {
          for (index_t r = 0; r < rows; ++r) counts[r] += float(n);
          return;
        }
        if constexpr (LogitMask<BM>) tile_logits(w, kv, jlo, n, b, h, rows);
        for (index_t c = 0; c < n; ++c)
          for (index_t r = 0; r < rows; ++r)
            counts[r] += mask_allows(bm, pos0 + r, jlo + c, w.st[c * TQP + r]) ? 1.f : 0.f;
      });
    }
    for (index_t r = 0; r < rows; ++r) w.lambda[r] = score_row_scale<float>(score_, counts[r]);
  }

  template <class BM>
  void attend(Worker& w, const BM& bm, const HeadKV& kv, index_t b,
              index_t h, index_t i0, index_t rows) {
    const index_t pos0 = p_.pos(i0);
    if (score_needs_row_count(score_)) count_rows(w, bm, kv, b, h, i0, rows);
    for_each_key_tile(bm, pos0, rows, tile_keys(bm, pos0, rows, p_.key_begin, p_.key_end),
                      [&](index_t jlo, index_t n, TileKind kind) {
                        if (kind == TileKind::skip) {
                          ++w.counters.skipped;
                          return;
                        }
                        ++(kind == TileKind::full ? w.counters.full : w.counters.partial);
                        tile_logits(w, kv, jlo, n, b, h, rows);
                        if (kind == TileKind::partial) apply_mask(w, bm, jlo, n, pos0, rows);
                        update_rows(w, n, kind == TileKind::partial, rows);
                        index_t ldv = 0;
                        const float* vr = value_rows(w, kv, jlo, n, ldv);
                        gemm<true>(rows, Dvp_, n, w.st.data(), 1, TQP, vr, ldv, w.acc.data(), Dvp_);
                      });
    finish_rows(w, b, h, rows);
  }

  // Partial tile: masked logits become -inf (softmax) or 0 with a zero validity weight.
  template <class BM>
  void apply_mask(Worker& w, const BM& bm, index_t jlo, index_t n, index_t pos0, index_t rows) const {
    if constexpr (SpanMask<BM> || BlockSpanMask<BM>)
      if (apply_span_mask(w, bm, jlo, n, pos0, rows)) return;
    for (index_t c = 0; c < n; ++c)
      for (index_t r = 0; r < TQP; ++r) {
        float& s = w.st[c * TQP + r];
        const bool ok = r < rows && mask_allows(bm, pos0 + r, jlo + c, s);
        if constexpr (Score::tracks_max) {
          if (!ok) s = neg_inf;
        } else {
          w.valid[c * TQP + r] = ok ? 1.f : 0.f;
          if (!ok) s = 0.f;
        }
      }
  }

  // apply_mask for masks whose rows are key intervals (SpanMask, and BlockSpanMask where the
  // tile lies inside one block): each row's RowSpan once, then simd_width rows per key with
  // three compares, instead of a mask_allows() call per (row, key). Keys compare as floats,
  // exact below 2^24; false (not applied) past that or across blocks.
  template <class BM>
  bool apply_span_mask(Worker& w, const BM& bm, index_t jlo, index_t n, index_t pos0, index_t rows) const {
    constexpr int W = simd_width;
    constexpr index_t exact = index_t(1) << 24;
    if (jlo + n > exact) return false;
    [[maybe_unused]] index_t kb = 0;
    if constexpr (!SpanMask<BM>) {
      kb = jlo / bm.span_block();
      if ((jlo + n - 1) / bm.span_block() != kb) return false;
    }
    alignas(64) float lo[TQP], hi[TQP], sinks[TQP];
    const auto key = [](index_t j) { return float(j < -1 ? -1 : (j > exact ? exact : j)); };
    for (index_t r = 0; r < TQP; ++r) {
      RowSpan sp{0, 0, 0};  // rows past the tile's queries: nothing (j < 0)
      if (r < rows) {
        if constexpr (SpanMask<BM>) sp = bm.row_span(pos0 + r);
        else sp = bm.block_span(pos0 + r, kb);
      }
      lo[r] = key(sp.lo), hi[r] = key(sp.hi), sinks[r] = key(sp.sinks);
    }
    for (index_t c = 0; c < n; ++c) {
      const vfloat j(float(jlo + c));  // allowed iff j < hi && (j >= lo || j < sinks)
      for (index_t r = 0; r < TQP; r += W) {
        const auto ok = (j < vfloat::load_aligned(hi + r)) &
                        ((j >= vfloat::load_aligned(lo + r)) | (j < vfloat::load_aligned(sinks + r)));
        float* s = w.st.data() + c * TQP + r;
        const vfloat x = vfloat::load_unaligned(s);
        if constexpr (Score::tracks_max) {
          xsimd::select(ok, x, vfloat(neg_inf)).store_unaligned(s);
        } else {
          xsimd::select(ok, vfloat(1.f), vfloat(0.f)).store_unaligned(w.valid.data() + c * TQP + r);
          xsimd::select(ok, x, vfloat(0.f)).store_unaligned(s);
        }
      }
    }
    return true;
  }

  // The score function's monoid update, vectorised across the tile's queries: S^T -> P^T.
  void update_rows(Worker& w, index_t n, bool partial, index_t rows) {
    constexpr int W = simd_width;
    float* st = w.st.data();
    if constexpr (Score::tracks_max) {
      bool rescale = false;
      for (index_t r = 0; r < TQP; r += W) {
        const vfloat m_old = vfloat::load_unaligned(w.m.data() + r);
        vfloat mt(neg_inf);
        for (index_t c = 0; c < n; ++c) mt = xsimd::max(mt, vfloat::load_unaligned(st + c * TQP + r));
        const vfloat m_new = xsimd::max(m_old, mt);
        // A row with nothing allowed so far keeps m = -inf; weigh against 0 to avoid inf - inf.
        const vfloat m_use = xsimd::select(m_new == vfloat(neg_inf), vfloat(0.f), m_new);
        const vfloat alpha = math<vfloat>::exp(m_old - m_use);
        vfloat sum(0.f);
        for (index_t c = 0; c < n; ++c) {
          const vfloat p = score_.template weight<vfloat>(vfloat::load_unaligned(st + c * TQP + r), m_use, vfloat(1.f));
          p.store_unaligned(st + c * TQP + r);
          sum += p;
        }
        (vfloat::load_unaligned(w.l.data() + r) * alpha + sum).store_unaligned(w.l.data() + r);
        m_new.store_unaligned(w.m.data() + r);
        alpha.store_unaligned(w.alpha.data() + r);
        rescale |= xsimd::any(alpha != vfloat(1.f));
      }
      if (rescale)
        for (index_t r = 0; r < rows; ++r) {
          const float a = w.alpha[r];
          if (a == 1.f) continue;
          float* acc = w.acc.data() + r * Dvp_;
          for (index_t d = 0; d < Dvp_; ++d) acc[d] *= a;
        }
    } else {
      // A local copy of the score: the member could alias the stores to st, and its fields
      // (softplus's power) were loaded again for every batch of weights.
      const Score score = score_;
      for (index_t r = 0; r < TQP; r += W) {
        const vfloat lambda = vfloat::load_unaligned(w.lambda.data() + r);
        vfloat sum(0.f);
        for (index_t c = 0; c < n; ++c) {
          vfloat p = score.template weight<vfloat>(vfloat::load_unaligned(st + c * TQP + r), vfloat(0.f), lambda);
          if (partial) p *= vfloat::load_unaligned(w.valid.data() + c * TQP + r);
          p.store_unaligned(st + c * TQP + r);
          sum += p;
        }
        (vfloat::load_unaligned(w.l.data() + r) + sum).store_unaligned(w.l.data() + r);
      }
    }
  }

  // Writes output columns [d0, d1) of the tile's rows; row statistics only with d0 == 0.
  void finish_rows(Worker& w, index_t b, index_t h, index_t rows, index_t d0 = 0, index_t d1 = -1) const {
    d1 = d1 < 0 ? p_.Dv : std::min(d1, p_.Dv);
    for (index_t r = 0; r < rows; ++r) {
      const index_t i = w.qi[r];
      const float* acc = w.acc.data() + r * Dvp_;
      const float m = w.m[r], l = w.l[r];
      if (has_partial_) {
        float* dst = partial_.o.row(b, h, i);
        for (index_t d = d0; d < d1; ++d) dst[d] = acc[d];
        if (d0 == 0) partial_.m.at(b, h, i) = m, partial_.l.at(b, h, i) = l;
        continue;
      }
      const float f = score_.template finalize_factor<float>(m, l);
      TO* out = o_.row(b, h, i);
      for (index_t d = d0; d < d1; ++d) out[d] = from_float<TO>(acc[d] * f);
      if constexpr (score_has_lse<Score>())
        if (opt_.lse && d0 == 0) opt_.lse.at(b, h, i) = row_lse(m, l);
    }
  }

  // ---------------------------------------------------------------- chunked linear attention
  // Causal: queries in chunks of tile_q positions; keys before the chunk live in the running
  // state (S = sum phi(k) v^T, z = sum phi(k)), keys inside it take the masked quadratic form.
  // Full: one state over all keys. O(N D Dv) work, O(D Dv) state.
  void run_linear_chunked(index_t item, Worker& w) {
    const index_t split = item % dv_splits_, head = item / dv_splits_;
    const index_t h = head % p_.Hq, b = head / p_.Hq, hkv = p_.kv_head(h);
    const index_t D = p_.D, kb = p_.key_begin, ke = p_.key_end;
    // This item's value columns [c0, c0 + nc), a multiple of the GEMM block width.
    const index_t blocks = Dvp_ / gemm_nr, per = (blocks + dv_splits_ - 1) / dv_splits_;
    const index_t c0 = std::min(blocks, split * per) * gemm_nr, nc = std::min(blocks, (split + 1) * per) * gemm_nr - c0;
    if (nc <= 0) return;
    const HeadKV kv = load_head(w, b, hkv);
    const float *kf = kv.kf, *vf = kv.vf;
    const index_t ldk = kv.kf_ld, ldv = kv.vf_ld;
    std::vector<float> state(static_cast<std::size_t>(D * nc), 0.f), z(static_cast<std::size_t>(D), 0.f);
    const bool causal = mask_is_causal();
    index_t absorbed = kb;  // keys [kb, absorbed) are in the state
    auto absorb_to = [&](index_t upto) {
      upto = std::clamp(upto, kb, ke);
      if (upto <= absorbed) return;
      // state[d][:] += sum_j phi(k_j)[d] v_j[c0:c0+nc]  -- A(d, j) = kf[j * ldk + d]
      gemm<true>(D, nc, upto - absorbed, kf + absorbed * ldk, 1, ldk, vf + absorbed * ldv + c0, ldv, state.data(), nc);
      for (index_t j = absorbed; j < upto; ++j)
        for (index_t d = 0; d < D; ++d) z[d] += kf[j * ldk + d];
      absorbed = upto;
    };
    if (!causal) absorb_to(ke);
    for (index_t i0 = 0; i0 < p_.Nq; i0 += tile_q) {
      const index_t rows = std::min(tile_q, p_.Nq - i0), pos0 = p_.pos(i0);
      pack_q(w, b, h, i0, rows);
      alloc_tile(w);
      if (causal) absorb_to(pos0);  // every key before the chunk's first position
      // inter-chunk: acc = phi(Q) state, den = phi(Q) z
      gemm<false>(rows, nc, D, w.qt.data(), 1, TQP, state.data(), nc, w.acc.data() + c0, Dvp_);
      for (index_t r = 0; r < rows; ++r) {
        float s = 0.f;
        for (index_t d = 0; d < D; ++d) s += w.qt[d * TQP + r] * z[d];
        w.l[r] = s;
      }
      // intra-chunk: the causal keys from the state's end to the chunk's last position
      if (causal) {
        const index_t jlo = std::max(absorbed, kb), jhi = std::min(pos0 + rows, ke);
        for (index_t j0 = jlo; j0 < jhi; j0 += tile_k) {
          const index_t n = std::min(tile_k, jhi - j0);
          logits(w, kf + j0 * ldk, ldk, j0, n, b, h, rows);
          apply_mask(w, Causal{}, j0, n, pos0, rows);
          update_rows(w, n, true, rows);
          gemm<true>(rows, nc, n, w.st.data(), 1, TQP, vf + j0 * ldv + c0, ldv, w.acc.data() + c0, Dvp_);
        }
      }
      finish_rows(w, b, h, rows, c0, c0 + nc);
    }
  }

  Variant attn_;
  TensorView<const TQ> q_;
  TensorView<const TK> k_;
  TensorView<const TV> v_;
  TensorView<TO> o_;
  Options opt_;
  BatchSlot slot_;
  ProblemInfo p_;
  Score score_;
  PartialState partial_{};
  bool has_partial_ = false;
  index_t group_ = 1, n_qtiles_ = 0, Dvp_ = 0, dv_splits_ = 1;
  bool chunked_ = false;
  std::vector<typename Bind::Head> heads_;
  std::optional<NeighborhoodTiling<nb_rank < 1 ? 1 : nb_rank>> nb_tiling_;
  std::atomic<index_t> full_{0}, partial_tiles_{0}, skipped_{0};
};

}  // namespace attnkit::cpu
