// Convolution relevance on CUDA: im2col + strided-batched cuBLAS for F; cuDNN's backward-data for G, or where
// cuDNN cannot take it, the same GEMMs + a gathering col2im.
#include "cudnn.cuh"
#include "exec.cuh"
#include "lrptext/kernels.h"
#include "lrptext/linear_rules.h"

namespace lrptext::cuda {
namespace {

// The convolution's geometry in the kernels' index type: 32-bit wherever every per-sample offset fits, since
// 64-bit division dominated these kernels (col2im took as long as the GEMM before it on an H200).
template <class I>
struct Geometry {
  I h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo;
  explicit Geometry(const ConvShape& c)
      : h(I(c.h)), w(I(c.w)), kh(I(c.kh)), kw(I(c.kw)), sh(I(c.sh)), sw(I(c.sw)), ph(I(c.ph)), pw(I(c.pw)),
        dh(I(c.dh)), dw(I(c.dw)), ho(I(c.ho)), wo(I(c.wo)) {}
};

// Columns col[j][K][HW] of sample j = blockIdx.y of x (samples `x_stride` apart); positive: of relu(x).
template <class T, class I>
__global__ void im2col_kernel(const T* x, int64_t x_stride, T* col, Geometry<I> g, I K, I HW, bool positive) {
  const I per = K * HW, taps = g.kh * g.kw;
  const T* xj = x + blockIdx.y * x_stride;
  T* colj = col + int64_t(blockIdx.y) * per;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < per; i += I(gridDim.x) * I(blockDim.x)) {
    const I r = i / HW, q = i - r * HW, oh = q / g.wo, ow = q - oh * g.wo;
    const I ci = r / taps, tap = r - ci * taps, ki = tap / g.kw, kj = tap - ki * g.kw;
    const I ih = oh * g.sh - g.ph + ki * g.dh, iw = ow * g.sw - g.pw + kj * g.dw;
    const T v = (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) ? xj[(ci * g.h + ih) * g.w + iw] : T(0);
    colj[i] = positive && v < T(0) ? T(0) : v;
  }
}

// Each input position of sample j = blockIdx.y sums the column entries of the taps that read it (a gather: no
// atomics).
template <class T, class I>
__global__ void col2im_kernel(const T* col, T* x, int64_t x_stride, Geometry<I> g, I cin_g, I K, I HW,
                              bool accumulate) {
  const I per = cin_g * g.h * g.w;
  const T* colj = col + int64_t(blockIdx.y) * K * HW;
  T* xj = x + blockIdx.y * x_stride;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < per; i += I(gridDim.x) * I(blockDim.x)) {
    const I row = i / g.w, iw = i - row * g.w, ci = row / g.h, ih = row - ci * g.h;
    T acc = T(0);
    for (I ki = 0; ki < g.kh; ++ki) {
      const I th = ih + g.ph - ki * g.dh;
      if (th < 0 || th % g.sh) continue;
      const I oh = th / g.sh;
      if (oh >= g.ho) continue;
      for (I kj = 0; kj < g.kw; ++kj) {
        const I tw = iw + g.pw - kj * g.dw;
        if (tw < 0 || tw % g.sw) continue;
        const I ow = tw / g.sw;
        if (ow >= g.wo) continue;
        acc += colj[((ci * g.kh + ki) * g.kw + kj) * HW + oh * g.wo + ow];
      }
    }
    xj[i] = accumulate ? xj[i] + acc : acc;
  }
}

// Column buffers hold at most this many elements, so a chunk of samples shares one im2col, one strided-batched
// GEMM and one col2im launch (per-sample launches dominated small images at large batch).
constexpr int64_t kColumnBudget = int64_t(1) << 26;
constexpr int64_t kMaxChunk = 65535;  // samples of a chunk run along the grid's y dimension

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

  // Samples per chunk: all of them (up to the grid's limit) without columns (a 1x1 convolution reads the input in
  // place), else as many as the column budget holds.
  int64_t chunk(int64_t n, bool columns) const {
    const int64_t fit = columns ? kColumnBudget / (K * HW > 0 ? K * HW : 1) : n;
    const int64_t c = fit < n ? fit : n;
    return c < 1 ? 1 : (c < kMaxChunk ? c : kMaxChunk);
  }

  // 32-bit indices where a sample's columns and input (and a grid-stride step past them) fit.
  bool narrow() const { return K * HW < (int64_t(1) << 30) && in_sz < (int64_t(1) << 30); }

  void im2col(const Exec& ex, const T* x, T* col, int64_t m, bool positive) const {
    const dim3 grid(blocks_for(K * HW), unsigned(m));
    if (narrow())
      im2col_kernel<T, int><<<grid, kThreads, 0, ex.stream>>>(x, in_sz, col, Geometry<int>(s), int(K), int(HW),
                                                             positive);
    else
      im2col_kernel<T, int64_t><<<grid, kThreads, 0, ex.stream>>>(x, in_sz, col, Geometry<int64_t>(s), K, HW,
                                                                 positive);
    check(cudaGetLastError(), "im2col launch");
  }

  void col2im(const Exec& ex, const T* col, T* c, int64_t m, bool accumulate) const {
    const dim3 grid(blocks_for(cin_g * s.h * s.w), unsigned(m));
    if (narrow())
      col2im_kernel<T, int><<<grid, kThreads, 0, ex.stream>>>(col, c, in_sz, Geometry<int>(s), int(cin_g), int(K),
                                                             int(HW), accumulate);
    else
      col2im_kernel<T, int64_t><<<grid, kThreads, 0, ex.stream>>>(col, c, in_sz, Geometry<int64_t>(s), cin_g, K, HW,
                                                                 accumulate);
    check(cudaGetLastError(), "col2im launch");
  }

  // positive: of x's positive part (relu(x)), taken in im2col.
  void forward(const Exec& ex, const T* x, int64_t n, const T* w, T* y, T beta, bool positive = false) const {
    const bool in_place = direct && !positive;  // the input itself is the column matrix
    const int64_t nb = chunk(n, !in_place);
    auto col = ex.alloc<T>(in_place ? 0 : nb * K * HW);
    for (int64_t b0 = 0; b0 < n; b0 += nb) {
      const int64_t m = n - b0 < nb ? n - b0 : nb;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* xg = x + b0 * in_sz + g * cin_g * s.h * s.w;
        if (!in_place) im2col(ex, xg, col.get(), m, positive);
        ex.gemm_batched<T>(false, false, cout_g, HW, K, w + g * cout_g * K, K, 0, in_place ? xg : col.get(), HW,
                           in_place ? in_sz : K * HW, beta, y + b0 * out_sz + g * cout_g * HW, HW, out_sz, m);
      }
    }
  }

  void backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    if (cudnn_conv_transpose<T>(ex.stream, s, n, w, r, c, beta)) return;
    const int64_t nb = chunk(n, !direct);
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
        col2im(ex, col.get(), cg, m, beta != T(0));
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
