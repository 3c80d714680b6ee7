// Tile classification: skipped tiles are never visited, full tiles are really full, and the
// visit count equals the number of tiles that hold an allowed pair.
#include "support.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
// Brute force over 64 x 64 tiles of (query position, key index).
template <class M>
index_t tiles_with_allowed_pairs(const M& mask, const Shape& s) {
  const index_t t = cpu::tile_q;
  index_t n = 0;
  for (index_t i0 = 0; i0 < s.Nq; i0 += t)
    for (index_t j0 = 0; j0 < s.Nk; j0 += cpu::tile_k) {
      bool any = false;
      for (index_t i = i0; i < std::min(s.Nq, i0 + t) && !any; ++i)
        for (index_t j = j0; j < std::min(s.Nk, j0 + cpu::tile_k) && !any; ++j) any = mask.allowed(s.pos0() + i, j);
      n += any;
    }
  return n;
}

template <class M>
void check_visits(const M& mask, const Shape& s) {
  // every tile class against the element test
  for (index_t i0 = 0; i0 < s.Nq; i0 += cpu::tile_q)
    for (index_t j0 = 0; j0 < s.Nk; j0 += cpu::tile_k) {
      const index_t i1 = std::min(s.Nq, i0 + cpu::tile_q), j1 = std::min(s.Nk, j0 + cpu::tile_k);
      const TileKind kind = mask.classify({s.pos0() + i0, s.pos0() + i1, j0, j1});
      index_t allowed = 0;
      for (index_t i = i0; i < i1; ++i)
        for (index_t j = j0; j < j1; ++j) allowed += mask.allowed(s.pos0() + i, j);
      INFO("tile " << i0 << "," << j0);
      if (kind == TileKind::skip) REQUIRE(allowed == 0);
      if (kind == TileKind::full) REQUIRE(allowed == (i1 - i0) * (j1 - j0));
    }
  Tensor<float> q(s, 1, s.Nq, 16), k(s, 1, s.Nk, 16), v(s, 1, s.Nk, 16), o(s, 1, s.Nq, 16);
  fill_normal(q), fill_normal(k), fill_normal(v);
  const cpu::TileCounters c = cpu::run(make_attention(Softmax{}, mask), q.cview(), k.cview(), v.cview(), o.view);
  REQUIRE(c.visited() == tiles_with_allowed_pairs(mask, s));
}
}  // namespace

TEST_CASE("sliding window and block masks visit exactly the tiles that hold allowed pairs", "[tiles]") {
  const Shape s{1, 1, 1, 1000, 1000, 16, 16, false, {}};
  check_visits(SlidingWindow{100, 0}, s);
  check_visits(SlidingWindow{64, 64, 0}, s);
  check_visits(Causal{}, s);
  std::vector<unsigned char> bits(16 * 16);
  for (std::size_t i = 0; i < bits.size(); ++i) bits[i] = (i * 7919) % 10 == 0;
  check_visits(BlockMask{bits.data(), 16, 16, 64, 64}, s);
  check_visits(BlockMask{bits.data(), 16, 16, 64, 64} & Causal{}, s);
}

TEST_CASE("neighborhood classification is exact for dilation 1", "[tiles]") {
  const Shape s{1, 1, 1, 48 * 40, 48 * 40, 16, 16, false, {}};
  const Neighborhood2D nb{{48, 40}, {7, 9}};
  for (index_t i0 = 0; i0 < s.Nq; i0 += 64)
    for (index_t j0 = 0; j0 < s.Nk; j0 += 64) {
      index_t allowed = 0;
      for (index_t i = i0; i < i0 + 64; ++i)
        for (index_t j = j0; j < j0 + 64; ++j) allowed += nb.allowed(i, j);
      const TileKind kind = nb.classify({i0, i0 + 64, j0, j0 + 64});
      INFO("tile " << i0 << "," << j0 << " allowed " << allowed);
      REQUIRE((kind == TileKind::skip) == (allowed == 0));
      REQUIRE((kind == TileKind::full) == (allowed == 64 * 64));
    }
}

TEST_CASE("neighborhood attention gathers only the keys its query patches need", "[tiles]") {
  // 64 x 64 grid, 13 x 13 window: 8 x 8 query patches gather 20 x 20 keys, 7 tiles of 64.
  const index_t G = 64, n = G * G;
  const Shape s{1, 1, 1, n, n, 16, 16, false, {}};
  Tensor<float> q(s, 1, n, 16), k(s, 1, n, 16), v(s, 1, n, 16), o(s, 1, n, 16);
  fill_normal(q), fill_normal(k), fill_normal(v);
  const Neighborhood2D nb{{G, G}, {13, 13}};
  const cpu::TileCounters c = cpu::run(make_attention(Softmax{}, nb), q.cview(), k.cview(), v.cview(), o.view);
  index_t allowed = 0;
  for (index_t i = 0; i < n; i += 97)  // sampled rows: each sees exactly 169 keys
    for (index_t j = 0; j < n; ++j) allowed += nb.allowed(i, j);
  REQUIRE(allowed == ((n + 96) / 97) * 169);
  const index_t patches = (G / 8) * (G / 8);
  REQUIRE(c.visited() <= patches * 7);
  // versus 64-query rows of the grid, which would need 13 full rows of keys each (832 tiles)
  REQUIRE(c.visited() * 10 < tiles_with_allowed_pairs(nb, s) * 6);
}

TEST_CASE("row spans agree with allowed() for causal and sliding windows", "[tiles]") {
  // RowSpan: allowed(pos, j) iff j < hi && (j >= lo || j < sinks); the GPU kernel relies on it.
  const auto agrees = [](const auto& mask) {
    for (index_t pos = -20; pos < 60; ++pos) {
      const RowSpan sp = mask.row_span(pos);
      for (index_t j = 0; j < 80; ++j) {
        INFO("pos " << pos << " key " << j);
        REQUIRE(mask.allowed(pos, j) == (j < sp.hi && (j >= sp.lo || j < sp.sinks)));
      }
    }
  };
  agrees(Causal{});
  agrees(SlidingWindow{});
  agrees(SlidingWindow{5, 0});
  agrees(SlidingWindow{7, 3});
  agrees(SlidingWindow{0, 0, 4});
  agrees(SlidingWindow{9, 2, 12});
  agrees(SlidingWindow{unbounded, unbounded, 3});
}
