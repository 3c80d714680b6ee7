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

TEST_CASE("decode-shaped calls validate like the tile loop", "[validation][decode]") {
  const Shape s{1, 8, 2, 1, 100, 16, 16, false, {}};
  const auto softmax = make_attention(Softmax{}, Causal{});
  REQUIRE(cpu::takes_decode<decltype(softmax)>(s.Nq, s.Hq / s.Hkv));
  REQUIRE(rejected(softmax, s, Shape{1, 8, 3, 1, 100, 16, 16, false, {}}) == "k.shape");
  REQUIRE(rejected(softmax, s, Shape{2, 8, 2, 1, 100, 16, 16, false, {}}) == "k.shape");
  const Shape three{1, 4, 1, 3, 100, 16, 16, false, {}};  // 12 rows: aliased query rows overlap
  REQUIRE(rejected(softmax, three, three, {}, true) == "o.stride");
  Options bad_keys;
  bad_keys.keys = {10, 160};
  REQUIRE(rejected(softmax, s, s, bad_keys) == "keys");
  std::vector<float> lse(8);
  Options lse_sigmoid;
  lse_sigmoid.lse = rows_bhs(lse.data(), 1, 8, 1);
  REQUIRE(rejected(make_attention(Sigmoid{}, Causal{}), s, s, lse_sigmoid) == "lse");
  REQUIRE(rejected(make_attention(Softmax{}, SlidingWindow{-1, 0}), s, s) == "mask.left");
}

namespace {
// A small valid ragged / paged setup that each check breaks in one place.
struct BatchCall {
  index_t Hq = 4, Hkv = 2, D = 8, page = 4, pages = 6;
  std::vector<std::int32_t> qoff{0, 1, 3}, koff{0, 5, 12}, table{0, 1, -1, 2, 3, 4}, lens{5, 7};
  std::vector<float> q = std::vector<float>(4 * 3 * 8), k = std::vector<float>(2 * 12 * 8), o = q, lse = std::vector<float>(12);
  std::vector<float> kpool = std::vector<float>(6 * 4 * 2 * 8), vpool = kpool;
  index_t table_stride = 3, tq = 3, tk = 12;  // rows of the packed views

  std::string ragged(Options opt = {}) {
    return named([&] {
      cpu::run_ragged(make_attention(Softmax{}, Causal{}), bhsd<const float>(q.data(), 1, Hq, tq, D),
                      bhsd<const float>(k.data(), 1, Hkv, tk, D), bhsd<const float>(k.data(), 1, Hkv, tk, D),
                      bhsd(o.data(), 1, Hq, tq, D), RaggedRows{qoff.data(), index_t(qoff.size()) - 1, 0},
                      RaggedRows{koff.data(), index_t(koff.size()) - 1, 0}, opt);
    });
  }
  std::string paged(index_t dim = 8, index_t heads = 2) {
    return named([&] {
      PagedKV<const float> kv{pool_nhd<const float>(kpool.data(), page, Hkv, D), pool_nhd<const float>(vpool.data(), page, Hkv, D),
                              table.data(), lens.data(), index_t(lens.size()), heads, dim, D, page, pages, table_stride, 0};
      cpu::run_paged(make_attention(Softmax{}, Causal{}), bhsd<const float>(q.data(), 1, Hq, tq, D),
                     RaggedRows{qoff.data(), index_t(qoff.size()) - 1, 0}, kv, bhsd(o.data(), 1, Hq, tq, D));
    });
  }
  template <class F>
  static std::string named(F&& f) {
    try {
      f();
    } catch (const attnkit::invalid_argument& e) {
      return e.argument();
    }
    return "(accepted)";
  }
};
}  // namespace

TEST_CASE("ragged offsets and paged caches are validated, naming the argument", "[validation][ragged][paged]") {
  REQUIRE(BatchCall{}.ragged() == "(accepted)");
  REQUIRE(BatchCall{}.paged() == "(accepted)");
  { BatchCall c; c.qoff = {1, 1, 3}; REQUIRE(c.ragged() == "q_rows.offsets"); }       // offsets[0] != 0
  { BatchCall c; c.koff = {0, 7, 5, 12}; c.qoff = {0, 1, 2, 3}; REQUIRE(c.ragged() == "k_rows.offsets"); }  // decreasing
  { BatchCall c; c.koff = {0, 5, 11}; REQUIRE(c.ragged() == "k_rows.offsets"); }      // last != total rows
  { BatchCall c; c.koff = {0, 12}; REQUIRE(c.ragged() == "k_rows.batch"); }           // batch sizes differ
  {
    BatchCall c;
    Options keys;
    keys.keys = {0, 4};
    REQUIRE(c.ragged(keys) == "keys");
  }
  { BatchCall c; c.table[1] = 6; REQUIRE(c.paged() == "kv.block_table"); }            // page id >= pages
  { BatchCall c; c.table[3] = -1; REQUIRE(c.paged() == "kv.block_table"); }           // unset entry in use
  { BatchCall c; c.lens[1] = 13; REQUIRE(c.paged() == "kv.seq_lens"); }               // > table_stride * page
  { BatchCall c; c.lens = {5}; REQUIRE(c.paged() == "kv.batch"); }                    // batch sizes differ
  { BatchCall c; REQUIRE(c.paged(16) == "kv.dim"); }                                  // head dims differ
  { BatchCall c; REQUIRE(c.paged(8, 3) == "kv.heads"); }                              // 4 % 3 != 0
  { BatchCall c; c.qoff = {0, 1, 2}; REQUIRE(c.paged() == "q_rows.offsets"); }        // last != total rows
  { BatchCall c; c.table[2] = 9; REQUIRE(c.paged() == "(accepted)"); }                // entries past the length are not read
}
