#pragma once
// Helpers of the inference tests: a packed (ragged) batch with its per-sequence reference
// check, the same batch scattered into a paged cache, and the standard batches.
#include <algorithm>
#include <numeric>

#include "support.hpp"

namespace attnkit::test {

// Runs every score function on f(score).
template <class F>
void for_each_score(F&& f) {
  f(Softmax{});
  f(Sigmoid{});
  f(Softplus{});
  f(Softplus{2.f, LengthScale::log_n});  // length-scaled: needs each row's allowed-key count
  f(Linear<EluPlusOne>{});
}

// A packed batch: sequence b has nq[b] queries against nk[b] keys; [1, H, total, D] views.
template <class T>
struct Packed {
  index_t Hq, Hkv, D, Dv;
  std::vector<std::int32_t> qoff{0}, koff{0};
  std::vector<T> q, k, v;
  std::vector<float> o, lse;
  Packed(const std::vector<std::pair<index_t, index_t>>& seqs, index_t hq, index_t hkv, index_t d, index_t dv)
      : Hq(hq), Hkv(hkv), D(d), Dv(dv) {
    for (const auto& [nq, nk] : seqs) qoff.push_back(qoff.back() + std::int32_t(nq)), koff.push_back(koff.back() + std::int32_t(nk));
    q.resize(std::size_t(Hq * tq() * D)), k.resize(std::size_t(Hkv * tk() * D)), v.resize(std::size_t(Hkv * tk() * Dv));
    std::normal_distribution<float> n;
    for (auto* x : {&q, &k, &v})
      for (auto& e : *x) e = from_float<T>(n(rng()));
    o.assign(std::size_t(Hq * tq() * Dv), std::nanf(""));  // poison: every row must be written
    lse.assign(std::size_t(Hq * tq()), std::nanf(""));
  }
  index_t batch() const { return index_t(qoff.size()) - 1; }
  index_t tq() const { return qoff.back(); }
  index_t tk() const { return koff.back(); }
  TensorView<const T> qv() const { return bhsd(q.data(), 1, Hq, tq(), D); }
  TensorView<const T> kv() const { return bhsd(k.data(), 1, Hkv, tk(), D); }
  TensorView<const T> vv() const { return bhsd(v.data(), 1, Hkv, tk(), Dv); }
  TensorView<float> ov() { return bhsd(o.data(), 1, Hq, tq(), Dv); }
  RaggedRows q_rows() const { return {qoff.data(), batch(), 0}; }
  RaggedRows k_rows() const { return {koff.data(), batch(), 0}; }

  // Each sequence against the reference on its slices of the packed K/V.
  template <class Variant>
  void check(const Variant& attn, bool with_lse) const {
    std::vector<float> ref(o.size()), ref_lse(lse.size(), neg_inf);
    for (index_t b = 0; b < batch(); ++b) {
      const index_t q0 = qoff[b], nq = qoff[b + 1] - q0, k0 = koff[b], nk = koff[b + 1] - k0;
      Options opt;
      if (with_lse) opt.lse = cpu::row_slice(rows_bhs(ref_lse.data(), 1, Hq, tq()), q0, nq);
      reference::attention<double>(attn, cpu::row_slice(qv(), q0, nq), cpu::row_slice(kv(), k0, nk),
                                   cpu::row_slice(vv(), k0, nk), cpu::row_slice(bhsd(ref.data(), 1, Hq, tq(), Dv), q0, nq), opt);
    }
    INFO("seed " << process_seed() << " dtype " << dtype_name<T> << " rel error " << rel_error(o, ref));
    REQUIRE(all_finite(o));
    REQUIRE(rel_error(o, ref) < tolerance<T>());
    if (with_lse) check_lse(lse, ref_lse);
  }
};

using Seqs = std::vector<std::pair<index_t, index_t>>;

template <class T, class Variant>
void check_ragged(const Variant& attn, const Seqs& seqs, index_t Hq, index_t Hkv, index_t D, index_t Dv, int threads) {
  Packed<T> p(seqs, Hq, Hkv, D, Dv);
  constexpr bool lse = score_has_lse<typename Variant::score_type>();
  Options opt;
  opt.threads = threads;
  if (lse) opt.lse = rows_bhs(p.lse.data(), 1, Hq, p.tq());
  cpu::run_ragged(attn, p.qv(), p.kv(), p.vv(), p.ov(), p.q_rows(), p.k_rows(), opt);
  p.check(attn, lse);
}

// The same batch through a paged cache: pages of page_size tokens handed out in shuffled
// order (non-contiguous block tables), pool in NHD or HND layout, spare pages left unused.
template <class T, class Variant>
void check_paged(const Variant& attn, const Seqs& seqs, index_t Hq, index_t Hkv, index_t D, index_t page_size,
                 bool hnd, int threads) {
  Packed<T> p(seqs, Hq, Hkv, D, D);
  const index_t B = p.batch();
  index_t max_pages = 0, pages = 3;
  std::vector<std::int32_t> lens;
  for (index_t b = 0; b < B; ++b) {
    lens.push_back(p.koff[b + 1] - p.koff[b]);
    max_pages = std::max(max_pages, (lens.back() + page_size - 1) / page_size);
    pages += (lens.back() + page_size - 1) / page_size;
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(pages));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng());
  const index_t stride = max_pages + 1;  // a longer row than needed: entries past the length are never read
  std::vector<std::int32_t> table(std::size_t(B * stride), -1);
  std::vector<T> kpool(std::size_t(pages * page_size * Hkv * D)), vpool(kpool.size());
  PagePool<T> kp = hnd ? pool_hnd(kpool.data(), page_size, Hkv, D) : pool_nhd(kpool.data(), page_size, Hkv, D);
  PagePool<T> vp = hnd ? pool_hnd(vpool.data(), page_size, Hkv, D) : pool_nhd(vpool.data(), page_size, Hkv, D);
  std::size_t next = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t j = 0; j < lens[b]; ++j) {
      if (j % page_size == 0) table[b * stride + j / page_size] = ids[next++];
      const index_t page = table[b * stride + j / page_size];
      for (index_t h = 0; h < Hkv; ++h) {
        std::copy_n(p.kv().row(0, h, p.koff[b] + j), D, kp.at(page, j % page_size, h));
        std::copy_n(p.vv().row(0, h, p.koff[b] + j), D, vp.at(page, j % page_size, h));
      }
    }
  PagedKV<T> cache{kp, vp, table.data(), lens.data(), B, Hkv, D, D, page_size, pages, stride, 0};
  constexpr bool lse = score_has_lse<typename Variant::score_type>();
  Options opt;
  opt.threads = threads;
  if (lse) opt.lse = rows_bhs(p.lse.data(), 1, Hq, p.tq());
  cpu::run_paged(attn, p.qv(), p.q_rows(), cache, p.ov(), opt);
  p.check(attn, lse);
}

const Seqs decode_batch{{1, 1}, {1, 700}, {0, 50}, {1, 0}, {1, 63}, {1, 1500}};
const Seqs spec_batch{{3, 200}, {2, 2}, {3, 1001}};  // a few queries each (speculative decoding)
const Seqs prefill_batch{{40, 40}, {100, 130}, {17, 200}, {0, 9}, {5, 0}};
const Seqs mixed_batch{{1, 900}, {64, 64}, {1, 17}, {70, 300}};  // chunked prefill next to decoding

}  // namespace attnkit::test
