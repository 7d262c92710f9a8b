// Pooling window arithmetic shared by the CPU and CUDA pooling kernels (matches torch's definitions).
#pragma once
#include <cstdint>

#include "problems.h"
#include "stabilizer.h"

namespace lrptext {

// The input positions of output o along one axis: first + k * step for k < count; some may fall outside
// [0, in) (zero padding) and are skipped by the caller.
struct Taps {
  int64_t first, step, count;
};

LRPT_HD inline Taps window_taps(const Window& w, int64_t o, int64_t in, int64_t out) {
  if (w.adaptive) {
    const int64_t start = (o * in) / out;
    const int64_t end = ((o + 1) * in + out - 1) / out;
    return Taps{start, 1, end - start};
  }
  return Taps{o * w.stride - w.pad, w.dilation, w.kernel};
}

// torch's average-pool divisor along one axis when padding is counted: the window clipped to the padded input.
LRPT_HD inline int64_t padded_window_size(const Window& w, int64_t o, int64_t in) {
  const int64_t start = o * w.stride - w.pad;
  const int64_t end = start + w.kernel < in + w.pad ? start + w.kernel : in + w.pad;
  return end - start;
}

LRPT_HD inline bool inside(int64_t i, int64_t n) { return i >= 0 && i < n; }

}  // namespace lrptext
