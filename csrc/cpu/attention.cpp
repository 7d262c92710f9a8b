// Scaled dot-product attention relevance on the CPU, one (batch, head) per task, in blocks of query rows: the
// scores, probabilities and relevance of A of a block live in three [rows, keys] workspaces of the thread that runs
// it, so no [batch, heads, queries, keys] tensor is ever held (csrc/include/lrptext/attention_rules.h has the row
// steps).
#include <algorithm>
#include <cmath>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "exec.h"
#include "lrptext/attention_rules.h"
#include "lrptext/kernels.h"

namespace lrptext::cpu {
namespace {

// Query rows per block: a block's scores, probabilities and relevance of A ([rows, keys] each) stay in the core's
// cache between the products that write and read them (at 512 tokens a whole head's three matrices, 3 MiB, did
// not, and the kernel took 1.85x the time of SDPA's backward on one thread); at 512 keys, blocks of 16 rows were
// a little faster than of 32 (Intel Sapphire Rapids, 2 threads). With torch's MKL running the products
// (set_blas), 64 rows at 512 keys and 128 at 256 took 0.96x the time of 16 and 32.
int64_t block_rows(int64_t nq, int64_t nk) {
  const int64_t elements = external_blas() ? 32768 : 8192;  // of each [rows, keys] block
  return std::min<int64_t>(nq, std::max<int64_t>(16, elements / nk));
}

// Elements of a thread's workspace for blocks of `rows` queries: three [rows, keys] blocks, G of a block and its
// row sums, and K, Kᵀ, Vᵀ, Aᵀ G and Hᵀ Q of a head.
int64_t workspace_size(const AttentionProblem& p, int64_t rows) {
  return 3 * rows * p.keys + rows * (p.value_dim + 1) + p.keys * (3 * p.dim + 2 * p.value_dim);
}

template <class T>
T dot(const T* x, const T* y, int64_t n) {
  T sum = T(0);
  for (int64_t j = 0; j < n; ++j) sum += x[j] * y[j];
  return sum;
}

// Rows [first, last) of x (cols elements each, ld apart) on their way into the cache, to be read or (write) written:
// a head's rows in [tokens, heads x dim] lie pages apart, where the hardware prefetchers stop, and each row would
// wait for its own miss (at batch 32 x 128 tokens, where the operands come from memory, prefetching took a tenth
// off the kernel's time).
template <bool write = false, class T>
inline void prefetch_rows(const T* x, int64_t ld, int64_t first, int64_t last, int64_t cols) {
  for (int64_t i = first; i < last; ++i) prefetch_row<write>(x + i * ld, cols);
}

#if defined(__AVX2__)
// An 8 x 8 block of x (rows ldx apart) into y transposed (rows ldy apart), in registers: pairs of rows
// interleaved, then pairs of pairs, then the 128-bit halves swapped into place.
inline void transpose_8x8(const float* x, int64_t ldx, float* y, int64_t ldy) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + i * ldx);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {  // rows h..h+3: columns c and c + 4 of them in r[h + c]
    r[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(y + c * ldy, _mm256_permute2f128_ps(r[c], r[c + 4], 0x20));
    _mm256_storeu_ps(y + (c + 4) * ldy, _mm256_permute2f128_ps(r[c], r[c + 4], 0x31));
  }
}
#endif

// x [rows, cols] (rows ldx apart) into y = xᵀ [cols, rows] (contiguous), and into a contiguous copy where `copy`
// is given, in tiles of 16 rows: a tile stays in L1 while each of y's rows gets 16 elements at once (row by row,
// every element went to another cache line; at 512 tokens the copies of K and V took as long as one of the
// products). Float in 8 x 8 blocks in registers where the build has AVX2 (element by element, the transposes
// took a twentieth of the kernel's time at 512 tokens).
template <class T>
void transpose_rows(const T* x, int64_t ldx, T* y, int64_t rows, int64_t cols, T* copy = nullptr) {
  constexpr int64_t tile = 16;
  prefetch_rows(x, ldx, 0, std::min(rows, tile), cols);
  for (int64_t i0 = 0; i0 < rows; i0 += tile) {
    const int64_t i1 = std::min(rows, i0 + tile);
    prefetch_rows(x, ldx, i1, std::min(rows, i1 + tile), cols);
    if (copy)
      for (int64_t i = i0; i < i1; ++i) std::copy(x + i * ldx, x + i * ldx + cols, copy + i * cols);
    int64_t j0 = 0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<T, float>) {
      if (i1 - i0 == tile) {
        for (; j0 + 8 <= cols; j0 += 8)
          for (int64_t i = i0; i < i1; i += 8) transpose_8x8(x + i * ldx + j0, ldx, y + j0 * rows + i, rows);
      }
    }
#endif
    for (int64_t j = j0; j < cols; ++j)
      for (int64_t i = i0; i < i1; ++i) y[j * rows + i] = x[i * ldx + j];
  }
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

// out[i, :] = x[i, :] (factor g[i, :]) / st(x[i, :]) over `rows` rows of `cols`, g rows ldg apart (g may be out):
// a head's R_X / X (gradient form), scaled, into the epsilon rule's quotient R_X / st(X) in one pass
// (stabilized_quotient: the same bits as divide_stabilized). In AVX-512 where the CPU has it, for float.
template <class T>
inline __attribute__((always_inline)) void quotient_rows(T* out, int64_t ldo, const T* g, int64_t ldg, const T* x,
                                                         int64_t ldx, int64_t rows, int64_t cols, T factor, T eps) {
  constexpr int64_t ahead = 8;
  prefetch_rows<true>(out, ldo, 0, std::min(rows, ahead), cols);
  for (int64_t i = 0; i < rows; ++i) {
    if (i + ahead < rows) prefetch_rows<true>(out, ldo, i + ahead, i + ahead + 1, cols);
    const T* x_row = x + i * ldx;
    const T* g_row = g + i * ldg;
    T* out_row = out + i * ldo;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) out_row[j] = stabilized_quotient(x_row[j], factor * g_row[j], x_row[j], eps);
  }
}

LRPTEXT_AVX512_CLONE void stabilized_quotient_rows(float* out, int64_t ldo, const float* g, int64_t ldg,
                                                   const float* x, int64_t ldx, int64_t rows, int64_t cols,
                                                   float factor, float eps) {
  quotient_rows(out, ldo, g, ldg, x, ldx, rows, cols, factor, eps);
}

void stabilized_quotient_rows(double* out, int64_t ldo, const double* g, int64_t ldg, const double* x, int64_t ldx,
                              int64_t rows, int64_t cols, double factor, double eps) {
  quotient_rows(out, ldo, g, ldg, x, ldx, rows, cols, factor, eps);
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
void head_relevance(const AttentionProblem& p, int64_t t, T* work, int64_t rows) {
  const int64_t nq = p.queries, nk = p.keys, d = p.dim, dv = p.value_dim;
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
  T* k_copy = ldk_in != d ? k_own : nullptr;  // K's rows contiguous where they are not
  transpose_rows(k_in, ldk_in, kt, nk, d, k_copy);
  const T* k = k_copy ? k_copy : k_in;
  const int64_t ldk = k_copy ? d : ldk_in;
  transpose_rows(v_in, ldv_in, vt, nk, dv);
  const T scale = T(p.scale);
  const bool cp = p.rule == AttentionRule::CPLRP, gradients = p.gradient_form;
  // the forward pass's O and log-sum-exp, when given, spare each row's maximum and sum and the product A V
  const T* saved_o = p.output ? static_cast<const T*>(p.output) + head_offset(p.output_strides, p.heads, t) : nullptr;
  const T* lse = p.logsumexp ? static_cast<const T*>(p.logsumexp) + head_offset(p.logsumexp_strides, p.heads, t)
                             : nullptr;
  const int64_t ldo = saved_o ? p.output_strides.row : dv, lse_stride = p.logsumexp_strides.row;
  auto prefetch_block = [&](int64_t first, int64_t last) {  // a block's rows of Q, the relevance, O and R_Q
    prefetch_rows(q, ldq, first, last, d);
    prefetch_rows(r, ldr, first, last, dv);
    if (saved_o) prefetch_rows(saved_o, ldo, first, last, dv);
    prefetch_rows<true>(rq, ldrq, first, last, d);
  };
  prefetch_block(0, std::min(rows, nq));
  for (int64_t i0 = 0; i0 < nq; i0 += rows) {
    const int64_t n = std::min(rows, nq - i0);
    const T accumulate = i0 == 0 ? T(0) : T(1);  // Aᵀ G and Hᵀ Q sum over the blocks of queries
    prefetch_block(i0 + n, std::min(nq, i0 + n + rows));
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
  // the products with V, Q and K, or (quotients) those divided by st(V), st(Q), st(K)
  const bool quotients = gradients && p.quotient_epsilon >= 0;
  const T eps = T(p.quotient_epsilon), v_share = cp ? T(1) : T(0.5);
  if (quotients) stabilized_quotient_rows(rv, ldrv, sum_v, dv, v_in, ldv_in, nk, dv, v_share, eps);
  else scale_rows(sum_v, rv, ldrv, gradients ? nullptr : v_in, ldv_in, nk, dv, v_share);
  if (cp) {  // A is a constant: nothing reaches Q and K
    for (int64_t i = 0; i < nq; ++i) std::fill(rq + i * ldrq, rq + i * ldrq + d, T(0));
    for (int64_t i = 0; i < nk; ++i) std::fill(rk + i * ldrk, rk + i * ldrk + d, T(0));
    return;
  }
  // H K was written straight into R_Q's rows
  if (quotients) {
    stabilized_quotient_rows(rq, ldrq, rq, ldrq, q, ldq, nq, d, T(0.5), eps);
    stabilized_quotient_rows(rk, ldrk, sum_k, d, k, ldk, nk, d, T(0.5), eps);
    return;
  }
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < d; ++j) rq[i * ldrq + j] *= T(0.5) * (gradients ? T(1) : q[i * ldq + j]);
  scale_rows(sum_k, rk, ldrk, gradients ? nullptr : k, ldk, nk, d, T(0.5));
}

template <class T>
void run(const AttentionProblem& p) {
  const int64_t tasks = p.batch * p.heads;
  const int64_t rows = block_rows(p.queries, p.keys);  // (once: the workspace is sized for it)
  const int64_t work = workspace_size(p, rows);
  const int threads = int(std::min<int64_t>(get_num_threads(), tasks));
  if (threads <= 1) {  // one head: its products use the threads
    Exec::Buffer<T> w(work);
    for (int64_t t = 0; t < tasks; ++t) head_relevance(p, t, w.get(), rows);
    return;
  }
  Exec::Buffer<T> w(work * threads);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < tasks; ++t) head_relevance(p, t, w.get() + work * omp_get_thread_num(), rows);
}

}  // namespace

void attention_relevance(const AttentionProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
