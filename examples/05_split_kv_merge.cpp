// 05: split-KV -- attention over two key ranges, merged, equals one pass.
//
// run_partial computes the unnormalised row state (o, m, l) of the score function's monoid
// over Options::keys only. States of disjoint key ranges merge with merge_states (the same
// combine every backend uses internally), and finalize_state turns the merged state into the
// output. This is how split-KV decoding, a shared-prefix cache or ring attention over several
// devices put attention back together -- for every score function, not only softmax.
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using namespace attnkit;

// Decoding shape: 4 new queries at the end of a 3000-token KV cache (q_offset = Nk - Nq).
constexpr index_t H = 8, Hkv = 2, Nq = 4, Nk = 3000, D = 128;

// A state buffer: o [1, H, Nq, D] and m, l [1, H, Nq], all float.
struct State {
  std::vector<float> o = std::vector<float>(H * Nq * D), m = std::vector<float>(H * Nq), l = std::vector<float>(H * Nq);
  PartialState view() {
    return {bhsd(o.data(), 1, H, Nq, D), rows_bhs(m.data(), 1, H, Nq), rows_bhs(l.data(), 1, H, Nq)};
  }
};

template <class Variant>
float split_vs_one_pass(const char* label, const Variant& attn, const std::vector<float>& q,
                        const std::vector<float>& k, const std::vector<float>& v) {
  const auto Q = bhsd<const float>(q.data(), 1, H, Nq, D);
  const auto K = bhsd<const float>(k.data(), 1, Hkv, Nk, D), V = bhsd<const float>(v.data(), 1, Hkv, Nk, D);

  // Two splits: keys [0, 1800) and [1800, Nk) -- e.g. two threads, or two devices.
  State a, b;
  Options first, second;
  first.keys = {0, 1800};
  second.keys = {1800, Nk};
  cpu::run_partial(attn, Q, K, V, a.view(), first);
  cpu::run_partial(attn, Q, K, V, b.view(), second);

  merge_states(attn.score, a.view(), b.view());  // a <- a (+) b
  std::vector<float> merged(H * Nq * D), lse_merged(H * Nq);
  finalize_state(attn.score, a.view(), bhsd(merged.data(), 1, H, Nq, D), rows_bhs(lse_merged.data(), 1, H, Nq));

  // One pass over all keys.
  std::vector<float> once(H * Nq * D), lse_once(H * Nq);
  Options all;
  if constexpr (score_has_lse<typename Variant::score_type>()) all.lse = rows_bhs(lse_once.data(), 1, H, Nq);
  cpu::run(attn, Q, K, V, bhsd(once.data(), 1, H, Nq, D), all);

  float diff = 0, scale = 0;
  for (std::size_t i = 0; i < once.size(); ++i)
    diff = std::max(diff, std::abs(merged[i] - once[i])), scale = std::max(scale, std::abs(once[i]));
  std::printf("  %-8s max |merged - one pass| = %.2e (max |o| = %.3f)", label, diff, scale);
  if constexpr (score_has_lse<typename Variant::score_type>()) {
    float lse_diff = 0;
    for (std::size_t i = 0; i < lse_once.size(); ++i)
      lse_diff = std::max(lse_diff, std::abs(lse_merged[i] - lse_once[i]));
    std::printf(", max |lse diff| = %.2e", lse_diff);
  }
  std::printf("\n");
  return diff / scale;
}

}  // namespace

int main() {
  std::mt19937 gen(6);
  std::normal_distribution<float> normal;
  std::vector<float> q(H * Nq * D), k(Hkv * Nk * D), v(Hkv * Nk * D);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(gen);

  std::printf("split-KV: keys [0, 1800) + [1800, %lld), merged, vs one pass (H=%lld, Hkv=%lld, Nq=%lld, D=%lld)\n",
              (long long)Nk, (long long)H, (long long)Hkv, (long long)Nq, (long long)D);
  float worst = 0;
  worst = std::max(worst, split_vs_one_pass("softmax", make_attention(Softmax{}, Causal{}), q, k, v));
  worst = std::max(worst, split_vs_one_pass("sigmoid", make_attention(Sigmoid{}, Causal{}), q, k, v));
  worst =
      std::max(worst, split_vs_one_pass("softplus", make_attention(Softplus{}, SlidingWindow{2048, 0, 0}), q, k, v));
  return worst < 1e-5f ? 0 : 1;
}
