#pragma once
// Row lists for gathered launches (content routing: moba_gather.cuh, cluster_gather.cuh).
// A list ("sequence" of a varlen launch) holds, in row order, the rows of one source head that
// belong to it; its rows are packed one list after another. A Lists policy says which:
//   sequences()          how many lists
//   rows()               rows per source head
//   head(s), key(s)      the source head (b * H + h) whose rows list s takes, and what else
//                        tells s apart (a key block, a cluster): computed once per piece
//   first_row(s)         no row before it belongs to s
//   member(hd, key, i)   whether row i of head hd belongs to the list (hd, key)
//   placed(hd, key, i, at)  bookkeeping once that row has its packed row `at`
// Warps build the lists, each scanning one piece of >= 1024 rows of one list (a warp per whole
// list left 512 warps walking 8K rows each for MoBA at N = 16384 x 16 heads: latency-bound,
// 6 ms on the H200): count, a one-CTA scan, fill. The kernels are templates so that a header
// can define them in every translation unit.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "bind.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

inline constexpr int list_warps = 8;

// Calls with fewer query rows (decoding steps, short chunks) keep the bound masks: a tile of so
// few rows meets few blocks or clusters, and the lists' fixed costs would dominate.
inline constexpr index_t gather_min_rows = 64;

// Piece c of list s is item s * pieces + c: rows [c * chunk, (c + 1) * chunk).
struct ListPieces {
  int chunk, pieces;
  template <class Lists>
  __host__ __device__ std::int64_t items(const Lists& L) const { return L.sequences() * pieces; }
};

template <class Lists>
struct ListPiece {
  std::int64_t item, s, hd;
  int key, c, lo, hi;
  __device__ ListPiece(const Lists& L, const ListPieces& P, std::int64_t it) : item(it), s(it / P.pieces) {
    hd = L.head(s), key = L.key(s), c = int(it % P.pieces);
    lo = max(L.first_row(s), c * P.chunk), hi = min(L.rows(), (c + 1) * P.chunk);
  }
};

// One warp per piece: how many of its rows belong to the list.
template <class Lists>
__global__ void list_count_kernel(const __grid_constant__ Lists L, ListPieces P, int* counts) {
  const std::int64_t item = std::int64_t(blockIdx.x) * list_warps + threadIdx.x / 32;
  if (item >= P.items(L)) return;
  const ListPiece<Lists> pc(L, P, item);
  const int lane = int(threadIdx.x) % 32;
  int n = 0;
  for (int i0 = pc.lo; i0 < pc.hi; i0 += 32) {
    const int i = i0 + lane;
    n += __popc(__ballot_sync(0xffffffffu, i < pc.hi && L.member(pc.hd, pc.key, i)));
  }
  if (lane == 0) counts[item] = n;
}

// Exclusive prefix sum of counts[0, n) into offsets[0, n] (one CTA).
template <int NT>
__global__ void __launch_bounds__(NT) list_scan_kernel(const int* counts, std::int64_t n, std::int32_t* offsets) {
  __shared__ int sums[NT];
  const int tid = int(threadIdx.x);
  const std::int64_t per = (n + NT - 1) / NT, lo = tid * per, hi = lo + per < n ? lo + per : n;
  int mine = 0;
  for (std::int64_t e = lo; e < hi; ++e) mine += counts[e];
  sums[tid] = mine;
  __syncthreads();
  for (int d = 1; d < NT; d *= 2) {  // inclusive scan of the per-thread sums
    const int add = tid >= d ? sums[tid - d] : 0;
    __syncthreads();
    sums[tid] += add;
    __syncthreads();
  }
  int run = sums[tid] - mine;
  for (std::int64_t e = lo; e < hi; ++e) offsets[e] = run, run += counts[e];
  if (tid == NT - 1) offsets[n] = sums[NT - 1];
}

// One warp per piece: its member rows in row order take packed rows from the piece's offset
// on; each records its source row head(s) * rows() + i in src_rows. The first piece of a list
// writes the list's offset (seq_offsets[sequences()] is the total).
template <class Lists>
__global__ void list_fill_kernel(const __grid_constant__ Lists L, ListPieces P, const std::int32_t* offsets,
                                 std::int32_t* seq_offsets, std::int32_t* src_rows) {
  const std::int64_t item = std::int64_t(blockIdx.x) * list_warps + threadIdx.x / 32;
  if (item >= P.items(L)) return;
  const ListPiece<Lists> pc(L, P, item);
  const int lane = int(threadIdx.x) % 32;
  if (lane == 0 && pc.c == 0) seq_offsets[pc.s] = offsets[item];
  if (lane == 0 && item == P.items(L) - 1) seq_offsets[L.sequences()] = offsets[item + 1];
  int next = offsets[item];
  for (int i0 = pc.lo; i0 < pc.hi; i0 += 32) {
    const int i = i0 + lane;
    const bool on = i < pc.hi && L.member(pc.hd, pc.key, i);
    const unsigned found = __ballot_sync(0xffffffffu, on);
    if (on) {
      const int at = next + __popc(found & ((1u << lane) - 1u));
      src_rows[at] = std::int32_t(pc.hd * L.rows() + i);
      L.placed(pc.hd, pc.key, i, at);
    }
    next += __popc(found);
  }
}

// Row src_rows[at] of a [B, H, rows, D] view and packed row `at` (packed_stride apart), copied
// one way or the other: gather (view -> packed) or scatter (packed -> view, with each row's lse
// when lse_packed is given). A thread per 16 bytes of a row; the same pieces value by value
// when the rows are not 16-byte aligned (`vec`, rows_of_16_byte_pieces). (Scattering a value
// per thread with 64-bit index arithmetic took 194 us for 16384 x 16 rows of 128 bfloat16 values
// on the H200; 38 this way.)
template <bool Scatter, class T>
__global__ void copy_listed_rows_kernel(const std::int32_t* src_rows, std::int64_t n,
                                        SeqRows<std::conditional_t<Scatter, T, const T>> x, int H, int rows, int D,
                                        bool vec, std::conditional_t<Scatter, const T, T>* packed, int packed_stride,
                                        const float* lse_packed, SeqRows<float> lse) {
  constexpr int per = int(16 / sizeof(T));
  const int pieces = (D + per - 1) / per;
  const std::int64_t e = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n * pieces) return;
  const std::int64_t at = e / pieces;
  const int d = int(e - at * pieces) * per, src = src_rows[at];
  const int bh = src / rows, i = src - bh * rows, b = bh / H, h = bh - b * H;
  const auto row = x.row(b, h, i) + d;
  const auto pk = packed + at * packed_stride + d;
  const auto dst = [&] {
    if constexpr (Scatter) return row;
    else return pk;
  }();
  const auto src_values = [&] {
    if constexpr (Scatter) return pk;
    else return row;
  }();
  if (vec) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src_values);
  } else {
    for (int u = 0; u < per && d + u < D; ++u) dst[u] = src_values[u];
  }
  if constexpr (Scatter)
    if (lse_packed && d == 0) *lse.row(b, h, i) = lse_packed[at];
}

// Built lists: offsets [sequences() + 1] and the source row of each packed row.
struct BuiltLists {
  std::int32_t* seq_offsets;
  std::int32_t* src_rows;
};

// The lists of `L`, whose rows number `total` in all (known to the caller).
template <class Lists>
BuiltLists build_lists(const Lists& L, std::int64_t total, Workspace& ws, cudaStream_t stream) {
  const std::int64_t S = L.sequences();
  // Pieces of at least 1024 rows, about 32K of them in all (the scan is one CTA).
  const std::int64_t want = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(S, 1));
  const std::int64_t rows = L.rows();
  const int chunk = int(std::max<std::int64_t>(1024, (rows + want - 1) / want + 31) / 32 * 32);
  const ListPieces P{chunk, int((rows + chunk - 1) / chunk)};
  const std::int64_t items = P.items(L);
  require(items < (std::int64_t(1) << 31) && total < (std::int64_t(1) << 31), "q.shape", "too many rows to gather");
  int* counts = ws.alloc<int>(std::size_t(items));
  std::int32_t* offsets = ws.alloc<std::int32_t>(std::size_t(items + 1 + S + 1 + total));  // + seq offsets, sources
  BuiltLists out{offsets + items + 1, offsets + items + 1 + S + 1};
  if (items == 0) {  // no rows: every list empty
    check(cudaMemsetAsync(out.seq_offsets, 0, std::size_t(S + 1) * sizeof(std::int32_t), stream), "cudaMemsetAsync");
    return out;
  }
  const unsigned blocks = blocks_for(items, list_warps);
  list_count_kernel<Lists><<<blocks, list_warps * 32, 0, stream>>>(L, P, counts);
  check(cudaGetLastError(), "list_count_kernel launch");
  list_scan_kernel<1024><<<1, 1024, 0, stream>>>(counts, items, offsets);
  check(cudaGetLastError(), "list_scan_kernel launch");
  list_fill_kernel<Lists><<<blocks, list_warps * 32, 0, stream>>>(L, P, offsets, out.seq_offsets, out.src_rows);
  check(cudaGetLastError(), "list_fill_kernel launch");
  return out;
}

// The listed rows of x ([B, H, rows, D]) packed, rows of `stride` elements (a multiple of 8).
template <class T>
T* gather_rows(const BuiltLists& lists, std::int64_t total, const SeqRows<const T>& x, index_t H, index_t rows,
               index_t D, Workspace& ws, cudaStream_t stream, int& stride) {
  static_assert(sizeof(T) == 2, "16-bit rows: 8 values a piece");
  stride = int((D + 7) / 8 * 8);
  T* packed = ws.alloc<T>(std::size_t(total * stride));
  if (total == 0) return packed;
  copy_listed_rows_kernel<false, T><<<blocks_for(total * (stride / 8), 256), 256, 0, stream>>>(
      lists.src_rows, total, x, int(H), int(rows), int(D), rows_of_16_byte_pieces(x, D), packed, stride, nullptr, {});
  check(cudaGetLastError(), "copy_listed_rows_kernel (gather) launch");
  return packed;
}

// Packed rows of D values (D apart, and their lse when lse_packed is given) back to the listed
// rows of o ([B, H, rows, D]).
template <class T>
void scatter_rows(const BuiltLists& lists, std::int64_t total, const T* packed, const float* lse_packed,
                  const SeqRows<T>& o, const SeqRows<float>& lse, index_t H, index_t rows, index_t D,
                  cudaStream_t stream) {
  if (total == 0) return;
  const bool vec = rows_of_16_byte_pieces(o, D);
  const std::int64_t pieces = total * ((D + index_t(16 / sizeof(T)) - 1) / index_t(16 / sizeof(T)));
  copy_listed_rows_kernel<true, T><<<blocks_for(pieces, 256), 256, 0, stream>>>(
      lists.src_rows, total, o, int(H), int(rows), int(D), vec, packed, int(D), lse_packed, lse);
  check(cudaGetLastError(), "copy_listed_rows_kernel (scatter) launch");
}

}  // namespace attnkit::cuda::detail
