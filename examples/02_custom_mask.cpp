// 02: write your own mask policy -- a document (segment) mask for packed sequences.
//
// Several documents are packed into one sequence; a token may attend only to earlier tokens
// of its own document. A mask is a trivially copyable struct (it holds pointers, not
// containers) that answers at two levels:
//   allowed(pos, j)  per element: may the query at position `pos` see key j?
//   classify(tile)   per tile of queries x keys: skip / full / partial (optional; default
//                    partial). Skipped tiles cost nothing, full tiles skip the per-element
//                    test, so a good classify() is what makes a sparse mask fast.
//   key_bounds(...)  the key range a query range can touch at all (optional).
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using attnkit::index_t;
using attnkit::KeyBounds;
using attnkit::TileKind;
using attnkit::TileRect;

// Causal attention within documents. doc[t] is the document id of token t (non-decreasing,
// documents are contiguous); start[t] is the first token of t's document.
struct DocumentMask {
  static constexpr const char* name = "document";
  const int* doc = nullptr;
  const index_t* start = nullptr;

  bool allowed(index_t pos, index_t j) const { return j <= pos && doc[j] == doc[pos]; }

  TileKind classify(const TileRect& r) const {
    const index_t q_last = r.q_hi - 1, k_last = r.k_hi - 1;
    if (r.k_lo > q_last) return TileKind::skip;                                         // all keys in the future
    if (doc[k_last] < doc[r.q_lo] || doc[r.k_lo] > doc[q_last]) return TileKind::skip;  // other documents
    const bool one_doc = doc[r.k_lo] == doc[q_last] && doc[r.q_lo] == doc[q_last];
    if (one_doc && k_last <= r.q_lo) return TileKind::full;  // same document, all in the past
    return TileKind::partial;
  }

  KeyBounds key_bounds(index_t q_lo, index_t q_hi, index_t nk) const { return {start[q_lo], q_hi < nk ? q_hi : nk}; }

  // Optional: checked before any work; throw attnkit::invalid_argument naming the argument.
  void validate(const attnkit::ProblemInfo& p) const {
    attnkit::require(doc != nullptr && start != nullptr, "mask.doc", "null segment arrays");
    attnkit::require(p.q_offset >= 0 && p.q_offset + p.Nq <= p.Nk, "q_offset",
                     "queries must be tokens of the sequence");
  }
};

namespace {

double rel_err(const std::vector<float>& x, const std::vector<float>& ref) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) e += double(x[i] - ref[i]) * (x[i] - ref[i]), s += double(ref[i]) * ref[i];
  return std::sqrt(e / s);
}

}  // namespace

int main() {
  using namespace attnkit;
  const index_t H = 4, N = 2000, D = 64;

  // Five documents of uneven length packed into one sequence of 2000 tokens.
  const index_t lengths[] = {300, 700, 150, 600, 250};
  std::vector<int> doc;
  std::vector<index_t> start;
  for (int d = 0; d < 5; ++d) {
    const index_t first = index_t(doc.size());
    for (index_t t = 0; t < lengths[d]; ++t) doc.push_back(d), start.push_back(first);
  }

  std::mt19937 gen(2);
  std::normal_distribution<float> normal;
  std::vector<float> q(H * N * D), k(H * N * D), v(H * N * D), o(H * N * D), ref(H * N * D);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(gen);
  const auto Q = bhsd<const float>(q.data(), 1, H, N, D), K = bhsd<const float>(k.data(), 1, H, N, D),
             V = bhsd<const float>(v.data(), 1, H, N, D);

  // A user mask composes like a built-in one, with any score function.
  const auto attn = make_attention(Softmax{}, DocumentMask{doc.data(), start.data()});
  const cpu::TileCounters tiles = cpu::run(attn, Q, K, V, bhsd(o.data(), 1, H, N, D));
  reference::attention<double>(attn, Q, K, V, bhsd(ref.data(), 1, H, N, D));

  const double err = rel_err(o, ref);
  std::printf("document mask, 5 documents in N=%lld, H=%lld, D=%lld\n", (long long)N, (long long)H, (long long)D);
  std::printf("  key tiles: %lld full, %lld partial, %lld skipped\n", (long long)tiles.full, (long long)tiles.partial,
              (long long)tiles.skipped);
  std::printf("  relative error vs the fp64 reference: %.2e\n", err);

  // Combinators work on user masks too: the same documents, but a window of 64 inside them.
  const auto windowed = make_attention(Softmax{}, DocumentMask{doc.data(), start.data()} & SlidingWindow{64, 0, 0});
  cpu::run(windowed, Q, K, V, bhsd(o.data(), 1, H, N, D));
  reference::attention<double>(windowed, Q, K, V, bhsd(ref.data(), 1, H, N, D));
  const double err2 = rel_err(o, ref);
  std::printf("  document AND window(64): relative error %.2e\n", err2);
  return err < 1e-5 && err2 < 1e-5 ? 0 : 1;
}
