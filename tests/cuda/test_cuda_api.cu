// CUDA backend: head dims on the 128 path, output types, modifiers, a user mask, edge cases
// and input validation.
#include "support_cuda.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
template <class T, class Variant>
void check(const Variant& attn, const Shape& s, Options opt = {}, Inputs in = {}) {
  check_variant_on<T>(CudaBackend{}, attn, s, opt, in, 1e-2);
}

// Causal attention inside packed documents, written once for host and device.
struct DocumentMask {
  const int* doc = nullptr;
  ATTNKIT_HD bool allowed(index_t pos, index_t j) const { return j <= pos && doc[j] == doc[pos]; }
  ATTNKIT_HD TileKind classify(const TileRect& r) const {
    if (r.k_lo > r.q_hi - 1) return TileKind::skip;
    if (doc[r.k_hi - 1] < doc[r.q_lo] || doc[r.k_lo] > doc[r.q_hi - 1]) return TileKind::skip;
    return TileKind::partial;
  }
};
}  // namespace

TEST_CASE("cuda: head dims 128 and padded 96/80 with long sequences", "[cuda]") {
  for (const Shape& s : {Shape{1, 4, 2, 300, 300, 128, 128, false, {}}, Shape{2, 2, 1, 257, 513, 96, 80, true, {}},
                         Shape{1, 2, 2, 130, 129, 128, 64, false, {}}}) {
    check<bfloat16>(make_attention(Softmax{}, Full{}), s);
    check<attnkit::half>(make_attention(Softmax{}, Causal{}), s);
    check<bfloat16>(make_attention(Sigmoid{}, SlidingWindow{70, 10, 2}), s);
    check<bfloat16>(make_attention(Softplus{}, Causal{}), s);
    check<attnkit::half>(make_attention(Linear<EluPlusOne>{}, Causal{}), s);
  }
}

TEST_CASE("cuda: dense K and V qualify for TMA key tiles exactly when their layout allows it", "[cuda][tma]") {
  // The forward kernel's Hopper path fetches key tiles by TMA when the map encodes, and copies
  // with cp.async otherwise; the cases above run whichever applies. This pins down which.
  bfloat16* buf = nullptr;
  REQUIRE(cudaMalloc(&buf, std::size_t(1) << 22) == cudaSuccess);
  const auto view = [&](index_t off, std::array<index_t, 4> shape, std::array<index_t, 3> stride) {
    return TensorView<const bfloat16>{buf + off, shape, stride};
  };
  CUtensorMap map;
  const index_t B = 2, H = 3, N = 300;
  CHECK(cuda::tma::key_tile_map(map, view(0, {B, H, N, 128}, {H * N * 128, N * 128, 128}), 128, 128));  // BHSD
  CHECK(cuda::tma::key_tile_map(map, view(0, {B, H, N, 128}, {N * H * 128, 128, H * 128}), 128, 128));  // BSHD
  CHECK(cuda::tma::key_tile_map(map, view(0, {B, H, N, 64}, {H * N * 64, N * 64, 64}), 64, 64));
  CHECK_FALSE(cuda::tma::key_tile_map(map, view(0, {B, H, N, 96}, {H * N * 96, N * 96, 96}), 128, 128));  // padded head dim
  CHECK_FALSE(cuda::tma::key_tile_map(map, view(4, {B, H, N, 128}, {H * N * 128, N * 128, 128}), 128, 128));  // 8-byte base
  CHECK_FALSE(cuda::tma::key_tile_map(map, view(0, {B, H, N, 128}, {H * N * 132, N * 132, 132}), 128, 128));  // 264-byte rows
  CHECK_FALSE(cuda::tma::key_tile_map(map, view(0, {B, H, N, 128}, {H * N * 128, 0, 128}), 128, 128));  // broadcast heads
  cudaFree(buf);
}

// Prefills of 64 rows or more take the gathered path (routed lists + own blocks, merged);
// the last shape has queries past the last key (no own block) and a partial last block.
TEST_CASE("cuda: MoBA blocks of whole key tiles (one block span per row and tile)", "[cuda]") {
  for (const Shape& s : {Shape{1, 4, 2, 700, 700, 64, 64, false, {}}, Shape{2, 2, 1, 300, 520, 128, 128, true, {}},
                         Shape{1, 2, 1, 330, 200, 128, 128, false, index_t(0)}}) {
    check<bfloat16>(make_attention(Softmax{}, MoBA{64, 3}), s);
    check<bfloat16>(make_attention(Softmax{}, MoBA{128, 2}), s);
    check<bfloat16>(make_attention(Sigmoid{}, MoBA{192, 2}), s);
  }
}

// Block top-k scores its candidates a warp per query block (lanes take every 32nd key block,
// their lists merged): here 50-80 candidates and k up to 9, so the kept blocks come from many
// lanes; D = 70 takes the scalar loads of the means. Key blocks of 128 hold whole key tiles:
// partial tiles then take the band's spans (a BSR layout's too). Cluster routing with 16-byte
// rows (D = 128, vector loads and the vector scatter) and without (D = 70, Dv = 36).
TEST_CASE("cuda: block top-k and cluster routing: pre-passes, block spans, unaligned rows", "[cuda]") {
  for (const Shape& s : {Shape{1, 4, 2, 800, 800, 128, 128, false, {}}, Shape{2, 2, 1, 640, 650, 70, 36, true, {}}}) {
    check<bfloat16>(make_attention(Softmax{}, TopKBlocks<Causal>{9, 16, 16}), s);
    check<attnkit::half>(make_attention(Softmax{}, TopKBlocks<Full>{5, 64, 8}), s);
    // key blocks of whole tiles: partial tiles from the band's spans (sinks included)
    check<bfloat16>(make_attention(Softmax{}, TopKBlocks<Causal>{3, 64, 128}), s);
    check<bfloat16>(make_attention(Sigmoid{}, TopKBlocks<SlidingWindow>{2, 32, 128, {300, 0, 4}}), s);
    const BsrLayout<ManagedAllocator> bsr(s, 64, 128, 0.5);  // the same spans from BSR lists
    check<bfloat16>(make_attention(Softmax{}, bsr.mask() & Causal{}), s);
    std::vector<float, ManagedAllocator<float>> centroids(std::size_t(12 * s.D));
    fill_integer_centroids(centroids);  // with integer inputs: exact distances
    check<bfloat16>(make_attention(Softmax{}, ClusterRouting{centroids.data(), 12}), s, {}, {1.f, true});
  }
}

TEST_CASE("cuda: float output, lse and score modifiers", "[cuda]") {
  const Shape s{1, 4, 2, 200, 260, 64, 64, true, {}};
  Tensor<float, ManagedAllocator<float>> slopes_t(Shape{1, 1, 1, 1, 1, 1, 1}, 1, 1, 4);
  for (int h = 0; h < 4; ++h) slopes_t.data[h] = 0.05f * float(h + 1);
  std::vector<float, ManagedAllocator<float>> bias(std::size_t(200 * 260));
  std::normal_distribution<float> n;
  for (auto& x : bias) x = n(rng());
  check<bfloat16>(make_attention(Softmax{}, Causal{}, Alibi{slopes_t.data.data()}, SoftCap{20.f}), s);
  check<attnkit::half>(make_attention(Softmax{}, Full{}, AdditiveBias{bias.data(), 0, 0, 260, 1}), s);
  check<bfloat16>(make_attention(Softplus{2.f, LengthScale::log_n}, SlidingWindow{40, 40}), s);
  check<bfloat16>(make_attention(Softplus{1.5f, LengthScale::one, false}, SlidingWindow{40, 40}), s);  // same kernel
  check<bfloat16>(make_attention(Sigmoid{}, Full{}, ScaleBy{0.5f}), s);
  // float output
  Tensor<bfloat16, ManagedAllocator<bfloat16>> q(s, 4, 200, 64), k(s, 2, 260, 64), v(s, 2, 260, 64);
  Tensor<float, ManagedAllocator<float>> o(s, 4, 200, 64);
  Tensor<float> ref(s, 4, 200, 64);
  fill_normal(q), fill_normal(k), fill_normal(v);
  const auto attn = make_attention(Softmax{}, Causal{});
  cuda::run(attn, q.cview(), k.cview(), v.cview(), o.view);
  cuda::check(cudaDeviceSynchronize(), "sync");
  reference::attention<double>(attn, q.cview(), k.cview(), v.cview(), ref.view, {});
  REQUIRE(rel_error(o.floats(), ref.floats()) < 1e-2);
}

TEST_CASE("cuda: a user-defined mask compiles for the device", "[cuda]") {
  const Shape s{1, 2, 1, 250, 250, 64, 64, false, {}};
  std::vector<int, ManagedAllocator<int>> doc(250);
  for (int t = 0; t < 250; ++t) doc[t] = t < 70 ? 0 : t < 71 ? 1 : t < 200 ? 2 : 3;
  check<bfloat16>(make_attention(Softmax{}, DocumentMask{doc.data()}), s);
  check<attnkit::half>(make_attention(Sigmoid{}, DocumentMask{doc.data()} & SlidingWindow{30, 0}), s);
}

TEST_CASE("cuda: empty, single and fully masked rows", "[cuda]") {
  check<bfloat16>(make_attention(Softmax{}, Causal{}), Shape{1, 2, 1, 1, 1, 64, 64, false, {}});
  check<bfloat16>(make_attention(Softmax{}, Causal{}), Shape{1, 2, 1, 1, 300, 128, 128, true, {}});
  // q_offset beyond the keys, Nk < Nq, and rows that see no key at all (output 0, lse -inf)
  check<bfloat16>(make_attention(Softmax{}, SlidingWindow{5, 0}), Shape{1, 1, 1, 100, 30, 64, 64, false, index_t(100)});
  check<attnkit::half>(make_attention(Softmax{}, Causal{}), Shape{1, 2, 1, 90, 60, 64, 64, false, {}});
  const Result<bfloat16> r =
      run_both_on<bfloat16>(CudaBackend{}, make_attention(Softmax{}, SlidingWindow{0, 0}), Shape{1, 1, 1, 70, 40, 64, 64, false, {}});
  REQUIRE(all_finite(r.out));
  for (std::size_t i = 0; i < 30 * 64; ++i) REQUIRE(r.out[i] == 0.f);  // rows 0..29 have position < 0
  for (std::size_t i = 0; i < 30; ++i) REQUIRE(r.lse[i] == neg_inf);
  // Nq = 0 and Nk = 0
  Tensor<bfloat16, ManagedAllocator<bfloat16>> q(Shape{}, 2, 0, 64), k(Shape{}, 1, 0, 64), v(Shape{}, 1, 0, 64),
      o(Shape{}, 2, 0, 64);
  REQUIRE_NOTHROW(cuda::run(make_attention(Softmax{}, Full{}), q.cview(), k.cview(), v.cview(), o.view));
  const Result<attnkit::half> e = run_both_on<attnkit::half>(CudaBackend{}, make_attention(Softmax{}, Full{}), Shape{1, 2, 1, 10, 0, 64, 64});
  for (float x : e.out) REQUIRE(x == 0.f);
}

TEST_CASE("cuda: NaN, -inf and +inf logits", "[cuda]") {
  // 150 keys: three key tiles, the last partial. Per row a -inf and a NaN bias drop a key; row 7
  // is NaN throughout (zeros, lse = -inf); row 20 has a +inf logit, which takes all the weight.
  const Shape s{1, 2, 1, 100, 150, 64, 64, false, {}};
  std::vector<float, ManagedAllocator<float>> bias(std::size_t(100 * 150), 0.f);
  for (int i = 0; i < 100; ++i) {
    bias[std::size_t(i * 150 + (i * 5) % 150)] = neg_inf;
    bias[std::size_t(i * 150 + (i * 11 + 3) % 150)] = std::nanf("");
  }
  for (int j = 0; j < 150; ++j) bias[std::size_t(7 * 150 + j)] = std::nanf("");
  bias[20 * 150 + 40] = -neg_inf;
  for (bool causal : {false, true}) {
    INFO("causal " << causal);
    const AdditiveBias ab{bias.data(), 0, 0, 150, 1};
    const auto r = causal ? run_both_on<bfloat16>(CudaBackend{}, make_attention(Softmax{}, Causal{}, ab), s)
                          : run_both_on<bfloat16>(CudaBackend{}, make_attention(Softmax{}, Full{}, ab), s);
    REQUIRE(all_finite(r.out));
    REQUIRE(r.error() < 1e-2);
    for (int h = 0; h < 2; ++h) {
      const std::size_t row7 = std::size_t(h * 100 + 7), row20 = std::size_t(h * 100 + 20);
      for (std::size_t d = 0; d < 64; ++d) REQUIRE(r.out[row7 * 64 + d] == 0.f);
      REQUIRE(r.lse[row7] == neg_inf);
      REQUIRE(r.lse[row20] > 1e38f);  // the +inf logit saturates
    }
  }
  // Logits that overflow without any modifier: every output stays finite.
  Options opt;
  opt.scale = 1e30f;
  const auto r = run_both_on<bfloat16>(CudaBackend{}, make_attention(Softmax{}, Causal{}), Shape{1, 2, 1, 130, 130, 128, 128}, opt);
  REQUIRE(all_finite(r.out));
}

// Sigmoid and softplus without modifiers weight raw Q K^T values (scale, bias and the row's
// length scale folded into one constant): NaN inputs must still drop their keys (a NaN query
// row gets zeros), overflowing logits saturate (sigmoid), and rejected pairs stay at weight 0
// under negative and zero scales.
template <class Variant>
void check_raw_logit_edges(const Variant& attn, std::initializer_list<float> scales) {
  const Shape s{1, 2, 1, 150, 150, 128, 128, false, {}};
  for (float scale : scales) {
    INFO("scale " << scale);
    Options opt;
    opt.scale = scale;
    const auto r = run_both_on<bfloat16>(CudaBackend{}, attn, s, opt);
    REQUIRE(all_finite(r.out));
    REQUIRE(r.error() < 1e-2);
  }
  Tensor<bfloat16, ManagedAllocator<bfloat16>> q(s, 2, 150, 128), k(s, 1, 150, 128), v(s, 1, 150, 128), o(s, 2, 150, 128);
  Tensor<float> ref(s, 2, 150, 128);
  fill_normal(q), fill_normal(k), fill_normal(v);
  q.data[std::size_t(5 * 128 + 7)] = from_float<bfloat16>(std::nanf(""));    // head 0, query 5
  k.data[std::size_t(40 * 128 + 3)] = from_float<bfloat16>(std::nanf(""));   // key 40
  cuda::run(attn, q.cview(), k.cview(), v.cview(), o.view);
  cuda::check(cudaDeviceSynchronize(), "sync");
  reference::attention<double>(attn, q.cview(), k.cview(), v.cview(), ref.view, {});
  const std::vector<float> out = o.floats();
  REQUIRE(all_finite(out));
  for (std::size_t d = 0; d < 128; ++d) REQUIRE(out[5 * 128 + d] == 0.f);
  REQUIRE(rel_error(out, ref.floats()) < 1e-2);
}

TEST_CASE("cuda: sigmoid and softplus on raw logits: NaN inputs, overflow, negative and zero scales", "[cuda]") {
  check_raw_logit_edges(make_attention(Sigmoid{}, SlidingWindow{70, 10, 2}), {1e38f, -0.3f, 0.f});
  // softplus with r = 2 and the log n length scale (an overflowing logit would make its l inf)
  check_raw_logit_edges(make_attention(Softplus{2.f, LengthScale::log_n}, SlidingWindow{40, 40}), {-0.3f, 0.f, 1.f});
}

TEST_CASE("cuda: negative and zero logit scales", "[cuda]") {
  // The softmax kernel keeps raw Q K^T values and flips Q's signs for a negative scale; a zero
  // scale makes every allowed logit 0 while masked keys stay out.
  for (float scale : {-0.125f, 0.f}) {
    INFO("scale " << scale);
    Options opt;
    opt.scale = scale;
    check<bfloat16>(make_attention(Softmax{}, Causal{}), Shape{1, 2, 1, 130, 200, 128, 128, false, {}}, opt);
    check<attnkit::half>(make_attention(Softmax{}, SlidingWindow{50, 0}), Shape{1, 2, 1, 100, 100, 64, 64, true, {}}, opt);
  }
}

TEST_CASE("cuda: bad input is rejected before the launch", "[cuda]") {
  const auto attn = make_attention(Softmax{}, Causal{});
  Tensor<bfloat16, ManagedAllocator<bfloat16>> q(Shape{}, 2, 16, 64), k(Shape{}, 1, 16, 64), v(Shape{}, 1, 16, 64),
      o(Shape{}, 2, 16, 64);
  std::vector<bfloat16> host_q(q.data.size());
  const auto message = [&](auto&& f) {
    try {
      f();
    } catch (const invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  CHECK_THAT(message([&] { cuda::run(attn, bhsd<const bfloat16>(host_q.data(), 1, 2, 16, 64), k.cview(), v.cview(), o.view); }),
             Catch::Contains("'q'") && Catch::Contains("device"));
  Tensor<bfloat16, ManagedAllocator<bfloat16>> q160(Shape{}, 2, 16, 160), k160(Shape{}, 1, 16, 160);
  CHECK_THAT(message([&] { cuda::run(attn, q160.cview(), k160.cview(), v.cview(), o.view); }),
             Catch::Contains("q.shape") && Catch::Contains("128"));
  CHECK_THAT(message([&] { cuda::run(attn, q.cview(), q.cview(), v.cview(), o.view); }), Catch::Contains("v.shape"));
  std::vector<float, ManagedAllocator<float>> lse(32);
  Options opt;
  opt.lse = rows_bhs(lse.data(), 1, 2, 16);
  CHECK_THAT(message([&] { cuda::run(make_attention(Sigmoid{}, Causal{}), q.cview(), k.cview(), v.cview(), o.view, opt); }),
             Catch::Contains("lse"));
  CHECK_THAT(message([&] { cuda::run(make_attention(Softmax{}, SlidingWindow{-1, 0}), q.cview(), k.cview(), v.cview(), o.view); }),
             Catch::Contains("mask"));
}

TEST_CASE("cuda: chunked linear attention agrees with the quadratic form and the reference", "[cuda][linear]") {
  // Causal is chunked; Causal & Full is the same mask through the quadratic kernel.
  for (const Shape& s : {Shape{1, 2, 1, 200, 200, 64, 33, false, {}}, Shape{2, 4, 2, 130, 300, 128, 128, true, {}},
                         Shape{1, 2, 2, 90, 60, 32, 16, false, {}}, Shape{1, 1, 1, 70, 50, 16, 24, false, index_t(-20)},
                         Shape{1, 2, 1, 1, 257, 128, 64, true, {}}, Shape{1, 2, 1, 4100, 4100, 128, 128, false, {}}}) {
    // (the last: 65 chunks, a state summed over thousands of keys, as half and bfloat16)
    check<bfloat16>(make_attention(Linear<EluPlusOne>{}, Causal{}), s);
    check<bfloat16>(make_attention(Linear<EluPlusOne>{}, Full{}), s);
    check<attnkit::half>(make_attention(Linear<Relu>{{}, false}, Causal{}), s);
    Tensor<bfloat16, ManagedAllocator<bfloat16>> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
    Tensor<float, ManagedAllocator<float>> chunked(s, s.Hq, s.Nq, s.Dv), quadratic(s, s.Hq, s.Nq, s.Dv);
    fill_normal(q), fill_normal(k), fill_normal(v);
    Options opt;
    opt.q_offset = s.q_offset;
    cuda::run(make_attention(Linear<EluPlusOne>{}, Causal{}), q.cview(), k.cview(), v.cview(), chunked.view, opt);
    cuda::run(make_attention(Linear<EluPlusOne>{}, Causal{} & Full{}), q.cview(), k.cview(), v.cview(), quadratic.view, opt);
    cuda::check(cudaDeviceSynchronize(), "sync");
    INFO(s.str());
    REQUIRE(rel_error(chunked.floats(), quadratic.floats()) < 1e-2);
  }
}
