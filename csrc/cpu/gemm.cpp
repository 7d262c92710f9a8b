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
// (LP64) reads its low half, which on a little-endian CPU is the same number for dimensions below 2^31 (on a
// big-endian one it would read 0, which computes_right catches).
template <class T>
using FortranGemm = void (*)(const char*, const char*, const int64_t*, const int64_t*, const int64_t*, const T*,
                             const T*, const int64_t*, const T*, const int64_t*, const T*, T*, const int64_t*);
// MKL's thread-local thread count: set to 1 around each product, as OpenBLAS is, so that the library adds no
// threads of its own to ours (torch sets MKL's count to its own threads, and with nested regions off a product
// inside ours would still be one thread, outside them not)
using SetLocalThreads = int (*)(int);
std::atomic<FortranGemm<float>> g_sgemm{nullptr};
std::atomic<FortranGemm<double>> g_dgemm{nullptr};
std::atomic<SetLocalThreads> g_set_local_threads{nullptr};

// C = op(A) op(B) + beta C, row-major, as the column-major Cᵀ = op(B)ᵀ op(A)ᵀ, on the calling thread alone.
template <class T>
void fortran_gemm(FortranGemm<T> f, SetLocalThreads set_local_threads, bool ta, bool tb, int64_t m, int64_t n,
                  int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const T one = T(1);
  const int previous = set_local_threads(1);
  f(tb ? "T" : "N", ta ? "T" : "N", &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
  set_local_threads(previous);
}

void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  if (FortranGemm<float> f = g_sgemm.load(std::memory_order_acquire))
    return fortran_gemm(f, g_set_local_threads.load(std::memory_order_relaxed), ta, tb, m, n, k, a, lda, b, ldb,
                        beta, c, ldc);
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(m),
                    blasint(n), blasint(k), 1.0f, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc));
}

void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double beta, double* c, int64_t ldc) {
  if (FortranGemm<double> f = g_dgemm.load(std::memory_order_acquire))
    return fortran_gemm(f, g_set_local_threads.load(std::memory_order_relaxed), ta, tb, m, n, k, a, lda, b, ldb,
                        beta, c, ldc);
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(m),
                    blasint(n), blasint(k), 1.0, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc));
}

// Whether f computes C[2, 3] = op(A) op(B) + beta C right against a plain loop, for every pair of transposes,
// with leading dimensions past the rows' ends, beta 0 over a C of NaN (which must not show) and beta 1.
template <class T>
bool computes_right(FortranGemm<T> f, SetLocalThreads set_local_threads) {
  constexpr int64_t m = 2, n = 3, k = 4, ld = 5;  // every operand stored with 5 elements per row
  T a[4 * ld], b[4 * ld];
  for (int64_t i = 0; i < 4 * ld; ++i) a[i] = T(i % 7 + 1), b[i] = T(i % 5 - 2);
  for (int trans = 0; trans < 4; ++trans) {
    const bool ta = trans & 1, tb = trans & 2;
    for (const T beta : {T(0), T(1)}) {
      T c[m * ld];
      for (T& x : c) x = beta == T(0) ? std::nan("") : T(3);
      fortran_gemm(f, set_local_threads, ta, tb, m, n, k, a, ld, b, ld, beta, c, ld);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          T want = beta == T(0) ? T(0) : T(3);
          for (int64_t l = 0; l < k; ++l)
            want += (ta ? a[l * ld + i] : a[i * ld + l]) * (tb ? b[j * ld + l] : b[l * ld + j]);
          if (!(c[i * ld + j] == want)) return false;  // (small integers: exact in any order)
        }
    }
  }
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
  // Only a library the process has loaded already (RTLD_NOLOAD). The reference this adds is never given back: the
  // functions may be running on another thread, and the library stays loaded for torch anyway.
  void* handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
  if (!handle) return false;
  auto sgemm = reinterpret_cast<FortranGemm<float>>(dlsym(handle, "sgemm_"));
  auto dgemm = reinterpret_cast<FortranGemm<double>>(dlsym(handle, "dgemm_"));
  auto set_local_threads = reinterpret_cast<SetLocalThreads>(dlsym(handle, "MKL_Set_Num_Threads_Local"));
  if (!sgemm || !dgemm || !set_local_threads || !computes_right(sgemm, set_local_threads) ||
      !computes_right(dgemm, set_local_threads))
    return false;
  g_set_local_threads = set_local_threads;
  g_dgemm.store(dgemm, std::memory_order_release);
  g_sgemm.store(sgemm, std::memory_order_release);
  return true;
}

bool external_blas() { return g_sgemm.load() != nullptr; }

int get_num_threads() { return g_threads; }

}  // namespace lrptext::cpu
