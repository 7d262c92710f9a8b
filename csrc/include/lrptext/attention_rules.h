// The row steps of scaled dot-product attention relevance, written once for every device; the products around
// them are each device's GEMMs (csrc/cpu/attention.cpp, csrc/cuda/attention.cu; the equations:
// lrptext/layers/attention.py).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "problems.h"
#include "stabilizer.h"

namespace lrptext {

// e^x for x <= 0 (a score minus its row's maximum). On the CPU in float: 2^n e^r with n = round(x / ln 2),
// |r| <= ln 2 / 2, and e^r by its Taylor polynomial to degree 7 (relative error about 1e-7, float's rounding);
// branch-free, so the loop over a row vectorises, where std::exp is a call per element. Below -87 it is 0.
template <class T>
LRPT_HD inline T exp_nonpositive(T x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  if constexpr (std::is_same_v<T, float>) {
    // Below -87 the result is 0; x is clamped there first, so that the exponent n + 127 built below stays
    // positive (shifting a negative value is undefined behaviour: UBSan found it at x = -1000).
    const bool underflow = x < -87.0f;
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

// Sum and maximum of a row in eight independent lanes: a single running total is a chain of dependent additions
// that the compiler may not reorder (floating point), so it would not vectorise.
template <class T>
LRPT_HD inline T row_sum(const T* x, int64_t n) {
  T lane[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] += x[j + l];
  T total = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; j < n; ++j) total += x[j];
  return total;
}

template <class T>
LRPT_HD inline T row_max(const T* x, int64_t n, T floor) {
  T lane[8] = {floor, floor, floor, floor, floor, floor, floor, floor};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
  T top = floor;
  for (int l = 0; l < 8; ++l) top = lane[l] > top ? lane[l] : top;
  for (; j < n; ++j) top = x[j] > top ? x[j] : top;
  return top;
}

// One query's row: the scores Q_i Kᵀ in `s` become scale · Q_i Kᵀ (−inf at keys it may not attend to: mask_row[j]
// == 0 or j >= allowed_to), their softmax goes to `a` (all 0 where no key is allowed).
template <class T>
LRPT_HD inline void attention_probabilities_row(T* s, T* a, const uint8_t* mask_row, int64_t allowed_to, int64_t nk,
                                                T scale) {
  const T minus_inf = -static_cast<T>(INFINITY);  // the macro, not numeric_limits: usable in device code
  for (int64_t j = 0; j < nk; ++j) s[j] = j < allowed_to && (!mask_row || mask_row[j]) ? s[j] * scale : minus_inf;
  const T top = row_max(s, nk, minus_inf);
  if (top == minus_inf) {  // a query that may attend to no key attends to nothing
    for (int64_t j = 0; j < nk; ++j) a[j] = T(0);
    return;
  }
  for (int64_t j = 0; j < nk; ++j) {
    const T shifted = s[j] - top;
    const T e = exp_nonpositive(shifted > T(-1000) ? shifted : T(-1000));  // masked: −inf, clamped, then 0
    a[j] = s[j] == minus_inf ? T(0) : e;
  }
  const T inverse = T(1) / row_sum(a, nk);
  for (int64_t j = 0; j < nk; ++j) a[j] *= inverse;
}

// One query's row, AttnLRP: `m` holds (G Vᵀ)_i in and the factor H_i of the uniform rule at Q Kᵀ out.
// R_A = ½ A ⊙ (G Vᵀ); the softmax R_S = S ⊙ (R_A − A Σ_k R_A); H = scale R_S / S, which is scale (R_A − A Σ R_A)
// where S ≠ 0 and 0 where S = 0 (no relevance to divide; masked keys have A = 0 and so H = 0).
template <class T>
LRPT_HD inline void attention_score_factor_row(const T* a, const T* s, T* m, int64_t nk, T scale) {
  for (int64_t j = 0; j < nk; ++j) m[j] = T(0.5) * a[j] * m[j];
  const T row = row_sum(m, nk);
  for (int64_t j = 0; j < nk; ++j) m[j] = s[j] == T(0) ? T(0) : scale * (m[j] - a[j] * row);
}

// G = R_O / O, 0 where R_O = 0 or O = 0 (a query that attends to no key has nothing to pass its relevance to).
template <class T>
LRPT_HD inline T attention_output_share(T r, T o) {
  return r == T(0) || o == T(0) ? T(0) : r / o;
}

// The operands and outputs of heads first, first + 1, ... (flat over batch and heads, each head contiguous).
template <class T>
struct AttentionHeads {
  const T *q, *k, *v, *r;
  T *rq, *rk, *rv;
};

template <class T>
inline AttentionHeads<T> attention_heads(const AttentionProblem& p, int64_t first) {
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim;
  return {static_cast<const T*>(p.query) + first * nq * d,      static_cast<const T*>(p.key) + first * nk * d,
          static_cast<const T*>(p.value) + first * nk * dv,     static_cast<const T*>(p.relevance) + first * nq * dv,
          static_cast<T*>(p.out_query) + first * nq * d,        static_cast<T*>(p.out_key) + first * nk * d,
          static_cast<T*>(p.out_value) + first * nk * dv};
}

// Where a query's mask row starts (or null): the mask's strides are 0 along its broadcast axes.
inline LRPT_HD const uint8_t* attention_mask_row(const AttentionProblem& p, int64_t head, int64_t query) {
  if (!p.mask) return nullptr;
  const int64_t b = head / p.heads, h = head % p.heads;
  return p.mask + b * p.mask_batch_stride + h * p.mask_head_stride + query * p.mask_query_stride;
}

// Keys j < this pass the causal mask (all without one).
inline LRPT_HD int64_t attention_allowed_to(const AttentionProblem& p, int64_t query) {
  return p.causal ? (query + 1 < p.keys ? query + 1 : p.keys) : p.keys;
}

}  // namespace lrptext
