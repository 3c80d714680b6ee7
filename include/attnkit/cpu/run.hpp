#pragma once
// Public entry points of the CPU backend.
//   cpu::run(attn, q, k, v, o, opts)            attention, default thread driver
//   cpu::run_partial(attn, q, k, v, state, opts) unnormalised monoid state (split-KV)
//   cpu::make_plan(...) + Plan::prepare/execute  the work-range API for an engine's own threads
#include <type_traits>

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

// Runs both phases of a plan on `threads` std::threads (0 = all hardware threads).
template <class P>
void drive(P& plan, int threads) {
  parallel_for(plan.prepare_items(), threads, [&](index_t b, index_t e, int) { plan.prepare(b, e); });
  parallel_for(plan.work_items(), threads, [&](index_t b, index_t e, int) {
    typename P::Worker w;
    plan.execute(b, e, w);
    plan.add_counters(w);
  }, /*grain=*/1);
}

template <class Variant, class TQ, class TK, class TV, class TO>
TileCounters run(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, TensorView<TO> o,
                 const Options& opt = {}) {
  auto plan = make_plan(attn, q, k, v, o, opt);
  drive(plan, opt.threads);
  return plan.counters();
}

template <class Variant, class TQ, class TK, class TV>
TileCounters run_partial(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v,
                         const PartialState& state, const Options& opt = {}) {
  require(!opt.lse, "lse", "not produced by run_partial: finalize the merged state instead");
  auto plan = make_plan(attn, q, k, v, state.o, opt, &state);
  drive(plan, opt.threads);
  return plan.counters();
}

}  // namespace attnkit::cpu
