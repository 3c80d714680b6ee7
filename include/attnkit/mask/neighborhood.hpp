#pragma once
// Neighborhood attention (NATTEN semantics) on a 1-, 2- or 3-D token grid, row-major, axis 0
// slowest. Per axis: each query attends to the kernel-size window around it, shifted inward
// at the borders so it always sees kernel keys; dilation d splits the axis into d interleaved
// sub-grids (x attends only within x mod d); a causal axis sees the kernel keys ending at x.
// Query positions and key indices both live on the grid (Nk = prod(grid)).
#include <array>
#include <string>

#include "concepts.hpp"

namespace attnkit {

template <int Rank>
struct Neighborhood {
  static_assert(Rank >= 1 && Rank <= 3, "attnkit: neighborhood masks are 1-, 2- or 3-dimensional");
  static constexpr const char* name = Rank == 1 ? "neighborhood1d" : Rank == 2 ? "neighborhood2d" : "neighborhood3d";

  std::array<index_t, Rank> grid{};
  std::array<index_t, Rank> kernel{};
  std::array<index_t, Rank> dilation = filled(1);
  std::array<bool, Rank> causal{};

  static constexpr std::array<index_t, Rank> filled(index_t v) {
    std::array<index_t, Rank> a{};
    for (auto& x : a) x = v;
    return a;
  }

  void validate(const ProblemInfo& p) const {
    index_t n = 1;
    for (int a = 0; a < Rank; ++a) {
      const auto ax = [a] { return " (axis " + std::to_string(a) + ")"; };  // built on failure only
      require(grid[a] > 0, "mask.grid", [&] { return "extents must be positive" + ax(); });
      require(dilation[a] >= 1, "mask.dilation", [&] { return "must be >= 1" + ax(); });
      require(kernel[a] >= 1, "mask.kernel", [&] { return "must be >= 1" + ax(); });
      require(kernel[a] * dilation[a] <= grid[a], "mask.kernel", [&] {
        return "kernel " + std::to_string(kernel[a]) + " x dilation " + std::to_string(dilation[a]) +
               " is larger than the grid extent " + std::to_string(grid[a]) + ax();
      });
      n *= grid[a];
    }
    require(n == p.Nk, "mask.grid",
            [&] { return "grid has " + std::to_string(n) + " tokens but Nk = " + std::to_string(p.Nk); });
    require(p.q_offset >= 0 && p.q_offset + p.Nq <= p.Nk, "q_offset",
            "neighborhood queries must lie on the key grid: need 0 <= q_offset and q_offset + Nq <= Nk");
  }

  // Window of coordinate x on axis a, in sub-grid (group) coordinates: [start, end).
  struct AxisWindow {
    index_t group, start, end;
  };
  ATTNKIT_HD AxisWindow window(int a, index_t x) const {
    const index_t d = dilation[a], K = kernel[a];
    const index_t g = x % d, xi = x / d, Lg = (grid[a] - g + d - 1) / d;
    if (causal[a]) return {g, xi - K + 1 < 0 ? 0 : xi - K + 1, xi + 1};
    index_t s = xi - K / 2;
    const index_t smax = Lg - K < 0 ? 0 : Lg - K;
    s = s < 0 ? 0 : (s > smax ? smax : s);
    return {g, s, s + K < Lg ? s + K : Lg};
  }
  ATTNKIT_HD index_t coord(index_t linear, int a) const {
    for (int b = Rank - 1; b > a; --b) linear /= grid[b];
    return linear % grid[a];
  }
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const {
    for (int a = 0; a < Rank; ++a) {
      const index_t x = coord(pos, a), y = coord(j, a);
      const AxisWindow w = window(a, x);
      const index_t d = dilation[a];
      if (y % d != w.group || y / d < w.start || y / d >= w.end) return false;
    }
    return true;
  }

  // One query's window, for testing many keys: per axis the sub-grid group and the window
  // [start, end) in sub-grid coordinates, in 32-bit arithmetic where the grid allows it.
  template <class I>
  struct Row {
    I grid[Rank], dilation[Rank], group[Rank], start[Rank], end[Rank];
    ATTNKIT_HD bool allowed(index_t j_) const {
      I j = I(j_);
      for (int a = Rank - 1; a >= 0; --a) {
        const I y = j % grid[a];
        j /= grid[a];
        if (dilation[a] == 1) {
          if (y < start[a] || y >= end[a]) return false;
        } else if (y % dilation[a] != group[a] || y / dilation[a] < start[a] || y / dilation[a] >= end[a]) {
          return false;
        }
      }
      return true;
    }
  };
  ATTNKIT_HD auto row(index_t pos) const {
    Row<int> r{};  // the CUDA backend bounds sequence lengths below 2^31; the CPU does not use rows
    for (int a = 0; a < Rank; ++a) {
      const AxisWindow w = window(a, coord(pos, a));
      r.grid[a] = int(grid[a]), r.dilation[a] = int(dilation[a]);
      r.group[a] = int(w.group), r.start[a] = int(w.start), r.end[a] = int(w.end);
    }
    return r;
  }

  // --- tile classification: exact for dilation 1, conservative (never 'full') otherwise ---
  struct Box {
    index_t lo[Rank], hi[Rank];
  };
  static constexpr int max_boxes = 2 * Rank;

  // Splits the linear range [lo, hi) into at most 2*Rank-1 axis-aligned boxes. Iterative
  // with a bounded work list (no recursion: device code gets a static stack size).
  ATTNKIT_HD void decompose(index_t lo, index_t hi, int axis, Box prefix, Box* out, int& n) const {
    struct Work {
      index_t lo, hi;
      int axis;
      Box prefix;
    };
    Work todo[2 * Rank];
    int top = 0;
    todo[top++] = {lo, hi, axis, prefix};
    while (top > 0) {
      Work w = todo[--top];
      if (w.lo >= w.hi) continue;
      if (w.axis == Rank - 1) {
        w.prefix.lo[w.axis] = w.lo;
        w.prefix.hi[w.axis] = w.hi;
        out[n++] = w.prefix;
        continue;
      }
      index_t inner = 1;
      for (int b = w.axis + 1; b < Rank; ++b) inner *= grid[b];
      index_t a = w.lo / inner;
      const index_t last = (w.hi - 1) / inner;
      Box p = w.prefix;
      if (a == last) {
        p.lo[w.axis] = a, p.hi[w.axis] = a + 1;
        todo[top++] = {w.lo - a * inner, w.hi - a * inner, w.axis + 1, p};
        continue;
      }
      const bool last_partial = w.hi % inner != 0;
      if (last_partial) {  // pushed first: handled after the boxes before it
        Box q = w.prefix;
        q.lo[w.axis] = last, q.hi[w.axis] = last + 1;
        todo[top++] = {0, w.hi - last * inner, w.axis + 1, q};
      }
      const bool first_partial = w.lo % inner != 0;
      const index_t full_begin = first_partial ? a + 1 : a;
      const index_t full_end = last_partial ? last : last + 1;
      if (full_begin < full_end) {
        Box b = w.prefix;
        b.lo[w.axis] = full_begin, b.hi[w.axis] = full_end;
        for (int c = w.axis + 1; c < Rank; ++c) b.lo[c] = 0, b.hi[c] = grid[c];
        out[n++] = b;
      }
      if (first_partial) {
        p.lo[w.axis] = a, p.hi[w.axis] = a + 1;
        todo[top++] = {w.lo - a * inner, inner, w.axis + 1, p};
      }
    }
  }

  // For a box of queries: per axis the coordinate range every key they see lies in (reach),
  // and the range every one of them sees (common; empty when dilation > 1).
  ATTNKIT_HD void reach(const Box& q, int a, index_t& lo, index_t& hi, index_t& clo, index_t& chi) const {
    const index_t d = dilation[a];
    if (d == 1) {
      const AxisWindow first = window(a, q.lo[a]), lastw = window(a, q.hi[a] - 1);
      lo = first.start, hi = lastw.end;       // windows move monotonically with x
      clo = lastw.start, chi = first.end;
      return;
    }
    lo = grid[a], hi = 0, clo = 0, chi = 0;
    for (index_t x = q.lo[a]; x < q.hi[a]; ++x) {
      const AxisWindow w = window(a, x);
      const index_t s = w.group + d * w.start, e = w.group + d * (w.end - 1) + 1;
      lo = s < lo ? s : lo;
      hi = e > hi ? e : hi;
    }
  }

  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    Box qb[max_boxes], kb[max_boxes];
    int nq = 0, nk = 0;
    decompose(r.q_lo, r.q_hi, 0, Box{}, qb, nq);
    decompose(r.k_lo, r.k_hi, 0, Box{}, kb, nk);
    bool any = false, all = true;
    for (int u = 0; u < nq; ++u) {
      index_t lo[Rank], hi[Rank], clo[Rank], chi[Rank];
      for (int a = 0; a < Rank; ++a) reach(qb[u], a, lo[a], hi[a], clo[a], chi[a]);
      for (int v = 0; v < nk; ++v) {
        bool meets = true, inside = true;
        for (int a = 0; a < Rank; ++a) {
          meets &= kb[v].lo[a] < hi[a] && kb[v].hi[a] > lo[a];
          inside &= kb[v].lo[a] >= clo[a] && kb[v].hi[a] <= chi[a];
        }
        any |= meets;
        all &= inside;
      }
    }
    return all ? TileKind::full : (any ? TileKind::partial : TileKind::skip);
  }

  ATTNKIT_HD KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const {
    Box qb[max_boxes];
    int nq = 0;
    decompose(q_lo < 0 ? 0 : q_lo, q_hi > nk ? nk : q_hi, 0, Box{}, qb, nq);
    index_t first = nk, last = 0;
    for (int u = 0; u < nq; ++u) {
      index_t lin_lo = 0, lin_hi = 0;
      for (int a = 0; a < Rank; ++a) {
        index_t lo, hi, clo, chi;
        reach(qb[u], a, lo, hi, clo, chi);
        lin_lo = lin_lo * grid[a] + lo;
        lin_hi = lin_hi * grid[a] + (hi - 1);
      }
      first = lin_lo < first ? lin_lo : first;
      last = lin_hi + 1 > last ? lin_hi + 1 : last;
    }
    return {first, last};
  }
};

using Neighborhood1D = Neighborhood<1>;
using Neighborhood2D = Neighborhood<2>;
using Neighborhood3D = Neighborhood<3>;

}  // namespace attnkit
