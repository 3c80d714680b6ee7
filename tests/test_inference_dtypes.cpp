// The decode kernel, ragged batches and paged caches over f16 and bf16 storage (K/V
// converted in registers by the decode kernel, tile by tile by the tile loop).
#include "inference.hpp"

using namespace attnkit;
using namespace attnkit::test;

TEST_CASE("decode: f16 and bf16 caches, converted in registers", "[inference][decode]") {
  for (const Shape& s : {Shape{1, 8, 2, 1, 777, 128, 128, false, {}}, Shape{2, 4, 1, 2, 65, 72, 40, true, {}}}) {
    INFO(s.str());
    Options opt;
    opt.threads = 2;
    check_variant<half>(make_attention(Softmax{}, SlidingWindow{300, 0, 4}), s, opt);
    check_variant<bfloat16>(make_attention(Softmax{}, Causal{}), s, opt);
    check_variant<bfloat16>(make_attention(Sigmoid{}, Full{}), s, opt);
    check_variant<half>(make_attention(Softplus{}, Causal{}), s, opt);
    check_variant<bfloat16>(make_attention(Linear<>{}, Full{}), s, opt);
  }
}

TEST_CASE("ragged and paged batches over 16-bit caches", "[inference][ragged][paged]") {
  check_ragged<bfloat16>(make_attention(Softmax{}, SlidingWindow{128, 0, 4}), mixed_batch, 8, 2, 64, 64, 2);
  check_ragged<half>(make_attention(Softmax{}, Causal{}), decode_batch, 4, 1, 128, 128, 2);
  for (const index_t page : {index_t(1), index_t(16), index_t(64)})
    for (const bool hnd : {false, true}) {
      INFO("page size " << page << (hnd ? " HND" : " NHD"));
      check_paged<bfloat16>(make_attention(Sigmoid{}, Causal{}), spec_batch, 8, 2, 64, page, hnd, 3);
    }
  check_paged<half>(make_attention(Softplus{}, Full{}), mixed_batch, 4, 4, 64, 16, false, 2);
}
