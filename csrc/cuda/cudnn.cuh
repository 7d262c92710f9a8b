// cuDNN's backward-data as the convolution rules' transposed pass (csrc/cuda/cudnn.cu).
#pragma once
#include <cstddef>
#include <cstdint>

#include "exec.cuh"
#include "lrptext/problems.h"

namespace lrptext::cuda {

// c = G(r, w) + beta c for n samples of the convolution s on `stream`; false (nothing done) where cuDNN cannot
// take it: turned off (LRPTEXT_CUDNN=0), not loaded, over its int-indexed sizes, or no algorithm for the shape.
template <class T>
bool cudnn_conv_transpose(cudaStream_t stream, const ConvShape& s, int64_t n, const T* w, const T* r, T* c, T beta);

}  // namespace lrptext::cuda
