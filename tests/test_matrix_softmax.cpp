#include "matrix_cpu.hpp"
using namespace attnkit;
TEST_CASE("softmax x every mask and shape in f32, f16 and bf16 on one mask per code path, match the fp64 reference", "[matrix][softmax]") {
  test::check_all_masks(Softmax{});
}
