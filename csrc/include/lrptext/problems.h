// Plain parameter structs that the bindings fill and the kernels read: pointers, shapes, rule parameters.
// All argument checking happens in bindings.cpp before a kernel sees one of these.
#pragma once
#include <cstdint>

namespace lrptext {

enum class DType : int { Float32, Float64 };
enum class IdType : int { Int32, Int64 };

enum class Rule : int { Epsilon, Gamma, AlphaBeta, ZBox, WSquare, Flat };

struct RuleParams {
  Rule kind = Rule::Epsilon;
  double epsilon = 1e-6;     // Epsilon: rule parameter and stabiliser at once
  double gamma = 0.25;       // Gamma
  double alpha = 1.0;        // AlphaBeta (alpha - beta = 1)
  double beta = 0.0;
  double stabilizer = 1e-6;  // every rule but Epsilon
  bool use_bias = true;      // WSquare: false drops b^2 from the denominator (zero_params="bias")
};

// Dense and conv layers share one relevance problem; only the linear map differs.
struct LinearProblem {
  DType dtype = DType::Float32;
  const void* input = nullptr;      // x, [batch, in...]
  const void* weight = nullptr;
  const void* bias = nullptr;       // optional
  const void* relevance = nullptr;  // R at the layer output
  const void* z = nullptr;          // optional forward pre-activation (Epsilon, Gamma); includes the bias
  const void* weight_a = nullptr;   // optional prepared modified weights, see prepare_rule_weights
  const void* weight_b = nullptr;
  const void* low = nullptr;        // ZBox bounds, one per input channel (dense: per input feature)
  const void* high = nullptr;
  void* out = nullptr;              // [batch, in...], or [batch, spatial] with reduce_channels
  bool reduce_channels = false;     // sum the input relevance over channels (embedding axis) in the kernel
  // The caller hands the relevance buffer over (the engine's, dead after this layer): epsilon and w^2/flat divide
  // it in place rather than into a fresh [batch, out...] buffer.
  bool relevance_writable = false;
  // Epsilon: `input` is the pre-activation of a ReLU the engine did not keep, and the rule reads relu(input).
  bool relu_input = false;
  // out += the relevance instead of out = (the engine sums what several layers send to one input, as the query,
  // key and value projections of a transformer block do to their shared input). Not with reduce_channels.
  bool accumulate = false;
  RuleParams rule;
  void* stream = nullptr;           // cudaStream_t on CUDA
};

struct DenseShape {
  int64_t rows, in, out;
};

// y = x W^T + b on the CPU: the engine's forward pass through a wide dense layer for one sample, where torch's
// matrix-vector product runs on one thread.
struct DenseForwardProblem {
  DType dtype = DType::Float32;
  const void* input = nullptr;  // [rows, in]
  const void* weight = nullptr; // [out, in]
  const void* bias = nullptr;   // optional [out]
  void* out = nullptr;          // [rows, out]
  DenseShape shape{0, 0, 0};
};

// When the CPU computes a 3x3 convolution of stride 1 by Winograd's F(2x2, 3x3) (csrc/cpu/winograd.h) rather
// than by direct sums over columns: where it is faster (Auto), for every such convolution (Always), or never.
enum class WinogradMode : int { Auto, Always, Never };

struct ConvShape {
  int64_t batch, cin, h, w;       // input
  int64_t cout, kh, kw;           // weight [cout, cin / groups, kh, kw]
  int64_t sh, sw, ph, pw, dh, dw; // stride, padding, dilation
  int64_t groups;
  int64_t ho, wo;                 // output
};

struct ConvForwardProblem {
  DType dtype = DType::Float32;
  const void* input = nullptr;  // [batch, cin, h, w]
  const void* weight = nullptr; // [cout, cin / groups, kh, kw]
  const void* bias = nullptr;   // optional [cout]
  void* out = nullptr;          // [batch, cout, ho, wo]
  ConvShape shape{};
};

// Which modified weights each rule uses (a, b):
//   Gamma: w + gamma w+, w + gamma w-   AlphaBeta, ZBox: w+, w-   WSquare: w^2   Flat: ones   Epsilon: none
struct PrepareProblem {
  DType dtype = DType::Float32;
  const void* weight = nullptr;
  int64_t size = 0;
  void* out_a = nullptr;
  void* out_b = nullptr;  // null for rules with one modified weight
  RuleParams rule;
  void* stream = nullptr;
};

struct EmbeddingProblem {
  DType dtype = DType::Float32;
  IdType id_type = IdType::Int64;
  const void* ids = nullptr;        // [tokens]
  const void* relevance = nullptr;  // [tokens, dim], relevance at the embedding output
  void* out = nullptr;              // [tokens] (reduce) or [tokens, dim]
  int64_t tokens = 0, dim = 0;
  int64_t padding_idx = -1;         // -1: none
  bool reduce = true;
  void* stream = nullptr;
};

struct EmbeddingBagProblem {
  DType dtype = DType::Float32;
  IdType id_type = IdType::Int64;
  const void* ids = nullptr;                // [tokens]
  const void* offsets = nullptr;            // [bags], start of each bag (same integer type as ids)
  const void* weight = nullptr;             // [num_embeddings, dim]
  const void* per_sample_weights = nullptr; // optional [tokens], mode sum only
  const void* relevance = nullptr;          // [bags, dim], relevance at the bag output
  const void* output = nullptr;             // optional [bags, dim], the bag output y (else summed again)
  void* out = nullptr;                      // [tokens]
  int64_t tokens = 0, bags = 0, num_embeddings = 0, dim = 0;
  int64_t padding_idx = -1;
  bool mean = false;
  double stabilizer = 1e-6;
  void* stream = nullptr;
};

// One spatial axis of a pooling window. Regular windows start at o * stride - pad and take `kernel`
// taps `dilation` apart; adaptive windows cover [floor(o * in / out), ceil((o + 1) * in / out)).
struct Window {
  int64_t kernel = 1, stride = 1, pad = 0, dilation = 1;
  bool adaptive = false;
};

enum class PoolMode : int { Max, Average };

struct MaxPoolForwardProblem {
  DType dtype = DType::Float32;
  const void* input = nullptr;  // [planes, h, w]
  void* out = nullptr;          // [planes, ho, wo]
  int64_t planes = 0, h = 0, w = 0, ho = 0, wo = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1;  // windows without padding or dilation
};

struct PoolProblem {
  DType dtype = DType::Float32;
  PoolMode mode = PoolMode::Max;
  const void* input = nullptr;      // [planes, h, w]
  const void* relevance = nullptr;  // [planes, ho, wo]
  void* out = nullptr;              // [planes, h, w]
  int64_t planes = 0, h = 0, w = 0, ho = 0, wo = 0;
  Window wh, ww;
  bool count_include_pad = true;    // Average: divisor counts zero padding (torch's default)
  int64_t divisor_override = 0;     // Average: 0 = none
  double stabilizer = 1e-6;         // Average (Norm rule)
  // Max over plain windows (no padding, dilation or adaptive sizes): the input is the pre-activation z of a ReLU
  // and the windows pool relu(z), which the engine then need not compute again.
  bool relu_input = false;
  void* stream = nullptr;
};

// Element-wise steps of the rules over n elements of same-shaped contiguous arrays (CPU): the engine's dense
// epsilon rule when the product runs in another BLAS (lrptext/kernels/dispatch.py), the Norm rule of a sum.
// out may be one of the inputs itself (each element is read before it is written), never a partial overlap.
enum class ElementwiseOp : int {
  DivideStabilized,  // out = a / st(b, epsilon), or act(factor) a / st(b, epsilon) with a factor
  Multiply,          // out = scale act(a) b, or out += scale act(a) b (accumulate)
};

// What a step reads for a (Multiply) or for its factor (DivideStabilized; csrc/include/lrptext/activations.h): the
// array itself, or its activation: a kept pre-activation whose activation's output was dropped (the dense
// rule's product with its input, and the next layer's quotient of that product).
enum class Activation : int { Identity, ReLU, GELU, GELUTanh, SiLU };

struct ElementwiseProblem {
  DType dtype = DType::Float32;
  ElementwiseOp op = ElementwiseOp::Multiply;
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
  int64_t n = 0;
  double epsilon = 0.0;
  double scale = 1.0;
  const void* factor = nullptr;  // DivideStabilized: multiplies the numerator, or none
  bool accumulate = false;
  Activation activation = Activation::Identity;
};

// Relevance through an operation along the last axis of [rows, width]: LayerNorm (normalising each row) or a
// softmax (over each row). Both read the operation's input and output; LayerNorm also its bias (beta).
enum class RowRule : int { LayerNorm, Softmax };

struct RowProblem {
  DType dtype = DType::Float32;
  RowRule rule = RowRule::LayerNorm;
  const void* input = nullptr;      // x [rows, width]
  const void* output = nullptr;     // y [rows, width]: LayerNorm's output, the softmax's probabilities
  const void* relevance = nullptr;  // R at the output [rows, width]
  const void* bias = nullptr;       // LayerNorm's beta [width], optional
  const void* weight = nullptr;     // LayerNorm's gamma [width], optional (read with variance_epsilon)
  void* out = nullptr;              // R at the input [rows, width]
  int64_t rows = 0, width = 0;
  double epsilon = 1e-6;            // LayerNorm's stabiliser
  // LayerNorm's own epsilon (added to the variance), or < 0 when not given: then y - beta is read off y (see
  // layer_norm_row)
  double variance_epsilon = -1.0;
  // LayerNorm in gradient form: `relevance` holds g with R_y = y ⊙ g, and `out` receives R_x / x (the relevance at
  // the input is x ⊙ out), so the steps before and after need not multiply (lrptext/kernels/factored.py).
  bool gradient_form = false;
  // In gradient form, optionally the epsilon quotient of a dense layer whose output z is a summand of x (a residual
  // sum's branch): quotient_out = z ⊙ (R_x / x) / st(z, quotient_epsilon), [rows, width] each, written from the row
  // while it is in cache (the dense layer's step would divide the gradient in a pass of its own). CPU only.
  const void* quotient_of = nullptr;
  void* quotient_out = nullptr;
  double quotient_epsilon = 0.0;
  void* stream = nullptr;
};

// Relevance through scaled dot-product attention O = A V, A = softmax(scale Q K^T) over the allowed keys, per
// (batch, head) (lrptext/layers/attention.py gives the equations). AttnLRP: the uniform rule at both products and
// gradient x input at the softmax; CP-LRP: A a constant, all of R_O to V.
enum class AttentionRule : int { AttnLRP, CPLRP };

// Where the (batch, head) blocks of a [batch, heads, tokens, dim] attention operand start and how far apart a
// block's rows lie, in elements; each row is contiguous. Models split heads as a [batch, heads, tokens, dim] view
// of [batch, tokens, heads, dim] memory, which the CPU kernel reads and writes in place (CUDA: contiguous only).
struct HeadStrides {
  int64_t batch = 0, head = 0, row = 0;
};

struct AttentionProblem {
  DType dtype = DType::Float32;
  AttentionRule rule = AttentionRule::AttnLRP;
  const void* query = nullptr;      // Q [batch, heads, queries, dim]
  const void* key = nullptr;        // K [batch, heads, keys, dim]
  const void* value = nullptr;      // V [batch, heads, keys, value_dim]
  const void* relevance = nullptr;  // R_O [batch, heads, queries, value_dim]
  // Where a query may attend to a key (nonzero bytes), [batch or 1, heads or 1, queries or 1, keys], or null;
  // the strides are 0 along broadcast axes.
  const uint8_t* mask = nullptr;
  int64_t mask_batch_stride = 0, mask_head_stride = 0, mask_query_stride = 0;
  bool causal = false;              // and only keys j <= query i
  double scale = 1.0;
  // The forward pass's O [batch, heads, queries, value_dim] and log Σ_j exp(scale Q_i K_jᵀ) over the allowed keys
  // [batch, heads, queries] (torch's CPU attention returns both), or null: the CPU kernel then takes A from them
  // instead of computing each row's maximum and sum and the product A V again. CUDA computes them.
  const void* output = nullptr;
  const void* logsumexp = nullptr;
  HeadStrides output_strides, logsumexp_strides;  // logsumexp: its row stride steps over queries
  void* out_query = nullptr;        // R_Q, R_K, R_V, shaped as Q, K, V
  void* out_key = nullptr;
  void* out_value = nullptr;
  int64_t batch = 0, heads = 0, queries = 0, keys = 0, dim = 0, value_dim = 0;
  HeadStrides query_strides, key_strides, value_strides, relevance_strides;
  HeadStrides out_query_strides, out_key_strides, out_value_strides;
  // Gradient form (the CPU kernel): `relevance` holds G with R_O = O ⊙ G, and out_* receive R_Q / Q, R_K / K and
  // R_V / V (lrptext/kernels/factored.py): the division by O and the products with Q, K and V are left out.
  bool gradient_form = false;
  // In gradient form with ε >= 0: out_* receive the epsilon rule's quotients R_Q / st(Q), R_K / st(K) and
  // R_V / st(V) instead (st(x) = x + ε sign(x)): the quotients of the dense layers whose outputs Q, K and V are,
  // which the kernel makes without a pass of its own, as it reads Q, K and V (lrptext/layers/projections.py).
  // −1: off.
  double quotient_epsilon = -1.0;
  void* stream = nullptr;
};

// The backward sweep over time of one direction of a recurrent layer (LSTM, GRU; lrptext/kernels/recurrent.py has
// the equations): per step, the proportional split of the state update s_t = decay * s_{t-1} + fresh and the
// epsilon rule of the candidate's pre-activation, whose hidden-to-hidden part feeds the previous step. All
// [batch, steps, hidden] arrays are row-major in one dtype; lengths live on the host.
struct RecurrentProblem {
  DType dtype = DType::Float32;
  const void* decay = nullptr;      // f (LSTM) or z (GRU)
  const void* fresh = nullptr;      // i * g (LSTM) or (1 - z) * n (GRU)
  const void* pre = nullptr;        // the candidate's pre-activation a_t
  const void* hidden = nullptr;     // the direction's outputs h_t: h_{t-1} is the map's recurrent input
  const void* weight = nullptr;     // W_h [hidden, hidden], the candidate's rows of the hidden-to-hidden weights
  const void* relevance = nullptr;  // relevance of the outputs h_t
  const void* last = nullptr;       // [batch, hidden]: relevance of the last output (h_n, and c_n for an LSTM)
  const void* scale = nullptr;      // optional: the GRU's reset gate r_t, scaling W_h per step
  const void* bias = nullptr;       // optional (bias_factor > 0): the map's bias b_t
  const int64_t* lengths = nullptr; // host [batch], 1 <= length <= steps
  void* out = nullptr;              // q_t = R(a_t) / st(a_t), 0 beyond each length
  int64_t batch = 0, steps = 0, units = 0, inputs = 0;
  double epsilon = 1e-6, bias_factor = 0.0;
  bool reverse = false;
  void* stream = nullptr;
};

}  // namespace lrptext
