// 03: check CPU variants against the dense fp64 reference.
//
// attnkit::reference::attention<double> applies the spec literally with Eigen: it materialises
// every logit and mask entry and selects content-dependent masks (top-k, routing) with its own
// code. Any variant that runs on a backend runs on it too, so this is how to check a variant
// of your own -- and how the library's tests check its kernels.
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace attnkit;

constexpr index_t B = 2, Hq = 4, Hkv = 2, N = 384, D = 64;

struct Data {
  std::vector<float> q, k, v;
};

const Data& data() {
  static const Data d = [] {
    Data x{std::vector<float>(B * Hq * N * D), std::vector<float>(B * Hkv * N * D),
           std::vector<float>(B * Hkv * N * D)};
    std::mt19937 gen(3);
    std::normal_distribution<float> normal;
    for (auto* t : {&x.q, &x.k, &x.v})
      for (float& e : *t) e = normal(gen);
    return x;
  }();
  return d;
}

template <class T>
std::vector<T> cast(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = T(x[i]);
  return y;
}

int failures = 0;

// Runs `attn` with storage type T on the CPU and in the fp64 reference (on the same, already
// rounded, inputs) and prints ||o - ref|| / ||ref||.
template <class T = float, class Variant>
void compare(const char* label, const Variant& attn) {
  const std::vector<T> q = cast<T>(data().q), k = cast<T>(data().k), v = cast<T>(data().v);
  std::vector<T> o(B * Hq * N * D);
  std::vector<float> ref(o.size());
  const auto Q = bhsd<const T>(q.data(), B, Hq, N, D);
  const auto K = bhsd<const T>(k.data(), B, Hkv, N, D);
  const auto V = bhsd<const T>(v.data(), B, Hkv, N, D);
  cpu::run(attn, Q, K, V, bhsd(o.data(), B, Hq, N, D));
  reference::attention<double>(attn, Q, K, V, bhsd(ref.data(), B, Hq, N, D));

  double e = 0, s = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    const double d = double(to_float(o[i])) - ref[i];
    e += d * d, s += double(ref[i]) * ref[i];
  }
  const double err = std::sqrt(e / s);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-2;  // the library's accuracy targets
  const bool ok = err < tol;
  failures += !ok;
  std::printf("  %-36s %-4s rel err %.2e  (target < %.0e)  %s\n", label, dtype_name<T>, err, tol, ok ? "ok" : "FAIL");
}

}  // namespace

int main() {
  std::printf("CPU vs fp64 reference, B=%lld Hq=%lld Hkv=%lld N=%lld D=%lld\n", (long long)B, (long long)Hq,
              (long long)Hkv, (long long)N, (long long)D);
  std::vector<float> centroids(8 * D);
  std::mt19937 gen(4);
  std::normal_distribution<float> normal;
  for (float& c : centroids) c = normal(gen);
  // A block layout: the diagonal blocks plus every fourth key block (6 x 6 blocks of 64).
  std::vector<unsigned char> layout(6 * 6);
  for (int qb = 0; qb < 6; ++qb)
    for (int kb = 0; kb < 6; ++kb) layout[qb * 6 + kb] = qb == kb || kb % 4 == 0;

  compare("softmax, full", make_attention(Softmax{}, Full{}));
  compare("softmax, causal, soft-cap 30", make_attention(Softmax{}, Causal{}, SoftCap{30.f}));
  compare("sigmoid, causal", make_attention(Sigmoid{}, Causal{}));
  compare("softplus (r=2, log n), window 64",
          make_attention(Softplus{2.f, LengthScale::log_n}, SlidingWindow{64, 0, 0}));
  compare("linear (elu+1), causal, chunked", make_attention(Linear<>{}, Causal{}));
  compare("softmax, block OR window 32",
          make_attention(Softmax{}, BlockMask{layout.data(), 6, 6, 64, 64} | SlidingWindow{32, 0, 0}));
  compare("softmax, neighborhood 2D 16x24 k5x7", make_attention(Softmax{}, Neighborhood2D{{16, 24}, {5, 7}}));
  compare("softmax, top-32 of causal", make_attention(Softmax{}, TopK<Causal>{32}));
  compare("softmax, MoBA block 64 top 2", make_attention(Softmax{}, MoBA{64, 2}));
  compare("sigmoid, cluster routing (8)", make_attention(Sigmoid{}, ClusterRouting{centroids.data(), 8}));
  compare<bfloat16>("softmax, causal", make_attention(Softmax{}, Causal{}));
  compare<half>("softmax, causal", make_attention(Softmax{}, Causal{}));
  std::printf("%s\n", failures ? "SOME VARIANTS FAILED" : "all variants within target");
  return failures ? 1 : 0;
}
