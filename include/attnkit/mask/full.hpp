#pragma once
#include "concepts.hpp"

namespace attnkit {

// Every query sees every key.
struct Full {
  static constexpr const char* name = "full";
  ATTNKIT_HD bool allowed(index_t, index_t) const { return true; }
  ATTNKIT_HD TileKind classify(const TileRect&) const { return TileKind::full; }
};

}  // namespace attnkit
