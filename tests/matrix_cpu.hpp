#pragma once
// The score x mask matrix on the CPU backend.
#include "matrix.hpp"
#include "support.hpp"

namespace attnkit::test {

// Every mask on every standard shape in fp32; half and bfloat16 storage (converted where K and
// V tiles are loaded, the same for every mask) on two shapes with one mask per code path and
// exact top-k, which keeps the CI build (every mask type is its own kernel) within its time.
// The sanitizer build (scripts/sanitize.sh) leaves the 16-bit cells to the fuzzer
// (scripts/fuzz.sh), which runs every score x mask x dtype under the same two sanitizers: they
// were half of that build's matrix, ~700 s of CI's two cores.
#ifdef ATTNKIT_TEST_SANITIZER_BUILD
inline constexpr bool sixteen_bit_cells = false;
#else
inline constexpr bool sixteen_bit_cells = true;
#endif

template <class Score>
void check_all_masks(const Score& score) {
  for (const Shape& s : standard_shapes()) check_masks_with<float>(CpuBackend{}, score, s);
  if constexpr (sixteen_bit_cells)
    for (std::size_t i = 0; i < 2; ++i) {
      check_masks_with<half, OnePerPathAndTopK>(CpuBackend{}, score, standard_shapes()[i]);
      check_masks_with<bfloat16, OnePerPathAndTopK>(CpuBackend{}, score, standard_shapes()[i]);
    }
}

}  // namespace attnkit::test
