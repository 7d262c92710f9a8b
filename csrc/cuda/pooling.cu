// Pooling relevance on CUDA: one thread per output position, scattered with atomicAdd (overlapping windows
// make the summation order, and so the last bits, vary between runs). Same rules as csrc/cpu/pooling.cpp; max
// windows of a dropped ReLU compare relu(z) (PoolProblem::relu_input), NaN kept as in torch.relu.
#include "exec.cuh"
#include "lrptext/kernels.h"
#include "lrptext/pool_window.h"

namespace lrptext::cuda {
namespace {

template <class T>
__global__ void pool_kernel(PoolProblem p) {
  const T* x = static_cast<const T*>(p.input);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t n = p.planes * p.ho * p.wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i / (p.ho * p.wo), oh = (i / p.wo) % p.ho, ow = i % p.wo;
    const T* xp = x + c * p.h * p.w;
    T* op = out + c * p.h * p.w;
    const Taps th = window_taps(p.wh, oh, p.h, p.ho), tw = window_taps(p.ww, ow, p.w, p.wo);
    if (p.mode == PoolMode::Max) {
      int64_t best = -1;
      T top = T(0);
      for (int64_t a = 0; a < th.count; ++a) {
        const int64_t ih = th.first + a * th.step;
        if (!inside(ih, p.h)) continue;
        for (int64_t b = 0; b < tw.count; ++b) {
          const int64_t iw = tw.first + b * tw.step;
          if (!inside(iw, p.w)) continue;
          const T v = p.relu_input && xp[ih * p.w + iw] < T(0) ? T(0) : xp[ih * p.w + iw];
          if (best < 0 || v > top) best = ih * p.w + iw, top = v;
        }
      }
      if (best >= 0) atomicAdd(op + best, r[i]);
      continue;
    }
    int64_t valid = 0;
    T sum = T(0);
    for (int64_t a = 0; a < th.count; ++a) {
      const int64_t ih = th.first + a * th.step;
      if (!inside(ih, p.h)) continue;
      for (int64_t b = 0; b < tw.count; ++b) {
        const int64_t iw = tw.first + b * tw.step;
        if (inside(iw, p.w)) sum += xp[ih * p.w + iw], ++valid;
      }
    }
    int64_t divisor = valid;
    if (p.divisor_override > 0) divisor = p.divisor_override;
    else if (p.count_include_pad && !p.wh.adaptive)
      divisor = padded_window_size(p.wh, oh, p.h) * padded_window_size(p.ww, ow, p.w);
    if (divisor == 0) continue;
    const T share = r[i] / (T(divisor) * stabilize(sum / T(divisor), T(p.stabilizer)));
    for (int64_t a = 0; a < th.count; ++a) {
      const int64_t ih = th.first + a * th.step;
      if (!inside(ih, p.h)) continue;
      for (int64_t b = 0; b < tw.count; ++b) {
        const int64_t iw = tw.first + b * tw.step;
        if (inside(iw, p.w)) atomicAdd(op + ih * p.w + iw, xp[ih * p.w + iw] * share);
      }
    }
  }
}

template <class T>
void pool(const PoolProblem& p) {
  DeviceGuard guard(p.input);
  auto stream = static_cast<cudaStream_t>(p.stream);
  check(cudaMemsetAsync(p.out, 0, size_t(p.planes * p.h * p.w) * sizeof(T), stream), "cudaMemsetAsync");
  const int64_t n = p.planes * p.ho * p.wo;
  if (n == 0) return;
  pool_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "pooling launch");
}

}  // namespace

void pool_relevance(const PoolProblem& p) {
  if (p.dtype == DType::Float32) pool<float>(p);
  else pool<double>(p);
}

}  // namespace lrptext::cuda
