// Convolution relevance (1-d is 2-d with a height of one): im2col + GEMM for F, GEMM + col2im for G.
#include <omp.h>

#include <memory>

#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/linear_rules.h"

namespace lrptext::cpu {
namespace {

template <class T>
struct ConvOp {
  ConvShape s;
  int64_t cin_g, cout_g, K, HW, in_sz, out_sz;
  bool direct;  // 1x1 kernel, stride 1, no padding: the input already is its column matrix

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

  // col[K, HW] from one group's input [cin_g, h, w]; zero where a tap falls into the padding.
  void im2col(const T* x, T* col, bool parallel) const {
    const ConvShape& c = s;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (parallel)
    for (int64_t r = 0; r < K; ++r) {
      const int64_t ci = r / (c.kh * c.kw), ki = (r / c.kw) % c.kh, kj = r % c.kw;
      const T* plane = x + ci * c.h * c.w;
      for (int64_t oh = 0; oh < c.ho; ++oh) {
        T* row = col + r * HW + oh * c.wo;
        const int64_t ih = oh * c.sh - c.ph + ki * c.dh;
        if (ih < 0 || ih >= c.h) {
          for (int64_t ow = 0; ow < c.wo; ++ow) row[ow] = T(0);
          continue;
        }
        for (int64_t ow = 0; ow < c.wo; ++ow) {
          const int64_t iw = ow * c.sw - c.pw + kj * c.dw;
          row[ow] = (iw >= 0 && iw < c.w) ? plane[ih * c.w + iw] : T(0);
        }
      }
    }
  }

  // x[cin_g, h, w] += the taps of col[K, HW]; one input channel per thread, so no write conflicts.
  void col2im_add(const T* col, T* x, bool parallel) const {
    const ConvShape& c = s;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (parallel)
    for (int64_t ci = 0; ci < cin_g; ++ci) {
      T* plane = x + ci * c.h * c.w;
      for (int64_t ki = 0; ki < c.kh; ++ki)
        for (int64_t kj = 0; kj < c.kw; ++kj) {
          const T* row = col + ((ci * c.kh + ki) * c.kw + kj) * HW;
          for (int64_t oh = 0; oh < c.ho; ++oh) {
            const int64_t ih = oh * c.sh - c.ph + ki * c.dh;
            if (ih < 0 || ih >= c.h) continue;
            for (int64_t ow = 0; ow < c.wo; ++ow) {
              const int64_t iw = ow * c.sw - c.pw + kj * c.dw;
              if (iw >= 0 && iw < c.w) plane[ih * c.w + iw] += row[oh * c.wo + ow];
            }
          }
        }
    }
  }

  // Runs sample(b, col, parallel_inside) for every sample: samples in parallel when there are enough of
  // them, else one after another with the parallelism inside im2col and the GEMMs.
  template <class F>
  void for_samples(int64_t n, F sample) const {
    const int threads = get_num_threads();
    if (n >= threads && threads > 1) {
#pragma omp parallel num_threads(threads)
      {
        std::unique_ptr<T[]> col(direct ? nullptr : new T[K * HW]);
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < n; ++b) sample(b, col.get(), false);
      }
    } else {
      std::unique_ptr<T[]> col(direct ? nullptr : new T[K * HW]);
      for (int64_t b = 0; b < n; ++b) sample(b, col.get(), true);
    }
  }

  void forward(const Exec& ex, const T* x, int64_t n, const T* w, T* y, T beta) const {
    for_samples(n, [&](int64_t b, T* col, bool parallel) {
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* xg = x + b * in_sz + g * cin_g * s.h * s.w;
        if (!direct) im2col(xg, col, parallel);
        ex.gemm<T>(false, false, cout_g, HW, K, w + g * cout_g * K, K, direct ? xg : col, HW, beta,
                   y + b * out_sz + g * cout_g * HW, HW);
      }
    });
  }

  void backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    for_samples(n, [&](int64_t b, T* col, bool parallel) {
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* rg = r + b * out_sz + g * cout_g * HW;
        T* cg = c + b * in_sz + g * cin_g * s.h * s.w;
        if (direct) {
          ex.gemm<T>(true, false, K, HW, cout_g, w + g * cout_g * K, K, rg, HW, beta, cg, HW);
          continue;
        }
        ex.gemm<T>(true, false, K, HW, cout_g, w + g * cout_g * K, K, rg, HW, T(0), col, HW);
        if (beta == T(0))
          for (int64_t i = 0; i < cin_g * s.h * s.w; ++i) cg[i] = T(0);
        col2im_add(col, cg, parallel);
      }
    });
  }
};

template <class T>
void run(const LinearProblem& p, const ConvShape& s) {
  Exec ex;
  ConvOp<T> op(s);
  LinearRelevance<T, Exec, ConvOp<T>>(ex, op, p).run();
}

}  // namespace

void conv_relevance(const LinearProblem& p, const ConvShape& s) {
  if (p.dtype == DType::Float32) run<float>(p, s);
  else run<double>(p, s);
}

}  // namespace lrptext::cpu
