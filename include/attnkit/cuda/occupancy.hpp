#pragma once
// What the current device offers a launch: its multiprocessors, its architecture, and how many
// CTAs of a kernel it holds at once (cached per device and per kernel).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "error.hpp"

namespace attnkit::cuda::detail {

inline int multiprocessors() {
  int dev = 0, n = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return n;
}

inline int compute_capability_major() {
  int dev = 0, major = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  return major;
}

// Raises Kernel's dynamic shared-memory limit on the current device to at least `bytes`, calling
// the runtime only when the limit must grow: the attribute call costs host time on every launch
// otherwise (a decode step is tens of microseconds of host time in all). Per device, as the
// attribute is; a racing second setter only repeats the call.
template <auto Kernel>
void ensure_dynamic_smem(int bytes, const char* what) {
  constexpr int max_devices = 64;
  static std::atomic<int> limit[max_devices] = {};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < max_devices && limit[dev].load(std::memory_order_acquire) >= bytes) return;
  check(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), what);
  if (dev < max_devices) {
    int seen = limit[dev].load(std::memory_order_relaxed);
    while (seen < bytes && !limit[dev].compare_exchange_weak(seen, bytes, std::memory_order_release)) {
    }
  }
}

// CTAs of Kernel the current device holds at once, queried once per device: the occupancy
// query costs microseconds, which a decode step would pay on every call. Keyed by the kernel
// itself, not its type (kernels of different tile shapes can share a signature). Set the
// kernel's shared-memory limit before the first call.
template <auto Kernel>
std::int64_t resident_ctas(int threads, int smem) {
  constexpr int max_devices = 64;
  static std::atomic<std::int64_t> cached[max_devices] = {};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < max_devices && cached[dev].load(std::memory_order_relaxed) > 0) return cached[dev].load(std::memory_order_relaxed);
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, threads, smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  const std::int64_t n = std::int64_t(std::max(per_sm, 1)) * multiprocessors();
  if (dev < max_devices) cached[dev].store(n, std::memory_order_relaxed);
  return n;
}

}  // namespace attnkit::cuda::detail
