// 06: a toy multi-head model decoding with a growing paged KV cache.
//
// One attention layer (random projections, GQA: 8 query heads over 2 kv heads) serves a batch
// of two sequences. Their prompts are prefilled into a bf16 paged cache -- pages of 16 tokens
// handed out on demand from a shuffled free list, so block tables are not contiguous and the
// two sequences' pages interleave -- then each decoding step appends one token's K/V per
// sequence and runs attention for the new queries with cpu::run_paged (the decode kernel;
// the prefill takes the tile loop). Every step is checked against the dense fp64 reference on
// the K/V gathered back out of the pages; the program exits non-zero on a mismatch.
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

namespace {

using namespace attnkit;

constexpr index_t Model = 128, Hq = 8, Hkv = 2, D = 32, Vocab = 50, PageSize = 16, Pages = 64;

struct Layer {
  std::vector<float> embed, wq, wk, wv, wo;  // [Vocab, Model], [Model, Hq*D], [Model, Hkv*D] x 2, [Hq*D, Model]
  explicit Layer(std::mt19937& gen) {
    std::normal_distribution<float> n;
    auto init = [&](std::vector<float>& w, index_t rows, index_t cols) {
      w.resize(std::size_t(rows * cols));
      for (float& x : w) x = n(gen) / std::sqrt(float(rows));
    };
    init(embed, Vocab, Model), init(wq, Model, Hq * D), init(wk, Model, Hkv * D), init(wv, Model, Hkv * D);
    init(wo, Hq * D, Model);
    for (float& x : embed) x *= std::sqrt(float(Vocab));  // unit-scale embeddings
  }
  // y[cols] = x[rows] W
  static void matvec(const float* x, const std::vector<float>& w, index_t rows, index_t cols, float* y) {
    std::fill(y, y + cols, 0.f);
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) y[c] += x[r] * w[std::size_t(r * cols + c)];
  }
};

// A paged bf16 cache shared by the batch: NHD pools, one block-table row per sequence.
struct PagedCache {
  std::vector<bfloat16> k = std::vector<bfloat16>(std::size_t(Pages * PageSize * Hkv * D));
  std::vector<bfloat16> v = k;
  std::vector<std::int32_t> free_pages, table, lens;
  index_t batch;
  explicit PagedCache(index_t b, std::mt19937& gen) : table(std::size_t(b * Pages), -1), lens(std::size_t(b), 0), batch(b) {
    for (std::int32_t p = 0; p < Pages; ++p) free_pages.push_back(p);
    std::shuffle(free_pages.begin(), free_pages.end(), gen);
  }
  PagePool<bfloat16> kpool() { return pool_nhd(k.data(), PageSize, Hkv, D); }
  PagePool<bfloat16> vpool() { return pool_nhd(v.data(), PageSize, Hkv, D); }
  // Appends one token's K/V ([Hkv * D] floats each) to sequence b, taking a page when needed.
  void append(index_t b, const float* kt, const float* vt) {
    const index_t j = lens[b];
    if (j % PageSize == 0) {
      if (free_pages.empty()) throw std::runtime_error("out of cache pages");
      table[std::size_t(b * Pages + j / PageSize)] = free_pages.back();
      free_pages.pop_back();
    }
    const index_t page = table[std::size_t(b * Pages + j / PageSize)];
    for (index_t h = 0; h < Hkv; ++h)
      for (index_t d = 0; d < D; ++d) {
        kpool().at(page, j % PageSize, h)[d] = bfloat16(kt[h * D + d]);
        vpool().at(page, j % PageSize, h)[d] = bfloat16(vt[h * D + d]);
      }
    ++lens[b];
  }
  PagedKV<const bfloat16> view() {
    return PagedKV<bfloat16>{kpool(), vpool(), table.data(), lens.data(), batch, Hkv, D, D, PageSize, Pages, Pages, 0};
  }
  // Sequence b's keys and values gathered into dense [1, Hkv, len, D] buffers (for the check).
  void gather(index_t b, std::vector<bfloat16>& kd, std::vector<bfloat16>& vd) {
    const index_t n = lens[b];
    kd.resize(std::size_t(Hkv * n * D)), vd.resize(kd.size());
    for (index_t h = 0; h < Hkv; ++h)
      for (index_t j = 0; j < n; ++j) {
        const index_t page = table[std::size_t(b * Pages + j / PageSize)];
        std::copy_n(kpool().at(page, j % PageSize, h), D, kd.data() + (h * n + j) * D);
        std::copy_n(vpool().at(page, j % PageSize, h), D, vd.data() + (h * n + j) * D);
      }
  }
};

}  // namespace

int main() {
  std::mt19937 gen(11);
  const Layer layer(gen);
  const std::vector<std::vector<int>> prompts{{3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32, 38, 46, 26, 43, 38, 32, 7, 9, 5},
                                              {2, 7, 18, 28, 18, 28, 45, 9, 0, 45, 23, 5, 36, 2, 8, 7, 4, 7, 13, 5, 2, 6, 6,
                                               24, 9, 7, 7, 5, 7, 2, 4, 7, 0, 9, 3, 6, 9, 9}};
  const index_t B = index_t(prompts.size());
  PagedCache cache(B, gen);
  const auto attn = make_attention(Softmax{}, Causal{});
  std::vector<int> last(static_cast<std::size_t>(B));
  float worst = 0.f;

  // One forward step: new tokens per sequence (the prompt, then one at a time) -> K/V appended
  // to the cache, attention of their queries over everything cached, next token per sequence.
  auto step = [&](const std::vector<std::vector<int>>& tokens, const char* what) {
    std::vector<std::int32_t> qoff{0};
    for (const auto& t : tokens) qoff.push_back(qoff.back() + std::int32_t(t.size()));
    const index_t total = qoff.back();
    std::vector<float> q(std::size_t(Hq * total * D)), o(q.size()), x(Model), qt(Hq * D), kt(Hkv * D), vt(Hkv * D);
    for (index_t b = 0; b < B; ++b)
      for (std::size_t t = 0; t < tokens[b].size(); ++t) {
        const float* e = layer.embed.data() + tokens[b][t] * Model;
        Layer::matvec(e, layer.wq, Model, Hq * D, qt.data());
        Layer::matvec(e, layer.wk, Model, Hkv * D, kt.data());
        Layer::matvec(e, layer.wv, Model, Hkv * D, vt.data());
        for (index_t h = 0; h < Hq; ++h)  // q is [1, Hq, total, D]
          std::copy_n(qt.data() + h * D, D, q.data() + (h * total + qoff[b] + index_t(t)) * D);
        cache.append(b, kt.data(), vt.data());
      }
    const auto Q = bhsd<const float>(q.data(), 1, Hq, total, D);
    cpu::run_paged(attn, Q, RaggedRows{qoff.data(), B, 0}, cache.view(), bhsd(o.data(), 1, Hq, total, D));

    for (index_t b = 0; b < B; ++b) {
      // The reference on this sequence's K/V gathered out of the pages.
      const index_t nq = qoff[b + 1] - qoff[b], nk = cache.lens[b];
      std::vector<bfloat16> kd, vd;
      cache.gather(b, kd, vd);
      std::vector<float> ref(std::size_t(Hq * nq * D));
      reference::attention<double>(attn, cpu::row_slice(Q, qoff[b], nq), bhsd<const bfloat16>(kd.data(), 1, Hkv, nk, D),
                                   bhsd<const bfloat16>(vd.data(), 1, Hkv, nk, D), bhsd(ref.data(), 1, Hq, nq, D));
      double err = 0, norm = 0;
      for (index_t h = 0; h < Hq; ++h)
        for (index_t i = 0; i < nq; ++i)
          for (index_t d = 0; d < D; ++d) {
            const double a = o[std::size_t((h * total + qoff[b] + i) * D + d)], r = ref[std::size_t((h * nq + i) * D + d)];
            err += (a - r) * (a - r), norm += r * r;
          }
      const float rel = float(std::sqrt(err / norm));
      worst = std::max(worst, rel);
      // Next token: the last query's heads -> output projection -> nearest embedding.
      std::vector<float> heads(Hq * D);
      for (index_t h = 0; h < Hq; ++h)
        std::copy_n(o.data() + (h * total + qoff[b + 1] - 1) * D, D, heads.data() + h * D);
      Layer::matvec(heads.data(), layer.wo, Hq * D, Model, x.data());
      int best = 0;
      float best_score = -1e30f;
      for (int t = 0; t < Vocab; ++t) {
        float s = 0;
        for (index_t c = 0; c < Model; ++c) s += x[c] * layer.embed[std::size_t(t * Model + c)];
        if (s > best_score) best_score = s, best = t;
      }
      last[b] = best;
      std::printf("  %-8s seq %lld: %3lld queries over %3lld cached tokens (%lld pages), next token %2d, rel error %.1e\n",
                  what, (long long)b, (long long)nq, (long long)nk, (long long)((nk + PageSize - 1) / PageSize), best, rel);
    }
  };

  std::printf("toy model: %lld query heads over %lld kv heads, D=%lld, bf16 paged cache (%lld-token pages)\n",
              (long long)Hq, (long long)Hkv, (long long)D, (long long)PageSize);
  step(prompts, "prefill");
  for (int s = 0; s < 12; ++s) {
    std::vector<std::vector<int>> next;
    for (index_t b = 0; b < B; ++b) next.push_back({last[b]});
    step(next, "decode");
  }
  std::printf("worst relative error vs the fp64 reference: %.2e; block table of seq 0:", worst);
  for (index_t p = 0; p * PageSize < cache.lens[0]; ++p) std::printf(" %d", cache.table[std::size_t(p)]);
  std::printf("\n");
  return worst < 1e-5f ? 0 : 1;
}
