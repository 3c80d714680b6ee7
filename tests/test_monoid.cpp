// The score-function monoid: splitting the keys in two, computing each half's partial state
// and combining them gives the one-pass result, for every score function.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
// Top-k masks select among all keys and attend over the call's range; they take integer
// q, k and a logit scale of 1/4, so that float and fp64 logits (and selections) agree exactly.
template <class Score, class Mask = SlidingWindow>
void check_split(const Score& score, const Mask& mask = SlidingWindow{90, 10, 2}) {
  const Shape s{1, 4, 2, 70, 150, 32, 40, true, {}};
  INFO("seed " << process_seed() << " score " << Score::name << " mask " << Mask::name);
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv), o(s, s.Hq, s.Nq, s.Dv),
      merged(s, s.Hq, s.Nq, s.Dv);
  constexpr bool exact = is_content_dependent<Mask>();
  if (exact) fill_integers(q, -2, 2), fill_integers(k, -2, 2);
  else fill_normal(q), fill_normal(k);
  fill_normal(v);
  const auto attn = make_attention(score, mask);
  Options all, first, second;
  if (exact) all.scale = first.scale = second.scale = 0.25f;
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o.view, all);

  auto state = [&](std::vector<float>& ob, std::vector<float>& m, std::vector<float>& l) {
    ob.assign(std::size_t(s.B * s.Hq * s.Nq * s.Dv), 0.f);
    m.assign(std::size_t(s.B * s.Hq * s.Nq), 0.f);
    l.assign(m.size(), 0.f);
    return PartialState{bhsd(ob.data(), s.B, s.Hq, s.Nq, s.Dv), rows_bhs(m.data(), s.B, s.Hq, s.Nq),
                        rows_bhs(l.data(), s.B, s.Hq, s.Nq)};
  };
  std::vector<float> o1, m1, l1, o2, m2, l2, r1, rm1, rl1;
  const PartialState a = state(o1, m1, l1), b = state(o2, m2, l2), ra = state(r1, rm1, rl1);
  first.keys = {0, 61};  // not a tile boundary
  second.keys = {61, s.Nk};
  cpu::run_partial(attn, q.cview(), k.cview(), v.cview(), a, first);
  cpu::run_partial(attn, q.cview(), k.cview(), v.cview(), b, second);
  // The reference's partial state of the first half matches the kernel's.
  reference::partial<double>(attn, q.cview(), k.cview(), v.cview(), ra, first);
  REQUIRE(rel_error(o1, r1) < 1e-5);
  REQUIRE(rel_error(l1, rl1) < 1e-5);
  merge_states(score, a, b);
  std::vector<float> lse(std::size_t(s.B * s.Hq * s.Nq));
  finalize_state(score, a, merged.view, score_has_lse<Score>() ? rows_bhs(lse.data(), s.B, s.Hq, s.Nq) : RowView{});
  INFO("split vs one pass: " << rel_error(merged.floats(), o.floats()));
  REQUIRE(rel_error(merged.floats(), o.floats()) < 1e-6);
}
}  // namespace

TEST_CASE("partial states of two key ranges combine to the one-pass output", "[monoid]") {
  check_split(Softmax{});
  check_split(Sigmoid{});
  check_split(Softplus{});
  check_split(Softplus{2.f, LengthScale::log_n});
  check_split(Linear<EluPlusOne>{});
}

TEST_CASE("top-k: partial states of two key ranges combine to the one-pass output", "[monoid][content]") {
  check_split(Softmax{}, TopK<Causal>{20});
  check_split(Sigmoid{}, TopK<Causal>{20});
  check_split(Softplus{2.f, LengthScale::log_n}, TopK<Full>{33});
}

TEST_CASE("combining with an empty partial state is the identity", "[monoid]") {
  float o[2] = {1.f, 2.f}, o2[2] = {0.f, 0.f};
  float m = 0.5f, l = 3.f;
  combine_rows<Softmax>(m, l, o, neg_inf, 0.f, o2, 2);
  REQUIRE((m == 0.5f && l == 3.f && o[0] == 1.f && o[1] == 2.f));
  float me = neg_inf, le = 0.f, oe[2] = {0.f, 0.f};
  combine_rows<Softmax>(me, le, oe, neg_inf, 0.f, o2, 2);
  REQUIRE((me == neg_inf && le == 0.f && oe[0] == 0.f));
}
