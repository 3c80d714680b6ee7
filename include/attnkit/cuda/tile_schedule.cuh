#pragma once
// The order in which a ragged or paged prefill runs its query tiles. The host knows the batch
// size, the longest sequence and the total row count, but not each sequence's length (device
// arrays it does not read), so a grid of B x (longest / BM) query tiles leaves most CTAs with
// nothing to do when lengths differ (8 sequences of 588..4096 rows: 132 real tiles of 256
// per head; one long sequence among short ones: almost all empty), and each empty CTA still
// holds its SM while it reads the offsets. A one-CTA pre-pass lists the real tiles instead,
// sequence by sequence, the sequences whose tiles visit the most keys first
// (longest-processing-time first: a long prompt behind many short ones no longer starts last).
// Within a sequence the grid keeps the dense order, head by head and the tiles with the most
// causal keys first, so that the CTAs running together share their K and V rows in L2
// (measured on the H100: interleaving the heads of equally long tiles instead ran 8-sequence
// batches 9% slower).
#include <cstdint>

#include "../core/problem.hpp"
#include "../mask/concepts.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

// The list's entry for one query tile: the sequence, where its tiles start in the list and
// how many it has; b < 0 marks a slot past the real tiles. CTA c runs entry c / Hq of the
// list; within a sequence's CTAs, the head, then the tile, longest first (the forward kernel).
struct VarlenTile {
  std::int32_t b, first, count;
};

// Slots the list needs: no more than the dense grid's tiles, nor than ceil(len / BM) summed
// over the sequences, which is at most (total + B (BM - 1)) / BM.
inline index_t varlen_tile_slots(index_t batch, index_t longest, index_t total_rows, index_t BM) {
  const index_t dense = batch * ((longest + BM - 1) / BM);
  const index_t bound = (total_rows + batch * (BM - 1)) / BM;
  return dense < bound ? dense : bound;
}

template <class Mask, class T, class KV>
struct ScheduleArgs {
  SeqRows<const T> q;
  KV kv;
  ProblemInfo p;  // B sequences, the longest Nq and Nk
  bool q_offset_given;
  Mask mask;
  VarlenTile* tiles;  // [slots]
  int slots;
};

inline constexpr int schedule_threads = 512;
// Sequences are ranked by the key tiles of 128 their tiles visit at most, in this many classes
// (longer ones share the last).
inline constexpr int schedule_levels = 2048;
inline constexpr int schedule_key_unit = 128;

// Exclusive prefix sum of one int per thread over the block; `total` receives the sum of all.
template <int NT>
__device__ __forceinline__ int block_exclusive_scan(int v, int& total) {
  __shared__ int warp_sums[NT / 32];
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  int x = v;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, x, d);
    if (lane >= d) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  int before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < NT / 32; ++w) {
    before += w < warp ? warp_sums[w] : 0;
    total += warp_sums[w];
  }
  __syncthreads();  // warp_sums free for the next call
  return before + x - v;
}

template <int BM, class Mask, class T, class KV>
__global__ void __launch_bounds__(schedule_threads) schedule_varlen_tiles(const __grid_constant__ ScheduleArgs<Mask, T, KV> a) {
  constexpr int NT = schedule_threads, L = schedule_levels, per_thread = L / NT;
  static_assert(L % NT == 0);
  __shared__ int cursor[L];
  const int tid = int(threadIdx.x), B = int(a.p.B);
  for (int i = tid; i < L; i += NT) cursor[i] = 0;
  __syncthreads();

  // Sequence b's query tiles and its class: the key units of 128 its first or last tile may
  // visit, whichever is more (the last under causal masks, all alike under the others).
  auto tiles_of = [&](int b, ProblemInfo& p) {
    p = sequence_problem(a.p, a.q, a.kv, a.q_offset_given, b);
    return int((p.Nq + BM - 1) / BM);
  };
  auto units_of = [&](const ProblemInfo& p, int qtile) {
    const index_t i0 = index_t(qtile) * BM, i1 = min(p.Nq, i0 + BM);
    const KeyBounds kb = mask_key_bounds(a.mask, p.pos(i0), p.pos(i1), p.Nk);
    return kb.lo < kb.hi ? int((kb.hi + schedule_key_unit - 1) / schedule_key_unit - kb.lo / schedule_key_unit) : 0;
  };
  auto level_of = [&](const ProblemInfo& p, int n) { return min(max(units_of(p, 0), units_of(p, n - 1)), L - 1); };

  // 1. Tiles per class.
  for (int b = tid; b < B; b += NT) {
    ProblemInfo p;
    const int n = tiles_of(b, p);
    if (n > 0) atomicAdd(&cursor[level_of(p, n)], n);
  }
  __syncthreads();
  // 2. Each class's first slot, the classes in descending order: thread tid owns classes
  // L - 1 - tid * per_thread down to L - (tid + 1) * per_thread.
  int counts[per_thread], sum = 0;
#pragma unroll
  for (int k = 0; k < per_thread; ++k) sum += counts[k] = cursor[L - 1 - (tid * per_thread + k)];
  int n_tiles = 0;
  int slot = block_exclusive_scan<NT>(sum, n_tiles);
#pragma unroll
  for (int k = 0; k < per_thread; ++k) {
    cursor[L - 1 - (tid * per_thread + k)] = slot;
    slot += counts[k];
  }
  __syncthreads();
  // 3. Each sequence's run of entries (the order of sequences within a class is whichever
  // thread comes first), then the unused slots.
  for (int b = tid; b < B; b += NT) {
    ProblemInfo p;
    const int n = tiles_of(b, p);
    if (n == 0) continue;
    const int first = atomicAdd(&cursor[level_of(p, n)], n);
    for (int i = 0; i < n; ++i) a.tiles[first + i] = VarlenTile{b, first, n};
  }
  for (int t = n_tiles + tid; t < a.slots; t += NT) a.tiles[t] = VarlenTile{-1, 0, 0};
}

}  // namespace attnkit::cuda::detail
