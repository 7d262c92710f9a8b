// How the shared rule code runs on the CPU: OpenMP loops, heap workspaces, single-threaded OpenBLAS calls
// split across OpenMP threads (one thread pool in the process; docs/performance.md, "Measurements behind
// decisions").
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

namespace lrptext::cpu {

// Loops shorter than this run on one thread: waking the pool costs more than the work (with
// OMP_WAIT_POLICY=PASSIVE, as on shared machines; measurements: docs/performance.md).
constexpr int64_t kParallelGrain = 1 << 16;
// The same for products: below this many multiply-adds one thread is faster (measurements: docs/performance.md).
constexpr int64_t kParallelFlops = 1 << 21;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A function's loops in a wider instruction set where the CPU has it (chosen once, at load time), else in the one
// the library is built for; GCC's function clones, other compilers build the baseline only. AVX2 + FMA: the
// embedding-bag kernel (embedding.cpp). AVX-512: float loops with many operations per element (an exponential, Φ),
// where 16-wide vectors halved GELU's product (elementwise.cpp) and attention's exponentials (Sapphire Rapids);
// streaming loops gain nothing from it, they wait on memory.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LRPTEXT_AVX2_CLONE __attribute__((target_clones("arch=x86-64-v3", "default")))
#define LRPTEXT_AVX512_CLONE __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define LRPTEXT_AVX2_CLONE
#define LRPTEXT_AVX512_CLONE
#endif

// Fetches the cache lines of a row of d elements before it is read (or, `write`, written): for rows the hardware
// prefetchers cannot follow, scattered (an embedding table's) or more than a page apart (attention's heads).
template <bool write = false, class T>
inline void prefetch_row(const T* row, int64_t d) {
  if (d <= 0) return;
  const char* first = reinterpret_cast<const char*>(row);
  const char* last = reinterpret_cast<const char*>(row + d) - 1;
  for (const char* line = first; line <= last; line += 64) __builtin_prefetch(line, write ? 1 : 0);
  __builtin_prefetch(last, write ? 1 : 0);  // a row that does not start on a line boundary ends on one more line
}

// C[M, N] = op(A) op(B) + beta C, row-major. Splits the larger of M and N over the OpenMP threads
// unless called from inside a parallel region.
// Threads of every parallel region in our kernels (lrptext.set_num_threads); process-wide, unlike
// omp_set_num_threads, which only binds the calling thread.
int get_num_threads();

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

// Large workspaces come from mappings kept between kernel calls (workspace.cpp): the smallest kept one that is
// large enough, else a fresh one.
struct Mapping {
  void* data;
  size_t bytes;
};
Mapping take_mapping(size_t bytes);
void give_back_mapping(Mapping m);

struct Exec {
  // Outputs per chunk of samples where a rule holds a product of the layer's output size (gamma's denominator).
  static constexpr int64_t kChunkOutputs = int64_t(1) << 20;

  // A kernel's workspace. Large ones are mappings (above), not malloc's heap: there, freed workspaces of one
  // layer stayed resident and the next layer's, of another size, came on top (measurements: docs/performance.md).
  template <class T>
  class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(int64_t n) : bytes_(n > 0 ? size_t(n) * sizeof(T) : 0) {
      if (bytes_ >= kMappedBytes) {
        const Mapping m = take_mapping(bytes_);
        data_ = static_cast<T*>(m.data);
        bytes_ = m.bytes;  // what is given back: the mapping taken may be larger than asked
      } else if (bytes_) {
        data_ = static_cast<T*>(::operator new(bytes_, std::align_val_t{kAlignment}));
      }
#ifdef LRPTEXT_POISON_WORKSPACES  // the sanitizer build: a kernel that reads a workspace before writing it sees NaN
      std::fill_n(reinterpret_cast<unsigned char*>(data_), bytes_, static_cast<unsigned char>(0xFF));
#endif
    }
    Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    Buffer& operator=(Buffer&& o) noexcept {
      release();
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
      return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { release(); }
    T* get() const { return data_; }

   private:
    static constexpr size_t kMappedBytes = size_t(1) << 22;
    // Workspaces start on a cache line (operator new gives 16 bytes): at 16 mod 64 every vector load of the
    // attention kernel's blocks split two lines, and the kernel took 1.2x its time in about half the processes
    // (512 tokens, Sapphire Rapids; docs/performance.md). Element types are numbers: nothing to construct.
    static constexpr size_t kAlignment = 64;
    void release() {
      if (data_ && bytes_ >= kMappedBytes) give_back_mapping({data_, bytes_});
      else if (data_) ::operator delete(data_, std::align_val_t{kAlignment});
      data_ = nullptr;
    }
    T* data_ = nullptr;
    size_t bytes_ = 0;
  };

  template <class T>
  Buffer<T> alloc(int64_t n) const {
    return Buffer<T>(n);
  }

  // Each thread runs its own copy of f (here and below): the loops store through pointers f captured, which
  // could alias a closure shared by the threads, so the compiler reloaded every capture per element and kept
  // the loop scalar (measurements: docs/performance.md).
  // `cost`: the elements each f(i) touches (a row's width), so that n rows of work are split like n * cost elements.
  template <class F>
  void map(int64_t n, F f, int64_t cost = 1) const {
#pragma omp parallel num_threads(get_num_threads()) if (n * cost >= kParallelGrain)
    {
      const F own = f;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) own(i);
    }
  }

  // f(i, ch) for every element i of a [B, C, P] tensor, ch its channel: a loop per channel row, not a
  // division per element.
  template <class F>
  void map_channels(int64_t B, int64_t C, int64_t P, F f) const {
#pragma omp parallel num_threads(get_num_threads()) if (B * C * P >= kParallelGrain)
    {
      const F own = f;
#pragma omp for schedule(static)
      for (int64_t row = 0; row < B * C; ++row) {
        const int64_t ch = row % C;
        for (int64_t i = row * P; i < (row + 1) * P; ++i) own(i, ch);
      }
    }
  }

  // Each sample's N elements in blocks (of at least min_block) so that B samples give every thread one:
  // {block size, blocks per sample}.
  static std::pair<int64_t, int64_t> sample_blocks(int64_t B, int64_t N, int64_t min_block, int threads) {
    const int64_t per_sample = (threads + B - 1) / B;
    const int64_t block = std::max<int64_t>(min_block, (N + per_sample - 1) / per_sample);
    return {block, (N + block - 1) / block};
  }

  // f(i, j) for every element i of a [B, N] tensor, j = i % N its place in the sample (to read a per-sample
  // constant): a loop per sample, in blocks when the samples are fewer than the threads.
  template <class F>
  void map_samples(int64_t B, int64_t N, F f) const {
    if (B <= 0 || N <= 0) return;
    const int threads = get_num_threads();
    const auto [block, blocks] = sample_blocks(B, N, 1024, threads);
#pragma omp parallel num_threads(threads) if (B * N >= kParallelGrain)
    {
      const F own = f;
#pragma omp for schedule(static)
      for (int64_t item = 0; item < B * blocks; ++item) {
        const int64_t b = item / blocks, j0 = (item % blocks) * block, j1 = std::min(N, j0 + block);
        for (int64_t j = j0; j < j1; ++j) own(b * N + j, j);
      }
    }
  }

  // out[b, q] = sum over ch of f((b * C + ch) * P + q, ch), summed in channel order. Channels run in the middle
  // loop so that the inner one walks along q through memory.
  template <class T, class F>
  void channel_sum(int64_t B, int64_t C, int64_t P, T* out, F f) const {
    if (B <= 0 || P <= 0) return;
    const int threads = get_num_threads();
    const auto [block, blocks] = sample_blocks(B, P, 64, threads);
#pragma omp parallel num_threads(threads) if (B * C * P >= kParallelGrain)
    {
      const F own = f;
#pragma omp for schedule(static)
      for (int64_t item = 0; item < B * blocks; ++item) {
        const int64_t b = item / blocks, q0 = (item % blocks) * block, q1 = std::min(P, q0 + block);
        T* o = out + b * P;
        for (int64_t q = q0; q < q1; ++q) o[q] = T(0);
        for (int64_t ch = 0; ch < C; ++ch) {
          const int64_t base = (b * C + ch) * P;
          for (int64_t q = q0; q < q1; ++q) o[q] += own(base + q, ch);
        }
      }
    }
  }

  // one(item, workspace, parallel_inside) for every item: across the threads, each with its own workspace of
  // `size` elements, or one after another with the parallelism inside.
  template <class T, class F>
  void run_items(int64_t items, bool across, int64_t size, F one) const {
    if (across) {
#pragma omp parallel num_threads(get_num_threads())
      {
        const auto work = alloc<T>(size);
#pragma omp for schedule(dynamic)
        for (int64_t item = 0; item < items; ++item) one(item, work.get(), false);
      }
    } else {
      const auto work = alloc<T>(size);
      for (int64_t item = 0; item < items; ++item) one(item, work.get(), true);
    }
  }

  // Whether pred(i) holds for some i < n. In chunks without a short-circuit inside (a branch per element kept
  // the loop scalar; measurements: docs/performance.md), each thread stopping at the first chunk after anyone's hit.
  template <class F>
  bool any(int64_t n, F pred) const {
    constexpr int64_t kChunk = 1 << 12;
    std::atomic<bool> found{false};
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (n >= kParallelGrain)
    for (int64_t lo = 0; lo < n; lo += kChunk) {
      if (found.load(std::memory_order_relaxed)) continue;
      const int64_t hi = std::min(n, lo + kChunk);
      unsigned hits = 0;
      for (int64_t i = lo; i < hi; ++i) hits |= unsigned(pred(i));
      if (hits) found.store(true, std::memory_order_relaxed);
    }
    return found.load(std::memory_order_relaxed);
  }

  template <class T>
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
            T beta, T* c, int64_t ldc) const {
    cpu::gemm<T>(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  }
};

}  // namespace lrptext::cpu
