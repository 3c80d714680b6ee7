// The decode kernel (cpu::run with few query rows per kv head) against the fp64 reference:
// every score x the masks decoding uses, GQA and MHA, split keys, and split-KV partial states
// merged with merge_states. Ragged and paged batches: test_inference_batch.cpp.
#include "inference.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {

// ------------------------------------------------------------------ decode through cpu::run

template <class T, class Score>
void check_decode(const Score& score, const Shape& s, int threads) {
  Options opt;
  opt.threads = threads;
  INFO("score " << Score::name);
  REQUIRE(cpu::takes_decode<decltype(make_attention(score, Full{}))>(s.Nq, s.Hq / s.Hkv));
  check_variant<T>(make_attention(score, Full{}), s, opt);
  check_variant<T>(make_attention(score, Causal{}), s, opt);
  check_variant<T>(make_attention(score, SlidingWindow{100, 0, 0}), s, opt);
  check_variant<T>(make_attention(score, SlidingWindow{40, 0, 3}), s, opt);  // window + sinks
}

// A block layout over (query block, key block) for shape s, some blocks off.
template <class T, class Score>
void check_decode_blocks(const Score& score, const Shape& s) {
  const index_t bq = 16, bk = 32, qb = (s.pos0() + s.Nq + bq - 1) / bq, kb = (s.Nk + bk - 1) / bk;
  std::vector<unsigned char> bits(std::size_t(qb * kb));
  for (std::size_t e = 0; e < bits.size(); ++e) bits[e] = (e * 7) % 3 != 0;
  Options opt;
  opt.threads = 3;
  check_variant<T>(make_attention(score, BlockMask{bits.data(), qb, kb, bq, bk}), s, opt);
  check_variant<T>(make_attention(score, Causal{} & SlidingWindow{200, 0, 0}), s, opt);
}

}  // namespace

TEST_CASE("decode: every score x decode mask, GQA and MHA, Nq 1 and 3, odd KV lengths", "[inference][decode]") {
  for (const index_t nk : {index_t(1), index_t(63), index_t(1003)})
    for (const Shape& s : {Shape{2, 8, 2, 1, nk, 64, 64, false, {}},   // GQA group 4, one query
                           Shape{1, 8, 2, 3, nk, 40, 24, true, {}},    // group 4 x 3 queries = 12 rows, odd dims
                           Shape{1, 4, 4, 1, nk, 128, 128, true, {}}}) // MHA
      for (const int threads : {1, 3}) {  // 3 threads: the key range splits and merges
        INFO(s.str() << " threads " << threads);
        for_each_score([&](const auto& score) { check_decode<float>(score, s, threads); });
      }
}

TEST_CASE("decode: block masks and mask combinators", "[inference][decode]") {
  for (const Shape& s : {Shape{1, 8, 2, 1, 1003, 64, 64, false, {}}, Shape{2, 8, 2, 2, 300, 32, 32, true, {}}}) {
    INFO(s.str());
    check_decode_blocks<float>(Softmax{}, s);
    check_decode_blocks<float>(Softplus{1.f, LengthScale::log_n}, s);
  }
}

TEST_CASE("decode: score modifiers, long caches split over many items, empty caches", "[inference][decode]") {
  std::vector<float> slopes{0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f, 0.07f, 0.08f};
  Options opt;
  opt.threads = 4;
  const Shape longs{1, 8, 1, 2, 5000, 64, 64, false, {}};  // 16 rows, one kv head: 10 splits
  check_variant<float>(make_attention(Softmax{}, Causal{}, Alibi{slopes.data()}, SoftCap{20.f}), longs, opt);
  check_variant<float>(make_attention(Sigmoid{}, SlidingWindow{1000, 0, 16}), longs, opt);
  // 0 keys: o = 0, lse = -inf; 0 queries: nothing written.
  for (const Shape& s : {Shape{2, 4, 2, 1, 0, 32, 32, false, {}}, Shape{1, 4, 1, 0, 100, 32, 32, false, {}}}) {
    const auto r = run_both<float>(make_attention(Softmax{}, Causal{}), s, opt);
    for (float x : r.out) REQUIRE(x == 0.f);
    for (float x : r.lse) REQUIRE(x == neg_inf);
  }
}

TEST_CASE("decode: split-KV partial states merge to the one-pass result", "[inference][monoid]") {
  const Shape s{1, 8, 2, 2, 900, 64, 48, false, {}};
  Tensor<float> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv), o(s, s.Hq, s.Nq, s.Dv),
      merged(s, s.Hq, s.Nq, s.Dv);
  fill_normal(q), fill_normal(k), fill_normal(v);
  const index_t rows = s.Hq * s.Nq;
  struct State {
    std::vector<float> o, m, l;
    PartialState view(const Shape& s) {
      return {bhsd(o.data(), 1, s.Hq, s.Nq, s.Dv), rows_bhs(m.data(), 1, s.Hq, s.Nq), rows_bhs(l.data(), 1, s.Hq, s.Nq)};
    }
  };
  for_each_score([&](const auto& score) {
    INFO("score " << std::decay_t<decltype(score)>::name);
    const auto attn = make_attention(score, SlidingWindow{600, 0, 2});
    std::vector<float> lse(static_cast<std::size_t>(rows)), lse_merged(static_cast<std::size_t>(rows));
    Options all;
    if constexpr (score_has_lse<std::decay_t<decltype(score)>>()) all.lse = rows_bhs(lse.data(), 1, s.Hq, s.Nq);
    cpu::run(attn, q.cview(), k.cview(), v.cview(), o.view, all);
    State a{std::vector<float>(std::size_t(rows * s.Dv)), std::vector<float>(std::size_t(rows)), std::vector<float>(std::size_t(rows))};
    State b = a, ra = a;
    Options first, second;
    first.keys = {0, 333};
    second.keys = {333, s.Nk};
    first.threads = second.threads = 2;
    cpu::run_partial(attn, q.cview(), k.cview(), v.cview(), a.view(s), first);
    cpu::run_partial(attn, q.cview(), k.cview(), v.cview(), b.view(s), second);
    reference::partial<double>(attn, q.cview(), k.cview(), v.cview(), ra.view(s), first);
    REQUIRE(rel_error(a.o, ra.o) < 1e-5);
    REQUIRE(rel_error(a.l, ra.l) < 1e-5);
    merge_states(score, a.view(s), b.view(s));
    finalize_state(score, a.view(s), merged.view, all.lse ? rows_bhs(lse_merged.data(), 1, s.Hq, s.Nq) : RowView{});
    REQUIRE(rel_error(merged.floats(), o.floats()) < 1e-6);
    if (all.lse)
      for (index_t r = 0; r < rows; ++r) REQUIRE(std::abs(lse_merged[r] - lse[r]) < 1e-4f);
  });
}
