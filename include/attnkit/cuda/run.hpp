#pragma once
// Public entry point of the CUDA backend:
//   attnkit::cuda::run(attn, q, k, v, o, opts, stream)
// q, k, v: device (or managed) memory in half or bfloat16, any strides with a contiguous
// feature axis; o: float, half or bfloat16; opts.lse: device memory. Inputs are validated
// on the host before the launch (attnkit::invalid_argument); CUDA errors are thrown as
// attnkit::cuda::cuda_error. The launch is asynchronous on `stream`.
#include <cuda_runtime_api.h>

#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/problem.hpp"
#include "../core/tensor.hpp"
#include "../mask/full.hpp"
#include "../mask/sliding_window.hpp"
#include "../score/concepts.hpp"
#include "error.hpp"
#include "bind.hpp"
#include "forward_kernel.cuh"
#include "linear_chunked.cuh"

namespace attnkit::cuda {

namespace detail {

template <class T>
bool rows_16byte_aligned(const TensorView<T>& t) {
  const bool strides = t.stride[0] % 8 == 0 && t.stride[1] % 8 == 0 && t.stride[2] % 8 == 0;
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && strides && t.shape[3] % 8 == 0;
}

template <class Tiles, class Variant, class Score, class T, class TO>
void launch_forward(const ForwardArgs<Variant, Score, T, TO>& args, cudaStream_t stream) {
  const auto kernel = forward_kernel<Tiles, Variant, Score, T, TO>;
  // Tile classes of up to 16384 key tiles (1M keys) live in shared memory after the tiles.
  auto a = args;
  const std::int64_t n_tiles = (a.p.Nk + Tiles::BN - 1) / Tiles::BN;
  a.cached_tiles = int(n_tiles <= 16384 ? n_tiles : 0);
  const int smem = Tiles::smem_bytes + (a.cached_tiles + 15) / 16 * 16;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
        "cudaFuncSetAttribute(forward_kernel)");
  const dim3 grid(unsigned((a.p.Nq + Tiles::BM - 1) / Tiles::BM), unsigned(a.p.Hq), unsigned(a.p.B));
  kernel<<<grid, Tiles::threads, smem, stream>>>(a);
  check(cudaGetLastError(), "forward_kernel launch");
}

}  // namespace detail

// Largest head dim (D and Dv) of the CUDA backend.
inline constexpr index_t max_head_dim = 128;

template <class Variant, class TQ, class TK, class TV, class TO>
void run(const Variant& attn, TensorView<TQ> q, TensorView<TK> k, TensorView<TV> v, TensorView<TO> o,
         const Options& opt = {}, cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TQ>;
  using Score = typename Variant::score_type;
  using MaskT = typename Variant::mask_type;
  static_assert(std::is_same_v<T, std::remove_const_t<TK>> && std::is_same_v<T, std::remove_const_t<TV>>,
                "attnkit::cuda::run: q, k and v must have the same storage type");
  static_assert(std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                "attnkit::cuda::run: q, k and v must be attnkit::half or attnkit::bfloat16 (tensor-core inputs)");
  static_assert(std::is_same_v<TO, float> || std::is_same_v<TO, half> || std::is_same_v<TO, bfloat16>,
                "attnkit::cuda::run: the output must be float, half or bfloat16");
  static_assert(supports_mask<MaskT>,
                "attnkit::cuda::run: exact per-key TopK is not supported by the CUDA backend (use TopKBlocks, MoBA "
                "or ClusterRouting, or the CPU backend)");

  const TensorView<const T> cq = q, ck = k, cv = v;
  const ProblemInfo p = make_problem(cq, ck, cv, o, opt);
  attn.validate(p);
  const Score score = attn.score.resolve(p);
  if (opt.lse) require(score_has_lse<Score>(), "lse", std::string("score function '") + Score::name + "' has no log-sum-exp");
  require(p.D <= max_head_dim, "q.shape", "the CUDA backend supports head dims up to 128 (D = " + std::to_string(p.D) + ")");
  require(p.Dv <= max_head_dim, "v.shape", "the CUDA backend supports value dims up to 128 (Dv = " + std::to_string(p.Dv) + ")");
  require(p.Nq < (index_t(1) << 31) && p.Nk < (index_t(1) << 31), "q.shape", "sequence lengths must be below 2^31");
  require(p.B <= 65535 && p.Hq <= 65535, "q.shape", "batch and head counts must be at most 65535");
  if (p.empty()) return;
  require_device_memory(q.data, "q");
  require_device_memory(k.data, "k");
  require_device_memory(v.data, "v");
  require_device_memory(o.data, "o");
  require_device_memory(opt.lse.data, "lse");

  // Linear attention under a full or causal mask over all keys: the chunked O(N D Dv) form.
  constexpr bool chunkable = is_linear_score<Score>() && (std::is_same_v<MaskT, Full> || std::is_same_v<MaskT, Causal>);
  if constexpr (chunkable) {
    if (p.key_begin == 0 && p.key_end == p.Nk) {
      using L = detail::LinearChunkTiles;
      detail::LinearArgs<Score, T, TO> la{};
      la.q = cq.data, la.k = ck.data, la.v = cv.data, la.o = o.data;
      for (int d = 0; d < 3; ++d) la.qs[d] = q.stride[d], la.ks[d] = k.stride[d], la.vs[d] = v.stride[d], la.os[d] = o.stride[d];
      la.p = p;
      la.score = score;
      la.causal = std::is_same_v<MaskT, Causal>;
      const auto kernel = detail::linear_chunked_kernel<Score, T, TO>;
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::smem_bytes),
            "cudaFuncSetAttribute(linear_chunked_kernel)");
      const dim3 grid(unsigned((p.Dv + L::DVS - 1) / L::DVS), unsigned(p.Hq), unsigned(p.B));
      kernel<<<grid, L::threads, L::smem_bytes, stream>>>(la);
      check(cudaGetLastError(), "linear_chunked_kernel launch");
      return;
    }
  }

  detail::ForwardArgs<Variant, Score, T, TO> args{};
  args.q = cq.data, args.k = ck.data, args.v = cv.data, args.o = o.data;
  for (int d = 0; d < 3; ++d) {
    args.qs[d] = q.stride[d], args.ks[d] = k.stride[d], args.vs[d] = v.stride[d], args.os[d] = o.stride[d];
    args.lse_s[d] = opt.lse.stride[d];
  }
  args.lse = opt.lse.data;
  args.p = p;
  args.attn = attn;
  args.score = score;
  args.count_rows = score_needs_row_count(score);
  detail::PrepassInputs<T> pre{cq.data, ck.data, {q.stride[0], q.stride[1], q.stride[2]},
                               {k.stride[0], k.stride[1], k.stride[2]}, p};
  detail::Workspace workspace(stream);  // freed stream-ordered after the launch
  args.bind = detail::DeviceBinder<MaskT>::prepare(attn.mask, pre, workspace, stream);
  args.vec = detail::rows_16byte_aligned(cq) && detail::rows_16byte_aligned(ck) && detail::rows_16byte_aligned(cv);
  if (std::max(p.D, p.Dv) <= 64) detail::launch_forward<detail::ForwardTiles<64, 4>>(args, stream);  // measured: 4 warps x 2 CTAs best at D=64
  else detail::launch_forward<detail::ForwardTiles<128, 8>>(args, stream);  // 8 warps x 1 CTA best at D=128
}

}  // namespace attnkit::cuda
