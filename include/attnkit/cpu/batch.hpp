#pragma once
// A batch of sequences as one parallel pass: sequences with few query rows per kv head go
// to the decode kernel (decode.hpp), the others to a tile plan each (plan.hpp); their work
// items are concatenated, so a mixed batch (chunked prefill next to decoding) keeps every
// thread busy. The same work-range API as Plan: prepare / execute over item ranges.
#include <algorithm>
#include <atomic>
#include <memory>
#include <type_traits>
#include <vector>

#include "decode.hpp"
#include "plan.hpp"
#include "sequence.hpp"

namespace attnkit::cpu {

namespace detail {
// Stand-in decode plan for variants the decode kernel does not take (no items).
struct NoDecode {
  struct Worker {
    TileCounters counters;
  };
  index_t work_items() const { return 0; }
  void execute(index_t, index_t, Worker&) {}
  TileCounters counters() const { return {}; }
  void add_counters(const Worker&) {}
};
}  // namespace detail

// True if a sequence with nq queries and the given GQA group takes the decode kernel.
template <class Variant>
bool takes_decode(index_t nq, index_t group) {
  if constexpr (decode_capable<Variant>()) return nq > 0 && group > 0 && nq * group <= decode_max_rows;
  else return false;
}

template <class Variant, class TQ, class TK, class TV, class TO>
class BatchPlan {
  using TilePlan = Plan<Variant, TQ, TK, TV, TO>;
  using Decode = std::conditional_t<decode_capable<Variant>(), DecodePlan<Variant, TQ, TK, TV, TO>, detail::NoDecode>;

 public:
  using Seq = SeqView<TQ, TK, TV, TO>;
  struct Worker {
    typename TilePlan::Worker tile;
    typename Decode::Worker decode;
  };

  // opt: scale, q_offset, keys and threads apply to every sequence (lse comes with each).
  BatchPlan(const Variant& attn, const std::vector<Seq>& seqs, const Options& opt) {
    std::vector<Seq> few;
    for (const Seq& s : seqs) {
      const index_t nq = s.q.shape[2], hkv = s.k.shape[1];
      if (nq == 0) continue;  // nothing to write
      if (takes_decode<Variant>(nq, hkv > 0 && s.q.shape[1] % hkv == 0 ? s.q.shape[1] / hkv : 0)) {
        few.push_back(s);
        continue;
      }
      Options o = opt;
      o.lse = s.lse;
      tiles_.push_back(std::make_unique<TilePlan>(attn, s.q, s.k, s.v, s.o, o, s.partial.o.data ? &s.partial : nullptr, s.slot));
    }
    if constexpr (decode_capable<Variant>())
      if (!few.empty()) decode_ = std::make_unique<Decode>(attn, std::move(few), opt);
    decode_items_ = decode_ ? decode_->work_items() : 0;
    index_t prep = 0, work = decode_items_;
    for (const auto& t : tiles_) {
      prep_first_.push_back(prep), work_first_.push_back(work);
      prep += t->prepare_items(), work += t->work_items();
    }
    prepare_items_ = prep, work_items_ = work;
  }

  index_t prepare_items() const { return prepare_items_; }
  void prepare(index_t begin, index_t end) {
    for_ranges(prep_first_, prepare_items_, begin, end, [](TilePlan& t, index_t b, index_t e) { t.prepare(b, e); });
  }

  index_t work_items() const { return work_items_; }
  void execute(index_t begin, index_t end, Worker& w) {
    if (begin < decode_items_) decode_->execute(begin, std::min(end, decode_items_), w.decode);
    for_ranges(work_first_, work_items_, std::max(begin, decode_items_), end,
               [&](TilePlan& t, index_t b, index_t e) { t.execute(b, e, w.tile); });
  }

  TileCounters counters() const {
    TileCounters c = decode_ ? decode_->counters() : TileCounters{};
    return {c.full + full_.load(), c.partial + partial_.load(), c.skipped + skipped_.load()};
  }
  void add_counters(Worker& w) {
    if (decode_) decode_->add_counters(w.decode);
    full_ += w.tile.counters.full, partial_ += w.tile.counters.partial, skipped_ += w.tile.counters.skipped;
    w.tile.counters = {}, w.decode.counters = {};
  }

 private:
  // Splits the global item range [begin, end) over the tile plans whose items start at
  // first[t] (the last one's end at total).
  template <class F>
  void for_ranges(const std::vector<index_t>& first, index_t total, index_t begin, index_t end, F&& f) {
    if (begin >= end || tiles_.empty()) return;
    std::size_t t = std::size_t(std::upper_bound(first.begin(), first.end(), begin) - first.begin());
    for (t = t ? t - 1 : 0; t < tiles_.size() && begin < end; ++t) {
      const index_t lo = first[t], hi = t + 1 < first.size() ? first[t + 1] : total;
      const index_t b = std::max(begin, lo), e = std::min(end, hi);
      if (b < e) f(*tiles_[t], b - lo, e - lo);
      begin = std::max(begin, e);
    }
  }

  std::unique_ptr<Decode> decode_;
  std::vector<std::unique_ptr<TilePlan>> tiles_;
  std::vector<index_t> prep_first_, work_first_;
  index_t decode_items_ = 0, prepare_items_ = 0, work_items_ = 0;
  std::atomic<index_t> full_{0}, partial_{0}, skipped_{0};
};

}  // namespace attnkit::cpu
