#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
// The masks that test_cuda_matrix_softmax.cu leaves out, in bf16.
TEST_CASE("cuda: softmax x every other mask in bf16, every shape, match the fp64 reference", "[cuda][matrix]") {
  test::check_masks_cuda<test::Except<test::OnePerPath>, test::NoMask>(Softmax{});
}
