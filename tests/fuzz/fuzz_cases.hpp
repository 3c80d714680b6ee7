#pragma once
// The fuzz harness's cases (tests/fuzz/fuzz_attention.cpp): inputs decoded from the fuzzer's
// bytes, a checked call of one variant, and by_mask, which picks the mask. Every (dtype, score)
// pair of by_mask is instantiated in one of two translation units built side by side
// (fuzz_cases_softmax_sigmoid.cpp, fuzz_cases_softplus_linear.cpp): in one unit the harness
// took ~18 minutes of a single core under ASan + UBSan + libFuzzer.
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <string>
#include <optional>
#include <vector>

namespace attnkit::fuzz {

struct Bytes {
  const std::uint8_t* p;
  std::size_t n;
  unsigned next() { return n ? (--n, *p++) : 0u; }
  int range(int lo, int hi) { return lo + int(next() % unsigned(hi - lo + 1)); }
  bool flag() { return next() & 1u; }
};

struct Case {
  int B, Hq, Hkv, Nq, Nk, D, Dv;
  bool bshd, integer_inputs, bad;
  bool bad_in_mask = false;  // the mask parameters carry the invalid value
  int integer_lo = -2;       // integer inputs: q, k in {integer_lo..2}
  std::optional<index_t> q_offset;
};

template <class T>
std::vector<T> make_data(std::mt19937& rng, std::size_t n, bool integer, float scale, int integer_lo = -2) {
  std::normal_distribution<float> normal(0.f, scale);
  std::uniform_int_distribution<int> small(integer_lo, 2);
  std::vector<T> x(n);
  for (auto& e : x) e = from_float<T>(integer ? float(small(rng)) : normal(rng));
  return x;
}

template <class T>
TensorView<T> view(std::vector<T>& x, const Case& c, int H, int N, int D) {
  return c.bshd ? bshd(x.data(), c.B, N, H, D) : bhsd(x.data(), c.B, H, N, D);
}

// Relative RMS error against the reference, measured from a floor of 1e-30 per element: fp32
// cannot follow fp64 below its normal range, e.g. sigmoid weights of logits around -100 are
// denormal or 0 in fp32 (outputs of 1e-45 or 0 against fp64's 1e-44: "relative error 1").
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) e += (a[i] - b[i]) * double(a[i] - b[i]), s += double(b[i]) * b[i];
  return std::sqrt(e / std::max(s, 1e-60 * double(a.size())));
}

[[noreturn]] inline void fail(const char* what, double err, const Case& c, const char* variant) {
  std::fprintf(stderr,
               "fuzz: %s (rel error %g)\n  %s  B=%d Hq=%d Hkv=%d Nq=%d Nk=%d D=%d Dv=%d %s q_offset=%s integer=%d\n", what,
               err, variant, c.B, c.Hq, c.Hkv, c.Nq, c.Nk, c.D, c.Dv, c.bshd ? "bshd" : "bhsd",
               c.q_offset ? std::to_string(*c.q_offset).c_str() : "default", int(c.integer_inputs));
  std::abort();
}

template <class T, class Variant>
void check(const Variant& attn, const Case& c, std::mt19937& rng, float scale, bool compare, Options opt) {
  auto q = make_data<T>(rng, std::size_t(c.B) * c.Hq * c.Nq * c.D, c.integer_inputs, scale, c.integer_lo);
  auto k = make_data<T>(rng, std::size_t(c.B) * c.Hkv * c.Nk * c.D, c.integer_inputs, scale, c.integer_lo);
  auto v = make_data<T>(rng, std::size_t(c.B) * c.Hkv * c.Nk * c.Dv, false, 1.f);
  std::vector<float> out(std::size_t(c.B) * c.Hq * c.Nq * c.Dv, std::nanf("")), ref(out.size());
  auto Q = TensorView<const T>(view(q, c, c.Hq, c.Nq, c.D));
  auto K = TensorView<const T>(view(k, c, c.Hkv, c.Nk, c.D));
  if (c.bad && !c.bad_in_mask) K.shape[0] += 1;  // batch mismatch (or a null pointer)
  auto V = TensorView<const T>(view(v, c, c.Hkv, c.Nk, c.Dv));
  auto O = view(out, c, c.Hq, c.Nq, c.Dv);
  opt.q_offset = c.q_offset;
  try {
    cpu::run(attn, Q, K, V, O, opt);
  } catch (const attnkit::invalid_argument&) {
    return;  // a clear error is an acceptable answer to any input
  }
  if (c.bad) fail("invalid call was accepted", 0, c, __PRETTY_FUNCTION__);
  for (float x : out)
    if (!std::isfinite(x)) fail("non-finite output (or an output element left unwritten)", 0, c, __PRETTY_FUNCTION__);
  if (!compare) return;
  reference::attention<double>(attn, Q, K, V, view(ref, c, c.Hq, c.Nq, c.Dv), opt);
  const double tol = std::is_same_v<T, float> ? 2e-4 : 2e-2;
  const double err = rel_error(out, ref);
  if (err > tol) fail("differs from the fp64 reference", err, c, __PRETTY_FUNCTION__);
}

template <class T, class Score>
void by_mask(const Score& score, Bytes& in, Case& c, std::mt19937& rng, float scale, Options opt) {
  const int Nk = std::max(c.Nk, 1);
  switch (in.range(0, 11)) {
    case 0: return check<T>(make_attention(score, Full{}), c, rng, scale, true, opt);
    case 1: return check<T>(make_attention(score, Causal{}), c, rng, scale, true, opt);
    case 2: {
      SlidingWindow w{in.range(0, 40), in.range(0, 40), in.range(0, 4)};
      if (c.bad) w.left = -1, c.bad_in_mask = true;
      return check<T>(make_attention(score, w), c, rng, scale, true, opt);
    }
    case 3: {
      const int bq = in.range(1, 70), bk = in.range(1, 70);
      const index_t off = c.q_offset.value_or(c.Nk - c.Nq);
      const int qb = off >= 0 ? int((off + c.Nq + bq - 1) / bq) + (c.bad ? 1 : 0) : 0, kb = (c.Nk + bk - 1) / bk;
      c.bad_in_mask = c.bad && off >= 0;
      std::vector<unsigned char> bits(std::size_t(std::max(qb * kb, 1)));
      for (auto& b : bits) b = in.flag();
      return check<T>(make_attention(score, BlockMask{bits.data(), qb, kb, bq, bk}), c, rng, scale, true, opt);
    }
    case 4: {  // 2-D neighborhood on a grid of Nk tokens
      int rows = 1;
      for (int r = 2; r * r <= Nk; ++r)
        if (Nk % r == 0) rows = r;
      const int cols = Nk / rows, dil = in.range(1, 2);
      Neighborhood2D nb{{rows, cols}, {in.range(1, std::max(1, rows / dil)), in.range(1, std::max(1, cols / dil))}, {dil, dil}};
      nb.causal[1] = in.flag();
      if (c.bad) nb.kernel[0] = rows + 1, c.bad_in_mask = true;
      return check<T>(make_attention(score, nb), c, rng, scale, true, opt);
    }
    case 5: {
      Neighborhood1D nb{{Nk}, {in.range(1, Nk)}};
      return check<T>(make_attention(score, nb), c, rng, scale, true, opt);
    }
    case 6: {  // exact integer logits make the selection deterministic in every precision
      c.integer_inputs = true;
      // Linear attention ranks keys by <phi(q), phi(k)>, and elu + 1 keeps integers integral
      // only on x >= 0: exp(-1), exp(-2) turn exact ties into near-ties that fp32 and the fp64
      // reference break differently (another key set, not a kernel error). As in the tests.
      if constexpr (is_linear_score<Score>()) c.integer_lo = 0;
      opt.scale = 1.f;
      c.bad_in_mask = c.bad;
      return check<T>(make_attention(score, TopK<Causal>{c.bad ? 0 : in.range(1, 20)}), c, rng, scale, true, opt);
    }
    case 7: return check<T>(make_attention(score, MoBA{in.range(1, 40), in.range(1, 4)}), c, rng, scale, false, opt);
    case 8: {
      std::vector<float> centroids(std::size_t(4 * c.D));
      std::normal_distribution<float> normal;
      for (auto& x : centroids) x = normal(rng);
      c.bad_in_mask = c.bad;
      return check<T>(make_attention(score, ClusterRouting{centroids.data(), c.bad ? 0 : 4}), c, rng, scale, false, opt);
    }
    case 9: return check<T>(make_attention(score, Causal{} & SlidingWindow{in.range(0, 30), 0}), c, rng, scale, true, opt);
    case 10: return check<T>(make_attention(score, TopKBlocks<Causal>{in.range(1, 4), in.range(1, 40), in.range(1, 40)}),
                             c, rng, scale, false, opt);
    default: {
      Neighborhood3D nb{{1, 1, Nk}, {1, 1, in.range(1, Nk)}};
      return check<T>(make_attention(score, nb), c, rng, scale, true, opt);
    }
  }
}

}  // namespace attnkit::fuzz
