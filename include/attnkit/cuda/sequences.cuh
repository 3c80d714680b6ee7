#pragma once
// Where the kernels find a sequence's rows: dense strided batches, ragged batches packed
// along the sequence axis (cumulative offsets), and paged key/value caches. The kernels are
// templated on the key/value source, so each layout compiles to its own address arithmetic.
#include <cstdint>
#include <type_traits>

#include "../core/paged.hpp"
#include "../core/tensor.hpp"
#include "ptx.hpp"

namespace attnkit::cuda::detail {

// Row j of one (sequence, head) of a strided tensor: the base pointer hoisted out of the loops.
template <class T>
struct StridedRows {
  T* base;
  std::int64_t stride;
  __device__ __forceinline__ T* operator()(int j) const { return base + j * stride; }
};

// Row j of one (sequence, head) of a paged pool: one block-table read per row.
template <class T>
struct PagedRows {
  PagePool<T> pool;
  const std::int32_t* table;  // this sequence's block-table row
  int page_size, head;
  int page_shift;  // log2(page_size) for powers of two (the usual 16, 32, 64), else -1
  __device__ __forceinline__ T* operator()(int j) const {
    if (page_shift >= 0) return pool.at(table[j >> page_shift], j & (page_size - 1), head);
    return pool.at(table[j / page_size], j % page_size, head);
  }
};

// Rows of a query-side operand (q, o, lse): row i of sequence b, head h. Ragged batches
// are batch-1 views with sequence b starting at row offsets[b].
template <class T>
struct SeqRows {
  T* data = nullptr;
  std::int64_t s[3] = {0, 0, 0};             // batch, head, row strides (elements)
  const std::int32_t* offsets = nullptr;     // ragged: [B + 1]; null: dense batch

  __device__ __forceinline__ T* row(int b, int h, int i) const {
    if (offsets) return data + h * s[1] + (std::int64_t(offsets[b]) + i) * s[2];
    return data + b * s[0] + h * s[1] + std::int64_t(i) * s[2];
  }
  __device__ __forceinline__ StridedRows<T> rows(int b, int h) const { return {row(b, h, 0), s[2]}; }
  __device__ __forceinline__ int length(int b, int uniform) const {
    return offsets ? offsets[b + 1] - offsets[b] : uniform;
  }
};

template <class T>
SeqRows<T> seq_rows(const TensorView<T>& t, const std::int32_t* offsets = nullptr) {
  return {t.data, {t.stride[0], t.stride[1], t.stride[2]}, offsets};
}
inline SeqRows<float> seq_rows(const RowView& t, const std::int32_t* offsets = nullptr) {
  return {t.data, {t.stride[0], t.stride[1], t.stride[2]}, offsets};
}

// Keys and values in strided tensors (dense batch, or ragged with offsets).
template <class T, bool Ragged>
struct ContiguousKV {
  static constexpr bool varlen = Ragged;
  SeqRows<const T> k, v;
  int nk = 0;  // dense: keys per sequence

  __device__ __forceinline__ int length(int b) const { return k.length(b, nk); }
  __device__ __forceinline__ StridedRows<const T> k_rows(int b, int h) const { return k.rows(b, h); }
  __device__ __forceinline__ StridedRows<const T> v_rows(int b, int h) const { return v.rows(b, h); }
  __device__ __forceinline__ const T* any() const { return k.data; }  // a valid address for 0-byte copies
  __device__ __forceinline__ const T* any_v() const { return v.data; }
};

// Keys and values in page pools addressed through a block table.
template <class T>
struct PagedSource {
  static constexpr bool varlen = true;
  PagedKV<const T> kv;

  __device__ __forceinline__ int length(int b) const { return kv.seq_lens[b]; }
  int page_shift = -1;

  __device__ __forceinline__ PagedRows<const T> k_rows(int b, int h) const {
    return {kv.k, kv.block_table + b * kv.table_stride, int(kv.page_size), h, page_shift};
  }
  __device__ __forceinline__ PagedRows<const T> v_rows(int b, int h) const {
    return {kv.v, kv.block_table + b * kv.table_stride, int(kv.page_size), h, page_shift};
  }
  __device__ __forceinline__ const T* any() const { return kv.k.data; }
  __device__ __forceinline__ const T* any_v() const { return kv.v.data; }
};

// This thread's share of a paged key tile's copies, with its block-table entries read one
// tile ahead into registers, so that issuing a tile's copies waits on no table read. The
// thread copies the 16-byte column `chunk` of tile rows tid_row + it * RowsPerCopy, it <
// Copies (load_rows' order). K and V rows share the table, so one fetch serves both copies.
template <int Copies, int RowsPerCopy>
struct PagedTileCopies {
  int n_rows, tid_row, chunk;
  int row0 = 0;
  int pages[Copies] = {};

  // The entries of the tile starting at key row0.
  template <class T>
  __device__ __forceinline__ void fetch(const PagedRows<T>& rows, int tile_row0) {
    row0 = tile_row0;
#pragma unroll
    for (int it = 0; it < Copies; ++it) {
      const int j = row0 + tid_row + it * RowsPerCopy;
      pages[it] = j < n_rows ? rows.table[rows.page_shift >= 0 ? j >> rows.page_shift : j / rows.page_size] : 0;
    }
  }
  // cp.async of this thread's chunks of the fetched tile of `rows` into `smem` (rows past
  // n_rows and columns past n_cols as zeros; `any` is a valid address for zero-byte copies).
  template <class Layout, class T, class U>
  __device__ __forceinline__ void copy(const PagedRows<T>& rows, U* smem, const std::remove_const_t<T>* any, int n_cols) const {
#pragma unroll
    for (int it = 0; it < Copies; ++it) {
      const int r = tid_row + it * RowsPerCopy, j = row0 + r;
      const bool ok = j < n_rows && chunk * 8 < n_cols;
      const int slot = rows.page_shift >= 0 ? j & (rows.page_size - 1) : j % rows.page_size;
      const T* from = ok ? rows.pool.at(pages[it], slot, rows.head) + chunk * 8 : any;
      ptx::cp_async_16(smem + Layout::at(r, chunk * 8), from, ok ? 16 : 0);
    }
  }
};

}  // namespace attnkit::cuda::detail
