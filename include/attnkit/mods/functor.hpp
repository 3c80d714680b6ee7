#pragma once
#include "concepts.hpp"

namespace attnkit {

// Any callable f(s, b, h, i, j) (i the query index), e.g. a lambda capturing pointers.
template <class F>
struct ScoreFn {
  F f;
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const {
    return f(s, c.b, c.h, c.i, c.j);
  }
};
template <class F> ScoreFn(F) -> ScoreFn<F>;

}  // namespace attnkit
