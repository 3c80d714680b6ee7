#pragma once
// MoBA prefill with work proportional to the routed blocks. MoBA routes each query token on
// its own, so the rows of one query tile pick different key blocks: bound as a mask over
// row-major tiles (MoBARows), a tile visits the union of its rows' blocks with every element
// tested, and on uncorrelated inputs that union is nearly every earlier block (N = 16384,
// blocks of 512, top 3: slower than dense attention). Here the routed part runs gathered:
//   1. routing bits per query (bind.hpp's pre-pass: key-block means, then the top_k - 1 best
//      earlier blocks of each query);
//   2. per (batch, head, key block) the list of queries routed to that block, in row order,
//      their Q rows copied into a packed buffer (one sequence of a varlen problem each);
//   3. the forward kernel over those sequences, keys = the block's rows, no mask, writing
//      each (query, block) pair's partial state;
//   4. the forward kernel over the queries' own blocks (OwnBlockCausal), partial states;
//   5. one merge per query: own state (+) its routed blocks' states, in block order, then the
//      score's finalize.
// The tensor-core work is then that of the allowed pairs (plus whole-tile rounding of each
// list), at the price of copying the routed Q rows and writing and reading float partial
// states. Scores with a per-row key count (softplus log-n scaling) and modifiers, which need
// positions the gathered rows no longer carry, keep the bound-mask path.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "../core/problem.hpp"
#include "../mask/full.hpp"
#include "../mask/routing.hpp"
#include "../score/partial_state.hpp"
#include "bind.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

// Calls with fewer query rows (decoding steps, short chunks) keep the bound mask: a tile of so
// few rows routes to few blocks, and the lists' fixed costs would dominate.
inline constexpr index_t moba_gather_min_rows = 64;

// How the routed pairs are laid out: sequence s = (b * Hq + h) * nkb + kb lists the queries
// of (b, h) routed to key block kb, other than their own block.
struct MoBALists {
  int B, Hq, Nq, nkb, block, words, slots;  // slots: routed blocks per query besides its own (top_k - 1)
  std::int64_t q_offset;
  __host__ __device__ std::int64_t sequences() const { return std::int64_t(B) * Hq * nkb; }
  // Query rows i >= first_row(kb) have their own block after kb.
  __host__ __device__ int first_row(int kb) const {
    const std::int64_t i = std::int64_t(kb + 1) * block - q_offset;
    return int(i < 0 ? 0 : (i > Nq ? Nq : i));
  }
  // Routed blocks of the query at position pos besides its own: min(slots, blocks before it).
  __host__ __device__ int routed_count(std::int64_t pos) const {
    const std::int64_t own = pos / block, before = own < nkb ? own : nkb;
    return int(before < slots ? before : slots);
  }
};

// Keys of sequence s: the rows of block kb of (b, kv head), the last block possibly short.
template <class T>
struct RoutedBlockKV {
  static constexpr bool varlen = true;
  SeqRows<const T> k, v;  // dense [B, Hkv, Nk, D]
  int nk, block, nkb, hq, group;

  __device__ __forceinline__ int length(int s) const {
    const int lo = (s % nkb) * block, n = nk - lo;
    return n < block ? n : block;
  }
  __device__ __forceinline__ const T* first_row(const SeqRows<const T>& x, int s) const {
    const int kb = s % nkb, bh = s / nkb, b = bh / hq, hk = (bh % hq) / group;
    return x.row(b, hk, kb * block);
  }
  __device__ __forceinline__ StridedRows<const T> k_rows(int s, int) const { return {first_row(k, s), k.s[2]}; }
  __device__ __forceinline__ StridedRows<const T> v_rows(int s, int) const { return {first_row(v, s), v.s[2]}; }
  __device__ __forceinline__ const T* any() const { return k.data; }
  __device__ __forceinline__ const T* any_v() const { return v.data; }
};

inline constexpr int moba_list_warps = 8;

// Whether query row i of (b, h) is routed to block kb (kb before its own block).
__device__ __forceinline__ bool moba_routed(const MoBALists& L, const std::uint64_t* bits, std::int64_t bh, int i, int kb) {
  return (bits[(bh * L.Nq + i) * L.words + kb / 64] >> (kb % 64)) & 1u;
}

// The lists are built by warps that each scan one piece of `chunk` query rows of one
// sequence (a warp per whole sequence left 512 warps walking 8K rows each, latency-bound:
// 0.1 ms to count and 6 ms to fill with the copies, at N = 16384 x 16 heads on the H200).
// Piece c of sequence s is item s * pieces + c.
struct MoBAPieces {
  int chunk, pieces;  // rows per piece, pieces per sequence
  __host__ __device__ std::int64_t items(const MoBALists& L) const { return L.sequences() * pieces; }
};

// The piece a warp scans: its sequence s = bh * nkb + kb and its rows [lo, hi).
struct MoBAPiece {
  std::int64_t item, s, bh;
  int kb, c, lo, hi;
  __device__ MoBAPiece(const MoBALists& L, const MoBAPieces& P, std::int64_t it) : item(it), s(it / P.pieces), bh(s / L.nkb) {
    kb = int(s % L.nkb), c = int(it % P.pieces);
    lo = max(L.first_row(kb), c * P.chunk), hi = min(L.Nq, (c + 1) * P.chunk);
  }
};

// One warp per piece: how many of its queries are routed to the sequence's block. (The list
// kernels are templates only so that a header can define them in every translation unit.)
template <int Warps = moba_list_warps>
__global__ void moba_count_kernel(MoBALists L, MoBAPieces P, const std::uint64_t* bits, int* counts) {
  const std::int64_t item = std::int64_t(blockIdx.x) * Warps + threadIdx.x / 32;
  if (item >= P.items(L)) return;
  const MoBAPiece pc(L, P, item);
  const int lane = int(threadIdx.x) % 32;
  int n = 0;
  for (int i0 = pc.lo; i0 < pc.hi; i0 += 32) {
    const int i = i0 + lane;
    n += __popc(__ballot_sync(0xffffffffu, i < pc.hi && moba_routed(L, bits, pc.bh, i, pc.kb)));
  }
  if (lane == 0) counts[item] = n;
}

// Exclusive prefix sum of counts[0, n) into offsets[0, n] (one CTA).
template <int NT>
__global__ void __launch_bounds__(NT) moba_scan_kernel(const int* counts, std::int64_t n, std::int32_t* offsets) {
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

// One warp per piece: its routed queries in row order get packed rows from the piece's
// offset on; each records its source row (b * Hq + h) * Nq + i in src_rows, and its packed
// row in the query's slot (the rank of kb among its routed blocks) of slot_rows. The first
// piece of a sequence writes the sequence's offset (seq_offsets[S] is the total).
template <int Warps = moba_list_warps>
__global__ void moba_fill_kernel(MoBALists L, MoBAPieces P, const std::uint64_t* bits, const std::int32_t* offsets,
                                 std::int32_t* seq_offsets, std::int32_t* src_rows, std::int32_t* slot_rows) {
  const std::int64_t item = std::int64_t(blockIdx.x) * Warps + threadIdx.x / 32;
  if (item >= P.items(L)) return;
  const MoBAPiece pc(L, P, item);
  const int lane = int(threadIdx.x) % 32, kb = pc.kb;
  const std::int64_t bh = pc.bh;
  if (lane == 0 && pc.c == 0) seq_offsets[pc.s] = offsets[item];
  if (lane == 0 && item == P.items(L) - 1) seq_offsets[L.sequences()] = offsets[item + 1];
  int next = offsets[item];
  for (int i0 = pc.lo; i0 < pc.hi; i0 += 32) {
    const int i = i0 + lane;
    const bool on = i < pc.hi && moba_routed(L, bits, bh, i, kb);
    const unsigned found = __ballot_sync(0xffffffffu, on);
    if (on) {
      const int at = next + __popc(found & ((1u << lane) - 1u));
      const std::uint64_t* row_bits = bits + (bh * L.Nq + i) * L.words;
      int slot = 0;  // its routed blocks below kb (its own block is above kb)
      for (int w = 0; w < kb / 64; ++w) slot += __popcll(row_bits[w]);
      slot += __popcll(row_bits[kb / 64] & ((std::uint64_t(1) << (kb % 64)) - 1));
      slot_rows[(bh * L.Nq + i) * L.slots + slot] = at;
      src_rows[at] = std::int32_t(bh * L.Nq + i);
    }
    next += __popc(found);
  }
}

// The routed queries' Q rows into the packed buffer, a thread per 16 bytes (8 values).
template <class T>
__global__ void moba_gather_q_kernel(MoBALists L, const std::int32_t* src_rows, std::int64_t routed, SeqRows<const T> q,
                                     int D, bool vec, T* q_packed, int packed_stride) {
  const int chunks = (D + 7) / 8;
  const std::int64_t e = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= routed * chunks) return;
  const std::int64_t at = e / chunks;
  const int ch = int(e % chunks), src = src_rows[at];
  const int bh = src / L.Nq, i = src % L.Nq;
  const T* from = q.row(bh / L.Hq, bh % L.Hq, i) + ch * 8;
  T* to = q_packed + at * packed_stride + ch * 8;
  if (vec) {
    *reinterpret_cast<uint4*>(to) = *reinterpret_cast<const uint4*>(from);
  } else {
    for (int d = 0; d < 8 && ch * 8 + d < D; ++d) to[d] = from[d];
  }
}

// One warp per query row: its own block's state (+) its routed blocks' states, then the
// score's finalize into o (and lse).
template <class Score, class TO>
struct MoBAMergeArgs {
  MoBALists L;
  int Dv;
  const float *own_o, *own_m, *own_l;  // [B, Hq, Nq] (x Dv)
  const float *part_o, *part_m, *part_l;  // packed rows (x Dv)
  const std::int32_t* slot_rows;  // [B, Hq, Nq, slots]
  SeqRows<TO> o;
  SeqRows<float> lse;
  Score score;
};

inline constexpr int moba_merge_warps = 8;

template <class Score, class TO>
__global__ void moba_merge_kernel(const __grid_constant__ MoBAMergeArgs<Score, TO> a) {
  constexpr int per_lane = 4;  // Dv <= 128
  const MoBALists& L = a.L;
  const std::int64_t row = std::int64_t(blockIdx.x) * moba_merge_warps + threadIdx.x / 32;
  if (row >= std::int64_t(L.B) * L.Hq * L.Nq) return;
  const int lane = int(threadIdx.x) % 32, i = int(row % L.Nq);
  const std::int64_t bh = row / L.Nq;
  float o[per_lane];
  const float* src = a.own_o + row * a.Dv;
#pragma unroll
  for (int e = 0; e < per_lane; ++e) o[e] = lane + 32 * e < a.Dv ? src[lane + 32 * e] : 0.f;
  float m = a.own_m[row], l = a.own_l[row];
  const int n = L.routed_count(i + L.q_offset);
  for (int k = 0; k < n; ++k) {
    const std::int64_t at = a.slot_rows[row * L.slots + k];
    const float m2 = a.part_m[at], l2 = a.part_l[at];
    float c1 = 1.f, c2 = 1.f, mn = m;
    if constexpr (Score::tracks_max) {
      mn = m2 > m ? m2 : m;
      if (mn == neg_inf) continue;  // both sides empty
      c1 = math<float>::exp(m - mn), c2 = math<float>::exp(m2 - mn);
    }
    const float* o2 = a.part_o + at * a.Dv;
#pragma unroll
    for (int e = 0; e < per_lane; ++e)
      if (lane + 32 * e < a.Dv) o[e] = c1 * o[e] + c2 * o2[lane + 32 * e];
    l = c1 * l + c2 * l2, m = mn;
  }
  const int b = int(bh / L.Hq), h = int(bh % L.Hq);
  const float f = a.score.template finalize_factor<float>(m, l);
  TO* dst = a.o.row(b, h, i);
#pragma unroll
  for (int e = 0; e < per_lane; ++e)
    if (lane + 32 * e < a.Dv) dst[lane + 32 * e] = ptx::from_f32<TO>(o[e] * f);
  if constexpr (score_has_lse<Score>())
    if (a.lse.data && lane == 0) *a.lse.row(b, h, i) = row_lse(m, l);
}

}  // namespace attnkit::cuda::detail
