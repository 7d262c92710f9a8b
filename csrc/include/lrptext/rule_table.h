// The one table of linear rules on the C++ side: each rule's name (LinearRule.kernel in lrptext/rules/rule.py),
// the modified weights its passes read (computed once per model by prepare_rule_weights), and whether its kernels
// can read relu(x) from a ReLU's pre-activation. bindings.cpp parses and checks rules from it; linear_rules.h
// holds each rule's maths.
#pragma once
#include <string>

#include "problems.h"

namespace lrptext {

enum class WeightMod : int { Positive, Negative, GammaPositive, GammaNegative, Square, One };

struct RuleTraits {
  Rule kind;
  const char* name;
  int modified_weights;      // how many of (weight_a, weight_b) the rule reads
  WeightMod weight_a, weight_b;
  bool reads_relu_input;     // relu_input: the layer's input is a ReLU's pre-activation z and the rule reads relu(z)
};

inline constexpr RuleTraits kRuleTable[] = {
    {Rule::Epsilon, "epsilon", 0, WeightMod::One, WeightMod::One, true},
    {Rule::Gamma, "gamma", 2, WeightMod::GammaPositive, WeightMod::GammaNegative, true},
    {Rule::AlphaBeta, "alpha_beta", 2, WeightMod::Positive, WeightMod::Negative, true},
    {Rule::ZBox, "zbox", 2, WeightMod::Positive, WeightMod::Negative, false},
    {Rule::WSquare, "wsquare", 1, WeightMod::Square, WeightMod::One, false},
    {Rule::Flat, "flat", 1, WeightMod::One, WeightMod::One, false},
};

inline const RuleTraits& rule_traits(Rule kind) {
  for (const RuleTraits& t : kRuleTable)
    if (t.kind == kind) return t;
  return kRuleTable[0];  // unreachable: every Rule has a row
}

// The row named `name`, or nullptr.
inline const RuleTraits* find_rule(const std::string& name) {
  for (const RuleTraits& t : kRuleTable)
    if (name == t.name) return &t;
  return nullptr;
}

// "epsilon, gamma, ...": the names, for messages.
inline std::string rule_names() {
  std::string names;
  for (const RuleTraits& t : kRuleTable) names += (names.empty() ? "" : ", ") + std::string(t.name);
  return names;
}

}  // namespace lrptext
