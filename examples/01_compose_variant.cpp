// 01: compose an attention variant from policies and run it on the CPU.
//
// A variant is  score function x mask x score modifiers, fixed at compile time; the backend
// turns it into one fused kernel. Here: softmax over a causal sliding window of 128 keys, plus
// two attention sinks, with ALiBi position biases, on a grouped-query layout (8 query heads
// sharing 2 key/value heads).
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  using namespace attnkit;
  const index_t B = 1, Hq = 8, Hkv = 2, N = 1024, D = 64;

  // Inputs in [B, H, S, D] order (bshd() would describe a [B, S, H, D] buffer instead).
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<float> q(B * Hq * N * D), k(B * Hkv * N * D), v(B * Hkv * N * D), o(B * Hq * N * D);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(gen);

  // ALiBi slopes 2^(-8 h / Hq), one per query head (the modifier keeps a pointer to them).
  std::vector<float> slopes(Hq);
  for (index_t h = 0; h < Hq; ++h) slopes[h] = std::exp2(-8.f * float(h + 1) / float(Hq));

  // The variant: softmax x (window 128 to the left, 0 to the right, 2 sinks) x ALiBi.
  const auto attn =
      make_attention(Softmax{}, SlidingWindow{/*left=*/128, /*right=*/0, /*sinks=*/2}, Alibi{slopes.data()});

  std::vector<float> lse(B * Hq * N);
  Options opt;
  opt.lse = rows_bhs(lse.data(), B, Hq, N);  // optional log-sum-exp output
  opt.threads = 0;                           // 0 = all hardware threads

  const cpu::TileCounters tiles =
      cpu::run(attn, bhsd<const float>(q.data(), B, Hq, N, D), bhsd<const float>(k.data(), B, Hkv, N, D),
               bhsd<const float>(v.data(), B, Hkv, N, D), bhsd(o.data(), B, Hq, N, D), opt);

  std::printf("softmax x window(128, sinks 2) x ALiBi, B=%lld Hq=%lld Hkv=%lld N=%lld D=%lld\n", (long long)B,
              (long long)Hq, (long long)Hkv, (long long)N, (long long)D);
  for (index_t i : {index_t(0), index_t(1), index_t(500), N - 1})
    std::printf("  head 0, query %4lld: o[0..3] = %+.5f %+.5f %+.5f %+.5f   lse = %.4f\n", (long long)i, o[i * D + 0],
                o[i * D + 1], o[i * D + 2], o[i * D + 3], lse[i]);
  // The mask also works per tile: tiles outside the window cost nothing, tiles fully inside
  // it skip the per-element test.
  std::printf("  key tiles: %lld full, %lld partial, %lld skipped\n", (long long)tiles.full, (long long)tiles.partial,
              (long long)tiles.skipped);

  // The same row by hand, for query i = 500 of head h = 3 (kv head 3 / (Hq / Hkv) = 0): it sees
  // the sinks 0 and 1 plus keys [500 - 128, 500], with logit <q, k> / sqrt(D) + slope * (j - i).
  const index_t h = 3, hk = h / (Hq / Hkv), i = 500;
  std::vector<double> num(D, 0.0);
  double den = 0, mx = -1e300;
  auto logit = [&](index_t j) {
    double s = 0;
    for (index_t d = 0; d < D; ++d) s += double(q[(h * N + i) * D + d]) * k[(hk * N + j) * D + d];
    return s / std::sqrt(double(D)) + slopes[h] * double(j - i);
  };
  auto visible = [&](index_t j) { return j < 2 || (j >= i - 128 && j <= i); };
  for (index_t j = 0; j < N; ++j)
    if (visible(j)) mx = std::max(mx, logit(j));
  for (index_t j = 0; j < N; ++j)
    if (visible(j)) {
      const double p = std::exp(logit(j) - mx);
      den += p;
      for (index_t d = 0; d < D; ++d) num[d] += p * v[(hk * N + j) * D + d];
    }
  double err = 0;
  for (index_t d = 0; d < D; ++d) err = std::max(err, std::abs(num[d] / den - o[(h * N + i) * D + d]));
  std::printf("  check: head 3, query 500 by hand: max |diff| = %.2e\n", err);
  return err < 1e-5 ? 0 : 1;
}
