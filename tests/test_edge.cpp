// Edge cases with defined results: empty problems, fully masked rows, extreme logits,
// NaN / -inf in the bias, Nk < Nq, q_offset past the keys.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

TEST_CASE("empty problems write nothing wrong", "[edge]") {
  for (const Shape& s : {Shape{1, 2, 1, 0, 50, 16, 16, false, {}}, Shape{1, 2, 1, 33, 0, 16, 16, true, {}},
                         Shape{0, 2, 1, 10, 10, 16, 16, false, {}}}) {
    INFO(s.str());
    const auto r = run_both<float>(make_attention(Softmax{}, Full{}), s);
    for (float x : r.out) REQUIRE(x == 0.f);  // Nk = 0: every row is empty
    for (float x : r.lse) REQUIRE(x == neg_inf);
    const auto r2 = run_both<bfloat16>(make_attention(Sigmoid{}, Causal{}), s);
    for (float x : r2.out) REQUIRE(x == 0.f);
    const auto r3 = run_both<float>(make_attention(Linear<>{}, Causal{}), s);
    for (float x : r3.out) REQUIRE(x == 0.f);
  }
}

TEST_CASE("fully masked rows give zeros and lse = -inf, never NaN", "[edge]") {
  // Nq > Nk with bottom-right alignment: the first queries sit at negative positions.
  const Shape s{1, 2, 1, 100, 40, 16, 16, false, {}};
  auto check_empty_rows = [&](const auto& attn) {
    const auto r = run_both<float>(attn, s);
    REQUIRE(all_finite(r.out));
    REQUIRE(r.error() < 1e-5);
    for (index_t h = 0; h < s.Hq; ++h)
      for (index_t i = 0; i < 60; ++i)  // positions < 0 see no key
        for (index_t d = 0; d < s.Dv; ++d) REQUIRE(r.out[std::size_t((h * s.Nq + i) * s.Dv + d)] == 0.f);
    for (std::size_t i = 0; i < r.lse.size(); ++i)
      if (std::isinf(r.lse_ref[i])) REQUIRE(r.lse[i] == neg_inf);
  };
  check_empty_rows(make_attention(Softmax{}, Causal{}));
  check_empty_rows(make_attention(Sigmoid{}, Causal{}));
  check_empty_rows(make_attention(Softplus{}, SlidingWindow{10, 0}));
  check_empty_rows(make_attention(Linear<>{}, Causal{}));
  check_empty_rows(make_attention(Softmax{}, TopK<Causal>{3}));
}

TEST_CASE("q_offset beyond the keys and Nk < Nq", "[edge]") {
  check_variant<float>(make_attention(Softmax{}, Causal{}), Shape{1, 1, 1, 20, 30, 16, 16, false, index_t(100)});
  check_variant<float>(make_attention(Softmax{}, SlidingWindow{5, 0}), Shape{1, 1, 1, 20, 30, 16, 16, false, index_t(100)});
  check_variant<float>(make_attention(Softmax{}, Causal{}), Shape{1, 1, 1, 1, 1, 16, 16, false, {}});
}

TEST_CASE("linear attention under a window that cuts keys only at shifted positions", "[edge]") {
  // The CPU backend runs linear attention in chunked (Full / Causal) form when the window
  // lets every query see every key. That test once assumed positions in [0, Nk): a negative
  // q_offset put queries whose right bound stops before the keys into the Full form (found
  // by the fuzzer, relative error 1), and a large q_offset + Nq queries whose left bound
  // starts after the keys.
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{9, 9, 0}), Shape{2, 6, 2, 35, 9, 16, 3, true, {}});
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{9, 9, 1}), Shape{2, 6, 2, 35, 9, 16, 3, true, {}});
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{20, 40, 0}), Shape{1, 2, 1, 30, 12, 8, 8, false, index_t(-40)});
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{58, 0, 0}), Shape{1, 1, 1, 59, 1, 8, 8, false, index_t(57)});
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{4, unbounded, 0}), Shape{1, 1, 1, 20, 4, 8, 8, false, index_t(0)});
  // Still chunked (and exact) where the window covers every key of every query.
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{30, 0, 2}), Shape{1, 2, 1, 30, 12, 8, 8, false, {}});
  check_variant<float>(make_attention(Linear<>{}, SlidingWindow{34, 43, 0}), Shape{1, 2, 1, 30, 12, 8, 8, true, index_t(-32)});
}

TEST_CASE("large logits stay finite and exact", "[edge]") {
  const Shape s{1, 2, 1, 70, 130, 32, 32, false, {}};
  // Logits of order 1e3..1e4: an fp32 dot product of that size carries an absolute rounding
  // error of ~|s| * 2^-24 * sqrt(D) ~ 1e-3, which moves the weights by as much; the bound below
  // is what fp32 inputs allow, not slack in the kernel.
  const auto large = [&](const auto& attn, float stddev, double tol) {
    const auto r = run_both<float>(attn, s, {}, {stddev, false});
    INFO("seed " << process_seed() << " relative error " << r.error());
    REQUIRE(all_finite(r.out));
    REQUIRE(r.error() < tol);
  };
  large(make_attention(Softmax{}, Full{}), 40.f, 1e-4);
  large(make_attention(Softmax{}, Causal{}), 100.f, 1e-3);
  large(make_attention(Sigmoid{}, Causal{}), 100.f, 1e-3);
  check_variant<bfloat16>(make_attention(Softmax{}, SlidingWindow{30, 30}), s, {}, {100.f, false});
  // logits beyond the float range clamp to FLT_MAX, so rows stay finite
  Options opt;
  opt.scale = 1e30f;
  const auto r = run_both<float>(make_attention(Softmax{}, Causal{}), s, opt);
  REQUIRE(all_finite(r.out));
}

TEST_CASE("-inf and NaN in an additive bias drop the key", "[edge]") {
  const Shape s{1, 1, 1, 64, 64, 16, 16, false, {}};
  std::vector<float> bias(64 * 64, 0.f);
  for (int i = 0; i < 64; ++i) {
    bias[i * 64 + (i * 5) % 64] = neg_inf;
    bias[i * 64 + (i * 11 + 3) % 64] = std::nanf("");
  }
  for (int j = 0; j < 64; ++j) bias[7 * 64 + j] = std::nanf("");  // row 7: every key dropped
  const AdditiveBias ab{bias.data(), 0, 0, 64, 1};
  const auto r = run_both<float>(make_attention(Softmax{}, Full{}, ab), s);
  REQUIRE(all_finite(r.out));
  REQUIRE(r.error() < 1e-5);
  for (index_t d = 0; d < 16; ++d) REQUIRE(r.out[std::size_t(7 * 16 + d)] == 0.f);
  REQUIRE(r.lse[7] == neg_inf);
  const auto r2 = run_both<float>(make_attention(Softplus{}, Causal{}, ab), s);
  REQUIRE(all_finite(r2.out));
  REQUIRE(r2.error() < 1e-5);
}

// Cluster routing runs as dense attention inside each cluster (cpu/cluster_gather.hpp); a
// query whose cluster holds no key is a sequence without keys there. 40 clusters and 3 keys
// per head leave most queries so.
TEST_CASE("cluster routing: a query whose cluster holds no key gets o = 0 and lse = -inf", "[edge]") {
  const Shape s{2, 4, 2, 50, 3, 16, 8, false, {}};
  std::vector<float> centroids(std::size_t(40 * s.D));
  fill_integer_centroids(centroids);  // with integer inputs: exact distances
  const ClusterRouting clusters{centroids.data(), 40};
  const auto r = run_both<float>(make_attention(Softmax{}, clusters), s, {}, {1.f, true});
  REQUIRE(all_finite(r.out));
  REQUIRE(r.error() < 1e-5);
  index_t empty = 0;
  for (std::size_t i = 0; i < r.lse.size(); ++i) {
    if (!std::isinf(r.lse_ref[i])) continue;
    ++empty;
    REQUIRE(r.lse[i] == neg_inf);
    for (index_t d = 0; d < s.Dv; ++d) REQUIRE(r.out[i * std::size_t(s.Dv) + std::size_t(d)] == 0.f);
  }
  REQUIRE(empty > 0);
  for (const auto& rs : {run_both<bfloat16>(make_attention(Sigmoid{}, clusters), s, {}, {1.f, true}),
                         run_both<bfloat16>(make_attention(Linear<>{}, clusters), s, {}, {1.f, true})}) {
    REQUIRE(all_finite(rs.out));
    REQUIRE(rs.error() < 1e-2);
  }
}
