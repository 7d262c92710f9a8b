// The exponential of a non-positive argument, in a form the compiler vectorises (attention's softmax, the
// activations that the kernels compute from a kept pre-activation).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "stabilizer.h"  // LRPT_HD

namespace lrptext {

// e^x for x <= 0 (a score minus its row's maximum, the negative part of a logistic's argument). On the CPU in float: 2^n e^r with n = round(x / ln 2),
// |r| <= ln 2 / 2, and e^r by its Taylor polynomial to degree 7 (relative error about 1e-7, float's rounding);
// branch-free, so the loop over a row vectorises, where std::exp is a call per element. Below -87 it is 0.
template <class T>
LRPT_HD inline T exp_nonpositive(T x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  if constexpr (std::is_same_v<T, float>) {
    // Below -87 the result is 0; x is clamped there first, so that the exponent n + 127 built below stays
    // positive (shifting a negative value is undefined behaviour: UBSan found it at x = -1000). NaN gives 0 as
    // well: converting it to an integer would be undefined too (callers that must keep a NaN test for it).
    const bool underflow = !(x >= -87.0f);
    x = underflow ? -87.0f : x;
    const float big = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (round to nearest)
    const float n = (x * 1.44269504088896341f + big) - big;
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;  // ln 2 in two parts
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return underflow ? 0.0f : p * scale;
  } else {
    return std::exp(x);
  }
#endif
}

// e^min(x, 0), and 0 where x is NaN: a softmax's exponentials from scores shifted by their log-sum-exp, which
// rounding may put a little above 0. Float on the CPU leaves NaN and underflow to exp_nonpositive: the loop over a
// row then compiles to half the mask operations of the clamp to [-1000, 0] that double and CUDA (whose exp keeps
// NaN) take, and runs a fifth faster at the same bits.
template <class T>
LRPT_HD inline T exp_clamped(T x) {
#if !defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return exp_nonpositive(x > 0.0f ? 0.0f : x);
#endif
  return exp_nonpositive(x > T(0) ? T(0) : x > T(-1000) ? x : T(-1000));
}

}  // namespace lrptext
