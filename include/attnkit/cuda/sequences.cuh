#pragma once
// Where the kernels find a sequence's rows: dense strided batches, ragged batches packed
// along the sequence axis (cumulative offsets), and paged key/value caches. The kernels are
// templated on the key/value source, so each layout compiles to its own address arithmetic.
#include <cstdint>
#include <type_traits>

#include "../core/fast_divisor.hpp"
#include "../core/paged.hpp"
#include "../core/problem.hpp"
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

// Row j of one (sequence, head) of a paged pool: one block-table read per row. Page ids,
// slots and the pool's strides are non-negative 32-bit values (run_paged checks the strides),
// so a row's offset is two unsigned 32 x 32 -> 64-bit multiply-adds.
template <class T>
struct PagedRows {
  T* head;                    // page 0, slot 0 of this head
  const std::int32_t* table;  // this sequence's block-table row
  FastDivisor page;           // tokens per page
  std::uint32_t page_stride, slot_stride;
  __device__ __forceinline__ T* at(int page_id, int slot) const {
    return head + (std::uint64_t(std::uint32_t(page_id)) * page_stride + std::uint64_t(std::uint32_t(slot)) * slot_stride);
  }
  __device__ __forceinline__ T* operator()(int j) const {
    const int q = page.quotient(j);
    return at(table[q], page.remainder(j, q));
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

// Whether rows of n values at `data` with strides s (batch, head, row), and packed rows of n
// values from an aligned base, split into 16-byte pieces: every row 16-byte aligned, n a
// multiple of 16 bytes. (The kernels that copy or convert whole rows then move 16 bytes at once.)
template <class T>
bool rows_of_16_byte_pieces(const T* data, const std::int64_t (&s)[3], index_t n) {
  constexpr index_t per = 16 / sizeof(T);
  return reinterpret_cast<std::uintptr_t>(data) % 16 == 0 && s[0] % per == 0 && s[1] % per == 0 && s[2] % per == 0 &&
         n % per == 0;
}
template <class T>
bool rows_of_16_byte_pieces(const SeqRows<T>& x, index_t n) {
  return rows_of_16_byte_pieces(x.data, x.s, n);
}

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
  FastDivisor page;  // kv.page_size

  __device__ __forceinline__ PagedRows<const T> k_rows(int b, int h) const { return rows(kv.k, b, h); }
  __device__ __forceinline__ PagedRows<const T> v_rows(int b, int h) const { return rows(kv.v, b, h); }
  __device__ __forceinline__ PagedRows<const T> rows(const PagePool<const T>& pool, int b, int h) const {
    return {pool.at(0, 0, h), kv.block_table + b * kv.table_stride, page, std::uint32_t(pool.stride[0]),
            std::uint32_t(pool.stride[1])};
  }
  __device__ __forceinline__ const T* any() const { return kv.k.data; }
  __device__ __forceinline__ const T* any_v() const { return kv.v.data; }
};

// The problem as one sequence of a batch sees it: ragged and paged batches have their own
// lengths per sequence, queries bottom-right against their keys unless q_offset was given.
template <class KV, class T>
__device__ __forceinline__ ProblemInfo sequence_problem(const ProblemInfo& all, const SeqRows<const T>& q, const KV& kv,
                                                        bool q_offset_given, int b) {
  ProblemInfo p = all;
  if constexpr (KV::varlen) {
    p.Nq = q.length(b, int(all.Nq));
    p.Nk = kv.length(b);
    if (!q_offset_given) p.q_offset = p.Nk - p.Nq;
    p.key_begin = 0;
    p.key_end = p.Nk;
  }
  return p;
}

template <class KV>
inline constexpr bool is_paged_source = false;
template <class T>
inline constexpr bool is_paged_source<PagedSource<T>> = true;

// This thread's share of a paged key tile's copies, with its block-table entries read one
// tile ahead into registers, so that issuing a tile's copies waits on no table read. The
// thread copies the 16-byte column `chunk` of tile rows tid_row + it * RowsPerCopy, it <
// Copies (load_rows' order). K and V rows share the table, so one fetch serves both copies.
template <int Copies, int RowsPerCopy>
struct PagedTileCopies {
  int n_rows, tid_row, chunk;
  int row0 = 0;
  int pages[Copies] = {};
  int slots[Copies] = {};

  // The entries of the tile starting at key row0 (and the rows' slots in their pages).
  template <class T>
  __device__ __forceinline__ void fetch(const PagedRows<T>& rows, int tile_row0) {
    row0 = tile_row0;
#pragma unroll
    for (int it = 0; it < Copies; ++it) {
      const int j = row0 + tid_row + it * RowsPerCopy, q = rows.page.quotient(j);
      slots[it] = rows.page.remainder(j, q);
      pages[it] = j < n_rows ? rows.table[q] : 0;
    }
  }
  // cp.async of this thread's chunks of the fetched tile of `rows` into `smem` (rows past
  // n_rows and columns past n_cols as zeros; `any` is a valid address for zero-byte copies).
  template <class Layout, class T, class U>
  __device__ __forceinline__ void copy(const PagedRows<T>& rows, U* smem, const std::remove_const_t<T>* any, int n_cols) const {
#pragma unroll
    for (int it = 0; it < Copies; ++it) {
      const int r = tid_row + it * RowsPerCopy;
      const bool ok = row0 + r < n_rows && chunk * 8 < n_cols;
      const T* row = rows.at(pages[it], slots[it]) + chunk * 8;  // a row of the pool even when !ok
      ptx::cp_async_16(smem + Layout::at(r, chunk * 8), ok ? row : any, ok ? 16 : 0);
    }
  }
};

}  // namespace attnkit::cuda::detail
