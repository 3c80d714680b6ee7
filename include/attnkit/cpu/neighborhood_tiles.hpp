#pragma once
// Query patches for neighborhood masks. Linear 64-query tiles over a 2-D or 3-D grid would
// drag in whole rows of keys (a 13x13 window on a 64-wide grid touches 13 full rows), so
// neighborhood attention tiles queries as compact patches of one dilation sub-grid (64 x 1,
// 8 x 8 or 4 x 4 x 4) and gathers exactly the keys their windows cover.
#include <array>
#include <vector>

#include "../mask/neighborhood.hpp"

namespace attnkit::cpu {

template <int Rank>
struct NeighborhoodTiling {
  struct Segment {
    index_t group, start, len;  // sub-grid coordinates [start, start + len) of residue `group`
  };
  std::array<std::vector<Segment>, Rank> segments;
  std::array<index_t, Rank> stride{};  // linear stride of each axis

  static constexpr index_t patch(int) { return Rank == 1 ? 64 : Rank == 2 ? 8 : 4; }

  explicit NeighborhoodTiling(const Neighborhood<Rank>& m) {
    index_t s = 1;
    for (int a = Rank - 1; a >= 0; --a) stride[a] = s, s *= m.grid[a];
    for (int a = 0; a < Rank; ++a) {
      const index_t d = m.dilation[a];
      for (index_t g = 0; g < d; ++g) {
        const index_t Lg = (m.grid[a] - g + d - 1) / d;
        for (index_t t = 0; t < Lg; t += patch(a)) segments[a].push_back({g, t, std::min(patch(a), Lg - t)});
      }
    }
  }
  index_t tiles() const {
    index_t n = 1;
    for (int a = 0; a < Rank; ++a) n *= index_t(segments[a].size());
    return n;
  }
  // Segments of tile t, axis 0 slowest.
  std::array<Segment, Rank> tile(index_t t) const {
    std::array<Segment, Rank> out;
    for (int a = Rank - 1; a >= 0; --a) {
      const index_t n = index_t(segments[a].size());
      out[a] = segments[a][t % n];
      t /= n;
    }
    return out;
  }
};

template <class M>
inline constexpr int neighborhood_rank = 0;
template <int R>
inline constexpr int neighborhood_rank<Neighborhood<R>> = R;

}  // namespace attnkit::cpu
