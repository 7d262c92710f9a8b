// Pooling relevance. Max: winner-take-all, ties to the first maximum in window order (row-major), as
// torch's indices. Average (incl. adaptive): the Norm rule, R_i = sum_j x_i (dy_j/dx_i) R_j / st(y_j).
// Global max over an axis is max pooling with a window spanning that axis.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/pool_window.h"

namespace lrptext::cpu {
namespace {

// Max pooling whose windows are plain blocks inside the input (no padding, dilation or adaptive sizes, none
// cut off by ceil_mode): the common MaxPool2d(k, s), without the general path's per-tap bounds checks, which
// made it as slow as torch's forward.
bool plain_max_windows(const PoolProblem& p) {
  const auto plain = [](const Window& w, int64_t out, int64_t in) {
    return !w.adaptive && w.pad == 0 && w.dilation == 1 && (out - 1) * w.stride + w.kernel <= in;
  };
  return p.mode == PoolMode::Max && plain(p.wh, p.ho, p.h) && plain(p.ww, p.wo, p.w);
}

// v where keep, else +0, by a bit mask: a select of two floats compiles to a branch, mispredicted on half of
// the windows of a natural image.
template <class T>
inline T keep_if(bool keep, T v) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits bits;
  std::memcpy(&bits, &v, sizeof v);
  bits &= Bits(0) - Bits(keep);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// Windows that tile the plane (stride = kernel; the floor-mode remainder rows and columns get nothing): every
// position in a window is written once, relevance at the winner and 0 elsewhere, with no zero-fill beforehand.
// The value a window compares at an input element: relu(x) when the input is the pre-activation z of a ReLU that
// was not kept (PoolProblem::relu_input); NaN stays NaN, as in torch.relu.
template <bool Relu, class T>
inline T seen(T v) {
  return Relu ? std::max(v, T(0)) : v;
}

template <bool Relu, class T>
void tiled_max_pool_plane(const PoolProblem& p, const T* xp, const T* rp, T* op) {
  const int64_t kh = p.wh.kernel, kw = p.ww.kernel, w = p.w;
  if (p.ho * kh != p.h || p.wo * kw != w) std::fill(op, op + p.h * w, T(0));
  for (int64_t oh = 0; oh < p.ho; ++oh) {
    const T* x0 = xp + oh * kh * w;
    T* o0 = op + oh * kh * w;
    const T* r0 = rp + oh * p.wo;
    if (kh == 2 && kw == 2) {  // the common MaxPool2d(2): branch-free, so the compiler can vectorise it
      const T* x1 = x0 + w;
      T* o1 = o0 + w;
      for (int64_t ow = 0; ow < p.wo; ++ow) {
        const int64_t i = 2 * ow;
        const T a = seen<Relu>(x0[i]), b = seen<Relu>(x0[i + 1]), c = seen<Relu>(x1[i]), d = seen<Relu>(x1[i + 1]);
        const bool b_wins = b > a;
        const T ab = std::max(a, b);
        const bool c_wins = c > ab;
        const T abc = std::max(ab, c);
        const bool d_wins = d > abc;  // ties: the first maximum in row-major order
        const T rel = r0[ow];
        o1[i + 1] = keep_if(d_wins, rel);
        o1[i] = keep_if(c_wins & !d_wins, rel);
        o0[i + 1] = keep_if(b_wins & !c_wins & !d_wins, rel);
        o0[i] = keep_if(!b_wins & !c_wins & !d_wins, rel);
      }
      continue;
    }
    for (int64_t ow = 0; ow < p.wo; ++ow) {
      const int64_t corner = ow * kw;
      int64_t best = corner;
      for (int64_t a = 0; a < kh; ++a)
        for (int64_t b = 0; b < kw; ++b) {
          const int64_t i = corner + a * w + b;
          if (seen<Relu>(x0[i]) > seen<Relu>(x0[best])) best = i;
        }
      for (int64_t a = 0; a < kh; ++a)
        for (int64_t b = 0; b < kw; ++b) o0[corner + a * w + b] = T(0);
      o0[best] = r0[ow];
    }
  }
}

template <bool Relu, class T>
void plain_max_pool(const PoolProblem& p) {
  const T* x = static_cast<const T*>(p.input);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t hw = p.h * p.w, ohw = p.ho * p.wo, kh = p.wh.kernel, kw = p.ww.kernel;
  const int64_t sh = p.wh.stride, sw = p.ww.stride, w = p.w;
  const bool tiled = kh == sh && kw == sw;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (p.planes * hw >= kParallelGrain)
  for (int64_t c = 0; c < p.planes; ++c) {
    const T* xp = x + c * hw;
    T* op = out + c * hw;
    const T* rp = r + c * ohw;
    if (tiled) {
      tiled_max_pool_plane<Relu>(p, xp, rp, op);
      continue;
    }
    std::fill(op, op + hw, T(0));
    for (int64_t oh = 0; oh < p.ho; ++oh)
      for (int64_t ow = 0; ow < p.wo; ++ow) {
        const int64_t corner = oh * sh * w + ow * sw;
        int64_t best = corner;  // ties go to the first maximum in row-major window order, as torch's indices
        for (int64_t a = 0; a < kh; ++a)
          for (int64_t b = 0; b < kw; ++b) {
            const int64_t i = corner + a * w + b;
            if (seen<Relu>(xp[i]) > seen<Relu>(xp[best])) best = i;
          }
        op[best] += rp[oh * p.wo + ow];
      }
  }
}

template <class T>
void pool(const PoolProblem& p) {
  if (plain_max_windows(p)) return p.relu_input ? plain_max_pool<true, T>(p) : plain_max_pool<false, T>(p);
  const T* x = static_cast<const T*>(p.input);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t hw = p.h * p.w, ohw = p.ho * p.wo;
  const T stab = T(p.stabilizer);
  // One plane per iteration: windows overlap only within a plane, so planes never write to the same place.
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (p.planes * hw >= kParallelGrain)
  for (int64_t c = 0; c < p.planes; ++c) {
    const T* xp = x + c * hw;
    T* op = out + c * hw;
    for (int64_t i = 0; i < hw; ++i) op[i] = T(0);
    for (int64_t oh = 0; oh < p.ho; ++oh) {
      const Taps th = window_taps(p.wh, oh, p.h, p.ho);
      for (int64_t ow = 0; ow < p.wo; ++ow) {
        const Taps tw = window_taps(p.ww, ow, p.w, p.wo);
        const T rel = r[c * ohw + oh * p.wo + ow];
        if (p.mode == PoolMode::Max) {
          int64_t best = -1;
          for (int64_t a = 0; a < th.count; ++a) {
            const int64_t ih = th.first + a * th.step;
            if (!inside(ih, p.h)) continue;
            for (int64_t b = 0; b < tw.count; ++b) {
              const int64_t iw = tw.first + b * tw.step;
              if (inside(iw, p.w) && (best < 0 || xp[ih * p.w + iw] > xp[best])) best = ih * p.w + iw;
            }
          }
          if (best >= 0) op[best] += rel;
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
        const T y = sum / T(divisor);
        const T share = rel / (T(divisor) * stabilize(y, stab));
        for (int64_t a = 0; a < th.count; ++a) {
          const int64_t ih = th.first + a * th.step;
          if (!inside(ih, p.h)) continue;
          for (int64_t b = 0; b < tw.count; ++b) {
            const int64_t iw = tw.first + b * tw.step;
            if (inside(iw, p.w)) op[ih * p.w + iw] += xp[ih * p.w + iw] * share;
          }
        }
      }
    }
  }
}

// Branch-free maxima (a data-dependent branch per element is mispredicted on half of a natural image's windows
// and keeps the loops scalar, far slower than torch's strided maxima; measurements: docs/performance.md). NaN
// wins, as in torch's max pooling: the maximum of ordered values, replaced at the end by NaN where any value was
// unordered.
template <class T>
inline T larger(T m, T v) {
  return v > m ? v : m;
}

template <class T>
void max_pool_forward(const MaxPoolForwardProblem& p) {
  const T* x = static_cast<const T*>(p.input);
  T* y = static_cast<T*>(p.out);
  const int64_t hw = p.h * p.w, ohw = p.ho * p.wo, w = p.w;
  const T nan = std::numeric_limits<T>::quiet_NaN();
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (p.planes * hw >= kParallelGrain)
  for (int64_t c = 0; c < p.planes; ++c) {
    const T* xp = x + c * hw;
    T* yp = y + c * ohw;
    for (int64_t oh = 0; oh < p.ho; ++oh) {
      const T* row = xp + oh * p.sh * w;
      T* out = yp + oh * p.wo;
      if (p.kh == 2 && p.kw == 2 && p.sw == 2) {  // MaxPool2d(2): one pass over two rows
        for (int64_t ow = 0; ow < p.wo; ++ow) {
          const T a = row[2 * ow], b = row[2 * ow + 1], cc = row[w + 2 * ow], d = row[w + 2 * ow + 1];
          const bool unordered = (a != a) | (b != b) | (cc != cc) | (d != d);
          out[ow] = unordered ? nan : larger(larger(a, b), larger(cc, d));
        }
        continue;
      }
      for (int64_t ow = 0; ow < p.wo; ++ow) {
        const T* corner = row + ow * p.sw;
        T m = corner[0];
        bool unordered = false;
        for (int64_t a = 0; a < p.kh; ++a)
          for (int64_t b = 0; b < p.kw; ++b) {
            const T v = corner[a * w + b];
            m = larger(m, v);
            unordered |= v != v;
          }
        out[ow] = unordered ? nan : m;
      }
    }
  }
}

}  // namespace

void pool_relevance(const PoolProblem& p) {
  if (p.dtype == DType::Float32) pool<float>(p);
  else pool<double>(p);
}

void max_pool_forward(const MaxPoolForwardProblem& p) {
  if (p.dtype == DType::Float32) max_pool_forward<float>(p);
  else max_pool_forward<double>(p);
}

}  // namespace lrptext::cpu
