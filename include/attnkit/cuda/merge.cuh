#pragma once
// Device versions of the public monoid operations (score/merge.hpp): merge partial states of
// key ranges computed separately (split-KV, cascade / shared-prefix attention) and finalize.
//   cuda::merge_states(score, acc, other, stream)        acc <- acc (+) other
//   cuda::finalize_state(score, state, o, lse, stream)   o = finalize(state)
// States are float device memory: o [B, H, N, Dv], m and l [B, H, N] (score/merge.hpp).
#include <cuda_runtime_api.h>

#include "../core/problem.hpp"
#include "../score/concepts.hpp"
#include "../score/merge.hpp"
#include "../score/partial_state.hpp"
#include "error.hpp"
#include "ptx.hpp"

namespace attnkit::cuda {

namespace detail {

// One warp per row, lanes across the features.
template <class Score>
__global__ void merge_states_kernel(Score, PartialState acc, PartialState other) {
  const auto& s = acc.o.shape;
  const std::int64_t row = std::int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (row >= s[0] * s[1] * s[2]) return;
  const index_t b = row / (s[1] * s[2]), h = row / s[2] % s[1], i = row % s[2];
  float& m = acc.m.at(b, h, i);
  float& l = acc.l.at(b, h, i);
  const float m2 = other.m.at(b, h, i), l2 = other.l.at(b, h, i);
  float* o = acc.o.row(b, h, i);
  const float* o2 = other.o.row(b, h, i);
  float a = 1.f, c = 1.f, mn = m;
  if constexpr (Score::tracks_max) {
    mn = m2 > m ? m2 : m;
    if (mn == neg_inf) return;  // both sides empty
    a = math<float>::exp(m - mn), c = math<float>::exp(m2 - mn);
  }
  for (index_t d = threadIdx.x % 32; d < s[3]; d += 32) o[d] = a * o[d] + c * o2[d];
  __syncwarp();
  if (threadIdx.x % 32 == 0) l = a * l + c * l2, m = mn;
}

template <class Score, class TO>
__global__ void finalize_state_kernel(Score score, PartialState st, TensorView<TO> o, RowView lse) {
  const auto& s = o.shape;
  const std::int64_t row = std::int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (row >= s[0] * s[1] * s[2]) return;
  const index_t b = row / (s[1] * s[2]), h = row / s[2] % s[1], i = row % s[2];
  const float m = st.m.at(b, h, i), l = st.l.at(b, h, i);
  const float f = score.template finalize_factor<float>(m, l);
  const float* src = st.o.row(b, h, i);
  TO* dst = o.row(b, h, i);
  for (index_t d = threadIdx.x % 32; d < s[3]; d += 32) dst[d] = ptx::from_f32<TO>(src[d] * f);
  if (lse.data && threadIdx.x % 32 == 0) lse.at(b, h, i) = row_lse(m, l);
}

inline unsigned row_blocks(const std::array<index_t, 4>& s) { return unsigned((s[0] * s[1] * s[2] + 7) / 8); }

inline void check_device_state(const PartialState& s, const char* name) {
  require_device_memory(s.o.data, name);
  require_device_memory(s.m.data, name);
  require_device_memory(s.l.data, name);
}

}  // namespace detail

template <class Score>
void merge_states(const Score& score, const PartialState& acc, const PartialState& other, cudaStream_t stream = nullptr) {
  attnkit::detail::check_state(acc, "acc", acc.o.shape);
  attnkit::detail::check_state(other, "other", acc.o.shape);
  if (acc.o.elements() == 0) return;
  detail::check_device_state(acc, "acc");
  detail::check_device_state(other, "other");
  detail::merge_states_kernel<<<detail::row_blocks(acc.o.shape), 256, 0, stream>>>(score, acc, other);
  check(cudaGetLastError(), "merge_states_kernel launch");
}

template <class Score, class TO>
void finalize_state(const Score& score, const PartialState& state, TensorView<TO> o, RowView lse = {},
                    cudaStream_t stream = nullptr) {
  static_assert(std::is_same_v<TO, float> || std::is_same_v<TO, half> || std::is_same_v<TO, bfloat16>,
                "attnkit::cuda::finalize_state: the output must be float, half or bfloat16");
  attnkit::detail::check_state(state, "state", o.shape);
  if (lse) {
    require(score_has_lse<Score>(), "lse",
            [&] { return std::string("score function '") + Score::name + "' has no log-sum-exp"; });
    require(lse.shape[0] == o.shape[0] && lse.shape[1] == o.shape[1] && lse.shape[2] == o.shape[2], "lse",
            "shape must be [B, H, N]");
  }
  if (o.elements() == 0) return;
  detail::check_device_state(state, "state");
  require_device_memory(o.data, "o");
  require_device_memory(lse.data, "lse");
  detail::finalize_state_kernel<<<detail::row_blocks(o.shape), 256, 0, stream>>>(score, state, o, lse);
  check(cudaGetLastError(), "finalize_state_kernel launch");
}

}  // namespace attnkit::cuda
