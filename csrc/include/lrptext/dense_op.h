// The dense layer's linear map for the shared rule code: y = x W^T and c = s W, as GEMMs on any device.
#pragma once
#include <cstdint>

#include "problems.h"
#include "stabilizer.h"  // LRPT_LAMBDA

namespace lrptext {

template <class T, class Exec>
struct DenseOp {
  DenseShape s;
  int64_t batch() const { return s.rows; }
  int64_t in_size() const { return s.in; }
  int64_t out_size() const { return s.out; }
  int64_t in_channels() const { return s.in; }
  int64_t out_channels() const { return s.out; }
  int64_t weight_size() const { return s.in * s.out; }

  // positive: multiply x's positive part (relu(x)), materialised for the GEMM.
  void forward(const Exec& ex, const T* x, int64_t n, const T* w, T* y, T beta, bool positive = false) const {
    auto relu_x = ex.template alloc<T>(positive ? n * s.in : 0);
    if (positive) {
      T* xp = relu_x.get();
      ex.map(n * s.in, LRPT_LAMBDA(int64_t i) { xp[i] = x[i] > T(0) ? x[i] : T(0); });
      x = xp;
    }
    ex.template gemm<T>(false, true, n, s.out, s.in, x, s.in, w, s.in, beta, y, s.out);
  }
  void backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    ex.template gemm<T>(false, false, n, s.in, s.out, r, s.out, w, s.in, beta, c, s.in);
  }
};

}  // namespace lrptext
