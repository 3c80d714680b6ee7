#pragma once
// Scratch memory for the large temporary buffers of one call (packed rows, partial states),
// cached per thread across calls. Freed blocks of at least scratch_min_bytes stay with the
// thread that freed them, up to scratch_cache_limit() bytes, and serve later requests that fit.
// Why: glibc hands such blocks out by mmap (or trims them off the heap when freed), so each call
// faulted its pages in again and zeroed them: MoBA prefill at N=4096 (about 10 MiB of packed
// queries and partial states) ran 1.4x longer than with the pages kept (AVX2 EPYC, one thread).
// The memory held shows up as the process's own; release_scratch() returns this thread's blocks,
// set_scratch_cache_limit(0) turns the cache off.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace attnkit::cpu {

inline constexpr std::size_t scratch_min_bytes = std::size_t(128) << 10;  // smaller blocks: plain new
inline constexpr std::size_t scratch_alignment = 64;                     // a cache line

namespace detail {
inline std::atomic<std::size_t>& scratch_limit() {
  static std::atomic<std::size_t> limit{std::size_t(256) << 20};
  return limit;
}

// One thread's cached blocks. Each block starts with a header line holding its usable size,
// so that a block taken for a smaller request goes back to the cache whole.
class ScratchCache {
 public:
  ScratchCache() = default;
  ScratchCache(const ScratchCache&) = delete;
  ScratchCache& operator=(const ScratchCache&) = delete;
  ~ScratchCache() { release(); }

  void* take(std::size_t bytes) {
    // The smallest cached block that holds the request without wasting more than its size.
    auto best = blocks_.end();
    for (auto it = blocks_.begin(); it != blocks_.end(); ++it)
      if (it->bytes >= bytes && it->bytes <= 2 * bytes && (best == blocks_.end() || it->bytes < best->bytes)) best = it;
    if (best != blocks_.end()) {
      void* p = best->data;
      held_ -= best->bytes;
      blocks_.erase(best);
      return p;
    }
    auto* raw = static_cast<unsigned char*>(::operator new(bytes + scratch_alignment, std::align_val_t{scratch_alignment}));
    *reinterpret_cast<std::size_t*>(raw) = bytes;
    return raw + scratch_alignment;
  }
  void give(void* p) noexcept {
    auto* raw = static_cast<unsigned char*>(p) - scratch_alignment;
    const std::size_t bytes = *reinterpret_cast<std::size_t*>(raw);
    const std::size_t limit = scratch_limit().load(std::memory_order_relaxed);
    if (bytes > limit) return free_block(p);  // would not fit even alone: keep what is cached
    while (!blocks_.empty() && held_ + bytes > limit) {  // the oldest blocks make room
      free_block(blocks_.front().data);
      held_ -= blocks_.front().bytes;
      blocks_.erase(blocks_.begin());
    }
    try {
      blocks_.push_back({p, bytes});
    } catch (...) {  // (called from a deallocation: no exception may leave)
      return free_block(p);
    }
    held_ += bytes;
  }
  void release() noexcept {
    for (const Block& b : blocks_) free_block(b.data);
    blocks_.clear();
    held_ = 0;
  }

 private:
  struct Block {
    void* data;
    std::size_t bytes;
  };
  static void free_block(void* p) noexcept {
    ::operator delete(static_cast<unsigned char*>(p) - scratch_alignment, std::align_val_t{scratch_alignment});
  }
  std::vector<Block> blocks_;
  std::size_t held_ = 0;
};

inline ScratchCache& scratch_cache() {
  thread_local ScratchCache cache;
  return cache;
}
}  // namespace detail

// Bytes of freed scratch blocks each thread may keep (default 256 MiB; 0: none).
inline void set_scratch_cache_limit(std::size_t bytes) { detail::scratch_limit().store(bytes); }
inline std::size_t scratch_cache_limit() { return detail::scratch_limit().load(); }
// Frees the scratch blocks the calling thread holds.
inline void release_scratch() { detail::scratch_cache().release(); }

// Allocator of scratch_vector: blocks of scratch_min_bytes and more come from the calling
// thread's cache (64-byte aligned), smaller ones from aligned operator new. Elements made
// without a value (scratch_vector<T> v(n), v.resize(n)) are default-initialised, as by
// new T[n]: left unset for arithmetic types, since scratch is written before it is read.
// Zeroing them cost MoBA prefill ~10 MiB of single-threaded stores per call at N=4096.
template <class T>
struct ScratchAllocator {
  using value_type = T;
  ScratchAllocator() = default;
  template <class U>
  ScratchAllocator(const ScratchAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < scratch_min_bytes) return static_cast<T*>(::operator new(bytes, std::align_val_t{scratch_alignment}));
    return static_cast<T*>(detail::scratch_cache().take(bytes));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < scratch_min_bytes) return ::operator delete(p, std::align_val_t{scratch_alignment});
    detail::scratch_cache().give(p);
  }
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const ScratchAllocator<U>&) const noexcept { return true; }
};
template <class T>
using scratch_vector = std::vector<T, ScratchAllocator<T>>;

}  // namespace attnkit::cpu
