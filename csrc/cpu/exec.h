// How the shared rule code runs on the CPU: OpenMP loops, heap workspaces, single-threaded OpenBLAS calls
// split across OpenMP threads (one thread pool in the process, DESIGN.md §4).
#pragma once
#include <omp.h>

#include <cstdint>
#include <memory>

namespace lrptext::cpu {

// Loops shorter than this run on one thread: waking the pool costs more than the work.
constexpr int64_t kParallelGrain = 1 << 14;

// C[M, N] = op(A) op(B) + beta C, row-major. Splits the larger of M and N over the OpenMP threads
// unless called from inside a parallel region.
// Threads of every parallel region in our kernels (lrptext.set_num_threads); process-wide, unlike
// omp_set_num_threads, which only binds the calling thread.
int get_num_threads();

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

struct Exec {
  template <class T>
  class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(int64_t n) : data_(n > 0 ? new T[n] : nullptr) {}
    T* get() const { return data_.get(); }

   private:
    std::unique_ptr<T[]> data_;
  };

  template <class T>
  Buffer<T> alloc(int64_t n) const {
    return Buffer<T>(n);
  }

  template <class F>
  void map(int64_t n, F f) const {
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) f(i);
  }

  template <class F>
  bool any(int64_t n, F pred) const {
    bool found = false;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) reduction(|| : found) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) found = found || pred(i);
    return found;
  }

  template <class T>
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
            T beta, T* c, int64_t ldc) const {
    cpu::gemm<T>(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  }
};

}  // namespace lrptext::cpu
