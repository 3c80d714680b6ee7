#pragma once
// attnkit: fused attention variants composed from policies.
//   auto attn = attnkit::make_attention(attnkit::Softmax{}, attnkit::SlidingWindow{256, 0});
//   attnkit::cpu::run(attn, q, k, v, o);
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/problem.hpp"
#include "core/tensor.hpp"
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
#include "cpu/run.hpp"
