#pragma once
// The score x mask matrix on the CPU backend.
#include "matrix.hpp"
#include "support.hpp"

namespace attnkit::test {

template <class T, class Score>
void check_masks_on(const Score& score, const Shape& s) {
  check_masks_with<T>(CpuBackend{}, score, s);
}

// Every mask on every standard shape in fp32, and on two shapes in half and bfloat16.
template <class Score>
void check_all_masks(const Score& score) {
  for (const Shape& s : standard_shapes()) check_masks_on<float>(score, s);
  for (std::size_t i = 0; i < 2; ++i) {
    check_masks_on<half>(score, standard_shapes()[i]);
    check_masks_on<bfloat16>(score, standard_shapes()[i]);
  }
}

}  // namespace attnkit::test
