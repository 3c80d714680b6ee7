#pragma once
// Test helpers bound to the CUDA backend: inputs, outputs and mask data live in managed
// memory, so the same host-side test code fills them and reads the results.
#include <attnkit/cuda.hpp>

#include <cstddef>
#include <new>

#include "../common.hpp"

namespace attnkit::test {

template <class T>
struct ManagedAllocator {
  using value_type = T;
  ManagedAllocator() = default;
  template <class U>
  ManagedAllocator(const ManagedAllocator<U>&) {}
  T* allocate(std::size_t n) {
    void* p = nullptr;
    cuda::check(cudaMallocManaged(&p, (n ? n : 1) * sizeof(T)), "cudaMallocManaged");
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { (void)cudaFree(p); }
  template <class U>
  bool operator==(const ManagedAllocator<U>&) const { return true; }
};

struct CudaBackend {
  template <class T>
  using alloc = ManagedAllocator<T>;
  using mask_store = MaskStoreIn<ManagedAllocator>;
  template <class Mask>
  static constexpr bool supports = cuda::supports_mask<Mask>;
  template <class T>
  static constexpr double tolerance = 1e-2;  // bf16/fp16 operands of the tensor cores, P in 16 bits
  template <class Variant, class Q, class K, class V, class O>
  void operator()(const Variant& attn, Q q, K k, V v, O o, const Options& opt) const {
    cuda::run(attn, q, k, v, o, opt);
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
};

// The CUDA matrix on every standard shape: the masks of BF16Masks in bfloat16 and those of
// F16Masks in half (within what the CUDA backend supports: all but exact per-key TopK). Each
// (mask, dtype) pair is up to 4 kernels (2 tile shapes x forward/decode) at ~20 s of nvcc each
// on a CI core, so softmax runs every mask in bf16 and the other scores one mask per code path
// (the scores meet the masks only in the allow bits and the fully-masked-row rule); half adds
// what exercises the f16 MMA and load paths.
template <class BF16Masks, class F16Masks, class Score>
void check_masks_cuda(const Score& score) {
  for (const Shape& s : standard_shapes()) {
    check_masks_with<bfloat16, BF16Masks>(CudaBackend{}, score, s);
    check_masks_with<half, F16Masks>(CudaBackend{}, score, s);
  }
}

}  // namespace attnkit::test
