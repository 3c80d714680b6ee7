#pragma once
// Default thread driver for the work-range API: a dynamic parallel-for over [0, n) on
// std::threads (the caller's thread takes part). Engines with their own pool call
// Plan::execute(begin, end, worker) on their threads instead.
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "../core/tensor.hpp"

namespace attnkit::cpu {

inline int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
}

// body(begin, end, thread_index) runs on disjoint sub-ranges; the first exception is rethrown.
template <class Body>
void parallel_for(index_t n, int threads, Body&& body, index_t grain = 1) {
  if (n <= 0) return;
  threads = std::max(1, std::min<int>(threads <= 0 ? default_threads() : threads, int((n + grain - 1) / grain)));
  if (threads == 1) return body(index_t(0), n, 0);
  std::atomic<index_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int t) {
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
  std::vector<std::thread> pool;
  pool.reserve(std::size_t(threads - 1));
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// Runs both phases of a plan (the work-range API) on `threads` std::threads (0 = all
// hardware threads).
template <class P>
void drive(P& plan, int threads) {
  parallel_for(plan.prepare_items(), threads, [&](index_t b, index_t e, int) { plan.prepare(b, e); });
  parallel_for(plan.work_items(), threads, [&](index_t b, index_t e, int) {
    typename P::Worker w;
    plan.execute(b, e, w);
    plan.add_counters(w);
  }, /*grain=*/1);
}

}  // namespace attnkit::cpu
