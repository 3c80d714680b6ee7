#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
TEST_CASE("cuda: softmax x every static mask, shape, bf16 and f16 match the fp64 reference", "[cuda][matrix]") {
  test::check_all_masks_cuda(Softmax{});
}
