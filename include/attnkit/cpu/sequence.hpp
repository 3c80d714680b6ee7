#pragma once
// One sequence of a batched call as batch-1 views: a dense batch entry, a slice of a ragged
// batch, or a paged sequence. Decode and tile plans take lists of these, so dense, ragged and
// paged calls share one parallel pass.
#include <cstdint>

#include "../core/problem.hpp"

namespace attnkit::cpu {

// A sequence's place in its batch: the index score modifiers see as LogitCoord::b, and the
// block-table row of its keys (null: keys are a dense view).
struct BatchSlot {
  index_t seq = 0;
  const std::int32_t* table = nullptr;  // page ids of this sequence
  index_t page_size = 1;
  index_t k_page_stride = 0, v_page_stride = 0;  // elements between consecutive pages
};

// Paged keys are a [1, Hkv, len, D] view whose data is the pool's page 0 and whose head and
// sequence strides are the pool's head and slot strides; the slot's table adds the pages.
template <class TQ, class TK, class TV, class TO>
struct SeqView {
  TensorView<const TQ> q;  // [1, Hq, nq, D]
  TensorView<const TK> k;  // [1, Hkv, nk, D]
  TensorView<const TV> v;  // [1, Hkv, nk, Dv]
  TensorView<TO> o;        // [1, Hq, nq, Dv]
  RowView lse{};           // [1, Hq, nq] or none
  PartialState partial{};  // written instead of o when partial.o.data is set
  BatchSlot slot{};
};

// Batch entry b of a view, and rows [begin, begin + n) of a batch-1 view.
template <class T>
TensorView<T> batch_entry(const TensorView<T>& t, index_t b) {
  return {t.data + b * t.stride[0], {1, t.shape[1], t.shape[2], t.shape[3]}, t.stride};
}
template <class T>
TensorView<T> row_slice(const TensorView<T>& t, index_t begin, index_t n) {
  return {t.data + begin * t.stride[2], {1, t.shape[1], n, t.shape[3]}, t.stride};
}
inline RowView batch_entry(const RowView& r, index_t b) {
  if (!r) return r;
  return {r.data + b * r.stride[0], {1, r.shape[1], r.shape[2]}, r.stride};
}
inline RowView row_slice(const RowView& r, index_t begin, index_t n) {
  if (!r) return r;
  return {r.data + begin * r.stride[2], {1, r.shape[1], n}, r.stride};
}

}  // namespace attnkit::cpu
