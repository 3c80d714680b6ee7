#pragma once
// Cluster routing (Routing Transformer) prefill with work proportional to the allowed pairs.
// A query and a key interact iff their nearest centroids are the same; bound as a mask over
// row-major tiles (ClusterIds), a tile is skipped only when its query and key tiles share no
// cluster, which with more than a few clusters almost never happens: every tile is visited
// and tested element by element. Here each query and each key belongs to exactly one
// cluster, so per (batch, head, cluster) the cluster's queries and keys are gathered into
// packed buffers (gather_lists.cuh) and run as one ragged batch with no mask; the packed
// output rows are then scattered back. No partial states: each query's keys are all in one
// list. Scores with a per-row key count and modifiers keep the bound mask.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "gather_lists.cuh"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

// List s = bh * C + c: the rows of head bh whose cluster is c.
struct ClusterLists {
  const std::uint8_t* ids;  // [heads, n_rows]
  std::int64_t heads;
  int n_rows, C;

  __host__ __device__ std::int64_t sequences() const { return heads * C; }
  __host__ __device__ int rows() const { return n_rows; }
  __device__ std::int64_t head(std::int64_t s) const { return s / C; }
  __device__ int key(std::int64_t s) const { return int(s % C); }  // the cluster
  __device__ int first_row(std::int64_t) const { return 0; }
  __device__ bool member(std::int64_t hd, int c, int i) const { return ids[hd * n_rows + i] == c; }
  __device__ void placed(std::int64_t, int, int, int) const {}
};

// Keys of sequence s = (b * Hq + h) * C + c: the packed key list (b * Hkv + h / group) * C + c.
template <class T>
struct ListedKV {
  static constexpr bool varlen = true;
  const T *k, *v;
  int k_stride, v_stride;
  const std::int32_t* offsets;  // of the key lists
  int hq, group, C;

  __device__ __forceinline__ int list(int s) const {
    const int bh = s / C, b = bh / hq, h = bh % hq;
    return (b * (hq / group) + h / group) * C + s % C;
  }
  __device__ __forceinline__ int length(int s) const { return offsets[list(s) + 1] - offsets[list(s)]; }
  __device__ __forceinline__ StridedRows<const T> k_rows(int s, int) const {
    return {k + std::int64_t(offsets[list(s)]) * k_stride, k_stride};
  }
  __device__ __forceinline__ StridedRows<const T> v_rows(int s, int) const {
    return {v + std::int64_t(offsets[list(s)]) * v_stride, v_stride};
  }
  __device__ __forceinline__ const T* any() const { return k; }
  __device__ __forceinline__ const T* any_v() const { return v; }
};

}  // namespace attnkit::cuda::detail
