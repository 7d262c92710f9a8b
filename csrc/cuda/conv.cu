// Convolution relevance on CUDA: im2col + strided-batched cuBLAS for F, the same + a gathering col2im for G.
#include "exec.cuh"
#include "lrptext/kernels.h"
#include "lrptext/linear_rules.h"

namespace lrptext::cuda {
namespace {

// Columns of `count` samples at once: col[j][K][HW] from sample j of x (samples `x_stride` apart).
template <class T>
__global__ void im2col_kernel(const T* x, int64_t x_stride, T* col, ConvShape c, int64_t K, int64_t HW,
                              int64_t count) {
  const int64_t per = K * HW, n = count * per;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i / per, r = (i % per) / HW, q = i % HW, oh = q / c.wo, ow = q % c.wo;
    const int64_t ci = r / (c.kh * c.kw), ki = (r / c.kw) % c.kh, kj = r % c.kw;
    const int64_t ih = oh * c.sh - c.ph + ki * c.dh, iw = ow * c.sw - c.pw + kj * c.dw;
    col[i] = (ih >= 0 && ih < c.h && iw >= 0 && iw < c.w) ? x[j * x_stride + (ci * c.h + ih) * c.w + iw] : T(0);
  }
}

// Each input position sums the column entries of the taps that read it (a gather: no atomics), `count` samples.
template <class T>
__global__ void col2im_kernel(const T* col, T* x, int64_t x_stride, ConvShape c, int64_t cin_g, int64_t K,
                              int64_t HW, int64_t count, bool accumulate) {
  const int64_t per = cin_g * c.h * c.w, n = count * per;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i / per, local = i % per;
    const int64_t ci = local / (c.h * c.w), ih = (local / c.w) % c.h, iw = local % c.w;
    const T* colj = col + j * K * HW;
    T acc = T(0);
    for (int64_t ki = 0; ki < c.kh; ++ki) {
      const int64_t th = ih + c.ph - ki * c.dh;
      if (th < 0 || th % c.sh) continue;
      const int64_t oh = th / c.sh;
      if (oh >= c.ho) continue;
      for (int64_t kj = 0; kj < c.kw; ++kj) {
        const int64_t tw = iw + c.pw - kj * c.dw;
        if (tw < 0 || tw % c.sw) continue;
        const int64_t ow = tw / c.sw;
        if (ow >= c.wo) continue;
        acc += colj[((ci * c.kh + ki) * c.kw + kj) * HW + oh * c.wo + ow];
      }
    }
    T& dst = x[j * x_stride + local];
    dst = accumulate ? dst + acc : acc;
  }
}

// Column buffers hold at most this many elements, so a chunk of samples shares one im2col, one strided-batched
// GEMM and one col2im launch (per-sample launches dominated small images at large batch).
constexpr int64_t kColumnBudget = int64_t(1) << 26;

template <class T>
struct ConvOp {
  ConvShape s;
  int64_t cin_g, cout_g, K, HW, in_sz, out_sz;
  bool direct;

  explicit ConvOp(const ConvShape& shape)
      : s(shape), cin_g(shape.cin / shape.groups), cout_g(shape.cout / shape.groups),
        K(cin_g * shape.kh * shape.kw), HW(shape.ho * shape.wo), in_sz(shape.cin * shape.h * shape.w),
        out_sz(shape.cout * shape.ho * shape.wo),
        direct(shape.kh == 1 && shape.kw == 1 && shape.sh == 1 && shape.sw == 1 && shape.ph == 0 &&
               shape.pw == 0) {}

  int64_t batch() const { return s.batch; }
  int64_t in_size() const { return in_sz; }
  int64_t out_size() const { return out_sz; }
  int64_t in_channels() const { return s.cin; }
  int64_t out_channels() const { return s.cout; }
  int64_t weight_size() const { return s.cout * K; }

  // Samples per chunk: all of them for a 1x1 convolution, which reads the input in place.
  int64_t chunk(int64_t n) const {
    if (direct) return n;
    const int64_t fit = kColumnBudget / (K * HW > 0 ? K * HW : 1);
    return fit < 1 ? 1 : (fit < n ? fit : n);
  }

  void forward(const Exec& ex, const T* x, int64_t n, const T* w, T* y, T beta) const {
    const int64_t nb = chunk(n);
    auto col = ex.alloc<T>(direct ? 0 : nb * K * HW);
    for (int64_t b0 = 0; b0 < n; b0 += nb) {
      const int64_t m = n - b0 < nb ? n - b0 : nb;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* xg = x + b0 * in_sz + g * cin_g * s.h * s.w;
        if (!direct) {
          im2col_kernel<<<blocks_for(m * K * HW), kThreads, 0, ex.stream>>>(xg, in_sz, col.get(), s, K, HW, m);
          check(cudaGetLastError(), "im2col launch");
        }
        ex.gemm_batched<T>(false, false, cout_g, HW, K, w + g * cout_g * K, K, 0, direct ? xg : col.get(), HW,
                           direct ? in_sz : K * HW, beta, y + b0 * out_sz + g * cout_g * HW, HW, out_sz, m);
      }
    }
  }

  void backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    const int64_t nb = chunk(n);
    auto col = ex.alloc<T>(direct ? 0 : nb * K * HW);
    for (int64_t b0 = 0; b0 < n; b0 += nb) {
      const int64_t m = n - b0 < nb ? n - b0 : nb;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* rg = r + b0 * out_sz + g * cout_g * HW;
        T* cg = c + b0 * in_sz + g * cin_g * s.h * s.w;
        if (direct) {
          ex.gemm_batched<T>(true, false, K, HW, cout_g, w + g * cout_g * K, K, 0, rg, HW, out_sz, beta, cg, HW,
                             in_sz, m);
          continue;
        }
        ex.gemm_batched<T>(true, false, K, HW, cout_g, w + g * cout_g * K, K, 0, rg, HW, out_sz, T(0), col.get(),
                           HW, K * HW, m);
        col2im_kernel<<<blocks_for(m * cin_g * s.h * s.w), kThreads, 0, ex.stream>>>(
            col.get(), cg, in_sz, s, cin_g, K, HW, m, beta != T(0));
        check(cudaGetLastError(), "col2im launch");
      }
    }
  }
};

template <class T>
void run(const LinearProblem& p, const ConvShape& s) {
  DeviceGuard guard(p.input);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  ConvOp<T> op(s);
  LinearRelevance<T, Exec, ConvOp<T>>(ex, op, p).run();
}

}  // namespace

void conv_relevance(const LinearProblem& p, const ConvShape& s) {
  if (p.dtype == DType::Float32) run<float>(p, s);
  else run<double>(p, s);
}

}  // namespace lrptext::cuda
