// Scaled dot-product attention relevance on the CPU, one (batch, head) per task: the scores, probabilities and the
// relevance of A of one head live in three [queries, keys] workspaces of the thread that runs it, so no
// [batch, heads, queries, keys] tensor is ever held (the equations: lrptext/layers/attention.py).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "exec.h"
#include "lrptext/kernels.h"

namespace lrptext::cpu {
namespace {

// e^x for x <= 0 (a score minus its row's maximum): 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2, and e^r
// by its Taylor polynomial to degree 7 (relative error about 1e-7, float's rounding). Branch-free, so the loop
// over a row vectorises, where std::exp is a call per element; below -87 (2^-126) it is 0.
inline float exp_nonpositive(float x) {
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
  return x < -87.0f ? 0.0f : p * scale;
}

inline double exp_nonpositive(double x) { return std::exp(x); }

template <class T>
struct Head {
  const T *q, *k, *v, *r;
  const uint8_t* mask;  // row i at mask + i * mask_query_stride, or null
  T *rq, *rk, *rv;
};

// scores [queries, keys] in, probabilities out (masked and fully masked rows 0); the scaled scores stay in `s`
// (−inf where masked): the softmax's rule reads them.
template <class T>
void probabilities(const AttentionProblem& p, const Head<T>& h, T* s, T* a) {
  const int64_t nq = p.queries, nk = p.keys;
  const T scale = T(p.scale), minus_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    T* si = s + i * nk;
    T* ai = a + i * nk;
    const uint8_t* mi = h.mask ? h.mask + i * p.mask_query_stride : nullptr;
    const int64_t allowed_to = p.causal ? std::min(i + 1, nk) : nk;  // keys j < allowed_to pass the causal mask
    T top = minus_inf;
    for (int64_t j = 0; j < nk; ++j) {
      const bool allowed = j < allowed_to && (!mi || mi[j]);
      si[j] = allowed ? si[j] * scale : minus_inf;
      top = std::max(top, si[j]);
    }
    if (top == minus_inf) {  // a query that may attend to no key attends to nothing
      std::fill(ai, ai + nk, T(0));
      continue;
    }
    T total = T(0);
    for (int64_t j = 0; j < nk; ++j) {
      ai[j] = exp_nonpositive(std::max(si[j] - top, T(-1000)));  // masked: −inf − top, clamped, then 0 below
      ai[j] = si[j] == minus_inf ? T(0) : ai[j];
      total += ai[j];
    }
    const T inverse = T(1) / total;
    for (int64_t j = 0; j < nk; ++j) ai[j] *= inverse;
  }
}

template <class T>
void head_relevance(const AttentionProblem& p, const Head<T>& h, T* work) {
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim;
  T* s = work;            // scaled scores
  T* a = s + nq * nk;     // probabilities
  T* m = a + nq * nk;     // G Vᵀ, then the scores' gradient-like factor H
  T* g = m + nq * nk;     // O = A V, then G = R_O / O
  gemm<T>(false, true, nq, nk, d, h.q, d, h.k, d, T(0), s, nk);
  probabilities(p, h, s, a);
  gemm<T>(false, false, nq, dv, nk, a, nk, h.v, dv, T(0), g, dv);
  // 0 where O = 0: a query that attends to no key (all masked) has nothing to pass its relevance to
  for (int64_t i = 0; i < nq * dv; ++i) g[i] = h.r[i] == T(0) || g[i] == T(0) ? T(0) : h.r[i] / g[i];
  const bool cp = p.rule == AttentionRule::CPLRP;
  const T half = cp ? T(1) : T(0.5);
  // R_V = ½ V ⊙ (Aᵀ G) (CP-LRP: all of it)
  gemm<T>(true, false, nk, dv, nq, a, nk, g, dv, T(0), h.rv, dv);
  for (int64_t i = 0; i < nk * dv; ++i) h.rv[i] *= half * h.v[i];
  if (cp) {  // A is a constant: nothing reaches Q and K
    std::fill(h.rq, h.rq + nq * d, T(0));
    std::fill(h.rk, h.rk + nk * d, T(0));
    return;
  }
  // R_A = ½ A ⊙ (G Vᵀ); the softmax: R_S = S ⊙ (R_A − A Σ_k R_A); Q Kᵀ by the uniform rule through
  // H = scale R_S / S, which is scale (R_A − A Σ_k R_A) where S ≠ 0 and 0 where S = 0 (no relevance to divide).
  gemm<T>(false, true, nq, nk, dv, g, dv, h.v, dv, T(0), m, nk);
  const T scale = T(p.scale);
  for (int64_t i = 0; i < nq; ++i) {
    const T* ai = a + i * nk;
    const T* si = s + i * nk;
    T* mi = m + i * nk;
    T row = T(0);
    for (int64_t j = 0; j < nk; ++j) {
      mi[j] = T(0.5) * ai[j] * mi[j];
      row += mi[j];
    }
    for (int64_t j = 0; j < nk; ++j) mi[j] = si[j] == T(0) ? T(0) : scale * (mi[j] - ai[j] * row);
  }
  // R_Q = ½ Q ⊙ (H K), R_K = ½ K ⊙ (Hᵀ Q)
  gemm<T>(false, false, nq, d, nk, m, nk, h.k, d, T(0), h.rq, d);
  for (int64_t i = 0; i < nq * d; ++i) h.rq[i] *= T(0.5) * h.q[i];
  gemm<T>(true, false, nk, d, nq, m, nk, h.q, d, T(0), h.rk, d);
  for (int64_t i = 0; i < nk * d; ++i) h.rk[i] *= T(0.5) * h.k[i];
}

template <class T>
void run(const AttentionProblem& p) {
  const int64_t tasks = p.batch * p.heads;
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim;
  const int64_t work = 3 * nq * nk + nq * dv;
  auto head = [&](int64_t t) {
    const int64_t b = t / p.heads, hh = t % p.heads;
    Head<T> h;
    h.q = static_cast<const T*>(p.query) + t * nq * d;
    h.k = static_cast<const T*>(p.key) + t * nk * d;
    h.v = static_cast<const T*>(p.value) + t * nk * dv;
    h.r = static_cast<const T*>(p.relevance) + t * nq * dv;
    h.mask = p.mask ? p.mask + b * p.mask_batch_stride + hh * p.mask_head_stride : nullptr;
    h.rq = static_cast<T*>(p.out_query) + t * nq * d;
    h.rk = static_cast<T*>(p.out_key) + t * nk * d;
    h.rv = static_cast<T*>(p.out_value) + t * nk * dv;
    return h;
  };
  const int threads = int(std::min<int64_t>(get_num_threads(), tasks));
  if (threads <= 1) {  // one head: its products use the threads
    Exec::Buffer<T> w(work);
    for (int64_t t = 0; t < tasks; ++t) head_relevance(p, head(t), w.get());
    return;
  }
  Exec::Buffer<T> w(work * threads);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < tasks; ++t) head_relevance(p, head(t), w.get() + work * omp_get_thread_num());
}

}  // namespace

void attention_relevance(const AttentionProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
