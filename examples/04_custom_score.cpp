// 04: write your own score function -- normalised ReLU^2 attention.
//
//   p_ij = relu(s_ij)^2,   o_i = sum_j p_ij v_j / sum_j p_ij   (0 for a row with no positive logit)
//
// A score function is a trivially copyable struct whose row state is a monoid (m, l, o):
// weights are summed into l and o tile by tile, and the backend finishes each row with
// o * finalize_factor(m, l). The members are templates over the value type T because the same
// policy runs as double in the reference, as float, and as a SIMD batch (xsimd) inside the CPU
// kernel; math<T>:: gives max, exp, log, ... for all of them.
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

struct ReluSquared {
  static constexpr const char* name = "relu2";
  // false: weights do not depend on a running row max (softmax is the one that needs it).
  static constexpr bool tracks_max = false;

  // Resolve problem-dependent parameters before a call (nothing to do here).
  ReluSquared resolve(const attnkit::ProblemInfo&) const { return *this; }

  // Weight of a logit s. m is the running row max (0 when !tracks_max), row_scale a per-row
  // constant (1 unless the policy defines needs_row_count()/row_scale(n)).
  template <class T>
  T weight(T s, T /*m*/, T /*row_scale*/) const {
    const T r = attnkit::math<T>::max(s, T(0));
    return r * r;
  }

  // Factor for the accumulated row at the end: l1 normalisation, 0 for an empty row.
  template <class T>
  T finalize_factor(T /*m*/, T l) const {
    return l > T(0) ? T(1) / l : T(0);
  }
};
static_assert(attnkit::ScoreFunction<ReluSquared>);

#ifdef ATTNKIT_EXAMPLE_SHOW_ERROR
// Build with -DATTNKIT_EXAMPLE_SHOW_ERROR to see what a malformed policy gives: this one
// forgot finalize_factor. g++ 12 says (paths shortened):
//
//   attnkit/variant.hpp:41:45:   required from 'struct attnkit::Attention<NoFinalize, attnkit::Causal>'
//   04_custom_score.cpp:62:62:   required from here
//   attnkit/score/concepts.hpp:43:17: error: static assertion failed: attnkit: a score function
//       needs `template <class T> T finalize_factor(T m, T l) const`
//   attnkit/score/concepts.hpp:22:22: note: the required expression 's.finalize_factor(x, x)' is invalid
//
// Each requirement (tracks_max, weight, finalize_factor, resolve, trivially copyable) has its
// own message; std::is_trivially_copyable and the concept attnkit::ScoreFunction<S> can also be
// checked directly, as the static_assert above does.
struct NoFinalize {
  static constexpr bool tracks_max = false;
  NoFinalize resolve(const attnkit::ProblemInfo&) const { return *this; }
  template <class T>
  T weight(T s, T, T) const {
    return s;
  }
};
[[maybe_unused]] static auto broken = attnkit::make_attention(NoFinalize{}, attnkit::Causal{});
#endif

int main() {
  using namespace attnkit;
  const index_t H = 2, N = 512, D = 64;
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  std::vector<float> q(H * N * D), k(H * N * D), v(H * N * D), o(H * N * D), ref(H * N * D);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(gen);
  const auto Q = bhsd<const float>(q.data(), 1, H, N, D), K = bhsd<const float>(k.data(), 1, H, N, D),
             V = bhsd<const float>(v.data(), 1, H, N, D);

  // The new score function composes with any mask and modifier.
  const auto attn = make_attention(ReluSquared{}, Causal{}, SoftCap{20.f});
  cpu::run(attn, Q, K, V, bhsd(o.data(), 1, H, N, D));
  reference::attention<double>(attn, Q, K, V, bhsd(ref.data(), 1, H, N, D));

  double e = 0, s = 0;
  for (std::size_t i = 0; i < o.size(); ++i) e += double(o[i] - ref[i]) * (o[i] - ref[i]), s += double(ref[i]) * ref[i];
  const double err = std::sqrt(e / s);
  std::printf("relu^2 attention, causal, soft-cap 20, H=%lld N=%lld D=%lld\n", (long long)H, (long long)N,
              (long long)D);
  std::printf("  o[head 0, query 100][0..3] = %+.5f %+.5f %+.5f %+.5f\n", o[100 * D], o[100 * D + 1], o[100 * D + 2],
              o[100 * D + 3]);
  std::printf("  relative error vs the fp64 reference: %.2e\n", err);
  return err < 1e-5 ? 0 : 1;
}
