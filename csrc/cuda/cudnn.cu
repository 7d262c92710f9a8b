// The transposed convolution c = G(s, W) of the convolution rules through cuDNN's backward-data, the kernel that
// torch's own input gradient runs. Loaded at first use with dlopen, like cuBLAS: no link-time dependency, so the
// extension imports without cuDNN, and it shares the cuDNN that torch has loaded (found by its soname). Where cuDNN
// is missing, turned off (LRPTEXT_CUDNN=0, below) or takes no algorithm for a shape, the caller gathers columns.
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>

#include "cudnn.cuh"
#include "lrptext/kernels.h"

namespace lrptext::cuda {
namespace {

// Opaque handles and the few enumerators used, as cuDNN 8 and 9 define them (cudnn_graph.h, cudnn_ops.h,
// cudnn_cnn.h): the legacy convolution API, which cuDNN 9 still exports from libcudnn.so.9.
using Handle = struct CudnnContext*;
using TensorDesc = struct CudnnTensorStruct*;
using FilterDesc = struct CudnnFilterStruct*;
using ConvDesc = struct CudnnConvolutionStruct*;
constexpr int kSuccess = 0, kFloat = 0, kDouble = 1, kNCHW = 0, kCrossCorrelation = 1, kFmaMath = 3;
constexpr int kAlgorithms = 6;  // CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT

struct AlgoPerf {  // cudnnConvolutionBwdDataAlgoPerf_t
  int algo, status;
  float time;
  size_t memory;
  int determinism, math_type;
  int reserved[3];
};

struct Cudnn {
  size_t (*version)() = nullptr;
  int (*create)(Handle*) = nullptr;
  int (*set_stream)(Handle, cudaStream_t) = nullptr;
  int (*create_tensor)(TensorDesc*) = nullptr;
  int (*set_tensor)(TensorDesc, int, int, int, int, int, int) = nullptr;
  int (*create_filter)(FilterDesc*) = nullptr;
  int (*set_filter)(FilterDesc, int, int, int, int, int, int) = nullptr;
  int (*create_conv)(ConvDesc*) = nullptr;
  int (*set_conv)(ConvDesc, int, int, int, int, int, int, int, int) = nullptr;
  int (*set_groups)(ConvDesc, int) = nullptr;
  int (*set_math)(ConvDesc, int) = nullptr;
  int (*algorithms)(Handle, FilterDesc, TensorDesc, ConvDesc, TensorDesc, int, int*, AlgoPerf*) = nullptr;
  int (*find)(Handle, FilterDesc, TensorDesc, ConvDesc, TensorDesc, int, int*, AlgoPerf*) = nullptr;
  int (*workspace)(Handle, FilterDesc, TensorDesc, ConvDesc, TensorDesc, int, size_t*) = nullptr;
  int (*backward_data)(Handle, const void*, FilterDesc, const void*, TensorDesc, const void*, ConvDesc, int, void*,
                       size_t, const void*, TensorDesc, void*) = nullptr;
  bool loaded = false;
};

template <class F>
void bind(void* lib, F& f, const char* name, bool& ok) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  ok = ok && f != nullptr;
}

Cudnn load() {
  Cudnn c;
  void* lib = nullptr;
  for (const char* name : {"libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"})
    if ((lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL))) break;
  if (!lib) return c;
  bool ok = true;
  bind(lib, c.version, "cudnnGetVersion", ok);
  bind(lib, c.create, "cudnnCreate", ok);
  bind(lib, c.set_stream, "cudnnSetStream", ok);
  bind(lib, c.create_tensor, "cudnnCreateTensorDescriptor", ok);
  bind(lib, c.set_tensor, "cudnnSetTensor4dDescriptor", ok);
  bind(lib, c.create_filter, "cudnnCreateFilterDescriptor", ok);
  bind(lib, c.set_filter, "cudnnSetFilter4dDescriptor", ok);
  bind(lib, c.create_conv, "cudnnCreateConvolutionDescriptor", ok);
  bind(lib, c.set_conv, "cudnnSetConvolution2dDescriptor", ok);
  bind(lib, c.set_groups, "cudnnSetConvolutionGroupCount", ok);
  bind(lib, c.set_math, "cudnnSetConvolutionMathType", ok);
  bind(lib, c.algorithms, "cudnnGetConvolutionBackwardDataAlgorithm_v7", ok);
  bind(lib, c.find, "cudnnFindConvolutionBackwardDataAlgorithm", ok);
  bind(lib, c.workspace, "cudnnGetConvolutionBackwardDataWorkspaceSize", ok);
  bind(lib, c.backward_data, "cudnnConvolutionBackwardData", ok);
  c.loaded = ok && c.version() >= 8000;
  return c;
}

const Cudnn& cudnn() {
  static const Cudnn c = load();
  return c;
}

// One handle per thread and device, as cuDNN recommends; null where cuDNN cannot make one.
Handle handle() {
  thread_local std::map<int, Handle> handles;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  Handle h = nullptr;
  if (cudnn().create(&h) != kSuccess) h = nullptr;
  handles[device] = h;
  return h;
}

// A convolution's descriptors and the algorithm cuDNN's heuristics rank first among those whose workspace is at
// most kMaxWorkspace, run with FMA math as torch does with TF32 off (TF32's 10-bit mantissa would move the
// relevance). Made once per thread, device, data type and shape; usable is false where cuDNN refused it.
constexpr size_t kMaxWorkspace = size_t(1) << 30;

struct Plan {
  TensorDesc dy = nullptr, dx = nullptr;
  FilterDesc w = nullptr;
  ConvDesc conv = nullptr;
  int algo = -1;
  size_t workspace = 0;
  bool usable = false;
};

bool fits_int(const ConvShape& s, int64_t n) {
  const int64_t big = std::max({n * s.cin * s.h * s.w, n * s.cout * s.ho * s.wo, s.cout * s.cin * s.kh * s.kw});
  return big < (int64_t(1) << 31);  // the legacy API's 4-d descriptors and tensors are int-indexed
}

Plan make_plan(Handle h, const ConvShape& s, int64_t n, int type, bool timed) {
  const Cudnn& d = cudnn();
  Plan p;
  const auto ok = [](int status) { return status == kSuccess; };
  if (!ok(d.create_tensor(&p.dy)) || !ok(d.create_tensor(&p.dx)) || !ok(d.create_filter(&p.w)) ||
      !ok(d.create_conv(&p.conv)))
    return p;  // descriptors are kept for the thread's lifetime, as the plan is
  if (!ok(d.set_tensor(p.dy, kNCHW, type, int(n), int(s.cout), int(s.ho), int(s.wo))) ||
      !ok(d.set_tensor(p.dx, kNCHW, type, int(n), int(s.cin), int(s.h), int(s.w))) ||
      !ok(d.set_filter(p.w, type, kNCHW, int(s.cout), int(s.cin / s.groups), int(s.kh), int(s.kw))) ||
      !ok(d.set_conv(p.conv, int(s.ph), int(s.pw), int(s.sh), int(s.sw), int(s.dh), int(s.dw), kCrossCorrelation,
                     type)) ||
      !ok(d.set_groups(p.conv, int(s.groups))) || !ok(d.set_math(p.conv, kFmaMath)))
    return p;
  AlgoPerf perf[kAlgorithms];
  int found = 0;
  if (!ok((timed ? d.find : d.algorithms)(h, p.w, p.dy, p.conv, p.dx, kAlgorithms, &found, perf))) return p;
  for (int i = 0; i < found && i < kAlgorithms; ++i) {
    size_t bytes = 0;
    if (perf[i].status != kSuccess) continue;
    if (!ok(d.workspace(h, p.w, p.dy, p.conv, p.dx, perf[i].algo, &bytes)) || bytes > kMaxWorkspace) continue;
    p.algo = perf[i].algo;
    p.workspace = bytes;
    p.usable = true;
    break;
  }
  return p;
}

using PlanKey = std::tuple<int, int, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

const Plan& plan(Handle h, const ConvShape& s, int64_t n, int type, bool timed) {
  thread_local std::map<PlanKey, Plan> plans;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  const PlanKey key{device, type, timed, n, s.cin, s.h, s.w, s.cout, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw,
                    s.groups};
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(h, s, n, type, timed)).first;
  return it->second;
}

}  // namespace

size_t cudnn_version() { return cudnn().loaded ? cudnn().version() : 0; }

// LRPTEXT_CUDNN: unset (or anything but the two below) takes cuDNN's heuristics' first algorithm; "find" times
// cuDNN's algorithms on the first call of each shape and batch size (cudnnFind..., as torch.backends.cudnn.benchmark);
// "0" gathers columns. The default since scripts/gpu_check.sh passed with it on an H100 (VGG-16 batch 32 epsilon
// 1.23x the floor against 1.56x by columns). Read at every call, so that a test can compare the paths in one process.
bool mode_is(const char* value) {
  const char* env = std::getenv("LRPTEXT_CUDNN");
  return env && std::strcmp(env, value) == 0;
}

template <class T>
bool cudnn_conv_transpose(cudaStream_t stream, const ConvShape& s, int64_t n, const T* w, const T* r, T* c, T beta) {
  if (mode_is("0") || !cudnn().loaded || n == 0 || !fits_int(s, n)) return false;
  const Handle h = handle();
  if (!h) return false;
  if (cudnn().set_stream(h, stream) != kSuccess) return false;  // before the plan: timing runs on the stream
  const Plan& p = plan(h, s, n, sizeof(T) == 4 ? kFloat : kDouble, mode_is("find"));
  if (!p.usable) return false;
  void* workspace = nullptr;
  if (p.workspace) check(cudaMallocAsync(&workspace, p.workspace, stream), "cudaMallocAsync");
  const T one = T(1);
  const int status = cudnn().backward_data(h, &one, p.w, w, p.dy, r, p.conv, p.algo, workspace, p.workspace, &beta,
                                           p.dx, c);
  if (workspace) cudaFreeAsync(workspace, stream);
  if (status != kSuccess)
    throw std::runtime_error("cudnnConvolutionBackwardData failed with cuDNN status " + std::to_string(status) +
                             "; set LRPTEXT_CUDNN=0 to gather columns instead");
  return true;
}

template bool cudnn_conv_transpose<float>(cudaStream_t, const ConvShape&, int64_t, const float*, const float*, float*,
                                          float);
template bool cudnn_conv_transpose<double>(cudaStream_t, const ConvShape&, int64_t, const double*, const double*,
                                           double*, double);

}  // namespace lrptext::cuda
