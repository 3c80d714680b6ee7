// Bad calls throw attnkit::invalid_argument naming the argument, before any work.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
template <class Variant>
std::string rejected(const Variant& attn, const Shape& s, const Shape& ks, Options opt = {}, bool alias_output = false) {
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(ks, ks.Hkv, ks.Nk, ks.D), v(ks, ks.Hkv, ks.Nk, ks.Dv), o(s, s.Hq, s.Nq, s.Dv);
  fill_normal(q), fill_normal(k), fill_normal(v);
  auto ov = o.view;
  if (alias_output) ov.stride[2] = 0;
  try {
    cpu::run(attn, q.cview(), k.cview(), v.cview(), ov, opt);
  } catch (const attnkit::invalid_argument& e) {
    return e.argument();
  }
  return "(accepted)";
}
}  // namespace

TEST_CASE("invalid arguments are named", "[validation]") {
  const Shape s{1, 4, 2, 50, 50, 16, 16, false, {}};
  const auto softmax = make_attention(Softmax{}, Causal{});
  REQUIRE(rejected(softmax, s, Shape{1, 4, 3, 50, 50, 16, 16, false, {}}) == "k.shape");  // 4 % 3 != 0
  REQUIRE(rejected(softmax, s, Shape{1, 4, 2, 50, 50, 8, 16, false, {}}) == "k.shape");   // head dim
  REQUIRE(rejected(softmax, s, Shape{2, 4, 2, 50, 50, 16, 16, false, {}}) == "k.shape");  // batch
  REQUIRE(rejected(softmax, s, s, {}, true) == "o.stride");                              // aliasing rows
  Options bad_keys;
  bad_keys.keys = {10, 60};
  REQUIRE(rejected(softmax, s, s, bad_keys) == "keys");
  std::vector<float> lse(200);
  Options lse_sigmoid;
  lse_sigmoid.lse = rows_bhs(lse.data(), 1, 4, 50);
  REQUIRE(rejected(make_attention(Sigmoid{}, Causal{}), s, s, lse_sigmoid) == "lse");
  REQUIRE(rejected(make_attention(Softmax{}, TopK<Causal>{0}), s, s) == "mask.k");
  REQUIRE(rejected(make_attention(Softmax{}, SlidingWindow{-1, 0}), s, s) == "mask.left");
  std::vector<unsigned char> bits(4);
  REQUIRE(rejected(make_attention(Softmax{}, BlockMask{bits.data(), 2, 2, 64, 64}), s, s) == "mask.layout");
  REQUIRE(rejected(make_attention(Softmax{}, Neighborhood2D{{5, 10}, {7, 3}}), s, s) == "mask.kernel");
  REQUIRE(rejected(make_attention(Softmax{}, Neighborhood2D{{5, 9}, {3, 3}}), s, s) == "mask.grid");
  REQUIRE(rejected(make_attention(Softmax{}, ClusterRouting{nullptr, 4}), s, s) == "mask.centroids");
  REQUIRE(rejected(make_attention(Softplus{0.5f}, Causal{}), s, s) == "score.power");
  REQUIRE(rejected(make_attention(Softmax{}, Causal{}, Alibi{nullptr}), s, s) == "mods.alibi.slopes");
}

TEST_CASE("null and misaligned pointers are rejected", "[validation]") {
  std::vector<float> buf(1000);
  auto q = bhsd(static_cast<const float*>(nullptr), 1, 1, 4, 8);
  auto k = bhsd(static_cast<const float*>(buf.data()), 1, 1, 4, 8);
  auto o = bhsd(buf.data() + 500, 1, 1, 4, 8);
  const auto attn = make_attention(Softmax{}, Full{});
  REQUIRE_THROWS_AS(cpu::run(attn, q, k, k, o), attnkit::invalid_argument);
  std::vector<std::uint16_t> raw(100);
  auto misaligned = bhsd(reinterpret_cast<const float*>(reinterpret_cast<const char*>(raw.data()) + 2), 1, 1, 4, 8);
  REQUIRE_THROWS_AS(cpu::run(attn, misaligned, k, k, o), attnkit::invalid_argument);
}
