#include "matrix_cpu.hpp"
using namespace attnkit;
TEST_CASE("softmax x every mask, shape and dtype matches the fp64 reference", "[matrix][softmax]") {
  test::check_all_masks(Softmax{});
}
