// How the shared rule code runs on CUDA: grid-stride kernels over extended lambdas, stream-ordered
// workspaces, and cuBLAS GEMMs, all on the caller's stream.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

namespace lrptext::cuda {

void check(cudaError_t e, const char* what);

template <class T>
void gemm(cudaStream_t stream, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

template <class T>
void gemm_batched(cudaStream_t stream, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                  int64_t lda, int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T beta, T* c, int64_t ldc,
                  int64_t stride_c, int64_t count);

template <class F>
__global__ void map_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) f(i);
}

template <class F>
__global__ void any_kernel(int64_t n, F pred, int* found) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (pred(i)) {
      *found = 1;
      return;
    }
}

template <class F>
__global__ void map_channels_kernel(int64_t n, int64_t C, int64_t P, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    f(i, (i / P) % C);
}

// out[b, q] = sum over ch of f((b * C + ch) * P + q, ch), one thread per output summing in channel order.
template <class T, class F>
__global__ void channel_sum_kernel(int64_t B, int64_t C, int64_t P, T* out, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * P; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / P, q = i - b * P;
    T acc = T(0);
    for (int64_t ch = 0; ch < C; ++ch) acc += f((b * C + ch) * P + q, ch);
    out[i] = acc;
  }
}

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

// Makes the device that owns `ptr` current for the lifetime of the guard.
class DeviceGuard {
 public:
  explicit DeviceGuard(const void* ptr);
  ~DeviceGuard();

 private:
  int previous_ = -1;
};

struct Exec {
  static constexpr int64_t kChunkOutputs = INT64_MAX;  // the whole batch at once (see the CPU's Exec)
  cudaStream_t stream = nullptr;

  template <class T>
  class Buffer {
   public:
    Buffer() = default;
    Buffer(int64_t n, cudaStream_t s) : stream_(s) {
      if (n > 0) check(cudaMallocAsync(reinterpret_cast<void**>(&data_), size_t(n) * sizeof(T), s), "cudaMallocAsync");
    }
    Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), stream_(o.stream_) {}
    Buffer& operator=(Buffer&& o) noexcept {
      release();
      data_ = std::exchange(o.data_, nullptr);
      stream_ = o.stream_;
      return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { release(); }
    T* get() const { return data_; }

   private:
    void release() {
      if (data_) cudaFreeAsync(data_, stream_);
      data_ = nullptr;
    }
    T* data_ = nullptr;
    cudaStream_t stream_ = nullptr;
  };

  template <class T>
  Buffer<T> alloc(int64_t n) const {
    return Buffer<T>(n, stream);
  }

  template <class F>
  void map(int64_t n, F f, int64_t /*cost: the CPU's grain only*/ = 1) const {
    if (n <= 0) return;
    map_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, f);
    check(cudaGetLastError(), "map kernel launch");
  }

  // f(i, ch) for every element i of a [B, C, P] tensor, ch its channel.
  template <class F>
  void map_channels(int64_t B, int64_t C, int64_t P, F f) const {
    if (B * C * P <= 0) return;
    map_channels_kernel<<<blocks_for(B * C * P), kThreads, 0, stream>>>(B * C * P, C, P, f);
    check(cudaGetLastError(), "map kernel launch");
  }

  // f(i, j) for every element i of a [B, N] tensor, j = i % N its place in the sample.
  template <class F>
  void map_samples(int64_t B, int64_t N, F f) const {
    map_channels(B, N, 1, f);
  }

  template <class T, class F>
  void channel_sum(int64_t B, int64_t C, int64_t P, T* out, F f) const {
    if (B * P <= 0) return;
    channel_sum_kernel<<<blocks_for(B * P), kThreads, 0, stream>>>(B, C, P, out, f);
    check(cudaGetLastError(), "channel sum kernel launch");
  }

  template <class F>
  bool any(int64_t n, F pred) const {
    if (n <= 0) return false;
    Buffer<int> found = alloc<int>(1);
    check(cudaMemsetAsync(found.get(), 0, sizeof(int), stream), "cudaMemsetAsync");
    any_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, pred, found.get());
    check(cudaGetLastError(), "any kernel launch");
    int host = 0;
    check(cudaMemcpyAsync(&host, found.get(), sizeof(int), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    return host != 0;
  }

  template <class T>
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
            T beta, T* c, int64_t ldc) const {
    cuda::gemm<T>(stream, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
  }

  template <class T>
  void gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t stride_a,
                    const T* b, int64_t ldb, int64_t stride_b, T beta, T* c, int64_t ldc, int64_t stride_c,
                    int64_t count) const {
    cuda::gemm_batched<T>(stream, ta, tb, m, n, k, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, count);
  }
};

}  // namespace lrptext::cuda
