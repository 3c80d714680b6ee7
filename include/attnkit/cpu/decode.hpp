#pragma once
// The decode path: few queries per sequence against a long KV cache, where the tile loop's
// 64-query tiles would be almost all padding. A DecodePlan's work item is
// (sequence, kv head, key split): its rows are every query head of the kv head's GQA group
// times the sequence's queries, so each K/V row is read from memory once for all of them.
// Items stream their key range in chunks of keys (logits vectorised along D, the score
// function's monoid update across the chunk's keys, O += P V along Dv), requesting the rows
// of keys a fixed distance ahead as they go so that memory overlaps the arithmetic. When a
// sequence has fewer kv heads than the machine has threads, its keys are split; the last
// split of a (sequence, kv head) to finish merges the partial states with the score's
// combine_rows, in split order, and finalises -- one pass, no second phase to drive.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "../score/partial_state.hpp"
#include "../variant.hpp"
#include "decode_kernels.hpp"
#include "gemm.hpp"
#include "kv_rows.hpp"
#include "parallel.hpp"
#include "plan.hpp"
#include "sequence.hpp"

namespace attnkit::cpu {

// The decode path serves calls whose rows per kv head (queries x GQA group) are at most this.
inline constexpr index_t decode_max_rows = 16;

// Masks the decode kernel applies itself: static element masks. Content-dependent masks
// (top-k, routing) and masks that test the logit take the tile loop.
template <class Variant>
constexpr bool decode_capable() {
  using M = typename Variant::mask_type;
  return !is_content_dependent<M>() && ElementMask<M> && !LogitMask<M>;
}

template <class Variant, class TQ, class TK, class TV, class TO>
class DecodePlan {
  using Score = typename Variant::score_type;
  using MaskT = typename Variant::mask_type;
  static_assert(decode_capable<Variant>(),
                "attnkit: the decode path takes static element masks; this mask runs on the tile loop");
  static constexpr bool linear = is_linear_score<Score>();
  static constexpr int W = simd_width;
  static constexpr index_t min_split = 512;  // keys: below this a split costs more than it balances
  // Keys per chunk: the per-chunk work (mask class, row pointers, the scalar part of each
  // row's monoid update, the accumulator loads and stores of P V) is paid once per 32 keys.
  static constexpr index_t chunk_keys = 4 * W;
  // Keys between a row in use and the row requested with it: two chunks, so that the lines
  // arrive while the chunk in between computes (measured: 64 keys beat 16 and 32; without
  // any, the hardware prefetchers alone leave about half the bandwidth unused).
  static constexpr index_t prefetch_keys = 2 * chunk_keys;

  // How an item requests its rows before it uses them.
  enum class Ahead {
    // One kv head (head-major caches): the rows of the key prefetch_keys ahead, along with
    // each key, spread over the kernels' steps.
    per_key,
    // G kv heads whose rows interleave within a token (NHD page pools, BSHD views), GQA-sized:
    // the next chunk's rows in memory order (token by token, every head of a token), an equal
    // share handed to each head's pass. The passes of a chunk visit each token G times, so
    // a distance in keys that is not a whole chunk would fetch rows after their first use;
    // one whole chunk ahead makes every request an address-order stream. Measured against
    // per-key requests over 8-key chunks (GQA 32/8, 16-token pages, one AVX2 EPYC thread,
    // interleaved in one process): bf16 4.9-5.5 -> 7.0-7.2 GB/s, f32 5.5-5.8 -> 6.3-7.3.
    next_chunk,
    // Many heads (MHA on a token-major cache) or long rows: little arithmetic per byte, so
    // the chunk's lines are requested all at once just before it computes (8 keys ahead ran
    // at two thirds of that, 32 heads, f32 and bf16).
    chunk_start,
  };
  // Bytes of one chunk under next_chunk: the chunk in use and the one arriving share L2
  // (measured on GQA 32/8: chunks of 16 or 32 keys equal for bf16 (64-128 KiB), 16 ahead of
  // 32 for f32 (128 KiB against 256)).
  static constexpr index_t next_chunk_bytes = 128 << 10;
  // Items that would read more than this per simd_width keys (G heads) or per prefetch_keys
  // keys (one head) take chunk_start. 128 KiB: with AVX-512's 64-key chunks a f32 head's 128
  // keys ahead are 128 KiB, which at 64 KiB fell to chunk_start (GQA 32/8 f32 on a 2 MiB-L2
  // Xeon: 104 ns a key under chunk_start, 89 under per_key; 256 KiB measured equal to 128).
  static constexpr index_t ahead_bytes = 128 << 10;

 public:
  using Seq = SeqView<TQ, TK, TV, TO>;

  struct Worker {
    line_vector<float> q, s, p, acc, m, l, lambda;
    std::vector<HeadRows<TK>> krows;  // where the K / V rows of each kv head of the item live
    std::vector<HeadRows<TV>> vrows;
    std::vector<const TK*> kp;  // K / V rows of the current chunk, per kv head of the item
    std::vector<const TV*> vp;
    std::vector<const TK*> tk;  // next_chunk: the first head's rows of the next chunk's tokens
    std::vector<const TV*> tv;
    TileCounters counters;  // in key chunks of simd_width keys
  };

  DecodePlan(const Variant& attn, std::vector<Seq> seqs, const Options& opt) : attn_(attn) {
    if (opt.lse)
      require(score_has_lse<Score>(), "lse",
              [&] { return std::string("score function '") + Score::name + "' has no log-sum-exp"; });
    index_t total = 0;  // key rows to read, summed over (sequence, kv head)
    for (Seq& in : seqs) {
      Options o = opt;
      o.lse = in.lse;
      State st{in, make_problem(in.q, in.k, in.v, in.o, o)};
      attn.validate(st.p);
      st.score = attn.score.resolve(st.p);
      st.rows = st.p.Nq * st.p.group();
      if (st.p.empty() || st.p.Hkv == 0) continue;
      const KeyBounds kb = mask_key_bounds(attn.mask, st.p.pos(0), st.p.pos(st.p.Nq), st.p.Nk);
      st.lo = std::max(kb.lo, st.p.key_begin);
      st.hi = std::max(st.lo, std::min(kb.hi, st.p.key_end));
      total += (st.hi - st.lo) * st.p.Hkv;
      seqs_.push_back(st);
    }
    // Split so that the items are about 4 per thread (dynamic balance), each split at least
    // min_split keys, proportional to each sequence's length.
    const index_t threads = opt.threads > 0 ? opt.threads : default_threads();
    const index_t per_item = std::max(min_split, (total + 4 * threads - 1) / (4 * threads));
    index_t items = 0, scratch = 0, counters = 0;
    for (State& st : seqs_) {
      // Caches whose heads interleave within a token (BSHD views, NHD page pools) are read
      // token-major: one item takes every kv head of its key range, so it streams whole
      // tokens instead of striding across them head by head.
      const bool interleaved = st.in.k.stride[1] < st.in.k.stride[2] && st.in.v.stride[1] < st.in.v.stride[2];
      st.heads = interleaved ? st.p.Hkv : 1;
      const index_t n = st.hi - st.lo, work = n * st.heads;  // key rows per split when unsplit
      st.splits = threads > 1 ? std::max<index_t>(1, (work + per_item / 2) / per_item) : 1;
      st.split_len = round_up((n + st.splits - 1) / st.splits, 64);
      st.splits = std::max<index_t>(1, (n + st.split_len - 1) / std::max<index_t>(st.split_len, 1));
      st.first_item = items;
      items += st.p.Hkv / st.heads * st.splits;
      st.Dp = round_up(st.p.D, W);
      st.Dvp = round_up(st.p.Dv, decode_pv_pad);
      if (st.splits > 1) {
        st.scratch = scratch, st.counter = counters;
        scratch += st.p.Hkv * st.splits * st.rows * (st.Dvp + 2);
        counters += st.p.Hkv;
      }
    }
    items_ = items;
    scratch_.assign(std::size_t(scratch), 0.f);
    done_ = std::make_unique<std::atomic<index_t>[]>(std::size_t(std::max<index_t>(counters, 1)));
    for (index_t c = 0; c < counters; ++c) done_[c].store(0);
  }

  index_t work_items() const { return items_; }
  void execute(index_t begin, index_t end, Worker& w) {
    for (index_t it = begin; it < end; ++it) run_item(it, w);
  }

  TileCounters counters() const { return {full_.load(), partial_.load(), skipped_.load()}; }
  void add_counters(const Worker& w) {
    full_ += w.counters.full;
    partial_ += w.counters.partial;
    skipped_ += w.counters.skipped;
  }

 private:
  struct State {
    Seq in;
    ProblemInfo p;
    Score score{};
    index_t rows = 0, lo = 0, hi = 0;  // key range every split together covers
    index_t splits = 1, split_len = 0, first_item = 0, Dp = 0, Dvp = 0;
    index_t heads = 1;                 // kv heads per item
    index_t scratch = 0, counter = 0;  // partial-state slots and merge counter (splits > 1)
  };

  // Row r of an item is query head hkv * group + r / Nq, query r % Nq.
  static index_t row_head(const State& st, index_t hkv, index_t r) { return hkv * st.p.group() + r / st.p.Nq; }
  static index_t row_query(const State& st, index_t r) { return r % st.p.Nq; }

  template <class T>
  T feature(const T& x) const {
    if constexpr (requires { attn_.score.feature(x); }) {
      return attn_.score.feature(x);
    } else {  // a feature map written for scalars only
      alignas(64) float t[W];
      x.store_aligned(t);
      for (float& e : t) e = attn_.score.feature(e);
      return T::load_aligned(t);
    }
  }

  void run_item(index_t item, Worker& w) {
    const auto it = std::upper_bound(seqs_.begin(), seqs_.end(), item,
                                     [](index_t x, const State& s) { return x < s.first_item; }) - 1;
    const State& st = *it;
    const ProblemInfo& p = st.p;
    const index_t local = item - st.first_item, h0 = local / st.splits * st.heads, split = local % st.splits;
    const index_t rows = st.rows, G = st.heads, Dp = st.Dp, Dvp = st.Dvp;
    const index_t j0 = st.lo + split * st.split_len, j1 = split + 1 == st.splits ? st.hi : std::min(st.hi, j0 + st.split_len);

    // State of kv heads h0 .. h0 + G: row t = g * rows + r is row r of kv head h0 + g.
    // Query rows scaled (or feature-mapped), zero padded to Dp.
    w.q.assign(std::size_t(G * rows * Dp), 0.f);
    for (index_t g = 0; g < G; ++g)
      for (index_t r = 0; r < rows; ++r) {
        float* dst = w.q.data() + (g * rows + r) * Dp;
        to_float_row(st.in.q.row(0, row_head(st, h0 + g, r), row_query(st, r)), dst, p.D);
        for (index_t d = 0; d < p.D; ++d) {
          if constexpr (linear) dst[d] = feature(dst[d]);
          else dst[d] *= p.scale;
        }
      }
    w.acc.assign(std::size_t(G * rows * Dvp), 0.f);
    w.m.assign(std::size_t(G * rows), initial_row_max<Score>());
    w.l.assign(std::size_t(G * rows), 0.f);
    w.lambda.assign(std::size_t(G * rows), 1.f);
    w.s.resize(std::size_t(rows * chunk_keys));
    w.p.resize(std::size_t(rows * chunk_keys));
    if (score_needs_row_count(st.score))
      for (index_t r = 0; r < rows; ++r) {
        const float lambda = score_row_scale<float>(st.score, allowed_keys(p, p.pos(row_query(st, r))));
        for (index_t g = 0; g < G; ++g) w.lambda[g * rows + r] = lambda;
      }

    w.krows.resize(std::size_t(G));
    w.vrows.resize(std::size_t(G));
    for (index_t g = 0; g < G; ++g) {
      w.krows[g] = head_rows(st.in.k, 0, h0 + g, st.in.slot, false);
      w.vrows[g] = head_rows(st.in.v, 0, h0 + g, st.in.slot, true);
    }
    // Per head g: the rows of the chunk in use at g * chunk_keys, the rows its kernels request
    // as they go at (G + g) * chunk_keys (past the item's end: the chunk's own, cached).
    w.kp.resize(std::size_t(2 * G * chunk_keys));
    w.vp.resize(std::size_t(2 * G * chunk_keys));
    const TK** kahead = w.kp.data() + G * chunk_keys;
    const TV** vahead = w.vp.data() + G * chunk_keys;
    const index_t row_bytes = p.D * index_t(sizeof(TK)) + p.Dv * index_t(sizeof(TV));
    const Ahead mode = G == 1 ? (prefetch_keys * row_bytes <= ahead_bytes ? Ahead::per_key : Ahead::chunk_start)
                       : G * W * row_bytes <= ahead_bytes ? Ahead::next_chunk
                                                          : Ahead::chunk_start;
    const index_t chunk = mode == Ahead::per_key      ? chunk_keys
                          : mode == Ahead::chunk_start ? std::max<index_t>(W, chunk_keys / G / W * W)
                                                       : std::clamp<index_t>(next_chunk_bytes / (G * row_bytes) / W * W, W, chunk_keys);
    const bool spread = mode != Ahead::chunk_start;  // the kernels request rows as they go
    const index_t distance = mode == Ahead::per_key ? prefetch_keys : chunk;
    // Requests every line of keys [a, b), token by token (the memory order when heads
    // interleave); into L2 when they would not fit L1.
    auto request = [&](index_t a, index_t b) {
      auto rows = [&]<bool Near>(std::bool_constant<Near>) {
        for (index_t c = a; c < b; ++c)
          for (index_t g = 0; g < G; ++g) {
            prefetch_row<Near>(w.krows[g].row(c), p.D);
            prefetch_row<Near>(w.vrows[g].row(c), p.Dv);
          }
      };
      if (G * (b - a) * row_bytes <= 16384) rows(std::true_type{});
      else rows(std::false_type{});
    };
    if (spread) request(j0, std::min(j1, j0 + distance));  // the item's first keys, up front
    const index_t pos_lo = p.pos(0), pos_hi = p.pos(p.Nq);
    for (index_t j = j0, n = 0; j < j1; j += n) {
      n = std::min(chunk, j1 - j);
      TileKind kind = mask_classify(attn_.mask, TileRect{pos_lo, pos_hi, j, j + n});
      // A chunk the mask cuts is taken simd_width keys at a time, so that keys of a skipped
      // group of simd_width are never read.
      if (kind == TileKind::partial && n > W) kind = mask_classify(attn_.mask, TileRect{pos_lo, pos_hi, j, j + (n = W)});
      const index_t groups = (n + W - 1) / W;
      if (kind == TileKind::skip) {
        w.counters.skipped += groups;
        continue;
      }
      (kind == TileKind::full ? w.counters.full : w.counters.partial) += groups;
      if (!spread) request(j, j + n);
      for (index_t g = 0; g < G; ++g) {
        w.krows[g].rows(j, n, w.kp.data() + g * chunk_keys);
        w.vrows[g].rows(j, n, w.vp.data() + g * chunk_keys);
      }
      if (mode == Ahead::per_key) {
        const index_t ahead = std::clamp<index_t>(j1 - j - distance, 0, n);  // keys with a row to request
        if (ahead > 0) {
          w.krows[0].rows(j + distance, ahead, kahead);
          w.vrows[0].rows(j + distance, ahead, vahead);
        }
        std::copy(w.kp.data() + ahead, w.kp.data() + n, kahead + ahead);  // past the end: rows in use (cached)
        std::copy(w.vp.data() + ahead, w.vp.data() + n, vahead + ahead);
      } else if (mode == Ahead::next_chunk) {
        request_next_chunk(w, j + n, std::min(j1, j + n + chunk), n);
      }
      for (index_t g = 0; g < G; ++g) {
        const TK* const* kp = w.kp.data() + g * chunk_keys;
        const TV* const* vp = w.vp.data() + g * chunk_keys;
        const index_t t0 = g * rows;
        for_row_blocks<decode_row_block>(rows, [&](auto rb, index_t r0) {
          decode_qk<decltype(rb)::value>(
              w.q.data() + (t0 + r0) * Dp, Dp, p.D, kp, n, w.s.data() + r0 * chunk_keys, chunk_keys,
              [&](const vfloat& x) {
                if constexpr (linear) return feature(x);
                else return x;
              },
              spread && r0 == 0 ? kahead + g * chunk_keys : nullptr);
        });
        for (index_t r = 0; r < rows; ++r) update_row(st, w, h0 + g, t0, r, j, n, kind);
        for_row_blocks<decode_pv_rows>(rows, [&](auto rb, index_t r0) {
          decode_pv<decltype(rb)::value>(w.p.data() + r0 * chunk_keys, chunk_keys, vp, n, p.Dv,
                                         w.acc.data() + (t0 + r0) * Dvp, Dvp,
                                         spread && r0 == 0 ? vahead + g * chunk_keys : nullptr);
        });
      }
    }
    for (index_t g = 0; g < G; ++g) finish(st, w, h0 + g, g * rows, split);
  }

  // Hands head pass g of the current chunk (n keys) the rows g * n .. (g + 1) * n of keys
  // [a, b) in memory order -- token by token, the item's heads in order within a token -- as
  // the rows its kernels request (w.kp / w.vp's upper halves). Entries past the next chunk's
  // rows repeat rows in use.
  void request_next_chunk(Worker& w, index_t a, index_t b, index_t n) const {
    const index_t G = index_t(w.krows.size()), E = std::max<index_t>(b - a, 0) * G;
    if (E > 0) {  // each token's first head; the others sit a fixed distance from it
      w.tk.resize(std::size_t(b - a)), w.tv.resize(std::size_t(b - a));
      w.krows[0].rows(a, b - a, w.tk.data());
      w.vrows[0].rows(a, b - a, w.tv.data());
    }
    const TK** kahead = w.kp.data() + G * chunk_keys;
    const TV** vahead = w.vp.data() + G * chunk_keys;
    index_t token = 0, head = 0;
    for (index_t g = 0; g < G; ++g)
      for (index_t c = 0; c < n; ++c) {
        const index_t at = g * chunk_keys + c;
        if (g * n + c >= E) {
          kahead[at] = w.kp[std::size_t(at)], vahead[at] = w.vp[std::size_t(at)];
          continue;
        }
        kahead[at] = w.tk[std::size_t(token)] + (w.krows[head].base - w.krows[0].base);
        vahead[at] = w.tv[std::size_t(token)] + (w.vrows[head].base - w.vrows[0].base);
        if (++head == G) head = 0, ++token;
      }
  }

  // Keys row `pos` may attend over all keys (length-scaled score functions), by mask tiles.
  float allowed_keys(const ProblemInfo& p, index_t pos) const {
    const KeyBounds kb = mask_key_bounds(attn_.mask, pos, pos + 1, p.Nk);
    index_t count = 0;
    for (index_t j = kb.lo; j < kb.hi; j += tile_k) {
      const index_t hi = std::min(kb.hi, j + tile_k);
      const TileKind kind = mask_classify(attn_.mask, TileRect{pos, pos + 1, j, hi});
      if (kind == TileKind::full) count += hi - j;
      else if (kind == TileKind::partial)
        for (index_t c = j; c < hi; ++c) count += mask_allows(attn_.mask, pos, c, 0.f) ? 1 : 0;
    }
    return float(count);
  }

  static float row_max(const vfloat& x) {
    alignas(64) float t[W];
    x.store_aligned(t);
    float m = t[0];
    for (int c = 1; c < W; ++c) m = std::max(m, t[c]);
    return m;
  }

  // Row r's logits of keys [j, j + n) -> modifiers, mask, the monoid update -> weights in w.p
  // (zero from n to the next multiple of simd_width). The row's state is w.m / w.l /
  // w.lambda / w.acc at t = t0 + r; logits and weights at r. A partial chunk has n <= W.
  void update_row(const State& st, Worker& w, index_t hkv, index_t t0, index_t r, index_t j, index_t n,
                  TileKind kind) const {
    const ProblemInfo& p = st.p;
    const index_t h = row_head(st, hkv, r), i = row_query(st, r), pos = p.pos(i), t = t0 + r;
    const index_t groups = (n + W - 1) / W;
    float* s = w.s.data() + r * chunk_keys;
    float* pw = w.p.data() + r * chunk_keys;
    if constexpr (Variant::has_mods)
      for (index_t c = 0; c < n; ++c) s[c] = attn_.template modify<float>(s[c], {st.in.slot.seq, h, i, pos, j + c});
    const bool all = kind == TileKind::full && n == groups * W;
    // Group b's logits, sanitised, and which of its keys the row may attend (every key when
    // `all`; otherwise only the last group is short and only a partial chunk consults the mask).
    auto logits = [&](index_t b, auto& ok) {
      vfloat x = vfloat::load_unaligned(s + b * W);
      if constexpr (!linear) x = xsimd::select(x == x, xsimd::min(x, vfloat(max_logit)), vfloat(neg_inf));
      if (!all) {
        alignas(64) float okf[W];
        x.store_aligned(okf);
        for (index_t c = 0; c < W; ++c) {
          const index_t key = b * W + c;
          okf[c] = key < n && (kind == TileKind::full || mask_allows(attn_.mask, pos, j + key, okf[c])) ? 1.f : 0.f;
        }
        ok = vfloat::load_aligned(okf) != vfloat(0.f);
      }
      return x;
    };
    using Mask = typename vfloat::batch_bool_type;
    vfloat sum(0.f);
    if constexpr (Score::tracks_max) {
      // Pass 1: masked logits back to s and their max; pass 2: weights against the new max.
      vfloat top(neg_inf);
      for (index_t b = 0; b < groups; ++b) {
        Mask ok(true);
        vfloat x = logits(b, ok);
        if (!all) x = xsimd::select(ok, x, vfloat(neg_inf));
        x.store_unaligned(s + b * W);
        top = xsimd::max(top, x);
      }
      const float m_old = w.m[t], m_new = std::max(m_old, row_max(top));
      if (m_new == neg_inf) {  // nothing allowed yet
        for (index_t b = 0; b < groups; ++b) vfloat(0.f).store_unaligned(pw + b * W);
        return;
      }
      for (index_t b = 0; b < groups; ++b) {
        const vfloat pv = st.score.template weight<vfloat>(vfloat::load_unaligned(s + b * W), vfloat(m_new), vfloat(1.f));
        pv.store_unaligned(pw + b * W);
        sum += pv;
      }
      const float alpha = m_old == neg_inf ? 0.f : std::exp(m_old - m_new);
      w.l[t] = w.l[t] * alpha + xsimd::hadd(sum);
      w.m[t] = m_new;
      if (alpha != 1.f) {
        float* acc = w.acc.data() + t * st.Dvp;
        for (index_t d = 0; d < st.Dvp; d += W) (vfloat::load_unaligned(acc + d) * vfloat(alpha)).store_unaligned(acc + d);
      }
    } else {
      for (index_t b = 0; b < groups; ++b) {
        Mask ok(true);
        vfloat x = logits(b, ok);
        if (!all) x = xsimd::select(ok, x, vfloat(0.f));
        vfloat pv = st.score.template weight<vfloat>(x, vfloat(0.f), vfloat(w.lambda[t]));
        if (!all) pv = xsimd::select(ok, pv, vfloat(0.f));
        pv.store_unaligned(pw + b * W);
        sum += pv;
      }
      w.l[t] += xsimd::hadd(sum);
    }
  }

  // One kv head's split state (rows t0 .. t0 + rows of the worker): written out (one split),
  // or parked; the last split to finish merges all of them, in split order.
  void finish(const State& st, Worker& w, index_t hkv, index_t t0, index_t split) {
    const index_t rows = st.rows, Dvp = st.Dvp, slot_len = rows * (Dvp + 2);
    float* acc = w.acc.data() + t0 * Dvp;
    float *m = w.m.data() + t0, *l = w.l.data() + t0;
    if (st.splits == 1) return write(st, hkv, acc, m, l);
    float* base = scratch_.data() + st.scratch + hkv * st.splits * slot_len;
    auto park = [&](index_t t) { return base + t * slot_len; };
    std::copy(acc, acc + rows * Dvp, park(split));
    std::copy(m, m + rows, park(split) + rows * Dvp);
    std::copy(l, l + rows, park(split) + rows * (Dvp + 1));
    std::atomic<index_t>& done = done_[st.counter + hkv];
    if (done.fetch_add(1, std::memory_order_acq_rel) != st.splits - 1) return;
    done.store(0, std::memory_order_relaxed);  // the plan may execute again
    std::copy(park(0), park(0) + rows * Dvp, acc);
    std::copy(park(0) + rows * Dvp, park(0) + rows * (Dvp + 1), m);
    std::copy(park(0) + rows * (Dvp + 1), park(0) + rows * (Dvp + 2), l);
    for (index_t t = 1; t < st.splits; ++t)
      for (index_t r = 0; r < rows; ++r)
        combine_rows<Score>(m[r], l[r], acc + r * Dvp, park(t)[rows * Dvp + r], park(t)[rows * (Dvp + 1) + r],
                            static_cast<const float*>(park(t) + r * Dvp), Dvp);
    write(st, hkv, acc, m, l);
  }

  void write(const State& st, index_t hkv, const float* acc, const float* m, const float* l) const {
    const ProblemInfo& p = st.p;
    for (index_t r = 0; r < st.rows; ++r) {
      const index_t h = row_head(st, hkv, r), i = row_query(st, r);
      const float* a = acc + r * st.Dvp;
      if (st.in.partial.o.data) {
        std::copy(a, a + p.Dv, st.in.partial.o.row(0, h, i));
        st.in.partial.m.at(0, h, i) = m[r], st.in.partial.l.at(0, h, i) = l[r];
        continue;
      }
      const float f = st.score.template finalize_factor<float>(m[r], l[r]);
      TO* out = st.in.o.row(0, h, i);
      for (index_t d = 0; d < p.Dv; ++d) out[d] = from_float<TO>(a[d] * f);
      if constexpr (score_has_lse<Score>())
        if (st.in.lse) st.in.lse.at(0, h, i) = row_lse(m[r], l[r]);
    }
  }

  Variant attn_;
  std::vector<State> seqs_;
  index_t items_ = 0;
  std::vector<float> scratch_;
  std::unique_ptr<std::atomic<index_t>[]> done_;
  std::atomic<index_t> full_{0}, partial_{0}, skipped_{0};
};

}  // namespace attnkit::cpu
