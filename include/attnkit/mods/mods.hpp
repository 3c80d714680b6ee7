#pragma once
// All built-in score modifiers.
#include "alibi.hpp"
#include "bias.hpp"
#include "concepts.hpp"
#include "functor.hpp"
#include "scale.hpp"
#include "softcap.hpp"
