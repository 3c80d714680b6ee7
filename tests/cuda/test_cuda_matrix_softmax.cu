#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
TEST_CASE("cuda: softmax x every mask in bf16, one mask per code path in f16, every shape, match the fp64 reference", "[cuda][matrix]") {
  test::check_masks_cuda<test::EveryMask, test::OnePerPath>(Softmax{});
}
