// Scaled dot-product attention relevance on CUDA: each product one strided-batched cuBLAS GEMM over a chunk of
// heads, the row steps one thread per query (csrc/include/lrptext/attention_rules.h). A chunk's scores,
// probabilities and relevance of A are held once, in workspaces of at most 256 MiB.
#include <algorithm>

#include "exec.cuh"
#include "lrptext/attention_rules.h"
#include "lrptext/kernels.h"

namespace lrptext::cuda {
namespace {

template <class T>
void run(const Exec& ex, const AttentionProblem& p) {
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim, heads = p.batch * p.heads;
  const int64_t per_head = 3 * nq * nk + nq * dv;
  const int64_t chunk = std::min<int64_t>(heads, std::max<int64_t>(1, (int64_t(256) << 20) / (per_head * sizeof(T))));
  auto work = ex.alloc<T>(per_head * chunk);
  const bool cp = p.rule == AttentionRule::CPLRP;
  const T scale = T(p.scale), half = cp ? T(1) : T(0.5);
  const AttentionProblem problem = p;  // captured by value in the device lambdas
  for (int64_t first = 0; first < heads; first += chunk) {
    const int64_t count = std::min(chunk, heads - first);
    T* s = work.get();
    T* a = s + count * nq * nk;
    T* m = a + count * nq * nk;
    T* g = m + count * nq * nk;
    const AttentionHeads<T> heads_of = attention_heads<T>(p, first);
    const T *q = heads_of.q, *k = heads_of.k, *v = heads_of.v, *r = heads_of.r;
    T *rq = heads_of.rq, *rk = heads_of.rk, *rv = heads_of.rv;
    ex.gemm_batched<T>(false, true, nq, nk, d, q, d, nq * d, k, d, nk * d, T(0), s, nk, nq * nk, count);
    ex.map(count * nq, LRPT_LAMBDA(int64_t row) {
      const int64_t i = row % nq;
      attention_probabilities_row(s + row * nk, a + row * nk, attention_mask_row(problem, first + row / nq, i),
                                  attention_allowed_to(problem, i), nk, scale);
    });
    ex.gemm_batched<T>(false, false, nq, dv, nk, a, nk, nq * nk, v, dv, nk * dv, T(0), g, dv, nq * dv, count);
    ex.map(count * nq * dv, LRPT_LAMBDA(int64_t i) { g[i] = attention_output_share(r[i], g[i]); });
    // R_V = ½ V ⊙ (Aᵀ G) (CP-LRP: all of it)
    ex.gemm_batched<T>(true, false, nk, dv, nq, a, nk, nq * nk, g, dv, nq * dv, T(0), rv, dv, nk * dv, count);
    ex.map(count * nk * dv, LRPT_LAMBDA(int64_t i) { rv[i] *= half * v[i]; });
    if (cp) {  // A is a constant: nothing reaches Q and K
      check(cudaMemsetAsync(rq, 0, size_t(count * nq * d) * sizeof(T), ex.stream), "cudaMemsetAsync");
      check(cudaMemsetAsync(rk, 0, size_t(count * nk * d) * sizeof(T), ex.stream), "cudaMemsetAsync");
      continue;
    }
    ex.gemm_batched<T>(false, true, nq, nk, dv, g, dv, nq * dv, v, dv, nk * dv, T(0), m, nk, nq * nk, count);
    ex.map(count * nq, LRPT_LAMBDA(int64_t row) {
      attention_score_factor_row(a + row * nk, s + row * nk, m + row * nk, nk, scale);
    });
    // R_Q = ½ Q ⊙ (H K), R_K = ½ K ⊙ (Hᵀ Q)
    ex.gemm_batched<T>(false, false, nq, d, nk, m, nk, nq * nk, k, d, nk * d, T(0), rq, d, nq * d, count);
    ex.map(count * nq * d, LRPT_LAMBDA(int64_t i) { rq[i] *= T(0.5) * q[i]; });
    ex.gemm_batched<T>(true, false, nk, d, nq, m, nk, nq * nk, q, d, nq * d, T(0), rk, d, nk * d, count);
    ex.map(count * nk * d, LRPT_LAMBDA(int64_t i) { rk[i] *= T(0.5) * k[i]; });
  }
}

}  // namespace

void attention_relevance(const AttentionProblem& p) {
  DeviceGuard guard(p.relevance);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  if (p.dtype == DType::Float32) run<float>(ex, p);
  else run<double>(ex, p);
}

}  // namespace lrptext::cuda
