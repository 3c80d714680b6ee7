#pragma once
// Split-KV decoding: few query rows per (sequence, key/value head), many keys.
//
// A CTA owns up to 16 query rows -- the query heads of one GQA group times the sequence's
// queries, so each K/V row is read from memory once for all of them -- and one split of the
// keys. Its 4 warps each take 16 keys of every 64-key tile: Q K^T and P V run on the tensor
// cores with the 16-row Q fragment shared, and each warp keeps its own monoid state, so the
// warps never wait for each other inside a tile. K/V tiles stream through a Stages-deep
// cp.async ring with one barrier per tile, which keeps enough bytes in flight for memory
// bandwidth. At the end the warps merge through shared memory and the CTA writes one
// partial state per split; combine_splits_kernel merges the splits and finalizes.
#include <cstdint>
#include <type_traits>

#include "../core/math.hpp"
#include "../core/problem.hpp"
#include "../mask/concepts.hpp"
#include "../score/concepts.hpp"
#include "../score/partial_state.hpp"
#include "../score/softmax.hpp"
#include "forward_kernel.cuh"
#include "ptx.hpp"
#include "sequences.cuh"

namespace attnkit::cuda::detail {

inline constexpr int max_head_dim_decode = 128;

template <int HD_>
struct DecodeTiles {
  static constexpr int HD = HD_;
  static constexpr int warps = 4, threads = 128, rows = 16, BN = 64, keys_per_warp = BN / warps;
  static constexpr int stages = HD == 128 ? 3 : 4;  // 32 KB of K+V per stage at HD = 128
  static constexpr int stage_elems = 2 * BN * HD;
  static constexpr int smem_bytes = (rows * HD + stages * stage_elems) * 2;
  // the warps' states are merged in the stage buffers once the key loop is done
  static_assert(warps * rows * (HD + 2) * 4 <= stages * stage_elems * 2, "merge buffer exceeds the stages");
  static_assert(keys_per_warp == 16, "a warp's keys form one m16n8k16 k-step of P V");
};

// Rows the decode path takes per (sequence, kv head): up to 4 CTAs of 16 rows.
inline constexpr int decode_max_rows = 64;

template <class Variant, class Score, class T, class KV>
struct DecodeArgs {
  SeqRows<const T> q;
  KV kv;
  float* part_o;  // [splits, B, Hq, max Nq, Dv]
  float* part_m;  // [splits, B, Hq, max Nq], natural-log units
  float* part_l;
  bool q_offset_given;
  ProblemInfo p;  // ragged / paged: the longest sequence
  Variant attn;
  Score score;
  int split_len;   // keys per split (a multiple of BN)
  int row_chunks;  // CTAs of 16 rows per (sequence, kv head)
  bool vec;
  bool count_rows;
};

__device__ __forceinline__ std::int64_t split_row(const ProblemInfo& all, int split, int b, int h, int i) {
  return ((std::int64_t(split) * all.B + b) * all.Hq + h) * all.Nq + i;
}

template <class Tiles, class Variant, class Score, class T, class KV>
__global__ void __launch_bounds__(Tiles::threads) decode_kernel(const DecodeArgs<Variant, Score, T, KV> a) {
  constexpr int HD = Tiles::HD, BN = Tiles::BN, NT = Tiles::threads, S = Tiles::stages, W = Tiles::warps;
  constexpr int KS = HD / 16, ON = HD / 8;
  constexpr bool linear = is_linear_score<Score>();
  constexpr bool tracks_max = Score::tracks_max;
  constexpr bool base2 = std::is_same_v<Score, Softmax>;
  constexpr float logit_unit = base2 ? 1.4426950408889634f : 1.f;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sKV = sQ + Tiles::rows * HD;

  const int split = blockIdx.x, hk = blockIdx.y / a.row_chunks, chunk = blockIdx.y % a.row_chunks, b = blockIdx.z;
  ProblemInfo p_seq = a.p;
  Score score_seq = a.score;
  if constexpr (KV::varlen) {
    p_seq = sequence_problem(a.p, a.q, a.kv, a.q_offset_given, b);
    score_seq = score_for_keys(a.score, p_seq.Nk);
  }
  const ProblemInfo& p = KV::varlen ? p_seq : a.p;
  const Score& score = KV::varlen ? score_seq : a.score;
  const int group = int(p.group()), nq = int(p.Nq), Nk = int(p.Nk), D = int(p.D), Dv = int(p.Dv);
  const int r0 = chunk * Tiles::rows, n_rows = min(Tiles::rows, group * nq - r0);
  if (n_rows <= 0) return;  // this sequence has fewer rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const auto row_head = [&](int r) { return hk * group + (r0 + r) / nq; };
  const auto row_query = [&](int r) { return (r0 + r) % nq; };

  const auto& mask = a.attn.mask;
  int i_lo = nq, i_hi = 0;
  for (int r = 0; r < n_rows; ++r) i_lo = min(i_lo, row_query(r)), i_hi = max(i_hi, row_query(r) + 1);
  const index_t pos_lo = p.pos(i_lo), pos_hi = p.pos(i_hi);
  const KeyBounds kb = mask_key_bounds(mask, pos_lo, pos_hi, p.Nk);
  const index_t split_lo = p.key_begin + index_t(split) * a.split_len;
  const int k_begin = int(max(max(kb.lo, p.key_begin), split_lo));
  const int k_end = int(min(min(kb.hi, p.key_end), split_lo + a.split_len));
  const int kt_first = k_begin / BN, kt_end = k_begin < k_end ? (k_end + BN - 1) / BN : 0;
  const auto tile_kind = [&](int kt) {
    const int j0 = kt * BN;
    const TileKind c = mask_classify(mask, TileRect{pos_lo, pos_hi, j0, min(j0 + BN, Nk)});
    if (c == TileKind::full && (j0 < k_begin || j0 + BN > k_end)) return TileKind::partial;
    return c;
  };
  const auto next_tile = [&](int kt) {
    while (kt < kt_end && tile_kind(kt) == TileKind::skip) ++kt;
    return kt;
  };
  const auto k_rows = a.kv.k_rows(b, hk);
  const auto v_rows = a.kv.v_rows(b, hk);
  // Paged caches read the block-table entries of the next tile to load one tile ahead: a table
  // read in front of each tile's copies put a second memory round trip into the copy pipeline.
  constexpr bool paged = std::is_same_v<std::remove_cv_t<decltype(k_rows)>, PagedRows<const T>>;
  constexpr int chunks = HD / 8, copy_rows = NT / chunks;  // 16-byte columns; rows per copy step
  [[maybe_unused]] auto pages = [&] {
    if constexpr (paged) return PagedTileCopies<BN / copy_rows, copy_rows>{Nk, int(threadIdx.x) / chunks, int(threadIdx.x) % chunks};
    else return 0;
  }();
  const auto fetch_pages = [&](int kt) {
    if constexpr (paged) pages.fetch(k_rows, kt * BN);
  };
  const auto load_kv = [&](int kt, int stage) {
    T* sK = sKV + stage * Tiles::stage_elems;
    if constexpr (paged) {
      if (a.vec) {  // the entries of tile kt were fetched ahead (fetch_pages)
        pages.template copy<RowSwizzle<HD>>(k_rows, sK, a.kv.any(), D);
        pages.template copy<RowSwizzle<HD>>(v_rows, sK + BN * HD, a.kv.any_v(), Dv);
        return;
      }
    }
    load_tile<HD, BN, NT>(sK, k_rows, a.kv.any(), kt * BN, Nk, D, a.vec);
    load_tile<HD, BN, NT>(sK + BN * HD, v_rows, a.kv.any_v(), kt * BN, Nk, Dv, a.vec);
  };

  // Rows of this thread (the same rows in every warp): r = 0 -> row g, r = 1 -> g + 8.
  int row_h[2], row_i[2];
  index_t row_pos[2];
  bool row_ok[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int lr = g + 8 * r;
    row_ok[r] = lr < n_rows;
    row_h[r] = row_ok[r] ? row_head(lr) : hk * group;
    row_i[r] = row_ok[r] ? row_query(lr) : i_lo;
    row_pos[r] = p.pos(row_i[r]);
  }
  using RowMask = decltype(mask_row(mask, index_t(0)));
  RowMask row_mask[2] = {mask_row(mask, row_pos[0]), mask_row(mask, row_pos[1])};

  // Length-scaled scores: each row's allowed keys over the whole sequence, not this split.
  float lambda[2] = {1.f, 1.f};
  if (a.count_rows) {
    float cnt[2] = {0.f, 0.f};
    for (int c = int(kb.lo / BN); c < int((kb.hi + BN - 1) / BN); ++c) {
      const int j0 = c * BN, j1 = min(j0 + BN, Nk);
      const TileKind kind = mask_classify(mask, TileRect{pos_lo, pos_hi, j0, j1});
      if (kind == TileKind::skip) continue;
      for (int j = j0 + t; j < j1; j += 4)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          if (kind == TileKind::full || row_mask[r].allowed(j)) cnt[r] += 1.f;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      cnt[r] += __shfl_xor_sync(0xffffffffu, cnt[r], 1);
      cnt[r] += __shfl_xor_sync(0xffffffffu, cnt[r], 2);
      lambda[r] = score_row_scale<float>(score, cnt[r]);
    }
  }

  // ---- prologue: Q with the first tile, then Stages - 2 more tiles, one commit group each
  int kt = next_tile(kt_first), kt_load = kt;
  if (kt < kt_end)
    load_tile<HD, Tiles::rows, NT>(sQ, [&](int r) { return a.q.row(b, row_head(r), row_query(r)); }, a.q.data, 0,
                                   n_rows, D, a.vec);
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (kt_load < kt_end) fetch_pages(kt_load), load_kv(kt_load, s), kt_load = next_tile(kt_load + 1);
    ptx::cp_async_commit();
  }
  if (kt_load < kt_end) fetch_pages(kt_load);  // the first tile the loop loads

  std::uint32_t qf[KS][4];
  float o[ON][4];
#pragma unroll
  for (int n = 0; n < ON; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {neg_inf, neg_inf}, l[2] = {0.f, 0.f};
  const int kw = warp * Tiles::keys_per_warp;  // this warp's first key row in a tile

  for (int it = 0; kt < kt_end; ++it) {
    ptx::cp_async_wait<S - 2>();  // tile `it` (and Q) landed
    __syncthreads();              // ... for every thread; and the stage of tile it - 1 is free
    if (kt_load < kt_end) {
      load_kv(kt_load, (it + S - 1) % S), kt_load = next_tile(kt_load + 1);
      if (kt_load < kt_end) fetch_pages(kt_load);  // read while the copies are in flight
    }
    ptx::cp_async_commit();

    if (it == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        ptx::ldmatrix_x4(qf[ks], sQ + swz<HD>(lane % 16, ks * 16 + (lane / 16) * 8));
        if constexpr (linear) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int col = ks * 16 + 2 * t + (r / 2) * 8;
            const float2 x = ptx::unpack2<T>(qf[ks][r]);
            qf[ks][r] = ptx::pack2<T>(col < D ? score.feature(x.x) : 0.f, col + 1 < D ? score.feature(x.y) : 0.f);
          }
        }
      }
    }
    T* sK = sKV + (it % S) * Tiles::stage_elems;
    T* sV = sK + BN * HD;
    const int j0 = kt * BN + kw;
    const TileKind kind = tile_kind(kt);

    if constexpr (linear) {  // phi(K) in place on this warp's own key rows
      for (int e = lane; e < Tiles::keys_per_warp * HD; e += 32) {
        const int col = e % HD;
        if (col < D) {
          T& x = sK[swz<HD>(kw + e / HD, col)];
          x = ptx::from_f32<T>(score.feature(ptx::to_f32(x)));
        }
      }
      __syncwarp();
    }

    float s[2][4] = {};
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      std::uint32_t kf[4];
      ptx::ldmatrix_x4(kf, sK + swz<HD>(kw + (lane / 16) * 8 + lane % 8, ks * 16 + ((lane / 8) & 1) * 8));
      ptx::mma_16816<T>(s[0], qf[ks], kf[0], kf[1]);
      ptx::mma_16816<T>(s[1], qf[ks], kf[2], kf[3]);
    }

    // Logits, mods and the element mask (partial tiles only), as in the forward kernel.
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2, j = j0 + n * 8 + 2 * t + (e & 1);
        float x = s[n][e];
        if constexpr (!linear) {
          if constexpr (Variant::has_mods) {
            x = row_ok[r] && j < Nk
                    ? a.attn.template modify<float>(x * p.scale, LogitCoord{b, row_h[r], row_i[r], row_pos[r], j}) *
                          logit_unit
                    : neg_inf;
          } else {
            x *= p.scale * logit_unit;
          }
          x = sanitize_logit(x);
        }
        if (kind != TileKind::full) {
          const bool ok = row_ok[r] && j >= k_begin && j < k_end && row_mask[r].allowed(j);
          x = ok ? x : neg_inf;
        } else if (!row_ok[r]) {
          x = neg_inf;
        }
        s[n][e] = x;
      }

    float alpha[2] = {1.f, 1.f}, m_use[2] = {0.f, 0.f};
    if constexpr (tracks_max) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = fmaxf(m[r], fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1])));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        m_use[r] = mx == neg_inf ? 0.f : mx;
        if constexpr (base2) alpha[r] = exp2f(m[r] - m_use[r]);
        else alpha[r] = m[r] == neg_inf ? 0.f : score.weight(m[r], m_use[r], 1.f);
        m[r] = mx;
      }
    }
    l[0] *= alpha[0], l[1] *= alpha[1];
    std::uint32_t pf[4];
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      float w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        if constexpr (base2) w[e] = exp2f(s[n][e] - m_use[r]);
        else w[e] = s[n][e] == neg_inf ? 0.f : score.weight(s[n][e], m_use[r], lambda[r]);
        l[r] += w[e];
      }
      pf[2 * n] = ptx::pack2<T>(w[0], w[1]);
      pf[2 * n + 1] = ptx::pack2<T>(w[2], w[3]);
    }
#pragma unroll
    for (int n = 0; n < ON; ++n) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0];
      o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int n2 = 0; n2 < ON / 2; ++n2) {
      std::uint32_t vf[4];
      ptx::ldmatrix_x4_trans(vf, sV + swz<HD>(kw + lane % 8 + ((lane / 8) & 1) * 8, n2 * 16 + (lane / 16) * 8));
      ptx::mma_16816<T>(o[2 * n2], pf, vf[0], vf[1]);
      ptx::mma_16816<T>(o[2 * n2 + 1], pf, vf[2], vf[3]);
    }
    kt = next_tile(kt + 1);
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the stages become the merge buffer

  // ---- merge the warps' states: wo [W][rows][HD], then wm, wl [W][rows]
  float* wo = reinterpret_cast<float*>(sKV);
  float* wm = wo + W * Tiles::rows * HD;
  float* wl = wm + W * Tiles::rows;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int lr = g + 8 * r;
    if (t == 0) wm[warp * Tiles::rows + lr] = m[r], wl[warp * Tiles::rows + lr] = l[r];
#pragma unroll
    for (int n = 0; n < ON; ++n) {
      float* dst = wo + (warp * Tiles::rows + lr) * HD + n * 8 + 2 * t;
      dst[0] = o[n][2 * r];
      dst[1] = o[n][2 * r + 1];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n_rows * HD; e += NT) {
    const int lr = e / HD, col = e % HD;
    float mx = neg_inf;
    if constexpr (tracks_max)
      for (int w = 0; w < W; ++w) mx = fmaxf(mx, wm[w * Tiles::rows + lr]);
    float acc = 0.f, lsum = 0.f;
    for (int w = 0; w < W; ++w) {
      float f = 1.f;
      if constexpr (tracks_max) {
        const float mw = wm[w * Tiles::rows + lr];
        f = mw == neg_inf ? 0.f : (base2 ? exp2f(mw - mx) : math<float>::exp(mw - mx));
      }
      acc += f * wo[(w * Tiles::rows + lr) * HD + col];
      lsum += f * wl[w * Tiles::rows + lr];
    }
    const std::int64_t row = split_row(a.p, split, b, row_head(lr), row_query(lr));
    if (col < Dv) a.part_o[row * a.p.Dv + col] = acc;
    if (col == 0) {
      a.part_m[row] = tracks_max ? mx / logit_unit : 0.f;
      a.part_l[row] = lsum;
    }
  }
}

// Merges the splits of each row (the score's monoid combine) and writes the finalized output
// and lse, or the merged state (partial mode). One CTA per (sequence, head, query): its warps
// take every combine_warps-th split and merge through shared memory at the end. (One warp per
// row walked the splits one after another, a memory round trip each: a single sequence with
// 8 heads and 33 splits spent 15.7 us there, 8% of the whole decode, on the H100.)
inline constexpr int combine_warps = 4;

template <class Score, class TO>
struct CombineArgs {
  const float* part_o;
  const float* part_m;
  const float* part_l;
  int splits;
  ProblemInfo p;                      // B, Hq, longest Nq, Dv
  const std::int32_t* q_lengths_from;  // ragged query offsets (null: every sequence has p.Nq)
  SeqRows<TO> o;
  SeqRows<float> lse;                 // nullable
  SeqRows<float> m, l;                // partial mode
  bool partial;
  Score score;
};

template <class Score, class TO>
__global__ void __launch_bounds__(combine_warps * 32) combine_splits_kernel(const CombineArgs<Score, TO> a) {
  constexpr int W = combine_warps, C = max_head_dim_decode / 32;
  const int b = blockIdx.y, row = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int nq = a.q_lengths_from ? a.q_lengths_from[b + 1] - a.q_lengths_from[b] : int(a.p.Nq);
  const int h = row / int(a.p.Nq), i = row % int(a.p.Nq);
  if (h >= a.p.Hq || i >= nq) return;  // the whole CTA: no barrier is left waiting
  const int Dv = int(a.p.Dv);
  __shared__ float warp_max[W];
  __shared__ float warp_state[W][C * 32 + 1];  // each warp's o and, last, its l
  // The row's maximum over all splits, every thread a share of them.
  float mx = neg_inf;
  if constexpr (Score::tracks_max) {
    for (int s = threadIdx.x; s < a.splits; s += W * 32) mx = fmaxf(mx, a.part_m[split_row(a.p, s, b, h, i)]);
#pragma unroll
    for (int k = 16; k > 0; k /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, k));
    if (lane == 0) warp_max[warp] = mx;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < W; ++w) mx = fmaxf(mx, warp_max[w]);
  }
  float acc[C] = {};
  float lsum = 0.f;
  // Unrolled: the loads of the next splits issue before this one's sums need them.
#pragma unroll 4
  for (int s = warp; s < a.splits; s += W) {
    const std::int64_t r = split_row(a.p, s, b, h, i);
    float f = 1.f;
    if constexpr (Score::tracks_max) f = a.part_m[r] == neg_inf ? 0.f : math<float>::exp(a.part_m[r] - mx);
    lsum += f * a.part_l[r];
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (lane + 32 * c < Dv) acc[c] += f * a.part_o[r * Dv + lane + 32 * c];
  }
  if (warp > 0) {
#pragma unroll
    for (int c = 0; c < C; ++c) warp_state[warp][lane + 32 * c] = acc[c];
    if (lane == 0) warp_state[warp][C * 32] = lsum;
  }
  __syncthreads();
  if (warp > 0) return;
#pragma unroll
  for (int w = 1; w < W; ++w) {
#pragma unroll
    for (int c = 0; c < C; ++c) acc[c] += warp_state[w][lane + 32 * c];
    lsum += warp_state[w][C * 32];
  }
  if constexpr (std::is_same_v<TO, float>) {
    if (a.partial) {
#pragma unroll
      for (int c = 0; c < C; ++c)
        if (lane + 32 * c < Dv) a.o.row(b, h, i)[lane + 32 * c] = acc[c];
      if (lane == 0) *a.m.row(b, h, i) = Score::tracks_max ? mx : 0.f, *a.l.row(b, h, i) = lsum;
      return;
    }
  }
  const float f = a.score.finalize_factor(mx, lsum);
#pragma unroll
  for (int c = 0; c < C; ++c)
    if (lane + 32 * c < Dv) a.o.row(b, h, i)[lane + 32 * c] = ptx::from_f32<TO>(acc[c] * f);
  if constexpr (score_has_lse<Score>())
    if (a.lse.data && lane == 0) *a.lse.row(b, h, i) = row_lse(mx, lsum);
}

}  // namespace attnkit::cuda::detail
