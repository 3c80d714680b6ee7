#pragma once
// Attention<Score, Mask, Mods...>: one attention variant, composed at compile time from a
// score function, a mask and any number of score modifiers. Each backend turns it into one
// fused kernel. Policies are checked here so a malformed user policy fails with a message
// naming what is missing.
#include <type_traits>

#include "mask/concepts.hpp"
#include "mods/concepts.hpp"
#include "score/concepts.hpp"

namespace attnkit {

namespace detail {
// A minimal device-friendly tuple of modifiers applied in order.
template <class... Mods>
struct ModChain;
template <>
struct ModChain<> {
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord&) const { return s; }
  void validate(const ProblemInfo&) const {}
};
template <class M, class... Rest>
struct ModChain<M, Rest...> {
  M head;
  ModChain<Rest...> rest;
  template <class T>
  ATTNKIT_HD T operator()(T s, const LogitCoord& c) const { return rest(head(s, c), c); }
  void validate(const ProblemInfo& p) const { mod_validate(head, p), rest.validate(p); }
};
inline constexpr ModChain<> make_chain() { return {}; }
template <class M, class... Rest>
constexpr ModChain<M, Rest...> make_chain(M m, Rest... rest) {
  return {m, make_chain(rest...)};
}
}  // namespace detail

template <class Score, class MaskT, class... Mods>
struct Attention {
  static_assert((check_score_function<Score>(), true));
  static_assert((check_mask<MaskT>(), true));
  static_assert((ScoreMod<Mods> && ...),
                "attnkit: a score modifier needs `template <class T> T operator()(T s, const attnkit::LogitCoord&) "
                "const` and must be trivially copyable");
  static_assert(!is_linear_score<Score>() || sizeof...(Mods) == 0,
                "attnkit: linear attention has no logit, so score modifiers do not apply to it");

  using score_type = Score;
  using mask_type = MaskT;
  static constexpr bool has_mods = sizeof...(Mods) > 0;

  Score score{};
  MaskT mask{};
  detail::ModChain<Mods...> mods{};

  template <class T>
  ATTNKIT_HD T modify(T s, const LogitCoord& c) const { return mods(s, c); }

  // Checks the policies' parameters against a problem; throws attnkit::invalid_argument.
  void validate(const ProblemInfo& p) const {
    (void)score.resolve(p);
    mask_validate(mask, p);
    mods.validate(p);
  }
};

template <class Score, class MaskT, class... Mods>
constexpr Attention<Score, MaskT, Mods...> make_attention(Score s, MaskT m, Mods... mods) {
  return {s, m, detail::make_chain(mods...)};
}

}  // namespace attnkit
