// The relevance of operations along one row, written once for every device (lrptext/layers/layer_norm.py and
// lrptext/layers/softmax.py give the equations; docs/conventions.md the conventions).
#pragma once
#include <cmath>
#include <cstdint>

#include "problems.h"
#include "row_reduce.h"
#include "stabilizer.h"

namespace lrptext {

// LayerNorm y = gamma (x - mean(x)) / sigma + beta with sigma a constant: beta keeps its share,
// R_z = R_y (1 - beta / st(y)) = R_y (st(y) - beta) / st(y); the centring z = x - mean(x) by the epsilon rule:
// R_x = x (s - mean(s)) with s = R_z / st(z). `out` holds s on the way.
// st(y) - beta = gamma z / sigma + eps sign(y) is computed from z where gamma and the variance's epsilon are given
// (variance_eps >= 0; gamma null: 1): read off y as y - beta it cancels digits where y is close to beta (float32
// lost 3 of its 7 digits on MiniLM's 512-token rows that way).
// In gradient form (RowProblem::gradient_form) r holds g with R_y = y g, and out receives s - mean(s), R_x / x.

// s of one row, one quotient per element, R_y (st(y) - beta) / (st(y) st(z)): each case a loop of its own without
// branches, which vectorises. (At 512 x 384 on one thread it measured no faster than the two-quotient loop it
// replaced, about 0.16 ms, torch's LayerNorm backward on two threads 0.15-0.2 ms: the row streams from memory.)
template <class T, bool kBeta, bool kFromZ, bool kGamma, bool kGradient>
LRPT_HD inline void layer_norm_quotients(const T* x, const T* y, const T* r, const T* gamma, const T* beta, T* out,
                                         int64_t n, T eps, T mean, T inv_std) {
  for (int64_t i = 0; i < n; ++i) {
    const T z = x[i] - mean;
    const T ry = kGradient ? y[i] * r[i] : r[i];
    if constexpr (kBeta) {
      const T sign_eps = y[i] >= T(0) ? eps : -eps;  // st(y) = y + sign_eps
      T shifted;
      if constexpr (kFromZ) shifted = (kGamma ? gamma[i] : T(1)) * z * inv_std + sign_eps;
      else shifted = y[i] + sign_eps - beta[i];
      out[i] = ry * shifted / ((y[i] + sign_eps) * stabilize(z, eps));
    } else {
      out[i] = ry / stabilize(z, eps);
    }
  }
}

template <class T, bool kGradient>
LRPT_HD inline void layer_norm_quotients(const T* x, const T* y, const T* r, const T* gamma, const T* beta, T* out,
                                         int64_t n, T eps, T mean, T inv_std, bool from_z) {
  if (!beta) layer_norm_quotients<T, false, false, false, kGradient>(x, y, r, gamma, beta, out, n, eps, mean, inv_std);
  else if (!from_z) layer_norm_quotients<T, true, false, false, kGradient>(x, y, r, gamma, beta, out, n, eps, mean,
                                                                          inv_std);
  else if (gamma) layer_norm_quotients<T, true, true, true, kGradient>(x, y, r, gamma, beta, out, n, eps, mean, inv_std);
  else layer_norm_quotients<T, true, true, false, kGradient>(x, y, r, gamma, beta, out, n, eps, mean, inv_std);
}

template <class T>
LRPT_HD inline void layer_norm_row(const T* x, const T* y, const T* r, const T* gamma, const T* beta, T* out, int64_t n,
                                   T eps, T variance_eps, bool gradient_form, const T* quotient_of = nullptr,
                                   T* quotient_out = nullptr, T quotient_eps = T(0)) {
  const T mean = row_sum(x, n) / T(n);
  const bool from_z = variance_eps >= T(0);
  const T inv_std = from_z ? T(1) / std::sqrt(row_squared_deviation(x, n, mean) / T(n) + variance_eps) : T(0);
  if (gradient_form) layer_norm_quotients<T, true>(x, y, r, gamma, beta, out, n, eps, mean, inv_std, from_z);
  else layer_norm_quotients<T, false>(x, y, r, gamma, beta, out, n, eps, mean, inv_std, from_z);
  const T s_mean = row_sum(out, n) / T(n);
  if (gradient_form) {
    for (int64_t i = 0; i < n; ++i) out[i] -= s_mean;
    // (the dense layer's quotient z ⊙ g / st(z), in the order of its own pass: the same bits)
    if (quotient_out)
      for (int64_t i = 0; i < n; ++i)
        quotient_out[i] = stabilized_quotient(quotient_of[i], out[i], quotient_of[i], quotient_eps);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * (out[i] - s_mean);
  }
}

// Softmax s = softmax(x) (AttnLRP): R_x = x (R_s - s sum(R_s)), gradient x input; a position of probability 0
// (a masked score, possibly -inf) gets 0.
template <class T>
LRPT_HD inline void softmax_row(const T* x, const T* s, const T* r, T* out, int64_t n) {
  const T total = row_sum(r, n);
  for (int64_t i = 0; i < n; ++i) out[i] = s[i] == T(0) ? T(0) : x[i] * (r[i] - s[i] * total);
}

template <class T, class Exec>
void row_relevance(const Exec& ex, const RowProblem& p) {
  const T* x = static_cast<const T*>(p.input);
  const T* y = static_cast<const T*>(p.output);
  const T* r = static_cast<const T*>(p.relevance);
  const T* beta = static_cast<const T*>(p.bias);
  const T* gamma = static_cast<const T*>(p.weight);
  const T variance_eps = T(p.variance_epsilon);
  T* out = static_cast<T*>(p.out);
  const int64_t n = p.width;
  const T eps = T(p.epsilon);
  const bool gradient_form = p.gradient_form;
  const T* zq = static_cast<const T*>(p.quotient_of);
  T* q = static_cast<T*>(p.quotient_out);
  const T q_eps = T(p.quotient_epsilon);
  if (p.rule == RowRule::LayerNorm)
    ex.map(p.rows, LRPT_LAMBDA(int64_t row) {
      layer_norm_row(x + row * n, y + row * n, r + row * n, gamma, beta, out + row * n, n, eps, variance_eps,
                     gradient_form, q ? zq + row * n : nullptr, q ? q + row * n : nullptr, q_eps);
    }, n);
  else
    ex.map(p.rows, LRPT_LAMBDA(int64_t row) { softmax_row(x + row * n, y + row * n, r + row * n, out + row * n, n); },
           n);
}

}  // namespace lrptext
