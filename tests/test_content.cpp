// Content-dependent masks select the same keys on the CPU backend as in the fp64 reference.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
template <class Variant>
void check_selection(const Variant& attn, const Shape& s, Inputs in) {
  INFO("seed " << process_seed() << " " << s.str());
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv), o(s, s.Hq, s.Nq, s.Dv);
  if (in.integers) fill_integers(q, -2, 2), fill_integers(k, -2, 2);
  else fill_normal(q), fill_normal(k);
  fill_normal(v);
  Options opt;
  opt.q_offset = s.q_offset;
  if (in.integers) opt.scale = 0.25f;  // exact logits: ties break identically (see support.hpp)
  auto plan = cpu::make_plan(attn, q.cview(), k.cview(), v.cview(), o.view, opt);
  typename decltype(plan)::Worker w;
  index_t kept = 0;
  for (index_t b = 0; b < s.B; ++b)
    for (index_t h = 0; h < s.Hq; ++h) {
      const std::vector<std::uint8_t> mine = plan.selection(b, h, w);
      const auto ref = reference::selection<double>(attn, q.cview(), k.cview(), v.cview(), o.view, opt, b, h);
      for (index_t i = 0; i < s.Nq; ++i)
        for (index_t j = 0; j < s.Nk; ++j) {
          INFO("b " << b << " h " << h << " query " << i << " key " << j);
          REQUIRE(mine[std::size_t(i * s.Nk + j)] == ref(i, j));
          kept += ref(i, j);
        }
    }
  REQUIRE(kept > 0);
  check_variant<float>(attn, s, opt, in);
}
}  // namespace

TEST_CASE("top-k keeps the k largest logits with ties to the lower index", "[content]") {
  const Shape s{1, 2, 1, 100, 160, 24, 24, false, {}};
  check_selection(make_attention(Softmax{}, TopK<Causal>{9}), s, {1.f, true});
  check_selection(make_attention(Softmax{}, TopK<SlidingWindow>{5, {30, 2}}), s, {1.f, true});
  check_selection(make_attention(Sigmoid{}, TopK<Full>{200}), s, {1.f, true});  // k above the count: all kept
}

TEST_CASE("MoBA with blocks of whole key tiles (row intervals per tile) matches the reference", "[content]") {
  for (const Shape& s : {Shape{1, 4, 2, 300, 300, 32, 16, false, {}}, Shape{2, 2, 1, 130, 333, 24, 24, true, {}}}) {
    check_variant<float>(make_attention(Softmax{}, MoBA{64, 3}), s);
    check_variant<float>(make_attention(Softmax{}, MoBA{128, 2}), s);
    check_variant<float>(make_attention(Sigmoid{}, MoBA{192, 2}), s);
  }
}

// MoBA prefill from key 0 runs as gathered (query, key block) pairs plus each query block's
// own causal block, merged per row (cpu/moba_gather.hpp): GQA, both layouts, 16-bit storage,
// blocks that leave a short last block, top_k = 1 (own blocks only), every score function
// (sigmoid's bias resolved against the whole call), and queries past the keys' end.
TEST_CASE("MoBA prefill through gathered pairs matches the reference", "[content]") {
  const Shape a{1, 4, 2, 300, 300, 32, 16, false, {}}, b{2, 2, 1, 257, 257, 24, 24, true, {}};
  check_variant<float>(make_attention(Softmax{}, MoBA{40, 3}), a);
  check_variant<bfloat16>(make_attention(Softmax{}, MoBA{32, 4}), b);
  check_variant<float>(make_attention(Sigmoid{}, MoBA{50, 2}), b);
  check_variant<float>(make_attention(Linear<>{}, MoBA{64, 2}), a);
  check_variant<float>(make_attention(Softplus{}, MoBA{32, 1}), a);
  check_variant<float>(make_attention(Softmax{}, MoBA{32, 3}), Shape{1, 2, 1, 200, 150, 32, 32, false, 0});
}

// Key blocks of whole tiles: block top-k, or a BSR layout, over a band is then a band or
// nothing per row inside a tile (And<block layout, band>::block_span), sinks included.
static_assert(BlockSpanMask<And<BlockMaskBSR, Causal>> && BlockSpanMask<And<SlidingWindow, BlockMaskBSR>>,
              "a BSR layout over a band takes the span path");
TEST_CASE("block top-k and BSR layouts with key blocks of whole tiles match the reference", "[content]") {
  for (const Shape& s : {Shape{1, 4, 2, 300, 300, 32, 16, false, {}}, Shape{2, 2, 1, 130, 333, 24, 24, true, {}}}) {
    check_variant<float>(make_attention(Softmax{}, TopKBlocks<Causal>{3, 64, 128}), s);
    check_variant<float>(make_attention(Sigmoid{}, TopKBlocks<SlidingWindow>{2, 32, 128, {150, 0, 4}}), s);
    const BsrLayout bsr(s, 64, 128, 0.5);
    check_variant<float>(make_attention(Softmax{}, bsr.mask() & Causal{}), s);
    check_variant<float>(make_attention(Softplus{}, SlidingWindow{150, 0, 4} & bsr.mask()), s);
  }
}

TEST_CASE("block top-k, MoBA and cluster routing select like the reference", "[content]") {
  const Shape s{2, 2, 1, 150, 150, 32, 16, true, {}};
  check_selection(make_attention(Softmax{}, TopKBlocks<Causal>{3, 32, 16}), s, {});
  check_selection(make_attention(Softmax{}, MoBA{16, 3}), s, {});
  check_selection(make_attention(Softplus{}, MoBA{25, 1}), s, {});
  std::vector<float> centroids(5 * 32);
  fill_integer_centroids(centroids);  // with integer inputs: exact distances
  check_selection(make_attention(Softmax{}, ClusterRouting{centroids.data(), 5}), s, {1.f, true});
  check_selection(make_attention(Softmax{}, ClusterRouting{centroids.data(), 5} & Causal{}), s, {1.f, true});
}
