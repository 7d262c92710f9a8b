// GEMMs through cuBLAS, loaded at first use with dlopen: no link-time dependency, so the extension imports on
// machines without cuBLAS, and it shares the cuBLAS that torch has already loaded (found by its soname).
#include <dlfcn.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "exec.cuh"
#include "lrptext/kernels.h"

namespace lrptext::cuda {
namespace {

struct CublasContext;
using Handle = CublasContext*;
constexpr int kOpN = 0, kOpT = 1;  // cublasOperation_t

struct Cublas {
  int (*create)(Handle*) = nullptr;
  int (*set_stream)(Handle, cudaStream_t) = nullptr;
  int (*sgemm)(Handle, int, int, int, int, int, const float*, const float*, int, const float*, int, const float*,
               float*, int) = nullptr;
  int (*dgemm)(Handle, int, int, int, int, int, const double*, const double*, int, const double*, int,
               const double*, double*, int) = nullptr;
  int (*sgemm_batched)(Handle, int, int, int, int, int, const float*, const float*, int, long long, const float*, int,
                       long long, const float*, float*, int, long long, int) = nullptr;
  int (*dgemm_batched)(Handle, int, int, int, int, int, const double*, const double*, int, long long, const double*,
                       int, long long, const double*, double*, int, long long, int) = nullptr;
};

Cublas load() {
  void* lib = nullptr;
  for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
    if ((lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL))) break;
  if (!lib)
    throw std::runtime_error(
        "lrptext CUDA kernels need cuBLAS (libcublas.so.13 or .12) and none could be loaded; import torch with CUDA "
        "first (it loads cuBLAS) or add the CUDA libraries to LD_LIBRARY_PATH");
  Cublas c;
  c.create = reinterpret_cast<decltype(c.create)>(dlsym(lib, "cublasCreate_v2"));
  c.set_stream = reinterpret_cast<decltype(c.set_stream)>(dlsym(lib, "cublasSetStream_v2"));
  c.sgemm = reinterpret_cast<decltype(c.sgemm)>(dlsym(lib, "cublasSgemm_v2"));
  c.dgemm = reinterpret_cast<decltype(c.dgemm)>(dlsym(lib, "cublasDgemm_v2"));
  c.sgemm_batched = reinterpret_cast<decltype(c.sgemm_batched)>(dlsym(lib, "cublasSgemmStridedBatched"));
  c.dgemm_batched = reinterpret_cast<decltype(c.dgemm_batched)>(dlsym(lib, "cublasDgemmStridedBatched"));
  if (!c.create || !c.set_stream || !c.sgemm || !c.dgemm || !c.sgemm_batched || !c.dgemm_batched)
    throw std::runtime_error("the loaded cuBLAS lacks one of cublasCreate_v2, cublasSetStream_v2, cublas[SD]gemm_v2, "
                             "cublas[SD]gemmStridedBatched");
  return c;
}

const Cublas& cublas() {
  static const Cublas c = load();
  return c;
}

// One handle per thread and device, as cuBLAS recommends.
Handle handle() {
  thread_local std::map<int, Handle> handles;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  Handle h = nullptr;
  if (cublas().create(&h) != 0) throw std::runtime_error("cublasCreate failed");
  handles[device] = h;
  return h;
}

void status(int s, const char* what) {
  if (s != 0) throw std::runtime_error(std::string(what) + " failed with cuBLAS status " + std::to_string(s));
}

void call(Handle h, int oa, int ob, int m, int n, int k, const float* alpha, const float* a, int lda, const float* b,
          int ldb, const float* beta, float* c, int ldc) {
  status(cublas().sgemm(h, oa, ob, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), "cublasSgemm");
}

void call(Handle h, int oa, int ob, int m, int n, int k, const double* alpha, const double* a, int lda,
          const double* b, int ldb, const double* beta, double* c, int ldc) {
  status(cublas().dgemm(h, oa, ob, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), "cublasDgemm");
}

void call_batched(Handle h, int oa, int ob, int m, int n, int k, const float* alpha, const float* a, int lda,
                  long long sa, const float* b, int ldb, long long sb, const float* beta, float* c, int ldc,
                  long long sc, int count) {
  status(cublas().sgemm_batched(h, oa, ob, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count),
         "cublasSgemmStridedBatched");
}

void call_batched(Handle h, int oa, int ob, int m, int n, int k, const double* alpha, const double* a, int lda,
                  long long sa, const double* b, int ldb, long long sb, const double* beta, double* c, int ldc,
                  long long sc, int count) {
  status(cublas().dgemm_batched(h, oa, ob, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count),
         "cublasDgemmStridedBatched");
}

}  // namespace

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

DeviceGuard::DeviceGuard(const void* ptr) {
  cudaPointerAttributes attr{};
  check(cudaPointerGetAttributes(&attr, ptr), "cudaPointerGetAttributes");
  check(cudaGetDevice(&previous_), "cudaGetDevice");
  if (attr.device != previous_) check(cudaSetDevice(attr.device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands, keep the strides.
template <class T>
void gemm(cudaStream_t stream, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  Handle h = handle();
  status(cublas().set_stream(h, stream), "cublasSetStream");
  const T one = T(1);
  call(h, tb ? kOpT : kOpN, ta ? kOpT : kOpN, int(n), int(m), int(k), &one, b, int(ldb), a, int(lda), &beta, c,
       int(ldc));
}

// `count` GEMMs C_i = op(A_i) op(B_i), operand i at pointer + i * stride (a stride of 0 shares the operand).
template <class T>
void gemm_batched(cudaStream_t stream, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                  int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T beta, T* c, int64_t ldc,
                  int64_t stride_c, int64_t count) {
  if (m == 0 || n == 0 || count == 0) return;
  Handle h = handle();
  status(cublas().set_stream(h, stream), "cublasSetStream");
  const T one = T(1);
  call_batched(h, tb ? kOpT : kOpN, ta ? kOpT : kOpN, int(n), int(m), int(k), &one, b, int(ldb), stride_b, a,
               int(lda), stride_a, &beta, c, int(ldc), stride_c, int(count));
}

template void gemm_batched<float>(cudaStream_t, bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, int64_t,
                                  const float*, int64_t, int64_t, float, float*, int64_t, int64_t, int64_t);
template void gemm_batched<double>(cudaStream_t, bool, bool, int64_t, int64_t, int64_t, const double*, int64_t,
                                   int64_t, const double*, int64_t, int64_t, double, double*, int64_t, int64_t,
                                   int64_t);
template void gemm<float>(cudaStream_t, bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(cudaStream_t, bool, bool, int64_t, int64_t, int64_t, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

}  // namespace lrptext::cuda
