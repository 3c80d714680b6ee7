// The score-function monoid: splitting the keys in two, computing each half's partial state
// and combining them gives the one-pass result, for every score function.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
template <class Score>
void check_split(const Score& score) {
  const Shape s{1, 4, 2, 70, 150, 32, 40, true, {}};
  INFO("seed " << process_seed() << " score " << Score::name);
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv), o(s, s.Hq, s.Nq, s.Dv),
      merged(s, s.Hq, s.Nq, s.Dv);
  fill_normal(q), fill_normal(k), fill_normal(v);
  const auto attn = make_attention(score, SlidingWindow{90, 10, 2});
  cpu::run(attn, q.cview(), k.cview(), v.cview(), o.view);

  auto state = [&](std::vector<float>& ob, std::vector<float>& m, std::vector<float>& l) {
    ob.assign(std::size_t(s.B * s.Hq * s.Nq * s.Dv), 0.f);
    m.assign(std::size_t(s.B * s.Hq * s.Nq), 0.f);
    l.assign(m.size(), 0.f);
    return PartialState{bhsd(ob.data(), s.B, s.Hq, s.Nq, s.Dv), rows_bhs(m.data(), s.B, s.Hq, s.Nq),
                        rows_bhs(l.data(), s.B, s.Hq, s.Nq)};
  };
  std::vector<float> o1, m1, l1, o2, m2, l2, r1, rm1, rl1;
  const PartialState a = state(o1, m1, l1), b = state(o2, m2, l2), ra = state(r1, rm1, rl1);
  Options first, second;
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

TEST_CASE("combining with an empty partial state is the identity", "[monoid]") {
  float o[2] = {1.f, 2.f}, o2[2] = {0.f, 0.f};
  float m = 0.5f, l = 3.f;
  combine_rows<Softmax>(m, l, o, neg_inf, 0.f, o2, 2);
  REQUIRE((m == 0.5f && l == 3.f && o[0] == 1.f && o[1] == 2.f));
  float me = neg_inf, le = 0.f, oe[2] = {0.f, 0.f};
  combine_rows<Softmax>(me, le, oe, neg_inf, 0.f, o2, 2);
  REQUIRE((me == neg_inf && le == 0.f && oe[0] == 0.f));
}
