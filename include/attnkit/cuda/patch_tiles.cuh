#pragma once
// Neighborhood attention on 2-D and 3-D grids, tiled as patches by the forward kernel.
// Row-major tiles drag whole grid rows of keys into every tile: a 13 x 13 window on a
// 128-wide grid allows 10% of the pairs of each key tile it visits. Here a CTA's queries are
// a compact patch of one dilation sub-grid (16 tokens along the innermost axis, one warp's
// rows, with the warps stacked along the outer axes) and its key tiles are patches of the
// box that its windows cover, 16 or 32 tokens wide along the innermost axis, whichever
// covers an interior box with fewer tiles (13 x 13 under 8 x 16 queries: a 20 x 28 box in
// five 4 x 32 tiles, 26% of the pairs allowed). A slot's coordinates are shifts of its
// index, so a partial tile's mask is interval arithmetic on bit masks, not a test per key.
#include <algorithm>
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
  static constexpr int q_inner_bits = 4;  // a warp's 16 query rows along the innermost axis

  // Key patches of 2^total slots: 2^inner (16 or 32) along the innermost axis.
  struct KeyPatch {
    int total, inner;
    int bits[Rank];  // log2 of the extent per axis
    int low[Rank];   // bit position of axis a's offset in a slot index
  };

  Neighborhood<Rank> mask;
  int stride[Rank];        // linear stride of each axis
  int sub_max[Rank];       // longest dilation sub-grid along each axis: ceil(grid / dilation)
  int q_bits[Rank], q_low[Rank];  // query patches: as KeyPatch
  int patches[Rank];       // query patches per sub-grid along each axis
  // Key patches for the kernel's two key tile widths (the sm_90a code and the mma.sync code
  // tile differently; each picks its own, so the host need not know which runs).
  KeyPatch keys[2];

  // Patch tiling pays off where windows are narrow against the grid: a window that spans
  // most of the innermost axis makes row-major tiles full, which need no element test.
  static bool worthwhile(const Neighborhood<Rank>& m) {
    const index_t inner = (m.grid[Rank - 1] + m.dilation[Rank - 1] - 1) / m.dilation[Rank - 1];
    return inner >= 16 && 2 * m.kernel[Rank - 1] <= inner;
  }

  PatchTiling() = default;
  // Query patches of 16 << outer_q tokens; key patches of 2^key_bits[i] slots.
  PatchTiling(const Neighborhood<Rank>& m, int outer_q, const int (&key_bits)[2]) : mask(m) {
    int s = 1;
    for (int a = Rank - 1; a >= 0; --a) {
      stride[a] = s;
      s *= int(m.grid[a]);
      sub_max[a] = int((m.grid[a] + m.dilation[a] - 1) / m.dilation[a]);
    }
    split(q_inner_bits, outer_q, q_bits, q_low);
    for (int a = 0; a < Rank; ++a) patches[a] = (sub_max[a] + (1 << q_bits[a]) - 1) >> q_bits[a];
    for (int i = 0; i < 2; ++i) keys[i] = best_key_patch(m, key_bits[i]);
  }
  // The key patch of a kernel whose tiles have 2^total keys (host and device agree on 64 or 128).
  ATTNKIT_HD const KeyPatch& key_patch(int total) const { return keys[0].total == total ? keys[0] : keys[1]; }

  // CTAs: every (sub-grid, patch) combination of every axis.
  index_t query_patches() const {
    index_t n = 1;
    for (int a = 0; a < Rank; ++a) n *= index_t(mask.dilation[a]) * patches[a];
    return n;
  }

 private:
  // The key patch width that covers an interior query patch's box (its extent plus the
  // kernel less one, per axis) with the fewest tiles; ties to 16.
  KeyPatch best_key_patch(const Neighborhood<Rank>& m, int total) const {
    KeyPatch best{};
    long best_tiles = -1;
    for (int ki = 4; ki <= 5 && ki <= total; ++ki) {
      KeyPatch k{total, ki, {}, {}};
      split(ki, total - ki, k.bits, k.low);
      long tiles = 1;
      for (int a = 0; a < Rank; ++a) {
        const int q_extent = std::min(1 << q_bits[a], sub_max[a]);
        const int box = std::min(q_extent + int(m.kernel[a]) - 1, sub_max[a]);
        tiles *= (box + (1 << k.bits[a]) - 1) >> k.bits[a];
      }
      if (best_tiles < 0 || tiles < best_tiles) best = k, best_tiles = tiles;
    }
    return best;
  }
  // `inner` bits along the innermost axis; the outer bits go to the next axis as far as its
  // extent uses them, the rest to the axis before it.
  void split(int inner, int outer, int (&bits)[Rank], int (&low)[Rank]) const {
    bits[Rank - 1] = inner;
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
  float k_tiles_rcp[Rank];  // 1 / k_tiles: key_origin divides by a multiply
  int q_low[Rank], q_mask[Rank], k_low[Rank], k_mask[Rank];
  int k_inner_bits;         // log2 of a key patch's extent along the innermost axis

  // Query patch `patch` of the tiling, key patches of 2^key_bits slots.
  __device__ PatchCTA(const PatchTiling<Rank>& pt, int patch, int key_bits) {
    const auto& kp = pt.key_patch(key_bits);
    group_base = 0;
    k_inner_bits = kp.inner;
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
      k_low[a] = kp.low[a], k_mask[a] = (1 << kp.bits[a]) - 1;
      // Windows move monotonically with the query: the box runs from the first query's
      // window start to the last one's end.
      const int last = min(q_start[a] + q_mask[a], sub_len[a] - 1);
      int lo, hi, unused;
      window(pt.mask, a, q_start[a], lo, unused);
      window(pt.mask, a, last, unused, hi);
      k_lo[a] = lo;
      if (q_start[a] >= sub_len[a]) hi = lo;
      k_tiles[a] = (hi - lo + k_mask[a]) >> kp.bits[a];
      k_tiles_rcp[a] = 1.f / float(max(k_tiles[a], 1));
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
  // Window of query sub-grid coordinate `sub` along axis a: [start, end) in sub-grid units
  // (Neighborhood::window without its 64-bit divisions: the CTA knows its sub-grid).
  __device__ void window(const Neighborhood<Rank>& m, int a, int sub, int& start, int& end) const {
    const int K = int(m.kernel[a]), L = sub_len[a];
    if (m.causal[a]) {
      start = max(sub - K + 1, 0), end = sub + 1;
    } else {
      start = min(max(sub - K / 2, 0), max(L - K, 0));
      end = min(start + K, L);
    }
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
  // Origin of key tile kt (innermost axis fastest). The quotients come from a float
  // multiply: (kt + 1/2) / k lies at least 1 / 2k from an integer, far above the product's
  // rounding error for kt < 2^22.
  __device__ void key_origin(int kt, int (&origin)[Rank]) const {
    for (int a = Rank - 1; a >= 0; --a) {
      const int q = int((float(kt) + 0.5f) * k_tiles_rcp[a]);
      origin[a] = k_lo[a] + (kt - q * k_tiles[a]) * (k_mask[a] + 1);
      kt = q;
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
