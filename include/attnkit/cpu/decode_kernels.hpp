#pragma once
// The two inner products of the decode kernel, for a block of RB query rows against a chunk
// of keys whose rows may sit anywhere (pointers: dense or paged). Vectorised along the
// head dim; K and V are converted from their storage type in registers, so a 16-bit cache is
// streamed at its own size. RB is a template argument so the accumulators live in registers.
#include <algorithm>
#include <bit>
#include <type_traits>
#include <utility>

#include "convert.hpp"
#include "simd.hpp"

namespace attnkit::cpu {

inline constexpr int decode_row_block = simd_width >= 16 ? 8 : 4;  // rows per decode_qk block (register budget)

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

// Rows requested ahead of use go to L2: a chunk ahead does not fit L1 beside the chunk in use.
inline constexpr bool decode_prefetch_near = false;

// Both kernels request the rows `ahead` names a few lines per step, inside their unrolled
// FMA loops, never in bursts. A software prefetch that misses takes a fill buffer until its
// line arrives and stalls the core when none is free, so a burst of a row group's lines
// (64 at a time in P V) held the arithmetic behind it for several memory latencies; spread
// over the steps, each request waits for a buffer while FMAs run. Measured on GQA 32/8, f32,
// KV 32768, one thread of a Xeon with AVX-512: 104.5 -> 88.8 ns a key (P V's requests
// spread: -15, Q K^T's: -5), against 68-78 for a plain read of the same bytes.

// FMA chains the inner products keep in flight: enough to cover the FMA latency on both
// pipes (AVX2: 2 pipes x 4 cycles), few enough to stay in registers with their operands.
inline constexpr int decode_fma_chains = simd_width >= 16 ? 16 : 8;

// s[r][c] = <q[r], phi(k_c)> for keys c < n; s[r][c] = 0 from n to the next multiple of
// simd_width. q: RB rows of ldq floats (zero padded to a multiple of simd_width); s: RB rows
// of lds floats. With `ahead`, requests row ahead[c] along with key c, a line per step.
template <int RB, class TK, class Phi>
ATTNKIT_INLINE void decode_qk(const float* q, index_t ldq, index_t D, const TK* const* kp, index_t n, float* s,
                              index_t lds, const Phi& phi, const TK* const* ahead = nullptr) {
  constexpr int W = simd_width;
  // KP keys per pass, so that each q load feeds KP FMAs (one key per pass spends a load per
  // FMA); NA accumulators per (row, key) make up the chains with few rows.
  constexpr int KP = RB <= 2 ? 4 : 2;
  constexpr int NA = std::max(1, decode_fma_chains / (RB * KP));
  const index_t Dfull = D / W * W;  // full batches; the tail batch is zero padded
  for (index_t c0 = 0; c0 < n; c0 += W) {
    const index_t m = std::min<index_t>(W, n - c0);
    vfloat dots[RB][W];
    // Keys c0 + c .. c0 + c + K: their dot products with the RB rows. Each pass starts fresh
    // accumulators, so the out-of-order core overlaps consecutive passes.
    // Inlined: as a call, each pass paid a prologue, a realigned stack frame and zeroed
    // spills (measured: QK at 4 rows, f32 in L1, from 42-47 to 30-37 TSC ticks a key).
    // Requests: whether the pass requests rows ahead, a compile-time choice so that passes
    // without any keep their steps free of the test.
    auto pass = [&]<int K, bool Requests>(std::integral_constant<int, K>, std::bool_constant<Requests>,
                                          index_t c) ATTNKIT_INLINE_LAMBDA {
      vfloat a[RB][K][NA];
      for (int r = 0; r < RB; ++r)
        for (int u = 0; u < K; ++u)
          for (int t = 0; t < NA; ++t) a[r][u][t] = vfloat(0.f);
      const TK* k[K];
      for (int u = 0; u < K; ++u) k[u] = kp[c0 + c + u];
      // Step d requests the line holding element d + W - 1 of each key row ahead (the row's
      // last element in the tail step): one line a step for f32 rows, covering the row; the
      // line before a misaligned row's first step is the previous row's last.
      const TK* kf[K] = {};
      if constexpr (Requests)
        for (int u = 0; u < K; ++u) kf[u] = ahead[c0 + c + u];
      // over: how far the step's last element d + W - 1 would pass the row's end (tail step)
      auto step = [&](index_t d, int t, auto&& load_key, index_t over = 0) {
        if constexpr (Requests)
          for (int u = 0; u < K; ++u) __builtin_prefetch(kf[u] + (d + (W - 1) - over), 0, decode_prefetch_near ? 3 : 2);
        vfloat kv[K];
        for (int u = 0; u < K; ++u) kv[u] = phi(load_key(k[u] + d));
        for (int r = 0; r < RB; ++r) {
          const vfloat qv = vfloat::load_unaligned(q + r * ldq + d);
          for (int u = 0; u < K; ++u) a[r][u][t] = xsimd::fma(qv, kv[u], a[r][u][t]);
        }
      };
      auto full = [](const TK* x) { return load_floats(x); };
      index_t d = 0;
      // Unrolled: the next steps' loads issue under the current FMAs (measured: QK at 4 rows
      // from 82 to 44 cycles a key on Zen 3, the rolled loop waiting on its own chains).
#pragma GCC unroll 4
      for (; d + NA * W <= Dfull; d += NA * W)
        for (int t = 0; t < NA; ++t) step(d + t * W, t, full);
      for (; d < Dfull; d += W) step(d, 0, full);
      if (d < D) step(d, 0, [&](const TK* x) { return load_floats(x, D - d); }, d + W - D);
      for (int r = 0; r < RB; ++r)
        for (int u = 0; u < K; ++u) {
          for (int t = 1; t < NA; ++t) a[r][u][0] += a[r][u][t];
          dots[r][c + u] = a[r][u][0];
        }
    };
    auto pass_keys = [&]<int K>(std::integral_constant<int, K> keys, index_t c) ATTNKIT_INLINE_LAMBDA {
      if (ahead) pass(keys, std::true_type{}, c);
      else pass(keys, std::false_type{}, c);
    };
    index_t c = 0;
    if (m == W) {  // a full group: a constant trip count the compiler unrolls (measured: twice
                   // the bandwidth of the rolled loop from DRAM)
#pragma GCC unroll 16
      for (; c < W; c += KP) pass_keys(std::integral_constant<int, KP>{}, c);
    } else {
      for (; c + KP <= m; c += KP) pass_keys(std::integral_constant<int, KP>{}, c);
      for (; c < m; ++c) pass_keys(std::integral_constant<int, 1>{}, c);
      for (; c < W; ++c)
        for (int r = 0; r < RB; ++r) dots[r][c] = vfloat(0.f);
    }
    for (int r = 0; r < RB; ++r) sum_lanes(dots[r]).store_unaligned(s + r * lds + c0);  // lane c = sum of dots[r][c]
  }
}

// acc[r][0, Dv) += sum_c p[r][c] * v_c for keys c < n.
// p: RB rows of ldp weights; acc: RB rows of ldacc floats (ldacc a multiple of
// decode_pv_pad). All RB rows are updated in one pass over the V rows, in column blocks of
// decode_pv_vectors<RB> batches (RB x that many accumulators), so that a V element is loaded
// and converted once per pass, not once per row block. With `ahead`, requests the lines of
// rows ahead[0 .. n), a column block's share (up to NV x simd_width elements) per step.
template <int RB>
inline constexpr int decode_pv_vectors = std::max(2, std::min(8, decode_fma_chains / int(std::bit_ceil(unsigned(RB)))));
inline constexpr int decode_pv_rows = 4;
inline constexpr int decode_pv_pad = 8 * simd_width;  // the widest column block

template <int RB, class TV>
ATTNKIT_INLINE void decode_pv(const float* p, index_t ldp, const TV* const* vp, index_t n, index_t Dv, float* acc,
                              index_t ldacc, const TV* const* ahead = nullptr) {
  constexpr int W = simd_width, NV = decode_pv_vectors<RB>;
  static_assert(decode_pv_pad % (NV * W) == 0);
  // Rows one after another in memory (a dense cache) are requested in address order: step
  // (column block b, key c) takes the block-sized piece b n + c of the rows' whole range
  // (when the blocks tile a row exactly), so the requests run through memory as one stream
  // (on an AVX2 EPYC, address order read 0.65-0.73 of stream against 0.55-0.60 for the
  // order of use, line d of every row, then line d + 1; equal on the AVX-512 Xeon). Rows
  // apart (a head's rows in a token-major paged pool) are requested in the order of use:
  // key c's columns of the block.
  const bool stream = ahead && n > 1 && Dv % (NV * W) == 0 && ahead[n - 1] == ahead[0] + (n - 1) * Dv;
  for (index_t d = 0; d < Dv; d += NV * W) {
    const TV* const block_stream = stream ? ahead[0] + d * n : nullptr;  // piece b n of the range
    vfloat a[RB][NV];
    for (int r = 0; r < RB; ++r)
      for (int u = 0; u < NV; ++u) a[r][u] = vfloat::load_unaligned(acc + r * ldacc + d + u * W);
    // cols: the block's width, a constant in full blocks (no request loop in the unrolled body).
    // Req: how the step requests rows (0 none, 1 the stream piece, 2 ahead[c]'s columns), a
    // compile-time choice so that steps without requests carry no test.
    auto step = [&]<int Req>(std::integral_constant<int, Req>, index_t c, index_t cols, auto&& load_value) {
      if constexpr (Req == 1) prefetch_row<decode_prefetch_near>(block_stream + c * (NV * W), NV * W);
      if constexpr (Req == 2) prefetch_row<decode_prefetch_near>(ahead[c], cols, d);
      vfloat v[NV];
      for (int u = 0; u < NV; ++u) v[u] = load_value(vp[c] + d + u * W, u);
      for (int r = 0; r < RB; ++r) {
        const vfloat pr(p[r * ldp + c]);
        for (int u = 0; u < NV; ++u) a[r][u] = xsimd::fma(pr, v[u], a[r][u]);
      }
    };
    auto block = [&](auto req) ATTNKIT_INLINE_LAMBDA {
      if (d + NV * W <= Dv) {
        auto full = [](const TV* x, int) { return load_floats(x); };
        index_t c = 0;
        // Whole groups of simd_width keys: a constant trip count the compiler unrolls
        // (measured: twice the bandwidth of the loop)
        for (; c + W <= n; c += W)
#pragma GCC unroll 16
          for (int u = 0; u < W; ++u) step(req, c + u, NV * W, full);
        for (; c < n; ++c) step(req, c, NV * W, full);
      } else {
        for (index_t c = 0; c < n; ++c)
          step(req, c, Dv - d, [&](const TV* x, int u) { return load_floats(x, Dv - d - u * W); });
      }
    };
    if (stream) block(std::integral_constant<int, 1>{});
    else if (ahead) block(std::integral_constant<int, 2>{});
    else block(std::integral_constant<int, 0>{});
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
