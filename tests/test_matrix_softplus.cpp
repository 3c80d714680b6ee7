#include "matrix_cpu.hpp"
using namespace attnkit;
TEST_CASE("softplus x every mask and shape in f32, f16 and bf16 on one mask per code path, match the fp64 reference", "[matrix][softplus]") {
  test::check_all_masks(Softplus{});
}
TEST_CASE("softplus variants: power, log-n length scale, no normalisation", "[matrix][softplus]") {
  for (const auto& s : test::standard_shapes()) {
    test::check_variant<float>(make_attention(Softplus{2.f}, SlidingWindow{20, 3}), s);
    test::check_variant<float>(make_attention(Softplus{1.f, LengthScale::log_n}, Causal{}), s);
    test::check_variant<float>(make_attention(Softplus{3.f, LengthScale::log_n, false}, SlidingWindow{9, 0, 2}), s);
    test::check_variant<float>(make_attention(Softplus{1.5f, LengthScale::one, false}, Full{}), s);
  }
}
