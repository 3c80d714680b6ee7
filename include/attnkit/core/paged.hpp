#pragma once
// Paged key/value caches (the vLLM / FlashInfer layout) and ragged batches.
//
// PagedKV: K and V live in pools of fixed-size pages. Sequence b holds seq_lens[b] tokens;
// its token j sits in page block_table[b * table_stride + j / page_size], slot j % page_size.
// A pool is addressed as [page, slot, head, feature] with free strides for the first three
// and a contiguous feature axis, so NHD ([pages, page_size, H, D]) and HND
// ([pages, H, page_size, D]) pools, and K/V interleaved in one allocation, all fit.
//
// Ragged batches: sequences packed one after another along the sequence axis of a batch-1
// view; offsets[b] .. offsets[b + 1] are sequence b's rows (cumulative, offsets[0] = 0).
// Each sequence's queries sit bottom-right against its own keys unless Options::q_offset
// says otherwise (then it applies to every sequence).
//
// All index arrays are int32, in the memory the backend reads (host for the CPU, device for
// CUDA); max_q / max_k are upper bounds the host needs without reading device memory.
#include <array>
#include <cstdint>
#include <type_traits>

#include "config.hpp"
#include "tensor.hpp"

namespace attnkit {

template <class T>
struct PagePool {
  T* data = nullptr;
  std::array<index_t, 3> stride{};  // elements between consecutive pages, slots, heads

  ATTNKIT_HD T* at(index_t page, index_t slot, index_t head) const {
    return data + page * stride[0] + slot * stride[1] + head * stride[2];
  }
};

// Contiguous [pages, page_size, heads, dim] pool.
template <class T>
PagePool<T> pool_nhd(T* data, index_t page_size, index_t heads, index_t dim) {
  return {data, {page_size * heads * dim, heads * dim, dim}};
}

// Contiguous [pages, heads, page_size, dim] pool.
template <class T>
PagePool<T> pool_hnd(T* data, index_t page_size, index_t heads, index_t dim) {
  return {data, {heads * page_size * dim, dim, page_size * dim}};
}

template <class T>
struct PagedKV {
  PagePool<T> k, v;
  const std::int32_t* block_table = nullptr;  // [batch, table_stride] page ids
  const std::int32_t* seq_lens = nullptr;     // [batch] tokens per sequence
  index_t batch = 0, heads = 0, dim = 0, dim_v = 0;
  index_t page_size = 0, pages = 0;  // pages in each pool (ids must be below)
  index_t table_stride = 0;          // entries per block-table row (max pages of a sequence)
  index_t max_len = 0;               // upper bound of seq_lens (sizes split-KV grids)

  ATTNKIT_HD index_t page_of(index_t b, index_t j) const { return block_table[b * table_stride + j / page_size]; }
  ATTNKIT_HD T* k_row(index_t b, index_t h, index_t j) const { return k.at(page_of(b, j), j % page_size, h); }
  ATTNKIT_HD T* v_row(index_t b, index_t h, index_t j) const { return v.at(page_of(b, j), j % page_size, h); }

  template <class U = T>
    requires(!std::is_const_v<U>)
  operator PagedKV<const U>() const {
    return {{k.data, k.stride}, {v.data, v.stride}, block_table, seq_lens, batch, heads, dim, dim_v,
            page_size, pages, table_stride, max_len};
  }
};

// Cumulative row offsets of a ragged batch: [batch + 1] entries.
struct RaggedRows {
  const std::int32_t* offsets = nullptr;
  index_t batch = 0;
  index_t max_rows = 0;  // upper bound of offsets[b + 1] - offsets[b]

  ATTNKIT_HD index_t begin(index_t b) const { return offsets[b]; }
  ATTNKIT_HD index_t rows(index_t b) const { return offsets[b + 1] - offsets[b]; }
};

}  // namespace attnkit
