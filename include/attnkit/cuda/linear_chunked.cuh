#pragma once
// Linear attention with a full or causal mask in the chunked O(N D Dv) form on the GPU.
// One CTA per (batch, query head, slice of DVS value columns) walks the keys in chunks of C:
// it keeps the running state S = sum phi(k_j) v_j^T (its D x DVS slice) and z = sum phi(k_j)
// in shared memory. Queries whose position falls inside a chunk see the state of the chunks
// before it plus the causal part of their own chunk; queries past the last key (and every
// query of a full mask) see the final state. Slicing the value columns gives B * Hq * Dv/DVS
// CTAs, enough to fill the GPU for a few heads.
#include <cstdint>

#include "../core/math.hpp"
#include "../core/problem.hpp"
#include "ptx.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

struct LinearChunkTiles {
  static constexpr int C = 64, DVS = 16, threads = 256, max_d = 128;
  static constexpr int ld = max_d + 1;  // padded rows: threads reading one column of K hit distinct banks
  // phi(Q) and phi(K) chunks [C][ld], intra-chunk weights [C][C], V slice [C][DVS],
  // state S [max_d][DVS] and z [max_d], all float.
  static constexpr int smem_floats = 2 * C * ld + C * C + C * DVS + max_d * DVS + max_d;
  static constexpr int smem_bytes = smem_floats * 4;
};

template <class Score, class T, class TO>
struct LinearArgs {
  SeqRows<const T> q, k, v;  // dense batches (the ragged forms take the quadratic kernel)
  SeqRows<TO> o;
  ProblemInfo p;
  Score score;
  bool causal;
};

template <class Score, class T, class TO>
__global__ void __launch_bounds__(LinearChunkTiles::threads) linear_chunked_kernel(const LinearArgs<Score, T, TO> a) {
  using L = LinearChunkTiles;
  constexpr int C = L::C, DVS = L::DVS, NT = L::threads, MD = L::max_d, LD = L::ld;
  extern __shared__ __align__(16) float sm[];
  float* sQ = sm;               // [C][LD]
  float* sK = sQ + C * LD;      // [C][LD]
  float* sA = sK + C * LD;      // [C][C]
  float* sV = sA + C * C;       // [C][DVS]
  float* sS = sV + C * DVS;     // [MD][DVS]
  float* sz = sS + MD * DVS;    // [MD]

  const ProblemInfo& p = a.p;
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = int(h / p.group());
  const int D = int(p.D), Dv = int(p.Dv), Nq = int(p.Nq), Nk = int(p.Nk), c0 = split * DVS;
  const int tid = threadIdx.x;
  const T* qh = a.q.row(b, h, 0);
  const T* kh = a.k.row(b, hk, 0);
  const T* vh = a.v.row(b, hk, 0);
  TO* oh = a.o.row(b, h, 0);

  for (int e = tid; e < MD * DVS; e += NT) sS[e] = 0.f;
  for (int e = tid; e < MD; e += NT) sz[e] = 0.f;

  // phi of rows [r0, r0 + n) of a head into dst[C][LD].
  auto load_phi = [&](float* dst, const T* head, std::int64_t stride, int r0, int n) {
    for (int e = tid; e < C * D; e += NT) {
      const int r = e / D, d = e % D;
      dst[r * LD + d] = r < n ? a.score.feature(ptx::to_f32(head[std::int64_t(r0 + r) * stride + d])) : 0.f;
    }
  };
  // Output rows [i0, i0 + n): o = (phi(q) S + intra) / (phi(q) z + intra sum), sQ holds phi(q).
  auto write_rows = [&](int i0, int n, int j0, bool intra) {
    for (int e = tid; e < n * DVS; e += NT) {
      const int r = e / DVS, c = e % DVS;
      const index_t pos = p.pos(i0 + r);
      float num = 0.f, den = 0.f;
      if (pos >= 0) {
#pragma unroll 8
        for (int d = 0; d < D; ++d) {
          num = fmaf(sQ[r * LD + d], sS[d * DVS + c], num);
          den = fmaf(sQ[r * LD + d], sz[d], den);
        }
        if (intra) {
          const int last = int(pos - j0);  // keys j0 .. pos of this chunk
#pragma unroll 8
          for (int jj = 0; jj <= last && jj < C; ++jj) {
            num = fmaf(sA[r * C + jj], sV[jj * DVS + c], num);
            den += sA[r * C + jj];
          }
        }
      }
      if (c0 + c < Dv) oh[std::int64_t(i0 + r) * a.o.s[2] + c0 + c] = ptx::from_f32<TO>(num * a.score.finalize_factor(0.f, den));
    }
  };

  for (int j0 = 0; j0 < Nk; j0 += C) {
    const int nk = min(C, Nk - j0);
    __syncthreads();  // previous chunk's readers are done
    load_phi(sK, kh, a.k.s[2], j0, nk);
    for (int e = tid; e < C * DVS; e += NT) {
      const int r = e / DVS, c = e % DVS;
      sV[e] = r < nk && c0 + c < Dv ? ptx::to_f32(vh[std::int64_t(j0 + r) * a.v.s[2] + c0 + c]) : 0.f;
    }
    // Queries whose position lies in this chunk: rows [i0, i0 + nq).
    int i0 = 0, nq = 0;
    if (a.causal) {
      const index_t lo = j0 - p.q_offset, hi = j0 + nk - p.q_offset;
      i0 = int(lo < 0 ? 0 : (lo > Nq ? Nq : lo));
      nq = int(hi < 0 ? 0 : (hi > Nq ? Nq : hi)) - i0;
      if (nq > 0) load_phi(sQ, qh, a.q.s[2], i0, nq);
    }
    __syncthreads();
    if (nq > 0) {
      for (int e = tid; e < C * C; e += NT) {  // intra-chunk weights phi(q_i) . phi(k_j)
        const int r = e / C, jj = e % C;
        float s = 0.f;
        if (r < nq && jj < nk)
#pragma unroll 8
          for (int d = 0; d < D; ++d) s = fmaf(sQ[r * LD + d], sK[jj * LD + d], s);
        sA[e] = s;
      }
      __syncthreads();
      write_rows(i0, nq, j0, true);  // reads S and z of the chunks before this one
      __syncthreads();
    }
    // S += phi(K)^T V, z += sum phi(K)
    for (int e = tid; e < D * DVS; e += NT) {
      const int d = e / DVS, c = e % DVS;
      float acc = sS[d * DVS + c];
#pragma unroll 8
      for (int jj = 0; jj < nk; ++jj) acc = fmaf(sK[jj * LD + d], sV[jj * DVS + c], acc);
      sS[d * DVS + c] = acc;
    }
    for (int d = tid; d < D; d += NT) {
      float acc = sz[d];
      for (int jj = 0; jj < nk; ++jj) acc += sK[jj * LD + d];
      sz[d] = acc;
    }
  }
  // Queries that see every key (all of them for a full mask), and causal rows before key 0.
  for (int i0 = 0; i0 < Nq; i0 += C) {
    const int n = min(C, Nq - i0);
    const index_t first_pos = p.pos(i0), last_pos = p.pos(i0 + n - 1);
    if (a.causal && last_pos < Nk && first_pos >= 0) continue;  // written chunk by chunk
    __syncthreads();
    load_phi(sQ, qh, a.q.s[2], i0, n);
    __syncthreads();
    for (int e = tid; e < n * DVS; e += NT) {
      const int r = e / DVS, c = e % DVS;
      const index_t pos = p.pos(i0 + r);
      if (a.causal && pos >= 0 && pos < Nk) continue;
      float num = 0.f, den = 0.f;
      if (!a.causal || pos >= 0) {
#pragma unroll 8
        for (int d = 0; d < D; ++d) {
          num = fmaf(sQ[r * LD + d], sS[d * DVS + c], num);
          den = fmaf(sQ[r * LD + d], sz[d], den);
        }
      }
      if (c0 + c < Dv) oh[std::int64_t(i0 + r) * a.o.s[2] + c0 + c] = ptx::from_f32<TO>(num * a.score.finalize_factor(0.f, den));
    }
  }
}

}  // namespace attnkit::cuda::detail
