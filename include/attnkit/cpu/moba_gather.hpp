#pragma once
// MoBA prefill as dense attention over gathered (query, key block) pairs. Each query routes to
// its own top-k - 1 earlier key blocks, so a tile of the tile loop holds queries that routed to
// nearly every block: at N = 4096, blocks of 64 and top 3 the tile loop visited most tiles and
// masked them (3.0 GFLOP/s of useful work, only 1.8x faster than dense at density 0.04). Here:
//   - routing per query row, by the tile loop's own binder (Binder<MoBA>: the same selection);
//   - per (batch, query head, key block) the queries that routed to the block, gathered,
//     against its keys under no mask: one sequence of a BatchPlan each;
//   - per (batch, query head, query block) its own block under Causal, straight from the views;
//   - both written as partial monoid states and combined per row, then finalised.
// The work is the routed pairs' plus the diagonal blocks': about N x top_k x block.
//
// Taken by cpu::run for MoBA without score modifiers (their coordinates would be the packed
// ones), without a key range, with queries at the keys' start (q_offset 0) and a score that
// needs no per-row key count (log-n softplus counts each row's keys); the rest keeps the tile
// loop.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../mask/full.hpp"
#include "../mask/routing.hpp"
#include "../mask/sliding_window.hpp"
#include "../score/partial_state.hpp"
#include "../variant.hpp"
#include "batch.hpp"
#include "bind.hpp"
#include "convert.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace attnkit::cpu {

// Variants cpu::run may compute through gathered MoBA pairs (see above).
template <class Variant>
constexpr bool gathers_moba() {
  return std::is_same_v<typename Variant::mask_type, MoBA> && !Variant::has_mods;
}

namespace detail {

// The call's shape for which the gathered form holds (the rest of cpu::run's checks are the
// tile loop's): queries from key 0, all keys, a row-count-free score, more than one block.
template <class Variant>
bool moba_gather_applies(const Variant& attn, const ProblemInfo& p, const Options& opt) {
  return opt.keys.begin == 0 && opt.keys.end < 0 && p.q_offset == 0 && !p.empty() &&
         !score_needs_row_count(attn.score.resolve(p)) && p.Nq > attn.mask.block;
}

// p: the call's problem (make_problem), for which moba_gather_applies.
template <class Variant, class TQ, class TK, class TV, class TO>
TileCounters run_moba_gathered(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k,
                               TensorView<const TV> v, TensorView<TO> o, const Options& opt, const ProblemInfo& p) {
  static_assert(gathers_moba<Variant>());
  attn.validate(p);
  const MoBA& m = attn.mask;
  const index_t B = p.B, Hq = p.Hq, Nq = p.Nq, Nk = p.Nk, D = p.D, Dv = p.Dv, blk = m.block;
  const index_t nkb = m.k_blocks(Nk), keep = m.top_k - 1;
  const int threads = opt.threads;
  const auto score = attn.score.resolve(p);  // against the whole call (sigmoid's -log Nk)
  using Score = std::remove_cvref_t<decltype(score)>;

  // Routed blocks of every row (own block excluded), -1 past the row's count: per head the
  // key block means, then rows in chunks over the threads.
  const auto inputs = [&](index_t bh) {
    const index_t b = bh / Hq, h = bh % Hq, hkv = p.kv_head(h);
    return HeadInputs{&p, b, h, [&q, b, h, D](index_t i, float* out) { to_float_row(q.row(b, h, i), out, D); },
                      [&k, b, hkv, D](index_t j, float* out) { to_float_row(k.row(b, hkv, j), out, D); }};
  };
  // The key block means of each (batch, kv head), blocks in groups over the threads (one head
  // on one thread read all N keys while the other thread waited).
  const index_t Hkv = p.Hkv, mean_group = 8, mean_groups = (nkb + mean_group - 1) / mean_group;
  std::vector<typename Binder<MoBA>::Head> heads(static_cast<std::size_t>(B * Hkv));
  for (auto& hd : heads) hd.kmeans.resize(std::size_t(nkb * D));
  parallel_for(B * Hkv * mean_groups, threads, [&](index_t lo, index_t hi, int) {
    for (index_t g = lo; g < hi; ++g) {
      const index_t bkv = g / mean_groups, kb0 = g % mean_groups * mean_group, kb1 = std::min(nkb, kb0 + mean_group);
      // (any query head of the kv head: only the key rows are read)
      const index_t h = bkv % Hkv * (Hq / Hkv);
      key_block_means(inputs(bkv / Hkv * Hq + h), m.block, kb0, kb1, heads[std::size_t(bkv)].kmeans.data() + kb0 * D);
    }
  });
  const auto head_of = [&](index_t bh) -> const typename Binder<MoBA>::Head& {
    return heads[std::size_t(bh / Hq * Hkv + p.kv_head(bh % Hq))];
  };
  constexpr index_t chunk = 256;
  const index_t chunks = (Nq + chunk - 1) / chunk;
  scratch_vector<std::int32_t> routes(std::size_t(B * Hq * Nq * keep), -1);
  parallel_for(B * Hq * chunks, threads, [&](index_t lo, index_t hi, int) {
    typename Binder<MoBA>::Store store;
    for (index_t c = lo; c < hi; ++c) {
      const index_t bh = c / chunks, i0 = c % chunks * chunk, n = std::min(Nq, i0 + chunk) - i0;
      const MoBARows rows = Binder<MoBA>::bind_tile(m, head_of(bh), store, inputs(bh), TileRows{i0, n});
      for (index_t i = i0; i < i0 + n; ++i) {
        std::int32_t* r = routes.data() + (bh * Nq + i) * keep;
        index_t got = 0;
        for (index_t kb = 0; kb < std::min(i / blk, nkb) && got < keep; ++kb)
          if (rows.routed(i, kb)) r[got++] = std::int32_t(kb);
      }
    }
  });

  // Pairs grouped by (batch, query head, key block), rows in order within a group.
  scratch_vector<index_t> first(std::size_t(B * Hq * nkb + 1), 0);
  for (index_t bh = 0; bh < B * Hq; ++bh)
    for (index_t e = 0; e < Nq * keep; ++e)
      if (const std::int32_t kb = routes[std::size_t(bh * Nq * keep + e)]; kb >= 0) ++first[std::size_t(bh * nkb + kb + 1)];
  for (std::size_t g = 1; g < first.size(); ++g) first[g] += first[g - 1];
  const index_t pairs = first.back();
  scratch_vector<std::int32_t> pair_row(static_cast<std::size_t>(pairs));
  scratch_vector<index_t> pair_of(routes.size(), -1);  // (row, slot) -> pair
  {
    scratch_vector<index_t> next(first.begin(), first.end() - 1);
    for (index_t bh = 0; bh < B * Hq; ++bh)
      for (index_t i = 0; i < Nq; ++i)
        for (index_t s = 0; s < keep; ++s) {
          const std::size_t e = std::size_t((bh * Nq + i) * keep + s);
          if (routes[e] < 0) break;
          const index_t at = next[std::size_t(bh * nkb + routes[e])]++;
          pair_row[std::size_t(at)] = std::int32_t(i);
          pair_of[e] = at;
        }
  }
  // Packed by (head, key block) group over the threads: with one head, packing by head ran on
  // one thread (pairs x D elements; N=4096: 4 MiB).
  scratch_vector<TQ> qpack(std::size_t(pairs * D));
  parallel_for(B * Hq * nkb, threads, [&](index_t lo, index_t hi, int) {
    for (index_t g = lo; g < hi; ++g)
      for (index_t at = first[std::size_t(g)]; at < first[std::size_t(g + 1)]; ++at) {
        const TQ* row = q.row(g / nkb / Hq, g / nkb % Hq, pair_row[std::size_t(at)]);
        std::copy(row, row + D, qpack.data() + at * D);
      }
  });

  // Partial states: the routed pairs' and the own blocks' (identity where a row's own block
  // has no keys, Nq > Nk).
  scratch_vector<float> pair_o(static_cast<std::size_t>(pairs * Dv)), pair_m(static_cast<std::size_t>(pairs)),
      pair_l(static_cast<std::size_t>(pairs));
  // The own-block launch writes the states of rows [0, covered) whole; the rows past it (no
  // keys of their own block, Nq > Nk) start as the identity. (Zeroing all of them was 2 MiB of
  // stores on the calling thread at N = 4096.)
  scratch_vector<float> acc_o(std::size_t(B * Hq * Nq * Dv)), acc_m(std::size_t(B * Hq * Nq)), acc_l(std::size_t(B * Hq * Nq));
  const index_t covered = std::min(Nq, (std::min(Nq, Nk) + blk - 1) / blk * blk);
  for (index_t bh = 0; bh < B * Hq; ++bh)
    for (index_t i = covered; i < Nq; ++i) {
      const std::size_t row = std::size_t(bh * Nq + i);
      std::fill_n(acc_o.data() + row * std::size_t(Dv), Dv, 0.f);
      acc_m[row] = initial_row_max<Score>(), acc_l[row] = 0.f;
    }
  const auto packed = [](auto* data, index_t n, index_t width) {
    using E = std::remove_pointer_t<decltype(data)>;
    return TensorView<E>{data, {1, 1, n, width}, {n * width, n * width, width}};
  };
  const auto packed_rows = [](float* data, index_t n) { return RowView{data, {1, 1, n}, {n, n, 1}}; };
  const auto head_rows = [](const auto& t, index_t b, index_t h, index_t r0, index_t n) {
    using E = std::remove_reference_t<decltype(*t.data)>;
    return TensorView<E>{t.row(b, h, r0), {1, 1, n, t.shape[3]}, t.stride};
  };

  const auto routed = make_attention(score, Full{});
  const auto own = make_attention(score, Causal{});
  using RoutedPlan = BatchPlan<std::remove_const_t<decltype(routed)>, TQ, TK, TV, float>;
  using OwnPlan = BatchPlan<std::remove_const_t<decltype(own)>, TQ, TK, TV, float>;
  std::vector<typename RoutedPlan::Seq> rseqs;
  std::vector<typename OwnPlan::Seq> oseqs;
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < Hq; ++h) {
      const index_t bh = b * Hq + h, hkv = p.kv_head(h);
      for (index_t kb = 0; kb < nkb; ++kb) {
        const index_t at = first[std::size_t(bh * nkb + kb)], n = first[std::size_t(bh * nkb + kb + 1)] - at;
        const index_t k0 = kb * blk, nk = std::min(Nk, k0 + blk) - k0;
        if (n == 0) continue;
        typename RoutedPlan::Seq s{packed(static_cast<const TQ*>(qpack.data() + at * D), n, D), head_rows(k, b, hkv, k0, nk),
                                   head_rows(v, b, hkv, k0, nk), packed(pair_o.data() + at * Dv, n, Dv)};
        s.partial = {s.o, packed_rows(pair_m.data() + at, n), packed_rows(pair_l.data() + at, n)};
        s.slot.seq = b;
        rseqs.push_back(s);
      }
      for (index_t i0 = 0; i0 < std::min(Nq, Nk); i0 += blk) {
        const index_t n = std::min(Nq, i0 + blk) - i0, nk = std::min(Nk, i0 + blk) - i0;
        const index_t row0 = bh * Nq + i0;
        typename OwnPlan::Seq s{head_rows(q, b, h, i0, n), head_rows(k, b, hkv, i0, nk), head_rows(v, b, hkv, i0, nk),
                                packed(acc_o.data() + row0 * Dv, n, Dv)};
        s.partial = {s.o, packed_rows(acc_m.data() + row0, n), packed_rows(acc_l.data() + row0, n)};
        s.slot.seq = b;
        oseqs.push_back(s);
      }
    }
  Options run_opt = opt;
  run_opt.q_offset = 0;  // every piece's queries start at its keys' start
  run_opt.lse = {};
  TileCounters counters;
  if (!rseqs.empty()) {
    RoutedPlan plan(routed, rseqs, run_opt);
    drive(plan, threads);
    counters = plan.counters();
  }
  {
    OwnPlan plan(own, oseqs, run_opt);
    drive(plan, threads);
    const TileCounters c = plan.counters();
    counters = {counters.full + c.full, counters.partial + c.partial, counters.skipped + c.skipped};
  }

  // Each row's own state (+) its routed pairs' states, finalised into o (and lse).
  const auto finish = [&](index_t lo, index_t hi, int) {
    for (index_t row = lo; row < hi; ++row) {
      const index_t bh = row / Nq, i = row % Nq;
      float &mr = acc_m[std::size_t(row)], &lr = acc_l[std::size_t(row)];
      float* acc = acc_o.data() + row * Dv;
      for (index_t s = 0; s < keep; ++s) {
        const index_t at = pair_of[std::size_t(row * keep + s)];
        if (at < 0) break;
        combine_rows<Score>(mr, lr, acc, pair_m[std::size_t(at)], pair_l[std::size_t(at)], pair_o.data() + at * Dv, Dv);
      }
      const float f = score.template finalize_factor<float>(mr, lr);
      TO* out = o.row(bh / Hq, bh % Hq, i);
      for (index_t d = 0; d < Dv; ++d) out[d] = from_float<TO>(acc[d] * f);
      if constexpr (score_has_lse<Score>())
        if (opt.lse) opt.lse.at(bh / Hq, bh % Hq, i) = row_lse(mr, lr);
    }
  };
  parallel_for(B * Hq * Nq, threads, finish, chunk);
  return counters;
}

}  // namespace detail
}  // namespace attnkit::cpu
