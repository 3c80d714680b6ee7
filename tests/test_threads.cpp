// Threads: the result does not depend on the thread count or on who drives the work items,
// and concurrent calls of different variants match serial calls.
#include <thread>

#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

TEST_CASE("one thread, two threads and an engine-driven work range agree bit for bit", "[threads]") {
  const Shape s{2, 4, 2, 150, 150, 32, 32, false, {}};
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
  fill_normal(q), fill_normal(k), fill_normal(v);
  Tensor<float> o1(s, s.Hq, s.Nq, s.Dv), o2 = o1, o3 = o1, o4 = o1;
  o2.view.data = o2.data.data(), o3.view.data = o3.data.data(), o4.view.data = o4.data.data();
  const auto attn = make_attention(Softmax{}, MoBA{32, 2});
  Options one, two;
  one.threads = 1, two.threads = 2;
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o1.view, one);  // (MoBA prefill: gathered pairs)
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o2.view, two);
  REQUIRE(o1.data == o2.data);
  // the work-range API (the tile loop), driven by the default driver on one thread and by two
  // "engine" threads over interleaved ranges
  auto serial = cpu::make_plan(attn, q.cview(), k.cview(), v.cview(), o4.view);
  cpu::drive(serial, 1);
  auto plan = cpu::make_plan(attn, q.cview(), k.cview(), v.cview(), o3.view);
  plan.prepare(0, plan.prepare_items());
  std::thread t([&] {
    decltype(plan)::Worker w;
    for (index_t i = 1; i < plan.work_items(); i += 2) plan.execute(i, i + 1, w);
  });
  decltype(plan)::Worker w;
  for (index_t i = 0; i < plan.work_items(); i += 2) plan.execute(i, i + 1, w);
  t.join();
  REQUIRE(o4.data == o3.data);
}

TEST_CASE("concurrent calls of different variants equal serial calls", "[threads]") {
  const Shape s{1, 2, 1, 130, 130, 32, 32, true, {}};
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
  fill_normal(q), fill_normal(k), fill_normal(v);
  auto run_variant = [&](int which, std::vector<float>& out) {
    Tensor<float> o(s, s.Hq, s.Nq, s.Dv);
    Options opt;
    opt.threads = 2;
    switch (which % 4) {
      case 0: cpu::run(make_attention(Softmax{}, Causal{}), q.cview(), k.cview(), v.cview(), o.view, opt); break;
      case 1: cpu::run(make_attention(Sigmoid{}, SlidingWindow{20, 0}), q.cview(), k.cview(), v.cview(), o.view, opt); break;
      case 2: cpu::run(make_attention(Softplus{}, TopK<Causal>{5}), q.cview(), k.cview(), v.cview(), o.view, opt); break;
      default: cpu::run(make_attention(Linear<>{}, Causal{}), q.cview(), k.cview(), v.cview(), o.view, opt); break;
    }
    out = o.data;
  };
  std::vector<std::vector<float>> serial(8), parallel(8);
  for (int i = 0; i < 8; ++i) run_variant(i, serial[i]);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { run_variant(i, parallel[i]); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) REQUIRE(serial[i] == parallel[i]);
}

TEST_CASE("an engine's worker reused across calls never sees the previous call's keys", "[threads]") {
  // Linear attention caches phi(K) and V of a head in the worker, and an engine keeps one
  // worker per thread across calls: the next plan has other keys (here more of them), and
  // the same plan may run again over new data. The cache once outlived the call (stale keys,
  // and under ASan a heap read past the smaller cache).
  const auto attn = make_attention(Linear<>{}, SlidingWindow{5, 5});
  cpu::PlanFor<std::remove_const_t<decltype(attn)>, const float, const float, const float, float>::Worker w;
  for (const index_t Nk : {16, 300}) {
    const Shape s{1, 2, 1, 70, Nk, 8, 8, false, {}};
    Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
    Tensor<float> o1(s, s.Hq, s.Nq, s.Dv), o2(s, s.Hq, s.Nq, s.Dv);
    fill_normal(q);
    auto plan = cpu::make_plan(attn, q.cview(), k.cview(), v.cview(), o1.view);
    for (int round = 0; round < 2; ++round) {  // the same plan over new keys and values
      fill_normal(k), fill_normal(v);
      plan.execute(0, plan.work_items(), w);
      cpu::run(attn, q.cview(), k.cview(), v.cview(), o2.view);
      REQUIRE(o1.data == o2.data);
    }
  }
}
