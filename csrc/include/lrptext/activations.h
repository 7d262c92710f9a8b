// Element-wise activations computed from a kept pre-activation z: a layer after a dropped activation reads
// act(z) inside its kernel instead of having the activation's output computed again and stored (the dense rule's
// product with its input, ElementwiseProblem::activation_a). Branch-free in float, so a loop over them vectorises.
#pragma once
#include <cmath>

#include "exp.h"
#include "problems.h"

namespace lrptext {

// 1 / (1 + e^-v), from e^-|v| <= 1 on both sides (no overflow, and no cancellation for v << 0)
template <class T>
inline T logistic(T v) {
  const T e = std::is_same_v<T, float> ? exp_nonpositive(v > T(0) ? -v : v) : std::exp(-std::fabs(v));
  const T inverse = T(1) / (T(1) + e);
  return v >= T(0) ? inverse : e * inverse;
}

// Φ(x), the standard normal distribution function, = erfc(-x / √2) / 2. In float: erfc(u) for u = |x| / √2 as
// t e^(-u² + P(t)), t = 1 / (1 + u / 2), P a degree-10 polynomial fitted (least squares, weighted to the largest
// relative error) to log(erfc(u) e^(u²) / t) on [0, 10]: the fit is within 6e-9 of erfc relatively; in float the
// rounding of u² in the exponent adds up to 2e-6 for |x| < 5 and 1.5e-5 beyond, where Φ < 3e-7. Φ(x) = 1 -
// erfc(u) / 2 for x >= 0 and erfc(u) / 2 below, so the lower tail keeps its relative accuracy (1 + erf(x / √2),
// torch's form, cancels there: torch's float GELU is 0 where this is not). NaN stays NaN. In double: std::erfc.
template <class T>
inline T normal_cdf(T x) {
  if constexpr (std::is_same_v<T, float>) {
    const float u = std::fabs(x) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * u);
    // P(t) = Σ c_k t^k by Estrin's scheme: pairs, then t², t⁴ and t⁸ (a dependency chain of 4 multiply-adds
    // where Horner's has 10: the loop around it is bound by that chain's latency, not by its operations)
    const float t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    const float p01 = -1.2655730543361396f + 1.0016938303638225f * t;
    const float p23 = 0.35453222529316719f + 0.22487625056428182f * t;
    const float p45 = -0.70562123888518069f + 1.6445688626800079f * t;
    const float p67 = -3.5039566889732536f + 4.1765090838329781f * t;
    const float p89 = -2.7406778161659053f + 0.95187320216621318f * t;
    const float p03 = p01 + p23 * t2, p47 = p45 + p67 * t2, p810 = p89 - 0.13822465075190138f * t2;
    const float p = (p03 + p47 * t4) + p810 * t8;
    const float exponent = p - u * u;
    const float half_erfc = 0.5f * t * exp_nonpositive(exponent > 0.0f ? 0.0f : exponent);
    return x >= 0.0f ? 1.0f - half_erfc : half_erfc;
  } else {
    return T(0.5) * std::erfc(-x * T(0.70710678118654752440));
  }
}

template <Activation A, class T>
inline T activate(T z) {
  if constexpr (A == Activation::Identity) return z;
  if constexpr (A == Activation::ReLU) return z > T(0) ? z : T(0);  // 0 for NaN too: a select, not a branch
  if constexpr (A == Activation::GELU) return z * normal_cdf(z);
  if constexpr (A == Activation::GELUTanh)  // ½ (1 + tanh y) = logistic(2y), y = √(2/π) (z + 0.044715 z³)
    return z * logistic(T(1.5957691216057308) * (z + T(0.044715) * z * z * z));
  if constexpr (A == Activation::SiLU) return z * logistic(z);
}

}  // namespace lrptext
