#pragma once
// The two inner products of the decode kernel, for a block of RB query rows against up to
// simd_width keys whose rows may sit anywhere (pointers: dense or paged). Vectorised along the
// head dim; K and V are converted from their storage type in registers, so a 16-bit cache is
// streamed at its own size. RB is a template argument so the accumulators live in registers.
#include <type_traits>
#include <utility>

#include "convert.hpp"
#include "simd.hpp"

namespace attnkit::cpu {

inline constexpr int decode_row_block = simd_width >= 16 ? 8 : 4;  // rows per block (register budget)

// out lane c = the sum of the lanes of x[c], for simd_width batches (a transposing reduction:
// about one shuffle and one add per batch). xsimd 8.1's haddp permutes lanes on AVX-512.
ATTNKIT_INLINE vfloat sum_lanes(const vfloat* x) {
#if defined(__AVX512F__)
  static_assert(simd_width == 16);
  __m512 s[8], u[4];
  for (int k = 0; k < 8; ++k)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    s[k] = _mm512_add_ps(_mm512_unpacklo_ps(x[2 * k], x[2 * k + 1]), _mm512_unpackhi_ps(x[2 * k], x[2 * k + 1]));
  for (int k = 0; k < 4; ++k)  // per 128-bit lane: partial sums of x[4k .. 4k + 3]
    u[k] = _mm512_add_ps(_mm512_shuffle_ps(s[2 * k], s[2 * k + 1], 0x44), _mm512_shuffle_ps(s[2 * k], s[2 * k + 1], 0xEE));
  const __m512 v01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 v23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v01, v23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(v01, v23, _MM_SHUFFLE(3, 1, 3, 1)));
#elif defined(__AVX2__)
  static_assert(simd_width == 8);
  __m256 s[4], u[2];
  for (int k = 0; k < 4; ++k)
    s[k] = _mm256_add_ps(_mm256_unpacklo_ps(x[2 * k], x[2 * k + 1]), _mm256_unpackhi_ps(x[2 * k], x[2 * k + 1]));
  for (int k = 0; k < 2; ++k)
    u[k] = _mm256_add_ps(_mm256_shuffle_ps(s[2 * k], s[2 * k + 1], 0x44), _mm256_shuffle_ps(s[2 * k], s[2 * k + 1], 0xEE));
  return _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20), _mm256_permute2f128_ps(u[0], u[1], 0x31));
#else
  alignas(64) float out[simd_width];
  for (int c = 0; c < simd_width; ++c) out[c] = xsimd::hadd(x[c]);
  return vfloat::load_aligned(out);
#endif
}

// s[r][c] = <q[r], phi(k_c)> for keys c < n; s[r][c] = 0 for c >= n.
// q: RB rows of ldq floats (zero padded to a multiple of simd_width); s: RB rows of simd_width.
template <int RB, class TK, class Phi>
ATTNKIT_INLINE void decode_qk(const float* q, index_t ldq, index_t D, const TK* const* kp, index_t n, float* s,
                              const Phi& phi) {
  constexpr int W = simd_width;
  vfloat dots[RB][W];
  index_t c = 0;
  for (; c + 1 < n; c += 2) {  // two keys at a time: independent FMA chains even for RB = 1
    vfloat a0[RB], a1[RB];
    for (int r = 0; r < RB; ++r) a0[r] = a1[r] = vfloat(0.f);
    for (index_t d = 0; d < D; d += W) {
      const vfloat k0 = phi(load_floats(kp[c] + d, D - d)), k1 = phi(load_floats(kp[c + 1] + d, D - d));
      for (int r = 0; r < RB; ++r) {
        const vfloat qv = vfloat::load_unaligned(q + r * ldq + d);
        a0[r] = xsimd::fma(qv, k0, a0[r]);
        a1[r] = xsimd::fma(qv, k1, a1[r]);
      }
    }
    for (int r = 0; r < RB; ++r) dots[r][c] = a0[r], dots[r][c + 1] = a1[r];
  }
  if (c < n) {
    vfloat a0[RB];
    for (int r = 0; r < RB; ++r) a0[r] = vfloat(0.f);
    for (index_t d = 0; d < D; d += W) {
      const vfloat k0 = phi(load_floats(kp[c] + d, D - d));
      for (int r = 0; r < RB; ++r) a0[r] = xsimd::fma(vfloat::load_unaligned(q + r * ldq + d), k0, a0[r]);
    }
    for (int r = 0; r < RB; ++r) dots[r][c] = a0[r];
    ++c;
  }
  for (; c < W; ++c)
    for (int r = 0; r < RB; ++r) dots[r][c] = vfloat(0.f);
  for (int r = 0; r < RB; ++r) sum_lanes(dots[r]).store_unaligned(s + r * W);  // lane c = sum of dots[r][c]
}

// acc[r][0, Dv) += sum_c p[r][c] * v_c for keys c < n.
// p: RB rows of simd_width weights; acc: RB rows of ldacc floats (ldacc a multiple of 2 * simd_width).
template <int RB, class TV>
ATTNKIT_INLINE void decode_pv(const float* p, const TV* const* vp, index_t n, index_t Dv, float* acc, index_t ldacc) {
  constexpr int W = simd_width;
  for (index_t d = 0; d < Dv; d += 2 * W) {
    vfloat a0[RB], a1[RB];
    for (int r = 0; r < RB; ++r) {
      a0[r] = vfloat::load_unaligned(acc + r * ldacc + d);
      a1[r] = vfloat::load_unaligned(acc + r * ldacc + d + W);
    }
    for (index_t c = 0; c < n; ++c) {
      const vfloat v0 = load_floats(vp[c] + d, Dv - d), v1 = load_floats(vp[c] + d + W, Dv - d - W);
      for (int r = 0; r < RB; ++r) {
        const vfloat pr(p[r * W + c]);
        a0[r] = xsimd::fma(pr, v0, a0[r]);
        a1[r] = xsimd::fma(pr, v1, a1[r]);
      }
    }
    for (int r = 0; r < RB; ++r) {
      a0[r].store_unaligned(acc + r * ldacc + d);
      a1[r].store_unaligned(acc + r * ldacc + d + W);
    }
  }
}

// Calls f(std::integral_constant<int, RB>{}, r0) for row blocks of at most decode_row_block
// rows covering [0, rows).
template <class F>
ATTNKIT_INLINE void for_row_blocks(index_t rows, F&& f) {
  index_t r0 = 0;
  for (; r0 + decode_row_block <= rows; r0 += decode_row_block) f(std::integral_constant<int, decode_row_block>{}, r0);
  const index_t left = rows - r0;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((left == I + 1 ? (f(std::integral_constant<int, I + 1>{}, r0), 0) : 0), ...);
  }(std::make_integer_sequence<int, decode_row_block - 1>{});
}

}  // namespace attnkit::cpu
