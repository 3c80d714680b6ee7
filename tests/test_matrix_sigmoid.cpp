#include "matrix_cpu.hpp"
using namespace attnkit;
TEST_CASE("sigmoid x every mask and shape in f32, f16 and bf16 on one mask per code path, match the fp64 reference", "[matrix][sigmoid]") {
  test::check_all_masks(Sigmoid{});
}
TEST_CASE("sigmoid with an explicit bias", "[matrix][sigmoid]") {
  test::check_variant<float>(make_attention(Sigmoid::with_bias(0.5f), Causal{}), test::standard_shapes()[0]);
}
