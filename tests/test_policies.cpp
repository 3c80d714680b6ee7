// User-defined policies compiled through the public API, and the built-in score modifiers.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
// A document mask: queries see earlier keys of their own segment.
struct SegmentMask {
  const int* segment = nullptr;  // one id per token, non-decreasing
  bool allowed(index_t pos, index_t j) const { return j <= pos && segment[j] == segment[pos]; }
  TileKind classify(const TileRect& r) const {
    if (r.k_lo > r.q_hi - 1) return TileKind::skip;
    // ids are sorted: disjoint id ranges cannot meet
    if (segment[r.k_hi - 1] < segment[r.q_lo] || segment[r.k_lo] > segment[r.q_hi - 1]) return TileKind::skip;
    return TileKind::partial;
  }
};

// A user score function: normalised squared ReLU of the logit.
struct ReluSquared {
  static constexpr const char* name = "relu2";
  static constexpr bool tracks_max = false;
  ReluSquared resolve(const ProblemInfo&) const { return *this; }
  template <class T>
  T weight(T s, T, T) const {
    const T r = math<T>::max(s, T(0));
    return r * r;
  }
  template <class T>
  T finalize_factor(T, T l) const { return l > T(0) ? T(1) / l : T(0); }
};
}  // namespace

TEST_CASE("a user-defined segment mask and score modifier", "[policies]") {
  const Shape s{1, 2, 1, 200, 200, 32, 32, false, {}};
  std::vector<int> seg(200);
  for (int i = 0; i < 200; ++i) seg[i] = i < 37 ? 0 : i < 120 ? 1 : 2;
  const SegmentMask mask{seg.data()};
  check_variant<float>(make_attention(Softmax{}, mask), s);
  // a user modifier: the logit of the token right before the query is doubled
  auto mod = ScoreFn{[](auto v, index_t, index_t, index_t i, index_t j) { return j + 1 == i ? v * 2 : v; }};
  check_variant<float>(make_attention(Softmax{}, mask, mod), s);
  check_variant<bfloat16>(make_attention(Sigmoid{}, mask, mod), s);
}

TEST_CASE("a user-defined score function", "[policies]") {
  for (const auto& s : standard_shapes()) {
    check_variant<float>(make_attention(ReluSquared{}, Causal{}), s);
    check_variant<float>(make_attention(ReluSquared{}, Neighborhood1D{{s.Nk}, {std::min<index_t>(5, s.Nk)}}),
                         Shape{s.B, s.Hq, s.Hkv, s.Nk, s.Nk, s.D, s.Dv, s.bshd, {}});
  }
}

TEST_CASE("built-in score modifiers", "[policies]") {
  const Shape s{2, 4, 2, 70, 90, 32, 16, true, {}};
  std::vector<float> slopes{0.5f, 0.25f, 0.125f, 0.0625f};
  check_variant<float>(make_attention(Softmax{}, Causal{}, Alibi{slopes.data()}), s);
  check_variant<float>(make_attention(Softmax{}, Full{}, SoftCap{5.f}), s, {}, {8.f, false});
  check_variant<float>(make_attention(Softplus{}, Full{}, ScaleBy{0.5f}, SoftCap{3.f}), s);
  // additive bias [B, H, Nq, Nk] broadcast over heads, with -inf entries that act as a mask
  std::vector<float> bias(std::size_t(s.B * s.Nq * s.Nk));
  std::normal_distribution<float> n;
  for (std::size_t e = 0; e < bias.size(); ++e) bias[e] = e % 7 == 0 ? neg_inf : n(rng());
  const AdditiveBias ab{bias.data(), s.Nq * s.Nk, 0, s.Nk, 1};
  check_variant<float>(make_attention(Softmax{}, SlidingWindow{40, 10}, ab), s);
  check_variant<float>(make_attention(Sigmoid{}, Full{}, ab), s);
  check_variant<half>(make_attention(Softmax{}, Causal{}, ab, Alibi{slopes.data()}), s);
}
