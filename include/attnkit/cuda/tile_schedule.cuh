#pragma once
// The order in which a ragged or paged prefill runs its query tiles. The host knows the batch
// size, the longest sequence and the total row count, but not each sequence's length (device
// arrays it does not read), so a grid of B x (longest / BM) query tiles leaves most CTAs with
// nothing to do when lengths differ (8 sequences of 588..4096 rows: 2112 real tiles of 4096
// per head; one long sequence among short ones: almost all empty), and each empty CTA still
// holds its SM while it reads the offsets. A one-CTA pre-pass lists the real tiles instead,
// ordered by how many keys each may visit, most first (longest-processing-time first: the
// long causal tiles of every sequence start in the first waves instead of behind the shorter
// tiles of the sequences before them), and the forward kernel's grid walks that list with the
// query heads innermost.
#include <cstdint>

#include "../core/problem.hpp"
#include "../mask/concepts.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

// One query tile of a varlen launch; b < 0 marks a slot past the real tiles.
struct VarlenTile {
  std::int32_t b, qtile;
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
  std::int32_t* first;  // [B + 1] scratch: the first tile of each sequence
  VarlenTile* tiles;    // [slots]
  int slots;
};

inline constexpr int schedule_threads = 512;
// Tiles are ranked by key tiles of 128 visited, in this many classes (longer ones share the last).
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

  // 1. The first tile of each sequence: each thread scans a run of consecutive sequences.
  const int run = (B + NT - 1) / NT, b0 = min(B, tid * run), b1 = min(B, b0 + run);
  int mine = 0;
  for (int b = b0; b < b1; ++b) mine += (a.q.length(b, int(a.p.Nq)) + BM - 1) / BM;
  int n_tiles = 0;
  int at = block_exclusive_scan<NT>(mine, n_tiles);
  for (int b = b0; b < b1; ++b) {
    a.first[b] = at;
    at += (a.q.length(b, int(a.p.Nq)) + BM - 1) / BM;
  }
  if (tid == 0) a.first[B] = n_tiles;
  for (int i = tid; i < L; i += NT) cursor[i] = 0;
  __syncthreads();  // first[] and the counters are complete

  // The sequence and query tile of listed tile t, and the class of the keys it may visit.
  auto tile_of = [&](int t, int& b, int& qtile) {
    int lo = 0, hi = B;  // the last sequence whose first tile is <= t (empty ones share it)
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (a.first[mid] <= t) lo = mid;
      else hi = mid;
    }
    b = lo, qtile = t - a.first[lo];
  };
  auto level_of = [&](int b, int qtile) {
    const ProblemInfo p = sequence_problem(a.p, a.q, a.kv, a.q_offset_given, b);
    const index_t i0 = index_t(qtile) * BM, i1 = min(p.Nq, i0 + BM);
    const KeyBounds kb = mask_key_bounds(a.mask, p.pos(i0), p.pos(i1), p.Nk);
    if (kb.lo >= kb.hi) return 0;
    const index_t units = (kb.hi + schedule_key_unit - 1) / schedule_key_unit - kb.lo / schedule_key_unit;
    return int(units < L - 1 ? units : L - 1);
  };

  // 2. Tiles per class.
  for (int t = tid; t < n_tiles; t += NT) {
    int b, qtile;
    tile_of(t, b, qtile);
    atomicAdd(&cursor[level_of(b, qtile)], 1);
  }
  __syncthreads();
  // 3. Each class's first slot, the classes in descending order: thread tid owns classes
  // L - 1 - tid * per_thread down to L - (tid + 1) * per_thread.
  int counts[per_thread], sum = 0;
#pragma unroll
  for (int k = 0; k < per_thread; ++k) sum += counts[k] = cursor[L - 1 - (tid * per_thread + k)];
  int unused = 0;
  int slot = block_exclusive_scan<NT>(sum, unused);
#pragma unroll
  for (int k = 0; k < per_thread; ++k) {
    cursor[L - 1 - (tid * per_thread + k)] = slot;
    slot += counts[k];
  }
  __syncthreads();
  // 4. The list (the order within a class is whichever thread comes first), then the unused slots.
  for (int t = tid; t < n_tiles; t += NT) {
    int b, qtile;
    tile_of(t, b, qtile);
    a.tiles[atomicAdd(&cursor[level_of(b, qtile)], 1)] = VarlenTile{b, qtile};
  }
  for (int t = n_tiles + tid; t < a.slots; t += NT) a.tiles[t] = VarlenTile{-1, 0};
}

}  // namespace attnkit::cuda::detail
