#pragma once
// The fused forward kernel (FlashAttention-2 structure) for any score x mask x mods
// (content-dependent masks bind per head to the output of bind.hpp's pre-pass).
//
// One CTA owns BM = 16 x warps queries of one (batch, query head); each warp owns 16 rows.
// Q stays in registers as mma A-fragments (on sm_90a with D = 128, in shared memory, read by
// wgmma). K and V tiles of BN = 64 keys (128 on that wide path) stream through two shared
// buffers each with cp.async: while tile j computes, K of tile j + 1 and V of tile j load, one
// barrier per tile. Shared tiles use the 128-byte swizzle of gmma.hpp: what wgmma
// reads, and free of bank conflicts for ldmatrix. Per key tile j:
//   S = Q K_j^T             (sm_90a: wgmma per warpgroup, K read from shared memory;
//                            elsewhere mma.sync m16n8k16 over ldmatrix fragments; fp32)
//   O += P_{j-1} V_{j-1}    (the previous tile's product, issued behind S: on sm_90a the
//                            tensor cores run it while this tile's weights are computed)
//   logits, mods, mask       (per element only on tiles the mask classifies as partial)
//   monoid update            (running max, then O rescaled once P_{j-1} V_{j-1} is in)
// P is re-packed from the S accumulators into A-fragments. Tiles the mask classifies as
// skip are never loaded.
#include <bit>
#include <cstdint>
#include <type_traits>

#include "../core/math.hpp"
#include "../core/problem.hpp"
#include "../mask/concepts.hpp"
#include "../mods/concepts.hpp"
#include "../score/concepts.hpp"
#include "../score/sigmoid.hpp"
#include "../score/softmax.hpp"
#include "../score/softplus.hpp"
#include "bind.hpp"
#include "gmma.hpp"
#include "patch_tiles.cuh"
#include "ptx.hpp"
#include "sequences.cuh"
#include "tile_schedule.cuh"
#include "tma.hpp"

namespace attnkit::cuda::detail {

// Tile shape of the forward kernel for a padded head dim HD (64 or 128) covering D and Dv.
// Key tiles are BN = 64 keys on the mma.sync path; the wgmma path takes wide_BN keys (128
// halves the per-tile fixed costs: barrier, row maxima, loop control), with Q then read by
// the tensor cores from shared memory so that the wider S fits the registers.
template <int HD_, int Warps = 4, int WideBN = 64>
struct ForwardTiles {
  static constexpr int HD = HD_;
  static constexpr int warps = Warps, BM = 16 * warps, BN = 64, wide_BN = WideBN, threads = warps * 32;
  static_assert(wide_BN == 64 || wide_BN == 128, "wgmma key tiles of 64 or 128 keys");
  static constexpr int chunks = HD / 8;  // 16-byte chunks per shared row
  // CTAs per SM the registers are capped for. Four warps: three CTAs (168 registers, a few
  // spilled words) interleave their weights and tensor-core phases; H100 D=64 1.18x two CTAs.
  static constexpr int min_blocks = warps == 4 ? 3 : 8 / warps;
  static_assert(HD % 64 == 0, "the swizzle needs at least 8 chunks of 16 bytes per row");
  static_assert(warps % 4 == 0, "wgmma: whole warpgroups");
};

// How one forward kernel instantiation runs its tiles, on wgmma (sm_90a code) or mma.sync:
// the device code and the host's shared-memory size read the same numbers.
template <class Tiles, bool Patched, bool Linear>
struct ForwardShape {
  // Tiles on wgmma take wide key tiles (linear attention's quadratic form measured 7% slower
  // on wide tiles: it keeps 64).
  static constexpr int key_tile(bool gmma) { return gmma && !Linear ? Tiles::wide_BN : Tiles::BN; }
  // Two warpgroups on wgmma ping-pong (see the kernel).
  static constexpr bool ping_pong(bool gmma) { return gmma && !Linear && Tiles::threads == 256; }
  // The ping-pong's trailing warpgroup lets its P V j - 1 run on under its weights while V of
  // tile j + 1 is copied: a third V buffer.
  static constexpr bool overlap_pv(bool gmma) { return ping_pong(gmma); }
  static constexpr int v_buffers(bool gmma) { return overlap_pv(gmma) ? 3 : 2; }
  // Q, two K buffers and the V buffers; then the visit list (launch_forward).
  static constexpr int tile_bytes(bool gmma) { return (Tiles::BM + (2 + v_buffers(gmma)) * key_tile(gmma)) * Tiles::HD * 2; }
  static constexpr int align_slack = 1024;  // the tiles start on a 1024-byte boundary
};

// A thread's mask bits of a partial tile: S fragment element (n, e) (n-tile n, e = 2 r + column
// parity) is bit 4 (n % 8) + e of word n / 8. Unrolled loops index the words statically.
template <int SN>
struct TileBits {
  static constexpr int words = (SN + 7) / 8;
  std::uint32_t w[words];
  __device__ __forceinline__ static TileBits all() {
    TileBits b;
#pragma unroll
    for (int i = 0; i < words; ++i) b.w[i] = ~0u;
    return b;
  }
  __device__ __forceinline__ static TileBits none() {
    TileBits b;
#pragma unroll
    for (int i = 0; i < words; ++i) b.w[i] = 0u;
    return b;
  }
  __device__ __forceinline__ void set(int n, int e, bool ok) { w[n / 8] |= std::uint32_t(ok) << (4 * (n % 8) + e); }
  __device__ __forceinline__ bool test(int n, int e) const { return (w[n / 8] >> (4 * (n % 8) + e)) & 1u; }
};

// Element offset of (row, col) in a swizzled [rows][HD] tile of 16-bit values.
template <int HD>
__device__ __forceinline__ int swz(int row, int col) {
  return row * HD + ((((col >> 3) ^ row) & 7) | ((col >> 3) & ~7)) * 8 + (col & 7);
}

// Shared tile layouts for load_tile: rows of HD values with 16-byte chunks XOR-permuted by row
// (the decode kernel), or gmma.hpp's 128-byte swizzle of an R-row tile (the forward kernel).
template <int HD>
struct RowSwizzle {
  __device__ static int at(int row, int col) { return swz<HD>(row, col); }
};
template <int HD, int R>
struct BlockSwizzle {
  __device__ static int at(int row, int col) { return gmma::swizzled<HD, R>(row, col); }
};

// Kernel arguments: where the rows live (KV: dense, ragged or paged keys and values) and the
// resolved problem (for ragged batches: the largest sequence; each CTA reads its own lengths).
template <class Variant, class Score, class T, class TO, class KV = ContiguousKV<T, false>>
struct ForwardArgs {
  SeqRows<const T> q;
  KV kv;
  SeqRows<TO> o;
  SeqRows<float> lse;  // nullable
  SeqRows<float> m, l;  // partial mode: o is the unnormalised float state, m and l its row terms
  bool partial;
  bool q_offset_given;  // ragged batches: Options::q_offset applies to every sequence
  ProblemInfo p;
  Variant attn;
  Score score;  // resolved
  typename DeviceBinder<typename Variant::mask_type>::Data bind;  // content-dependent masks: pre-pass output
  bool vec;         // 16-byte aligned rows: cp.async path
  bool count_rows;  // the score needs each row's allowed-key count
  int cached_tiles; // key tiles whose classes fit the visit list in shared memory (after the tiles)
  patch_tiling_t<typename Variant::mask_type> patches;  // 2-D/3-D neighborhoods: the patch kernel's tiling
  KeyTileMaps tma;  // dense K and V whose tiles the copy engine fetches (sm_90a, row-major tiles)
  const VarlenTile* tiles;  // varlen: the query tiles to run, in order (null: the dense grid)
};

// v[n] = op(v[n], v[n + W]) for n < W, then the same on the first half: one level of the
// tree per instantiation (a loop over the levels was left rolled, v in local memory).
template <int W, int N, class Op>
__device__ __forceinline__ void fold_halves(float (&v)[N], Op op) {
  if constexpr (W > 0) {
#pragma unroll
    for (int n = 0; n < W; ++n) v[n] = op(v[n], v[n + W]);
    fold_halves<W / 2>(v, op);
  }
}

// Row r's 2 x SN values of an accumulator tile (s[n][2r], s[n][2r + 1]) reduced by op in a
// balanced tree: a chain of dependent ops leaves the scheduler idle on each one's latency
// while the other warpgroup's warps wait on the tensor cores (ping-pong).
template <int SN, class Op>
__device__ __forceinline__ float row_reduce(const float (&s)[SN][4], int r, Op op) {
  static_assert((SN & (SN - 1)) == 0, "a tile's key columns come in a power of two of 8-column blocks");
  float v[SN];
#pragma unroll
  for (int n = 0; n < SN; ++n) v[n] = op(s[n][2 * r], s[n][2 * r + 1]);
  fold_halves<SN / 2>(v, op);
  return v[0];
}

// Sources of a tile's rows for load_rows: whether tile row r exists, and its address.
// Consecutive rows [row0, row0 + R) of row(i), those at or past n_rows absent: the bound
// test is kept apart from the address (a null test on the address instead costs the dense
// kernel 5%, measured).
template <class RowPtr>
struct RowRange {
  const RowPtr& row;
  int row0, n_rows;
  __device__ __forceinline__ bool has(int r) const { return row0 + r < n_rows; }
  __device__ __forceinline__ auto at(int r) const { return row(row0 + r); }
};
// Rows by a slot -> token map (patch tiling): token -1 is absent.
template <class RowPtr, class TokenOf>
struct GatheredRows {
  const RowPtr& row;
  const TokenOf& token_of;
  __device__ __forceinline__ bool has(int r) const { return token_of(r) >= 0; }
  __device__ __forceinline__ auto at(int r) const { return row(token_of(r)); }
};

// Row ranges of a strided tensor: load_rows steps one pointer through them.
template <class Source>
inline constexpr bool strided_range = false;
template <class T>
inline constexpr bool strided_range<RowRange<StridedRows<T>>> = true;
template <class Source>
inline constexpr bool paged_range = false;
template <class T>
inline constexpr bool paged_range<RowRange<PagedRows<T>>> = true;

// Loads R rows x [0, HD) of `src` into a swizzled shared tile; absent rows and columns at or
// past n_cols are zero-filled. `any` is a valid address for the zero-byte copies.
template <int HD, int R, int Threads, class Layout = RowSwizzle<HD>, class T, class Source>
__device__ __forceinline__ void load_rows(T* smem, const Source& src, const T* any, int n_cols, bool vec,
                                          int tid = threadIdx.x) {  // tid in [0, Threads)
  constexpr int chunks = HD / 8, iters = (R * chunks + Threads - 1) / Threads;
  // (Both swizzles repeat every 8 rows: at(r + 8k, c) = at(r, c) + at(8k, 0).)
  if constexpr (strided_range<Source> && Threads % chunks == 0 && Threads / chunks % 8 == 0) {
    if (vec) {
      // Strided rows (dense and ragged batches): a thread copies the same 16-byte column of
      // rows r0, r0 + Threads / chunks, ..., so one pointer steps through them. Addressing each
      // row from its index instead cost ~30 instructions per copy in the SASS, a third of the
      // forward kernel's instructions per key tile.
      constexpr int step_rows = Threads / chunks;
      const int ch = tid % chunks, r0 = tid / chunks;
      const int rows_left = ch * 8 < n_cols ? src.n_rows - src.row0 - r0 : 0;  // rows this thread copies
      const T* from = src.row.base + (std::int64_t(src.row0) + r0) * src.row.stride + ch * 8;
      const std::int64_t step = std::int64_t(step_rows) * src.row.stride;
      T* const to = smem + Layout::at(r0, ch * 8);
#pragma unroll
      for (int it = 0; it < iters; ++it, from += step) {
        if (R % step_rows != 0 && r0 + it * step_rows >= R) break;
        // Absent rows copy zero bytes: nothing is read at their (out-of-range) address.
        ptx::cp_async_16(to + Layout::at(it * step_rows, 0), from, it * step_rows < rows_left ? 16 : 0);
      }
      return;
    }
  }
  if constexpr (paged_range<Source> && Threads % chunks == 0 && Threads / chunks % 8 == 0 && R % (Threads / chunks) == 0) {
    if (vec) {
      // Paged rows (prefill from a paged cache): the same 16-byte column of rows r0,
      // r0 + Threads / chunks, ... Every block-table entry is read before the first copy, so
      // the copies wait for one round trip of loads, not one each (with a branch per row the
      // compiler issued each read right before its copy: a paged prefill ran at a quarter of
      // the packed one's speed). Rows past the end read the last row's entry instead of
      // branching, and copy nothing.
      constexpr int step_rows = Threads / chunks;
      const int ch = tid % chunks, r0 = tid / chunks;
      const auto& rows = src.row;
      if (src.n_rows <= src.row0) {  // no row of the tile exists (the zero V before the first tile)
#pragma unroll
        for (int it = 0; it < iters; ++it) ptx::cp_async_16(smem + Layout::at(r0 + it * step_rows, ch * 8), any, 0);
        return;
      }
      const int last = src.n_rows - 1;
      int page_id[iters], slot[iters];
#pragma unroll
      for (int it = 0; it < iters; ++it) {
        const int j = min(src.row0 + r0 + it * step_rows, last), q = rows.page.quotient(j);
        page_id[it] = rows.table[q];
        slot[it] = rows.page.remainder(j, q);
      }
      T* const to = smem + Layout::at(r0, ch * 8);
      const int cols = ch * 8 < n_cols ? 16 : 0;
#pragma unroll
      for (int it = 0; it < iters; ++it)  // absent rows and columns copy zero bytes of an in-pool address
        ptx::cp_async_16(to + Layout::at(it * step_rows, 0), rows.at(page_id[it], slot[it]) + ch * 8,
                         src.has(r0 + it * step_rows) ? cols : 0);
      // The entries of the tile after this one into L1: visits mostly go tile by tile, and its
      // reads then wait for L1 instead of L2.
      if (src.row0 + R < src.n_rows) ptx::prefetch_l1(rows.table + rows.page.quotient(min(src.row0 + R + r0, last)));
      return;
    }
  }
  if (vec) {
    // A fixed trip count unrolls fully, so that the row addresses are all computed before the
    // copies are issued.
#pragma unroll
    for (int it = 0; it < iters; ++it) {
      const int c = tid + it * Threads;
      if (R * chunks % Threads != 0 && c >= R * chunks) break;
      const int r = c / chunks, ch = c % chunks;
      const bool ok = src.has(r) && ch * 8 < n_cols;
      const T* from = ok ? src.at(r) + ch * 8 : any;
      ptx::cp_async_16(smem + Layout::at(r, ch * 8), from, ok ? 16 : 0);
    }
  } else {  // unaligned rows or odd head dims: element loads
    for (int e = tid; e < R * HD; e += Threads) {
      const int r = e / HD, col = e % HD;
      T x{};
      if (src.has(r) && col < n_cols) x = src.at(r)[col];
      smem[Layout::at(r, col)] = x;
    }
  }
}

// Rows [row0, row0 + R) of row(i), rows at or past n_rows as zeros.
template <int HD, int R, int Threads, class Layout = RowSwizzle<HD>, class T, class RowPtr>
__device__ __forceinline__ void load_tile(T* smem, const RowPtr& row, const T* any, int row0, int n_rows, int n_cols,
                                          bool vec, int tid = threadIdx.x) {
  load_rows<HD, R, Threads, Layout>(smem, RowRange<RowPtr>{row, row0, n_rows}, any, n_cols, vec, tid);
}

// The 16-byte-aligned patch at `origin` (patch_tiles.cuh) of strided rows into a swizzled
// shared tile. Slot offsets along axis a are the bits `mask[a] << low[a]` of the slot index,
// the innermost axis's the low KI bits. A thread copies one 16-byte column of slots r0,
// r0 + step, ... (step divides 2^KI, r0 < step): slot r0 + step * it is inner offset r0 plus a
// constant and outer index a constant, so each copy's bound test and token offset are a few
// operations on the tile's first token, which comes to zero bytes where a coordinate lies
// outside the sub-grid. (Deriving each token from the slot index axis by axis cost 29
// instructions a copy, a quarter of the patch kernel's; Nsight Compute.)
template <int HD, int R, int Threads, class Layout, int KI, int Rank, class T>
__device__ __forceinline__ void load_patch_tile(T* smem, const StridedRows<const T>& rows, const T* any,
                                                const PatchCTA<Rank>& geom, const int (&origin)[Rank],
                                                const int (&low)[Rank], const int (&mask)[Rank], int n_cols, int tid) {
  constexpr int chunks = HD / 8, step = Threads / chunks, iters = R / step, in = Rank - 1;
  static_assert(Threads % chunks == 0 && step % 8 == 0 && R % step == 0, "whole swizzle periods per pass");
  static_assert((1 << KI) % step == 0, "a thread's slots keep their inner offset modulo the step");
  const int ch = tid % chunks, r0 = tid / chunks;
  const int x0 = origin[in] + r0;  // inner sub-grid coordinate of the thread's first slot
  int first_token = geom.group_base + x0 * geom.step[in];
#pragma unroll
  for (int a = 0; a < in; ++a) first_token += origin[a] * geom.step[a];
  const T* const first = rows.base + std::int64_t(first_token) * rows.stride + ch * 8;
  T* const to = smem + Layout::at(r0, ch * 8);
  const bool column_ok = ch * 8 < n_cols;
#pragma unroll
  for (int it = 0; it < iters; ++it) {
    const int di = (step * it) & ((1 << KI) - 1), o = (step * it) >> KI;  // constants
    bool ok = column_ok && unsigned(x0 + di) < unsigned(geom.sub_len[in]);
    int offset = di * geom.step[in];
#pragma unroll
    for (int a = 0; a < in; ++a) {
      // 2-D: the outer index is axis 0's offset; 3-D: bit fields of it.
      const int local = Rank == 2 ? o : (o >> (low[a] - KI)) & mask[a];
      ok = ok && unsigned(origin[a] + local) < unsigned(geom.sub_len[a]);
      offset += local * geom.step[a];
    }
    ptx::cp_async_16(to + Layout::at(it * step, 0), ok ? first + std::int64_t(offset) * rows.stride : any, ok ? 16 : 0);
  }
}

// Bits [lo, lo + w) of [0, n), n <= 32.
__device__ __forceinline__ std::uint32_t span_bits(int lo, int w, int n) {
  const int a = min(max(lo, 0), n), b = min(max(lo + w, 0), n);
  const std::uint32_t below_b = b >= 32 ? ~0u : (1u << b) - 1u, below_a = a >= 32 ? ~0u : (1u << a) - 1u;
  return below_b & ~below_a;
}

// Mask bits (TileBits: S element (n, e) at bit 4 (n % 8) + e of word n / 8) of a key patch
// for this thread's rows r = 0, 1, each allowed on the box [win_lo, win_lo + win_w) of sub-
// grid coordinates. Slot c = 8n + 2t + e has inner offset c mod 2^ki (ki = 4 or 5) and outer
// index c >> ki = n >> (ki - 3). Per row, the inner offsets allowed are an interval (one bit
// mask, compacted to the thread's 2t + e columns and repeated over the word's n) and the
// outer indices a set (one bit each, spread over their n): some forty integer operations per
// row and tile, where a compare per key and axis cost more than the tile's exponentials.
template <int SN, int KI, int Rank>
__device__ __forceinline__ TileBits<SN> patch_tile_bits(const PatchCTA<Rank>& geom, const int (&origin)[Rank],
                                                        const int (&win_lo)[2][Rank], const int (&win_w)[2][Rank], int t) {
  static_assert(KI == 4 || KI == 5, "key patches 16 or 32 wide");
  constexpr int in = Rank - 1, ki = KI;
  std::uint32_t inner[2], outer[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    // Inner offsets 8m + 2t + e -> bits 4m + e (m < 4), then over the word's eight n.
    const std::uint32_t x = (span_bits(win_lo[r][in] - origin[in], win_w[r][in], 1 << ki) >> (2 * t)) & 0x03030303u;
    const std::uint32_t y = (x | (x >> 4)) & 0x00330033u;
    const std::uint32_t z = (y | (y >> 8)) & 0x3333u;
    inner[r] = ki == 5 ? z | (z << 16) : (z & 0x33u) * 0x01010101u;  // constant ki
    // Outer indices: the outer axes' offsets are the index's bit fields (axis in - 1 lowest).
    const std::uint32_t o_last = span_bits(win_lo[r][in - 1] - origin[in - 1], win_w[r][in - 1], geom.k_mask[in - 1] + 1);
    if constexpr (Rank == 2) {
      outer[r] = o_last;
    } else {
      const std::uint32_t o_first = span_bits(win_lo[r][0] - origin[0], win_w[r][0], geom.k_mask[0] + 1);
      const int shift = geom.k_low[0] - geom.k_low[1];
      std::uint32_t o = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i)
        if ((o_first >> i) & 1u) o |= o_last << (i << shift);
      outer[r] = o;
    }
  }
  TileBits<SN> bits;
#pragma unroll
  for (int w = 0; w < TileBits<SN>::words; ++w) {
    std::uint32_t word = 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      std::uint32_t spread;  // the row's allowed outer indices of word w, at bits 4 (n % 8) + e
      if constexpr (ki == 4) {  // four outer indices per word, a byte of bits each
        const std::uint32_t b = (outer[r] >> (4 * w)) & 0xfu;
        spread = ((b * 0x00204081u) & 0x01010101u) * 0x33u;
      } else {  // two per word, sixteen bits each
        const std::uint32_t b = (outer[r] >> (2 * w)) & 0x3u;
        spread = (b & 1u) * 0x3333u | (b >> 1) * 0x33330000u;
      }
      word |= (inner[r] & spread) << (2 * r);
    }
    bits.w[w] = word;
  }
  return bits;
}

// softplus(y ln 2) / ln 2 = max(y, 0) + log2(1 + 2^-|y|) for y in base-2 units (the caller
// applies the ln 2 once per row). Only the exponential takes the special-function unit:
// log2(1 + u) for u in [0, 1] is u times a cubic on the FMA pipe (relative error < 4e-4 over
// [0, 1] with these float coefficients, under the rounding of the 16-bit P that the weights
// become, and exact in relative terms as u -> 0, so tiny weights keep their value). -inf
// gives 0, +inf gives +inf, NaN gives NaN.
__device__ __forceinline__ float softplus_log2_units(float y) {
  const float u = ptx::exp2_ftz(-fabsf(y));
  const float q = fmaf(fmaf(fmaf(-0.10724979f, u, 0.36646372f), u, -0.7017343f), u, 1.4421259f);
  return fmaf(u, q, fmaxf(y, 0.f));
}

// The CTA's geometry of a patch-tiled launch (patch_tiles.cuh), nothing otherwise.
template <bool Patched, int BN, class Patches>
__device__ __forceinline__ auto patch_cta(const Patches& pt) {
  if constexpr (Patched) return PatchCTA<Patches::rank>(pt, int(blockIdx.x), std::countr_zero(unsigned(BN)));
  else return NoPatches{};
}

// Patched: queries and keys tiled as neighborhood patches (patch_tiles.cuh) instead of
// row-major; every visited key tile is then partial.
template <class Tiles, bool Patched, class Variant, class Score, class T, class TO, class KV>
__global__ void __launch_bounds__(Tiles::threads, Tiles::min_blocks)
    forward_kernel(const __grid_constant__ ForwardArgs<Variant, Score, T, TO, KV> a) {
  constexpr bool use_gmma = gmma::available;
  constexpr bool linear = is_linear_score<Score>();
  constexpr int HD = Tiles::HD, BM = Tiles::BM, NT = Tiles::threads;
  using Shape = ForwardShape<Tiles, Patched, linear>;
  constexpr int BN = Shape::key_tile(use_gmma);
  // Wide tiles read Q from shared memory (wgmma with both operands there), else Q stays in
  // registers as A fragments.
  constexpr bool q_in_smem = use_gmma && BN > 64;
  constexpr int KS = HD / 16;   // k-steps of Q K^T
  constexpr int SN = BN / 8;    // n-tiles of S per warp
  constexpr int ON = HD / 8;    // n-tiles of O per warp
  constexpr bool tracks_max = Score::tracks_max;
  constexpr bool base2 = std::is_same_v<Score, Softmax>;  // exp2 with log2(e) folded into the scale
  constexpr float logit_unit = base2 ? 1.4426950408889634f : 1.f;

  using QLayout = BlockSwizzle<HD, BM>;
  using KVLayout = BlockSwizzle<HD, BN>;
  using Bits = TileBits<SN>;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  // wgmma's swizzle repeats every 1024 bytes of address: the tiles start on such a boundary.
  unsigned char* smem_tiles = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  T* sQ = reinterpret_cast<T*>(smem_tiles);
  T* sK = sQ + BM * HD;       // K buffers: tile j in sK + (j % 2) * BN * HD
  T* sV = sK + 2 * BN * HD;   // V buffers: see v_bufs

  // This CTA's sequence, query head and query tile, the longest (causal) tiles first: from the
  // dense grid, or for varlen launches with a tile list from its entry blockIdx.x / Hq
  // (tile_schedule.cuh: the sequence's CTAs are heads x tiles, one head after another).
  int b = int(blockIdx.z), h = int(blockIdx.y), qtile = int(gridDim.x - 1 - blockIdx.x);
  if constexpr (KV::varlen) {
    if (a.tiles) {
      const VarlenTile tile = a.tiles[blockIdx.x / unsigned(a.p.Hq)];
      if (tile.b < 0) return;  // past the real tiles
      const int r = int(blockIdx.x) - tile.first * int(a.p.Hq);  // in [0, Hq x count)
      b = tile.b, h = r / tile.count, qtile = tile.count - 1 - (r - h * tile.count);
    }
  }
  // Ragged and paged batches: this sequence's lengths and score (dense batches read a.p as is).
  ProblemInfo p_seq = a.p;
  Score score_seq = a.score;
  if constexpr (KV::varlen) {
    p_seq = sequence_problem(a.p, a.q, a.kv, a.q_offset_given, b);
    score_seq = score_for_keys(a.score, p_seq.Nk);
  }
  const ProblemInfo& p = KV::varlen ? p_seq : a.p;
  const Score& score = KV::varlen ? score_seq : a.score;
  const float scale_unit = p.scale * logit_unit;
  const int hk = int(h / p.group());
  const int i0 = qtile * BM;
  if (KV::varlen && i0 >= p.Nq) return;  // ragged: this sequence is shorter than the longest
  using Patches = decltype(a.patches);
  constexpr int prank = Patches::rank > 0 ? Patches::rank : 1;
  const auto geom = patch_cta<Patched, BN>(a.patches);
  if constexpr (Patched)
    if (geom.empty()) return;  // a patch past the end of a shorter sub-grid
  const int Nq = int(p.Nq), Nk = int(p.Nk), D = int(p.D), Dv = int(p.Dv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  // This head's mask: content-dependent masks bind to the pre-pass selection.
  const auto mask = DeviceBinder<typename Variant::mask_type>::bind(a.attn.mask, a.bind, p, b, h, hk);
  using MaskT = std::remove_cv_t<decltype(mask)>;
  // Softmax sanitises NaN and +inf logits (sanitize_logit) only in tiles that have one, found
  // by its row maxima; logit masks test the sanitised value, so they sanitise every logit.
  constexpr bool late_sanitize = base2 && !LogitMask<MaskT>;
  // Softmax without modifiers keeps the raw Q K^T values: the row maximum of raw values, scaled,
  // is the maximum of the logits when the scale is positive (Q's signs are flipped, exactly, when
  // it is not), and each weight is then one FFMA and one ex2: exp2(s * scale - m).
  constexpr bool fold_scale = late_sanitize && !Variant::has_mods;
  const bool flip_q = fold_scale && scale_unit < 0.f;
  // Sigmoid without modifiers also keeps raw values: 1 / (1 + exp2(s * c1 + c0)) with the
  // scale, the bias and log2(e) in c1 and c0 (one FFMA per weight instead of a multiply, two
  // sanitising min/max and an add). A rejected pair's raw value is the infinity that c1 turns
  // into +inf (weight 0); a NaN logit, or 0 x inf under a zero scale, gives a NaN weight,
  // which the saturating reciprocal (rcp_sat) turns into 0, as sanitize_logit would; +inf
  // logits give weight 1.
  // Softplus likewise, in base 2: y = s * (lambda_i * scale * log2 e), weight ln 2 *
  // (max(y, 0) + log2(1 + 2^-|y|)), the row's lambda in its constant (the score's -inf test
  // and its per-element scale go away; the logit is sanitised as y).
  constexpr bool sigmoid_fold = std::is_same_v<Score, Sigmoid> && !Variant::has_mods && !LogitMask<MaskT>;
  constexpr bool softplus_fold = std::is_same_v<Score, Softplus> && !Variant::has_mods && !LogitMask<MaskT>;
  constexpr bool raw_fold = sigmoid_fold || softplus_fold;
  // bfloat16 Q takes each row's softplus constant into the row itself, so that S comes out as
  // y and a weight is one multiply shorter (a seventh of the weights' issue slots). bfloat16
  // holds Q * c over float's range; the product is rounded to it once, as P is. (fp16 would
  // overflow at 65504: it keeps the multiply.)
  constexpr bool softplus_q_scaled = softplus_fold && std::is_same_v<T, bfloat16>;
  [[maybe_unused]] float sig_c1 = 0.f, sig_c0 = 0.f;
  if constexpr (sigmoid_fold) {
    sig_c1 = -p.scale * 1.4426950408889634f;
    sig_c0 = -score.bias * 1.4426950408889634f;
  }
  // The raw value of a rejected pair: the infinity that the folded scale sends to weight 0
  // (a Q-scaled softplus takes y itself: -inf).
  [[maybe_unused]] const float raw_reject = p.scale < 0.f && !softplus_q_scaled ? -neg_inf : neg_inf;
  const float scale_pos = flip_q ? -scale_unit : scale_unit;

  const auto q_row = a.q.rows(b, h);
  const auto k_row = a.kv.k_rows(b, hk);
  const auto v_row = a.kv.v_rows(b, hk);

  // Key tiles this query tile may touch.
  const int rows_here = min(BM, Nq - i0);
  const index_t pos_lo = p.pos(i0), pos_hi = p.pos(i0 + rows_here);
  const KeyBounds kb = Patched ? KeyBounds{0, p.Nk} : mask_key_bounds(mask, pos_lo, pos_hi, p.Nk);
  const int k_begin = int(kb.lo > p.key_begin ? kb.lo : p.key_begin), k_end = int(kb.hi < p.key_end ? kb.hi : p.key_end);
  const int kt_end = [&] {
    if constexpr (Patched) return geom.key_tiles();
    else return k_begin < k_end ? (k_end + BN - 1) / BN : 0;
  }();
  auto classify_tile = [&](int kt) {
    const int j0 = kt * BN, j1 = min(j0 + BN, Nk);
    const TileKind c = mask_classify(mask, TileRect{pos_lo, pos_hi, j0, j1});
    if (c == TileKind::full && (j0 < k_begin || j0 + BN > k_end)) return TileKind::partial;
    return c;
  };
  // Q, and zeros as the V of the first tile's "previous" P V (issuing that product
  // unconditionally keeps the wgmma pipeline free of data-dependent branches, which ptxas
  // serialises). Their copies are in flight while the key tiles are classified.
  if constexpr (Patched) {
    if (a.vec) {
      static_assert(Patches::q_inner_bits == 4, "query patches 16 wide");
      load_patch_tile<HD, BM, NT, QLayout, 4>(sQ, q_row, a.q.data, geom, geom.q_start, geom.q_low, geom.q_mask, D, int(threadIdx.x));
    } else {
      const auto token_of = [&](int r) {
        int sub[prank];
        return geom.query_token(r, sub);
      };
      load_rows<HD, BM, NT, QLayout>(sQ, GatheredRows<decltype(q_row), decltype(token_of)>{q_row, token_of}, a.q.data, D,
                                     false);
    }
  } else {
    load_tile<HD, BM, NT, QLayout>(sQ, q_row, a.q.data, i0, Nq, D, a.vec);
  }
  constexpr int v_bufs = Shape::v_buffers(use_gmma);  // V of tile j in slot j % v_bufs
  load_tile<HD, BN, NT, KVLayout>(sV + (v_bufs - 1) * (BN * HD), v_row, a.kv.any_v(), 0, 0, Dv, a.vec);

  // Classify every key tile once, in parallel (a block mask's classify is a dependent global
  // load: done one after another they would stall the tile loop), into a list in shared
  // memory of the tiles to visit: offset from kt_first in the low 14 bits, class in the top 2.
  // The loop reads its next tile from the list instead of scanning past skipped ones, which
  // for a sparse block mask were ten dependent shared loads ahead of every tile.
  const int kt_first = Patched ? 0 : k_begin / BN;
  auto* const visit = reinterpret_cast<std::uint16_t*>(smem_tiles + Shape::tile_bytes(use_gmma));
  const bool cached = !Patched && kt_end - kt_first <= a.cached_tiles;
  int n_visit = 0;
  if (cached) {
    __shared__ int warp_kept[NT / 32];
    for (int c0 = kt_first; c0 < kt_end; c0 += NT) {
      const int c = c0 + int(threadIdx.x);
      const TileKind kind = c < kt_end ? classify_tile(c) : TileKind::skip;
      const unsigned kept = __ballot_sync(0xffffffffu, kind != TileKind::skip);
      if (lane == 0) warp_kept[warp] = __popc(kept);
      __syncthreads();
      int before = n_visit, total = n_visit;
#pragma unroll
      for (int w = 0; w < NT / 32; ++w) {
        before += w < warp ? warp_kept[w] : 0;
        total += warp_kept[w];
      }
      if (kind != TileKind::skip)
        visit[before + __popc(kept & ((1u << lane) - 1u))] = std::uint16_t((c - kt_first) | (int(kind) << 14));
      n_visit = total;
      __syncthreads();  // the list is complete, and warp_kept free for the next round
    }
  }
  // Visited tile i of the list and its class (cached), or kt_end past the last.
  const auto visit_tile = [&](int i) { return i < n_visit ? kt_first + (visit[i] & 0x3fff) : kt_end; };
  const auto visit_kind = [&](int i) { return TileKind(visit[i] >> 14); };
  auto tile_kind = [&](int kt) {
    if constexpr (Patched) return TileKind::partial;  // never full: the windows differ across a patch
    else return classify_tile(kt);
  };
  // Ping-pong of the two warpgroups (sm_90a): the second one runs half a tile behind, its
  // barrier placed after its tensor-core work instead of before it. Between two barriers the
  // first warpgroup's S and P V then run on the tensor cores while the second computes weights,
  // and the other way round, where in step the two would compute weights at the same time with
  // the tensor cores idle. The code stays one copy; only where each warpgroup waits differs.
  constexpr bool ping_pong = Shape::ping_pong(use_gmma), overlap_pv = Shape::overlap_pv(use_gmma);
  const bool trailing = ping_pong && warp >= 4;
  // The first warpgroup copies the K tiles and the second the V tiles, each right after its
  // barrier: the copies then have a whole step to land, and each warpgroup spends half the
  // address arithmetic.
  constexpr int loaders = ping_pong ? NT / 2 : NT;
  const auto v_buf = [&](int j) { return sV + (j % v_bufs) * (BN * HD); };  // V of tile j >= 0
  const int loader_id = int(threadIdx.x) % loaders;

  // Key tile kt (K or V rows) into a shared buffer: row-major keys [kt * BN, kt * BN + BN),
  // or the slots of a key patch.
  const auto load_key_tile = [&](T* dst, const auto& rows, const T* any, int kt, int n_cols) {
    if constexpr (Patched) {
      int origin[prank];
      geom.key_origin(kt, origin);
      if (a.vec) {
        // (one copy per key patch width, so that a slot's offsets are constants)
        if (geom.k_inner_bits == 5)
          load_patch_tile<HD, BN, loaders, KVLayout, 5>(dst, rows, any, geom, origin, geom.k_low, geom.k_mask, n_cols, loader_id);
        else
          load_patch_tile<HD, BN, loaders, KVLayout, 4>(dst, rows, any, geom, origin, geom.k_low, geom.k_mask, n_cols, loader_id);
      } else {
        const auto token_of = [&](int c) { return geom.key_token(origin, c); };
        load_rows<HD, BN, loaders, KVLayout>(dst, GatheredRows<std::remove_cvref_t<decltype(rows)>, decltype(token_of)>{rows, token_of},
                                             any, n_cols, false, loader_id);
      }
    } else {
      load_tile<HD, BN, loaders, KVLayout>(dst, rows, any, kt * BN, Nk, n_cols, a.vec, loader_id);
    }
  };
  // Token of key slot c of the patch at `origin` (-1 outside the grid); row-major: c.
  [[maybe_unused]] const auto geom_key = [&](const int (&origin)[prank], int c) {
    if constexpr (Patched) return geom.key_token(origin, c);
    else return c;
  };
  auto next_tile = [&](int kt) {  // first tile >= kt that is not skipped
    while (kt < kt_end && tile_kind(kt) == TileKind::skip) ++kt;
    return kt;
  };

  // Makes this thread's finished copies visible to every thread and to the tensor cores.
  const auto publish = [] {
    if constexpr (use_gmma) gmma::fence_shared_for_async();
    __syncthreads();
  };

  // Key tiles by TMA (tma.hpp): the loading warpgroup's first thread requests a whole tile,
  // counted on the mbarrier of its buffer (K buffers 0-1, V buffers 2-4); every thread waits on
  // the tiles it reads next where it would otherwise wait for its own cp.async copies. Buffer
  // b's n-th tile completes the barrier's phase n, so tile j waits for parity (j / buffers) & 1.
  // Paged caches: the tile's boxes, one per page and column block, are spread over the loading
  // warpgroup's warps, a lane per box (the copy instruction takes its operands from uniform
  // registers, so a warp issues its boxes one after another); each warp arrives once with its
  // share of the bytes. One warp issuing all of them held its warpgroup's next wgmma back by
  // that serial issue and its table reads. A sequence's last, partial tile comes by cp.async
  // (which zero-fills past the sequence, where a page holds stale rows) with bare arrivals.
  constexpr bool paged_kv = is_paged_source<KV>;
  constexpr int loader_warps = loaders / 32;
  constexpr bool tma_able = use_gmma && !Patched && !linear && (!KV::varlen || paged_kv);
  const bool tma = tma_able && a.tma.on;
  __shared__ alignas(8) std::uint64_t tile_bar[2 + v_bufs];
  if constexpr (tma_able) {
    if (tma) {
      if (threadIdx.x == 0) {
        for (int i = 0; i < 2 + v_bufs; ++i) tma::init(&tile_bar[i], paged_kv ? loader_warps : 1);
        tma::fence_init();
      }
      __syncthreads();
    }
  }
  // Tile kt of K or V into `dst`, by TMA (counted on tile_bar[bar]) or cp.async.
  const auto fetch = [&](T* dst, int bar, const CUtensorMap* map, const auto& rows, const T* any, int kt, int n_cols) {
    if constexpr (tma_able) {
      if (tma) {
        if constexpr (paged_kv) {
          if ((kt + 1) * BN <= Nk) {
            // Boxes of box_rows slots (a page, or a whole tile of a larger page): boxes per
            // column block and box_rows are powers of two (tma::page_tile_map's page sizes).
            const int page_size = int(rows.page.d), box_rows = page_size < BN ? page_size : BN;
            const int box_shift = __ffs(BN / box_rows) - 1, tasks = (HD / 64) << box_shift;
            const int lw = loader_id / 32, lane_l = loader_id % 32;  // task = lw + loader_warps * lane
            const int warp_boxes = (tasks - lw + loader_warps - 1) / loader_warps;
            if (lane_l == 0) tma::arrive_expect(&tile_bar[bar], unsigned(warp_boxes * box_rows * 64 * 2));
            __syncwarp();
            for (int task = lw + loader_warps * lane_l; task < tasks; task += 32 * loader_warps) {
              const int i = task & ((1 << box_shift) - 1), block = task >> box_shift;
              const int j = kt * BN + i * box_rows, q = rows.page.quotient(j);
              tma::load_box(dst + block * (BN * 64) + i * box_rows * 64, map, &tile_bar[bar], rows.page.remainder(j, q), block,
                            hk, rows.table[q]);
            }
            // The next tile's entries into L1 for its lanes' reads.
            if (loader_id == 0 && (kt + 1) * BN < Nk) ptx::prefetch_l1(rows.table + rows.page.quotient((kt + 1) * BN));
            return;
          }
          if (loader_id % 32 == 0) tma::arrive(&tile_bar[bar]);
        } else {
          if (loader_id == 0) {
            tma::arrive_expect(&tile_bar[bar], BN * HD * 2);
            tma::load_box(dst, map, &tile_bar[bar], kt * BN, 0, hk, b);
          }
          return;
        }
      }
    }
    load_key_tile(dst, rows, any, kt, n_cols);
  };
  // K and V of visited tile j: K buffers (and barriers) 0-1, V buffers 0 to v_bufs - 1 (barriers 2 on).
  const auto fetch_k = [&](int j, int kt) { fetch(sK + (j & 1) * (BN * HD), j & 1, &a.tma.k, k_row, a.kv.any(), kt, D); };
  const auto fetch_v = [&](int j, int kt) { fetch(v_buf(j), 2 + j % v_bufs, &a.tma.v, v_row, a.kv.any_v(), kt, Dv); };
  // Before the barrier that opens visited tile jb: K of tile jb (if there is one) and V of tile
  // jb - 1 have landed. (cp.async: each thread's own copies; TMA: the tiles' barriers.)
  const auto await_tiles = [&](int jb, bool k_tile) {
    ptx::cp_async_wait<0>();
    if constexpr (tma_able) {
      if (tma) {
        if (k_tile) tma::wait(&tile_bar[jb & 1], unsigned(jb >> 1) & 1u);
        if (jb >= 1) tma::wait(&tile_bar[2 + (jb - 1) % v_bufs], unsigned((jb - 1) / v_bufs) & 1u);
      }
    }
  };

  // ---- prologue: the first K tile; then Q, it and the zero V are in
  int kt = cached ? visit_tile(0) : next_tile(kt_first);
  if (kt < kt_end && !trailing) fetch_k(0, kt);
  ptx::cp_async_commit();
  await_tiles(0, kt < kt_end);
  publish();

  // Q fragments of this warp's 16 rows (feature-mapped for linear attention), or Q in place in
  // shared memory, signs flipped and feature-mapped there.
  std::uint32_t qf[KS][4];
  if constexpr (q_in_smem) {
    if (flip_q) {
      auto* const words = reinterpret_cast<std::uint32_t*>(sQ);
      for (int e = threadIdx.x; e < BM * HD / 2; e += NT) words[e] ^= 0x80008000u;  // sign bits of both values
    }
    if constexpr (linear) {
      for (int e = threadIdx.x; e < BM * HD; e += NT) {
        const int r = e / HD, col = e % HD;
        if (col < D) {
          T& x = sQ[QLayout::at(r, col)];
          x = ptx::from_f32<T>(score.feature(ptx::to_f32(x)));
        }
      }
    }
    if (flip_q || linear) publish();
  }
  // The shared-memory address of this warpgroup's 64 rows of Q (128 bytes each), wgmma's A
  // operand when Q stays in shared memory. Its first row is broadcast from lane 0 so that nvcc
  // sees a warp-uniform value and keeps the Q descriptors on the uniform datapath: built from
  // warp / 4, they took a vector add and a move per wgmma, which waited behind the weights'
  // FMA-pipe work of the other warps (Nsight Compute: dispatch stalls on softplus's Q K^T
  // wgmmas). Computed once here, not per key tile: the broadcast sat on each tile's path to
  // its first wgmma.
  [[maybe_unused]] const std::uint32_t q_wg_smem =
      ptx::smem_addr(sQ) + std::uint32_t(__shfl_sync(0xffffffffu, (warp / 4) * 64, 0)) * 128u;
#pragma unroll
  for (int ks = 0; ks < (q_in_smem ? 0 : KS); ++ks) {
    ptx::ldmatrix_x4(qf[ks], sQ + QLayout::at(warp * 16 + lane % 16, ks * 16 + (lane / 16) * 8));
    if (flip_q)
#pragma unroll
      for (int r = 0; r < 4; ++r) qf[ks][r] ^= 0x80008000u;  // sign bits of both 16-bit values
    if constexpr (linear) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int col = ks * 16 + 2 * t + (r / 2) * 8;
        const float2 x = ptx::unpack2<T>(qf[ks][r]);
        qf[ks][r] = ptx::pack2<T>(col < D ? score.feature(x.x) : 0.f, col + 1 < D ? score.feature(x.y) : 0.f);
      }
    }
  }

  // Rows of this thread: r = 0 -> warp row g, r = 1 -> g + 8.
  int row_i[2];
  index_t row_pos[2];
  bool row_ok[2];
  // Patch tiling: each row's window per axis, [win_lo, win_lo + win_w) in sub-grid units.
  int win_lo[2][prank] = {}, win_w[2][prank] = {};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if constexpr (Patched) {
      int sub[prank];
      row_i[r] = geom.query_token(warp * 16 + g + 8 * r, sub);
      row_ok[r] = row_i[r] >= 0;
#pragma unroll
      for (int ax = 0; ax < prank; ++ax) {
        int start, end;
        geom.window(mask, ax, sub[ax], start, end);
        win_lo[r][ax] = start;
        win_w[r][ax] = row_ok[r] ? end - start : 0;
      }
    } else {
      row_i[r] = i0 + warp * 16 + g + 8 * r;
      row_ok[r] = row_i[r] < Nq;
    }
    row_pos[r] = p.pos(row_i[r]);
  }

  // The mask bound to each row (hoists per-row work such as a neighborhood's window).
  using RowMask = decltype(mask_row(mask, index_t(0)));
  RowMask row_mask[2] = {mask_row(mask, row_ok[0] ? row_pos[0] : pos_lo),
                         mask_row(mask, row_ok[1] ? row_pos[1] : pos_lo)};

  // Masks that are a band plus sinks per row (SpanMask): each row's allowed keys within
  // [k_begin, k_end) as two 32-bit ranges [lo, lo + w) and [k_begin, k_begin + sink_w), empty
  // for rows past the queries, so that a partial tile needs two unsigned compares per key.
  int span_lo[2] = {0, 0}, span_w[2] = {0, 0}, sink_w[2] = {0, 0};
  if constexpr (SpanMask<MaskT>) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const RowSpan sp = mask.row_span(row_pos[r]);
      const index_t hi = sp.hi < k_end ? sp.hi : k_end, lo = sp.lo > k_begin ? sp.lo : k_begin;
      const index_t sink_hi = sp.sinks < hi ? sp.sinks : hi;
      span_lo[r] = int(lo);
      span_w[r] = row_ok[r] && hi > lo ? int(hi - lo) : 0;
      sink_w[r] = row_ok[r] && sink_hi > k_begin ? int(sink_hi - k_begin) : 0;
    }
  }

  // Length-scaled scores: the number of keys each row may attend, over all keys.
  float lambda[2] = {1.f, 1.f};
  if constexpr (Patched) {
    if (a.count_rows) {  // a window's size is its key count
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float cnt = 1.f;
#pragma unroll
        for (int ax = 0; ax < prank; ++ax) cnt *= float(win_w[r][ax]);
        lambda[r] = score_row_scale<float>(score, cnt);
      }
    }
  } else if (a.count_rows) {
    float cnt[2] = {0.f, 0.f};
    // all keys the mask may allow, whatever key range this call attends
    for (int c = int(kb.lo / BN); c < int((kb.hi + BN - 1) / BN); ++c) {
      const TileKind kind = mask_classify(mask, TileRect{pos_lo, pos_hi, c * BN, min(c * BN + BN, Nk)});
      if (kind == TileKind::skip) continue;
      for (int e = 0; e < 2 * SN; ++e) {
        const int j = c * BN + (e / 2) * 8 + 2 * t + (e & 1);
        if (j >= Nk) continue;
#pragma unroll
        for (int r = 0; r < 2; ++r)
          if (row_ok[r] && (kind == TileKind::full || row_mask[r].allowed(j))) cnt[r] += 1.f;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      cnt[r] += __shfl_xor_sync(0xffffffffu, cnt[r], 1);
      cnt[r] += __shfl_xor_sync(0xffffffffu, cnt[r], 2);
      lambda[r] = score_row_scale<float>(score, cnt[r]);
    }
  }

  [[maybe_unused]] float sp_c[2] = {0.f, 0.f};  // softplus_fold: lambda_i * scale * log2 e
  if constexpr (softplus_fold) sp_c[0] = lambda[0] * p.scale * 1.4426950408889634f, sp_c[1] = lambda[1] * p.scale * 1.4426950408889634f;
  if constexpr (softplus_q_scaled) {  // Q *= the row's constant (see softplus_q_scaled)
    if constexpr (q_in_smem) {  // the quad of row r scales it, a quarter each
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp * 16 + g + 8 * r;
#pragma unroll 8
        for (int col = t * (HD / 4); col < (t + 1) * (HD / 4); ++col) {
          T& x = sQ[QLayout::at(row, col)];
          x = ptx::from_f32<T>(ptx::to_f32(x) * sp_c[r]);
        }
      }
      publish();
    } else {  // A fragments: registers 0 and 2 hold row g, 1 and 3 row g + 8
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 x = ptx::unpack2<T>(qf[ks][e]);
          qf[ks][e] = ptx::pack2<T>(x.x * sp_c[e & 1], x.y * sp_c[e & 1]);
        }
    }
  }

  float o[ON][4];
#pragma unroll
  for (int n = 0; n < ON; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {neg_inf, neg_inf}, l[2] = {0.f, 0.f};

  // O += P V over a V tile, P as A-fragments (sm_90a: issued and committed, not waited for).
  const auto accumulate_pv = [&](const std::uint32_t (&weights)[BN / 16][4], const T* v_tile) {
    if constexpr (use_gmma) {
      gmma::fence();
#pragma unroll
      for (int ks = 0; ks < BN / 16; ++ks)
        gmma::mma_rs<T, 1>(reinterpret_cast<float(&)[ON * 4]>(o), weights[ks], gmma::mn_major_step<BN>(ptx::smem_addr(v_tile), ks), 1);
      gmma::commit();
    } else {
#pragma unroll
      for (int ks = 0; ks < BN / 16; ++ks) {
#pragma unroll
        for (int n2 = 0; n2 < ON / 2; ++n2) {
          std::uint32_t vf[4];
          ptx::ldmatrix_x4_trans(vf, v_tile + KVLayout::at(ks * 16 + lane % 8 + ((lane / 8) & 1) * 8, n2 * 16 + (lane / 16) * 8));
          ptx::mma_16816<T>(o[2 * n2], weights[ks], vf[0], vf[1]);
          ptx::mma_16816<T>(o[2 * n2 + 1], weights[ks], vf[2], vf[3]);
        }
      }
    }
  };

  std::uint32_t pf_prev[BN / 16][4] = {};  // P of the previous tile, waiting for its P V
  for (int j = 0; kt < kt_end; ++j) {
    const int j0 = kt * BN;
    const TileKind kind = cached ? visit_kind(j) : tile_kind(kt);
    const int kt_next = cached ? visit_tile(j + 1) : next_tile(kt + 1);
    T* const k_tile = sK + (j & 1) * (BN * HD);
    const T* const v_prev = v_buf(j + v_bufs - 1);  // (before the first tile: the zeros)

    // K of this tile and V of the previous one are in, and every warp is past tile j - 1.
    // (The trailing warpgroup waits after its S and P V instead, and once before the first.)
    if (!trailing || j == 0) {
      await_tiles(j, true);
      publish();
    }
    if (trailing && j == 0) {
      fetch_v(j, kt);
      ptx::cp_async_commit();
    }

    if constexpr (linear) {  // phi(K) in place, only on real feature columns
      for (int e = threadIdx.x; e < BN * HD; e += NT) {
        const int r = e / HD, col = e % HD;
        if (col < D) {
          T& x = k_tile[KVLayout::at(r, col)];
          x = ptx::from_f32<T>(score.feature(ptx::to_f32(x)));
        }
      }
      publish();
    }

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
    float s[SN][4];
    if constexpr (use_gmma) {
      gmma::fence();
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const std::uint64_t k_desc = gmma::k_major_step<BN>(ptx::smem_addr(k_tile), ks);
        if constexpr (q_in_smem)  // this warpgroup's 64 rows of Q, 128 bytes each
          gmma::mma_ss<T>(reinterpret_cast<float(&)[SN * 4]>(s),
                          gmma::k_major_step<BM>(q_wg_smem, ks), k_desc, ks > 0);
        else
          gmma::mma_rs<T, 0>(reinterpret_cast<float(&)[SN * 4]>(s), qf[ks], k_desc, ks > 0);
      }
      gmma::commit();
      accumulate_pv(pf_prev, v_prev);  // runs behind S and on through this tile's weights
    } else {
#pragma unroll
      for (int n = 0; n < SN; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
        for (int n2 = 0; n2 < SN / 2; ++n2) {
          std::uint32_t kf[4];
          ptx::ldmatrix_x4(kf, k_tile + KVLayout::at(n2 * 16 + (lane / 16) * 8 + lane % 8, ks * 16 + ((lane / 8) & 1) * 8));
          ptx::mma_16816<T>(s[2 * n2], qf[ks], kf[0], kf[1]);
          ptx::mma_16816<T>(s[2 * n2 + 1], qf[ks], kf[2], kf[3]);
        }
      }
      accumulate_pv(pf_prev, v_prev);
    }
    // Tile j - 1's buffers take V of this tile and K of the next. Issued behind the tensor-core
    // work: the address arithmetic of the copies runs in its shadow. (Ping-pong: K here from
    // the first warpgroup; V from the second, one step ahead, after its barrier below.)
    if (!trailing) {
      if constexpr (!ping_pong) fetch_v(j, kt);
      if (kt_next < kt_end) fetch_k(j + 1, kt_next);
      ptx::cp_async_commit();
    } else if constexpr (ping_pong) {
      // Its S is done (K j may be refilled; overlap_pv: P V j - 1 runs on under this
      // warpgroup's weights, else it is done too) and its copy of V is in; then V of the next
      // tile, into a buffer no P V reads any more.
      if constexpr (overlap_pv) gmma::wait<1>();
      else gmma::wait<0>();
      await_tiles(j + 1, kt_next < kt_end);
      publish();
      if (kt_next < kt_end) fetch_v(j + 1, kt_next);
      ptx::cp_async_commit();
    }
    if constexpr (use_gmma) gmma::wait<1>();  // S has landed

    // Element mask of partial tiles (TileBits): from the row spans, or else from allowed() in a
    // rolled loop (masks such as neighborhoods are arithmetic-heavy and would not fit unrolled
    // 2 x SN times).
    Bits allow = Bits::all();
    // Partial-tile bits of rows whose keys are [lo, lo + w) plus the sinks [k_begin, k_begin +
    // sink_w): two unsigned compares per key (SpanMask, BlockSpanMask).
    [[maybe_unused]] const auto interval_bits = [&](const int (&lo)[2], const int (&w)[2], const int (&sink_w)[2]) {
      Bits bits = Bits::none();
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int c = 0; c < 2 * SN; ++c) {
          const int j = j0 + (c / 2) * 8 + 2 * t + (c & 1);
          const bool ok = unsigned(j - lo[r]) < unsigned(w[r]) || unsigned(j - k_begin) < unsigned(sink_w[r]);
          bits.set(c / 2, 2 * r + (c & 1), ok);
        }
      return bits;
    };
    int origin[prank] = {};  // patch tiling: the key patch's origin in sub-grid units
    if constexpr (Patched) {
      geom.key_origin(kt, origin);
      allow = geom.k_inner_bits == 5 ? patch_tile_bits<SN, 5>(geom, origin, win_lo, win_w, t)
                                     : patch_tile_bits<SN, 4>(geom, origin, win_lo, win_w, t);
    } else if constexpr (SpanMask<MaskT> && !LogitMask<MaskT>) {
      if (kind != TileKind::full) allow = interval_bits(span_lo, span_w, sink_w);
    } else if constexpr (!LogitMask<MaskT>) {
      const auto allowed_bits = [&] {
        Bits bits = Bits::none();
#pragma unroll
        for (int r = 0; r < 2; ++r) {
#pragma unroll
          for (int wi = 0; wi < Bits::words; ++wi) {
#pragma unroll 1
            for (int c = 0; c < 16; ++c) {  // key n * 8 + 2t + (c & 1) with n = 8 wi + c / 2
              const int j = j0 + (8 * wi + c / 2) * 8 + 2 * t + (c & 1);
              const bool ok = row_ok[r] && j >= k_begin && j < k_end && row_mask[r].allowed(j);
              bits.w[wi] |= std::uint32_t(ok) << (4 * (c / 2) + 2 * r + (c & 1));
            }
          }
        }
        return bits;
      };
      if (kind != TileKind::full) {
        if constexpr (BlockSpanMask<MaskT>) {
          // A tile inside one block of the mask: each row's keys are a band plus sinks (clipped
          // to [k_begin, k_end)), as for SpanMask: two unsigned compares per key.
          const index_t blk = mask.span_block(), kb = j0 / blk;
          if ((j0 + BN - 1) / blk == kb) {
            int lo_i[2], w[2], sw[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const RowSpan sp = row_ok[r] ? mask.block_span(row_pos[r], kb) : RowSpan{0, 0, 0};
              const index_t lo = sp.lo > k_begin ? sp.lo : k_begin, hi = sp.hi < k_end ? sp.hi : k_end;
              const index_t sink_hi = sp.sinks < hi ? sp.sinks : hi;
              lo_i[r] = int(lo), w[r] = hi > lo ? int(hi - lo) : 0;
              sw[r] = sink_hi > k_begin ? int(sink_hi - k_begin) : 0;
            }
            allow = interval_bits(lo_i, w, sw);
          } else {
            allow = allowed_bits();
          }
        } else {
          allow = allowed_bits();
        }
      }
    }
    // Logits; a pair the mask rejects (or a NaN logit, see sanitize_logit) becomes -inf.
    // Softmax runs in base 2: x = s * scale * log2(e), weights exp2(x - m). Full tiles take
    // a copy of the loop without the per-element mask test (the elementwise work competes
    // with the tensor cores for issue slots).
    const auto logits = [&](auto full_tile) {
#pragma unroll
      for (int n = 0; n < SN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          [[maybe_unused]] const int r = e / 2, c = n * 8 + 2 * t + (e & 1);  // mods and logit masks
          [[maybe_unused]] const int j = Patched ? geom_key(origin, c) : j0 + c;
          float x = s[n][e];
          if constexpr (!linear) {
            if constexpr (Variant::has_mods) {  // only on real pairs: modifiers may index caller arrays
              const bool real = Patched ? allow.test(n, e) : row_ok[r] && j < Nk;
              x = real
                      ? a.attn.template modify<float>(x * p.scale, LogitCoord{b, h, row_i[r], row_pos[r], j}) * logit_unit
                      : neg_inf;
            } else if constexpr (!fold_scale && !raw_fold) {
              x *= scale_unit;
            }
            if constexpr (!late_sanitize && !raw_fold) x = sanitize_logit(x);
          }
          if constexpr (!decltype(full_tile)::value) {
            bool ok = allow.test(n, e);
            if constexpr (LogitMask<MaskT>)
              ok = ok && row_ok[r] && j >= k_begin && j < k_end && mask_allows(mask, row_pos[r], j, x / logit_unit);
            x = ok ? x : (raw_fold ? raw_reject : neg_inf);
          }
          s[n][e] = x;
        }
    };
    if (kind == TileKind::full) logits(std::true_type{});
    else logits(std::false_type{});

    float alpha[2] = {1.f, 1.f}, m_use[2] = {0.f, 0.f};
    float w_scale = 1.f;  // s holds logits (1) or raw Q K^T values (scale_pos, fold_scale)
    if constexpr (tracks_max) {
      float mx[2];
      // Row maxima of this tile and the running one, s scaled by `scale` (positive) first.
      const auto row_maxima = [&](auto max2, float scale = 1.f) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float t_max = row_reduce(s, r, max2);
          t_max = max2(t_max, __shfl_xor_sync(0xffffffffu, t_max, 1));
          t_max = max2(t_max, __shfl_xor_sync(0xffffffffu, t_max, 2));
          mx[r] = max2(m[r], t_max * scale);
        }
      };
      if constexpr (late_sanitize) {
        // NaN-propagating maxima: a finite maximum proves every logit of the row finite or -inf,
        // so the sanitisation runs only for the rare tile that has a NaN or +inf logit (or huge ones).
        if constexpr (fold_scale) w_scale = scale_pos;
        row_maxima([](float x, float y) { return ptx::fmax_nan(x, y); }, w_scale);
        // Also taken for maxima of magnitude 2^20 or more: the FFMA of a weight does not round
        // s * scale, so the largest one comes out as 2^(rounding error of m), which overflows once
        // m is near 2^32. And for a zero scale: 0 x -inf, a masked raw value, would be NaN.
        const auto unusual = [](float v) { return !(fabsf(v) < 0x1p20f) && v != neg_inf; };  // NaN, inf, huge
        if (__any_sync(0xffffffffu, unusual(mx[0]) || unusual(mx[1])) || (fold_scale && !(scale_pos > 0.f))) {
#pragma unroll
          for (int n = 0; n < SN; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = sanitize_logit(s[n][e] * w_scale);
          w_scale = 1.f;
          row_maxima([](float x, float y) { return fmaxf(x, y); });
        }
      } else {
        row_maxima([](float x, float y) { return fmaxf(x, y); });
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        m_use[r] = mx[r] == neg_inf ? 0.f : mx[r];
        if constexpr (base2) alpha[r] = ptx::exp2_ftz(m[r] - m_use[r]);  // m = -inf: 0
        else alpha[r] = m[r] == neg_inf ? 0.f : score.weight(m[r], m_use[r], 1.f);
        m[r] = mx[r];
      }
    }
    // The weights replace the logits in s; l = l * alpha + their row sums.
    l[0] *= alpha[0], l[1] *= alpha[1];
#pragma unroll
    for (int n = 0; n < SN; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        float& w = s[n][e];
        if constexpr (base2) w = ptx::exp2_ftz(fmaf(w, w_scale, -m_use[r]));  // -inf: 0
        else if constexpr (sigmoid_fold) w = ptx::rcp_sat(1.f + ptx::exp2_ftz(fmaf(w, sig_c1, sig_c0)));
        else if constexpr (softplus_fold) w = softplus_log2_units(softplus_q_scaled ? w : w * sp_c[r]);
        else w = w == neg_inf ? 0.f : score.weight(w, m_use[r], lambda[r]);
      }
    }
    const auto plus = [](float x, float y) { return x + y; };
    // (Sigmoid's unnormalised output needs its row sums only for partial states.)
    if (!softplus_fold && (!sigmoid_fold || a.partial)) l[0] += row_reduce(s, 0, plus), l[1] += row_reduce(s, 1, plus);
    if constexpr (overlap_pv && (base2 || sigmoid_fold)) {
      // ptxas hoists the wgmma wait below to the top of its scheduling block, and the weights
      // would wait for P V j - 1 instead of running under it: a branch ends the block after
      // them. Its body never runs (these weights are finite and >= 0: sanitised logits, a
      // saturating sigmoid; a NaN one would become a masked pair's 0); it reads every weight so
      // that none is computed past the branch. (Softplus has its own branch below.)
      if (__any_sync(0xffffffffu, !(s[SN - 1][3] >= 0.f))) {
#pragma unroll
        for (int n = 0; n < SN; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[n][e] = fmaxf(s[n][e], 0.f);
      }
    }
    if constexpr (softplus_fold) {  // the power outside the loop above: most calls have r = 1
      if (score.power != 1.f)
#pragma unroll
        for (int n = 0; n < SN; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[n][e] = ptx::pow_nonneg(s[n][e], score.power);
      float tile_l[2] = {row_reduce(s, 0, plus), row_reduce(s, 1, plus)};
      // The logits were not sanitised: a NaN one gave a NaN weight, +inf (or an overflowing
      // product) an infinite one, and either shows in the row sums. Such rare tiles get the
      // weights sanitize_logit would have led to: 0 for NaN, for +inf the largest float that
      // P's bfloat16 still holds (bfloat16's largest value).
      if (__any_sync(0xffffffffu, !(tile_l[0] + tile_l[1] < __int_as_float(0x7f800000)))) {
        tile_l[0] = tile_l[1] = 0.f;
#pragma unroll
        for (int n = 0; n < SN; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            s[n][e] = fminf(fmaxf(s[n][e], 0.f), 0x1.fep127f);
            tile_l[e / 2] += s[n][e];
          }
      }
      l[0] += tile_l[0], l[1] += tile_l[1];
    }
    // O moves to this tile's running max once P_{j-1} V_{j-1} has landed in it. (ptxas puts
    // this wait ahead of the exponentials above; a branch that kept them apart measured 1-3%
    // slower on the H100.)
    if constexpr (use_gmma) gmma::wait<0>();
    // alpha is 1 for scores without a running max, and for whole warps once the maxima settle:
    // skip the 4 x ON multiplies then.
    if (tracks_max && __any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int n = 0; n < ON; ++n) {
        o[n][0] *= alpha[0], o[n][1] *= alpha[0];
        o[n][2] *= alpha[1], o[n][3] *= alpha[1];
      }
    }
    // P in A-fragment order, packed only now: the previous P V has finished reading pf_prev,
    // and packing straight into it needs no second copy of P.
#pragma unroll
    for (int n = 0; n < SN; ++n) {
      pf_prev[n / 2][(n & 1) * 2 + 0] = ptx::pack2<T>(s[n][0], s[n][1]);
      pf_prev[n / 2][(n & 1) * 2 + 1] = ptx::pack2<T>(s[n][2], s[n][3]);
    }
    kt = kt_next;
    // After the last visited tile: its own P V, from tile j's V buffer.
    if (kt >= kt_end) {
      if (!trailing) {
        await_tiles(j + 1, false);
        publish();
      }
      accumulate_pv(pf_prev, v_buf(j));
      if constexpr (use_gmma) gmma::wait<0>();
    }
  }
  ptx::cp_async_wait<0>();

  // Finalize: full row sums across the quad, the score's factor, the output and lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  // Folded softplus summed weights in base-2 units: ln 2 ^ power turns o and l into natural ones.
  [[maybe_unused]] float o_unit = 1.f;
  if constexpr (softplus_fold) {
    o_unit = power_of(0.6931471805599453f, score.power);
    l[0] *= o_unit, l[1] *= o_unit;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!row_ok[r]) continue;
    if constexpr (std::is_same_v<TO, float>) {
      if (a.partial) {  // the unnormalised monoid state, m in natural-log units
        float* orow = a.o.row(b, h, row_i[r]);
#pragma unroll
        for (int n = 0; n < ON; ++n) {
          const int col = n * 8 + 2 * t;
          if (col < Dv) orow[col] = softplus_fold ? o[n][2 * r] * o_unit : o[n][2 * r];
          if (col + 1 < Dv) orow[col + 1] = softplus_fold ? o[n][2 * r + 1] * o_unit : o[n][2 * r + 1];
        }
        if (t == 0) {
          *a.m.row(b, h, row_i[r]) = tracks_max ? m[r] / logit_unit : 0.f;
          *a.l.row(b, h, row_i[r]) = l[r];
        }
        continue;
      }
    }
    const float f = softplus_fold ? score.finalize_factor(m[r], l[r]) * o_unit : score.finalize_factor(m[r], l[r]);
    TO* orow = a.o.row(b, h, row_i[r]);
    // Column pairs as one 4-byte store where the row allows (half the store instructions).
    constexpr bool pairs = sizeof(TO) == 2;
    const bool paired = pairs && (reinterpret_cast<std::uintptr_t>(orow) & 3u) == 0;
    // Whole rows: no column test per pair. (With the tests each pair took ten instructions and
    // a reconvergence; launches of short rows such as window 1023 spent 9% of their warp
    // samples in this epilogue.)
    const auto store_pair = [&](int n) {
      *reinterpret_cast<std::uint32_t*>(orow + n * 8 + 2 * t) = ptx::pack2<TO>(o[n][2 * r] * f, o[n][2 * r + 1] * f);
    };
    if (pairs && paired && Dv == HD) {
      if constexpr (pairs)
#pragma unroll
        for (int n = 0; n < ON; ++n) store_pair(n);
    } else {
#pragma unroll
      for (int n = 0; n < ON; ++n) {
        const int col = n * 8 + 2 * t;
        if (pairs && paired && col + 1 < Dv) {
          if constexpr (pairs) store_pair(n);
          continue;
        }
        if (col < Dv) orow[col] = ptx::from_f32<TO>(o[n][2 * r] * f);
        if (col + 1 < Dv) orow[col + 1] = ptx::from_f32<TO>(o[n][2 * r + 1] * f);
      }
    }
    if constexpr (score_has_lse<Score>()) {
      if (a.lse.data && t == 0) *a.lse.row(b, h, row_i[r]) = l[r] > 0.f ? m[r] / logit_unit + math<float>::log(l[r]) : neg_inf;
    }
  }
}

}  // namespace attnkit::cuda::detail
