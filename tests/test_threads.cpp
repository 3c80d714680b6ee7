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
  Tensor<float> o1(s, s.Hq, s.Nq, s.Dv), o2 = o1, o3 = o1;
  o2.view.data = o2.data.data(), o3.view.data = o3.data.data();
  const auto attn = make_attention(Softmax{}, MoBA{32, 2});
  Options one, two;
  one.threads = 1, two.threads = 2;
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o1.view, one);
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o2.view, two);
  REQUIRE(o1.data == o2.data);
  // the work-range API, driven by two "engine" threads over interleaved ranges
  auto plan = cpu::make_plan(attn, q.cview(), k.cview(), v.cview(), o3.view);
  plan.prepare(0, plan.prepare_items());
  std::thread t([&] {
    decltype(plan)::Worker w;
    for (index_t i = 1; i < plan.work_items(); i += 2) plan.execute(i, i + 1, w);
  });
  decltype(plan)::Worker w;
  for (index_t i = 0; i < plan.work_items(); i += 2) plan.execute(i, i + 1, w);
  t.join();
  REQUIRE(o1.data == o3.data);
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
