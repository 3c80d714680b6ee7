#pragma once
// Linear attention with a full or causal mask in the chunked O(N D Dv) form on the GPU, on
// the tensor cores (mma.sync m16n8k16, fp32 accumulation; sm_80 and sm_90a).
//
// One CTA per (batch, query head, slice of 16 value columns) walks the keys in chunks of
// C = 64. The running state [S | z] = sum_j phi(k_j) [v_j | 1]^T (HD x 24: the slice's 16
// columns, the normaliser z in column 16) lives in fp32 registers, split over the warps by
// rows of D, with a 16-bit copy in shared memory (scaled by a power of two so that half
// precision cannot overflow) as an MMA operand. Per chunk:
//   [o | den] = phi(Q) [S | z] + (phi(Q) phi(K)^T, causal) [V | 1]   queries inside the chunk
//   [S | z]  += phi(K)^T [V | 1]
// The ones column makes the normaliser ride along in the same products. Chunk c + 1's raw
// rows load by cp.async while chunk c computes; phi is applied in shared memory. Queries past
// the last key (every query of a full mask) see the final state in a last pass.
#include <cstdint>

#include "../core/math.hpp"
#include "../core/problem.hpp"
#include "forward_kernel.cuh"  // load_tile, swz
#include "ptx.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

template <int HD_>
struct LinearChunkTiles {
  static constexpr int HD = HD_;                 // head dim padded to 64 or 128
  static constexpr int C = 64, DVS = 16, warps = 4, threads = 32 * warps;
  static constexpr int NV = 24;                  // [v slice | 1 | zeros]: three n-tiles of 8
  static constexpr int LDV = 40;                 // row stride of [V | 1] and [S | z]: 80 bytes, conflict-free ldmatrix
  static constexpr int MT = HD / 16 / warps;     // m-tiles of the state per warp (rows of D)
  static_assert(MT >= 1, "the state's rows split over the warps in m-tiles of 16");
  // Two buffers of raw-then-phi Q and K chunks [C][HD] and of [V | 1] [C][LDV], and [S | z] [HD][LDV].
  static constexpr int smem_elems = 2 * (2 * C * HD + C * LDV) + HD * LDV;
  static constexpr int smem_bytes = smem_elems * 2;
};

template <class Score, class T, class TO>
struct LinearArgs {
  SeqRows<const T> q, k, v;  // dense batches (the ragged forms take the quadratic kernel)
  SeqRows<TO> o;
  ProblemInfo p;
  Score score;
  bool causal;
  bool vec;  // 16-byte aligned rows: cp.async
};

template <class Tiles, class Score, class T, class TO>
__global__ void __launch_bounds__(Tiles::threads) linear_chunked_kernel(const LinearArgs<Score, T, TO> a) {
  constexpr int HD = Tiles::HD, C = Tiles::C, DVS = Tiles::DVS, NT = Tiles::threads, LDV = Tiles::LDV, MT = Tiles::MT;
  constexpr int KS = HD / 16;  // k-steps over D
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const sQ0 = reinterpret_cast<T*>(smem_raw);  // buffer b: sQ0 + b * C * HD
  T* const sK0 = sQ0 + 2 * C * HD;
  T* const sV0 = sK0 + 2 * C * HD;                 // [C][LDV] per buffer
  T* const sS = sV0 + 2 * C * LDV;                 // [HD][LDV]

  const ProblemInfo& p = a.p;
  const int c0 = blockIdx.x * DVS, h = blockIdx.y, b = blockIdx.z, hk = int(h / p.group());
  const int D = int(p.D), Dv = int(p.Dv), Nq = int(p.Nq), Nk = int(p.Nk);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const auto q_rows = a.q.rows(b, h);
  const auto k_rows = a.k.rows(b, hk);
  const auto v_rows = a.v.rows(b, hk);
  const index_t qoff = p.q_offset;

  // Query rows whose position falls in key chunk [j0, j0 + C) (causal): [lo, hi).
  const auto chunk_queries = [&](int j0, int& lo, int& hi) {
    const index_t l = j0 - qoff, u = j0 + min(C, Nk - j0) - qoff;
    lo = int(l < 0 ? 0 : (l > Nq ? Nq : l));
    hi = int(u < 0 ? 0 : (u > Nq ? Nq : u));
  };
  // Raw rows of chunk j0 (and, causal, its queries) into buffer `buf`.
  const auto load_chunk = [&](int buf, int j0) {
    load_tile<HD, C, NT>(sK0 + buf * C * HD, k_rows, a.k.data, j0, Nk, D, a.vec);
    T* const v = sV0 + buf * C * LDV;
    if (a.vec) {  // the slice's 16 columns: two 16-byte copies per row
      for (int e = tid; e < 2 * C; e += NT) {
        const int r = e / 2, col = c0 + (e % 2) * 8;
        const bool ok = j0 + r < Nk && col < Dv;
        ptx::cp_async_16(v + r * LDV + (e % 2) * 8, ok ? v_rows(j0 + r) + col : a.v.data, ok ? 16 : 0);
      }
    } else {
      for (int e = tid; e < C * DVS; e += NT) {
        const int r = e / DVS, col = c0 + e % DVS;
        v[r * LDV + e % DVS] = j0 + r < Nk && col < Dv ? v_rows(j0 + r)[col] : T{};
      }
    }
    if (a.causal) {
      int lo, hi;
      chunk_queries(j0, lo, hi);
      load_tile<HD, C, NT>(sQ0 + buf * C * HD, q_rows, a.q.data, lo, hi, D, a.vec);
    }
    ptx::cp_async_commit();
  };
  // phi in place on rows [0, n) of a chunk (the rest and the padded columns to 0: phi(0) may not be 0).
  const auto apply_phi = [&](T* tile, int n) {
    for (int e = tid; e < C * HD / 2; e += NT) {
      const int r = e / (HD / 2), col = (e % (HD / 2)) * 2;
      std::uint32_t* pair = reinterpret_cast<std::uint32_t*>(tile + swz<HD>(r, col));
      const float2 x = ptx::unpack2<T>(*pair);
      const bool ok = r < n;
      *pair = ptx::pack2<T>(ok && col < D ? a.score.feature(x.x) : 0.f, ok && col + 1 < D ? a.score.feature(x.y) : 0.f);
    }
  };

  // The state, fp32: warp w holds rows [w * MT * 16, (w + 1) * MT * 16) of D x NV.
  float st[MT][3][4] = {};
  for (int e = tid; e < HD * LDV; e += NT) sS[e] = T{};
  int state_shift = 0;  // sS holds [S | z] * 2^-state_shift

  // B fragments of k-step ks of a [rows][LDV] tile ([V | 1] or [S | z]): n-tiles 0, 1, 2.
  const auto wide_fragments = [&](const T* tile, int ks, std::uint32_t (&bf)[6]) {
    std::uint32_t lo[4], hi[4];
    const int row = ks * 16 + lane % 8 + ((lane / 8) & 1) * 8;
    ptx::ldmatrix_x4_trans(lo, tile + row * LDV + (lane / 16) * 8);
    ptx::ldmatrix_x4_trans(hi, tile + row * LDV + 16 + (lane / 16) * 8);
    bf[0] = lo[0], bf[1] = lo[1], bf[2] = lo[2], bf[3] = lo[3], bf[4] = hi[0], bf[5] = hi[1];
  };
  const auto mma_wide = [](float (&acc)[3][4], const std::uint32_t (&af)[4], const std::uint32_t (&bf)[6]) {
#pragma unroll
    for (int n = 0; n < 3; ++n) ptx::mma_16816<T>(acc[n], af, bf[2 * n], bf[2 * n + 1]);
  };

  // [o | den] of a warp's 16 query rows (rows of sQ at q_tile) against the state in sS, plus,
  // for the causal chunk, the masked intra-chunk products with the keys at k_tile.
  const auto chunk_output = [&](const T* q_tile, const T* k_tile, const T* v_tile, bool intra, int row_lo, int j0,
                                float (&o)[3][4]) {
    std::uint32_t qf[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) ptx::ldmatrix_x4(qf[ks], q_tile + swz<HD>(warp * 16 + lane % 16, ks * 16 + (lane / 16) * 8));
    float inter[3][4] = {};
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {  // phi(Q) [S | z]
      std::uint32_t sf[6];
      wide_fragments(sS, ks, sf);
      mma_wide(inter, qf[ks], sf);
    }
    const float unscale = __int_as_float((127 + state_shift) << 23);  // 2^state_shift
#pragma unroll
    for (int n = 0; n < 3; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] = inter[n][e] * unscale;
    if (!intra) return;
    float s[C / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)  // phi(Q) phi(K)^T
#pragma unroll
      for (int n2 = 0; n2 < C / 16; ++n2) {
        std::uint32_t kf[4];
        ptx::ldmatrix_x4(kf, k_tile + swz<HD>(n2 * 16 + (lane / 16) * 8 + lane % 8, ks * 16 + ((lane / 8) & 1) * 8));
        ptx::mma_16816<T>(s[2 * n2], qf[ks], kf[0], kf[1]);
        ptx::mma_16816<T>(s[2 * n2 + 1], qf[ks], kf[2], kf[3]);
      }
    // causal: key j0 + c is seen by query row_lo + r when j0 + c <= pos(row_lo + r)
    std::uint32_t pf[C / 16][4];
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
#pragma unroll
    for (int ks = 0; ks < C / 16; ++ks) {  // += P [V | 1]
      std::uint32_t vf[6];
      wide_fragments(v_tile, ks, vf);
      mma_wide(o, pf[ks], vf);
    }
  };
  // Writes [o | den] of the warp's rows [row_lo + warp * 16, ...) that satisfy keep(pos).
  const auto write_rows = [&](const float (&o)[3][4], int row_lo, auto keep) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // den is column 16: n-tile 2, held by the quad's t = 0 lane
      const float den = __shfl_sync(0xffffffffu, o[2][2 * r], lane & ~3);
      const int i = row_lo + warp * 16 + g + 8 * r;
      if (i >= Nq || !keep(qoff + i)) continue;
      const bool seen = !a.causal || qoff + i >= 0;  // a causal query before key 0 sees no key: zeros
      const float f = a.score.finalize_factor(0.f, den);
      TO* orow = a.o.row(b, h, i);
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = c0 + n * 8 + 2 * t + e;
          if (col < Dv) orow[col] = ptx::from_f32<TO>(seen ? o[n][2 * r + e] * f : 0.f);
        }
    }
  };

  const int chunks = (Nk + C - 1) / C;
  if (chunks > 0) load_chunk(0, 0);
  for (int c = 0; c < chunks; ++c) {
    const int buf = c & 1, j0 = c * C, nk = min(C, Nk - j0);
    T* const qt = sQ0 + buf * C * HD;
    T* const kt = sK0 + buf * C * HD;
    T* const vt = sV0 + buf * C * LDV;
    ptx::cp_async_wait<0>();
    __syncthreads();  // chunk c is in; every warp is past chunk c - 1 (its buffers are free)
    if (c + 1 < chunks) load_chunk(buf ^ 1, j0 + C);
    int q_lo = 0, q_hi = 0;
    if (a.causal) chunk_queries(j0, q_lo, q_hi);
    apply_phi(kt, nk);
    if (q_hi > q_lo) apply_phi(qt, q_hi - q_lo);
    for (int e = tid; e < C * (LDV - DVS); e += NT) {  // the ones column (real keys only) and zeros
      const int r = e / (LDV - DVS), col = DVS + e % (LDV - DVS);
      vt[r * LDV + col] = ptx::from_f32<T>(col == DVS && r < nk ? 1.f : 0.f);
    }
    __syncthreads();
    if (q_hi > q_lo && warp * 16 < q_hi - q_lo) {  // queries inside this chunk
      float o[3][4];
      chunk_output(qt, kt, vt, true, q_lo, j0, o);
      write_rows(o, q_lo, [&](index_t pos) { return pos >= j0 && pos < j0 + nk; });
    }
    // [S | z] += phi(K)^T [V | 1]: A = phi(K)^T by transposed loads of the [key][d] tile.
#pragma unroll
    for (int ks = 0; ks < C / 16; ++ks) {
      std::uint32_t vf[6];
      wide_fragments(vt, ks, vf);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        std::uint32_t af[4];
        const int m0 = (warp * MT + mt) * 16;
        ptx::ldmatrix_x4_trans(af, kt + swz<HD>(ks * 16 + (lane / 16) * 8 + lane % 8, m0 + ((lane / 8) & 1) * 8));
        mma_wide(st[mt], af, vf);
      }
    }
    // The 16-bit copy, scaled by 2^-shift with 2^shift >= the keys summed so far (entries grow
    // with the key count; half would overflow past 65504).
    __syncthreads();  // every warp has read the previous copy
    state_shift = 32 - __clz(j0 + nk);
    const float scale = __int_as_float((127 - state_shift) << 23);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < 3; ++n)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int d = (warp * MT + mt) * 16 + g + 8 * r;
          *reinterpret_cast<std::uint32_t*>(sS + d * LDV + n * 8 + 2 * t) =
              ptx::pack2<T>(st[mt][n][2 * r] * scale, st[mt][n][2 * r + 1] * scale);
        }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();

  // Queries that see every key (all of them for a full mask), and causal rows before key 0.
  const auto final_rows = [&](index_t pos) { return !a.causal || pos < 0 || pos >= Nk; };
  for (int i0 = 0; i0 < Nq; i0 += C) {
    const index_t first = qoff + i0, last = qoff + min(i0 + C, Nq) - 1;
    if (a.causal && first >= 0 && last < Nk) continue;  // written chunk by chunk
    __syncthreads();  // the previous rows' readers are done with sQ0
    load_tile<HD, C, NT>(sQ0, q_rows, a.q.data, i0, Nq, D, a.vec);
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
    __syncthreads();
    apply_phi(sQ0, min(C, Nq - i0));
    __syncthreads();
    if (warp * 16 < Nq - i0) {
      float o[3][4];
      chunk_output(sQ0, sK0, sV0, false, i0, 0, o);
      write_rows(o, i0, final_rows);
    }
  }
}

}  // namespace attnkit::cuda::detail
