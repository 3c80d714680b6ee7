#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
TEST_CASE("cuda: linear x one mask per code path in bf16, full and causal in f16, every shape, match the fp64 reference", "[cuda][matrix]") {
  test::check_masks_cuda<test::OnePerPath, test::FullAndCausal>(Linear<EluPlusOne>{});
}
