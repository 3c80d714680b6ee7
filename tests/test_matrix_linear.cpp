#include "matrix_cpu.hpp"
using namespace attnkit;
TEST_CASE("linear (elu+1) x every mask and shape in f32, f16 and bf16 on one mask per code path, match the fp64 reference", "[matrix][linear]") {
  test::check_all_masks(Linear<EluPlusOne>{});
}
TEST_CASE("linear (relu, unnormalised) on the chunked and the masked forms", "[matrix][linear]") {
  for (const auto& s : test::standard_shapes()) {
    test::check_variant<float>(make_attention(Linear<Relu>{}, Causal{}), s);
    test::check_variant<float>(make_attention(Linear<Relu>{}, Full{}), s);
    test::check_variant<float>(make_attention(Linear<EluPlusOne>{{}, false}, Causal{}), s);
    test::check_variant<float>(make_attention(Linear<EluPlusOne>{{}, false}, SlidingWindow{5, 5}), s);
  }
}
