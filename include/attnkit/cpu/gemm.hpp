#pragma once
// Register-blocked GEMM micro-kernel shared by every product of the CPU tile loop:
//   C[M x N] (=|+=) A[M x K] * B[K x N]
// with A element (i, k) at a[i * a_rs + k * a_ks] (broadcast from memory, so A can be read
// transposed for free), B row k contiguous at b + k * ldb, and N a multiple of the block
// width (callers pad). Each element of C is accumulated in k order with FMAs, so the same
// inputs give bit-identical results whatever the block position: the top-k pre-pass relies
// on that.
#include "../core/tensor.hpp"
#include "simd.hpp"

namespace attnkit::cpu {

inline constexpr int gemm_mr = 6;                       // rows per register block
inline constexpr int gemm_nv = 2;                       // vectors per row
inline constexpr int gemm_nr = gemm_nv * simd_width;    // columns per register block

template <int MR, int NV, bool Accumulate>
ATTNKIT_INLINE void micro_kernel(index_t kdim, const float* a, index_t a_rs, index_t a_ks, const float* b,
                                 index_t ldb, float* c, index_t ldc) {
  vfloat acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = vfloat(0.f);
  for (index_t k = 0; k < kdim; ++k) {
    vfloat bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = vfloat::load_unaligned(b + k * ldb + v * simd_width);
    for (int i = 0; i < MR; ++i) {
      const vfloat ai(a[i * a_rs + k * a_ks]);
      for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      float* dst = c + i * ldc + v * simd_width;
      if constexpr (Accumulate) (vfloat::load_unaligned(dst) + acc[i][v]).store_unaligned(dst);
      else acc[i][v].store_unaligned(dst);
    }
}

template <bool Accumulate, int MR = gemm_mr>
ATTNKIT_INLINE void gemm_rows_tail(index_t rows, index_t kdim, const float* a, index_t a_rs, index_t a_ks,
                                   const float* b, index_t ldb, float* c, index_t ldc) {
  if constexpr (MR > 1) {
    if (rows == MR - 1) return micro_kernel<MR - 1, gemm_nv, Accumulate>(kdim, a, a_rs, a_ks, b, ldb, c, ldc);
    return gemm_rows_tail<Accumulate, MR - 1>(rows, kdim, a, a_rs, a_ks, b, ldb, c, ldc);
  }
}

template <bool Accumulate>
inline void gemm(index_t M, index_t N, index_t K, const float* a, index_t a_rs, index_t a_ks, const float* b,
                 index_t ldb, float* c, index_t ldc) {
  for (index_t n0 = 0; n0 < N; n0 += gemm_nr) {
    index_t m0 = 0;
    for (; m0 + gemm_mr <= M; m0 += gemm_mr)
      micro_kernel<gemm_mr, gemm_nv, Accumulate>(K, a + m0 * a_rs, a_rs, a_ks, b + n0, ldb, c + m0 * ldc + n0, ldc);
    if (m0 < M) gemm_rows_tail<Accumulate>(M - m0, K, a + m0 * a_rs, a_rs, a_ks, b + n0, ldb, c + m0 * ldc + n0, ldc);
  }
}

inline constexpr index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

}  // namespace attnkit::cpu
