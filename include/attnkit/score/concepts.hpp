#pragma once
// What a score-function policy must provide. Each requirement is its own concept so that
// Attention<> can name the missing piece in a readable static_assert.
#include <concepts>
#include <type_traits>

#include "../core/problem.hpp"

namespace attnkit {

template <class S>
concept ScoreDeclaresTracksMax = requires {
  { S::tracks_max } -> std::convertible_to<bool>;
};
template <class S>
concept ScoreHasWeight = requires(const S s, float x, double y) {
  { s.weight(x, x, x) } -> std::convertible_to<float>;
  { s.weight(y, y, y) } -> std::convertible_to<double>;
};
template <class S>
concept ScoreHasFinalize = requires(const S s, float x, double y) {
  { s.finalize_factor(x, x) } -> std::convertible_to<float>;
  { s.finalize_factor(y, y) } -> std::convertible_to<double>;
};
template <class S>
concept ScoreHasResolve = requires(const S s, const ProblemInfo& p) {
  { s.resolve(p) } -> std::same_as<S>;
};

template <class S>
concept ScoreFunction = std::is_trivially_copyable_v<S> && ScoreDeclaresTracksMax<S> && ScoreHasWeight<S> &&
                        ScoreHasFinalize<S> && ScoreHasResolve<S>;

template <class S>
constexpr void check_score_function() {
  static_assert(std::is_trivially_copyable_v<S>,
                "attnkit: a score function must be trivially copyable (it is passed by value to kernels)");
  static_assert(ScoreDeclaresTracksMax<S>,
                "attnkit: a score function must declare `static constexpr bool tracks_max` "
                "(true if weights are taken relative to the running row max, as in softmax)");
  static_assert(ScoreHasWeight<S>,
                "attnkit: a score function needs `template <class T> T weight(T s, T row_max, T row_scale) const`");
  static_assert(ScoreHasFinalize<S>,
                "attnkit: a score function needs `template <class T> T finalize_factor(T m, T l) const`");
  static_assert(ScoreHasResolve<S>,
                "attnkit: a score function needs `S resolve(const attnkit::ProblemInfo&) const` "
                "(return *this when there is nothing to resolve)");
}

// Optional members, with their defaults.
template <class S>
constexpr bool is_linear_score() {
  if constexpr (requires { S::is_linear; }) return S::is_linear;
  else return false;
}
template <class S>
constexpr bool score_has_lse() {
  if constexpr (requires { S::has_lse; }) return S::has_lse;
  else return false;
}
template <class S>
bool score_needs_row_count(const S& s) {
  if constexpr (requires { s.needs_row_count(); }) return s.needs_row_count();
  else return false;
}
template <class T, class S>
ATTNKIT_HD T score_row_scale(const S& s, T n_allowed) {
  if constexpr (requires { s.row_scale(n_allowed); }) return s.row_scale(n_allowed);
  else return T(1);
}

// A resolved score for a sequence of nk keys. Scores whose parameters follow the key count
// (sigmoid's default bias -log n) provide for_keys(nk); ragged and paged batches call it per
// sequence on the device, where only that sequence's length is known.
template <class S>
ATTNKIT_HD S score_for_keys(const S& s, index_t nk) {
  if constexpr (requires { { s.for_keys(nk) } -> std::same_as<S>; }) return s.for_keys(nk);
  else return s;
}

}  // namespace attnkit
