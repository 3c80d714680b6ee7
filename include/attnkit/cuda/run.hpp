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
#include "error.hpp"
#include "forward_kernel.cuh"

namespace attnkit::cuda {

namespace detail {

inline void require_device_memory(const void* ptr, const char* name) {
  if (ptr == nullptr) return;  // empty tensors; make_problem rejects null non-empty ones
  cudaPointerAttributes at{};
  const cudaError_t e = cudaPointerGetAttributes(&at, ptr);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    throw cuda_error(e, std::string("cudaPointerGetAttributes(") + name + ")");
  }
  require(at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged, name,
          "must point to device or managed memory for the CUDA backend");
}

template <class T>
bool rows_16byte_aligned(const TensorView<T>& t) {
  const bool strides = t.stride[0] % 8 == 0 && t.stride[1] % 8 == 0 && t.stride[2] % 8 == 0;
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && strides && t.shape[3] % 8 == 0;
}

template <class Tiles, class Variant, class Score, class T, class TO>
void launch_forward(const ForwardArgs<Variant, Score, T, TO>& args, cudaStream_t stream) {
  const auto kernel = forward_kernel<Tiles, Variant, Score, T, TO>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tiles::smem_bytes),
        "cudaFuncSetAttribute(forward_kernel)");
  const dim3 grid(unsigned((args.p.Nq + Tiles::BM - 1) / Tiles::BM), unsigned(args.p.Hq), unsigned(args.p.B));
  kernel<<<grid, Tiles::threads, Tiles::smem_bytes, stream>>>(args);
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
  static_assert(!is_content_dependent<MaskT>(),
                "attnkit::cuda::run: content-dependent masks (top-k, routing) are not supported by the CUDA "
                "backend yet");

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
  detail::require_device_memory(q.data, "q");
  detail::require_device_memory(k.data, "k");
  detail::require_device_memory(v.data, "v");
  detail::require_device_memory(o.data, "o");
  detail::require_device_memory(opt.lse.data, "lse");

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
  args.vec = detail::rows_16byte_aligned(cq) && detail::rows_16byte_aligned(ck) && detail::rows_16byte_aligned(cv);
  if (std::max(p.D, p.Dv) <= 64) detail::launch_forward<detail::ForwardTiles<64>>(args, stream);
  else detail::launch_forward<detail::ForwardTiles<128>>(args, stream);
}

}  // namespace attnkit::cuda
