// Scaled dot-product attention relevance on the CPU, one (batch, head) per task: the scores, probabilities and the
// relevance of A of one head live in three [queries, keys] workspaces of the thread that runs it, so no
// [batch, heads, queries, keys] tensor is ever held (csrc/include/lrptext/attention_rules.h has the row steps).
#include <algorithm>

#include "exec.h"
#include "lrptext/attention_rules.h"
#include "lrptext/kernels.h"

namespace lrptext::cpu {
namespace {

template <class T>
void head_relevance(const AttentionProblem& p, int64_t t, T* work) {
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim;
  const T* q = static_cast<const T*>(p.query) + t * nq * d;
  const T* k = static_cast<const T*>(p.key) + t * nk * d;
  const T* v = static_cast<const T*>(p.value) + t * nk * dv;
  const T* r = static_cast<const T*>(p.relevance) + t * nq * dv;
  T* rq = static_cast<T*>(p.out_query) + t * nq * d;
  T* rk = static_cast<T*>(p.out_key) + t * nk * d;
  T* rv = static_cast<T*>(p.out_value) + t * nk * dv;
  T* s = work;         // scaled scores
  T* a = s + nq * nk;  // probabilities
  T* m = a + nq * nk;  // G Vᵀ, then the factor H of the uniform rule at Q Kᵀ
  T* g = m + nq * nk;  // O = A V, then G = R_O / O
  const T scale = T(p.scale);
  gemm<T>(false, true, nq, nk, d, q, d, k, d, T(0), s, nk);
  for (int64_t i = 0; i < nq; ++i)
    attention_probabilities_row(s + i * nk, a + i * nk, attention_mask_row(p, t, i), attention_allowed_to(p, i), nk,
                                scale);
  gemm<T>(false, false, nq, dv, nk, a, nk, v, dv, T(0), g, dv);
  for (int64_t i = 0; i < nq * dv; ++i) g[i] = attention_output_share(r[i], g[i]);
  const bool cp = p.rule == AttentionRule::CPLRP;
  const T half = cp ? T(1) : T(0.5);
  // R_V = ½ V ⊙ (Aᵀ G) (CP-LRP: all of it)
  gemm<T>(true, false, nk, dv, nq, a, nk, g, dv, T(0), rv, dv);
  for (int64_t i = 0; i < nk * dv; ++i) rv[i] *= half * v[i];
  if (cp) {  // A is a constant: nothing reaches Q and K
    std::fill(rq, rq + nq * d, T(0));
    std::fill(rk, rk + nk * d, T(0));
    return;
  }
  gemm<T>(false, true, nq, nk, dv, g, dv, v, dv, T(0), m, nk);
  for (int64_t i = 0; i < nq; ++i) attention_score_factor_row(a + i * nk, s + i * nk, m + i * nk, nk, scale);
  // R_Q = ½ Q ⊙ (H K), R_K = ½ K ⊙ (Hᵀ Q)
  gemm<T>(false, false, nq, d, nk, m, nk, k, d, T(0), rq, d);
  for (int64_t i = 0; i < nq * d; ++i) rq[i] *= T(0.5) * q[i];
  gemm<T>(true, false, nk, d, nq, m, nk, q, d, T(0), rk, d);
  for (int64_t i = 0; i < nk * d; ++i) rk[i] *= T(0.5) * k[i];
}

template <class T>
void run(const AttentionProblem& p) {
  const int64_t tasks = p.batch * p.heads;
  const int64_t work = 3 * p.queries * p.keys + p.queries * p.value_dim;
  const int threads = int(std::min<int64_t>(get_num_threads(), tasks));
  if (threads <= 1) {  // one head: its products use the threads
    Exec::Buffer<T> w(work);
    for (int64_t t = 0; t < tasks; ++t) head_relevance(p, t, w.get());
    return;
  }
  Exec::Buffer<T> w(work * threads);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < tasks; ++t) head_relevance(p, t, w.get() + work * omp_get_thread_num());
}

}  // namespace

void attention_relevance(const AttentionProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
