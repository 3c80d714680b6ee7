// Threads: the result does not depend on the thread count or on who drives the work items,
// and concurrent calls of different variants match serial calls.
#include <atomic>
#include <stdexcept>
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

TEST_CASE("the default driver's pool: threads kept across calls, errors and nested calls", "[threads]") {
  auto& pool = cpu::ThreadPool::instance();
  std::vector<int> seen(64, 0);
  const auto count = [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) ++seen[std::size_t(i)];
  };
  cpu::parallel_for(64, 3, count);
  const int helpers = pool.helpers();
  REQUIRE(helpers >= 2);
  for (int round = 0; round < 20; ++round) cpu::parallel_for(64, 3, count);
  REQUIRE(pool.helpers() == helpers);  // kept, not started again
  for (int x : seen) REQUIRE(x == 21);

  // An exception from any thread reaches the caller, and the pool serves the next call.
  REQUIRE_THROWS_AS(cpu::parallel_for(64, 3, [](index_t b, index_t, int) {
                      if (b == 37) throw std::runtime_error("item 37");
                    }),
                    std::runtime_error);
  std::atomic<index_t> total{0};
  cpu::parallel_for(1000, 3, [&](index_t b, index_t e, int) { total += e - b; });
  REQUIRE(total == 1000);

  // A body that calls parallel_for itself (on a pool thread or the busy caller) gets threads of
  // its own for that call.
  std::vector<std::atomic<int>> inner(8 * 16);
  cpu::parallel_for(8, 2, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i)
      cpu::parallel_for(16, 2, [&](index_t ib, index_t ie, int) {
        for (index_t j = ib; j < ie; ++j) ++inner[std::size_t(i * 16 + j)];
      });
  });
  for (auto& x : inner) REQUIRE(x.load() == 1);
}

#if __has_include(<sys/wait.h>)
#include <sys/wait.h>
#include <unistd.h>

TEST_CASE("a forked child runs attention with threads of its own", "[threads]") {
  // The parent's pool threads do not exist in the child: its calls must not wait for them.
  const Shape s{1, 2, 1, 100, 100, 16, 16, false, {}};
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
  fill_normal(q), fill_normal(k), fill_normal(v);
  Tensor<float> o1(s, s.Hq, s.Nq, s.Dv), o2(s, s.Hq, s.Nq, s.Dv);
  Options two;
  two.threads = 2;
  const auto attn = make_attention(Softmax{}, Causal{});
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o1.view, two);  // the pool exists now
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    cpu::run(attn, q.cview(), k.cview(), v.cview(), o2.view, two);
    _exit(o1.data == o2.data ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}
#endif
