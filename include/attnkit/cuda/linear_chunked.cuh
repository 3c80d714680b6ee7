#pragma once
// Linear attention with a full or causal mask in the chunked O(N D Dv) form on the GPU, on
// the tensor cores (mma.sync m16n8k16, fp32 accumulation; sm_80 and sm_90a).
//
// The keys walk in chunks of C = 64; a CTA of 4 warps owns one slice of DVS = 64 value
// columns. The state [S | z] = sum_j phi(k_j) [v_j | 1]^T (HD x (DVS + 8): the slice's columns,
// the normaliser z in column DVS) lives in fp32 registers, split over the warps by rows of D, with
// a 16-bit copy in shared memory (scaled by a power of two so that half precision cannot
// overflow) as an MMA operand. Per chunk:
//   [o | den] = phi(Q) [S | z] + (phi(Q) phi(K)^T, causal) [V | 1]   queries inside the chunk
//   [S | z]  += phi(K)^T [V | 1]
// The ones column makes the normaliser ride along in the same products. Chunk c + 1's raw
// rows load by cp.async while chunk c computes; phi is applied in shared memory.
//
// A single walk over all keys is sequential, so the keys are split into segments that run in
// parallel, in three launches:
//   1. linear_state_kernel: each state segment (state_chunks chunks) sums its keys' state and
//      writes it, in the register (fragment) order of the CTA, to a workspace slot.
//   2. linear_scan_kernel: inclusive prefix sums over the slots; slot s then holds the state of
//      every key of chunks [0, (s + 1) * state_chunks), the last slot the total.
//   3. linear_chunked_kernel: causal, each segment (seg_chunks chunks, a multiple of
//      state_chunks) starts from the state before it and walks its chunks, writing the queries
//      whose positions fall in them. Queries that see every key (all of them for a full mask,
//      which walks nothing) are split over the CTAs by tiles of rows and read the total; causal
//      queries before key 0 are zeros.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "../core/math.hpp"
#include "../core/problem.hpp"
#include "bind.hpp"  // Workspace
#include "error.hpp"
#include "forward_kernel.cuh"  // load_tile, swz
#include "occupancy.hpp"
#include "ptx.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

template <int HD_, int DVS_ = 64>
struct LinearChunkTiles {
  static constexpr int HD = HD_;                 // head dim padded to 64 or 128
  static constexpr int C = 64, DVS = DVS_, warps = 4, threads = 32 * warps;
  static constexpr int NV = DVS + 8;             // [v slice | 1 | zeros]
  static constexpr int n_tiles = NV / 8;         // n-tiles of [V | 1] and [S | z]
  // Row stride of [V | 1] and [S | z]: an odd number of 16-byte units, so that the 8 rows of an
  // ldmatrix fall in distinct bank groups.
  static constexpr int LDV = n_tiles % 2 ? NV : NV + 8;
  static constexpr int MT = HD / 16 / warps;     // m-tiles of the state per warp (rows of D)
  static_assert(MT >= 1, "the state's rows split over the warps in m-tiles of 16");
  static_assert(DVS % 16 == 0, "whole n-tiles of values, the ones column in the next");
  static constexpr int state_floats = threads * MT * n_tiles * 4;  // one workspace slot
  // Two buffers of raw-then-phi K chunks [C][HD] and [V | 1] [C][LDV]; then (chunked kernel)
  // two buffers of Q chunks [C][HD] and the 16-bit [S | z] [HD][LDV].
  static constexpr int state_smem_bytes = 2 * (C * HD + C * LDV) * 2;
  static constexpr int smem_bytes = state_smem_bytes + (2 * C * HD + HD * LDV) * 2;
};

template <class Score, class T, class TO>
struct LinearArgs {
  SeqRows<const T> q, k, v;  // dense batches (the ragged forms take the quadratic kernel)
  SeqRows<TO> o;
  ProblemInfo p;
  Score score;
  bool causal;
  bool vec;           // 16-byte aligned rows: cp.async
  float* states;      // [B][Hkv][slices][state_slots][state_floats]
  int slices;         // value slices: ceil(Dv / DVS)
  int state_chunks;   // chunks per state segment
  int state_slots;    // state segments summed (causal: those before the last segment, unless the total is needed)
  int seg_chunks;     // causal: chunks per segment of the chunked kernel, a multiple of state_chunks
  int ctas;           // chunked-kernel CTAs per (batch, head, slice): causal, one per segment
};

// One CTA's view of the call and its shared tiles, shared by the state and chunked kernels.
template <class Tiles, class Score, class T, class TO>
struct LinearCta {
  static constexpr int HD = Tiles::HD, C = Tiles::C, DVS = Tiles::DVS, NT = Tiles::threads, LDV = Tiles::LDV;
  static constexpr int MT = Tiles::MT, VT = Tiles::n_tiles, KS = HD / 16;  // VT: n-tiles of [V | 1]
  using State = float[MT][VT][4];  // warp w: rows [w * MT * 16, (w + 1) * MT * 16) of [S | z]

  const LinearArgs<Score, T, TO>& a;
  const int b, h, hk, slice, c0;  // c0: the slice's first value column
  const int D, Dv, Nq, Nk;
  const index_t qoff;
  const int tid, warp, lane, g, t;
  T* const sK0;  // buffer i: sK0 + i * C * HD
  T* const sV0;  // [C][LDV] per buffer
  T* const sQ0;  // chunked kernel only
  T* const sS;   // [HD][LDV], chunked kernel only
  int state_shift = 0;  // sS holds [S | z] * 2^-state_shift

  __device__ LinearCta(const LinearArgs<Score, T, TO>& args, unsigned char* smem, int b_, int h_, int hk_, int slice_)
      : a(args), b(b_), h(h_), hk(hk_), slice(slice_), c0(slice_ * DVS), D(int(args.p.D)), Dv(int(args.p.Dv)),
        Nq(int(args.p.Nq)), Nk(int(args.p.Nk)), qoff(args.p.q_offset), tid(int(threadIdx.x)), warp(tid / 32),
        lane(tid % 32), g(lane / 4), t(lane % 4), sK0(reinterpret_cast<T*>(smem)), sV0(sK0 + 2 * C * HD),
        sQ0(sV0 + 2 * C * LDV), sS(sQ0 + 2 * C * HD) {}

  // ---- loads (each thread's cp.async copies; the caller commits) ----

  __device__ void load_keys(int buf, int j0) const {
    load_tile<HD, C, NT>(sK0 + buf * C * HD, a.k.rows(b, hk), a.k.data, j0, Nk, D, a.vec);
  }
  // The slice's value columns of chunk j0 (zeros past Nk and Dv) into columns [0, DVS) of [V | 1].
  __device__ void load_values(int buf, int j0) const {
    T* const v = sV0 + buf * C * LDV;
    const auto v_rows = a.v.rows(b, hk);
    if (a.vec) {
      constexpr int parts = DVS / 8;  // 16-byte copies per row
      for (int e = tid; e < C * parts; e += NT) {
        const int r = e / parts, col = c0 + (e % parts) * 8;
        const bool ok = j0 + r < Nk && col < Dv;
        ptx::cp_async_16(v + r * LDV + (e % parts) * 8, ok ? v_rows(j0 + r) + col : a.v.data, ok ? 16 : 0);
      }
    } else {
      for (int e = tid; e < C * DVS; e += NT) {
        const int r = e / DVS, col = c0 + e % DVS;
        v[r * LDV + e % DVS] = j0 + r < Nk && col < Dv ? v_rows(j0 + r)[col] : T{};
      }
    }
  }
  // Query rows [row0, min(row0 + C, row_end)) into Q buffer `buf`, the rest of its rows zeros.
  __device__ void load_queries(int buf, int row0, int row_end) const {
    load_tile<HD, C, NT>(sQ0 + buf * C * HD, a.q.rows(b, h), a.q.data, row0, row_end, D, a.vec);
  }

  // ---- shared-memory passes (all threads; the caller places the barriers) ----

  // phi in place on rows [0, n) of a [C][HD] tile; the other rows and the padded columns to 0
  // (phi(0) may not be 0).
  __device__ void apply_phi(T* tile, int n) const {
    for (int e = tid; e < C * HD / 8; e += NT) {
      const int r = e / (HD / 8), col = (e % (HD / 8)) * 8;
      uint4* const at = reinterpret_cast<uint4*>(tile + swz<HD>(r, col));
      if (r >= n || col >= D) {
        *at = make_uint4(0u, 0u, 0u, 0u);
        continue;
      }
      uint4 x = *at;
      std::uint32_t* const w = &x.x;
      if (col + 8 <= D) {  // the usual case: no column checks
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = ptx::unpack2<T>(w[i]);
          w[i] = ptx::pack2<T>(a.score.feature(f.x), a.score.feature(f.y));
        }
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = ptx::unpack2<T>(w[i]);
          const int c = col + 2 * i;
          w[i] = ptx::pack2<T>(c < D ? a.score.feature(f.x) : 0.f, c + 1 < D ? a.score.feature(f.y) : 0.f);
        }
      }
      *at = x;
    }
  }
  // Columns [DVS, VT * 8) of [V | 1]: the ones column (real keys only) and zeros.
  __device__ void set_ones_column(T* v, int nk) const {
    static_assert(VT * 8 - DVS == 8, "one 16-byte store per row");
    if (tid < C) {
      const std::uint32_t one = ptx::pack2<T>(tid < nk ? 1.f : 0.f, 0.f);
      *reinterpret_cast<uint4*>(v + tid * LDV + DVS) = make_uint4(one, 0u, 0u, 0u);
    }
  }

  // ---- the state ----

  __device__ float* slot(int s) const {
    const std::int64_t cta_states = (std::int64_t(b) * a.p.Hkv + hk) * a.slices + slice;
    return a.states + (cta_states * a.state_slots + s) * Tiles::state_floats;
  }
  // Workspace slots hold each thread's fragments as float4s, thread-minor (coalesced).
  __device__ void store_state(const State& st, float* to) const {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < VT; ++n)
        reinterpret_cast<float4*>(to)[(mt * VT + n) * NT + tid] = make_float4(st[mt][n][0], st[mt][n][1], st[mt][n][2], st[mt][n][3]);
  }
  __device__ void load_state(State& st, const float* from) const {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < VT; ++n) {
        const float4 x = reinterpret_cast<const float4*>(from)[(mt * VT + n) * NT + tid];
        st[mt][n][0] = x.x, st[mt][n][1] = x.y, st[mt][n][2] = x.z, st[mt][n][3] = x.w;
      }
  }
  // The 16-bit copy of the state of `keys` keys, scaled by 2^-shift with 2^shift >= keys (its
  // entries grow with the key count; half would overflow past 65504). Every warp must be done
  // reading the previous copy.
  __device__ void store_state_copy(const State& st, int keys) {
    state_shift = 32 - __clz(keys);
    const float scale = __int_as_float((127 - state_shift) << 23);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < VT; ++n)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int d = (warp * MT + mt) * 16 + g + 8 * r;
          *reinterpret_cast<std::uint32_t*>(sS + d * LDV + n * 8 + 2 * t) =
              ptx::pack2<T>(st[mt][n][2 * r] * scale, st[mt][n][2 * r + 1] * scale);
        }
  }

  // ---- MMA pieces ----

  // B fragments of k-step ks (rows [16 ks, 16 ks + 16)) of a [rows][LDV] tile, n-tiles 0 .. VT - 1.
  __device__ void wide_fragments(const T* tile, int ks, std::uint32_t (&bf)[VT][2]) const {
    const int row = ks * 16 + lane % 8 + ((lane / 8) & 1) * 8;
#pragma unroll
    for (int np = 0; np < (VT + 1) / 2; ++np) {
      // An odd last n-tile: the upper lanes repeat the lower ones' rows (nothing past the n-tiles is read).
      const bool pair = 2 * np + 1 < VT;
      std::uint32_t r[4];
      ptx::ldmatrix_x4_trans(r, tile + row * LDV + np * 16 + (pair ? (lane / 16) * 8 : 0));
      bf[2 * np][0] = r[0], bf[2 * np][1] = r[1];
      if (pair) bf[2 * np + 1][0] = r[2], bf[2 * np + 1][1] = r[3];
    }
  }
  static __device__ void mma_wide(float (&acc)[VT][4], const std::uint32_t (&af)[4], const std::uint32_t (&bf)[VT][2]) {
#pragma unroll
    for (int n = 0; n < VT; ++n) ptx::mma_16816<T>(acc[n], af, bf[n][0], bf[n][1]);
  }

  // [S | z] += phi(K)^T [V | 1]: A = phi(K)^T by transposed loads of the [key][d] tile.
  __device__ void accumulate(State& st, const T* kt, const T* vt) const {
#pragma unroll
    for (int ks = 0; ks < C / 16; ++ks) {
      std::uint32_t vf[VT][2];
      wide_fragments(vt, ks, vf);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        std::uint32_t af[4];
        const int m0 = (warp * MT + mt) * 16;
        ptx::ldmatrix_x4_trans(af, kt + swz<HD>(ks * 16 + (lane / 16) * 8 + lane % 8, m0 + ((lane / 8) & 1) * 8));
        mma_wide(st[mt], af, vf);
      }
    }
  }

  // [o | den] of the warp's 16 query rows (rows warp * 16 + [0, 16) of q_tile, query row_lo
  // first) against the state in sS, plus, Intra, the causal products with the chunk's keys
  // j0 + [0, C) at k_tile and v_tile.
  template <bool Intra>
  __device__ void chunk_output(const T* q_tile, const T* k_tile, const T* v_tile, int row_lo, int j0,
                               float (&o)[VT][4]) const {
    // phi(Q) fragments are loaded per k-step in both products (not held: registers are short)
    const auto q_fragment = [&](int ks, std::uint32_t (&qf)[4]) {
      ptx::ldmatrix_x4(qf, q_tile + swz<HD>(warp * 16 + lane % 16, ks * 16 + (lane / 16) * 8));
    };
    std::uint32_t pf[C / 16][4];
    if constexpr (Intra) {
      float s[C / 8][4] = {};
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {  // phi(Q) phi(K)^T
        std::uint32_t qf[4];
        q_fragment(ks, qf);
#pragma unroll
        for (int n2 = 0; n2 < C / 16; ++n2) {
          std::uint32_t kf[4];
          ptx::ldmatrix_x4(kf, k_tile + swz<HD>(n2 * 16 + (lane / 16) * 8 + lane % 8, ks * 16 + ((lane / 8) & 1) * 8));
          ptx::mma_16816<T>(s[2 * n2], qf, kf[0], kf[1]);
          ptx::mma_16816<T>(s[2 * n2 + 1], qf, kf[2], kf[3]);
        }
      }
      // causal: key j0 + c is seen by query row_lo + r when j0 + c <= pos(row_lo + r)
#pragma unroll
      for (int n = 0; n < C / 8; ++n) {
        float w[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const index_t pos = qoff + row_lo + warp * 16 + g + 8 * (e / 2);
          w[e] = j0 + n * 8 + 2 * t + (e & 1) <= pos ? s[n][e] : 0.f;
        }
        pf[n / 2][(n & 1) * 2 + 0] = ptx::pack2<T>(w[0], w[1]);
        pf[n / 2][(n & 1) * 2 + 1] = ptx::pack2<T>(w[2], w[3]);
      }
    }
#pragma unroll
    for (int n = 0; n < VT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {  // phi(Q) [S | z]
      std::uint32_t qf[4], sf[VT][2];
      q_fragment(ks, qf);
      wide_fragments(sS, ks, sf);
      mma_wide(o, qf, sf);
    }
    const float unscale = __int_as_float((127 + state_shift) << 23);  // 2^state_shift
#pragma unroll
    for (int n = 0; n < VT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] *= unscale;
    if constexpr (Intra) {
#pragma unroll
      for (int ks = 0; ks < C / 16; ++ks) {  // += P [V | 1]
        std::uint32_t vf[VT][2];
        wide_fragments(v_tile, ks, vf);
        mma_wide(o, pf[ks], vf);
      }
    }
  }
  // Writes [o | den] of the warp's rows row_lo + warp * 16 + [0, 16) that satisfy keep(pos).
  // The whole warp calls it.
  template <class Keep>
  __device__ void write_rows(const float (&o)[VT][4], int row_lo, Keep keep) const {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // den is column DVS: n-tile DVS / 8, held by the quad's t = 0 lane
      const float den = __shfl_sync(0xffffffffu, o[DVS / 8][2 * r], lane & ~3);
      const int i = row_lo + warp * 16 + g + 8 * r;
      if (i >= Nq || !keep(qoff + i)) continue;
      const float f = a.score.finalize_factor(0.f, den);
      TO* const orow = a.o.row(b, h, i);
#pragma unroll
      for (int n = 0; n < DVS / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = c0 + n * 8 + 2 * t + e;
          if (col < Dv) orow[col] = ptx::from_f32<TO>(o[n][2 * r + e] * f);
        }
    }
  }
  // Zeros for the slice's columns of rows [i0, i0 + C) positioned before key 0 (causal: no key).
  __device__ void write_zero_rows(int i0) const {
    for (int e = tid; e < C * DVS; e += NT) {
      const int i = i0 + e / DVS, col = c0 + e % DVS;
      if (i < Nq && qoff + i < 0 && col < Dv) a.o.row(b, h, i)[col] = ptx::from_f32<TO>(0.f);
    }
  }
};

// Phase 1: the state of the keys of state segment blockIdx.x / slices.
// Grid: (state_slots * slices, Hkv, B).
template <class Tiles, class Score, class T, class TO>
__global__ void __launch_bounds__(Tiles::threads) linear_state_kernel(const LinearArgs<Score, T, TO> a) {
  constexpr int C = Tiles::C;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int hk = int(blockIdx.y);
  LinearCta<Tiles, Score, T, TO> cta(a, smem_raw, int(blockIdx.z), hk * int(a.p.group()), hk, int(blockIdx.x) % a.slices);
  const int segment = int(blockIdx.x) / a.slices;
  const int chunks = (cta.Nk + C - 1) / C;
  const int first = min(segment * a.state_chunks, chunks), end = min(first + a.state_chunks, chunks);

  typename LinearCta<Tiles, Score, T, TO>::State st = {};
  const auto load_chunk = [&](int buf, int c) {
    cta.load_keys(buf, c * C);
    cta.load_values(buf, c * C);
    ptx::cp_async_commit();
  };
  if (first < end) load_chunk(0, first);
  for (int c = first; c < end; ++c) {
    const int buf = (c - first) & 1, nk = min(C, cta.Nk - c * C);
    T* const kt = cta.sK0 + buf * C * Tiles::HD;
    T* const vt = cta.sV0 + buf * C * Tiles::LDV;
    ptx::cp_async_wait<0>();
    __syncthreads();  // chunk c is in; every warp is past chunk c - 1 (its buffers are free)
    if (c + 1 < end) load_chunk(buf ^ 1, c + 1);
    cta.apply_phi(kt, nk);
    cta.set_ones_column(vt, nk);
    __syncthreads();
    cta.accumulate(st, kt, vt);
  }
  cta.store_state(st, cta.slot(segment));
}

// Phase 2: inclusive prefix sums over the state slots of each (batch, kv head, slice), in
// place. Grid: (blocks_per_state * slices, Hkv, B) of 256 threads, one float4 per thread.
template <class Tiles>
__global__ void __launch_bounds__(256) linear_scan_kernel(float* states, int slices, int slots, int Hkv) {
  constexpr int quads = Tiles::state_floats / 4, blocks_per_state = (quads + 255) / 256;
  const int slice = int(blockIdx.x) / blocks_per_state;
  const int i = (int(blockIdx.x) % blocks_per_state) * 256 + int(threadIdx.x);
  if (i >= quads) return;
  const std::int64_t cta_states = (std::int64_t(blockIdx.z) * Hkv + blockIdx.y) * slices + slice;
  float4* at = reinterpret_cast<float4*>(states + cta_states * slots * Tiles::state_floats) + i;
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s = 0; s < slots; ++s, at += quads) {
    const float4 x = *at;
    sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
    *at = sum;
  }
}

// Phase 3: the outputs. Grid: (ctas * slices, Hq, B); CTA part = blockIdx.x / slices walks
// segment `part` (causal) and writes the final rows of query tiles part, part + ctas, ...
template <class Tiles, class Score, class T, class TO>
__global__ void __launch_bounds__(Tiles::threads) linear_chunked_kernel(const LinearArgs<Score, T, TO> a) {
  constexpr int HD = Tiles::HD, C = Tiles::C, LDV = Tiles::LDV, VT = Tiles::n_tiles;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  using Cta = LinearCta<Tiles, Score, T, TO>;
  const int h = int(blockIdx.y);
  Cta cta(a, smem_raw, int(blockIdx.z), h, int(h / a.p.group()), int(blockIdx.x) % a.slices);
  const int part = int(blockIdx.x) / a.slices;
  const int Nq = cta.Nq, Nk = cta.Nk, warp = cta.warp;
  const index_t qoff = cta.qoff;
  const int chunks = (Nk + C - 1) / C;

  if (a.causal) {
    // Query rows whose position falls in key chunk [j0, j0 + C): [lo, hi).
    const auto chunk_queries = [&](int j0, int& lo, int& hi) {
      const index_t l = j0 - qoff, u = j0 + min(C, Nk - j0) - qoff;
      lo = int(l < 0 ? 0 : (l > Nq ? Nq : l));
      hi = int(u < 0 ? 0 : (u > Nq ? Nq : u));
    };
    const auto load_chunk = [&](int buf, int c) {
      cta.load_keys(buf, c * C);
      cta.load_values(buf, c * C);
      int lo, hi;
      chunk_queries(c * C, lo, hi);
      if (hi > lo) cta.load_queries(buf, lo, hi);
      ptx::cp_async_commit();
    };
    const int first = min(part * a.seg_chunks, chunks), end = min(first + a.seg_chunks, chunks);
    // The state before the segment: slot s holds chunks [0, (s + 1) * state_chunks), and
    // seg_chunks is a multiple of state_chunks.
    typename Cta::State st = {};
    if (first > 0) cta.load_state(st, cta.slot(first / a.state_chunks - 1));
    cta.store_state_copy(st, first * C);  // read after the loop's first barrier
    if (first < end) load_chunk(0, first);
    for (int c = first; c < end; ++c) {
      const int buf = (c - first) & 1, j0 = c * C, nk = min(C, Nk - j0);
      T* const qt = cta.sQ0 + buf * C * HD;
      T* const kt = cta.sK0 + buf * C * HD;
      T* const vt = cta.sV0 + buf * C * LDV;
      ptx::cp_async_wait<0>();
      __syncthreads();  // chunk c is in; every warp is past chunk c - 1 (its buffers are free)
      if (c + 1 < end) load_chunk(buf ^ 1, c + 1);
      int q_lo, q_hi;
      chunk_queries(j0, q_lo, q_hi);
      cta.apply_phi(kt, nk);
      if (q_hi > q_lo) cta.apply_phi(qt, q_hi - q_lo);
      cta.set_ones_column(vt, nk);
      __syncthreads();
      if (warp * 16 < q_hi - q_lo) {  // queries inside this chunk
        float o[VT][4];
        cta.template chunk_output<true>(qt, kt, vt, q_lo, j0, o);
        cta.write_rows(o, q_lo, [&](index_t pos) { return pos >= j0 && pos < j0 + nk; });
      }
      cta.accumulate(st, kt, vt);
      __syncthreads();  // every warp has read the previous copy
      cta.store_state_copy(st, j0 + nk);
    }
    __syncthreads();  // sS and the buffers are free (no copies are in flight)
  }

  // Query tiles that see every key (all of them for a full mask), and causal rows before key 0.
  bool total_copied = false;
  for (index_t tile_row = index_t(part) * C; tile_row < Nq; tile_row += index_t(a.ctas) * C) {
    const int i0 = int(tile_row), rows = min(C, Nq - i0);
    const index_t first_pos = qoff + i0, last_pos = qoff + i0 + rows - 1;
    if (a.causal) {
      if (first_pos >= 0 && last_pos < Nk) continue;  // written by the walk
      if (first_pos < 0) cta.write_zero_rows(i0);
      if (last_pos < Nk) continue;  // no row past the last key
    }
    // (The conditions above are uniform over the CTA: every thread reaches the barriers.)
    if (!total_copied) {  // sS is free: past the walk's last barrier, before any read below
      typename Cta::State st;
      cta.load_state(st, cta.slot(a.state_slots - 1));
      cta.store_state_copy(st, Nk);
      total_copied = true;
    }
    __syncthreads();  // the previous tile's readers are done with sQ0
    cta.load_queries(0, i0, Nq);
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
    __syncthreads();
    cta.apply_phi(cta.sQ0, rows);
    __syncthreads();
    if (warp * 16 < rows) {
      float o[VT][4];
      cta.template chunk_output<false>(cta.sQ0, nullptr, nullptr, i0, 0, o);
      cta.write_rows(o, i0, [&](index_t pos) { return !a.causal || pos >= Nk; });
    }
  }
}

// Plans the segments of a call (the fewest waves of CTAs, each CTA's fixed cost counted as
// about two chunks) and launches the three kernels on `stream`.
template <class L, class Score, class T, class TO>
void launch_linear_chunked(LinearArgs<Score, T, TO> la, cudaStream_t stream) {
  const ProblemInfo& p = la.p;
  constexpr auto state_kernel = linear_state_kernel<L, Score, T, TO>;
  constexpr auto chunked_kernel = linear_chunked_kernel<L, Score, T, TO>;
  ensure_dynamic_smem<state_kernel>(L::state_smem_bytes, "cudaFuncSetAttribute(linear_state_kernel)");
  ensure_dynamic_smem<chunked_kernel>(L::smem_bytes, "cudaFuncSetAttribute(linear_chunked_kernel)");
  const std::int64_t chunks = (p.Nk + L::C - 1) / L::C, q_tiles = (p.Nq + L::C - 1) / L::C;
  la.slices = int((p.Dv + L::DVS - 1) / L::DVS);
  const std::int64_t out_units = la.slices * p.Hq * p.B, state_units = la.slices * p.Hkv * p.B;
  const std::int64_t out_resident =
      resident_ctas<chunked_kernel>(L::threads, L::smem_bytes);
  const std::int64_t state_resident =
      resident_ctas<state_kernel>(L::threads, L::state_smem_bytes);
  // Items (chunks or query tiles) per CTA for `units` independent jobs of `items` each:
  // the fewest waves x (items per CTA + a fixed cost per CTA of about two items: the
  // state's load or store and the pipeline's start).
  const auto per_cta = [](std::int64_t items, std::int64_t units, std::int64_t resident) {
    const std::int64_t most = std::min(items, std::max<std::int64_t>(1, 8 * resident / units));
    std::int64_t best = items, best_cost = -1;
    for (std::int64_t parts = 1; parts <= most; ++parts) {
      const std::int64_t per = (items + parts - 1) / parts, used = (items + per - 1) / per;
      const std::int64_t cost = (units * used + resident - 1) / resident * (per + 2);
      if (best_cost < 0 || cost < best_cost) best = per, best_cost = cost;
    }
    return best;
  };
  const auto ceil_div = [](std::int64_t x, std::int64_t y) { return (x + y - 1) / y; };
  // Queries past the last key (every query of a full mask) read the total state.
  const bool need_total = !la.causal || p.q_offset + p.Nq - 1 >= p.Nk;
  if (chunks == 0) {  // no keys: a zero state
    la.state_chunks = la.seg_chunks = 1;
    la.state_slots = need_total ? 1 : 0;
    la.ctas = int(la.causal ? 1 : ceil_div(q_tiles, per_cta(q_tiles, out_units, out_resident)));
  } else if (la.causal) {
    // Segments of the walk; their starting states from state segments that divide them.
    const std::int64_t seg = per_cta(chunks, out_units, out_resident), segments = ceil_div(chunks, seg);
    std::int64_t best = seg, best_cost = -1;
    for (std::int64_t split = 1; split <= std::min<std::int64_t>(seg, 64); ++split) {
      if (seg % split != 0) continue;
      const std::int64_t per = seg / split, slots = need_total ? ceil_div(chunks, per) : (segments - 1) * split;
      const std::int64_t cost = ceil_div(state_units * slots, state_resident) * (per + 2);
      if (best_cost < 0 || cost < best_cost) best = per, best_cost = cost;
    }
    la.seg_chunks = int(seg);
    la.ctas = int(segments);
    la.state_chunks = int(best);
    la.state_slots = int(need_total ? ceil_div(chunks, best) : (segments - 1) * (seg / best));
  } else {
    la.state_chunks = la.seg_chunks = int(per_cta(chunks, state_units, state_resident));
    la.state_slots = int(ceil_div(chunks, la.state_chunks));
    la.ctas = int(ceil_div(q_tiles, per_cta(q_tiles, out_units, out_resident)));
  }
  Workspace workspace(stream);  // freed stream-ordered after the launches
  if (la.state_slots > 0) {
    la.states = workspace.alloc<float>(std::size_t(state_units) * std::size_t(la.state_slots) * L::state_floats);
    state_kernel<<<dim3(unsigned(la.state_slots * la.slices), unsigned(p.Hkv), unsigned(p.B)), L::threads,
                   L::state_smem_bytes, stream>>>(la);
    check(cudaGetLastError(), "linear_state_kernel launch");
    if (la.state_slots > 1) {
      constexpr int scan_blocks = (L::state_floats / 4 + 255) / 256;
      linear_scan_kernel<L><<<dim3(unsigned(scan_blocks * la.slices), unsigned(p.Hkv), unsigned(p.B)), 256, 0,
                                      stream>>>(la.states, la.slices, la.state_slots, int(p.Hkv));
      check(cudaGetLastError(), "linear_scan_kernel launch");
    }
  }
  chunked_kernel<<<dim3(unsigned(la.ctas * la.slices), unsigned(p.Hq), unsigned(p.B)), L::threads, L::smem_bytes,
                   stream>>>(la);
  check(cudaGetLastError(), "linear_chunked_kernel launch");
}

}  // namespace attnkit::cuda::detail
