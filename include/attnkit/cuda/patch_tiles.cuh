#pragma once
// Neighborhood attention on 2-D and 3-D grids, tiled as patches by the forward kernel.
// Row-major tiles drag whole grid rows of keys into every tile: a 13 x 13 window on a
// 128-wide grid allows 10% of the pairs of each key tile it visits. Here a CTA's queries are
// a compact patch of one dilation sub-grid (16 tokens along the innermost axis, one warp's
// rows, with the warps stacked along the outer axes) and its key tiles are 4 x 16 patches
// gathered row by row from the box that its windows cover (26% of the pairs at 13 x 13).
// A slot's coordinates are shifts of its index, so a partial tile's mask is a few unsigned
// compares per key instead of divisions.
#include <bit>
#include <type_traits>

#include "../core/problem.hpp"
#include "../mask/neighborhood.hpp"

namespace attnkit::cuda::detail {

// Placeholder for masks the kernel tiles row-major.
struct NoPatches {
  static constexpr int rank = 0;
};

template <int Rank>
struct PatchTiling {
  static_assert(Rank >= 2 && Rank <= 3, "patch tiling is for 2-D and 3-D neighborhoods");
  static constexpr int rank = Rank;
  static constexpr int inner_bits = 4;  // 16 tokens along the innermost axis

  Neighborhood<Rank> mask;
  int stride[Rank];        // linear stride of each axis
  int sub_max[Rank];       // longest dilation sub-grid along each axis: ceil(grid / dilation)
  int q_bits[Rank], k_bits[Rank];  // log2 of the query / key patch extent per axis
  int q_low[Rank], k_low[Rank];    // bit position of axis a's offset in a slot index
  int patches[Rank];       // query patches per sub-grid along each axis

  // Patch tiling pays off where windows are narrow against the grid: a window that spans
  // most of the innermost axis makes row-major tiles full, which need no element test.
  static bool worthwhile(const Neighborhood<Rank>& m) {
    const index_t inner = (m.grid[Rank - 1] + m.dilation[Rank - 1] - 1) / m.dilation[Rank - 1];
    return inner >= 16 && 2 * m.kernel[Rank - 1] <= inner;
  }

  PatchTiling() = default;
  // Query patches of BM = 16 << outer_q tokens, key patches of BN = 16 << outer_k.
  PatchTiling(const Neighborhood<Rank>& m, int outer_q, int outer_k) : mask(m) {
    int s = 1;
    for (int a = Rank - 1; a >= 0; --a) {
      stride[a] = s;
      s *= int(m.grid[a]);
      sub_max[a] = int((m.grid[a] + m.dilation[a] - 1) / m.dilation[a]);
    }
    split(outer_q, q_bits, q_low);
    split(outer_k, k_bits, k_low);
    for (int a = 0; a < Rank; ++a) patches[a] = (sub_max[a] + (1 << q_bits[a]) - 1) >> q_bits[a];
  }

  // CTAs: every (sub-grid, patch) combination of every axis.
  index_t query_patches() const {
    index_t n = 1;
    for (int a = 0; a < Rank; ++a) n *= index_t(mask.dilation[a]) * patches[a];
    return n;
  }

 private:
  // 16 along the innermost axis; the outer bits go to the next axis as far as its extent
  // uses them, the rest to the axis before it.
  void split(int outer, int (&bits)[Rank], int (&low)[Rank]) const {
    bits[Rank - 1] = inner_bits;
    for (int a = Rank - 2; a >= 0; --a) {
      const int useful = int(std::bit_width(unsigned(sub_max[a] - 1)));  // ceil(log2(extent))
      bits[a] = a == 0 ? outer : std::min(outer, useful);
      outer -= bits[a];
    }
    int pos = 0;
    for (int a = Rank - 1; a >= 0; --a) low[a] = pos, pos += bits[a];
  }
};

// The patch tiling of a mask, or NoPatches for masks tiled row-major.
template <class M>
struct PatchTilingFor {
  using type = NoPatches;
};
template <>
struct PatchTilingFor<Neighborhood<2>> {
  using type = PatchTiling<2>;
};
template <>
struct PatchTilingFor<Neighborhood<3>> {
  using type = PatchTiling<3>;
};
template <class M>
using patch_tiling_t = typename PatchTilingFor<M>::type;
template <class M>
inline constexpr bool patchable_mask = !std::is_same_v<patch_tiling_t<M>, NoPatches>;

// One CTA's view of a PatchTiling: its query patch, the key box its windows cover, and the
// coordinates of query rows and key slots. Coordinates are in sub-grid units (x = group +
// dilation * sub) and every key of the box lies in the queries' sub-grid.
template <int Rank>
struct PatchCTA {
  int group_base;           // linear index of the sub-grid's origin
  int group[Rank], dilation[Rank];  // the sub-grid: coordinates group + dilation * sub
  int step[Rank];           // dilation * stride: linear step of one sub-grid unit
  int sub_len[Rank];        // this sub-grid's extent
  int q_start[Rank];        // first sub-grid coordinate of the query patch
  int k_lo[Rank];           // key box origin
  int k_tiles[Rank];        // key patches along each axis
  int q_low[Rank], q_mask[Rank], k_low[Rank], k_mask[Rank];

  __device__ PatchCTA(const PatchTiling<Rank>& pt, int patch) {
    group_base = 0;
    for (int a = Rank - 1; a >= 0; --a) {
      const int n = int(pt.mask.dilation[a]) * pt.patches[a];
      const int s = patch % n;
      patch /= n;
      const int d = int(pt.mask.dilation[a]), g = s / pt.patches[a];
      q_start[a] = (s % pt.patches[a]) << pt.q_bits[a];
      sub_len[a] = (int(pt.mask.grid[a]) - g + d - 1) / d;
      group_base += g * pt.stride[a];
      group[a] = g, dilation[a] = d;
      step[a] = d * pt.stride[a];
      q_low[a] = pt.q_low[a], q_mask[a] = (1 << pt.q_bits[a]) - 1;
      k_low[a] = pt.k_low[a], k_mask[a] = (1 << pt.k_bits[a]) - 1;
      // Windows move monotonically with the query: the box runs from the first query's
      // window start to the last one's end.
      const int last = min(q_start[a] + q_mask[a], sub_len[a] - 1);
      const int first_x = g + d * q_start[a], last_x = g + d * last;
      k_lo[a] = int(pt.mask.window(a, first_x).start);
      const int k_hi = q_start[a] < sub_len[a] ? int(pt.mask.window(a, last_x).end) : k_lo[a];
      k_tiles[a] = (k_hi - k_lo[a] + k_mask[a]) >> pt.k_bits[a];
    }
  }
  __device__ bool empty() const {
    for (int a = 0; a < Rank; ++a)
      if (q_start[a] >= sub_len[a]) return true;
    return false;
  }
  __device__ int key_tiles() const {
    int n = 1;
    for (int a = 0; a < Rank; ++a) n *= k_tiles[a];
    return n;
  }
  // Window of query sub-grid coordinate `sub` along axis a: [start, end) in sub-grid units.
  __device__ typename Neighborhood<Rank>::AxisWindow window(const Neighborhood<Rank>& m, int a, int sub) const {
    return m.window(a, group[a] + dilation[a] * sub);
  }
  // Query row r of the patch: its sub-grid coordinates and token (-1: outside the grid).
  __device__ int query_token(int r, int (&sub)[Rank]) const {
    int tok = group_base;
    bool ok = true;
    for (int a = 0; a < Rank; ++a) {
      sub[a] = q_start[a] + ((r >> q_low[a]) & q_mask[a]);
      ok = ok && sub[a] < sub_len[a];
      tok += sub[a] * step[a];
    }
    return ok ? tok : -1;
  }
  // Origin of key tile kt (innermost axis fastest).
  __device__ void key_origin(int kt, int (&origin)[Rank]) const {
    for (int a = Rank - 1; a >= 0; --a) {
      origin[a] = k_lo[a] + (kt % k_tiles[a]) * (k_mask[a] + 1);
      kt /= k_tiles[a];
    }
  }
  // Key slot c of the tile at `origin`: its token, -1 outside the sub-grid.
  __device__ int key_token(const int (&origin)[Rank], int c) const {
    int tok = group_base;
    bool ok = true;
    for (int a = 0; a < Rank; ++a) {
      const int sub = origin[a] + ((c >> k_low[a]) & k_mask[a]);
      ok = ok && unsigned(sub) < unsigned(sub_len[a]);
      tok += sub * step[a];
    }
    return ok ? tok : -1;
  }
};

}  // namespace attnkit::cuda::detail
