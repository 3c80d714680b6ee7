// Storage conversions and the CPU backend's vectorised math.
#include <attnkit/core/fast_divisor.hpp>
#include <attnkit/cpu/scratch.hpp>
#include <attnkit/cpu/simd.hpp>
#include <attnkit/cpu/topk_select.hpp>

#include "support.hpp"

using namespace attnkit;

TEST_CASE("half and bfloat16 round to nearest even, with inf, NaN and subnormals", "[numerics]") {
  REQUIRE(float(half(1.f)) == 1.f);
  REQUIRE(float(half(65504.f)) == 65504.f);
  REQUIRE(std::isinf(float(half(65520.f))));
  REQUIRE(float(half(65519.f)) == 65504.f);
  REQUIRE(std::isnan(float(half(std::nanf("")))));
  REQUIRE(float(half(5.9604644775390625e-8f)) == 5.9604644775390625e-8f);  // smallest subnormal
  REQUIRE(float(half(2.98023223876953125e-8f)) == 0.f);                    // halfway to 0: even
  REQUIRE(float(half(1.f + 1.f / 2048)) == 1.f);                           // tie rounds to even
  REQUIRE(float(half(1.f + 3.f / 2048)) == 1.f + 2.f / 1024);
  REQUIRE(float(bfloat16(1.f + 1.f / 256)) == 1.f);
  REQUIRE(float(bfloat16(1.f + 3.f / 256)) == 1.f + 2.f / 128);
  REQUIRE(std::isnan(float(bfloat16(std::nanf("")))));
  REQUIRE(std::isinf(float(bfloat16(__builtin_huge_valf()))));
  // every half value survives a round trip through float
  for (unsigned u = 0; u < 0x10000u; ++u) {
    half h;
    h.bits = std::uint16_t(u);
    const float f = float(h);
    if (!std::isnan(f)) REQUIRE(half(f).bits == h.bits);
  }
}

TEST_CASE("the vectorised exp and softplus keep their error bounds", "[numerics]") {
  using cpu::vfloat;
  constexpr int W = cpu::simd_width;
  double worst = 0;
  alignas(64) float x[64], y[64];
  for (double base = -87.0; base < 88.5; base += 0.0137) {
    for (int i = 0; i < W; ++i) x[i] = float(base + i * 1e-3);
    cpu::fast_exp(vfloat::load_unaligned(x)).store_unaligned(y);
    for (int i = 0; i < W; ++i) worst = std::max(worst, std::abs(y[i] - std::exp(double(x[i]))) / std::exp(double(x[i])));
  }
  REQUIRE(worst < 3e-7);
  const float special[8] = {-__builtin_huge_valf(), __builtin_huge_valf(), std::nanf(""), -200.f, 200.f, 0.f, -87.f, 88.f};
  for (int i = 0; i < W; ++i) x[i] = special[i % 8];
  cpu::fast_exp(vfloat::load_unaligned(x)).store_unaligned(y);
  REQUIRE(y[0] == 0.f);
  REQUIRE(std::isinf(y[1]));
  REQUIRE(std::isnan(y[2]));
  REQUIRE(y[3] == 0.f);
  REQUIRE(std::isinf(y[4]));
  REQUIRE(y[5] == 1.f);
  // The ends of the range: the largest finite results, the first overflowing ones, the last
  // normal one above the flush to 0.
  const float ends[4] = {88.72f, 88.7228f, 88.73f, -87.29f};
  for (int i = 0; i < W; ++i) x[i] = ends[i % 4];
  cpu::fast_exp(vfloat::load_unaligned(x)).store_unaligned(y);
  for (int i : {0, 1, 3}) REQUIRE(std::abs(y[i] - std::exp(double(x[i]))) / std::exp(double(x[i])) < 3e-7);
  REQUIRE(std::isinf(y[2]));
  worst = 0;
  for (double base = -60.0; base < 60.0; base += 0.0113) {
    for (int i = 0; i < W; ++i) x[i] = float(base + i * 1e-3);
    math<vfloat>::softplus(vfloat::load_unaligned(x)).store_unaligned(y);
    for (int i = 0; i < W; ++i) {
      const double t = x[i], ref = std::max(t, 0.0) + std::log1p(std::exp(-std::abs(t)));
      worst = std::max(worst, std::abs(y[i] - ref) / ref);
    }
  }
  REQUIRE(worst < 1e-6);
  for (int i = 0; i < W; ++i) x[i] = special[i % 8];
  math<vfloat>::softplus(vfloat::load_unaligned(x)).store_unaligned(y);
  REQUIRE(y[0] == 0.f);
  REQUIRE(std::isinf(y[1]));
  REQUIRE(std::isnan(y[2]));
  REQUIRE(y[3] == 0.f);
  REQUIRE(y[4] == 200.f);
  REQUIRE(std::abs(y[5] - std::log(2.f)) < 1e-6f);
}

TEST_CASE("FastDivisor divides exactly like integer division over the whole int range", "[numerics]") {
  std::mt19937 rng(11);
  std::vector<std::int64_t> divisors;
  for (std::int64_t d = 1; d <= 300; ++d) divisors.push_back(d);
  for (int e = 9; e <= 30; ++e) divisors.insert(divisors.end(), {(std::int64_t(1) << e) - 1, std::int64_t(1) << e, (std::int64_t(1) << e) + 1});
  divisors.push_back((std::int64_t(1) << 31) - 1);
  for (const std::int64_t d : divisors) {
    const FastDivisor f(d);
    std::int64_t checked = 0, wrong = 0, first_wrong = -1;
    const auto check = [&](int n) {
      const int q = f.quotient(n);
      ++checked;
      if (q != n / d || f.remainder(n, q) != n % d) wrong += 1, first_wrong = first_wrong < 0 ? n : first_wrong;
    };
    for (int n = 0; n < 2000; ++n) check(n);
    for (std::int64_t n = std::numeric_limits<int>::max() - 2000; n <= std::numeric_limits<int>::max(); ++n) check(int(n));
    for (int i = 0; i < 20000; ++i) check(int(rng() >> 1));
    for (std::int64_t k = 1; k * d < std::numeric_limits<int>::max() && k < 4000; ++k)  // around every multiple
      for (const std::int64_t n : {k * d - 1, k * d, k * d + 1})
        if (n < std::numeric_limits<int>::max()) check(int(n));
    INFO("divisor " << d << ", first wrong numerator " << first_wrong);
    REQUIRE(checked > 20000);
    REQUIRE(wrong == 0);
  }
  REQUIRE_THROWS_WITH(FastDivisor(0), Catch::Contains("divisor"));
  REQUIRE_THROWS_WITH(FastDivisor(std::int64_t(1) << 31), Catch::Contains("divisor"));
}

TEST_CASE("the kernels' scratch rows start on cache lines, whatever their size and growth", "[numerics]") {
  for (std::size_t n : {1u, 3u, 17u, 1000u, 70000u}) {
    cpu::line_vector<float> rows(n, 1.f);
    REQUIRE(reinterpret_cast<std::uintptr_t>(rows.data()) % 64 == 0);
    rows.resize(3 * n + 5, 2.f);  // reallocates: the new block too
    REQUIRE(reinterpret_cast<std::uintptr_t>(rows.data()) % 64 == 0);
    REQUIRE(rows.front() == 1.f);
    REQUIRE(rows.back() == 2.f);
  }
}

TEST_CASE("scratch blocks are cache-line aligned, reused by the thread that freed them, and bounded", "[numerics]") {
  cpu::release_scratch();
  const std::size_t big = cpu::scratch_min_bytes / sizeof(float) + 1000;
  const float* first = nullptr;
  for (std::size_t n : {std::size_t(1), std::size_t(70000), big, 3 * big}) {
    cpu::scratch_vector<float> rows(n, 1.f);
    REQUIRE(reinterpret_cast<std::uintptr_t>(rows.data()) % 64 == 0);
    rows.resize(3 * n + 5, 2.f);
    REQUIRE(reinterpret_cast<std::uintptr_t>(rows.data()) % 64 == 0);
    REQUIRE(rows.front() == 1.f);
    REQUIRE(rows.back() == 2.f);
  }
  {
    cpu::scratch_vector<float> a(big);
    first = a.data();
  }
  {
    cpu::scratch_vector<float> b(big - 500);  // fits the block a freed: the same memory
    REQUIRE(b.data() == first);
    cpu::scratch_vector<float> c(big);  // another block
    REQUIRE(c.data() != first);
  }
  const std::size_t limit = cpu::scratch_cache_limit();
  cpu::set_scratch_cache_limit(sizeof(float) * big + 4096);  // room for one block of big floats
  {
    cpu::scratch_vector<float> kept(big);
    first = kept.data();
  }
  {
    cpu::scratch_vector<float> huge(4 * big);  // over the limit alone: freed, the cached block stays
  }
  {
    cpu::scratch_vector<float> again(big);
    REQUIRE(again.data() == first);
  }
  cpu::set_scratch_cache_limit(0);  // nothing kept: freed blocks go back to the system
  cpu::release_scratch();
  {
    cpu::scratch_vector<float> a(big);
    a[0] = 3.f;
  }
  cpu::set_scratch_cache_limit(limit);
  cpu::release_scratch();
}

TEST_CASE("top-k ranked keys order like (logit, -index) and select_best keeps exactly the k best", "[numerics]") {
  using cpu::RankedKey;
  const float inf = __builtin_huge_valf();
  // the rank: higher logit first, at equal logits (-0 == +0) the lower index
  const float logits[] = {-inf, -3.5f, -1e-30f, -0.f, 0.f, 1e-30f, 2.f, 3e38f, inf};
  for (float a : logits)
    for (float b : logits)
      for (index_t ja : {index_t(0), index_t(7), cpu::ranked_key_limit - 1})
        for (index_t jb : {index_t(1), index_t(7), index_t(4000000000)}) {
          const bool better = a > b || (a == b && ja < jb);
          CHECK((RankedKey::make(a, ja) > RankedKey::make(b, jb)) == better);
        }
  for (float a : logits) {
    CHECK(RankedKey::make(a, 5).logit() == a);  // -0 comes back as +0, equal as a float
    CHECK(RankedKey::make(a, 5).key() == 5);
  }
  // select_best against a full sort, with tied logits, sizes around the selection's cutoff
  INFO("seed " << test::process_seed() << " (set ATTNKIT_TEST_SEED to reproduce)");
  std::mt19937& gen = test::rng();
  for (const index_t n : {1, 2, 16, 17, 40, 128, 300})
    for (const index_t kk : {index_t(1), index_t(5), n / 2 + 1, n}) {
      if (kk > n) continue;
      std::vector<RankedKey> x(static_cast<std::size_t>(n)), tmp(x.size());
      std::uniform_int_distribution<int> level(-8, 8);
      for (index_t i = 0; i < n; ++i) x[std::size_t(i)] = RankedKey::make(float(level(gen)) * 0.25f, (i * 7919) % 100003);
      std::vector<RankedKey> sorted = x;
      std::sort(sorted.begin(), sorted.end(), [](RankedKey a, RankedKey b) { return a > b; });
      cpu::select_best(x.data(), n, kk, tmp.data());
      std::vector<RankedKey> kept(x.begin(), x.begin() + kk);
      std::sort(kept.begin(), kept.end(), [](RankedKey a, RankedKey b) { return a > b; });
      INFO("n = " << n << ", k = " << kk);
      for (index_t i = 0; i < kk; ++i) CHECK(kept[std::size_t(i)].bits == sorted[std::size_t(i)].bits);
      CHECK(x[std::size_t(kk - 1)].bits == sorted[std::size_t(kk - 1)].bits);  // the k-th best last
    }
}
