// Embedding and embedding-bag relevance on CUDA; the same equations as csrc/cpu/embedding.cpp.
#include "exec.cuh"
#include "lrptext/kernels.h"
#include "lrptext/stabilizer.h"

namespace lrptext::cuda {
namespace {

template <class T, class I>
void embedding(const EmbeddingProblem& p) {
  DeviceGuard guard(p.relevance);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  const I* ids = static_cast<const I*>(p.ids);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t d = p.dim, pad = p.padding_idx;
  if (p.reduce) {
    ex.map(p.tokens, [=] __device__(int64_t t) {
      T acc = T(0);
      if (!(pad >= 0 && int64_t(ids[t]) == pad))
        for (int64_t k = 0; k < d; ++k) acc += r[t * d + k];
      out[t] = acc;
    });
  } else {
    ex.map(p.tokens * d, [=] __device__(int64_t i) {
      out[i] = (pad >= 0 && int64_t(ids[i / d]) == pad) ? T(0) : r[i];
    });
  }
}

// One block per bag: y = sum_t f_t E[id_t] (or the given output) and R_b / st(y) in shared memory, then one block-wide dot per token.
template <class T, class I>
__global__ void bag_kernel(EmbeddingBagProblem p) {
  extern __shared__ unsigned char shared_raw[];
  T* y = reinterpret_cast<T*>(shared_raw);
  T* partial = y + p.dim;
  const I* ids = static_cast<const I*>(p.ids);
  const I* offsets = static_cast<const I*>(p.offsets);
  const T* e = static_cast<const T*>(p.weight);
  const T* psw = static_cast<const T*>(p.per_sample_weights);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t b = blockIdx.x, d = p.dim, pad = p.padding_idx;
  const int64_t lo = int64_t(offsets[b]), hi = b + 1 < p.bags ? int64_t(offsets[b + 1]) : p.tokens;
  int64_t count = 0;
  for (int64_t t = lo; t < hi; ++t) count += !(pad >= 0 && int64_t(ids[t]) == pad);
  auto factor = [&](int64_t t) -> T {
    if (pad >= 0 && int64_t(ids[t]) == pad) return T(0);
    if (p.mean) return T(1) / T(count);
    return psw ? psw[t] : T(1);
  };
  const T* given_y = static_cast<const T*>(p.output);
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
    T acc = T(0);
    if (given_y) acc = given_y[b * d + k];  // the forward pass's bag output: the rows are read once
    else
      for (int64_t t = lo; t < hi; ++t) acc += factor(t) * e[int64_t(ids[t]) * d + k];
    y[k] = r[b * d + k] / stabilize(acc, T(p.stabilizer));
  }
  __syncthreads();
  for (int64_t t = lo; t < hi; ++t) {
    T acc = T(0);
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) acc += e[int64_t(ids[t]) * d + k] * y[k];
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned step = blockDim.x / 2; step > 0; step /= 2) {
      if (threadIdx.x < step) partial[threadIdx.x] += partial[threadIdx.x + step];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[t] = factor(t) * partial[0];
    __syncthreads();
  }
}

template <class T, class I>
void embedding_bag(const EmbeddingBagProblem& p) {
  DeviceGuard guard(p.weight);
  const unsigned threads = 128;
  const size_t shared = (size_t(p.dim) + threads) * sizeof(T);
  auto stream = static_cast<cudaStream_t>(p.stream);
  check(cudaMemsetAsync(p.out, 0, size_t(p.tokens) * sizeof(T), stream), "cudaMemsetAsync");
  if (shared > 48 * 1024)
    check(cudaFuncSetAttribute(bag_kernel<T, I>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)),
          "cudaFuncSetAttribute");
  bag_kernel<T, I><<<unsigned(p.bags), threads, shared, stream>>>(p);
  check(cudaGetLastError(), "embedding-bag launch");
}

}  // namespace

void embedding_relevance(const EmbeddingProblem& p) {
  const bool i32 = p.id_type == IdType::Int32;
  if (p.dtype == DType::Float32) i32 ? embedding<float, int32_t>(p) : embedding<float, int64_t>(p);
  else i32 ? embedding<double, int32_t>(p) : embedding<double, int64_t>(p);
}

void embedding_bag_relevance(const EmbeddingBagProblem& p) {
  const bool i32 = p.id_type == IdType::Int32;
  if (p.dtype == DType::Float32) i32 ? embedding_bag<float, int32_t>(p) : embedding_bag<float, int64_t>(p);
  else i32 ? embedding_bag<double, int32_t>(p) : embedding_bag<double, int64_t>(p);
}

}  // namespace lrptext::cuda
