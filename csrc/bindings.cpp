// The only translation unit that sees Python: DLPack in, argument checks, dispatch to a device's kernel.
// Every check names the function and the argument, says what was expected and what was received.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dlpack/dlpack.h"
#include "lrptext/kernels.h"
#include "lrptext/rule_table.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace lrptext {
namespace {

constexpr int64_t kBlasMax = 2147483647;  // OpenBLAS (scipy-openblas32) and cuBLAS take 32-bit sizes

// Positions of a (dilated) window sliding over a padded axis, or 0 when it does not fit. Division in C++
// truncates toward zero, so the numerator's sign is checked first (a window one tap too wide is not one position).
int64_t window_positions(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

struct Tensor {
  py::object capsule;  // owns the producer's export; its destructor releases it
  DLTensor* t = nullptr;
  bool read_only = false;
  std::string name;

  int ndim() const { return t->ndim; }
  int64_t size(int i) const { return t->shape[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
    return n;
  }
  void* data() const { return static_cast<char*>(t->data) + t->byte_offset; }
  bool cuda() const { return t->device.device_type == kDLCUDA; }
  // In elements; DLPack leaves the strides out of a C-contiguous array.
  int64_t stride(int i) const {
    if (t->strides) return t->strides[i];
    int64_t s = 1;
    for (int j = t->ndim - 1; j > i; --j) s *= t->shape[j];
    return s;
  }
  bool contiguous() const {
    int64_t expected = 1;
    for (int i = ndim() - 1; i >= 0; --i) {
      if (size(i) != 1 && stride(i) != expected) return false;
      expected *= size(i);
    }
    return true;
  }
  // Elements from the first to one past the last that the array reaches (its strides are >= 0).
  int64_t extent() const {
    if (numel() == 0) return 0;
    int64_t e = 1;
    for (int i = 0; i < ndim(); ++i) e += (size(i) - 1) * stride(i);
    return e;
  }
};

// Built with std::to_string, not an ostringstream: a GPU machine's gcc 13.3 (/opt/gcc) linked libstdc++ statically
// into the module (ldd lists none), and inserting a number into a stream crashed there on the first error message.
std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

std::string shape_str(const Tensor& a) { return shape_text(std::vector<int64_t>(a.t->shape, a.t->shape + a.ndim())); }

std::string dtype_str(const DLDataType& d) {
  const char* kind = d.code == kDLFloat ? "float" : d.code == kDLInt ? "int" : d.code == kDLUInt ? "uint"
                   : d.code == kDLBfloat ? "bfloat" : d.code == kDLBool ? "bool" : "other";
  return std::string(kind) + std::to_string(d.bits);
}

std::string device_str(const DLDevice& d) {
  if (d.device_type == kDLCPU) return "cpu";
  if (d.device_type == kDLCUDA) return "cuda:" + std::to_string(d.device_id);
  return "device type " + std::to_string(int(d.device_type));
}

[[noreturn]] void fail(const std::string& fn, const std::string& msg) { throw py::value_error(fn + ": " + msg); }

class Call {
 public:
  Call(std::string fn, py::object stream) : fn_(std::move(fn)), stream_(std::move(stream)) {}

  // Imports an argument through DLPack without copying. Only the device query comes before the export, so
  // a CUDA producer can order its work on our stream.
  // Rows: any strides >= 0 with the last axis contiguous (the attention operands); Strided: any strides >= 0.
  enum class Layout { Contiguous, Rows, Strided };

  Tensor arg(py::handle obj, const char* name, Layout layout = Layout::Contiguous) {
    if (PyCapsule_CheckExact(obj.ptr()))
      return from_capsule(py::reinterpret_borrow<py::object>(obj), name, true, layout);
    if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
      throw py::type_error(fn_ + ": '" + name + "' must be an array with DLPack support (torch.Tensor or numpy.ndarray), got " +
                           std::string(py::str(py::type::of(obj).attr("__name__"))));
    const auto dev = obj.attr("__dlpack_device__")().cast<std::pair<int, int>>();
    py::dict kwargs;
    if (dev.first == kDLCUDA) {
      const int64_t s = stream_.is_none() ? 1 : stream_.cast<int64_t>();
      kwargs["stream"] = s == 0 ? 1 : s;  // 0 is ambiguous in the protocol; 1 is the legacy default stream
    }
    py::object cap;
    try {
      cap = obj.attr("__dlpack__")(**kwargs, "max_version"_a = py::make_tuple(1, 3));
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;
      cap = obj.attr("__dlpack__")(**kwargs);  // a producer older than DLPack 1.0
    }
    return from_capsule(cap, name, false, layout);
  }

  // A capsule exported by the caller (lrptext.kernels exports CPU tensors itself, the protocol's Python methods
  // being slow) must hold a CPU array: a CUDA array needs the stream handshake of __dlpack__(stream=...).
  Tensor from_capsule(py::object cap, const char* name, bool given, Layout layout) {
    Tensor out;
    out.capsule = cap;
    out.name = name;
    if (PyCapsule_IsValid(cap.ptr(), "dltensor_versioned")) {
      auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap.ptr(), "dltensor_versioned"));
      if (m->version.major != DLPACK_MAJOR_VERSION)
        fail(fn_, std::string("'") + name + "' was exported with DLPack " + std::to_string(m->version.major) +
                      ".x; lrptext reads DLPack 1.x");
      out.t = &m->dl_tensor;
      out.read_only = (m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
    } else if (PyCapsule_IsValid(cap.ptr(), "dltensor")) {
      out.t = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"))->dl_tensor;
    } else {
      fail(fn_, std::string("'") + name + (given ? "' is a used or foreign capsule; pass the array itself"
                                                 : "'.__dlpack__() did not return a DLPack capsule"));
    }
    if (given && out.t->device.device_type != kDLCPU)
      fail(fn_, std::string("'") + name + "' is a capsule of a device array; pass the array itself");
    if (layout == Layout::Contiguous) check_contiguous(out);
    else check_strides(out, layout == Layout::Rows);
    check_device(out);
    return out;
  }

  std::optional<Tensor> optional_arg(py::handle obj, const char* name, Layout layout = Layout::Contiguous) {
    if (obj.is_none()) return std::nullopt;
    return arg(obj, name, layout);
  }

  // Float tensors share one dtype, float32 or float64.
  DType float_dtype(const Tensor& a) {
    const DLDataType d = a.t->dtype;
    DType got;
    if (d.code == kDLFloat && d.bits == 32 && d.lanes == 1) got = DType::Float32;
    else if (d.code == kDLFloat && d.bits == 64 && d.lanes == 1) got = DType::Float64;
    else
      fail(fn_, "'" + a.name + "' has dtype " + dtype_str(d) +
                    "; the kernels take float32 or float64 (lrptext.explain() promotes float16/bfloat16 for you)");
    if (!dtype_) {
      dtype_ = got;
      dtype_from_ = a.name;
    } else if (*dtype_ != got) {
      fail(fn_, "'" + a.name + "' has dtype " + dtype_str(d) + " but '" + dtype_from_ + "' has " +
                    (*dtype_ == DType::Float32 ? "float32" : "float64") + "; convert them to one dtype");
    }
    return got;
  }

  IdType id_dtype(const Tensor& a) {
    const DLDataType d = a.t->dtype;
    if (d.code == kDLInt && d.bits == 64 && d.lanes == 1) return IdType::Int64;
    if (d.code == kDLInt && d.bits == 32 && d.lanes == 1) return IdType::Int32;
    fail(fn_, "'" + a.name + "' must hold integer token ids (int32 or int64), got " + dtype_str(d));
  }

  void ndim(const Tensor& a, int n, const char* layout) {
    if (a.ndim() != n)
      fail(fn_, "'" + a.name + "' must be " + std::to_string(n) + "-D " + layout + ", got " +
                    std::to_string(a.ndim()) + "-D with shape " + shape_str(a));
  }

  void shape(const Tensor& a, const std::vector<int64_t>& expected, const char* layout) {
    ndim(a, int(expected.size()), layout);
    bool ok = true;
    for (size_t i = 0; i < expected.size(); ++i) ok = ok && a.size(int(i)) == expected[i];
    if (!ok) {
      fail(fn_, "'" + a.name + "' must have shape " + layout + " = " + shape_text(expected) + ", got " + shape_str(a));
    }
  }

  void writable(const Tensor& a) {
    if (a.read_only) fail(fn_, "'" + a.name + "' is read-only; pass a writable array for the output");
  }

  // The kernels write the output while still reading their inputs (an intermediate may live in it).
  void disjoint(const Tensor& out, const Tensor& in) {
    const auto begin = [](const Tensor& a) { return reinterpret_cast<uintptr_t>(a.data()); };
    const auto end = [&](const Tensor& a) { return begin(a) + uintptr_t(a.extent()) * (a.t->dtype.bits / 8); };
    if (out.numel() && in.numel() && out.cuda() == in.cuda() && begin(out) < end(in) && begin(in) < end(out) &&
        !interleaved(out, in))
      fail(fn_, "'" + out.name + "' shares memory with '" + in.name + "'; pass a separate output array");
  }

  // Whether two arrays whose ranges overlap still reach no common element because they are blocks of columns of
  // one row-major array (a stacked product's outputs): for some period P that every longer stride is a multiple
  // of, each array's shorter axes reach less than P elements from where it starts, and the two ranges of
  // positions within a period do not meet.
  static bool interleaved(const Tensor& a, const Tensor& b) {
    const int64_t bytes = a.t->dtype.bits / 8;
    const intptr_t gap = reinterpret_cast<intptr_t>(b.data()) - reinterpret_cast<intptr_t>(a.data());
    if (bytes == 0 || b.t->dtype.bits / 8 != bytes || gap % bytes) return false;
    const int64_t shift = gap / bytes;  // b's first element, counted from a's
    const auto inner = [](const Tensor& t, int64_t period) -> int64_t {  // reach below the period, or -1
      int64_t reach = 1;
      for (int i = 0; i < t.ndim(); ++i) {
        if (t.size(i) == 1) continue;
        if (t.stride(i) < period) reach += (t.size(i) - 1) * t.stride(i);
        else if (t.stride(i) % period) return -1;
      }
      return reach <= period ? reach : -1;
    };
    for (const Tensor* t : {&a, &b})
      for (int i = 0; i < t->ndim(); ++i) {
        const int64_t period = t->stride(i);
        if (t->size(i) == 1 || period <= 0) continue;
        const int64_t ra = inner(a, period), rb = inner(b, period);
        if (ra < 0 || rb < 0) continue;
        // within a period from a's first element, a reaches [0, ra) and b [start, start + rb)
        const int64_t start = ((shift % period) + period) % period;
        if (start >= ra && start + rb <= period) return true;
      }
    return false;
  }

  void blas_size(int64_t v, const char* what) {
    if (v > kBlasMax)
      fail(fn_, std::string(what) + " = " + std::to_string(v) + " exceeds the 32-bit BLAS limit " +
                    std::to_string(kBlasMax) + "; split the batch");
  }

  // An output written by several threads or blocks must not reach one element twice: with its axes sorted by
  // stride, each stride spans the axes below it.
  void non_overlapping(const Tensor& a) {
    if (a.numel() == 0) return;  // (no element to reach twice: torch keeps an expanded empty array's 0 strides)
    std::vector<std::pair<int64_t, int64_t>> axes;  // (stride, size) of the axes longer than 1
    for (int i = 0; i < a.ndim(); ++i)
      if (a.size(i) > 1) axes.emplace_back(a.stride(i), a.size(i));
    std::sort(axes.begin(), axes.end());
    int64_t span = 1;
    for (const auto& [stride, size] : axes) {
      if (stride < span)
        fail(fn_, "'" + a.name + "' has overlapping strides (one element reached twice); pass a fresh output array");
      span = stride * size;
    }
  }

  void finite(const Tensor& a, DType t) {
    if (a.numel() == 0) return;
    int64_t i;
#ifdef LRPTEXT_WITH_CUDA
    if (a.cuda()) i = cuda::first_nonfinite(t, a.data(), a.numel(), stream());
    else
#endif
      i = a.contiguous() ? cpu::first_nonfinite(t, a.data(), a.numel()) : first_nonfinite_rows(a, t);
    if (i >= 0)
      fail(fn_, "'" + a.name + "' holds NaN or infinity (first at flat index " + std::to_string(i) +
                    "); relevance of non-finite values is undefined, so clean the input or pass check_finite=False");
  }

  bool on_cuda() const { return device_ && device_->device_type == kDLCUDA; }
  void* stream() const {
    if (!on_cuda() || stream_.is_none()) return nullptr;
    return reinterpret_cast<void*>(static_cast<intptr_t>(stream_.cast<int64_t>()));
  }
  const std::string& fn() const { return fn_; }

 private:
  void check_contiguous(const Tensor& a) {
    if (!a.t->strides) return;
    int64_t expected = 1;
    for (int i = a.ndim() - 1; i >= 0; --i) {
      if (a.size(i) != 1 && a.t->strides[i] != expected)
        fail(fn_, "'" + a.name + "' must be C-contiguous (row-major, no gaps), got strides that are not; call "
                      ".contiguous() (torch) or numpy.ascontiguousarray() first, or use the lrptext.kernels wrappers, "
                      "which do");
      expected *= a.size(i);
    }
  }

  void check_strides(const Tensor& a, bool contiguous_rows) {
    for (int i = 0; i < a.ndim(); ++i)
      if (a.size(i) != 1 && (a.stride(i) < 0 || (contiguous_rows && i == a.ndim() - 1 && a.stride(i) != 1)))
        fail(fn_, "'" + a.name + (contiguous_rows ? "' must have a contiguous last axis and no negative strides"
                                                  : "' must have no negative strides") +
                      ", got strides that do not; call .contiguous() (torch) or numpy.ascontiguousarray() first");
  }

  // The flat (row-major) index of the first NaN or infinity of a strided CPU array whose rows are contiguous.
  static int64_t first_nonfinite_rows(const Tensor& a, DType t) {
    const int last = a.ndim() - 1;
    const int64_t width = a.size(last), rows = a.numel() / width, bytes = a.t->dtype.bits / 8;
    for (int64_t row = 0; row < rows; ++row) {
      int64_t offset = 0, rest = row;
      for (int i = last - 1; i >= 0; --i) {
        offset += rest % a.size(i) * a.stride(i);
        rest /= a.size(i);
      }
      const int64_t j = cpu::first_nonfinite(t, static_cast<char*>(a.data()) + offset * bytes, width);
      if (j >= 0) return row * width + j;
    }
    return -1;
  }

  void check_device(const Tensor& a) {
    const DLDevice d = a.t->device;
    if (d.device_type != kDLCPU && d.device_type != kDLCUDA)
      fail(fn_, "'" + a.name + "' lives on " + device_str(d) + "; lrptext runs on cpu and cuda");
#ifndef LRPTEXT_WITH_CUDA
    if (d.device_type == kDLCUDA)
      fail(fn_, "'" + a.name + "' is a CUDA tensor but this lrptext was built without CUDA kernels "
                    "(lrptext.build_info()['cuda'] is False); rebuild with nvcc on the PATH or move the inputs to the CPU");
#endif
    if (!device_) {
      device_ = d;
      device_from_ = a.name;
    } else if (device_->device_type != d.device_type || device_->device_id != d.device_id) {
      fail(fn_, "'" + a.name + "' is on " + device_str(d) + " but '" + device_from_ + "' is on " +
                    device_str(*device_) + "; move them to one device");
    }
  }

  std::string fn_;
  py::object stream_;
  std::optional<DType> dtype_;
  std::string dtype_from_;
  std::optional<DLDevice> device_;
  std::string device_from_;
};

RuleParams rule_params(const std::string& fn, const std::string& rule, double epsilon, double gamma, double alpha,
                       double beta, double stabilizer, bool use_bias) {
  RuleParams r;
  const RuleTraits* row = find_rule(rule);
  if (!row) fail(fn, "unknown rule '" + rule + "'; expected one of " + rule_names());
  r.kind = row->kind;
  if (!(epsilon >= 0)) fail(fn, "'epsilon' must be >= 0, got " + std::to_string(epsilon));
  if (!(gamma >= 0)) fail(fn, "'gamma' must be >= 0, got " + std::to_string(gamma));
  if (!(stabilizer >= 0)) fail(fn, "'stabilizer' must be >= 0, got " + std::to_string(stabilizer));
  if (r.kind == Rule::AlphaBeta && (!(alpha >= 0) || !(beta >= 0) || std::abs(alpha - beta - 1.0) > 1e-9))
    fail(fn, "alpha-beta needs alpha - beta = 1 with alpha, beta >= 0, got alpha=" + std::to_string(alpha) +
                 ", beta=" + std::to_string(beta));
  r.epsilon = epsilon;
  r.gamma = gamma;
  r.alpha = alpha;
  r.beta = beta;
  r.stabilizer = stabilizer;
  r.use_bias = use_bias;
  return r;
}

// The arguments dense and conv share; `in`/`out` are the layouts used in messages.
struct LinearArgs {
  Tensor input, weight, relevance, out;
  std::optional<Tensor> bias, z, weight_a, weight_b, low, high;
};

LinearProblem linear_problem(Call& c, LinearArgs& a, const RuleParams& rule, bool reduce, bool check_finite,
                             bool relevance_writable, bool relu_input, int64_t in_channels, int64_t out_channels,
                             const std::vector<int64_t>& weight_shape, const std::vector<int64_t>& out_shape) {
  LinearProblem p;
  p.dtype = c.float_dtype(a.input);
  for (auto* t : {&a.weight, &a.relevance, &a.out}) c.float_dtype(*t);
  for (auto* t : {&a.bias, &a.z, &a.weight_a, &a.weight_b, &a.low, &a.high})
    if (*t) c.float_dtype(**t);
  if (a.bias) c.shape(*a.bias, {out_channels}, "(out_channels,)");
  if (a.z) c.shape(*a.z, out_shape, "like 'relevance'");
  if (a.weight_a) c.shape(*a.weight_a, weight_shape, "like 'weight'");
  if (a.weight_b) c.shape(*a.weight_b, weight_shape, "like 'weight'");
  if (rule.kind == Rule::ZBox) {
    if (!a.low || !a.high) fail(c.fn(), "the zbox rule needs 'low' and 'high' (one bound per input channel)");
    c.shape(*a.low, {in_channels}, "(in_channels,)");
    c.shape(*a.high, {in_channels}, "(in_channels,)");
  }
  if (rule_traits(rule.kind).modified_weights == 2 && (bool(a.weight_a) != bool(a.weight_b)))
    fail(c.fn(), "pass both 'weight_a' and 'weight_b' (from prepare_rule_weights) or neither");
  c.writable(a.out);
  for (const Tensor* t : {&a.input, &a.weight, &a.relevance}) c.disjoint(a.out, *t);
  for (auto* t : {&a.bias, &a.z, &a.weight_a, &a.weight_b, &a.low, &a.high})
    if (*t) c.disjoint(a.out, **t);
  if (relevance_writable) {  // divided in place: it may alias nothing that is read
    c.writable(a.relevance);
    for (const Tensor* t : {&a.input, &a.weight}) c.disjoint(a.relevance, *t);
    for (auto* t : {&a.bias, &a.z, &a.weight_a, &a.weight_b, &a.low, &a.high})
      if (*t) c.disjoint(a.relevance, **t);
  }
  if (check_finite) {
    c.finite(a.input, p.dtype);
    c.finite(a.relevance, p.dtype);
    if (a.z) c.finite(*a.z, p.dtype);
  }
  p.input = a.input.data();
  p.weight = a.weight.data();
  p.bias = a.bias ? a.bias->data() : nullptr;
  p.relevance = a.relevance.data();
  p.z = a.z ? a.z->data() : nullptr;
  p.weight_a = a.weight_a ? a.weight_a->data() : nullptr;
  p.weight_b = a.weight_b ? a.weight_b->data() : nullptr;
  p.low = a.low ? a.low->data() : nullptr;
  p.high = a.high ? a.high->data() : nullptr;
  p.out = a.out.data();
  p.reduce_channels = reduce;
  p.relevance_writable = relevance_writable;
  if (relu_input) {
    if (!rule_traits(rule.kind).reads_relu_input)
      fail(c.fn(), "'relu_input' applies to the rules that read the input (epsilon, gamma, alpha_beta), got '" +
                       std::string(rule_traits(rule.kind).name) + "'; pass relu(input) itself");
    p.relu_input = true;
  }
  p.rule = rule;
  p.stream = c.stream();
  return p;
}

#define LRPT_RULE_ARGS                                                                                  \
  const std::string &rule, double epsilon, double gamma, double alpha, double beta, double stabilizer, \
      bool use_bias
#define LRPT_RULE_PARAMS(fn) rule_params(fn, rule, epsilon, gamma, alpha, beta, stabilizer, use_bias)

void dense_relevance(py::handle input, py::handle weight, py::handle bias, py::handle relevance, py::handle out,
                     py::handle z, py::handle weight_a, py::handle weight_b, py::handle low, py::handle high,
                     LRPT_RULE_ARGS, bool reduce_channels, bool check_finite, bool relevance_writable,
                     bool relu_input, bool accumulate, py::object stream) {
  Call c("dense_relevance", stream);
  const RuleParams r = LRPT_RULE_PARAMS(c.fn());
  LinearArgs a{c.arg(input, "input"), c.arg(weight, "weight"), c.arg(relevance, "relevance"), c.arg(out, "out"),
               c.optional_arg(bias, "bias"), c.optional_arg(z, "z"), c.optional_arg(weight_a, "weight_a"),
               c.optional_arg(weight_b, "weight_b"), c.optional_arg(low, "low"), c.optional_arg(high, "high")};
  c.ndim(a.weight, 2, "(out_features, in_features)");
  const int64_t fo = a.weight.size(0), fi = a.weight.size(1);
  c.ndim(a.input, 2, "(rows, in_features)");
  const int64_t rows = a.input.size(0);
  c.shape(a.input, {rows, fi}, "(rows, in_features)");
  c.shape(a.relevance, {rows, fo}, "(rows, out_features)");
  if (reduce_channels) c.shape(a.out, {rows}, "(rows,) with reduce_channels");
  else c.shape(a.out, {rows, fi}, "(rows, in_features)");
  for (int64_t v : {rows, fi, fo}) c.blas_size(v, "a matrix dimension");
  if (accumulate && reduce_channels)
    fail(c.fn(), "'accumulate' adds to an output shaped like 'input'; it does not combine with reduce_channels");
  LinearProblem p = linear_problem(c, a, r, reduce_channels, check_finite, relevance_writable, relu_input, fi, fo,
                                   {fo, fi}, {rows, fo});
  if (accumulate && check_finite) c.finite(a.out, p.dtype);  // what is added to
  p.accumulate = accumulate;
  const DenseShape s{rows, fi, fo};
  if (rows == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::dense_relevance(p, s);
#endif
  (void)cuda;
  cpu::dense_relevance(p, s);
}

// A forward pass's operands (dense, conv): one float dtype, a writable output apart from every input.
template <class Problem>
Problem forward_problem(Call& c, const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, const Tensor& o) {
  Problem p;
  p.dtype = c.float_dtype(x);
  c.float_dtype(w);
  c.float_dtype(o);
  if (b) c.float_dtype(*b);
  c.writable(o);
  for (const Tensor* t : {&x, &w}) c.disjoint(o, *t);
  if (b) c.disjoint(o, *b);
  p.input = x.data();
  p.weight = w.data();
  p.bias = b ? b->data() : nullptr;
  p.out = o.data();
  return p;
}

void dense_forward(py::handle input, py::handle weight, py::handle bias, py::handle out) {
  Call c("dense_forward", py::none());
  const Tensor x = c.arg(input, "input"), w = c.arg(weight, "weight"), o = c.arg(out, "out");
  const std::optional<Tensor> b = c.optional_arg(bias, "bias");
  if (c.on_cuda()) fail(c.fn(), "runs on the CPU only; on CUDA use torch.nn.functional.linear");
  c.ndim(w, 2, "(out_features, in_features)");
  const int64_t fo = w.size(0), fi = w.size(1);
  c.ndim(x, 2, "(rows, in_features)");
  const int64_t rows = x.size(0);
  c.shape(x, {rows, fi}, "(rows, in_features)");
  c.shape(o, {rows, fo}, "(rows, out_features)");
  if (b) c.shape(*b, {fo}, "(out_features,)");
  for (int64_t v : {rows, fi, fo}) c.blas_size(v, "a matrix dimension");
  DenseForwardProblem p = forward_problem<DenseForwardProblem>(c, x, w, b, o);
  p.shape = {rows, fi, fo};
  if (rows == 0 || fo == 0) return;
  py::gil_scoped_release release;
  cpu::dense_forward(p);
}

// The convolution's shape from its input and weight, every argument checked.
ConvShape conv_shape(Call& c, const Tensor& input, const Tensor& weight, std::array<int64_t, 2> stride,
                     std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation, int64_t groups) {
  c.ndim(input, 4, "(batch, in_channels, height, width)");
  c.ndim(weight, 4, "(out_channels, in_channels / groups, kernel_h, kernel_w)");
  for (int i = 0; i < 2; ++i) {
    if (stride[i] < 1) fail(c.fn(), "'stride' must be >= 1, got " + std::to_string(stride[i]));
    if (padding[i] < 0) fail(c.fn(), "'padding' must be >= 0, got " + std::to_string(padding[i]));
    if (dilation[i] < 1) fail(c.fn(), "'dilation' must be >= 1, got " + std::to_string(dilation[i]));
  }
  if (groups < 1) fail(c.fn(), "'groups' must be >= 1, got " + std::to_string(groups));
  ConvShape s{};
  s.batch = input.size(0), s.cin = input.size(1), s.h = input.size(2), s.w = input.size(3);
  s.cout = weight.size(0), s.kh = weight.size(2), s.kw = weight.size(3);
  s.sh = stride[0], s.sw = stride[1], s.ph = padding[0], s.pw = padding[1], s.dh = dilation[0], s.dw = dilation[1];
  s.groups = groups;
  if (s.cin % groups || s.cout % groups)
    fail(c.fn(), "in_channels (" + std::to_string(s.cin) + ") and out_channels (" + std::to_string(s.cout) +
                     ") must both be divisible by groups (" + std::to_string(groups) + ")");
  c.shape(weight, {s.cout, s.cin / groups, s.kh, s.kw}, "(out_channels, in_channels / groups, kernel_h, kernel_w)");
  s.ho = window_positions(s.h, s.kh, s.sh, s.ph, s.dh);
  s.wo = window_positions(s.w, s.kw, s.sw, s.pw, s.dw);
  if (s.ho < 1 || s.wo < 1 || s.kh < 1 || s.kw < 1)
    fail(c.fn(), "the (dilated) kernel " + shape_str(weight) + " does not fit the padded input " + shape_str(input));
  c.blas_size(s.cout / groups, "out_channels / groups");
  c.blas_size(s.cin / groups * s.kh * s.kw, "in_channels / groups * kernel size");
  c.blas_size(s.ho * s.wo, "output positions");
  return s;
}

void conv_relevance(py::handle input, py::handle weight, py::handle bias, py::handle relevance, py::handle out,
                    py::handle z, py::handle weight_a, py::handle weight_b, py::handle low, py::handle high,
                    std::array<int64_t, 2> stride, std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                    int64_t groups, LRPT_RULE_ARGS, bool reduce_channels, bool check_finite,
                    bool relevance_writable, bool relu_input, py::object stream) {
  Call c("conv_relevance", stream);
  const RuleParams r = LRPT_RULE_PARAMS(c.fn());
  LinearArgs a{c.arg(input, "input"), c.arg(weight, "weight"), c.arg(relevance, "relevance"), c.arg(out, "out"),
               c.optional_arg(bias, "bias"), c.optional_arg(z, "z"), c.optional_arg(weight_a, "weight_a"),
               c.optional_arg(weight_b, "weight_b"), c.optional_arg(low, "low"), c.optional_arg(high, "high")};
  const ConvShape s = conv_shape(c, a.input, a.weight, stride, padding, dilation, groups);
  c.shape(a.relevance, {s.batch, s.cout, s.ho, s.wo}, "(batch, out_channels, out_h, out_w)");
  if (reduce_channels) c.shape(a.out, {s.batch, s.h, s.w}, "(batch, height, width) with reduce_channels");
  else c.shape(a.out, {s.batch, s.cin, s.h, s.w}, "like 'input'");
  LinearProblem p = linear_problem(c, a, r, reduce_channels, check_finite, relevance_writable, relu_input, s.cin,
                                   s.cout, {s.cout, s.cin / s.groups, s.kh, s.kw}, {s.batch, s.cout, s.ho, s.wo});
  if (s.batch == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::conv_relevance(p, s);
#endif
  (void)cuda;
  cpu::conv_relevance(p, s);
}

void conv_forward(py::handle input, py::handle weight, py::handle bias, py::handle out, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation, int64_t groups) {
  Call c("conv_forward", py::none());
  const Tensor x = c.arg(input, "input"), w = c.arg(weight, "weight"), o = c.arg(out, "out");
  const std::optional<Tensor> b = c.optional_arg(bias, "bias");
  if (c.on_cuda()) fail(c.fn(), "runs on the CPU only; on CUDA use torch.nn.functional.conv2d");
  const ConvShape s = conv_shape(c, x, w, stride, padding, dilation, groups);
  c.shape(o, {s.batch, s.cout, s.ho, s.wo}, "(batch, out_channels, out_h, out_w)");
  if (b) c.shape(*b, {s.cout}, "(out_channels,)");
  ConvForwardProblem p = forward_problem<ConvForwardProblem>(c, x, w, b, o);
  p.shape = s;
  if (s.batch == 0 || s.cout == 0) return;
  py::gil_scoped_release release;
  cpu::conv_forward(p);
}

constexpr std::pair<const char*, WinogradMode> kWinogradModes[] = {
    {"auto", WinogradMode::Auto}, {"always", WinogradMode::Always}, {"never", WinogradMode::Never}};

void set_winograd(const std::string& mode) {
  for (const auto& [name, m] : kWinogradModes)
    if (mode == name) return cpu::set_winograd(m);
  throw py::value_error("set_winograd: 'mode' must be 'auto', 'always' or 'never', got '" + mode + "'");
}

std::string get_winograd() {
  for (const auto& [name, m] : kWinogradModes)
    if (cpu::get_winograd() == m) return name;
  return "auto";
}

void prepare_rule_weights(py::handle weight, py::handle out_a, py::handle out_b, LRPT_RULE_ARGS, py::object stream) {
  Call c("prepare_rule_weights", stream);
  const RuleParams r = LRPT_RULE_PARAMS(c.fn());
  Tensor w = c.arg(weight, "weight");
  std::optional<Tensor> a = c.optional_arg(out_a, "out_a"), b = c.optional_arg(out_b, "out_b");
  PrepareProblem p;
  p.dtype = c.float_dtype(w);
  p.size = w.numel();
  p.rule = r;
  p.stream = c.stream();
  std::vector<int64_t> shape(w.t->shape, w.t->shape + w.ndim());
  const int needed = rule_traits(r.kind).modified_weights;
  for (auto* t : {&a, &b}) {
    const bool wanted = (t == &a) ? needed >= 1 : needed == 2;
    const char* name = (t == &a) ? "out_a" : "out_b";
    if (wanted && !*t) fail(c.fn(), "rule '" + rule + "' prepares " + std::to_string(needed) + " weights; pass '" + name + "'");
    if (!wanted && *t) fail(c.fn(), "rule '" + rule + "' prepares " + std::to_string(needed) + " weights; '" + name + "' must be None");
    if (*t) {
      c.float_dtype(**t);
      c.shape(**t, shape, "like 'weight'");
      c.writable(**t);
    }
  }
  p.weight = w.data();
  p.out_a = a ? a->data() : nullptr;
  p.out_b = b ? b->data() : nullptr;
  if (needed == 0 || p.size == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::prepare_rule_weights(p);
#endif
  (void)cuda;
  cpu::prepare_rule_weights(p);
}

void check_ids(Call& c, const Tensor& ids, IdType t, int64_t num_embeddings) {
  int64_t bad;
#ifdef LRPTEXT_WITH_CUDA
  if (ids.cuda()) bad = cuda::first_invalid_id(t, ids.data(), ids.numel(), num_embeddings, c.stream());
  else
#endif
    bad = cpu::first_invalid_id(t, ids.data(), ids.numel(), num_embeddings);
  if (bad < 0) return;
  std::string value;  // host memory only: a CUDA id would need a copy just for the message
  if (!ids.cuda())
    value = " (value " + std::to_string(t == IdType::Int32 ? int64_t(static_cast<const int32_t*>(ids.data())[bad])
                                                           : static_cast<const int64_t*>(ids.data())[bad]) + ")";
  fail(c.fn(), "'" + ids.name + "' holds a token id outside [0, " + std::to_string(num_embeddings) +
                   ") at position " + std::to_string(bad) + value +
                   "; map unknown words to an in-vocabulary id (e.g. an <unk> token) before explaining");
}

void embedding_relevance(py::handle ids, py::handle relevance, py::handle out, int64_t num_embeddings,
                         std::optional<int64_t> padding_idx, bool check_finite, py::object stream) {
  Call c("embedding_relevance", stream);
  Tensor i = c.arg(ids, "ids"), r = c.arg(relevance, "relevance"), o = c.arg(out, "out");
  EmbeddingProblem p;
  p.id_type = c.id_dtype(i);
  p.dtype = c.float_dtype(r);
  c.float_dtype(o);
  c.ndim(i, 1, "(tokens,)");
  c.ndim(r, 2, "(tokens, embedding_dim)");
  p.tokens = i.size(0);
  p.dim = r.size(1);
  c.shape(r, {p.tokens, p.dim}, "(tokens, embedding_dim)");
  p.reduce = o.ndim() == 1;
  if (p.reduce) c.shape(o, {p.tokens}, "(tokens,) or (tokens, embedding_dim)");
  else c.shape(o, {p.tokens, p.dim}, "(tokens,) or (tokens, embedding_dim)");
  c.writable(o);
  if (num_embeddings < 1) fail(c.fn(), "'num_embeddings' must be >= 1, got " + std::to_string(num_embeddings));
  p.padding_idx = padding_idx.value_or(-1);
  if (padding_idx && (*padding_idx < 0 || *padding_idx >= num_embeddings))
    fail(c.fn(), "'padding_idx' must lie in [0, num_embeddings), got " + std::to_string(*padding_idx) +
                     " (normalise negative indices as torch does)");
  check_ids(c, i, p.id_type, num_embeddings);
  if (check_finite) c.finite(r, p.dtype);
  p.ids = i.data();
  p.relevance = r.data();
  p.out = o.data();
  p.stream = c.stream();
  if (p.tokens == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::embedding_relevance(p);
#endif
  (void)cuda;
  cpu::embedding_relevance(p);
}

void embedding_bag_relevance(py::handle ids, py::handle offsets, py::handle weight, py::handle relevance,
                             py::handle out, py::handle per_sample_weights, py::handle output,
                             const std::string& mode, std::optional<int64_t> padding_idx, double stabilizer,
                             bool check_finite, py::object stream) {
  Call c("embedding_bag_relevance", stream);
  Tensor i = c.arg(ids, "ids"), off = c.arg(offsets, "offsets"), w = c.arg(weight, "weight"),
         r = c.arg(relevance, "relevance"), o = c.arg(out, "out");
  std::optional<Tensor> psw = c.optional_arg(per_sample_weights, "per_sample_weights");
  std::optional<Tensor> y = c.optional_arg(output, "output");
  EmbeddingBagProblem p;
  p.id_type = c.id_dtype(i);
  if (c.id_dtype(off) != p.id_type) fail(c.fn(), "'offsets' and 'ids' must have the same integer dtype");
  p.dtype = c.float_dtype(w);
  c.float_dtype(r);
  c.float_dtype(o);
  c.ndim(i, 1, "(tokens,)");
  c.ndim(off, 1, "(bags,)");
  c.ndim(w, 2, "(num_embeddings, embedding_dim)");
  p.tokens = i.size(0);
  p.bags = off.size(0);
  p.num_embeddings = w.size(0);
  p.dim = w.size(1);
  c.shape(r, {p.bags, p.dim}, "(bags, embedding_dim)");
  if (y) {
    c.float_dtype(*y);
    c.shape(*y, {p.bags, p.dim}, "(bags, embedding_dim)");
  }
  c.shape(o, {p.tokens}, "(tokens,)");
  c.writable(o);
  if (mode != "sum" && mode != "mean") fail(c.fn(), "'mode' must be 'sum' or 'mean', got '" + mode + "'");
  p.mean = mode == "mean";
  if (psw) {
    if (p.mean) fail(c.fn(), "'per_sample_weights' is only defined for mode='sum' (as in torch)");
    c.float_dtype(*psw);
    c.shape(*psw, {p.tokens}, "(tokens,)");
  }
  if (!(stabilizer >= 0)) fail(c.fn(), "'stabilizer' must be >= 0, got " + std::to_string(stabilizer));
  p.padding_idx = padding_idx.value_or(-1);
  if (padding_idx && (*padding_idx < 0 || *padding_idx >= p.num_embeddings))
    fail(c.fn(), "'padding_idx' must lie in [0, num_embeddings), got " + std::to_string(*padding_idx));
  check_ids(c, i, p.id_type, p.num_embeddings);
  int64_t bad;
#ifdef LRPTEXT_WITH_CUDA
  if (off.cuda()) bad = cuda::first_invalid_offset(p.id_type, off.data(), p.bags, p.tokens, c.stream());
  else
#endif
    bad = cpu::first_invalid_offset(p.id_type, off.data(), p.bags, p.tokens);
  if (bad >= 0)
    fail(c.fn(), "'offsets' must start at 0, never decrease and stay <= the number of ids (" +
                     std::to_string(p.tokens) + "); the first bad entry is at position " + std::to_string(bad));
  if (check_finite) c.finite(r, p.dtype);
  p.ids = i.data();
  p.offsets = off.data();
  p.weight = w.data();
  p.per_sample_weights = psw ? psw->data() : nullptr;
  p.relevance = r.data();
  p.output = y ? y->data() : nullptr;
  p.out = o.data();
  p.stabilizer = stabilizer;
  p.stream = c.stream();
  if (p.tokens == 0 || p.bags == 0) {
    if (p.tokens && !c.on_cuda()) {
      auto* z = static_cast<char*>(p.out);
      std::fill(z, z + p.tokens * (p.dtype == DType::Float32 ? 4 : 8), 0);
    }
    return;
  }
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::embedding_bag_relevance(p);
#endif
  (void)cuda;
  cpu::embedding_bag_relevance(p);
}

void max_pool_forward(py::handle input, py::handle out, std::array<int64_t, 2> kernel,
                      std::array<int64_t, 2> stride) {
  Call c("max_pool_forward", py::none());
  const Tensor x = c.arg(input, "input"), o = c.arg(out, "out");
  if (c.on_cuda()) fail(c.fn(), "runs on the CPU only; on CUDA use torch.nn.functional.max_pool2d");
  MaxPoolForwardProblem p;
  p.dtype = c.float_dtype(x);
  c.float_dtype(o);
  c.ndim(x, 3, "(planes, height, width)");
  p.planes = x.size(0), p.h = x.size(1), p.w = x.size(2);
  p.kh = kernel[0], p.kw = kernel[1], p.sh = stride[0], p.sw = stride[1];
  if (p.kh < 1 || p.kw < 1 || p.sh < 1 || p.sw < 1)
    fail(c.fn(), "'kernel' and 'stride' must be >= 1, got kernel=(" + std::to_string(p.kh) + ", " +
                     std::to_string(p.kw) + "), stride=(" + std::to_string(p.sh) + ", " + std::to_string(p.sw) + ")");
  if (p.kh > p.h || p.kw > p.w)
    fail(c.fn(), "the kernel (" + std::to_string(p.kh) + ", " + std::to_string(p.kw) + ") does not fit the input " +
                     shape_str(x));
  p.ho = window_positions(p.h, p.kh, p.sh, 0, 1), p.wo = window_positions(p.w, p.kw, p.sw, 0, 1);
  c.shape(o, {p.planes, p.ho, p.wo}, "(planes, out_h, out_w)");
  c.writable(o);
  c.disjoint(o, x);
  p.input = x.data();
  p.out = o.data();
  if (p.planes == 0) return;
  py::gil_scoped_release release;
  cpu::max_pool_forward(p);
}

void pool_relevance(py::handle input, py::handle relevance, py::handle out, const std::string& mode,
                    std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                    std::array<int64_t, 2> dilation, bool adaptive, bool count_include_pad, int64_t divisor_override,
                    double stabilizer, bool check_finite, bool relu_input, py::object stream) {
  Call c("pool_relevance", stream);
  Tensor x = c.arg(input, "input"), r = c.arg(relevance, "relevance"), o = c.arg(out, "out");
  PoolProblem p;
  p.dtype = c.float_dtype(x);
  c.float_dtype(r);
  c.float_dtype(o);
  if (mode == "max") p.mode = PoolMode::Max;
  else if (mode == "avg") p.mode = PoolMode::Average;
  else fail(c.fn(), "'mode' must be 'max' or 'avg', got '" + mode + "'");
  c.ndim(x, 3, "(planes, height, width)");
  c.ndim(r, 3, "(planes, out_h, out_w)");
  p.planes = x.size(0), p.h = x.size(1), p.w = x.size(2);
  p.ho = r.size(1), p.wo = r.size(2);
  c.shape(r, {p.planes, p.ho, p.wo}, "(planes, out_h, out_w)");
  c.shape(o, {p.planes, p.h, p.w}, "like 'input'");
  c.writable(o);
  Window* axes[2] = {&p.wh, &p.ww};
  const int64_t ins[2] = {p.h, p.w}, outs[2] = {p.ho, p.wo};
  for (int d = 0; d < 2; ++d) {
    Window& win = *axes[d];
    win.adaptive = adaptive;
    win.kernel = kernel[d], win.stride = stride[d], win.pad = padding[d], win.dilation = dilation[d];
    if (adaptive) {
      if (outs[d] < 1 && ins[d] > 0) fail(c.fn(), "adaptive pooling needs an output size >= 1");
      continue;
    }
    if (win.kernel < 1 || win.stride < 1 || win.dilation < 1 || win.pad < 0 || 2 * win.pad > win.kernel)
      fail(c.fn(), "pooling window needs kernel, stride, dilation >= 1 and 0 <= padding <= kernel / 2, got kernel=" +
                       std::to_string(win.kernel) + ", stride=" + std::to_string(win.stride) + ", padding=" +
                       std::to_string(win.pad) + ", dilation=" + std::to_string(win.dilation));
    const int64_t expected = window_positions(ins[d], win.kernel, win.stride, win.pad, win.dilation);
    if (outs[d] != expected)
      fail(c.fn(), "'relevance' has " + std::to_string(outs[d]) + " positions along axis " + std::to_string(d + 1) +
                       " but the window gives " + std::to_string(expected) + " (ceil_mode is not supported)");
  }
  if (divisor_override < 0) fail(c.fn(), "'divisor_override' must be >= 0 (0 = none)");
  if (!(stabilizer >= 0)) fail(c.fn(), "'stabilizer' must be >= 0, got " + std::to_string(stabilizer));
  p.count_include_pad = count_include_pad;
  p.divisor_override = divisor_override;
  p.stabilizer = stabilizer;
  if (relu_input) {
    const bool plain = p.mode == PoolMode::Max && !adaptive && padding[0] == 0 && padding[1] == 0 &&
                       dilation[0] == 1 && dilation[1] == 1;
    if (!plain)
      fail(c.fn(), "'relu_input' needs max pooling without padding, dilation or adaptive sizes; pool relu(input) "
                   "itself otherwise");
    p.relu_input = true;
  }
  if (check_finite) {
    c.finite(x, p.dtype);
    c.finite(r, p.dtype);
  }
  p.input = x.data();
  p.relevance = r.data();
  p.out = o.data();
  p.stream = c.stream();
  if (p.planes == 0 || p.h * p.w == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::pool_relevance(p);
#endif
  (void)cuda;
  cpu::pool_relevance(p);
}

void row_relevance(py::handle input, py::handle output, py::handle relevance, py::handle out, py::handle bias,
                   py::handle weight, const std::string& rule, double epsilon, std::optional<double> variance_epsilon,
                   bool check_finite, bool gradient_form, py::handle quotient_of, py::handle quotient_out,
                   std::optional<double> quotient_epsilon, py::object stream) {
  Call c("row_relevance", stream);
  Tensor x = c.arg(input, "input"), y = c.arg(output, "output"), r = c.arg(relevance, "relevance"),
         o = c.arg(out, "out");
  std::optional<Tensor> b = c.optional_arg(bias, "bias"), w = c.optional_arg(weight, "weight");
  RowProblem p;
  if (rule == "layer_norm") p.rule = RowRule::LayerNorm;
  else if (rule == "softmax") p.rule = RowRule::Softmax;
  else fail(c.fn(), "'rule' must be 'layer_norm' or 'softmax', got '" + rule + "'");
  p.dtype = c.float_dtype(x);
  for (Tensor* t : {&y, &r, &o}) c.float_dtype(*t);
  c.ndim(x, 2, "(rows, width)");
  p.rows = x.size(0), p.width = x.size(1);
  for (Tensor* t : {&y, &r, &o}) c.shape(*t, {p.rows, p.width}, "like 'input' (rows, width)");
  if (b) {
    if (p.rule != RowRule::LayerNorm) fail(c.fn(), "'bias' belongs to the layer_norm rule; pass None for softmax");
    c.float_dtype(*b);
    c.shape(*b, {p.width}, "(width,)");
  }
  if (gradient_form && p.rule != RowRule::LayerNorm)
    fail(c.fn(), "'gradient_form' belongs to the layer_norm rule; pass False for softmax");
  p.gradient_form = gradient_form;
  if (w) {
    if (p.rule != RowRule::LayerNorm) fail(c.fn(), "'weight' belongs to the layer_norm rule; pass None for softmax");
    if (!variance_epsilon) fail(c.fn(), "'weight' is read with 'variance_epsilon' (LayerNorm's eps); pass both");
    c.float_dtype(*w);
    c.shape(*w, {p.width}, "(width,)");
  }
  if (variance_epsilon && !(*variance_epsilon >= 0 && std::isfinite(*variance_epsilon)))
    fail(c.fn(), "'variance_epsilon' must be a finite number >= 0, got " + std::to_string(*variance_epsilon));
  if (!(epsilon >= 0) || !std::isfinite(epsilon))
    fail(c.fn(), "'epsilon' must be a finite number >= 0, got " + std::to_string(epsilon));
  c.writable(o);
  for (const Tensor* t : {&x, &y, &r}) c.disjoint(o, *t);
  if (b) c.disjoint(o, *b);
  if (w) c.disjoint(o, *w);
  std::optional<Tensor> zq = c.optional_arg(quotient_of, "quotient_of"), q = c.optional_arg(quotient_out,
                                                                                               "quotient_out");
  if (zq || q || quotient_epsilon) {
    if (!(zq && q && quotient_epsilon))
      fail(c.fn(), "'quotient_of', 'quotient_out' and 'quotient_epsilon' come together; pass all three or none");
    if (!gradient_form) fail(c.fn(), "'quotient_of' belongs to gradient_form (layer_norm); pass gradient_form=True");
    if (c.on_cuda()) fail(c.fn(), "'quotient_of' runs on the CPU only; on CUDA divide in a step of its own");
    for (Tensor* t : {&*zq, &*q}) {
      c.float_dtype(*t);
      c.shape(*t, {p.rows, p.width}, "like 'input' (rows, width)");
    }
    if (!(*quotient_epsilon >= 0) || !std::isfinite(*quotient_epsilon))
      fail(c.fn(), "'quotient_epsilon' must be a finite number >= 0, got " + std::to_string(*quotient_epsilon));
    c.writable(*q);
    for (const Tensor* t : {&x, &y, &r, &o, &*zq}) c.disjoint(*q, *t);
    p.quotient_of = zq->data();
    p.quotient_out = q->data();
    p.quotient_epsilon = *quotient_epsilon;
  }
  if (check_finite) {  // a softmax's input may hold -inf where scores are masked: its probabilities are checked
    if (p.rule == RowRule::LayerNorm) c.finite(x, p.dtype);
    c.finite(y, p.dtype);
    c.finite(r, p.dtype);
  }
  p.input = x.data();
  p.output = y.data();
  p.relevance = r.data();
  p.bias = b ? b->data() : nullptr;
  p.weight = w ? w->data() : nullptr;
  p.out = o.data();
  p.epsilon = epsilon;
  p.variance_epsilon = variance_epsilon ? *variance_epsilon : -1.0;
  p.stream = c.stream();
  if (p.rows == 0 || p.width == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::row_relevance(p);
#endif
  (void)cuda;
  cpu::row_relevance(p);
}

Activation parse_activation(const char* fn, const char* argument, const std::string& name) {
  if (name == "identity") return Activation::Identity;
  if (name == "relu") return Activation::ReLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "gelu_tanh") return Activation::GELUTanh;
  if (name == "silu") return Activation::SiLU;
  fail(fn, "'" + std::string(argument) + "' must be 'identity', 'relu', 'gelu', 'gelu_tanh' or 'silu', got '" + name +
               "'");
}

// out = op(a, b) element by element (ElementwiseProblem): arrays of one shape and dtype on the CPU; out is a
// separate array or one of the inputs itself.
void elementwise(const char* name, ElementwiseOp op, py::handle a_obj, const char* a_name, py::handle b_obj,
                 const char* b_name, py::handle out_obj, double epsilon, double scale, bool accumulate,
                 Activation activation, py::handle factor_obj = py::none()) {
  Call c(name, py::none());
  const Tensor a = c.arg(a_obj, a_name), b = c.arg(b_obj, b_name), o = c.arg(out_obj, "out");
  const std::optional<Tensor> factor = c.optional_arg(factor_obj, "factor");
  if (c.on_cuda()) fail(c.fn(), "runs on the CPU only; on CUDA use torch's element-wise operations");
  ElementwiseProblem p;
  p.op = op;
  p.dtype = c.float_dtype(a);
  std::vector<const Tensor*> others = {&b, &o}, inputs = {&a, &b};
  if (factor) others.push_back(&*factor), inputs.push_back(&*factor);
  std::vector<int64_t> shape(a.ndim());
  for (int i = 0; i < a.ndim(); ++i) shape[i] = a.size(i);
  const std::string like = "like '" + std::string(a_name) + "'";
  for (const Tensor* t : others) {
    c.float_dtype(*t);
    c.ndim(*t, a.ndim(), like.c_str());
    c.shape(*t, shape, like.c_str());
  }
  c.writable(o);
  for (const Tensor* t : inputs)  // the same array is fine: each element is read before it is written
    if (t->data() != o.data()) c.disjoint(o, *t);
  if (!(epsilon >= 0) || !std::isfinite(epsilon))
    fail(c.fn(), "'epsilon' must be a finite number >= 0, got " + std::to_string(epsilon));
  if (!std::isfinite(scale)) fail(c.fn(), "'scale' must be a finite number, got " + std::to_string(scale));
  p.a = a.data(), p.b = b.data(), p.out = o.data(), p.factor = factor ? factor->data() : nullptr;
  p.n = a.numel();
  p.epsilon = epsilon, p.scale = scale, p.accumulate = accumulate, p.activation = activation;
  if (p.n == 0) return;
  py::gil_scoped_release release;
  cpu::elementwise(p);
}

void attention_relevance(py::handle query, py::handle key, py::handle value, py::handle relevance, py::handle mask,
                         py::handle out_query, py::handle out_key, py::handle out_value, const std::string& rule,
                         double scale, bool causal, bool check_finite, py::handle output, py::handle logsumexp,
                         bool gradient_form, std::optional<double> quotient_epsilon, py::object stream) {
  Call c("attention_relevance", stream);
  const auto rows = Call::Layout::Rows;
  Tensor q = c.arg(query, "query", rows), k = c.arg(key, "key", rows), v = c.arg(value, "value", rows),
         r = c.arg(relevance, "relevance", rows), oq = c.arg(out_query, "out_query", rows),
         ok = c.arg(out_key, "out_key", rows), ov = c.arg(out_value, "out_value", rows);
  std::optional<Tensor> m = c.optional_arg(mask, "mask");
  std::optional<Tensor> saved_o = c.optional_arg(output, "output", rows),
                        saved_lse = c.optional_arg(logsumexp, "logsumexp", Call::Layout::Strided);
  if (saved_o.has_value() != saved_lse.has_value())
    fail(c.fn(), "'output' and 'logsumexp' (the forward pass's O and log-sum-exp) go together; pass both or neither");
  AttentionProblem p;
  if (rule == "attnlrp") p.rule = AttentionRule::AttnLRP;
  else if (rule == "cp_lrp") p.rule = AttentionRule::CPLRP;
  else fail(c.fn(), "'rule' must be 'attnlrp' or 'cp_lrp', got '" + rule + "'");
  p.dtype = c.float_dtype(q);
  for (Tensor* t : {&k, &v, &r, &oq, &ok, &ov}) c.float_dtype(*t);
  c.ndim(q, 4, "(batch, heads, queries, dim)");
  p.batch = q.size(0), p.heads = q.size(1), p.queries = q.size(2), p.dim = q.size(3);
  c.ndim(k, 4, "(batch, heads, keys, dim)");
  p.keys = k.size(2);
  c.shape(k, {p.batch, p.heads, p.keys, p.dim}, "(batch, heads, keys, dim)");
  c.ndim(v, 4, "(batch, heads, keys, value_dim)");
  p.value_dim = v.size(3);
  c.shape(v, {p.batch, p.heads, p.keys, p.value_dim}, "(batch, heads, keys, value_dim)");
  c.shape(r, {p.batch, p.heads, p.queries, p.value_dim}, "(batch, heads, queries, value_dim)");
  c.shape(oq, {p.batch, p.heads, p.queries, p.dim}, "like 'query'");
  c.shape(ok, {p.batch, p.heads, p.keys, p.dim}, "like 'key'");
  c.shape(ov, {p.batch, p.heads, p.keys, p.value_dim}, "like 'value'");
  if (saved_o) {
    c.float_dtype(*saved_o), c.float_dtype(*saved_lse);
    c.shape(*saved_o, {p.batch, p.heads, p.queries, p.value_dim}, "(batch, heads, queries, value_dim)");
    c.shape(*saved_lse, {p.batch, p.heads, p.queries}, "(batch, heads, queries)");
  }
  for (int64_t n : {p.queries, p.keys, p.dim, p.value_dim}) c.blas_size(n, "a matrix dimension");
  if (m) {
    const DLDataType d = m->t->dtype;
    if (!((d.code == kDLBool || d.code == kDLUInt) && d.bits == 8 && d.lanes == 1))
      fail(c.fn(), "'mask' must be a bool (or uint8) array, true where a query may attend to a key, got " +
                       dtype_str(d));
    c.ndim(*m, 4, "(batch or 1, heads or 1, queries or 1, keys)");
    const auto axis = [&](int i, int64_t full, const char* name) {
      if (m->size(i) != full && m->size(i) != 1)
        fail(c.fn(), "'mask' must have " + std::string(name) + " = " + std::to_string(full) + " or 1 on axis " +
                         std::to_string(i) + ", got shape " + shape_str(*m));
    };
    axis(0, p.batch, "batch");
    axis(1, p.heads, "heads");
    axis(2, p.queries, "queries");
    if (m->size(3) != p.keys)
      fail(c.fn(), "'mask' must have keys = " + std::to_string(p.keys) + " on axis 3, got shape " + shape_str(*m));
    const int64_t q_stride = m->size(2) == 1 ? 0 : p.keys;
    const int64_t h_stride = m->size(1) == 1 ? 0 : m->size(2) * p.keys;
    const int64_t b_stride = m->size(0) == 1 ? 0 : m->size(1) * m->size(2) * p.keys;
    p.mask = static_cast<const uint8_t*>(m->data());
    p.mask_query_stride = q_stride, p.mask_head_stride = h_stride, p.mask_batch_stride = b_stride;
  }
  if (!(scale > 0) || !std::isfinite(scale))
    fail(c.fn(), "'scale' must be a finite number > 0, got " + std::to_string(scale));
  p.scale = scale;
  p.causal = causal;
  if (gradient_form && c.on_cuda())
    fail(c.fn(), "'gradient_form' runs on the CPU only; on CUDA pass the relevance R_O and take R_Q, R_K, R_V");
  p.gradient_form = gradient_form;
  if (quotient_epsilon) {
    if (!gradient_form)
      fail(c.fn(), "'quotient_epsilon' belongs to gradient_form (the CPU kernel's); pass None or gradient_form=True");
    if (!(*quotient_epsilon >= 0) || !std::isfinite(*quotient_epsilon))
      fail(c.fn(), "'quotient_epsilon' must be a finite number >= 0 (the epsilon rule's ε), got " +
                       py::repr(py::float_(*quotient_epsilon)).cast<std::string>());
    p.quotient_epsilon = *quotient_epsilon;
  }
  for (const Tensor* t : {&q, &k, &v, &r, &oq, &ok, &ov})
    if (c.on_cuda() && !t->contiguous())
      fail(c.fn(), "'" + t->name + "' must be C-contiguous on CUDA (the CPU takes strided heads); call .contiguous()");
  if (q.size(2) > 1 && q.stride(2) < p.dim)  // BLAS reads Q by its leading dimension, which must span a row
    fail(c.fn(), "'query' has rows " + std::to_string(q.stride(2)) + " elements apart, fewer than its " +
                     std::to_string(p.dim) + " columns (an expanded view?); call .contiguous() first");
  // a single row is never stepped over, but BLAS still wants a leading dimension that spans it
  const auto strides = [](const Tensor& t) {
    return HeadStrides{t.stride(0), t.stride(1), t.size(2) == 1 ? t.size(3) : t.stride(2)};
  };
  p.query_strides = strides(q), p.key_strides = strides(k), p.value_strides = strides(v);
  p.relevance_strides = strides(r), p.out_query_strides = strides(oq), p.out_key_strides = strides(ok);
  p.out_value_strides = strides(ov);
  for (Tensor* o : {&oq, &ok, &ov}) {
    c.writable(*o);
    c.non_overlapping(*o);
    for (const Tensor* t : {&q, &k, &v, &r}) c.disjoint(*o, *t);
    if (m) c.disjoint(*o, *m);
    if (saved_o) c.disjoint(*o, *saved_o), c.disjoint(*o, *saved_lse);
  }
  c.disjoint(oq, ok), c.disjoint(oq, ov), c.disjoint(ok, ov);
  if (check_finite) {
    for (const Tensor* t : {&q, &k, &v, &r}) c.finite(*t, p.dtype);
    if (saved_o) c.finite(*saved_o, p.dtype);  // a row with no allowed key may have an lse of −inf
  }
  p.stream = c.stream();
  p.query = q.data(), p.key = k.data(), p.value = v.data(), p.relevance = r.data();
  if (saved_o && !c.on_cuda()) {
    p.output = saved_o->data(), p.logsumexp = saved_lse->data();
    p.output_strides = strides(*saved_o);
    p.logsumexp_strides = HeadStrides{saved_lse->stride(0), saved_lse->stride(1), saved_lse->stride(2)};
  }
  p.out_query = oq.data(), p.out_key = ok.data(), p.out_value = ov.data();
  if (p.batch * p.heads == 0 || p.queries == 0 || p.keys == 0) {  // nothing to attend: all zero
    if (c.on_cuda()) fail(c.fn(), "got an empty batch, head, query or key axis on CUDA; skip the call");
    py::gil_scoped_release release;
    for (Tensor* o : {&oq, &ok, &ov}) {
      const int64_t bytes = o->t->dtype.bits / 8;
      char* base = static_cast<char*>(o->data());
      if (o->numel())  // row by row: the rows of a strided output need not be adjacent
        for (int64_t b = 0; b < o->size(0); ++b)
          for (int64_t h = 0; h < o->size(1); ++h)
            for (int64_t i = 0; i < o->size(2); ++i)
              std::memset(base + (b * o->stride(0) + h * o->stride(1) + i * o->stride(2)) * bytes, 0,
                          size_t(o->size(3) * bytes));
    }
    return;
  }
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::attention_relevance(p);
#endif
  (void)cuda;
  cpu::attention_relevance(p);
}

void recurrent_sweep(py::handle decay, py::handle fresh, py::handle pre, py::handle hidden, py::handle weight,
                     py::handle relevance, py::handle last, py::handle lengths, py::handle out, py::handle scale,
                     py::handle bias, double epsilon, double bias_factor, int64_t inputs, bool reverse,
                     py::object stream) {
  Call c("recurrent_sweep", stream);
  Tensor d = c.arg(decay, "decay"), f = c.arg(fresh, "fresh"), a = c.arg(pre, "pre"), h = c.arg(hidden, "hidden"),
         w = c.arg(weight, "weight"), r = c.arg(relevance, "relevance"), l = c.arg(last, "last"),
         o = c.arg(out, "out");
  std::optional<Tensor> sc = c.optional_arg(scale, "scale"), b = c.optional_arg(bias, "bias");
  Call host("recurrent_sweep", py::none());  // the lengths live on the host whatever the device
  Tensor n = host.arg(lengths, "lengths");
  RecurrentProblem p;
  p.dtype = c.float_dtype(d);
  c.ndim(d, 3, "(batch, steps, hidden)");
  p.batch = d.size(0), p.steps = d.size(1), p.units = d.size(2);
  std::vector<Tensor*> like = {&f, &a, &h, &r, &o};
  if (sc) like.push_back(&*sc);
  if (b) like.push_back(&*b);
  for (Tensor* t : like) {
    c.float_dtype(*t);
    c.shape(*t, {p.batch, p.steps, p.units}, "like 'decay' (batch, steps, hidden)");
  }
  for (Tensor* t : {&w, &l}) c.float_dtype(*t);
  c.shape(w, {p.units, p.units}, "(hidden, hidden)");
  c.shape(l, {p.batch, p.units}, "(batch, hidden)");
  if (n.cuda() || n.t->dtype.code != kDLInt || n.t->dtype.bits != 64)
    fail(c.fn(), "'lengths' must be an int64 array on the CPU, got " + dtype_str(n.t->dtype) + " on " +
                     device_str(n.t->device));
  host.shape(n, {p.batch}, "(batch,)");
  const int64_t* lens = static_cast<const int64_t*>(n.data());
  for (int64_t i = 0; i < p.batch; ++i)
    if (lens[i] < 1 || lens[i] > p.steps)
      fail(c.fn(), "'lengths' must lie in [1, " + std::to_string(p.steps) + "] (the steps of 'decay'), got " +
                       std::to_string(lens[i]) + " at index " + std::to_string(i));
  if (!(epsilon >= 0) || !std::isfinite(epsilon))
    fail(c.fn(), "'epsilon' must be a finite number >= 0, got " + std::to_string(epsilon));
  if (!(bias_factor >= 0) || !std::isfinite(bias_factor))
    fail(c.fn(), "'bias_factor' must be a finite number >= 0, got " + std::to_string(bias_factor));
  if (bias_factor != 0 && !b) fail(c.fn(), "'bias_factor' is not 0: pass the map's 'bias' to redistribute");
  if (inputs < 0) fail(c.fn(), "'inputs' must be >= 0, got " + std::to_string(inputs));
  c.blas_size(p.batch * p.units, "batch * hidden");
  c.writable(o);
  for (const Tensor* t : {&d, &f, &a, &h, &w, &r, &l}) c.disjoint(o, *t);
  if (sc) c.disjoint(o, *sc);
  if (b) c.disjoint(o, *b);
  p.decay = d.data(), p.fresh = f.data(), p.pre = a.data(), p.hidden = h.data(), p.weight = w.data();
  p.relevance = r.data(), p.last = l.data(), p.out = o.data(), p.lengths = lens;
  p.scale = sc ? sc->data() : nullptr;
  p.bias = b && bias_factor != 0 ? b->data() : nullptr;
  p.inputs = inputs, p.epsilon = epsilon, p.bias_factor = bias_factor, p.reverse = reverse;
  p.stream = c.stream();
  if (p.batch == 0 || p.steps == 0 || p.units == 0) return;
  const bool cuda = c.on_cuda();
  py::gil_scoped_release release;
#ifdef LRPTEXT_WITH_CUDA
  if (cuda) return cuda::recurrent_sweep(p);
#endif
  (void)cuda;
  cpu::recurrent_sweep(p);
}

py::dict build_info() {
  py::dict d;
  d["version"] = LRPTEXT_VERSION;
  d["blas"] = cpu::external_blas() ? "torch's (lrptext._native.core_blas), one thread per product"
                                   : "OpenBLAS (scipy-openblas32), single-threaded inside OpenMP";
  d["openmp"] = _OPENMP;
  d["threads"] = cpu::get_num_threads();
#ifdef LRPTEXT_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = LRPTEXT_CUDA_VERSION;
  d["cuda_devices"] = cuda::device_count();
  const size_t cudnn = cuda::cudnn_version();
  d["cudnn"] = cudnn ? py::object(py::int_(cudnn)) : py::object(py::none());
#else
  d["cuda"] = false;
  d["cuda_version"] = py::none();
  d["cuda_devices"] = 0;
  d["cudnn"] = py::none();
#endif
  d["dlpack"] = std::to_string(DLPACK_MAJOR_VERSION) + "." + std::to_string(DLPACK_MINOR_VERSION);
#if defined(__AVX2__) && defined(__FMA__)
  d["cpu_level"] = "x86-64-v3";
#else
  d["cpu_level"] = "baseline";
#endif
  return d;
}

}  // namespace
}  // namespace lrptext

PYBIND11_MODULE(LRPTEXT_MODULE, m) {
  using namespace lrptext;
  m.doc() = "lrptext's C++ relevance kernels. Use lrptext.kernels, which checks rules and allocates outputs.";
  m.def("dense_relevance", &dense_relevance, "input"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.none(),
        "relevance"_a.noconvert(), "out"_a.noconvert(), py::kw_only(), "z"_a.none() = py::none(),
        "weight_a"_a.none() = py::none(), "weight_b"_a.none() = py::none(), "low"_a.none() = py::none(),
        "high"_a.none() = py::none(), "rule"_a = "epsilon", "epsilon"_a = 1e-6, "gamma"_a = 0.25, "alpha"_a = 1.0,
        "beta"_a = 0.0, "stabilizer"_a = 1e-6, "use_bias"_a = true, "reduce_channels"_a = false,
        "check_finite"_a = true, "relevance_writable"_a = false, "relu_input"_a = false, "accumulate"_a = false,
        "stream"_a = py::none(),
        "Relevance at the input of a dense layer, input [rows, in] -> out [rows, in] (or [rows] when reduced); "
        "accumulate=True adds it to out.");
  m.def("dense_forward", &dense_forward, "input"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.none(),
        "out"_a.noconvert(), "out = input @ weight.T + bias on the CPU, input [rows, in] -> out [rows, out].");
  m.def("max_pool_forward", &max_pool_forward, "input"_a.noconvert(), "out"_a.noconvert(), py::kw_only(), "kernel"_a,
        "stride"_a,
        "Max pooling without padding or dilation on the CPU, input [planes, h, w] -> out [planes, ho, wo].");
  m.def("conv_forward", &conv_forward, "input"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.none(),
        "out"_a.noconvert(), py::kw_only(), "stride"_a, "padding"_a, "dilation"_a, "groups"_a,
        "out = conv2d(input, weight, bias) on the CPU, input [batch, cin, h, w] -> out [batch, cout, ho, wo].");
  m.def("set_winograd", &set_winograd, "mode"_a,
        "When the CPU kernels compute 3x3 convolutions of stride 1 by Winograd's F(2x2, 3x3): 'auto', 'always', "
        "'never'.");
  m.def("get_winograd", &get_winograd);
  m.def("conv_relevance", &conv_relevance, "input"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.none(),
        "relevance"_a.noconvert(), "out"_a.noconvert(), py::kw_only(), "z"_a.none() = py::none(),
        "weight_a"_a.none() = py::none(), "weight_b"_a.none() = py::none(), "low"_a.none() = py::none(),
        "high"_a.none() = py::none(), "stride"_a, "padding"_a, "dilation"_a, "groups"_a, "rule"_a = "epsilon",
        "epsilon"_a = 1e-6, "gamma"_a = 0.25, "alpha"_a = 1.0, "beta"_a = 0.0, "stabilizer"_a = 1e-6,
        "use_bias"_a = true, "reduce_channels"_a = false, "check_finite"_a = true, "relevance_writable"_a = false,
        "relu_input"_a = false, "stream"_a = py::none(),
        "Relevance at the input of a 2-d convolution, input [B, C, H, W] -> out like input (or [B, H, W] when reduced).");
  m.def("prepare_rule_weights", &prepare_rule_weights, "weight"_a.noconvert(), "out_a"_a.none(), "out_b"_a.none(),
        py::kw_only(), "rule"_a, "epsilon"_a = 1e-6, "gamma"_a = 0.25, "alpha"_a = 1.0, "beta"_a = 0.0,
        "stabilizer"_a = 1e-6, "use_bias"_a = true, "stream"_a = py::none(),
        "Writes the rule-modified weights (weight_a, weight_b) that dense/conv_relevance accept.");
  m.def("embedding_relevance", &embedding_relevance, "ids"_a.noconvert(), "relevance"_a.noconvert(),
        "out"_a.noconvert(), py::kw_only(), "num_embeddings"_a, "padding_idx"_a = py::none(),
        "check_finite"_a = true, "stream"_a = py::none(),
        "Per-token relevance from the relevance at an embedding's output: out [tokens] (summed) or [tokens, dim].");
  m.def("embedding_bag_relevance", &embedding_bag_relevance, "ids"_a.noconvert(), "offsets"_a.noconvert(),
        "weight"_a.noconvert(), "relevance"_a.noconvert(), "out"_a.noconvert(), py::kw_only(),
        "per_sample_weights"_a.none() = py::none(), "output"_a.none() = py::none(), "mode"_a = "mean",
        "padding_idx"_a = py::none(), "stabilizer"_a = 1e-6, "check_finite"_a = true, "stream"_a = py::none(),
        "Per-token relevance of an EmbeddingBag: each bag's relevance split over its tokens by contribution.");
  m.def("pool_relevance", &pool_relevance, "input"_a.noconvert(), "relevance"_a.noconvert(), "out"_a.noconvert(),
        py::kw_only(), "mode"_a, "kernel"_a, "stride"_a, "padding"_a, "dilation"_a, "adaptive"_a = false,
        "count_include_pad"_a = true, "divisor_override"_a = 0, "stabilizer"_a = 1e-6, "check_finite"_a = true,
        "relu_input"_a = false, "stream"_a = py::none(),
        "Max (winner-take-all) or average (Norm) pooling relevance over planes [P, H, W].");
  m.def("row_relevance", &row_relevance, "input"_a.noconvert(), "output"_a.noconvert(), "relevance"_a.noconvert(),
        "out"_a.noconvert(), py::kw_only(), "bias"_a = py::none(), "weight"_a = py::none(), "rule"_a,
        "epsilon"_a = 1e-6, "variance_epsilon"_a = py::none(), "check_finite"_a = true, "gradient_form"_a = false,
        "quotient_of"_a = py::none(), "quotient_out"_a = py::none(), "quotient_epsilon"_a = py::none(),
        "stream"_a = py::none(),
        "LayerNorm (rule='layer_norm') or softmax (rule='softmax') relevance along the rows of [rows, width]. "
        "gradient_form (layer_norm): 'relevance' holds g with R = output * g, and 'out' receives R_input / input; "
        "with quotient_of z (CPU), 'quotient_out' also receives z * out / st(z, quotient_epsilon), a dense layer's "
        "epsilon quotient for its output z summed into the input.");
  m.def("divide_stabilized", [](py::handle numerator, py::handle denominator, py::handle out, double epsilon,
                                py::handle factor, const std::string& activation_factor) {
    elementwise("divide_stabilized", ElementwiseOp::DivideStabilized, numerator, "numerator", denominator,
                "denominator", out, epsilon, 1.0, false,
                parse_activation("divide_stabilized", "activation_factor", activation_factor), factor);
  }, "numerator"_a.noconvert(), "denominator"_a.noconvert(), "out"_a.noconvert(), py::kw_only(), "epsilon"_a,
        "factor"_a.noconvert() = py::none(), "activation_factor"_a = "identity",
        "out = numerator / (denominator + epsilon sign(denominator)) element-wise on the CPU (sign(0) = +1), the "
        "numerator first multiplied by act(factor) where a factor is given (activation_factor as multiply's "
        "activation_a); out may be numerator, denominator or factor itself.");
  m.def("multiply", [](py::handle a, py::handle b, py::handle out, double scale, bool accumulate,
                       const std::string& activation_a) {
    elementwise("multiply", ElementwiseOp::Multiply, a, "a", b, "b", out, 0.0, scale, accumulate,
                parse_activation("multiply", "activation_a", activation_a));
  }, "a"_a.noconvert(), "b"_a.noconvert(), "out"_a.noconvert(), py::kw_only(), "scale"_a = 1.0,
        "accumulate"_a = false, "activation_a"_a = "identity",
        "out = scale act(a) b, or out += scale act(a) b with accumulate=True, element-wise on the CPU; act is "
        "activation_a: 'identity', 'relu', 'gelu' (exact), 'gelu_tanh' or 'silu'. out may be a or b itself.");
  m.def("attention_relevance", &attention_relevance, "query"_a.noconvert(), "key"_a.noconvert(),
        "value"_a.noconvert(), "relevance"_a.noconvert(), "mask"_a.none(), "out_query"_a.noconvert(),
        "out_key"_a.noconvert(), "out_value"_a.noconvert(), py::kw_only(), "rule"_a, "scale"_a, "causal"_a = false,
        "check_finite"_a = true, "output"_a = py::none(), "logsumexp"_a = py::none(), "gradient_form"_a = false,
        "quotient_epsilon"_a = py::none(), "stream"_a = py::none(),
        "AttnLRP (rule='attnlrp') or CP-LRP (rule='cp_lrp') relevance of scaled dot-product attention, per head. "
        "gradient_form (CPU): 'relevance' holds G with R_O = O * G, and the outputs receive R_Q / Q, R_K / K, R_V / V; "
        "with quotient_epsilon = eps also, R_Q / st(Q), R_K / st(K), R_V / st(V), st(x) = x + eps sign(x).");
  m.def("recurrent_sweep", &recurrent_sweep, "decay"_a.noconvert(), "fresh"_a.noconvert(), "pre"_a.noconvert(),
        "hidden"_a.noconvert(), "weight"_a.noconvert(), "relevance"_a.noconvert(), "last"_a.noconvert(),
        "lengths"_a.noconvert(), "out"_a.noconvert(), py::kw_only(), "scale"_a = py::none(), "bias"_a = py::none(),
        "epsilon"_a = 1e-6, "bias_factor"_a = 0.0, "inputs"_a, "reverse"_a = false, "stream"_a = py::none(),
        "The backward sweep over time of one direction of a recurrent layer: q_t [batch, steps, hidden] into out.");
  m.def("data_address", [](py::handle array) {
    Call c("data_address", py::none());
    return reinterpret_cast<intptr_t>(c.arg(array, "array").data());
  }, "array"_a, "The address the kernels read for `array`: the array's own pointer, since nothing is copied.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: 'n' must be >= 1, got " + std::to_string(n));
    cpu::set_num_threads(n);
  }, "n"_a);
  m.def("get_num_threads", &cpu::get_num_threads);
  m.def("set_blas", [](std::optional<std::string> library) {
    return cpu::set_blas(library ? library->c_str() : nullptr);
  }, "library"_a.none(),
        "Runs the CPU kernels' matrix products (not their matrix-vector products) in the MKL of `library`, a path "
        "to a shared library the process has loaded (torch's), after checking its sgemm_ and dgemm_ on small "
        "products; None: in the core's OpenBLAS. Returns False, and OpenBLAS runs them, where the library is not "
        "loaded or has no working ones.");
  m.def("release_workspaces", &cpu::release_workspaces,
        "Unmaps the CPU kernels' large workspaces kept for later calls; returns their bytes.");
  m.def("build_info", &build_info);
  m.def("cpu_supports_x86_64_v3", [] {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v3") != 0;
#else
    return false;
#endif
  }, "Whether the running CPU has AVX2 and FMA (x86-64-v3), which the module _core_x86_64_v3 needs.");
}
