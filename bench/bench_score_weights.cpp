// attnkit_bench_weights: the CPU backend's score weights alone, on 2048 logits in L1, so that
// their cost can be set against the two GEMMs around them (at D = 128 those take 2 x 128
// vector FMAs per 8 weights). Items are weights.
//   attnkit_bench_weights --benchmark_repetitions=5
#include <attnkit/attnkit.hpp>
#include <attnkit/cpu/simd.hpp>
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

namespace {

using attnkit::cpu::vfloat;
constexpr int n_logits = 2048;

std::vector<float> logits() {
  std::vector<float> x(n_logits);
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (float& v : x) v = normal(gen);
  return x;
}

// Weighs every logit with f (a batch -> batch function) and keeps the results live.
template <class F>
void weigh(benchmark::State& state, F f) {
  const std::vector<float> x = logits();
  std::vector<float> y(n_logits);
  for (auto _ : state) {
    for (int i = 0; i < n_logits; i += attnkit::cpu::simd_width) f(vfloat::load_unaligned(x.data() + i)).store_unaligned(y.data() + i);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n_logits);
}

void softmax_exp(benchmark::State& state) {
  const vfloat m(2.f);
  weigh(state, [&](vfloat x) { return attnkit::cpu::fast_exp(x - m); });
}
void sigmoid(benchmark::State& state) {
  weigh(state, [](vfloat x) { return attnkit::math<vfloat>::sigmoid(x); });
}
void softplus(benchmark::State& state) {
  weigh(state, [](vfloat x) { return attnkit::math<vfloat>::softplus(x); });
}

}  // namespace

BENCHMARK(softmax_exp);
BENCHMARK(sigmoid);
BENCHMARK(softplus);
BENCHMARK_MAIN();
