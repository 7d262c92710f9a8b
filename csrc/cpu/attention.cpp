// Scaled dot-product attention relevance on the CPU, one (batch, head) per task, in blocks of query rows: the
// scores, probabilities and relevance of A of a block live in three [rows, keys] workspaces of the thread that runs
// it, so no [batch, heads, queries, keys] tensor is ever held (csrc/include/lrptext/attention_rules.h has the row
// steps).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "exec.h"
#include "lrptext/attention_rules.h"
#include "lrptext/kernels.h"

namespace lrptext::cpu {
namespace {

// Query rows per block: a block's scores, probabilities and relevance of A ([rows, keys] each) stay in the core's
// cache between the products that write and read them (at 512 tokens a whole head's three matrices, 3 MiB, did
// not, and the kernel took 1.85x the time of SDPA's backward on one thread); at 512 keys, blocks of 16 rows were
// a little faster than of 32 (Intel Sapphire Rapids, 2 threads).
int64_t block_rows(int64_t nq, int64_t nk) { return std::min<int64_t>(nq, std::max<int64_t>(16, 8192 / nk)); }

// Elements of a thread's workspace: three [rows, keys] blocks, G of a block and its row sums, and K, Kᵀ, Vᵀ,
// Aᵀ G and Hᵀ Q of a head.
int64_t workspace_size(const AttentionProblem& p) {
  return 3 * block_rows(p.queries, p.keys) * p.keys + block_rows(p.queries, p.keys) * (p.value_dim + 1) +
         p.keys * (3 * p.dim + 2 * p.value_dim);
}

template <class T>
T dot(const T* x, const T* y, int64_t n) {
  T sum = T(0);
  for (int64_t j = 0; j < n; ++j) sum += x[j] * y[j];
  return sum;
}

// x [rows, cols] (rows ldx apart) into y = xᵀ [cols, rows] (contiguous)
template <class T>
void transpose_rows(const T* x, int64_t ldx, T* y, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) y[j * rows + i] = x[i * ldx + j];
}

// rows x cols of x (rows ldx apart) into y (contiguous)
template <class T>
void copy_rows(const T* x, int64_t ldx, T* y, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) std::copy(x + i * ldx, x + i * ldx + cols, y + i * cols);
}

// out[i, :] = factor * y[i, :] * sum[i, :] over `rows` rows of `cols` (y null: factor * sum[i, :]); out and y
// with their own row distances
template <class T>
void scale_rows(const T* sum, T* out, int64_t ldo, const T* y, int64_t ldy, int64_t rows, int64_t cols, T factor) {
  if (!y) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) out[i * ldo + j] = factor * sum[i * cols + j];
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * ldo + j] = sum[i * cols + j] * (factor * y[i * ldy + j]);
}

// out[i, :] = x[i, :] out[i, :] / st(x[i, :]) over `rows` rows of `cols`: R_X / X into the epsilon rule's quotient
// R_X / st(X) (the order of lrptext's divide_stabilized, so that both give the same bits)
template <class T>
void stabilized_quotient_rows(T* out, int64_t ldo, const T* x, int64_t ldx, int64_t rows, int64_t cols, T eps) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* x_row = x + i * ldx;
    T* out_row = out + i * ldo;
    for (int64_t j = 0; j < cols; ++j) out_row[j] = x_row[j] * out_row[j] / stabilize(x_row[j], eps);
  }
}

// The probabilities of a block's n queries when every query may attend to every key (no mask, not causal), from
// the forward pass's log-sum-exp: one vectorised loop per row, in AVX-512 where the CPU has it (exec.h; the
// exponential is most of the row steps' time).
LRPTEXT_AVX512_CLONE void unmasked_probability_rows(float* s, float* a, int64_t n, int64_t nk, float scale,
                                                    const float* lse, int64_t lse_stride) {
  for (int64_t i = 0; i < n; ++i)
    attention_probabilities_row_unmasked_from(s + i * nk, a + i * nk, nk, scale, lse[i * lse_stride]);
}

// The same without the scaled scores kept (gradient form reads only A).
LRPTEXT_AVX512_CLONE void unmasked_probabilities_only(const float* s, float* a, int64_t n, int64_t nk, float scale,
                                                     const float* lse, int64_t lse_stride) {
  for (int64_t i = 0; i < n; ++i) attention_probabilities_only_row_unmasked_from(s + i * nk, a + i * nk, nk, scale,
                                                                                  lse[i * lse_stride]);
}

template <class T>
void probability_rows(const AttentionProblem& p, int64_t t, int64_t i0, int64_t n, T* s, T* a, T scale, const T* lse,
                      int64_t lse_stride) {
  if constexpr (std::is_same_v<T, float>) {
    if (lse && !p.mask && !p.causal) {
      if (p.gradient_form) return unmasked_probabilities_only(s, a, n, p.keys, scale, lse + i0 * lse_stride, lse_stride);
      return unmasked_probability_rows(s, a, n, p.keys, scale, lse + i0 * lse_stride, lse_stride);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* mask_row = attention_mask_row(p, t, i0 + i);
    const int64_t allowed_to = attention_allowed_to(p, i0 + i);
    T* s_row = s + i * p.keys;
    T* a_row = a + i * p.keys;
    if (lse) attention_probabilities_row_from(s_row, a_row, mask_row, allowed_to, p.keys, scale,
                                              lse[(i0 + i) * lse_stride]);
    else attention_probabilities_row(s_row, a_row, mask_row, allowed_to, p.keys, scale);
  }
}

// The uniform rule's factor H of a block's n queries (attention_score_factor_row), in AVX-512 where the CPU has
// it for float.
LRPTEXT_AVX512_CLONE void score_factor_rows(const float* a, const float* s, float* m, int64_t n, int64_t nk,
                                            float scale) {
  for (int64_t i = 0; i < n; ++i) attention_score_factor_row(a + i * nk, s + i * nk, m + i * nk, nk, scale);
}

void score_factor_rows(const double* a, const double* s, double* m, int64_t n, int64_t nk, double scale) {
  for (int64_t i = 0; i < n; ++i) attention_score_factor_row(a + i * nk, s + i * nk, m + i * nk, nk, scale);
}

// The same in gradient form, each row's Σ_k R_A given (attention_score_gradient_row).
LRPTEXT_AVX512_CLONE void score_gradient_rows(const float* a, float* m, const float* row_sums, int64_t n, int64_t nk,
                                              float scale) {
  for (int64_t i = 0; i < n; ++i) attention_score_gradient_row(a + i * nk, m + i * nk, row_sums[i], nk, scale);
}

void score_gradient_rows(const double* a, double* m, const double* row_sums, int64_t n, int64_t nk, double scale) {
  for (int64_t i = 0; i < n; ++i) attention_score_gradient_row(a + i * nk, m + i * nk, row_sums[i], nk, scale);
}

template <class T>
void head_relevance(const AttentionProblem& p, int64_t t, T* work) {
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim, rows = block_rows(nq, nk);
  const auto [q, k_in, v_in, r, rq, rk, rv, ldq, ldk_in, ldv_in, ldr, ldrq, ldrk, ldrv] = attention_heads<T>(p, t);
  T* s = work;           // scaled scores of the block's queries
  T* a = s + rows * nk;  // their probabilities
  T* m = a + rows * nk;  // G Vᵀ, then the factor H of the uniform rule at Q Kᵀ
  T* g = m + rows * nk;  // O = A V, then G = R_O / O
  T* row_sums = g + rows * dv;  // gradient form: Σ_k R_A of each query, ½ Σ_j G_ij O_ij
  // Every block reads all of K and V and adds to Aᵀ G and Hᵀ Q: they live contiguous in the workspace (heads
  // split from [tokens, heads, dim] have rows heads x dim apart, which spreads a head over several times the
  // cache it fills). The products Q Kᵀ and G Vᵀ read K and V transposed, [dim, keys], as BLAS packs them fastest:
  // at 512 tokens and 32 dimensions a head's products took a quarter less time than with the transposed operand.
  T* k_own = row_sums + rows;
  T* kt = k_own + nk * d;
  T* vt = kt + nk * d;
  T* sum_v = vt + nk * dv;  // Aᵀ G
  T* sum_k = sum_v + nk * dv;  // Hᵀ Q
  const T* k = k_in;
  int64_t ldk = ldk_in;
  if (ldk != d) copy_rows(k_in, ldk_in, k_own, nk, d), k = k_own, ldk = d;
  transpose_rows(k, ldk, kt, nk, d);
  transpose_rows(v_in, ldv_in, vt, nk, dv);
  const T scale = T(p.scale);
  const bool cp = p.rule == AttentionRule::CPLRP, gradients = p.gradient_form;
  // the forward pass's O and log-sum-exp, when given, spare each row's maximum and sum and the product A V
  const T* saved_o = p.output ? static_cast<const T*>(p.output) + head_offset(p.output_strides, p.heads, t) : nullptr;
  const T* lse = p.logsumexp ? static_cast<const T*>(p.logsumexp) + head_offset(p.logsumexp_strides, p.heads, t)
                             : nullptr;
  const int64_t ldo = saved_o ? p.output_strides.row : dv, lse_stride = p.logsumexp_strides.row;
  for (int64_t i0 = 0; i0 < nq; i0 += rows) {
    const int64_t n = std::min(rows, nq - i0);
    const T accumulate = i0 == 0 ? T(0) : T(1);  // Aᵀ G and Hᵀ Q sum over the blocks of queries
    gemm<T>(false, false, n, nk, d, q + i0 * ldq, ldq, kt, nk, T(0), s, nk);
    probability_rows(p, t, i0, n, s, a, scale, lse, lse_stride);
    const T* o = saved_o ? saved_o + i0 * ldo : g;
    if (!saved_o) gemm<T>(false, true, n, dv, nk, a, nk, vt, nk, T(0), g, dv);
    // G of the block: the relevance's own rows in gradient form, else R_O / O
    const T* gb = gradients ? r + i0 * ldr : g;
    const int64_t ldg = gradients ? ldr : dv;
    for (int64_t i = 0; i < n; ++i) {
      const T* r_row = r + (i0 + i) * ldr;
      if (gradients) {  // (a query that may attend to no key has A = 0 and an O that may be NaN: H is 0 there;
                        // an overflowed total stays infinite and shows)
        const T total = T(0.5) * dot(r_row, o + i * ldo, dv);
        row_sums[i] = std::isnan(total) ? T(0) : total;
      } else {
        for (int64_t j = 0; j < dv; ++j) g[i * dv + j] = attention_output_share(r_row[j], o[i * ldo + j]);
      }
    }
    gemm<T>(true, false, nk, dv, n, a, nk, gb, ldg, accumulate, sum_v, dv);
    if (cp) continue;
    gemm<T>(false, false, n, nk, dv, gb, ldg, vt, nk, T(0), m, nk);
    if (gradients) score_gradient_rows(a, m, row_sums, n, nk, scale);
    else score_factor_rows(a, s, m, n, nk, scale);
    gemm<T>(false, false, n, d, nk, m, nk, k, ldk, T(0), rq + i0 * ldrq, ldrq);
    gemm<T>(true, false, nk, d, n, m, nk, q + i0 * ldq, ldq, accumulate, sum_k, d);
  }
  // R_V = ½ V ⊙ (Aᵀ G) (CP-LRP: all of it); R_Q = ½ Q ⊙ (H K), R_K = ½ K ⊙ (Hᵀ Q); in gradient form without
  // the products with V, Q and K
  scale_rows(sum_v, rv, ldrv, gradients ? nullptr : v_in, ldv_in, nk, dv, cp ? T(1) : T(0.5));
  const bool quotients = gradients && p.quotient_epsilon >= 0;
  const T eps = T(p.quotient_epsilon);
  if (quotients) stabilized_quotient_rows(rv, ldrv, v_in, ldv_in, nk, dv, eps);
  if (cp) {  // A is a constant: nothing reaches Q and K
    for (int64_t i = 0; i < nq; ++i) std::fill(rq + i * ldrq, rq + i * ldrq + d, T(0));
    for (int64_t i = 0; i < nk; ++i) std::fill(rk + i * ldrk, rk + i * ldrk + d, T(0));
    return;
  }
  for (int64_t i = 0; i < nq; ++i)  // H K was written straight into R_Q's rows
    for (int64_t j = 0; j < d; ++j) rq[i * ldrq + j] *= T(0.5) * (gradients ? T(1) : q[i * ldq + j]);
  scale_rows(sum_k, rk, ldrk, gradients ? nullptr : k, ldk, nk, d, T(0.5));
  if (quotients) {
    stabilized_quotient_rows(rq, ldrq, q, ldq, nq, d, eps);
    stabilized_quotient_rows(rk, ldrk, k, ldk, nk, d, eps);
  }
}

template <class T>
void run(const AttentionProblem& p) {
  const int64_t tasks = p.batch * p.heads;
  const int64_t work = workspace_size(p);
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
