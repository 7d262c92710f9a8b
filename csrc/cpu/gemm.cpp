#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "exec.h"

namespace lrptext::cpu {
namespace {

// ?gemm_ of a BLAS another library of the process brought (torch's MKL: set_blas). The Fortran interface takes every
// argument by address, so each dimension goes as the address of a 64-bit integer: a library with 32-bit integers
// (LP64) reads its low half, which on a little-endian CPU is the same number for dimensions below 2^31.
template <class T>
using FortranGemm = void (*)(const char*, const char*, const int64_t*, const int64_t*, const int64_t*, const T*,
                             const T*, const int64_t*, const T*, const int64_t*, const T*, T*, const int64_t*);
std::atomic<FortranGemm<float>> g_sgemm{nullptr};
std::atomic<FortranGemm<double>> g_dgemm{nullptr};

// C = op(A) op(B) + beta C, row-major, as the column-major Cᵀ = op(B)ᵀ op(A)ᵀ. Called where no parallel region
// runs, the product goes into one of a single thread: inside one, the library keeps to the calling thread (its
// own threads would come on top of ours).
template <class T>
void fortran_gemm(FortranGemm<T> f, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                  const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const T one = T(1);
  auto call = [&] { f(tb ? "T" : "N", ta ? "T" : "N", &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc); };
  if (omp_in_parallel()) return call();
#pragma omp parallel num_threads(1)
  call();
}

void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  if (FortranGemm<float> f = g_sgemm.load(std::memory_order_relaxed))
    return fortran_gemm(f, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(m),
                    blasint(n), blasint(k), 1.0f, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc));
}

void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double beta, double* c, int64_t ldc) {
  if (FortranGemm<double> f = g_dgemm.load(std::memory_order_relaxed))
    return fortran_gemm(f, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(m),
                    blasint(n), blasint(k), 1.0, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc));
}

// Whether f computes a small product with transposes right: [[1, 2, 3], [4, 5, 6]] [[1, 2], [3, 4], [5, 6]] and
// the same with the operands stored transposed, added to C.
template <class T>
bool computes_right(FortranGemm<T> f) {
  const T a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 2, 3, 4, 5, 6}, at[6] = {1, 4, 2, 5, 3, 6}, bt[6] = {1, 3, 5, 2, 4, 6};
  T c[4] = {0, 0, 0, 0}, c2[4] = {1, 1, 1, 1};
  fortran_gemm(f, false, false, 2, 2, 3, a, 3, b, 2, T(0), c, 2);
  fortran_gemm(f, true, true, 2, 2, 3, at, 2, bt, 3, T(1), c2, 2);
  const T expected[4] = {22, 28, 49, 64};
  for (int i = 0; i < 4; ++i)
    if (c[i] != expected[i] || c2[i] != expected[i] + 1) return false;
  return true;
}

void blas_gemv(bool trans, int64_t m, int64_t n, const float* a, int64_t lda, const float* x, int64_t incx, float beta,
               float* y, int64_t incy) {
  scipy_cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, blasint(m), blasint(n), 1.0f, a, blasint(lda), x,
                    blasint(incx), beta, y, blasint(incy));
}

void blas_gemv(bool trans, int64_t m, int64_t n, const double* a, int64_t lda, const double* x, int64_t incx,
               double beta, double* y, int64_t incy) {
  scipy_cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, blasint(m), blasint(n), 1.0, a, blasint(lda), x,
                    blasint(incx), beta, y, blasint(incy));
}

// A product with one row or one column of C is a matrix-vector product: GEMM would first copy (pack) the whole
// matrix, which for one sample through a wide dense layer costs far more than reading it once (measurements:
// docs/performance.md).
// y = op(M) v with op(M) [rows, cols]; M row-major with leading dimension ldm. A large one is split over the
// threads by rows of y: it streams the matrix from memory, which one core does not saturate.
template <class T>
void gemv(bool trans_m, int64_t rows, int64_t cols, const T* m, int64_t ldm, const T* v, int64_t incv, T beta, T* y,
          int64_t incy) {
  if (beta == T(0)) {  // y may be uninitialised: some OpenBLAS versions scale it by zero, keeping NaN garbage
    for (int64_t i = 0; i < rows; ++i) y[i * incy] = T(0);
    beta = T(1);
  }
  auto part = [&](int64_t lo, int64_t hi) {  // rows lo..hi of y: rows of M, or columns of M when transposed
    if (trans_m) blas_gemv(true, cols, hi - lo, m + lo, ldm, v, incv, beta, y + lo * incy, incy);
    else blas_gemv(false, hi - lo, cols, m + lo * ldm, ldm, v, incv, beta, y + lo * incy, incy);
  };
  const int threads = omp_in_parallel() ? 1 : get_num_threads();
  const int parts = int(std::min<int64_t>(threads, rows / 64));
  if (parts <= 1 || rows * cols < kParallelFlops) {
    part(0, rows);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(parts)
  for (int i = 0; i < parts; ++i) part(rows * i / parts, rows * (i + 1) / parts);
}

}  // namespace

template <class T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
          T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS leaves C untouched for k = 0 only when beta = 1
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  if (m == 1) {  // c[1, n] = op(B)^T-wise: y = op(B)^T a with op(B) [k, n]
    gemv<T>(!tb, n, k, b, ldb, a, ta ? lda : 1, beta, c, 1);
    return;
  }
  if (n == 1) {  // c[m, 1] = op(A) b
    gemv<T>(ta, m, k, a, lda, b, tb ? 1 : ldb, beta, c, ldc);
    return;
  }
  const int threads = omp_in_parallel() ? 1 : get_num_threads();
  if (threads == 1 || m * n * k < kParallelFlops) {
    blas(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int parts = int(std::min<int64_t>(threads, extent));
#pragma omp parallel for schedule(static) num_threads(parts)
  for (int part = 0; part < parts; ++part) {
    const int64_t lo = extent * part / parts, hi = extent * (part + 1) / parts;
    if (hi == lo) continue;
    if (split_rows) {  // rows lo..hi of op(A) and C
      const T* a_part = ta ? a + lo : a + lo * lda;
      blas(ta, tb, hi - lo, n, k, a_part, lda, b, ldb, beta, c + lo * ldc, ldc);
    } else {  // columns lo..hi of op(B) and C
      const T* b_part = tb ? b + lo * ldb : b + lo;
      blas(ta, tb, m, hi - lo, k, a, lda, b_part, ldb, beta, c + lo, ldc);
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float,
                          float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                           double, double*, int64_t);

namespace {
// OpenBLAS runs single-threaded inside our OpenMP threads: its own pthread pool alternating with
// libgomp's was several times slower than either alone (measurements: docs/performance.md).
int start_threads() {
  scipy_openblas_set_num_threads(1);
  return omp_get_max_threads();
}
std::atomic<int> g_threads{start_threads()};
}  // namespace

void set_num_threads(int n) { g_threads = n; }

bool set_blas(const char* library) {
  g_sgemm = nullptr;
  g_dgemm = nullptr;
  if (!library) return true;
  // (only a library the process has loaded already: RTLD_NOLOAD; the reference dlopen adds is kept, as the
  // functions stay in use)
  void* handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
  if (!handle) return false;
  auto sgemm = reinterpret_cast<FortranGemm<float>>(dlsym(handle, "sgemm_"));
  auto dgemm = reinterpret_cast<FortranGemm<double>>(dlsym(handle, "dgemm_"));
  if (!sgemm || !dgemm || !computes_right(sgemm) || !computes_right(dgemm)) {
    dlclose(handle);
    return false;
  }
  g_sgemm = sgemm;
  g_dgemm = dgemm;
  return true;
}

bool external_blas() { return g_sgemm.load() != nullptr; }

int get_num_threads() { return g_threads; }

}  // namespace lrptext::cpu
