#pragma once
// Cluster routing as dense attention inside each cluster. With ClusterRouting alone, query i
// meets key j iff their nearest centroids agree, so every tile of the tile loop holds every
// cluster and none can be skipped: the tile loop computes all N x N logits and masks seven
// eighths of them (8 clusters). Here the rows are sorted by cluster instead (a counting sort
// per head), each (batch, query head, cluster) becomes one sequence of a BatchPlan -- its
// queries against its kv head's keys of that cluster, under no mask -- and the outputs go back
// to their rows. The work is the sum over clusters of queries x keys, about N^2 / C.
//
// Taken by cpu::run for ClusterRouting without score modifiers (their coordinates would be the
// packed ones) and without a key range; combinations (ClusterRouting & Causal), the work-range
// API, run_partial and batches keep the tile loop, whose selection is the same.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../mask/full.hpp"
#include "../mask/routing.hpp"
#include "../variant.hpp"
#include "batch.hpp"
#include "bind.hpp"
#include "convert.hpp"
#include "parallel.hpp"
#include "scratch.hpp"
#include "simd.hpp"

namespace attnkit::cpu {

// Variants cpu::run computes through packed clusters (see above).
template <class Variant>
constexpr bool gathers_clusters() {
  return std::is_same_v<typename Variant::mask_type, ClusterRouting> && !Variant::has_mods;
}

namespace detail {

// body(bh, r0, r1) for rows [r0, r1) of head bh, over `heads` heads of n rows each, in chunks
// of 256 rows over the threads: by heads alone, one head (H = 1) ran on one thread.
template <class Body>
void for_row_chunks(index_t heads, index_t n, int threads, Body&& body) {
  constexpr index_t chunk = 256;
  const index_t chunks = (n + chunk - 1) / chunk;
  parallel_for(heads * chunks, threads, [&](index_t lo, index_t hi, int) {
    for (index_t c = lo; c < hi; ++c) body(c / chunks, c % chunks * chunk, std::min(n, (c % chunks + 1) * chunk));
  });
}

// The rows of one [B, H, N, D] view sorted by cluster, head by head: packed row r of head
// (b, h) is rows[(b * H + h) * N + r], original row order kept within a cluster; cluster c of
// that head is packed rows [first[(b * H + h) * (C + 1) + c], first[... + c + 1]).
template <class T>
struct ClusterSort {
  scratch_vector<T> rows;            // packed, storage type kept
  scratch_vector<index_t> first;     // [B * H * (C + 1)]
  scratch_vector<std::int32_t> src;  // packed row -> original row index (within its head)

  ClusterSort(const ClusterRouting& m, const TensorView<const T>& x, index_t D, int threads) {
    const index_t B = x.shape[0], H = x.shape[1], N = x.shape[2], C = m.n_clusters;
    rows.resize(std::size_t(B * H * N * D));
    first.assign(std::size_t(B * H * (C + 1)), 0);
    src.resize(std::size_t(B * H * N));
    scratch_vector<std::uint8_t> id(std::size_t(B * H * N));
    for_row_chunks(B * H, N, threads, [&](index_t bh, index_t i0, index_t i1) {
      std::vector<float> row(static_cast<std::size_t>(D));
      for (index_t i = i0; i < i1; ++i) {
        to_float_row(x.row(bh / H, bh % H, i), row.data(), D);
        id[std::size_t(bh * N + i)] = nearest_centroid(m, row.data(), D);
      }
    });
    // Counting sort per head (O(N) integer steps), then the copies over the threads.
    std::vector<index_t> next(static_cast<std::size_t>(C));
    for (index_t bh = 0; bh < B * H; ++bh) {
      index_t* f = first.data() + bh * (C + 1);
      const std::uint8_t* hid = id.data() + bh * N;
      for (index_t i = 0; i < N; ++i) ++f[hid[i] + 1];
      for (index_t c = 0; c < C; ++c) f[c + 1] += f[c];
      std::copy(f, f + C, next.begin());
      for (index_t i = 0; i < N; ++i) src[std::size_t(bh * N + next[hid[i]]++)] = std::int32_t(i);
    }
    for_row_chunks(B * H, N, threads, [&](index_t bh, index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const T* row = x.row(bh / H, bh % H, src[std::size_t(bh * N + r)]);
        std::copy(row, row + D, rows.data() + (bh * N + r) * D);
      }
    });
  }
  index_t begin(index_t bh, index_t c, index_t C) const { return first[std::size_t(bh * (C + 1) + c)]; }
  index_t count(index_t bh, index_t c, index_t C) const { return begin(bh, c + 1, C) - begin(bh, c, C); }
};

template <class Variant, class TQ, class TK, class TV, class TO>
TileCounters run_cluster_gathered(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k,
                                  TensorView<const TV> v, TensorView<TO> o, const Options& opt) {
  static_assert(gathers_clusters<Variant>());
  const ProblemInfo p = make_problem<TQ, TK, TV, TO>(q, k, v, o, opt);
  attn.validate(p);
  if (p.empty()) return {};
  const ClusterRouting& m = attn.mask;
  const index_t B = p.B, Hq = p.Hq, Hkv = p.Hkv, Nq = p.Nq, Nk = p.Nk, D = p.D, Dv = p.Dv, C = m.n_clusters;
  const int threads = opt.threads;

  // Keys (with their values, in the keys' order) and queries sorted by cluster.
  const ClusterSort<TK> ks(m, k, D, threads);
  const ClusterSort<TQ> qs(m, q, D, threads);
  scratch_vector<TV> vrows(std::size_t(B * Hkv * Nk * Dv));
  for_row_chunks(B * Hkv, Nk, threads, [&](index_t bh, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const TV* row = v.row(bh / Hkv, bh % Hkv, ks.src[std::size_t(bh * Nk + r)]);
      std::copy(row, row + Dv, vrows.data() + (bh * Nk + r) * Dv);
    }
  });

  // One sequence per (batch, query head, cluster) with queries: packed views, one head each.
  // The score resolves against the whole problem (sigmoid's default bias is -log Nk of the
  // call, not of a cluster); the positions mean nothing here and the mask is Full.
  const auto dense = make_attention(attn.score.resolve(p), Full{});
  using P = BatchPlan<std::remove_const_t<decltype(dense)>, TQ, TK, TV, TO>;
  scratch_vector<TO> out(std::size_t(B * Hq * Nq * Dv));
  scratch_vector<float> lse(opt.lse ? std::size_t(B * Hq * Nq) : 0);
  std::vector<typename P::Seq> seqs;
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < Hq; ++h) {
      const index_t qbh = b * Hq + h, kbh = b * Hkv + p.kv_head(h);
      for (index_t c = 0; c < C; ++c) {
        const index_t nq = qs.count(qbh, c, C), nk = ks.count(kbh, c, C);
        if (nq == 0) continue;
        const index_t q0 = qbh * Nq + qs.begin(qbh, c, C), k0 = kbh * Nk + ks.begin(kbh, c, C);
        typename P::Seq s{{qs.rows.data() + q0 * D, {1, 1, nq, D}, {nq * D, nq * D, D}},
                          {ks.rows.data() + k0 * D, {1, 1, nk, D}, {nk * D, nk * D, D}},
                          {vrows.data() + k0 * Dv, {1, 1, nk, Dv}, {nk * Dv, nk * Dv, Dv}},
                          {out.data() + q0 * Dv, {1, 1, nq, Dv}, {nq * Dv, nq * Dv, Dv}},
                          opt.lse ? RowView{lse.data() + q0, {1, 1, nq}, {nq, nq, 1}} : RowView{}};
        s.slot.seq = b;
        seqs.push_back(s);
      }
    }
  Options run_opt = opt;
  run_opt.q_offset.reset();
  run_opt.lse = {};
  P plan(dense, seqs, run_opt);
  drive(plan, threads);

  // Back to the rows they came from.
  for_row_chunks(B * Hq, Nq, threads, [&](index_t bh, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t i = qs.src[std::size_t(bh * Nq + r)];
      const TO* row = out.data() + (bh * Nq + r) * Dv;
      std::copy(row, row + Dv, o.row(bh / Hq, bh % Hq, i));
      if (opt.lse) opt.lse.at(bh / Hq, bh % Hq, i) = lse[std::size_t(bh * Nq + r)];
    }
  });
  return plan.counters();
}

}  // namespace detail
}  // namespace attnkit::cpu
