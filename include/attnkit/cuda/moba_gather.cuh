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
//      each (query, block) pair's state: for softmax its output and lse, else the float
//      partial state (o, m, l);
//   4. the forward kernel over the queries' own blocks (OwnBlockCausal), the same states
//      (softmax's output straight into o);
//   5. one merge per query: own state (+) its routed blocks' states, in block order, then the
//      score's finalize (softmax: outputs weighed by exp(lse_k - lse)).
// The tensor-core work is then that of the allowed pairs (plus whole-tile rounding of each
// list), at the price of copying the routed Q rows and writing and reading the states. Scores
// with a per-row key count (softplus log-n scaling) and modifiers, which need positions the
// gathered rows no longer carry, keep the bound-mask path.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "../core/problem.hpp"
#include "../mask/full.hpp"
#include "../mask/routing.hpp"
#include "../score/partial_state.hpp"
#include "bind.hpp"
#include "gather_lists.cuh"
#include "sequences.cuh"

namespace attnkit::cuda::detail {


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

// The lists of routed queries: list s = bh * nkb + kb takes the rows of head bh routed to kb;
// each placed row records its packed row in its slot (the rank of kb among its routed blocks).
struct MoBARoutedLists {
  MoBALists L;
  const std::uint64_t* bits;
  std::int32_t* slot_rows;  // [B, Hq, Nq, slots]

  __host__ __device__ std::int64_t sequences() const { return L.sequences(); }
  __host__ __device__ int rows() const { return L.Nq; }
  __device__ std::int64_t head(std::int64_t s) const { return s / L.nkb; }
  __device__ int key(std::int64_t s) const { return int(s % L.nkb); }  // the key block
  __device__ int first_row(std::int64_t s) const { return L.first_row(key(s)); }
  __device__ const std::uint64_t* row_bits(std::int64_t hd, int i) const { return bits + (hd * L.Nq + i) * L.words; }
  __device__ bool member(std::int64_t hd, int kb, int i) const { return (row_bits(hd, i)[kb / 64] >> (kb % 64)) & 1u; }
  __device__ void placed(std::int64_t hd, int kb, int i, int at) const {
    const std::uint64_t* rb = row_bits(hd, i);
    int slot = 0;  // its routed blocks below kb (its own block is above kb)
    for (int w = 0; w < kb / 64; ++w) slot += __popcll(rb[w]);
    slot += __popcll(rb[kb / 64] & ((std::uint64_t(1) << (kb % 64)) - 1));
    slot_rows[(hd * L.Nq + i) * L.slots + slot] = at;
  }
};

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

// Softmax keeps no float partial states: each launch writes its rows finished, in the output
// type, with their lse (the own-block launch straight into o), and the merge weighs the
// outputs by exp(lse_k - lse) -- FlashInfer's merge of (v, s) states. For 16-bit outputs that
// is half the bytes of (o, m, l) in float, written and read; each routed output is rounded to
// the output type once before the final rounding (relative error ~2^-9 each for bfloat16).
template <class TO>
struct MoBAMergeLseArgs {
  MoBALists L;
  int Dv;
  bool vec;  // o's rows 16-byte aligned and Dv a multiple of 16 bytes: a thread moves 16 bytes
  const float* own_lse;  // [B, Hq, Nq]: the own block's rows are in o already
  const TO* part_o;      // packed rows (x Dv)
  const float* part_lse;
  const std::int32_t* slot_rows;  // [B, Hq, Nq, slots]
  SeqRows<TO> o;
  SeqRows<float> lse;  // nullable
};

// A piece of a row: 16 bytes (vec) or one value, as floats.
template <class TO, int Per>
struct RowPiece {
  float x[Per];
  __device__ __forceinline__ void load(const TO* src, bool vec) {
    if (vec) {
      const uint4 w = *reinterpret_cast<const uint4*>(src);
      const TO* e = reinterpret_cast<const TO*>(&w);
#pragma unroll
      for (int u = 0; u < Per; ++u) x[u] = ptx::to_f32(e[u]);
    } else {
      x[0] = ptx::to_f32(*src);
#pragma unroll
      for (int u = 1; u < Per; ++u) x[u] = 0.f;
    }
  }
  __device__ __forceinline__ void store(TO* dst, bool vec, float f) const {
    if (vec) {
      uint4 w;
      TO* e = reinterpret_cast<TO*>(&w);
#pragma unroll
      for (int u = 0; u < Per; ++u) e[u] = ptx::from_f32<TO>(x[u] * f);
      *reinterpret_cast<uint4*>(dst) = w;
    } else {
      *dst = ptx::from_f32<TO>(x[0] * f);
    }
  }
};

// A thread per 16 bytes of a query row (or per value), two round trips deep: its slot rows
// with its piece of o and the own lse, then the routed states' lse and pieces, folded in
// online (m, sum, acc) a batch at a time. (A warp per row waited on a chain of round trips:
// 234-253 us at N = 16384 x 16 heads on the H200; a thread per piece that read the lse first
// for their maximum, 182 us at 1.4 TB/s.)
template <class TO>
__global__ void moba_merge_lse_kernel(const __grid_constant__ MoBAMergeLseArgs<TO> a) {
  constexpr int batch = 2, Per = int(16 / sizeof(TO));
  const MoBALists& L = a.L;
  const int per = a.vec ? Per : 1, pieces = (a.Dv + per - 1) / per;
  const std::int64_t e = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= std::int64_t(L.B) * L.Hq * L.Nq * pieces) return;
  const std::int64_t row = e / pieces;
  const int d = int(e - row * pieces) * per, i = int(row % L.Nq);
  const int b = int(row / L.Nq / L.Hq), h = int(row / L.Nq % L.Hq);
  const int n = L.routed_count(i + L.q_offset);
  const std::int32_t* slots = a.slot_rows + row * L.slots;
  float* lse_out = a.lse.data && d == 0 ? a.lse.row(b, h, i) : nullptr;
  float m = a.own_lse[row];
  if (n == 0) {  // o holds the finished row
    if (lse_out) *lse_out = m;
    return;
  }
  TO* dst = a.o.row(b, h, i) + d;
  RowPiece<TO, Per> acc;
  acc.load(dst, a.vec);
  float sum = 1.f;  // weights relative to m (an empty own block's go to 0 at the first rescale)
  for (int k0 = 0; k0 < n; k0 += batch) {
    std::int32_t at[batch];
    float lse[batch];
    RowPiece<TO, Per> piece[batch];
#pragma unroll
    for (int u = 0; u < batch; ++u) at[u] = k0 + u < n ? slots[k0 + u] : -1;
#pragma unroll
    for (int u = 0; u < batch; ++u) {
      lse[u] = neg_inf;
      if (at[u] < 0) continue;
      lse[u] = a.part_lse[at[u]];
      piece[u].load(a.part_o + std::int64_t(at[u]) * a.Dv + d, a.vec);
    }
    float m_new = m;
#pragma unroll
    for (int u = 0; u < batch; ++u) m_new = fmaxf(m_new, lse[u]);
    if (m_new == neg_inf) continue;  // all empty so far
    const float c = m == neg_inf ? 0.f : math<float>::exp(m - m_new);
    sum *= c;
#pragma unroll
    for (int v = 0; v < Per; ++v) acc.x[v] *= c;
#pragma unroll
    for (int u = 0; u < batch; ++u) {
      if (lse[u] == neg_inf) continue;
      const float w = math<float>::exp(lse[u] - m_new);
      sum += w;
#pragma unroll
      for (int v = 0; v < Per; ++v) acc.x[v] += w * piece[u].x[v];
    }
    m = m_new;
  }
  if (m == neg_inf) {  // every state empty: o holds zeros
    if (lse_out) *lse_out = m;
    return;
  }
  acc.store(dst, a.vec, 1.f / sum);
  if (lse_out) *lse_out = m + math<float>::log(sum);
}

}  // namespace attnkit::cuda::detail
