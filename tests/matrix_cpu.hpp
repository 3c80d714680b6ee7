#pragma once
// The score x mask matrix on the CPU backend.
#include "matrix.hpp"
#include "support.hpp"

namespace attnkit::test {

// Every mask on every standard shape in fp32; half and bfloat16 storage (converted where K and
// V tiles are loaded, the same for every mask) on two shapes with one mask per code path and
// exact top-k, which keeps the CI build (every mask type is its own kernel) within its time.
template <class Score>
void check_all_masks(const Score& score) {
  for (const Shape& s : standard_shapes()) check_masks_with<float>(CpuBackend{}, score, s);
  for (std::size_t i = 0; i < 2; ++i) {
    check_masks_with<half, OnePerPathAndTopK>(CpuBackend{}, score, standard_shapes()[i]);
    check_masks_with<bfloat16, OnePerPathAndTopK>(CpuBackend{}, score, standard_shapes()[i]);
  }
}

}  // namespace attnkit::test
