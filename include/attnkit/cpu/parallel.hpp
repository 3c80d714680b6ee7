#pragma once
// Default thread driver for the work-range API: a dynamic parallel-for over [0, n) on the
// process's helper threads (thread_pool.hpp; the caller's thread takes part). Engines with their
// own pool call Plan::execute(begin, end, worker) on their threads instead.
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "../core/tensor.hpp"
#include "thread_pool.hpp"

namespace attnkit::cpu {

inline int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
}

// The threads parallel_for(n, threads, ..., grain) runs on: thread indices are below this.
inline int parallel_threads(index_t n, int threads, index_t grain = 1) {
  if (n <= 0) return 0;
  return std::max(1, std::min<int>(threads <= 0 ? default_threads() : threads, int((n + grain - 1) / grain)));
}

// body(begin, end, thread_index) runs on disjoint sub-ranges; the first exception is rethrown.
template <class Body>
void parallel_for(index_t n, int threads, Body&& body, index_t grain = 1) {
  threads = parallel_threads(n, threads, grain);
  if (threads == 0) return;
  if (threads == 1) return body(index_t(0), n, 0);
  std::atomic<index_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int t) noexcept {
    try {
      for (;;) {
        const index_t begin = next.fetch_add(grain);
        if (begin >= n) break;
        body(begin, std::min(n, begin + grain), t);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n);
    }
  };
  if (!ThreadPool::instance().try_run(threads - 1, worker)) {
    // The pool serves another caller (or this is one of its threads): threads for this call.
    std::vector<std::thread> own;
    own.reserve(std::size_t(threads - 1));
    for (int t = 1; t < threads; ++t) own.emplace_back(worker, t);
    worker(0);
    for (auto& th : own) th.join();
  }
  if (error) std::rethrow_exception(error);
}

// Runs both phases of a plan (the work-range API) on `threads` threads (0 = all hardware
// threads), one Plan::Worker per thread for all of its ranges.
template <class P>
void drive(P& plan, int threads) {
  parallel_for(plan.prepare_items(), threads, [&](index_t b, index_t e, int) { plan.prepare(b, e); });
  const index_t items = plan.work_items();
  std::vector<std::optional<typename P::Worker>> workers(std::size_t(parallel_threads(items, threads)));
  parallel_for(items, threads, [&](index_t b, index_t e, int t) {
    auto& w = workers[std::size_t(t)];
    if (!w) w.emplace();
    plan.execute(b, e, *w);
  }, /*grain=*/1);
  for (auto& w : workers)
    if (w) plan.add_counters(*w);
}

}  // namespace attnkit::cpu
