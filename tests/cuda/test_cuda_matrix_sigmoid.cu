#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
TEST_CASE("cuda: sigmoid x every mask in bf16, full and causal in f16, every shape, match the fp64 reference", "[cuda][matrix]") {
  test::check_masks_cuda<test::EveryMask, test::FullAndCausal>(Sigmoid{});
}
