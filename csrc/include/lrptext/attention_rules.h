// The row steps of scaled dot-product attention relevance, written once for every device; the products around
// them are each device's GEMMs (csrc/cpu/attention.cpp, csrc/cuda/attention.cu; the equations:
// lrptext/layers/attention.py).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "exp.h"
#include "problems.h"
#include "row_reduce.h"
#include "stabilizer.h"

namespace lrptext {

// One query's scores Q_i Kᵀ in `s` become scale · Q_i Kᵀ, −inf at keys it may not attend to (mask_row[j] == 0 or
// j >= allowed_to). A loop of its own: fused with the exponential that follows, neither vectorised.
template <class T>
LRPT_HD inline void scaled_scores_row(T* s, const uint8_t* mask_row, int64_t allowed_to, int64_t nk, T scale) {
  const T minus_inf = -static_cast<T>(INFINITY);  // the macro, not numeric_limits: usable in device code
  for (int64_t j = 0; j < nk; ++j) s[j] = j < allowed_to && (!mask_row || mask_row[j]) ? s[j] * scale : minus_inf;
}

// One query's row: the scores in `s` scaled and masked (scaled_scores_row), their softmax into `a` (all 0 where no
// key is allowed).
template <class T>
LRPT_HD inline void attention_probabilities_row(T* s, T* a, const uint8_t* mask_row, int64_t allowed_to, int64_t nk,
                                                T scale) {
  const T minus_inf = -static_cast<T>(INFINITY);
  scaled_scores_row(s, mask_row, allowed_to, nk, scale);
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

// The same row from the forward pass's log Σ_j exp(scale s_j) over the allowed keys: A_j = exp(scale s_j − lse),
// 0 at the others (all of a row with no allowed key, whatever its lse, even −inf). Rounding may put scale s_j − lse
// a little above 0: clamped to 0, an error of the order of that rounding.
template <class T>
LRPT_HD inline void attention_probabilities_row_from(T* s, T* a, const uint8_t* mask_row, int64_t allowed_to,
                                                     int64_t nk, T scale, T logsumexp) {
  const T minus_inf = -static_cast<T>(INFINITY);
  scaled_scores_row(s, mask_row, allowed_to, nk, scale);
  for (int64_t j = 0; j < nk; ++j) {
    const T shifted = s[j] - logsumexp;
    const T e = exp_clamped(shifted);
    a[j] = s[j] == minus_inf ? T(0) : e;
  }
}

// The same for a query that may attend to every key: no mask to test, so scaling and exponential are one loop,
// which vectorises.
template <class T>
LRPT_HD inline void attention_probabilities_row_unmasked_from(T* s, T* a, int64_t nk, T scale, T logsumexp) {
  for (int64_t j = 0; j < nk; ++j) {
    const T scaled = s[j] * scale;
    const T shifted = scaled - logsumexp;
    s[j] = scaled;
    a[j] = exp_clamped(shifted);
  }
}

// The same writing A only (gradient form reads no scores).
template <class T>
LRPT_HD inline void attention_probabilities_only_row_unmasked_from(const T* s, T* a, int64_t nk, T scale,
                                                                   T logsumexp) {
  for (int64_t j = 0; j < nk; ++j) {
    const T shifted = s[j] * scale - logsumexp;
    a[j] = exp_clamped(shifted);
  }
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

// The same in gradient form (R_O = O ⊙ G): H = scale A ⊙ (½ G Vᵀ − Σ_k R_A), with Σ_k R_A = ½ Σ_k A_k (G Vᵀ)_k =
// ½ Σ_j G_j O_j computed from O by the caller (`total`): one pass over the row. H is the gradient of the scores
// without the S = 0 exception (gradient × input: R_S = S ⊙ H / scale there too).
template <class T>
LRPT_HD inline void attention_score_gradient_row(const T* a, T* m, T total, int64_t nk, T scale) {
  for (int64_t j = 0; j < nk; ++j) m[j] = scale * a[j] * (T(0.5) * m[j] - total);
}

// G = R_O / O, 0 where R_O = 0 or O = 0 (a query that attends to no key has nothing to pass its relevance to).
template <class T>
LRPT_HD inline T attention_output_share(T r, T o) {
  return r == T(0) || o == T(0) ? T(0) : r / o;
}

// The operands and outputs of head `first` (flat over batch and heads) and the distances between their rows.
// CUDA's products run over a chunk of heads from there: it takes contiguous operands only.
template <class T>
struct AttentionHeads {
  const T *q, *k, *v, *r;
  T *rq, *rk, *rv;
  int64_t ldq, ldk, ldv, ldr, ldrq, ldrk, ldrv;
};

inline int64_t head_offset(const HeadStrides& s, int64_t heads, int64_t first) {
  return first / heads * s.batch + first % heads * s.head;
}

template <class T>
inline AttentionHeads<T> attention_heads(const AttentionProblem& p, int64_t first) {
  const int64_t h = p.heads;
  return {static_cast<const T*>(p.query) + head_offset(p.query_strides, h, first),
          static_cast<const T*>(p.key) + head_offset(p.key_strides, h, first),
          static_cast<const T*>(p.value) + head_offset(p.value_strides, h, first),
          static_cast<const T*>(p.relevance) + head_offset(p.relevance_strides, h, first),
          static_cast<T*>(p.out_query) + head_offset(p.out_query_strides, h, first),
          static_cast<T*>(p.out_key) + head_offset(p.out_key_strides, h, first),
          static_cast<T*>(p.out_value) + head_offset(p.out_value_strides, h, first),
          p.query_strides.row, p.key_strides.row, p.value_strides.row, p.relevance_strides.row,
          p.out_query_strides.row, p.out_key_strides.row, p.out_value_strides.row};
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
