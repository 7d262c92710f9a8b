// Kernel entry points, one per layer kind and device. Arguments were validated by the bindings.
#pragma once
#include <cstddef>
#include <cstdint>

#include "problems.h"

namespace lrptext {

namespace cpu {
void dense_relevance(const LinearProblem& p, const DenseShape& s);
void dense_forward(const DenseForwardProblem& p);
void conv_relevance(const LinearProblem& p, const ConvShape& s);
void conv_forward(const ConvForwardProblem& p);
void set_winograd(WinogradMode m);
WinogradMode get_winograd();
void prepare_rule_weights(const PrepareProblem& p);
void embedding_relevance(const EmbeddingProblem& p);
void embedding_bag_relevance(const EmbeddingBagProblem& p);
void pool_relevance(const PoolProblem& p);
void max_pool_forward(const MaxPoolForwardProblem& p);
void row_relevance(const RowProblem& p);
void elementwise(const ElementwiseProblem& p);
void attention_relevance(const AttentionProblem& p);
void recurrent_sweep(const RecurrentProblem& p);
// Index of the first id outside [0, num_embeddings), or -1.
int64_t first_invalid_id(IdType t, const void* ids, int64_t n, int64_t num_embeddings);
// Index of the first bad offset (offsets must start at 0, never decrease and stay <= tokens), or -1.
int64_t first_invalid_offset(IdType t, const void* offsets, int64_t bags, int64_t tokens);
// Index of the first NaN or infinity, or -1.
int64_t first_nonfinite(DType t, const void* data, int64_t n);
void set_num_threads(int n);
// The GEMMs of the CPU kernels (not the matrix-vector products) in MKL brought by another library the process has
// loaded (a path to it: its sgemm_, dgemm_ and MKL_Set_Num_Threads_Local, checked on small products), or, with
// nullptr, in the core's OpenBLAS again. False, and OpenBLAS, where the library is not loaded, lacks them or
// computes wrong. external_blas: whether another one runs them.
bool set_blas(const char* library);
bool external_blas();
int get_num_threads();
// Unmaps the large workspaces kept for later kernel calls (at most 64 MiB); returns their bytes.
size_t release_workspaces();
}  // namespace cpu

#ifdef LRPTEXT_WITH_CUDA
namespace cuda {
void dense_relevance(const LinearProblem& p, const DenseShape& s);
void conv_relevance(const LinearProblem& p, const ConvShape& s);
void prepare_rule_weights(const PrepareProblem& p);
void embedding_relevance(const EmbeddingProblem& p);
void embedding_bag_relevance(const EmbeddingBagProblem& p);
void pool_relevance(const PoolProblem& p);
void row_relevance(const RowProblem& p);
void attention_relevance(const AttentionProblem& p);
void recurrent_sweep(const RecurrentProblem& p);
int64_t first_invalid_id(IdType t, const void* ids, int64_t n, int64_t num_embeddings, void* stream);
int64_t first_invalid_offset(IdType t, const void* offsets, int64_t bags, int64_t tokens, void* stream);
int64_t first_nonfinite(DType t, const void* data, int64_t n, void* stream);
int device_count();
size_t cudnn_version();  // of the cuDNN the convolution rules use; 0 when none could be loaded
}  // namespace cuda
#endif

}  // namespace lrptext
