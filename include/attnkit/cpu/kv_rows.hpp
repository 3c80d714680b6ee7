#pragma once
// Where the key (or value) rows of one kv head live: at a fixed stride (a dense view), or
// through a sequence's block-table row (a paged cache). The tile loop and the decode kernel
// address rows only through this, so both run unchanged over dense and paged caches.
#include <cstdint>

#include "../core/tensor.hpp"
#include "sequence.hpp"

namespace attnkit::cpu {

template <class T>
struct HeadRows {
  const T* base = nullptr;  // row 0 (dense) or page 0, slot 0 of this head (paged)
  index_t ld = 0;           // elements between rows (dense) or slots of a page (paged)
  const std::int32_t* table = nullptr;
  index_t page_size = 1, page_stride = 0;

  const T* row(index_t j) const {
    if (!table) return base + j * ld;
    return base + index_t(table[j / page_size]) * page_stride + (j % page_size) * ld;
  }
  bool strided() const { return table == nullptr; }

  // Pointers to rows [j, j + n): one division per call, not per row.
  void rows(index_t j, index_t n, const T** out) const {
    if (!table) {
      for (index_t c = 0; c < n; ++c) out[c] = base + (j + c) * ld;
      return;
    }
    index_t page = j / page_size, slot = j % page_size;
    const T* p = base + index_t(table[page]) * page_stride;
    for (index_t c = 0; c < n; ++c) {
      out[c] = p + slot * ld;
      if (++slot == page_size && c + 1 < n) slot = 0, p = base + index_t(table[++page]) * page_stride;
    }
  }
};

// Rows of head h of a [1, H, N, D] view; with a block table, the view's head and sequence
// strides are the pool's head and slot strides.
template <class T>
HeadRows<T> head_rows(const TensorView<const T>& t, index_t b, index_t h, const BatchSlot& slot, bool value) {
  if (!slot.table || t.seq() == 0) return {t.seq() ? t.row(b, h, 0) : nullptr, t.stride[2]};
  return {t.data + h * t.stride[1], t.stride[2], slot.table, slot.page_size,
          value ? slot.v_page_stride : slot.k_page_stride};
}

}  // namespace attnkit::cpu
