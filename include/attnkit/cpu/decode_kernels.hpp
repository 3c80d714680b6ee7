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

// Requests the cache lines of one row of n elements, into L1 (Near) or L2.
template <bool Near = true, class T>
ATTNKIT_INLINE void prefetch_row(const T* row, index_t n) {
  for (index_t b = 0; b < index_t(n * sizeof(T)); b += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(row) + b, 0, Near ? 3 : 2);
}

// s[r][c] = <q[r], phi(k_c)> for keys c < n; s[r][c] = 0 for c >= n.
// q: RB rows of ldq floats (zero padded to a multiple of simd_width); s: RB rows of simd_width.
template <int RB, class TK, class Phi>
ATTNKIT_INLINE void decode_qk(const float* q, index_t ldq, index_t D, const TK* const* kp, index_t n, float* s,
                              const Phi& phi) {
  constexpr int W = simd_width;
  const index_t Dfull = D / W * W;  // full batches; the tail batch is zero padded
  vfloat dots[RB][W];
  // One key's dot products with the RB rows. Each key starts fresh accumulators, so the
  // out-of-order core overlaps consecutive keys' FMA chains.
  // NA accumulators per row keep the FMA chains short (a long chain per key holds the
  // scheduler's entries and with them the loads of the keys behind it).
  constexpr int NA = RB >= 8 ? 1 : 8 / RB;
  auto key = [&](index_t c) {
    vfloat a[RB][NA];
    for (int r = 0; r < RB; ++r)
      for (int t = 0; t < NA; ++t) a[r][t] = vfloat(0.f);
    auto step = [&](index_t d, int t, const vfloat& k0) {
      for (int r = 0; r < RB; ++r) a[r][t] = xsimd::fma(vfloat::load_unaligned(q + r * ldq + d), k0, a[r][t]);
    };
    index_t d = 0;
    for (; d + NA * W <= Dfull; d += NA * W)
      for (int t = 0; t < NA; ++t) step(d + t * W, t, phi(load_floats(kp[c] + d + t * W)));
    for (; d < Dfull; d += W) step(d, 0, phi(load_floats(kp[c] + d)));
    if (d < D) step(d, 0, phi(load_floats(kp[c] + d, D - d)));
    for (int r = 0; r < RB; ++r) {
      for (int t = 1; t < NA; ++t) a[r][0] += a[r][t];
      dots[r][c] = a[r][0];
    }
  };
  index_t c = 0;
  if (n == W) {  // a full chunk: a constant trip count the compiler unrolls (measured: twice the
                 // bandwidth of the rolled loop from DRAM)
#pragma GCC unroll 16
    for (; c < W; ++c) key(c);
  } else {
    for (; c < n; ++c) key(c);
  }
  for (; c < W; ++c)
    for (int r = 0; r < RB; ++r) dots[r][c] = vfloat(0.f);
  for (int r = 0; r < RB; ++r) sum_lanes(dots[r]).store_unaligned(s + r * W);  // lane c = sum of dots[r][c]
}

// acc[r][0, Dv) += sum_c p[r][c] * v_c for keys c < n.
// p: RB rows of simd_width weights; acc: RB rows of ldacc floats (ldacc a multiple of
// decode_pv_width). Each V row is read front to back in blocks of decode_pv_width floats
// (a whole row for Dv <= 128 on AVX-512): rows streamed in order keep the hardware
// prefetchers on; a column-block order that hops between rows halves the bandwidth.
inline constexpr int decode_pv_vectors = simd_width >= 16 ? 8 : 4;
inline constexpr int decode_pv_width = decode_pv_vectors * simd_width;
inline constexpr int decode_pv_rows = 2;  // RB <= this: RB * decode_pv_vectors accumulators

template <int RB, class TV>
ATTNKIT_INLINE void decode_pv(const float* p, const TV* const* vp, index_t n, index_t Dv, float* acc, index_t ldacc) {
  static_assert(RB <= decode_pv_rows, "attnkit: decode_pv keeps RB x decode_pv_vectors accumulators in registers");
  constexpr int W = simd_width, NV = decode_pv_vectors;
  for (index_t d = 0; d < Dv; d += NV * W) {
    vfloat a[RB][NV];
    for (int r = 0; r < RB; ++r)
      for (int u = 0; u < NV; ++u) a[r][u] = vfloat::load_unaligned(acc + r * ldacc + d + u * W);
    auto step = [&](index_t c, const vfloat* v) {
      for (int r = 0; r < RB; ++r) {
        const vfloat pr(p[r * W + c]);
        for (int u = 0; u < NV; ++u) a[r][u] = xsimd::fma(pr, v[u], a[r][u]);
      }
    };
    vfloat v[NV];
    if (d + NV * W <= Dv && n == W) {  // a full chunk: a constant trip count the compiler unrolls
                                       // (measured: twice the bandwidth of the loop)
#pragma GCC unroll 16
      for (index_t c = 0; c < W; ++c) {
        for (int u = 0; u < NV; ++u) v[u] = load_floats(vp[c] + d + u * W);
        step(c, v);
      }
    } else if (d + NV * W <= Dv) {
      for (index_t c = 0; c < n; ++c) {
        for (int u = 0; u < NV; ++u) v[u] = load_floats(vp[c] + d + u * W);
        step(c, v);
      }
    } else {
      for (index_t c = 0; c < n; ++c) {
        for (int u = 0; u < NV; ++u) v[u] = load_floats(vp[c] + d + u * W, Dv - d - u * W);
        step(c, v);
      }
    }
    for (int r = 0; r < RB; ++r)
      for (int u = 0; u < NV; ++u) a[r][u].store_unaligned(acc + r * ldacc + d + u * W);
  }
}

// Calls f(std::integral_constant<int, RB>{}, r0) for row blocks of at most Max rows
// covering [0, rows).
template <int Max, class F>
ATTNKIT_INLINE void for_row_blocks(index_t rows, F&& f) {
  index_t r0 = 0;
  for (; r0 + Max <= rows; r0 += Max) f(std::integral_constant<int, Max>{}, r0);
  const index_t left = rows - r0;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((left == I + 1 ? (f(std::integral_constant<int, I + 1>{}, r0), 0) : 0), ...);
  }(std::make_integer_sequence<int, Max - 1>{});
}

}  // namespace attnkit::cpu
