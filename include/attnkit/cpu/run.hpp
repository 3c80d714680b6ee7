#pragma once
// Public entry points of the CPU backend.
//   cpu::run(attn, q, k, v, o, opts)            attention, default thread driver
//   cpu::run_partial(attn, q, k, v, state, opts) unnormalised monoid state (split-KV)
//   cpu::make_plan(...) + Plan::prepare/execute  the work-range API for an engine's own threads
//   cpu::run_ragged(attn, q, k, v, o, q_rows, k_rows, opts)  packed sequences of different lengths
//   cpu::run_paged(attn, q, q_rows, kv, o, opts)             keys and values in a paged cache
// Calls with few query rows per kv head (decoding: queries x GQA group <= decode_max_rows) take
// the decode kernel (decode.hpp) instead of the tile loop, automatically; cluster routing alone
// runs as dense attention inside each cluster (cluster_gather.hpp), MoBA prefill as dense
// attention over gathered (query, key block) pairs (moba_gather.hpp).
#include <type_traits>
#include <vector>

#include "../core/batch_check.hpp"
#include "batch.hpp"
#include "cluster_gather.hpp"
#include "moba_gather.hpp"
#include "parallel.hpp"
#include "plan.hpp"

namespace attnkit::cpu {

template <class Variant, class TQ, class TK, class TV, class TO>
using PlanFor = Plan<Variant, std::remove_const_t<TQ>, std::remove_const_t<TK>, std::remove_const_t<TV>, TO>;

template <class Variant, class TQ, class TK, class TV, class TO>
PlanFor<Variant, TQ, TK, TV, TO> make_plan(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v,
                                           TensorView<TO> o, const Options& opt = {},
                                           const PartialState* partial = nullptr) {
  static_assert(!std::is_const_v<TO>, "attnkit: the output view must be writable");
  return {attn, q, k, v, o, opt, partial};
}

namespace detail {
template <class TQ, class TK>
index_t gqa_group(const TensorView<TQ>& q, const TensorView<TK>& k) {
  return k.shape[1] > 0 && q.shape[1] % k.shape[1] == 0 ? q.shape[1] / k.shape[1] : 0;
}

// Dense views as a batch of sequences (the decode path).
template <class Variant, class TQ, class TK, class TV, class TO>
TileCounters run_batched(const Variant& attn, TensorView<const TQ> q, TensorView<const TK> k, TensorView<const TV> v,
                         TensorView<TO> o, const Options& opt, const PartialState* partial) {
  attn.validate(make_problem(q, k, v, o, opt));
  if (partial) {
    require(partial->o.shape == o.shape, "partial.o", "must have the output's shape");
    require(partial->m.data && partial->l.data, "partial", "m and l views are required");
  }
  using P = BatchPlan<Variant, TQ, TK, TV, TO>;
  std::vector<typename P::Seq> seqs;
  for (index_t b = 0; b < q.shape[0]; ++b) {
    typename P::Seq s{batch_entry(q, b), batch_entry(k, b), batch_entry(v, b), batch_entry(o, b), batch_entry(opt.lse, b)};
    if (partial) s.partial = {batch_entry(partial->o, b), batch_entry(partial->m, b), batch_entry(partial->l, b)};
    s.slot.seq = b;
    seqs.push_back(s);
  }
  P plan(attn, seqs, opt);
  drive(plan, opt.threads);
  return plan.counters();
}
}  // namespace detail

template <class Variant, class TQ, class TK, class TV, class TO>
TileCounters run(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, TensorView<TO> o,
                 const Options& opt = {}) {
  if constexpr (gathers_clusters<Variant>())
    if (opt.keys.begin == 0 && opt.keys.end < 0)
      return detail::run_cluster_gathered<Variant, std::remove_const_t<TQ>, std::remove_const_t<TK>, std::remove_const_t<TV>,
                                          TO>(attn, q, k, v, o, opt);
  if (takes_decode<Variant>(q.shape[2], detail::gqa_group(q, k)))
    return detail::run_batched<Variant, std::remove_const_t<TQ>, std::remove_const_t<TK>, std::remove_const_t<TV>, TO>(
        attn, q, k, v, o, opt, nullptr);
  if constexpr (gathers_moba<Variant>()) {
    using Q = std::remove_const_t<TQ>;
    using K = std::remove_const_t<TK>;
    using V = std::remove_const_t<TV>;
    const ProblemInfo p = make_problem<Q, K, V, TO>(q, k, v, o, opt);
    if (detail::moba_gather_applies(attn, p, opt))
      return detail::run_moba_gathered<Variant, Q, K, V, TO>(attn, q, k, v, o, opt, p);
  }
  auto plan = make_plan(attn, q, k, v, o, opt);
  drive(plan, opt.threads);
  return plan.counters();
}

template <class Variant, class TQ, class TK, class TV>
TileCounters run_partial(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v,
                         const PartialState& state, const Options& opt = {}) {
  require(!opt.lse, "lse", "not produced by run_partial: finalize the merged state instead");
  if (takes_decode<Variant>(q.shape[2], detail::gqa_group(q, k)))
    return detail::run_batched<Variant, std::remove_const_t<TQ>, std::remove_const_t<TK>, std::remove_const_t<TV>, float>(
        attn, q, k, v, state.o, opt, &state);
  auto plan = make_plan(attn, q, k, v, state.o, opt, &state);
  drive(plan, opt.threads);
  return plan.counters();
}

// Ragged batch: q, o are [1, Hq, total_q, D / Dv], k, v are [1, Hkv, total_k, D / Dv];
// sequence b has query rows [q_rows.offsets[b], q_rows.offsets[b + 1]) against key rows
// [k_rows.offsets[b], k_rows.offsets[b + 1]), its queries bottom-right aligned against its
// own keys unless opt.q_offset says otherwise (then it applies to every sequence). opt.lse
// is [1, Hq, total_q]. Score modifiers see b = sequence index and i, j within the sequence.
template <class Variant, class TQ, class TK, class TV, class TO>
TileCounters run_ragged(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, TensorView<TO> o,
                        const RaggedRows& q_rows, const RaggedRows& k_rows, const Options& opt = {}) {
  static_assert(!std::is_const_v<TO>, "attnkit: the output view must be writable");
  Options whole = opt;
  whole.q_offset.reset();  // per sequence, checked there
  const ProblemInfo p = make_problem<std::remove_const_t<TQ>, std::remove_const_t<TK>, std::remove_const_t<TV>, TO>(q, k, v, o, whole);
  require(p.B == 1, "q.shape", "a ragged batch is packed along the sequence axis of a batch-1 view");
  require(opt.keys.begin == 0 && opt.keys.end < 0, "keys", "key ranges are not supported for ragged batches");
  check_ragged(q_rows, p.Nq, "q_rows");
  check_ragged(k_rows, p.Nk, "k_rows");
  require(k_rows.batch == q_rows.batch, "k_rows.batch",
          [&] { return std::to_string(k_rows.batch) + " sequences, q_rows has " + std::to_string(q_rows.batch); });
  using P = BatchPlan<Variant, std::remove_const_t<TQ>, std::remove_const_t<TK>, std::remove_const_t<TV>, TO>;
  std::vector<typename P::Seq> seqs;
  for (index_t b = 0; b < q_rows.batch; ++b) {
    const index_t q0 = q_rows.begin(b), nq = q_rows.rows(b), k0 = k_rows.begin(b), nk = k_rows.rows(b);
    typename P::Seq s{row_slice(q, q0, nq), row_slice(k, k0, nk), row_slice(v, k0, nk), row_slice(o, q0, nq),
                      row_slice(opt.lse, q0, nq)};
    s.slot.seq = b;
    seqs.push_back(s);
  }
  P plan(attn, seqs, opt);
  drive(plan, opt.threads);
  return plan.counters();
}

// Paged KV cache: queries packed as in run_ragged ([1, Hq, total_q, D], offsets q_rows);
// sequence b's keys are its kv.seq_lens[b] tokens through its block-table row.
template <class Variant, class TQ, class T, class TO>
TileCounters run_paged(const Variant& attn, TensorView<TQ> q, const RaggedRows& q_rows, const PagedKV<const T>& kv,
                       TensorView<TO> o, const Options& opt = {}) {
  static_assert(!std::is_const_v<TO>, "attnkit: the output view must be writable");
  using attnkit::detail::shape_str;
  attnkit::detail::check_view(q, "q");
  attnkit::detail::check_view(o, "o");
  const index_t Hq = q.shape[1], total = q.shape[2];
  require(q.shape[0] == 1, "q.shape", "a ragged batch is packed along the sequence axis of a batch-1 view");
  require(o.shape == std::array<index_t, 4>{1, Hq, total, kv.dim_v}, "o.shape", [&] {
    return shape_str(o.shape) + " must be [1, Hq, total_q, kv.dim_v] = " + shape_str({1, Hq, total, kv.dim_v});
  });
  require(attnkit::detail::rows_disjoint(o), "o.stride", "output rows overlap");
  require(!opt.lse || (opt.lse.shape[0] == 1 && opt.lse.shape[1] == Hq && opt.lse.shape[2] == total), "lse",
          "shape must be [1, Hq, total_q]");
  require(opt.keys.begin == 0 && opt.keys.end < 0, "keys", "key ranges are not supported for paged caches");
  check_ragged(q_rows, total, "q_rows");
  check_paged(kv, q_rows.batch, Hq, q.shape[3]);
  using P = BatchPlan<Variant, std::remove_const_t<TQ>, T, T, TO>;
  std::vector<typename P::Seq> seqs;
  for (index_t b = 0; b < q_rows.batch; ++b) {
    const index_t q0 = q_rows.begin(b), nq = q_rows.rows(b), len = kv.seq_lens[b];
    // The sequence's keys as a view over page 0 with the pool's head and slot strides.
    const TensorView<const T> k{kv.k.data, {1, kv.heads, len, kv.dim}, {0, kv.k.stride[2], kv.k.stride[1]}};
    const TensorView<const T> v{kv.v.data, {1, kv.heads, len, kv.dim_v}, {0, kv.v.stride[2], kv.v.stride[1]}};
    typename P::Seq s{row_slice(q, q0, nq), k, v, row_slice(o, q0, nq), row_slice(opt.lse, q0, nq)};
    s.slot = {b, kv.block_table + b * kv.table_stride, kv.page_size, kv.k.stride[0], kv.v.stride[0]};
    seqs.push_back(s);
  }
  P plan(attn, seqs, opt);
  drive(plan, opt.threads);
  return plan.counters();
}

template <class Variant, class TQ, class T, class TO>
  requires(!std::is_const_v<T>)
TileCounters run_paged(const Variant& attn, TensorView<TQ> q, const RaggedRows& q_rows, const PagedKV<T>& kv,
                       TensorView<TO> o, const Options& opt = {}) {
  return run_paged(attn, q, q_rows, PagedKV<const T>(kv), o, opt);
}

}  // namespace attnkit::cpu
