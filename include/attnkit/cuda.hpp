#pragma once
// attnkit's CUDA backend (compile with nvcc, -std=c++20 --expt-relaxed-constexpr):
//   auto attn = attnkit::make_attention(attnkit::Softmax{}, attnkit::Causal{});
//   attnkit::cuda::run(attn, q, k, v, o, opts, stream);   // device pointers
#if !defined(__CUDACC__)
#error "attnkit/cuda.hpp must be compiled by nvcc (a .cu translation unit)"
#endif
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/problem.hpp"
#include "core/tensor.hpp"
#include "core/paged.hpp"
#include "cuda/merge.cuh"
#include "cuda/run.hpp"
#include "mask/block.hpp"
#include "mask/combinators.hpp"
#include "mask/full.hpp"
#include "mask/neighborhood.hpp"
#include "mask/routing.hpp"
#include "mask/sliding_window.hpp"
#include "mask/topk.hpp"
#include "mods/mods.hpp"
#include "score/linear.hpp"
#include "score/merge.hpp"
#include "score/partial_state.hpp"
#include "score/sigmoid.hpp"
#include "score/softmax.hpp"
#include "score/softplus.hpp"
#include "variant.hpp"
