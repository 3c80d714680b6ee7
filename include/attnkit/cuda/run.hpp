#pragma once
// Public entry points of the CUDA backend:
//   cuda::run(attn, q, k, v, o, opts, stream)                       dense batches
//   cuda::run_partial(attn, q, k, v, state, opts, stream)           unnormalised monoid state
//   cuda::run_ragged(attn, q, k, v, o, q_rows, k_rows, opts, stream) ragged batches
//   cuda::run_paged(attn, q, q_rows, kv, o, opts, stream)           paged KV cache
// q, k, v: device (or managed) memory in half or bfloat16, any strides with a contiguous
// feature axis; o: float, half or bfloat16; opts.lse and every index array: device memory.
// Few query rows per key/value head (decoding) take the split-KV kernel, the rest the
// forward kernel. Inputs are validated on the host before the launch
// (attnkit::invalid_argument); CUDA errors are thrown as attnkit::cuda::cuda_error. The
// launches are asynchronous on `stream`.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/problem.hpp"
#include "../core/tensor.hpp"
#include "../mask/full.hpp"
#include "../mask/combinators.hpp"
#include "../mask/sliding_window.hpp"
#include "../core/paged.hpp"
#include "../score/concepts.hpp"
#include "error.hpp"
#include "bind.hpp"
#include "decode_kernel.cuh"
#include "forward_kernel.cuh"
#include "linear_chunked.cuh"
#include "cluster_gather.cuh"
#include "moba_gather.cuh"
#include "occupancy.hpp"

namespace attnkit::cuda {

// Largest head dim (D and Dv) of the CUDA backend.
inline constexpr index_t max_head_dim = 128;

// Masks that mean the same for every sequence of a ragged or paged batch (they do not
// depend on the sequence lengths, which only the device knows).
template <class M>
inline constexpr bool sequence_independent_mask =
    std::is_same_v<M, Full> || std::is_same_v<M, Causal> || std::is_same_v<M, SlidingWindow>;
template <class A, class B>
inline constexpr bool sequence_independent_mask<And<A, B>> = sequence_independent_mask<A> && sequence_independent_mask<B>;
template <class A, class B>
inline constexpr bool sequence_independent_mask<Or<A, B>> = sequence_independent_mask<A> && sequence_independent_mask<B>;

namespace detail {

template <class T>
bool rows_16byte_aligned(const TensorView<T>& t) {
  const bool strides = t.stride[0] % 8 == 0 && t.stride[1] % 8 == 0 && t.stride[2] % 8 == 0;
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && strides && t.shape[3] % 8 == 0;
}
template <class T>
bool rows_16byte_aligned(const PagePool<T>& pool, index_t dim) {
  const bool strides = pool.stride[0] % 8 == 0 && pool.stride[1] % 8 == 0 && pool.stride[2] % 8 == 0;
  return reinterpret_cast<std::uintptr_t>(pool.data) % 16 == 0 && strides && dim % 8 == 0;
}

template <class T>
void check_storage_types() {
  static_assert(std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                "attnkit::cuda: q, k and v must be attnkit::half or attnkit::bfloat16 (tensor-core inputs)");
}
template <class TO>
void check_output_type() {
  static_assert(std::is_same_v<TO, float> || std::is_same_v<TO, half> || std::is_same_v<TO, bfloat16>,
                "attnkit::cuda: the output must be float, half or bfloat16");
}

// A call in the layout-neutral form the kernels read.
template <class T, class TO, class KV>
struct Call {
  SeqRows<const T> q;
  KV kv;
  SeqRows<TO> o;
  SeqRows<float> lse, m, l;  // m, l: partial mode
  bool partial = false;
  bool q_offset_given = false;
  bool vec = false;
  ProblemInfo p;  // ragged / paged: B sequences, the longest Nq and Nk
  index_t q_rows_total = 0;  // ragged / paged: the query rows of all sequences
  PrepassInputs<T> prepass{};  // dense calls: content-dependent masks read Q and K from here
};

template <class Tiles, class Variant, class Score, class T, class TO, class KV>
void launch_forward(const ForwardArgs<Variant, Score, T, TO, KV>& args, index_t q_rows_total, Workspace& workspace,
                    cudaStream_t stream) {
  using MaskT = typename Variant::mask_type;
  // 2-D and 3-D neighborhoods of a whole grid run on query and key patches (patch_tiles.cuh)
  // where windows are narrow and the patches mostly inside the grid (an outer axis shorter
  // than a patch leaves slots empty; row-major tiles do better there).
  if constexpr (patchable_mask<MaskT> && !KV::varlen) {
    const ProblemInfo& p = args.p;
    using Shape = ForwardShape<Tiles, true, is_linear_score<Score>()>;
    const int key_bits[2] = {std::countr_zero(unsigned(Shape::key_tile(false))), std::countr_zero(unsigned(Shape::key_tile(true)))};
    const patch_tiling_t<MaskT> tiling(args.attn.mask, std::countr_zero(unsigned(Tiles::warps)), key_bits);
    const index_t ctas = tiling.query_patches();
    const bool filled = ctas * Tiles::BM <= 2 * p.Nq;
    if (p.Nq == p.Nk && p.q_offset == 0 && p.key_begin == 0 && p.key_end == p.Nk &&
        patch_tiling_t<MaskT>::worthwhile(args.attn.mask) && filled) {
      constexpr auto kernel = forward_kernel<Tiles, true, Variant, Score, T, TO, KV>;
      auto a = args;
      a.patches = tiling;
      a.cached_tiles = 0;
      require(ctas < (index_t(1) << 31), "mask.grid", "too many query patches for one launch");
      const bool hopper = compute_capability_major() == 9;  // may run the sm_90a code: the larger tiles
      const int smem = gmma::cta_shared_bytes(Shape::tile_bytes(hopper) + Shape::align_slack);
      ensure_dynamic_smem<kernel>(smem, "cudaFuncSetAttribute(forward_kernel)");
      kernel<<<dim3(unsigned(ctas), unsigned(p.Hq), unsigned(p.B)), Tiles::threads, smem, stream>>>(a);
      check(cudaGetLastError(), "forward_kernel launch");
      return;
    }
  }
  constexpr auto kernel = forward_kernel<Tiles, false, Variant, Score, T, TO, KV>;
  // The visit list of up to 16384 key tiles (1M keys), 2 bytes each, lives in shared memory
  // after the tiles, counted in the narrow tiles (an upper bound for wide ones). An sm_90
  // device may run the sm_90a code, whose wgmma path takes wide key tiles.
  auto a = args;
  const std::int64_t n_tiles = (a.p.Nk + Tiles::BN - 1) / Tiles::BN;
  a.cached_tiles = int(n_tiles <= 16384 ? n_tiles : 0);
  using Shape = ForwardShape<Tiles, false, is_linear_score<Score>()>;
  const bool hopper = compute_capability_major() == 9;
  const int tile_smem = Shape::tile_bytes(hopper) + Shape::align_slack;
  const int smem = gmma::cta_shared_bytes(tile_smem + (2 * a.cached_tiles + 15) / 16 * 16);
  // Paged pools of such K and V: boxes of whole pages by TMA (page sizes 8 x 2^k, or multiples
  // of the tile).
  if constexpr (is_paged_source<KV> && !is_linear_score<Score>()) {
    const auto& kv = a.kv.kv;
    if (a.p.D == Tiles::HD && a.p.Dv == Tiles::HD && hopper && a.vec) {
      constexpr int rows = Shape::key_tile(true);
      a.tma.on = tma::page_tile_map(a.tma.k, kv.k, kv.pages, kv.page_size, kv.heads, kv.dim, Tiles::HD, rows) &&
                 tma::page_tile_map(a.tma.v, kv.v, kv.pages, kv.page_size, kv.heads, kv.dim_v, Tiles::HD, rows);
    }
  }
  // Dense K and V whose head dim is the tile's: key tiles by TMA on Hopper (tma.hpp).
  if constexpr (!KV::varlen && !is_linear_score<Score>()) {
    const ProblemInfo& p = a.p;
    if (p.D == Tiles::HD && p.Dv == Tiles::HD && hopper) {
      constexpr int rows = Shape::key_tile(true);
      const auto view = [&](const SeqRows<const T>& r) {
        return TensorView<const T>{r.data, {p.B, p.Hkv, p.Nk, p.D}, {r.s[0], r.s[1], r.s[2]}};
      };
      a.tma.on = tma::key_tile_map(a.tma.k, view(a.kv.k), Tiles::HD, rows) &&
                 tma::key_tile_map(a.tma.v, view(a.kv.v), Tiles::HD, rows);
    }
  }
  ensure_dynamic_smem<kernel>(smem, "cudaFuncSetAttribute(forward_kernel)");
  dim3 grid(unsigned((a.p.Nq + Tiles::BM - 1) / Tiles::BM), unsigned(a.p.Hq), unsigned(a.p.B));
  if constexpr (KV::varlen) {
    // Sequences of unequal lengths: the real query tiles, listed by a one-CTA pre-pass
    // (tile_schedule.cuh) with the longest sequences first, when the dense grid would be more
    // than a fifth empty slots.
    const index_t dense = a.p.B * index_t(grid.x);
    const index_t slots = varlen_tile_slots(a.p.B, a.p.Nq, q_rows_total, Tiles::BM);
    // (A dense grid also has at most 65535 sequences in gridDim.z.)
    if ((dense * 4 > slots * 5 || a.p.B > 65535) && slots * a.p.Hq < (index_t(1) << 31)) {
      ScheduleArgs<typename Variant::mask_type, T, KV> sa{a.q, a.kv, a.p, a.q_offset_given, a.attn.mask, nullptr, int(slots)};
      sa.tiles = workspace.alloc<VarlenTile>(std::size_t(slots));
      schedule_varlen_tiles<Tiles::BM><<<1, schedule_threads, 0, stream>>>(sa);
      check(cudaGetLastError(), "schedule_varlen_tiles launch");
      a.tiles = sa.tiles;
      grid = dim3(unsigned(slots * a.p.Hq), 1, 1);
    }
  }
  kernel<<<grid, Tiles::threads, smem, stream>>>(a);
  check(cudaGetLastError(), "forward_kernel launch");
}

// The forward kernel's tiles for the head dims of p: f(Tiles{}). Measured at D = 64: 4 warps x
// 3 CTAs 1.18x 4 x 2 (8 ping-pong warps x 1: 0.945 of 4 x 2), 128-key tiles 1.03x 64-key ones
// with TMA; at D = 128 8 warps x 1 CTA is best.
template <class F>
void with_forward_tiles(const ProblemInfo& p, F&& f) {
  if (std::max(p.D, p.Dv) <= 64) f(ForwardTiles<64, 4, 128>{});
  else f(ForwardTiles<128, 8, 128>{});
}

// MoBA prefill as routed lists and own blocks (moba_gather.cuh).
template <class Tiles, class Variant, class Score, class T, class TO>
void launch_moba_gathered(const Variant& attn, const Score& score, const Call<T, TO, ContiguousKV<T, false>>& c,
                          cudaStream_t stream) {
  const ProblemInfo& p = c.p;
  const MoBA& moba = attn.mask;
  Workspace ws(stream);
  const auto routing = DeviceBinder<MoBA>::prepare(moba, c.prepass, ws, stream);
  const int nkb = int(moba.k_blocks(p.Nk));
  const MoBALists L{int(p.B), int(p.Hq), int(p.Nq), nkb, int(moba.block), int(routing.words), int(moba.top_k - 1),
                    p.q_offset};
  // Routed (query, block) pairs per head, exactly: every query keeps min(top_k - 1, blocks
  // before its own) of them. Summed over runs of queries that share an own block.
  std::int64_t per_head = 0;
  for (index_t pos = p.q_offset; pos < p.q_offset + p.Nq;) {
    const index_t next = std::min(p.q_offset + p.Nq, (pos / moba.block + 1) * moba.block);
    per_head += (next - pos) * L.routed_count(pos);
    pos = next;
  }
  const std::int64_t routed = per_head * p.B * p.Hq, rows = p.B * p.Hq * p.Nq;
  require(routed < (index_t(1) << 31) && rows < (index_t(1) << 31), "q.shape",
          "too many query rows or routed (query, block) pairs for one MoBA launch");

  // Softmax's launches write finished outputs and their lse, merged by lse (the own block's
  // straight into o); other scores write float partial states (o, m, l). moba_gather.cuh says why.
  constexpr bool lse_form = score_has_lse<Score>();
  using State = std::conditional_t<lse_form, TO, float>;
  const auto state_rows = [&](auto* data, std::int64_t width, const std::int32_t* offsets) {
    using U = std::remove_pointer_t<decltype(data)>;
    if (offsets) return SeqRows<U>{data, {0, 0, width}, offsets};  // packed rows of a varlen launch
    return SeqRows<U>{data, {p.Hq * p.Nq * width, p.Nq * width, width}, nullptr};
  };
  // Sets a launch's outputs: n state rows at `o` (null: c.o), per row either an lse or m and l.
  const auto set_outputs = [&](auto& a, State* o, float* terms, std::int64_t n, const std::int32_t* offsets) {
    if constexpr (lse_form) {
      a.o = o ? state_rows(o, p.Dv, offsets) : c.o;
      a.lse = state_rows(terms, 1, offsets);
    } else {
      a.o = state_rows(o, p.Dv, offsets);
      a.m = state_rows(terms, 1, offsets), a.l = state_rows(terms + n, 1, offsets);
      a.partial = true;
    }
  };
  constexpr std::int64_t terms_per_row = lse_form ? 1 : 2;

  // The queries' own blocks: [B, Hq, Nq] rows.
  State* own_o = lse_form ? nullptr : reinterpret_cast<State*>(ws.alloc<float>(std::size_t(rows * p.Dv)));
  float* own_terms = ws.alloc<float>(std::size_t(rows * terms_per_row));
  {
    const auto own = make_attention(score, OwnBlockCausal{moba.block});
    ForwardArgs<std::remove_const_t<decltype(own)>, Score, T, State, ContiguousKV<T, false>> a{};
    a.q = c.q, a.kv = c.kv;
    set_outputs(a, own_o, own_terms, rows, nullptr);
    a.p = p;
    a.attn = own;
    a.score = score;
    a.vec = c.vec;
    launch_forward<Tiles>(a, p.Nq, ws, stream);
  }
  // The routed blocks: one varlen sequence per (batch, head, key block), its queries gathered.
  const std::int64_t S = L.sequences();
  std::int32_t* slot_rows = nullptr;
  State* part_o = nullptr;
  float* part_terms = nullptr;
  if (routed > 0) {
    slot_rows = ws.alloc<std::int32_t>(std::size_t(rows * L.slots));
    const BuiltLists lists = build_lists(MoBARoutedLists{L, routing.bits, slot_rows}, routed, ws, stream);
    int q_stride = 0;
    const T* q_packed = gather_rows(lists, routed, c.q, p.Hq, p.Nq, p.D, ws, stream, q_stride);
    part_o = ws.alloc<State>(std::size_t(routed * p.Dv));
    part_terms = ws.alloc<float>(std::size_t(routed * terms_per_row));

    const auto dense_keys = make_attention(score, Full{});
    ForwardArgs<std::remove_const_t<decltype(dense_keys)>, Score, T, State, RoutedBlockKV<T>> a{};
    a.q = {q_packed, {0, 0, q_stride}, lists.seq_offsets};
    a.kv = {c.kv.k, c.kv.v, int(p.Nk), int(moba.block), nkb, int(p.Hq), int(p.group())};
    set_outputs(a, part_o, part_terms, routed, lists.seq_offsets);
    a.q_offset_given = true;
    a.p = p;
    a.p.B = S, a.p.Hq = 1, a.p.Hkv = 1, a.p.q_offset = 0;
    a.p.Nk = std::min<index_t>(p.Nk, moba.block), a.p.key_begin = 0, a.p.key_end = a.p.Nk;
    a.attn = dense_keys;
    a.score = score;
    a.vec = c.vec;
    launch_forward<Tiles>(a, routed, ws, stream);
  }
  if constexpr (lse_form) {
    const bool vec = rows_of_16_byte_pieces(c.o, p.Dv);  // 16-byte pieces of o's rows
    const MoBAMergeLseArgs<TO> mg{L, int(p.Dv), vec, own_terms, part_o, part_terms, slot_rows, c.o, c.lse};
    const std::int64_t pieces = rows * (vec ? p.Dv / index_t(16 / sizeof(TO)) : p.Dv);
    moba_merge_lse_kernel<TO><<<blocks_for(pieces, 256), 256, 0, stream>>>(mg);
  } else {
    const MoBAMergeArgs<Score, TO> mg{L, int(p.Dv), own_o, own_terms, own_terms + rows, part_o, part_terms,
                                      part_terms + routed, slot_rows, c.o, c.lse, score};
    moba_merge_kernel<Score, TO><<<blocks_for(rows, moba_merge_warps), moba_merge_warps * 32, 0, stream>>>(mg);
  }
  check(cudaGetLastError(), "moba merge launch");
}

// Cluster-routing prefill as per-cluster lists of queries and keys (cluster_gather.cuh).
template <class Tiles, class Variant, class Score, class T, class TO>
void launch_cluster_gathered(const Variant& attn, const Score& score, const Call<T, TO, ContiguousKV<T, false>>& c,
                             cudaStream_t stream) {
  const ProblemInfo& p = c.p;
  Workspace ws(stream);
  const auto ids = DeviceBinder<ClusterRouting>::prepare(attn.mask, c.prepass, ws, stream);
  const int C = int(attn.mask.n_clusters);
  const std::int64_t q_total = p.B * p.Hq * p.Nq, k_total = p.B * p.Hkv * p.Nk;
  const BuiltLists ql = build_lists(ClusterLists{ids.qc, p.B * p.Hq, int(p.Nq), C}, q_total, ws, stream);
  const BuiltLists kl = build_lists(ClusterLists{ids.kc, p.B * p.Hkv, int(p.Nk), C}, k_total, ws, stream);
  int q_stride = 0, k_stride = 0, v_stride = 0;
  const T* q_packed = gather_rows(ql, q_total, c.q, p.Hq, p.Nq, p.D, ws, stream, q_stride);
  const T* k_packed = gather_rows(kl, k_total, c.kv.k, p.Hkv, p.Nk, p.D, ws, stream, k_stride);
  const T* v_packed = gather_rows(kl, k_total, c.kv.v, p.Hkv, p.Nk, p.Dv, ws, stream, v_stride);
  TO* o_packed = ws.alloc<TO>(std::size_t(q_total * p.Dv));
  float* lse_packed = c.lse.data ? ws.alloc<float>(std::size_t(q_total)) : nullptr;

  const auto dense_keys = make_attention(score, Full{});
  ForwardArgs<std::remove_const_t<decltype(dense_keys)>, Score, T, TO, ListedKV<T>> a{};
  a.q = {q_packed, {0, 0, q_stride}, ql.seq_offsets};
  a.kv = {k_packed, v_packed, k_stride, v_stride, kl.seq_offsets, int(p.Hq), int(p.group()), C};
  a.o = {o_packed, {0, 0, p.Dv}, ql.seq_offsets};
  a.lse = {lse_packed, {0, 0, 1}, ql.seq_offsets};
  a.q_offset_given = true;
  a.p = p;
  a.p.B = p.B * p.Hq * C, a.p.Hq = 1, a.p.Hkv = 1, a.p.q_offset = 0, a.p.key_begin = 0, a.p.key_end = p.Nk;
  a.attn = dense_keys;
  a.score = score;
  a.vec = c.vec;
  launch_forward<Tiles>(a, q_total, ws, stream);
  scatter_rows(ql, q_total, o_packed, lse_packed, c.o, c.lse, p.Hq, p.Nq, p.Dv, stream);
}

template <class Tiles, class Variant, class Score, class T, class TO, class KV>
void launch_decode(const Variant& attn, const Score& score, const Call<T, TO, KV>& c, cudaStream_t stream) {
  const ProblemInfo& p = c.p;
  DecodeArgs<Variant, Score, T, KV> d{};
  d.q = c.q, d.kv = c.kv, d.q_offset_given = c.q_offset_given, d.p = p, d.attn = attn, d.score = score;
  d.vec = c.vec;
  d.count_rows = score_needs_row_count(score);
  d.row_chunks = int((p.group() * p.Nq + Tiles::rows - 1) / Tiles::rows);
  // Splits: every SM busy, and whole waves (the last wave of a memory-bound kernel that is
  // mostly empty leaves bandwidth unused): the split count with the fullest last wave among
  // one to four waves, each split at least 4 tiles of keys.
  constexpr auto kernel = decode_kernel<Tiles, Variant, Score, T, KV>;
  ensure_dynamic_smem<kernel>(Tiles::smem_bytes, "cudaFuncSetAttribute(decode_kernel)");
  const std::int64_t slots = resident_ctas<kernel>(Tiles::threads, Tiles::smem_bytes);
  const std::int64_t keys = p.key_end - p.key_begin;
  const std::int64_t units = p.B * p.Hkv * d.row_chunks;
  const std::int64_t most = std::clamp<std::int64_t>((keys + 4 * Tiles::BN - 1) / (4 * Tiles::BN), 1, 65535);
  const std::int64_t fewest = std::clamp<std::int64_t>((slots + units - 1) / units, 1, most);
  std::int64_t splits = fewest;
  double best = 0;
  for (std::int64_t s = fewest; s <= std::min(most, 4 * fewest); ++s) {
    const double waves = double(units * s) / double(slots), fill = waves / std::ceil(waves);
    if (fill > best + 1e-9) best = fill, splits = s;
  }
  const std::int64_t split_len = std::max<std::int64_t>(Tiles::BN, (keys + splits - 1) / splits + Tiles::BN - 1) / Tiles::BN * Tiles::BN;
  splits = std::max<std::int64_t>(1, (keys + split_len - 1) / split_len);
  d.split_len = int(split_len);

  Workspace ws(stream);  // one allocation for the three partial arrays: each pool call costs host time
  const std::size_t rows = std::size_t(splits * p.B * p.Hq * p.Nq);
  d.part_o = ws.alloc<float>(rows * std::size_t(p.Dv + 2));
  d.part_m = d.part_o + rows * std::size_t(p.Dv);
  d.part_l = d.part_m + rows;
  const dim3 grid(unsigned(splits), unsigned(p.Hkv * d.row_chunks), unsigned(p.B));
  kernel<<<grid, Tiles::threads, Tiles::smem_bytes, stream>>>(d);
  check(cudaGetLastError(), "decode_kernel launch");

  CombineArgs<Score, TO> m{d.part_o, d.part_m, d.part_l, int(splits), p, c.q.offsets, c.o, c.lse, c.m, c.l,
                           c.partial, score};
  const dim3 cgrid(unsigned(p.Hq * p.Nq), unsigned(p.B));
  combine_splits_kernel<Score, TO><<<cgrid, combine_warps * 32, 0, stream>>>(m);
  check(cudaGetLastError(), "combine_splits_kernel launch");
}

// Picks the kernel for a validated call.
template <class Variant, class T, class TO, class KV>
void dispatch(const Variant& attn, const Call<T, TO, KV>& c, cudaStream_t stream) {
  using Score = typename Variant::score_type;
  using MaskT = typename Variant::mask_type;
  const ProblemInfo& p = c.p;
  Score score = attn.score.resolve(p);  // validates
  // Ragged and paged batches: scores that follow the key count resolve per sequence (score_for_keys).
  if constexpr (KV::varlen && requires { { score.for_keys(index_t(0)) } -> std::same_as<Score>; }) score = attn.score;

  // Linear attention under a full or causal mask over all keys: the chunked O(N D Dv) form.
  constexpr bool chunkable = is_linear_score<Score>() && !KV::varlen &&
                             (std::is_same_v<MaskT, Full> || std::is_same_v<MaskT, Causal>);
  if constexpr (chunkable) {
    if (!c.partial && p.key_begin == 0 && p.key_end == p.Nk && p.group() * p.Nq > decode_max_rows) {
      detail::LinearArgs<Score, T, TO> la{};
      la.q = c.q, la.k = c.kv.k, la.v = c.kv.v, la.o = c.o;
      la.p = p;
      la.score = score;
      la.causal = std::is_same_v<MaskT, Causal>;
      la.vec = c.vec;
      if (p.D <= 64) detail::launch_linear_chunked<detail::LinearChunkTiles<64>>(la, stream);
      else detail::launch_linear_chunked<detail::LinearChunkTiles<128>>(la, stream);
      return;
    }
  }

  // Few query rows per key/value head: split-KV decoding (masks that need no pre-pass).
  constexpr bool decodable = !is_content_dependent<MaskT>() && !LogitMask<MaskT>;
  if constexpr (decodable) {
    if (p.group() * p.Nq <= decode_max_rows) {
      if (std::max(p.D, p.Dv) <= 64) launch_decode<DecodeTiles<64>>(attn, score, c, stream);
      else launch_decode<DecodeTiles<128>>(attn, score, c, stream);
      return;
    }
  }

  // MoBA and cluster-routing prefills: gathered lists (moba_gather.cuh, cluster_gather.cuh say
  // which calls keep the bound mask: modifiers and per-row key counts need each pair's
  // position; partial states and key ranges are left to the bound mask too).
  constexpr bool moba = std::is_same_v<MaskT, MoBA>, clusters = std::is_same_v<MaskT, ClusterRouting>;
  if constexpr ((moba || clusters) && !Variant::has_mods && !KV::varlen) {
    if (!c.partial && !score_needs_row_count(score) && p.key_begin == 0 && p.key_end == p.Nk &&
        p.Nq >= gather_min_rows && (moba || p.Nk > 0)) {
      with_forward_tiles(p, [&](auto tiles) {
        using Tiles = decltype(tiles);
        if constexpr (moba) launch_moba_gathered<Tiles>(attn, score, c, stream);
        else launch_cluster_gathered<Tiles>(attn, score, c, stream);
      });
      return;
    }
  }

  ForwardArgs<Variant, Score, T, TO, KV> args{};
  args.q = c.q, args.kv = c.kv, args.o = c.o, args.lse = c.lse, args.m = c.m, args.l = c.l;
  args.partial = c.partial;
  args.q_offset_given = c.q_offset_given;
  args.p = p;
  args.attn = attn;
  args.score = score;
  args.count_rows = score_needs_row_count(score);
  args.vec = c.vec;
  Workspace workspace(stream);  // freed stream-ordered after the launch
  if constexpr (!KV::varlen) args.bind = DeviceBinder<MaskT>::prepare(attn.mask, c.prepass, workspace, stream);
  with_forward_tiles(p, [&](auto tiles) { launch_forward<decltype(tiles)>(args, c.q_rows_total, workspace, stream); });
}

// Checks shared by every entry point; returns the resolved score's name check for lse.
template <class Variant>
void check_call(const Variant& attn, const ProblemInfo& p, const Options& opt) {
  using Score = typename Variant::score_type;
  attn.validate(p);
  if (opt.lse)
    require(score_has_lse<Score>(), "lse",
            [&] { return std::string("score function '") + Score::name + "' has no log-sum-exp"; });
  require(p.D <= max_head_dim, "q.shape",
          [&] { return "the CUDA backend supports head dims up to 128 (D = " + std::to_string(p.D) + ")"; });
  require(p.Dv <= max_head_dim, "v.shape",
          [&] { return "the CUDA backend supports value dims up to 128 (Dv = " + std::to_string(p.Dv) + ")"; });
  require(p.Nq < (index_t(1) << 31) && p.Nk < (index_t(1) << 31), "q.shape", "sequence lengths must be below 2^31");
  require(p.B <= 65535 && p.Hq <= 65535, "q.shape", "batch and head counts must be at most 65535");
}

template <class Variant>
void check_varlen_mask() {
  static_assert(sequence_independent_mask<typename Variant::mask_type>,
                "attnkit::cuda: ragged and paged batches take Full, Causal, SlidingWindow and their And/Or "
                "combinations (other masks depend on each sequence's length; run those per sequence)");
}

inline void check_rows(const RaggedRows& r, const char* name, index_t total) {
  require(r.batch >= 0 && r.batch <= 65535, name, "batch must be in [0, 65535]");
  require(r.batch == 0 || r.offsets != nullptr, name, "offsets are required");
  require(r.max_rows >= 0 && r.max_rows <= total, name, [&] {
    return "max_rows (" + std::to_string(r.max_rows) + ") must be in [0, total rows = " + std::to_string(total) + "]";
  });
  require_device_memory(r.offsets, name);
}

}  // namespace detail

template <class Variant, class TQ, class TK, class TV, class TO>
void run(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, TensorView<TO> o,
         const Options& opt = {}, cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TQ>;
  using MaskT = typename Variant::mask_type;
  static_assert(std::is_same_v<T, std::remove_const_t<TK>> && std::is_same_v<T, std::remove_const_t<TV>>,
                "attnkit::cuda::run: q, k and v must have the same storage type");
  detail::check_storage_types<T>();
  detail::check_output_type<TO>();
  static_assert(supports_mask<MaskT>,
                "attnkit::cuda::run: exact per-key TopK is not supported by the CUDA backend (use TopKBlocks, MoBA "
                "or ClusterRouting, or the CPU backend)");

  const TensorView<const T> cq = q, ck = k, cv = v;
  const ProblemInfo p = make_problem(cq, ck, cv, o, opt);
  detail::check_call(attn, p, opt);
  if (p.empty()) return;
  require_device_memory(q.data, "q");
  require_device_memory(k.data, "k");
  require_device_memory(v.data, "v");
  require_device_memory(o.data, "o");
  require_device_memory(opt.lse.data, "lse");

  detail::Call<T, TO, detail::ContiguousKV<T, false>> c;
  c.q = detail::seq_rows(cq);
  c.kv = {detail::seq_rows(ck), detail::seq_rows(cv), int(p.Nk)};
  c.o = detail::seq_rows(o);
  c.lse = detail::seq_rows(opt.lse);
  c.p = p;
  c.vec = detail::rows_16byte_aligned(cq) && detail::rows_16byte_aligned(ck) && detail::rows_16byte_aligned(cv);
  c.prepass = {cq.data, ck.data, {q.stride[0], q.stride[1], q.stride[2]}, {k.stride[0], k.stride[1], k.stride[2]}, p};
  detail::dispatch(attn, c, stream);
}

// The unnormalised monoid state of the keys in opt.keys (split-KV, cascade attention):
// state.o [B, Hq, Nq, Dv], state.m and state.l [B, Hq, Nq], float device memory. Merge
// states with cuda::merge_states and finish with cuda::finalize_state (merge.cuh).
template <class Variant, class TQ, class TK, class TV>
void run_partial(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, const PartialState& state,
                 const Options& opt = {}, cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, std::remove_const_t<TK>> && std::is_same_v<T, std::remove_const_t<TV>>,
                "attnkit::cuda::run_partial: q, k and v must have the same storage type");
  detail::check_storage_types<T>();
  static_assert(supports_mask<typename Variant::mask_type>,
                "attnkit::cuda::run_partial: exact per-key TopK is not supported by the CUDA backend");
  require(!opt.lse, "lse", "not produced by run_partial: finalize the merged state instead");
  const TensorView<const T> cq = q, ck = k, cv = v;
  const ProblemInfo p = make_problem(cq, ck, cv, state.o, opt);
  detail::check_call(attn, p, opt);
  require(state.m.data && state.l.data, "state", "m and l views are required");
  require(state.m.shape == std::array<index_t, 3>{p.B, p.Hq, p.Nq} && state.l.shape == state.m.shape, "state",
          "m and l must be [B, Hq, Nq]");
  if (p.empty()) return;
  for (const void* ptr : {(const void*)q.data, (const void*)k.data, (const void*)v.data, (const void*)state.o.data,
                          (const void*)state.m.data, (const void*)state.l.data})
    require_device_memory(ptr, "q/k/v/state");

  detail::Call<T, float, detail::ContiguousKV<T, false>> c;
  c.q = detail::seq_rows(cq);
  c.kv = {detail::seq_rows(ck), detail::seq_rows(cv), int(p.Nk)};
  c.o = detail::seq_rows(state.o);
  c.m = detail::seq_rows(state.m);
  c.l = detail::seq_rows(state.l);
  c.partial = true;
  c.p = p;
  c.vec = detail::rows_16byte_aligned(cq) && detail::rows_16byte_aligned(ck) && detail::rows_16byte_aligned(cv);
  c.prepass = {cq.data, ck.data, {q.stride[0], q.stride[1], q.stride[2]}, {k.stride[0], k.stride[1], k.stride[2]}, p};
  detail::dispatch(attn, c, stream);
}

// Ragged batch: q, o [1, Hq, total_q, D]; k, v [1, Hkv, total_k, D]; sequence b owns rows
// q_rows.offsets[b] .. [b + 1] and keys k_rows.offsets[b] .. [b + 1] (device int32 arrays).
// opt.lse is [1, Hq, total_q]. Every sequence's queries sit bottom-right against its keys
// unless opt.q_offset is set.
template <class Variant, class TQ, class TK, class TV, class TO>
void run_ragged(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, TensorView<TO> o,
                const RaggedRows& q_rows, const RaggedRows& k_rows, const Options& opt = {},
                cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, std::remove_const_t<TK>> && std::is_same_v<T, std::remove_const_t<TV>>,
                "attnkit::cuda::run_ragged: q, k and v must have the same storage type");
  detail::check_storage_types<T>();
  detail::check_output_type<TO>();
  detail::check_varlen_mask<Variant>();
  const TensorView<const T> cq = q, ck = k, cv = v;
  ProblemInfo p = make_problem(cq, ck, cv, o, opt);
  require(q.shape[0] == 1, "q.shape", "a ragged batch is a batch-1 view with the sequences packed along its rows");
  require(opt.keys.begin == 0 && opt.keys.end < 0, "keys", "key ranges are not supported for ragged batches");
  detail::check_rows(q_rows, "q_rows", p.Nq);
  detail::check_rows(k_rows, "k_rows", p.Nk);
  require(k_rows.batch == q_rows.batch, "k_rows", "batch differs from q_rows");
  p.B = q_rows.batch;
  p.Nq = q_rows.max_rows;
  p.Nk = k_rows.max_rows;
  p.key_begin = 0, p.key_end = p.Nk;
  if (!opt.q_offset) p.q_offset = p.Nk - p.Nq;
  detail::check_call(attn, p, opt);
  if (p.empty()) return;
  for (const void* ptr : {(const void*)q.data, (const void*)k.data, (const void*)v.data, (const void*)o.data})
    require_device_memory(ptr, "q/k/v/o");
  require_device_memory(opt.lse.data, "lse");

  detail::Call<T, TO, detail::ContiguousKV<T, true>> c;
  c.q = detail::seq_rows(cq, q_rows.offsets);
  c.kv = {detail::seq_rows(ck, k_rows.offsets), detail::seq_rows(cv, k_rows.offsets), 0};
  c.o = detail::seq_rows(o, q_rows.offsets);
  c.lse = detail::seq_rows(opt.lse, q_rows.offsets);
  c.q_offset_given = opt.q_offset.has_value();
  c.p = p;
  c.q_rows_total = cq.shape[2];
  c.vec = detail::rows_16byte_aligned(cq) && detail::rows_16byte_aligned(ck) && detail::rows_16byte_aligned(cv);
  detail::dispatch(attn, c, stream);
}

// Paged KV cache: q, o [1, Hq, total_q, D] packed per q_rows; the keys of sequence b are the
// first kv.seq_lens[b] tokens of its block-table row. Page ids, lengths and offsets are
// device int32 arrays the host does not read: they must lie inside the pools and tables
// the sizes in `kv` describe.
template <class Variant, class TQ, class TKV, class TO>
void run_paged(const Variant& attn, TensorView<TQ> q, const RaggedRows& q_rows, const PagedKV<TKV>& kv,
               TensorView<TO> o, const Options& opt = {}, cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, std::remove_const_t<TKV>>, "attnkit::cuda::run_paged: q and the cache must have the same storage type");
  detail::check_storage_types<T>();
  detail::check_output_type<TO>();
  detail::check_varlen_mask<Variant>();
  const PagedKV<const T> ckv = kv;
  // The cache as a view of its longest sequence, for the shape checks of make_problem.
  const TensorView<const T> k_shape{ckv.k.data, {1, kv.heads, kv.max_len, kv.dim}, {0, 0, 0}};
  const TensorView<const T> v_shape{ckv.v.data, {1, kv.heads, kv.max_len, kv.dim_v}, {0, 0, 0}};
  const TensorView<const T> cq = q;
  ProblemInfo p = make_problem(cq, k_shape, v_shape, o, opt);
  require(q.shape[0] == 1, "q.shape", "queries of a paged batch are a batch-1 view with the sequences packed along its rows");
  require(opt.keys.begin == 0 && opt.keys.end < 0, "keys", "key ranges are not supported for paged batches");
  detail::check_rows(q_rows, "q_rows", p.Nq);
  require(kv.batch == q_rows.batch, "kv.batch", "differs from q_rows.batch");
  require(kv.page_size > 0 && kv.pages >= 0, "kv.page_size", "must be positive");
  // The kernels address pages with 32-bit strides and key indices (PagedRows).
  constexpr index_t int32_limit = (index_t(1) << 31) - 1;
  require(kv.page_size <= int32_limit && kv.max_len <= int32_limit, "kv", "page_size and max_len must fit 32 bits");
  for (int i = 0; i < 3; ++i)
    require(kv.k.stride[i] >= 0 && kv.k.stride[i] <= int32_limit && kv.v.stride[i] >= 0 && kv.v.stride[i] <= int32_limit,
            "kv", "pool strides must lie in [0, 2^31) elements");
  require(kv.max_len >= 0 && kv.max_len <= kv.table_stride * kv.page_size, "kv.max_len",
          "exceeds the pages a block-table row holds (table_stride x page_size)");
  require(kv.batch == 0 || (kv.block_table && kv.seq_lens), "kv", "block_table and seq_lens are required");
  for (const void* ptr : {(const void*)kv.k.data, (const void*)kv.v.data, (const void*)kv.block_table, (const void*)kv.seq_lens})
    require_device_memory(ptr, "kv");
  p.B = q_rows.batch;
  p.Nq = q_rows.max_rows;
  p.Nk = kv.max_len;
  p.key_begin = 0, p.key_end = p.Nk;
  if (!opt.q_offset) p.q_offset = p.Nk - p.Nq;
  detail::check_call(attn, p, opt);
  if (p.empty()) return;
  require_device_memory(q.data, "q");
  require_device_memory(o.data, "o");
  require_device_memory(opt.lse.data, "lse");

  detail::Call<T, TO, detail::PagedSource<T>> c;
  c.q = detail::seq_rows(cq, q_rows.offsets);
  c.kv = {ckv, FastDivisor(kv.page_size)};
  c.o = detail::seq_rows(o, q_rows.offsets);
  c.lse = detail::seq_rows(opt.lse, q_rows.offsets);
  c.q_offset_given = opt.q_offset.has_value();
  c.p = p;
  c.q_rows_total = cq.shape[2];
  c.vec = detail::rows_16byte_aligned(cq) && detail::rows_16byte_aligned(ckv.k, kv.dim) &&
          detail::rows_16byte_aligned(ckv.v, kv.dim_v);
  detail::dispatch(attn, c, stream);
}

}  // namespace attnkit::cuda
