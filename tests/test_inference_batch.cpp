// Inference-engine batches against the fp64 reference: ragged batches (run_ragged) and paged
// caches (run_paged), fp32 storage (16-bit caches: test_inference_dtypes.cpp). The helpers
// live in inference.hpp.
#include "inference.hpp"

using namespace attnkit;
using namespace attnkit::test;

// ------------------------------------------------------------------ ragged and paged batches

TEST_CASE("ragged batches: decode, speculative, prefill and mixed, every score", "[inference][ragged]") {
  for_each_score([&](const auto& score) {
    INFO("score " << std::decay_t<decltype(score)>::name);
    check_ragged<float>(make_attention(score, Causal{}), decode_batch, 8, 2, 64, 64, 2);
    check_ragged<float>(make_attention(score, SlidingWindow{50, 0, 4}), spec_batch, 8, 2, 64, 32, 3);
    check_ragged<float>(make_attention(score, Causal{}), prefill_batch, 4, 2, 32, 32, 2);
    check_ragged<float>(make_attention(score, Full{}), mixed_batch, 4, 4, 32, 32, 2);
  });
  // content-dependent masks take the tile loop for every sequence; modifiers see i, j within the sequence
  check_ragged<float>(make_attention(Softmax{}, TopK<Causal>{16}), mixed_batch, 4, 2, 32, 32, 2);
  std::vector<float> slopes{0.1f, 0.2f, 0.3f, 0.4f};
  check_ragged<float>(make_attention(Softmax{}, Causal{}, Alibi{slopes.data()}), mixed_batch, 4, 2, 32, 32, 2);
}

TEST_CASE("paged caches: page sizes 1, 16, 64, NHD and HND pools, shuffled block tables", "[inference][paged]") {
  for (const index_t page : {index_t(1), index_t(16), index_t(64)})
    for (const bool hnd : {false, true}) {
      INFO("page size " << page << (hnd ? " HND" : " NHD"));
      check_paged<float>(make_attention(Softmax{}, Causal{}), decode_batch, 8, 2, 64, page, hnd, 2);
      check_paged<float>(make_attention(Softmax{}, SlidingWindow{64, 0, 2}), mixed_batch, 4, 2, 32, page, hnd, 2);
    }
  for_each_score([&](const auto& score) {
    INFO("score " << std::decay_t<decltype(score)>::name);
    check_paged<float>(make_attention(score, Causal{}), decode_batch, 8, 2, 128, 16, false, 2);
    check_paged<float>(make_attention(score, Causal{}), prefill_batch, 4, 2, 32, 16, true, 2);
  });
}

TEST_CASE("paged caches: content-dependent masks take the tile loop over gathered pages", "[inference][paged]") {
  check_paged<float>(make_attention(Softmax{}, TopK<Causal>{8}), mixed_batch, 4, 2, 32, 16, true, 2);
}
