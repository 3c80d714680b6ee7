#pragma once
// Backend-independent test helpers: fresh random inputs in any storage type and layout, a
// backend against the fp64 reference, relative errors. support.hpp binds them to the CPU
// backend, cuda/support_cuda.hpp to the CUDA one.
#include <attnkit/core/dtype.hpp>
#include <attnkit/core/problem.hpp>
#include <attnkit/core/tensor.hpp>
#include <attnkit/mask/block.hpp>
#include <attnkit/reference/reference.hpp>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace attnkit::test {

// One fresh seed per process, printed on failure (INFO) so that any failure reproduces.
inline std::uint32_t process_seed() {
  static const std::uint32_t seed = [] {
    if (const char* s = std::getenv("ATTNKIT_TEST_SEED")) return std::uint32_t(std::stoul(s));
    return std::uint32_t(std::random_device{}());
  }();
  return seed;
}
inline std::mt19937& rng() {
  static std::mt19937 g(process_seed());
  return g;
}

// Memory behind masks that point at caller data (Alloc: memory the backend can read).
template <template <class> class Alloc = std::allocator>
struct MaskStoreIn {
  std::vector<unsigned char, Alloc<unsigned char>> bitmap;
  std::vector<int, Alloc<int>> row_ptr, col_idx;
  std::vector<float, Alloc<float>> centroids;
};
using MaskStore = MaskStoreIn<>;

struct Shape {
  index_t B = 1, Hq = 2, Hkv = 1, Nq = 77, Nk = 130, D = 40, Dv = 24;
  bool bshd = false;
  std::optional<index_t> q_offset{};
  index_t pos0() const { return q_offset.value_or(Nk - Nq); }
  std::string str() const {
    return "B=" + std::to_string(B) + " Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
           " Nq=" + std::to_string(Nq) + " Nk=" + std::to_string(Nk) + " D=" + std::to_string(D) +
           " Dv=" + std::to_string(Dv) + (bshd ? " bshd" : " bhsd") +
           (q_offset ? " q_offset=" + std::to_string(*q_offset) : "");
  }
};

// A random BSR layout over shape s (query positions from s.pos0(), which must be >= 0), each
// block on with probability `density`, the last block row empty (a fully masked stretch).
// Alloc: memory the backend can read.
template <template <class> class Alloc = std::allocator>
struct BsrLayout {
  index_t q_blocks, k_blocks, block_q, block_k;
  std::vector<int, Alloc<int>> row_ptr, col_idx;
  BsrLayout(const Shape& s, index_t bq, index_t bk, double density)
      : q_blocks((s.pos0() + s.Nq + bq - 1) / bq), k_blocks((s.Nk + bk - 1) / bk), block_q(bq), block_k(bk) {
    std::bernoulli_distribution on(density);
    row_ptr.push_back(0);
    for (index_t r = 0; r < q_blocks; ++r) {
      for (index_t c = 0; c < k_blocks; ++c)
        if (r + 1 < q_blocks && on(rng())) col_idx.push_back(int(c));
      row_ptr.push_back(int(col_idx.size()));
    }
  }
  BlockMaskBSR mask() const { return {row_ptr.data(), col_idx.data(), q_blocks, k_blocks, block_q, block_k}; }
};

// The shapes every score x mask combination runs on: not tile multiples, GQA and MQA, D != Dv
// and not SIMD multiples, both layouts, decode (Nq = 1), Nq > Nk, and an explicit q_offset.
inline std::vector<Shape> standard_shapes() {
  return {
      {1, 2, 1, 77, 130, 40, 24, false, {}},
      {2, 4, 2, 64, 64, 64, 64, true, {}},
      {1, 3, 1, 130, 130, 16, 33, false, {}},
      {1, 2, 2, 1, 150, 32, 32, true, {}},
      {1, 1, 1, 90, 60, 24, 24, false, {}},
      {1, 2, 1, 40, 120, 20, 20, true, index_t(30)},
  };
}

template <class T, class Alloc = std::allocator<T>>
struct Tensor {
  std::vector<T, Alloc> data;
  TensorView<T> view;
  Tensor(const Shape& s, index_t H, index_t N, index_t D) : data(std::size_t(s.B * H * N * D)) {
    view = s.bshd ? bshd(data.data(), s.B, N, H, D) : bhsd(data.data(), s.B, H, N, D);
  }
  TensorView<const T> cview() const { return view; }
  std::vector<float> floats() const {
    std::vector<float> f(data.size());
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = to_float(data[i]);
    return f;
  }
};

template <class T, class A>
void fill_normal(Tensor<T, A>& t, float stddev = 1.f) {
  std::normal_distribution<float> n(0.f, stddev);
  for (auto& x : t.data) x = from_float<T>(n(rng()));
}
template <class T, class A>
void fill_integers(Tensor<T, A>& t, int lo, int hi) {
  std::uniform_int_distribution<int> u(lo, hi);
  for (auto& x : t.data) x = from_float<T>(float(u(rng())));
}

inline double rel_error(const std::vector<float>& out, const std::vector<float>& ref) {
  double e = 0, r = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double d = double(out[i]) - double(ref[i]);
    e += d * d;
    r += double(ref[i]) * double(ref[i]);
  }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

inline bool all_finite(const std::vector<float>& x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

struct Inputs {
  float scale = 1.f;      // standard deviation of q and k
  bool integers = false;  // q, k in {-2..2} and logit scale 1/4: exact logits
};

// Centroids for cluster-routing tests: integers in {-2..2}. With integer q and k (Inputs
// {1, true}) every squared distance is an exact integer in any precision and summation order,
// so the kernel and the fp64 reference route each row alike, exact ties to the lower index.
// On random reals, a row whose two nearest centroids lie within fp32 rounding of each other
// is routed apart by the two and fails the comparison for no fault of the kernel (CI met one:
// ~1e-5 per row). Block top-k and MoBA stay on random reals: their block means over partial
// blocks are not exact on integers, where the many exact ties would turn into rounding coin
// flips; their near-ties on reals are ~1e-6 per comparison, never met so far.
template <class Vec>
void fill_integer_centroids(Vec& centroids) {
  std::uniform_int_distribution<int> u(-2, 2);
  for (auto& x : centroids) x = float(u(rng()));
}

// Runs the CPU backend and the fp64 reference on the same fresh inputs; returns the CPU
// output, the reference output and (softmax) the two lse vectors.
template <class T>
struct Result {
  std::vector<float> out, ref, lse, lse_ref;
  double error() const { return rel_error(out, ref); }
};

// Backend: struct with `template <class T> using alloc` (memory the backend can read) and
// `void operator()(attn, q, k, v, o, opt) const` (runs and completes).
template <class T, class Backend, class Variant>
Result<T> run_both_on(const Backend& backend, const Variant& attn, const Shape& s, Options opt = {}, Inputs in = {}) {
  using A = typename Backend::template alloc<T>;
  using AF = typename Backend::template alloc<float>;
  Tensor<T, A> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv), o(s, s.Hq, s.Nq, s.Dv);
  // Linear attention's logit is <phi(q), phi(k)>; elu+1 is exact only on x >= 0.
  const int lo = is_linear_score<typename Variant::score_type>() ? 0 : -2;
  if (in.integers) fill_integers(q, lo, 2), fill_integers(k, lo, 2);
  else fill_normal(q, in.scale), fill_normal(k, in.scale);
  fill_normal(v);
  for (auto& x : o.data) x = from_float<T>(std::nanf(""));  // poison: every element must be written
  Tensor<float> r(s, s.Hq, s.Nq, s.Dv);
  opt.q_offset = s.q_offset;
  // Integer inputs with a power-of-two scale give logits that are exact in any summation
  // order, so top-k ties break the same way in the kernel and in the fp64 reference.
  if (in.integers && !opt.scale) opt.scale = 0.25f;
  Result<T> res;
  constexpr bool lse = score_has_lse<typename Variant::score_type>();
  std::vector<float, AF> lse_out(std::size_t(s.B * s.Hq * s.Nq), std::nanf(""));
  std::vector<float> lse_ref(lse_out.size());
  Options run_opt = opt, ref_opt = opt;
  if (lse) {
    run_opt.lse = rows_bhs(lse_out.data(), s.B, s.Hq, s.Nq);
    ref_opt.lse = rows_bhs(lse_ref.data(), s.B, s.Hq, s.Nq);
  }
  backend(attn, q.cview(), k.cview(), v.cview(), o.view, run_opt);
  reference::attention<double>(attn, q.cview(), k.cview(), v.cview(), r.view, ref_opt);
  res.out = o.floats();
  res.ref = r.floats();
  if (lse) res.lse.assign(lse_out.begin(), lse_out.end()), res.lse_ref = lse_ref;
  return res;
}

// Same lse: equal where finite (absolute 1e-3 relative to magnitude), -inf where the row is empty.
inline void check_lse(const std::vector<float>& lse, const std::vector<float>& ref) {
  for (std::size_t i = 0; i < lse.size(); ++i) {
    INFO("row " << i << " lse " << lse[i] << " ref " << ref[i]);
    if (std::isinf(ref[i])) REQUIRE(lse[i] == ref[i]);
    else REQUIRE(std::abs(lse[i] - ref[i]) <= 1e-3 * (1.0 + std::abs(ref[i])));
  }
}

template <class T, class Backend, class Variant>
void check_variant_on(const Backend& backend, const Variant& attn, const Shape& s, Options opt = {}, Inputs in = {},
                      double tol = tolerance<T>()) {
  INFO("seed " << process_seed() << " (set ATTNKIT_TEST_SEED to reproduce), " << s.str() << ", dtype "
                << dtype_name<T>);
  const Result<T> r = run_both_on<T>(backend, attn, s, opt, in);
  REQUIRE(all_finite(r.out));
  INFO("relative error " << r.error());
  REQUIRE(r.error() < tol);
  if (!r.lse.empty()) check_lse(r.lse, r.lse_ref);
}

}  // namespace attnkit::test
