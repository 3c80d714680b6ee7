#pragma once
// Call options and the resolved problem description every backend and policy sees.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <optional>
#include <string>

#include "config.hpp"
#include "error.hpp"
#include "tensor.hpp"

namespace attnkit {

// Half-open range of key indices a call processes; the rest of the keys are treated as
// belonging to another split (split-KV). Masks still see global key indices.
struct KeyRange {
  index_t begin = 0;
  index_t end = -1;  // -1: up to Nk
};

struct Options {
  std::optional<float> scale;       // logit scale; default 1/sqrt(D)
  std::optional<index_t> q_offset;  // position of query 0; default Nk - Nq (bottom-right)
  RowView lse;                      // optional [B, Hq, Nq] log-sum-exp output (softmax only)
  KeyRange keys;                    // split-KV: only these keys contribute
  int threads = 0;                  // CPU default driver: 0 = std::thread::hardware_concurrency
};

// Unnormalised per-row partial result of a key range: the score function's monoid state.
// o: [B, Hq, Nq, Dv] float, m and l: [B, Hq, Nq] (m is the running max for softmax, else 0).
struct PartialState {
  TensorView<float> o;
  RowView m;
  RowView l;
};

struct ProblemInfo {
  index_t B = 0, Hq = 0, Hkv = 0, Nq = 0, Nk = 0, D = 0, Dv = 0;
  index_t q_offset = 0;
  index_t key_begin = 0, key_end = 0;
  float scale = 1.f;

  ATTNKIT_HD index_t group() const { return Hkv ? Hq / Hkv : 0; }
  ATTNKIT_HD index_t kv_head(index_t h) const { return h / group(); }
  ATTNKIT_HD index_t pos(index_t i) const { return i + q_offset; }
  bool empty() const { return B == 0 || Hq == 0 || Nq == 0; }
};

namespace detail {

inline std::string shape_str(const std::array<index_t, 4>& s) {
  std::string out = "[";  // appended piece by piece: GCC 12 warns (-Wrestrict) on a + chain here
  for (int d = 0; d < 4; ++d) {
    out += std::to_string(s[d]);
    out += d < 3 ? "," : "]";
  }
  return out;
}

template <class T>
void check_view(const TensorView<T>& t, const char* name) {
  for (int d = 0; d < 4; ++d)
    require(t.shape[d] >= 0, name, [&] { return "negative extent in shape " + shape_str(t.shape); });
  for (int d = 0; d < 3; ++d)
    require(t.stride[d] >= 0, name,
            [&] { return "negative stride (" + std::to_string(t.stride[d]) + ") on axis " + std::to_string(d); });
  if (t.elements() == 0) return;
  require(t.data != nullptr, name, [&] { return "null data pointer for a non-empty tensor " + shape_str(t.shape); });
  require(reinterpret_cast<std::uintptr_t>(t.data) % alignof(T) == 0, name,
          "data pointer is not aligned to its element type");
  // Rows must not overlap: the sequence stride covers a row, heads and batches do not collide
  // unless the caller broadcast on purpose with stride 0 (allowed for inputs only).
  require(t.shape[2] <= 1 || t.stride[2] == 0 || t.stride[2] >= t.shape[3], name, [&] {
    return "sequence stride " + std::to_string(t.stride[2]) + " is smaller than the feature dim " +
           std::to_string(t.shape[3]);
  });
}

// True if no two elements of the view share memory: sorted by stride, each axis must step
// past everything the smaller axes span.
template <class T>
bool rows_disjoint(const TensorView<T>& t) {
  if (t.elements() == 0) return true;  // nothing is written, any strides are fine
  std::array<std::pair<index_t, index_t>, 4> axes{{{t.stride[0], t.shape[0]}, {t.stride[1], t.shape[1]},
                                                   {t.stride[2], t.shape[2]}, {1, t.shape[3]}}};
  std::sort(axes.begin(), axes.end());
  index_t span = 0;  // largest offset reachable with the axes so far
  for (const auto& [stride, extent] : axes) {
    if (extent <= 1) continue;
    if (stride <= span) return false;
    span += stride * (extent - 1);
  }
  return true;
}

}  // namespace detail

// Validates shapes, pointers and options; returns the resolved problem. Throws
// attnkit::invalid_argument naming the first offending argument.
template <class TQ, class TK, class TV, class TO>
ProblemInfo make_problem(const TensorView<const TQ>& q, const TensorView<const TK>& k,
                         const TensorView<const TV>& v, const TensorView<TO>& o, const Options& opt) {
  using detail::shape_str;
  detail::check_view(q, "q");
  detail::check_view(k, "k");
  detail::check_view(v, "v");
  detail::check_view(o, "o");
  ProblemInfo p;
  p.B = q.shape[0];
  p.Hq = q.shape[1];
  p.Nq = q.shape[2];
  p.D = q.shape[3];
  p.Hkv = k.shape[1];
  p.Nk = k.shape[2];
  p.Dv = v.shape[3];
  require(k.shape[0] == p.B, "k.shape",
          [&] { return "batch " + std::to_string(k.shape[0]) + " != q batch " + std::to_string(p.B); });
  require(k.shape[3] == p.D, "k.shape",
          [&] { return "head dim " + std::to_string(k.shape[3]) + " != q head dim " + std::to_string(p.D); });
  require(v.shape[0] == p.B && v.shape[1] == p.Hkv && v.shape[2] == p.Nk, "v.shape", [&] {
    return shape_str(v.shape) + " does not match k " + shape_str(k.shape) + " in batch, heads, sequence";
  });
  require(o.shape[0] == p.B && o.shape[1] == p.Hq && o.shape[2] == p.Nq && o.shape[3] == p.Dv, "o.shape", [&] {
    return shape_str(o.shape) + " must be [B, Hq, Nq, Dv] = " + shape_str({p.B, p.Hq, p.Nq, p.Dv});
  });
  require(p.D > 0 && p.Dv > 0, "q.shape", "head dims D and Dv must be positive");
  require(p.Hkv > 0 || p.Hq == 0, "k.shape", "no key/value heads");
  require(p.Hkv == 0 || p.Hq % p.Hkv == 0, "k.shape", [&] {
    return "query heads (" + std::to_string(p.Hq) + ") must be a multiple of key/value heads (" +
           std::to_string(p.Hkv) + ")";
  });
  require(detail::rows_disjoint(o), "o.stride", [&] {
    return "output rows overlap (strides " + std::to_string(o.stride[0]) + "," + std::to_string(o.stride[1]) + "," +
           std::to_string(o.stride[2]) + " for shape " + shape_str(o.shape) + ")";
  });
  require(std::abs(opt.q_offset.value_or(0)) <= (index_t(1) << 40), "q_offset", "out of range");
  p.q_offset = opt.q_offset.value_or(p.Nk - p.Nq);
  p.scale = opt.scale.value_or(p.D > 0 ? 1.f / std::sqrt(float(p.D)) : 1.f);
  require(std::isfinite(p.scale), "scale", "must be finite");
  p.key_begin = opt.keys.begin;
  p.key_end = opt.keys.end < 0 ? p.Nk : opt.keys.end;
  require(p.key_begin >= 0 && p.key_begin <= p.key_end && p.key_end <= p.Nk, "keys", [&] {
    return "key range [" + std::to_string(p.key_begin) + ", " + std::to_string(p.key_end) +
           ") is not inside [0, Nk=" + std::to_string(p.Nk) + ")";
  });
  if (opt.lse) {
    require(opt.lse.shape[0] == p.B && opt.lse.shape[1] == p.Hq && opt.lse.shape[2] == p.Nq, "lse",
            "shape must be [B, Hq, Nq]");
  }
  return p;
}

}  // namespace attnkit
