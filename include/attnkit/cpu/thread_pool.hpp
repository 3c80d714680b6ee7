#pragma once
// The default driver's threads: one process-wide pool of helper threads, started on first use
// and kept for later calls. Why: a call that started its own std::threads paid for them every
// time -- the start itself (tens of microseconds, a decode step's worth at short KV) and, in
// each new thread, fresh pages for its buffers and an empty scratch cache (scratch.hpp): the
// gathered MoBA path, eight parallel phases a call, spent ~7% of a two-thread call in page
// faults of its helpers. Pool threads keep their pages and caches from call to call.
//
// One caller at a time: a second thread calling while the pool works for another (or a task
// calling from inside the pool's call) is refused, and parallel_for starts threads of its own for
// that call as before. A forked child does not use its parent's pool (its threads are not
// there); it starts threads per call. The pool lives until the process ends (never destroyed:
// helpers waiting at exit end with the process, and no static destructor has to join them).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

namespace attnkit::cpu {

namespace detail {
inline long process_id() {
#if __has_include(<unistd.h>)
  return long(::getpid());
#else
  return 0;
#endif
}
}  // namespace detail

class ThreadPool {
 public:
  // The most helper threads the pool starts; calls asking for more start their own threads.
  static constexpr int max_helpers = 255;

  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool;  // never destroyed (see the top)
    return *pool;
  }

  // Runs task(t) for t = 1 .. helpers on pool threads and task(0) on the calling thread, and
  // returns once all have returned. task must not throw. Returns false, having run nothing, when
  // the pool is taken by another caller, the caller is a pool thread or already inside a call,
  // the process is a fork of the pool's, or helper threads cannot be started.
  template <class Task>
  bool try_run(int helpers, Task& task) {
    // (The caller's own flag first: try_lock on a mutex this thread holds is undefined.)
    if (helpers <= 0 || helpers > max_helpers || in_pool_work() || owner_pid_ != detail::process_id()) return false;
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    if (!grow(helpers)) return false;
    in_pool_work() = true;
    struct Clear {
      ~Clear() { in_pool_work() = false; }
    } clear;
    pending_.store(helpers, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(state_mutex_);
      job_ = &task;
      job_fn_ = [](void* f, int t) noexcept { (*static_cast<Task*>(f))(t); };
      active_ = helpers;
      generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    wake_.notify_all();
    task(0);
    wait_until([&] { return pending_.load(std::memory_order_acquire) == 0; }, done_mutex_, done_);
    return true;
  }

  int helpers() const {
    std::lock_guard<std::mutex> lock(state_mutex_);
    return started_;
  }

 private:
  ThreadPool() : owner_pid_(detail::process_id()) {}

  // True on helper threads, and on a caller while the pool runs its call.
  static bool& in_pool_work() {
    thread_local bool flag = false;
    return flag;
  }

  // Starts helpers up to n (the call mutex held). Threads that did start stay.
  bool grow(int n) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    try {
      for (; started_ < n; ++started_) std::thread([this, index = started_ + 1] { helper_loop(index); }).detach();
    } catch (...) {  // (std::system_error: no more threads)
      return false;
    }
    return true;
  }

  // Waits for ready(): spins a short while first, since parallel calls often follow one another
  // closely (the phases of one attention call, the steps of a decode loop), then sleeps on cv.
  template <class Ready>
  static void wait_until(Ready ready, std::mutex& m, std::condition_variable& cv) {
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (int i = 0; !ready(); ++i) {
      if ((i & 63) == 63) {
        if (std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(m);
          cv.wait(lock, ready);
          return;
        }
        std::this_thread::yield();
      }
    }
  }

  void helper_loop(int index) {
    in_pool_work() = true;
    std::uint64_t seen = 0;
    for (;;) {
      wait_until([&] { return generation_.load(std::memory_order_acquire) != seen; }, state_mutex_, wake_);
      void* job;
      void (*fn)(void*, int) noexcept;
      int active;
      {
        std::lock_guard<std::mutex> lock(state_mutex_);
        seen = generation_.load(std::memory_order_relaxed);
        job = job_, fn = job_fn_, active = active_;
      }
      // (A helper started by this call's grow may first read the previous call's job: its index
      // is above that call's active count, so it skips it and waits for the next generation.)
      if (index > active) continue;
      fn(job, index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(done_mutex_);  // (orders the store before the caller's check)
        done_.notify_one();
      }
    }
  }

  const long owner_pid_;
  std::mutex call_mutex_;  // held by the one caller the pool serves
  mutable std::mutex state_mutex_;
  std::condition_variable wake_;
  std::atomic<std::uint64_t> generation_{0};  // one step per call
  void* job_ = nullptr;
  void (*job_fn_)(void*, int) noexcept = nullptr;
  int active_ = 0;                      // helpers 1 .. active_ take part in the current call
  int started_ = 0;                     // helper threads running (detached)
  std::atomic<int> pending_{0};         // helpers of the current call still running
  std::mutex done_mutex_;
  std::condition_variable done_;
};

}  // namespace attnkit::cpu
