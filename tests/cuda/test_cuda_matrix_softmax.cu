#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
// Softmax meets every mask in bf16: one mask per code path here (and in f16), the others in
// test_cuda_matrix_softmax_masks.cu (one unit took ~10 minutes of a CI core).
TEST_CASE("cuda: softmax x one mask per code path in bf16 and f16, every shape, match the fp64 reference", "[cuda][matrix]") {
  test::check_masks_cuda<test::OnePerPath, test::OnePerPath>(Softmax{});
}
