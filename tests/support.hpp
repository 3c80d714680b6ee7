#pragma once
// Test helpers bound to the CPU backend.
#include <attnkit/attnkit.hpp>

#include "common.hpp"

namespace attnkit::test {

struct CpuBackend {
  template <class T>
  using alloc = std::allocator<T>;
  using mask_store = MaskStoreIn<std::allocator>;
  template <class Mask>
  static constexpr bool supports = true;
  template <class T>
  static constexpr double tolerance = test::tolerance<T>();
  template <class Variant, class Q, class K, class V, class O>
  void operator()(const Variant& attn, Q q, K k, V v, O o, const Options& opt) const {
    cpu::run(attn, q, k, v, o, opt);
  }
};

template <class T, class Variant>
Result<T> run_both(const Variant& attn, const Shape& s, Options opt = {}, Inputs in = {}) {
  return run_both_on<T>(CpuBackend{}, attn, s, opt, in);
}
template <class T, class Variant>
void check_variant(const Variant& attn, const Shape& s, Options opt = {}, Inputs in = {}) {
  check_variant_on<T>(CpuBackend{}, attn, s, opt, in);
}

}  // namespace attnkit::test
