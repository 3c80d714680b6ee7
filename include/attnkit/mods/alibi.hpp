#pragma once
#include "concepts.hpp"

namespace attnkit {

// ALiBi: s + slope[h] * (j - pos), slopes per query head (caller memory, Hq floats).
struct Alibi {
  const float* slopes = nullptr;
  void validate(const ProblemInfo& p) const { require(slopes != nullptr || p.Hq == 0, "mods.alibi.slopes", "null"); }
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const {
    return s + T(slopes[c.h]) * T(c.j - c.pos);
  }
};

}  // namespace attnkit
