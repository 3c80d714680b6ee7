#pragma once
// Validation of ragged offsets and paged caches (host memory), throwing
// attnkit::invalid_argument naming the argument, before any work is done.
#include <string>
#include <type_traits>

#include "error.hpp"
#include "paged.hpp"
#include "problem.hpp"

namespace attnkit {

// offsets: batch + 1 entries, offsets[0] = 0, non-decreasing, offsets[batch] = total rows.
inline void check_ragged(const RaggedRows& r, index_t total, const char* name) {
  // The argument's name ("q_rows.offsets", ...) is built, like the message, only on failure.
  const auto check = [name](bool ok, const char* field, auto&& what) {
    if (!ok) [[unlikely]] throw invalid_argument(std::string(name) + field, std::string(what()));
  };
  check(r.batch >= 0, ".batch", [] { return "must be non-negative"; });
  check(r.offsets != nullptr, ".offsets", [] { return "null (needs batch + 1 entries)"; });
  check(r.offsets[0] == 0, ".offsets", [&] { return "offsets[0] = " + std::to_string(r.offsets[0]) + ", must be 0"; });
  for (index_t b = 0; b < r.batch; ++b) {
    check(r.offsets[b + 1] >= r.offsets[b], ".offsets", [&] {
      return "must be non-decreasing: offsets[" + std::to_string(b + 1) + "] = " + std::to_string(r.offsets[b + 1]) +
             " < offsets[" + std::to_string(b) + "] = " + std::to_string(r.offsets[b]);
    });
    check(r.max_rows <= 0 || r.rows(b) <= r.max_rows, ".max_rows", [&] {
      return "sequence " + std::to_string(b) + " has " + std::to_string(r.rows(b)) +
             " rows, more than max_rows = " + std::to_string(r.max_rows);
    });
  }
  check(r.offsets[r.batch] == total, ".offsets", [&] {
    return "offsets[batch] = " + std::to_string(r.offsets[r.batch]) + " must equal the rows of the packed view (" +
           std::to_string(total) + ")";
  });
}

// Shapes, pool pointers, sequence lengths and every page id a sequence uses.
template <class T>
void check_paged(const PagedKV<T>& kv, index_t batch, index_t Hq, index_t D) {
  require(kv.batch == batch, "kv.batch",
          [&] { return std::to_string(kv.batch) + " sequences, the query offsets describe " + std::to_string(batch); });
  require(kv.heads > 0 && Hq % kv.heads == 0, "kv.heads", [&] {
    return "query heads (" + std::to_string(Hq) + ") must be a positive multiple of kv heads (" +
           std::to_string(kv.heads) + ")";
  });
  require(kv.dim == D, "kv.dim",
          [&] { return "key head dim " + std::to_string(kv.dim) + " != query head dim " + std::to_string(D); });
  require(kv.dim_v > 0, "kv.dim_v", "must be positive");
  require(kv.page_size > 0, "kv.page_size", "must be positive");
  require(kv.pages >= 0 && kv.table_stride >= 0, "kv.pages", "pages and table_stride must be non-negative");
  require(kv.max_len >= 0, "kv.max_len", "must be non-negative (0: no bound)");
  for (const auto* pool : {&kv.k, &kv.v}) {
    const char* name = pool == &kv.k ? "kv.k" : "kv.v";
    require(pool->stride[0] >= 0 && pool->stride[1] >= 0 && pool->stride[2] >= 0, name, "negative pool stride");
    require(reinterpret_cast<std::uintptr_t>(pool->data) % alignof(std::remove_const_t<T>) == 0, name,
            "pool pointer is not aligned to its element type");
  }
  index_t tokens = 0;
  for (index_t b = 0; b < batch; ++b) {
    require(kv.seq_lens != nullptr, "kv.seq_lens", "null");
    const index_t len = kv.seq_lens[b];
    require(len >= 0 && len <= kv.table_stride * kv.page_size, "kv.seq_lens", [&] {
      return "sequence " + std::to_string(b) + " has " + std::to_string(len) + " tokens; its block-table row holds " +
             std::to_string(kv.table_stride) + " pages of " + std::to_string(kv.page_size);
    });
    require(kv.max_len <= 0 || len <= kv.max_len, "kv.max_len", [&] {
      return "sequence " + std::to_string(b) + " has " + std::to_string(len) + " tokens, more than max_len";
    });
    const index_t used = (len + kv.page_size - 1) / kv.page_size;
    if (used > 0) require(kv.block_table != nullptr, "kv.block_table", "null");
    for (index_t e = 0; e < used; ++e) {
      const index_t page = kv.block_table[b * kv.table_stride + e];
      require(page >= 0 && page < kv.pages, "kv.block_table", [&] {
        return "sequence " + std::to_string(b) + " entry " + std::to_string(e) + " is page " + std::to_string(page) +
               ", outside [0, pages = " + std::to_string(kv.pages) + ")";
      });
    }
    tokens += len;
  }
  if (tokens > 0) {
    require(kv.k.data != nullptr, "kv.k", "null pool with tokens to read");
    require(kv.v.data != nullptr, "kv.v", "null pool with tokens to read");
  }
}

}  // namespace attnkit
