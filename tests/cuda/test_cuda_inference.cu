// CUDA backend, inference-engine paths: split-KV decoding on dense batches, ragged batches,
// paged KV caches (prefill and decode), partial states with merge_states / finalize_state;
// all against the fp64 reference on fresh random inputs.
#include <algorithm>
#include <numeric>

#include "support_cuda.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {

template <class T>
using MVec = std::vector<T, ManagedAllocator<T>>;

void device_sync() { cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

template <class T, class Variant>
void check_dense(const Variant& attn, const Shape& s, Options opt = {}) {
  check_variant_on<T>(CudaBackend{}, attn, s, opt, {}, 1e-2);
}

// Sequences of a ragged or paged batch: query and key counts.
struct Seqs {
  std::vector<index_t> nq, nk;
  index_t B() const { return index_t(nq.size()); }
};

MVec<std::int32_t> offsets_of(const std::vector<index_t>& n) {
  MVec<std::int32_t> off(n.size() + 1, 0);
  for (std::size_t b = 0; b < n.size(); ++b) off[b + 1] = off[b] + std::int32_t(n[b]);
  return off;
}

template <class T>
void fill(MVec<T>& x, float stddev = 1.f) {
  std::normal_distribution<float> n(0.f, stddev);
  for (auto& e : x) e = from_float<T>(n(rng()));
}

// Reference of sequence b: rows of the packed outputs [total_q, Hq, Dv] (bshd, batch 1).
template <class Variant, class T>
void reference_rows(const Variant& attn, const T* q, const T* k, const T* v, index_t nq, index_t nk, index_t Hq,
                    index_t Hkv, index_t D, index_t Dv, float* out, float* lse, std::optional<index_t> q_offset) {
  const auto qv = bshd<const T>(q, 1, nq, Hq, D);
  const auto kv = bshd<const T>(k, 1, nk, Hkv, D);
  const auto vv = bshd<const T>(v, 1, nk, Hkv, Dv);
  const auto ov = bshd(out, 1, nq, Hq, Dv);
  Options opt;
  opt.q_offset = q_offset;
  if (lse) opt.lse = {lse, {1, Hq, nq}, {0, 1, Hq}};
  reference::attention<double>(attn, qv, kv, vv, ov, opt);
}

template <class Variant>
void compare(const Variant& attn, const std::vector<float>& out, const std::vector<float>& ref,
             const std::vector<float>& lse, const std::vector<float>& lse_ref) {
  REQUIRE(all_finite(out));
  INFO("relative error " << rel_error(out, ref));
  REQUIRE(rel_error(out, ref) < 1e-2);
  if constexpr (score_has_lse<typename Variant::score_type>()) check_lse(lse, lse_ref);
}

// Ragged batch with contiguous packed K/V: q [total_q, Hq, D], k/v [total_k, Hkv, D].
template <class T, class Variant>
void check_ragged(const Variant& attn, const Seqs& s, index_t Hq, index_t Hkv, index_t D, index_t Dv,
                  std::optional<index_t> q_offset = {}) {
  INFO("ragged Hq=" << Hq << " Hkv=" << Hkv << " D=" << D << " Dv=" << Dv << " B=" << s.B());
  const auto qoff = offsets_of(s.nq), koff = offsets_of(s.nk);
  const index_t tq = qoff.back(), tk = koff.back();
  MVec<T> q(std::size_t(tq * Hq * D)), k(std::size_t(tk * Hkv * D)), v(std::size_t(tk * Hkv * Dv));
  MVec<float> o(std::size_t(tq * Hq * Dv), std::nanf("")), lse(std::size_t(tq * Hq), std::nanf(""));
  fill(q), fill(k), fill(v);
  Options opt;
  opt.q_offset = q_offset;
  if (score_has_lse<typename Variant::score_type>()) opt.lse = {lse.data(), {1, Hq, tq}, {0, 1, Hq}};
  const RaggedRows qr{qoff.data(), s.B(), *std::max_element(s.nq.begin(), s.nq.end())};
  const RaggedRows kr{koff.data(), s.B(), *std::max_element(s.nk.begin(), s.nk.end())};
  cuda::run_ragged(attn, bshd<const T>(q.data(), 1, tq, Hq, D), bshd<const T>(k.data(), 1, tk, Hkv, D),
                   bshd<const T>(v.data(), 1, tk, Hkv, Dv), bshd(o.data(), 1, tq, Hq, Dv), qr, kr, opt);
  device_sync();
  std::vector<float> ref(o.size()), lse_ref(lse.size());
  for (index_t b = 0; b < s.B(); ++b)
    reference_rows(attn, q.data() + qoff[b] * Hq * D, k.data() + koff[b] * Hkv * D, v.data() + koff[b] * Hkv * Dv,
                   s.nq[b], s.nk[b], Hq, Hkv, D, Dv, ref.data() + qoff[b] * Hq * Dv, lse_ref.data() + qoff[b] * Hq,
                   q_offset);
  compare(attn, {o.begin(), o.end()}, ref, {lse.begin(), lse.end()}, lse_ref);
}

// Paged cache: pages handed out in a shuffled order; the reference reads the gathered K/V.
template <class T, class Variant>
void check_paged(const Variant& attn, const Seqs& s, index_t Hq, index_t Hkv, index_t D, index_t page_size, bool hnd) {
  INFO("paged page_size=" << page_size << (hnd ? " HND" : " NHD") << " Hq=" << Hq << " Hkv=" << Hkv << " D=" << D);
  const index_t Dv = D;
  const auto qoff = offsets_of(s.nq);
  const index_t tq = qoff.back();
  index_t max_len = 0, pages = 0, table_stride = 1;
  for (index_t n : s.nk) {
    max_len = std::max(max_len, n);
    pages += (n + page_size - 1) / page_size;
    table_stride = std::max(table_stride, (n + page_size - 1) / page_size);
  }
  pages += 3;  // unused pages in between
  MVec<T> kpool(std::size_t(pages * page_size * Hkv * D)), vpool(kpool.size());
  fill(kpool), fill(vpool);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(pages));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng());
  MVec<std::int32_t> table(std::size_t(s.B() * table_stride), -1), lens(std::size_t(s.B()));
  std::size_t next = 0;
  for (index_t b = 0; b < s.B(); ++b) {
    lens[b] = std::int32_t(s.nk[b]);
    for (index_t p = 0; p < (s.nk[b] + page_size - 1) / page_size; ++p) table[b * table_stride + p] = ids[next++];
  }
  PagedKV<T> kv;
  kv.k = hnd ? pool_hnd(kpool.data(), page_size, Hkv, D) : pool_nhd(kpool.data(), page_size, Hkv, D);
  kv.v = hnd ? pool_hnd(vpool.data(), page_size, Hkv, Dv) : pool_nhd(vpool.data(), page_size, Hkv, Dv);
  kv.block_table = table.data(), kv.seq_lens = lens.data();
  kv.batch = s.B(), kv.heads = Hkv, kv.dim = D, kv.dim_v = Dv, kv.page_size = page_size, kv.pages = pages;
  kv.table_stride = table_stride, kv.max_len = max_len;

  MVec<T> q(std::size_t(tq * Hq * D));
  MVec<float> o(std::size_t(tq * Hq * Dv), std::nanf("")), lse(std::size_t(tq * Hq), std::nanf(""));
  fill(q);
  Options opt;
  if (score_has_lse<typename Variant::score_type>()) opt.lse = {lse.data(), {1, Hq, tq}, {0, 1, Hq}};
  const RaggedRows qr{qoff.data(), s.B(), *std::max_element(s.nq.begin(), s.nq.end())};
  cuda::run_paged(attn, bshd<const T>(q.data(), 1, tq, Hq, D), qr, kv, bshd(o.data(), 1, tq, Hq, Dv), opt);
  device_sync();
  std::vector<float> ref(o.size()), lse_ref(lse.size());
  for (index_t b = 0; b < s.B(); ++b) {
    std::vector<T> kd(std::size_t(s.nk[b] * Hkv * D)), vd(std::size_t(s.nk[b] * Hkv * Dv));
    for (index_t j = 0; j < s.nk[b]; ++j)
      for (index_t h = 0; h < Hkv; ++h) {
        std::copy_n(kv.k_row(b, h, j), D, kd.data() + (j * Hkv + h) * D);
        std::copy_n(kv.v_row(b, h, j), Dv, vd.data() + (j * Hkv + h) * Dv);
      }
    reference_rows(attn, q.data() + qoff[b] * Hq * D, kd.data(), vd.data(), s.nq[b], s.nk[b], Hq, Hkv, D, Dv,
                   ref.data() + qoff[b] * Hq * Dv, lse_ref.data() + qoff[b] * Hq, std::nullopt);
  }
  compare(attn, {o.begin(), o.end()}, ref, {lse.begin(), lse.end()}, lse_ref);
}

}  // namespace

TEST_CASE("cuda decode: split-KV on dense batches, every score, GQA and MHA", "[cuda][decode]") {
  for (const Shape& s : {Shape{2, 8, 2, 1, 5000, 128, 128, true, {}}, Shape{1, 4, 4, 3, 1000, 64, 64, false, {}},
                         Shape{3, 16, 1, 1, 63, 128, 96, false, {}}, Shape{1, 2, 1, 1, 1, 64, 64, true, {}},
                         Shape{1, 32, 2, 2, 777, 80, 80, true, {}}}) {
    check_dense<bfloat16>(make_attention(Softmax{}, Full{}), s);
    check_dense<attnkit::half>(make_attention(Softmax{}, Causal{}), s);
    check_dense<bfloat16>(make_attention(Softmax{}, SlidingWindow{300, 0, 4}), s);
    check_dense<bfloat16>(make_attention(Sigmoid{}, Causal{}), s);
    check_dense<attnkit::half>(make_attention(Softplus{}, SlidingWindow{200, 0}), s);
    check_dense<bfloat16>(make_attention(Linear<EluPlusOne>{}, Causal{}), s);
  }
}

TEST_CASE("cuda decode: key ranges, empty key ranges and extreme logits", "[cuda][decode]") {
  const Shape s{1, 8, 2, 1, 3000, 128, 128, false, {}};
  Options opt;
  opt.keys = {700, 2100};
  check_dense<bfloat16>(make_attention(Softmax{}, Full{}), s, opt);
  check_dense<bfloat16>(make_attention(Softplus{}, Causal{}), s, opt);
  opt.keys = {1000, 1000};  // nothing attended: o = 0, lse = -inf
  check_dense<bfloat16>(make_attention(Softmax{}, Full{}), s, opt);
  // a window the queries cannot see: every row fully masked
  check_dense<bfloat16>(make_attention(Softmax{}, SlidingWindow{10, 0}), Shape{1, 4, 1, 2, 500, 64, 64, false, -50}, {});
  check_variant_on<bfloat16>(CudaBackend{}, make_attention(Softmax{}, Full{}), s, {}, Inputs{30.f}, 1e-2);
  // one sequence, long keys: more splits than the combine kernel has threads (its strided max)
  check_dense<bfloat16>(make_attention(Softmax{}, Full{}), Shape{1, 2, 1, 1, 40000, 64, 64, false, {}});
  check_dense<bfloat16>(make_attention(Sigmoid{}, Causal{}), Shape{1, 2, 1, 1, 40000, 64, 64, true, {}});
}

TEST_CASE("cuda ragged: prefill and decode batches", "[cuda][ragged]") {
  const Seqs prefill{{5, 0, 130, 1, 77}, {5, 7, 300, 1000, 77}};
  const Seqs decode{{1, 1, 1, 1}, {1, 4097, 0, 333}};
  check_ragged<bfloat16>(make_attention(Softmax{}, Causal{}), prefill, 4, 2, 128, 128);
  check_ragged<attnkit::half>(make_attention(Softmax{}, Full{}), prefill, 2, 2, 64, 48);
  check_ragged<bfloat16>(make_attention(Sigmoid{}, SlidingWindow{64, 0}), prefill, 4, 1, 64, 64);
  check_ragged<bfloat16>(make_attention(Softplus{}, Causal{}), prefill, 2, 1, 128, 128);
  check_ragged<bfloat16>(make_attention(Linear<EluPlusOne>{}, Full{}), prefill, 2, 2, 64, 64);
  check_ragged<bfloat16>(make_attention(Softmax{}, And<Causal, SlidingWindow>{{}, {100, 0}}), prefill, 4, 2, 64, 64, 50);
  // Several whole key tiles per sequence, sequences starting at rows that are no tile multiple,
  // a partial last tile each, GQA 8:1.
  const Seqs long_prefill{{300, 256, 3}, {1024, 640, 129}};
  check_ragged<bfloat16>(make_attention(Softmax{}, Causal{}), long_prefill, 8, 1, 128, 128);
  check_ragged<bfloat16>(make_attention(Softmax{}, Full{}), long_prefill, 4, 2, 64, 64);
  // Unequal lengths run from a list of the real query tiles (tile_schedule.cuh), equal ones on
  // the dense grid: one long sequence among short and empty ones, rows with no keys (a causal
  // row of a sequence with more queries than keys), 700 sequences (more than the pre-pass has
  // threads), and two of equal length.
  const Seqs skewed{{1, 700, 2, 0, 129, 40}, {1, 700, 2, 0, 129, 0}};
  check_ragged<bfloat16>(make_attention(Softmax{}, Causal{}), skewed, 4, 2, 128, 128);
  check_ragged<bfloat16>(make_attention(Sigmoid{}, SlidingWindow{64, 0}), skewed, 2, 2, 64, 64);
  Seqs many;
  for (index_t b = 0; b < 700; ++b) {
    many.nq.push_back(b == 350 ? 600 : (b * 37) % 41);
    many.nk.push_back(b == 350 ? 600 : (b * 37) % 41 + b % 3);
  }
  check_ragged<bfloat16>(make_attention(Softmax{}, Causal{}), many, 2, 1, 64, 64);
  check_ragged<bfloat16>(make_attention(Softmax{}, Causal{}), Seqs{{256, 256}, {256, 256}}, 2, 1, 128, 128);
  for (int group : {1, 8}) {
    check_ragged<bfloat16>(make_attention(Softmax{}, Causal{}), decode, 2 * group, 2, 128, 128);
    check_ragged<attnkit::half>(make_attention(Softplus{}, Full{}), decode, 2 * group, 2, 64, 64);
    check_ragged<bfloat16>(make_attention(Sigmoid{}, SlidingWindow{256, 0, 4}), decode, 2 * group, 2, 128, 128);
  }
}

TEST_CASE("cuda paged: page sizes, pool layouts, prefill and decode", "[cuda][paged]") {
  const Seqs decode{{1, 1, 1}, {2000, 1, 517}};
  const Seqs spec{{3, 2, 4}, {129, 64, 1500}};  // speculative decoding: a few queries per sequence
  const Seqs prefill{{100, 1, 200}, {100, 50, 700}};
  for (index_t page : {1, 12, 16, 64}) {  // 12: a page size that is no power of two
    for (bool hnd : {false, true}) {
      check_paged<bfloat16>(make_attention(Softmax{}, Causal{}), decode, 8, 2, 128, page, hnd);
      check_paged<bfloat16>(make_attention(Softmax{}, Full{}), spec, 8, 2, 64, page, hnd);
    }
  }
  check_paged<bfloat16>(make_attention(Softmax{}, Causal{}), prefill, 4, 2, 128, 16, false);
  // Hopper fetches whole key tiles of 8 x 2^k-slot pages by TMA, one box per page (8: 32 boxes
  // per tile), or per tile of longer pages (256), and a sequence's partial last tile by cp.async.
  const Seqs long_prefill{{300, 256}, {1024, 640}};
  for (index_t page : {8, 32, 256}) check_paged<bfloat16>(make_attention(Softmax{}, Causal{}), long_prefill, 4, 2, 128, page, page == 32);
  check_paged<bfloat16>(make_attention(Softmax{}, Full{}), long_prefill, 4, 4, 64, 32, false);
  // Unequal lengths: the list of real query tiles (tile_schedule.cuh).
  const Seqs skewed{{1, 600, 3, 130}, {1, 600, 3, 200}};
  check_paged<bfloat16>(make_attention(Softmax{}, Causal{}), skewed, 4, 2, 128, 16, false);
  check_paged<bfloat16>(make_attention(Softplus{}, Causal{}), skewed, 2, 2, 64, 8, true);
  check_paged<attnkit::half>(make_attention(Sigmoid{}, Causal{}), prefill, 2, 2, 64, 64, true);
  check_paged<bfloat16>(make_attention(Softplus{}, Full{}), decode, 4, 4, 128, 16, false);
  check_paged<bfloat16>(make_attention(Linear<EluPlusOne>{}, Causal{}), decode, 4, 1, 64, 16, true);
  check_paged<bfloat16>(make_attention(Softmax{}, SlidingWindow{500, 0, 8}), decode, 32, 8, 128, 16, false);
}

TEST_CASE("cuda partial states: run_partial, merge_states and finalize_state equal one run", "[cuda][merge]") {
  for (const Shape& s : {Shape{2, 4, 2, 1, 2000, 128, 128, false, {}}, Shape{1, 4, 2, 300, 500, 64, 64, true, {}}}) {
    INFO(s.str());
    Tensor<bfloat16, ManagedAllocator<bfloat16>> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
    fill_normal(q), fill_normal(k), fill_normal(v);
    const auto attn = make_attention(Softmax{}, Causal{});
    using FT = Tensor<float, ManagedAllocator<float>>;
    FT o1(s, s.Hq, s.Nq, s.Dv), o2(s, s.Hq, s.Nq, s.Dv), out(s, s.Hq, s.Nq, s.Dv);
    Tensor<float> ref(s, s.Hq, s.Nq, s.Dv);
    MVec<float> m1(std::size_t(s.B * s.Hq * s.Nq)), l1(m1.size()), m2(m1.size()), l2(m1.size()), lse(m1.size());
    std::vector<float> lse_ref(m1.size());
    const PartialState p1{o1.view, rows_bhs(m1.data(), s.B, s.Hq, s.Nq), rows_bhs(l1.data(), s.B, s.Hq, s.Nq)};
    const PartialState p2{o2.view, rows_bhs(m2.data(), s.B, s.Hq, s.Nq), rows_bhs(l2.data(), s.B, s.Hq, s.Nq)};
    Options a, b;
    a.keys = {0, s.Nk / 3}, b.keys = {s.Nk / 3, s.Nk};
    cuda::run_partial(attn, q.cview(), k.cview(), v.cview(), p1, a);
    cuda::run_partial(attn, q.cview(), k.cview(), v.cview(), p2, b);
    cuda::merge_states(attn.score, p1, p2);
    cuda::finalize_state(attn.score, p1, out.view, rows_bhs(lse.data(), s.B, s.Hq, s.Nq));
    device_sync();
    Options ro;
    ro.lse = rows_bhs(lse_ref.data(), s.B, s.Hq, s.Nq);
    reference::attention<double>(attn, q.cview(), k.cview(), v.cview(), ref.view, ro);
    REQUIRE(rel_error(out.floats(), ref.floats()) < 1e-2);
    check_lse({lse.begin(), lse.end()}, lse_ref);
  }
}

TEST_CASE("cuda ragged/paged: validation", "[cuda][validation]") {
  MVec<bfloat16> q(64 * 2 * 64), k(64 * 2 * 64);
  MVec<float> o(64 * 2 * 64);
  MVec<std::int32_t> off{0, 10, 64};
  const auto attn = make_attention(Softmax{}, Causal{});
  const auto Q = bshd<const bfloat16>(q.data(), 1, 64, 2, 64);
  const auto O = bshd(o.data(), 1, 64, 2, 64);
  const RaggedRows rows{off.data(), 2, 54};
  // a batch-2 view is not a packed batch
  REQUIRE_THROWS_WITH(cuda::run_ragged(attn, bshd<const bfloat16>(q.data(), 2, 32, 2, 64), bshd<const bfloat16>(k.data(), 2, 32, 2, 64),
                                       bshd<const bfloat16>(k.data(), 2, 32, 2, 64), bshd(o.data(), 2, 32, 2, 64), rows, rows),
                      Catch::Contains("batch-1 view"));
  REQUIRE_THROWS_WITH(cuda::run_ragged(attn, Q, Q, Q, O, rows, RaggedRows{off.data(), 1, 54}), Catch::Contains("k_rows"));
  std::vector<std::int32_t> host_off{0, 10, 64};
  REQUIRE_THROWS_WITH(cuda::run_ragged(attn, Q, Q, Q, O, RaggedRows{host_off.data(), 2, 54}, rows), Catch::Contains("q_rows"));
  PagedKV<bfloat16> kv;
  kv.k = kv.v = pool_nhd(k.data(), 16, 2, 64);
  MVec<std::int32_t> table(8, 0), lens{10, 20};
  kv.block_table = table.data(), kv.seq_lens = lens.data();
  kv.batch = 2, kv.heads = 2, kv.dim = kv.dim_v = 64, kv.page_size = 16, kv.pages = 8, kv.table_stride = 4;
  kv.max_len = 100;  // more than 4 pages of 16
  REQUIRE_THROWS_WITH(cuda::run_paged(attn, Q, rows, kv, O), Catch::Contains("kv.max_len"));
  kv.max_len = 20;
  kv.batch = 3;
  REQUIRE_THROWS_WITH(cuda::run_paged(attn, Q, rows, kv, O), Catch::Contains("kv.batch"));
  kv.batch = 2;
  // the kernels address pages with 32-bit strides
  kv.v.stride[0] = index_t(1) << 31;
  REQUIRE_THROWS_WITH(cuda::run_paged(attn, Q, rows, kv, O), Catch::Contains("pool strides"));
  kv.v.stride[0] = -kv.k.stride[0];
  REQUIRE_THROWS_WITH(cuda::run_paged(attn, Q, rows, kv, O), Catch::Contains("pool strides"));
  kv.v = kv.k;
  cuda::run_paged(attn, Q, rows, kv, O);  // valid
  device_sync();
}
