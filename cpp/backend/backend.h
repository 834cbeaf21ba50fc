// backend.h: THE interface every backend implements (CPU is the reference, CUDA mirrors it).
//
// Primitives take tensors and an options struct. The op layer (cpp/ops) validates arguments,
// allocates outputs and promotes dtypes before calling here, so a backend may assume:
//   - every tensor argument is on this backend's device;
//   - `out` tensors are allocated with the right shape and dtype (and are contiguous unless
//     a primitive says "any strides");
//   - inputs of elementwise primitives already have the output's shape (broadcast inputs arrive
//     expanded, with stride 0), and any strides;
//   - the 1-D vectors that primitives read per row or item have any stride (element k is at
//     data + k * vector_stride(t)): check_index's, index_select's and index_add's `index`, the
//     cross-entropy's `labels`, `lse` and `grad_loss`, and gather_batch's `order`. Every other
//     tensor argument is contiguous unless its primitive says "any strides". Every backend obeys
//     both rules (tests/backend/test_backend_rules.cpp passes strided vectors to the CPU).
#pragma once
#include <array>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember {

// The elementwise op enums, generated from their lists (unary_ops.def, binary_ops.def) together
// with the names and every backend's dispatch table, so that no list can disagree with another.
enum class UnaryOp : int8_t {
#define EMBER_UNARY_OP(NAME, STR) NAME,
#include "cpp/backend/unary_ops.def"
#undef EMBER_UNARY_OP
};

enum class BinaryOp : int8_t {
#define EMBER_BINARY_OP(NAME, STR, COMPARES) NAME,
#include "cpp/backend/binary_ops.def"
#undef EMBER_BINARY_OP
};

inline constexpr const char* kUnaryOpNames[] = {
#define EMBER_UNARY_OP(NAME, STR) STR,
#include "cpp/backend/unary_ops.def"
#undef EMBER_UNARY_OP
};
inline constexpr const char* kBinaryOpNames[] = {
#define EMBER_BINARY_OP(NAME, STR, COMPARES) STR,
#include "cpp/backend/binary_ops.def"
#undef EMBER_BINARY_OP
};
inline constexpr bool kBinaryOpCompares[] = {
#define EMBER_BINARY_OP(NAME, STR, COMPARES) COMPARES,
#include "cpp/backend/binary_ops.def"
#undef EMBER_BINARY_OP
};
inline constexpr int kUnaryOpCount = static_cast<int>(std::size(kUnaryOpNames));
inline constexpr int kBinaryOpCount = static_cast<int>(std::size(kBinaryOpNames));
static_assert(kUnaryOpCount <= 127 && kBinaryOpCount <= 127, "an op list outgrew its int8_t enum");

// The op's index in its list; throws ember::Error naming the value and `backend` for a value
// outside the list (an integer cast to the enum), so no dispatch table is read out of bounds.
int op_index(UnaryOp op, const char* backend);
int op_index(BinaryOp op, const char* backend);
// The op's name in its list ("softplus", "relu_backward"); "unknown" for a value outside it.
inline const char* op_name(UnaryOp op) {
  const int i = static_cast<int>(op);
  return i >= 0 && i < kUnaryOpCount ? kUnaryOpNames[i] : "unknown";
}
inline const char* op_name(BinaryOp op) {
  const int i = static_cast<int>(op);
  return i >= 0 && i < kBinaryOpCount ? kBinaryOpNames[i] : "unknown";
}
// Whether a binary op compares (output dtype Bool).
constexpr bool is_comparison(BinaryOp op) { return kBinaryOpCompares[static_cast<int>(op)]; }

struct ElementwiseParams {
  double alpha = 0.0;
  double beta = 0.0;
};

enum class RandomKind : int8_t {
  Uniform,    // [a, b)
  Normal,     // mean a, standard deviation b
  Int,        // integers in [a, b)
  Bernoulli,  // 1 with probability a, else 0
};

struct RandomParams {
  RandomKind kind = RandomKind::Uniform;
  double a = 0.0;
  double b = 1.0;
  uint64_t seed = 0;
  uint64_t offset = 0;  // counter of element 0; element i uses counter offset + i
};

enum class ReduceOp : int8_t { Sum, Mean, Max, Min, ArgMax, ArgMin };

enum class Epilogue : int8_t {
  None,
  Bias,       // out[i, j] += bias[j]
  Relu,       // out = max(out, 0)
  BiasRelu,   // out = max(out + bias[j], 0)
  BiasGradA,  // also writes bias_grad[i] = sum_k op(a)[i, k] (the bias gradient of a linear layer)
};

// What an epilogue asks of a GEMM. Every backend reads its epilogue through this one switch over
// every Epilogue (a missing case is a compile error: -Werror=switch), so a new epilogue cannot pass
// as None on one backend; a value outside the enum throws ember::Error naming `backend`.
struct EpilogueParts {
  bool bias = false;       // out[i, j] += bias[j]
  bool relu = false;       // then out = max(out, 0)
  bool bias_grad = false;  // bias_grad[i] = sum_k op(a)[i, k]
};
EpilogueParts epilogue_parts(Epilogue e, const char* backend);

// Throws ember::Error for an enum value that a backend's switch does not list: `primitive` (the
// caller), the enum's name, the value and the backend. Backends call it after a switch that
// covers every enumerator and returns from each case.
[[noreturn]] void throw_unhandled(const char* primitive, const char* enum_name, int value, const char* backend);

struct GemmOptions {
  double alpha = 1.0;
  double beta = 0.0;  // out = alpha * op(a) @ op(b) + beta * out
  Epilogue epilogue = Epilogue::None;
  Tensor bias;       // [N], for Bias / BiasRelu
  Tensor bias_grad;  // [M], written by BiasGradA
};

// Whether two different views' byte ranges [first, last] intersect (copy's overlap rule). An
// identical view is not an overlap: copying a view onto itself changes nothing.
inline bool overlapping_views(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.shares_storage(b)) return false;
  if (a.data_ptr() == b.data_ptr() && a.dtype() == b.dtype() && a.shape() == b.shape() && a.strides() == b.strides())
    return false;
  auto span = [](const Tensor& t) {
    const auto first = reinterpret_cast<uintptr_t>(t.data_ptr());
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    return std::pair<uintptr_t, uintptr_t>(first, first + static_cast<uintptr_t>(last + 1) * dtype_size(t.dtype()) - 1);
  };
  const auto [a0, a1] = span(a);
  const auto [b0, b1] = span(b);
  return a0 <= b1 && b0 <= a1;
}

// The element stride of a 1-D vector argument (a 0-D one has one element).
inline int64_t vector_stride(const Tensor& t) { return t.dim() == 1 ? t.stride(0) : 1; }

// What check_index checks, and the words of its error. The strings must be literals: a CUDA
// backend keeps the pointers until it reports the failure.
struct IndexCheck {
  const char* op = "";           // the op, first in the message: "index_select"
  const char* what = "indices";  // the checked tensor's role: "index values", "labels"
  const char* bound_name = "";   // what `bound` is: "num_classes", "the number of images"
  const char* hint = "";         // appended: "; fix the labels or set ignore_index"
  int64_t bound = 0;             // values must lie in [0, bound)
  bool allow_ignore = false;     // a value equal to ignore_index passes
  int64_t ignore_index = -100;
};

struct CrossEntropyOptions {
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
};

// ---- optimizer updates (arithmetic in optim_math.h) ----

enum class OptimizerAlgo : int8_t { Sgd, Adam, Rmsprop, Adagrad };

// The scalars of one parameter's update, computed on the host in f64 from its group's options and
// its step count, exactly as PyTorch computes its Python-float scalars; the kernels cast them to
// the parameter's dtype. Each field names the algorithms that read it.
struct OptimizerHyper {
  double step_size = 0.0;  // the update's multiplier: SGD, RMSprop lr; Adam lr / (1 - beta1^t);
                           // Adagrad lr / (1 + (t - 1) lr_decay)
  double weight_decay = 0.0;           // all (L2: g += weight_decay * p), unless decoupled
  double decay_factor = 1.0;           // Adam decoupled (AdamW): p *= 1 - lr * weight_decay
  double momentum = 0.0;               // SGD, RMSprop
  double dampening_complement = 1.0;   // SGD: 1 - dampening
  double beta1_complement = 0.0;       // Adam: 1 - beta1 (the lerp weight of exp_avg)
  double beta2 = 0.0;                  // Adam: beta2; RMSprop: alpha
  double beta2_complement = 0.0;       // Adam: 1 - beta2; RMSprop: 1 - alpha
  double eps = 0.0;                    // Adam, RMSprop, Adagrad
  double bias_correction2_sqrt = 1.0;  // Adam: sqrt(1 - beta2^t)
  bool maximize = false;
  bool nesterov = false;                // SGD
  bool first_step = false;              // SGD: the momentum buffer starts as the gradient
  bool amsgrad = false;                 // Adam
  bool decoupled_weight_decay = false;  // Adam
  bool centered = false;                // RMSprop
};

// One parameter's tensors: param (contiguous, f32 or f64), grad and state buffers (contiguous,
// same dtype, device and numel). State slots by algorithm (undefined when unused):
//   Sgd:     state[0] momentum_buffer (momentum != 0)
//   Adam:    state[0] exp_avg, state[1] exp_avg_sq, state[2] max_exp_avg_sq (amsgrad)
//   Rmsprop: state[0] square_avg, state[1] momentum_buffer (momentum > 0), state[2] grad_avg (centered)
//   Adagrad: state[0] sum
struct OptimizerParam {
  Tensor param;
  Tensor grad;
  Tensor state[3];
  OptimizerHyper hyper;
};

// One optimizer step over many parameters of one device and dtype: on CUDA one launch per 48
// parameters (arguments only, nothing copied from the host).
struct OptimizerStep {
  OptimizerAlgo algo = OptimizerAlgo::Sgd;
  std::vector<OptimizerParam> params;
};

// ---- data pipeline (arithmetic in data_math.h) ----

// One batch of a u8 image dataset, gathered, optionally augmented, and normalised (gather_batch).
struct BatchParams {
  int64_t first = 0;  // batch row b is the sample at position first + b of `order`
  double mean = 0.0;  // x = float((pixel / 255 - mean) / std)
  double std = 1.0;
  bool augment = false;  // warp each sample by data_math::random_warp before normalising
  uint64_t seed = 0;
  uint64_t augment_counter = 0;  // the sample at position p of `order` draws Philox block augment_counter + p
  double max_degrees = 0.0;
  double max_shift = 0.0;
};

// ---- convolution (issue 12; conv primitives block) ----

// A 2-D convolution's geometry, NCHW. Padding is given per side ({top, left} and {bottom, right})
// so PyTorch's padding="same" with an odd total (one more at the bottom/right) needs no copy.
struct ConvParams {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> pad_begin{0, 0};  // top, left
  std::array<int64_t, 2> pad_end{0, 0};    // bottom, right
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};

// ---- end of the conv primitives block ----

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Memory. allocate() throws ember::OutOfMemory (after releasing any cache) when it cannot.
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, Device device) = 0;
  // Waits until queued work on `device` finished (a no-op on the CPU).
  virtual void synchronize(Device device) = 0;

  // out (any strides) = value, converted to out's dtype.
  virtual void fill(const Tensor& out, double value) = 0;
  // dst (any strides) = src (any strides, same shape), converting dtype when they differ. dst and
  // src may overlap in memory: the result is as if src were read whole before dst is written (as
  // memmove does; overlapping_views says when a backend must go through a temporary).
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  // Copies contiguous `src` into contiguous `dst` of the same dtype and size across devices
  // (host<->device or device<->device). Implemented by the device backend.
  virtual void transfer(const Tensor& dst, const Tensor& src) = 0;
  // Fills contiguous `out` from the counter-based generator (see philox.h).
  virtual void random(const Tensor& out, const RandomParams& p) = 0;

  // Elementwise maps: out contiguous; inputs any strides, same shape as out.
  virtual void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) = 0;
  virtual void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b,
                      const ElementwiseParams& p) = 0;
  // out = cond ? a : b (cond Bool; a, b of out's dtype).
  virtual void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) = 0;

  // Reduces contiguous `in`, viewed as [outer, n, inner], over the middle dim into contiguous
  // `out` of [outer, inner] elements (I64 for ArgMax/ArgMin, first index on ties).
  virtual void reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n,
                      int64_t inner) = 0;

  // out[b] = alpha * a[b] @ b[b] + beta * out[b], with the epilogue. a is [M, K] or [B, M, K],
  // b is [K, N] or [B, K, N] (batch stride 0 allowed: a shared operand); each matrix has a unit
  // stride in one of its last two dims (row- or column-major, i.e. transposed views are fine).
  // out is contiguous [M, N] or [B, M, N]. Epilogues apply to 2-D GEMMs.
  virtual void gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) = 0;

  // Row-wise softmax (or log-softmax) of contiguous [rows, cols] `in` into `out`.
  virtual void softmax(const Tensor& out, const Tensor& in, bool log) = 0;
  // grad_in from grad_out and the forward output `out` (softmax: y*(g - sum(g*y));
  // log-softmax: g - exp(y)*sum(g)).
  virtual void softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log) = 0;

  // Fused cross-entropy over contiguous logits [N, C] and I64 labels [N]: loss[N] (0 on ignored
  // rows) and lse[N] = logsumexp of each row, saved for the backward. With label smoothing s the
  // target is (1 - s) one-hot + s / C. Throws ember::Error for a label outside [0, C).
  virtual void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits,
                                     const Tensor& labels, const CrossEntropyOptions& o) = 0;
  // grad_logits[N, C] = (softmax(logits) - target) * grad_loss[row]; 0 on ignored rows.
  virtual void cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                                      const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o) = 0;

  // Checks that every value of I64 `index` (0-D or 1-D, any stride) lies in [0, c.bound) (or is
  // c.ignore_index when c.allow_ignore), else throws ember::Error naming c.op, the values and the
  // bound. The CPU throws at once. A device backend need not make the host wait for it: CUDA
  // records the first bad value in a device flag and throws at the next point where the host
  // waits for the device anyway (reading a value back, synchronize(), AsyncRead::get()).
  virtual void check_index(const Tensor& index, const IndexCheck& c) = 0;

  // Contiguous `in` viewed as [outer, n, inner]; I64 `index` [k] with values in [0, n) (checked
  // by the op layer with check_index); out [outer, k, inner] = in[:, index, :].
  virtual void index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                            int64_t inner) = 0;
  // out [outer, n, inner] (contiguous) += src [outer, k, inner] scattered at `index`; duplicate
  // indices accumulate. F32, F64, I64 and I32 only: U8 and Bool throw ember::Error (a GPU has no
  // byte atomics, and PyTorch has no such op on bool).
  virtual void index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                         int64_t inner) = 0;

  // Updates every parameter of `s` (one device, one dtype; see OptimizerStep) and its state in
  // place: one pass per parameter on the CPU, one launch per 48 parameters on CUDA.
  virtual void optimizer_step(const OptimizerStep& s) = 0;

  // out I64 [n] (contiguous) = a random permutation of [0, n): index i gets the key
  // data_math::permutation_key(seed, counter + i) and the indices are sorted stably by key, so the
  // CPU and CUDA draw the same permutation.
  virtual void random_permutation(const Tensor& out, uint64_t seed, uint64_t counter) = 0;
  // One fused pass: for b in [0, B), with i = order[p.first + b]:
  //   x[b] = normalise(augment ? warp(images[i]) : images[i]), y[b] = labels[i] (when y is defined).
  // images U8 [N, rows, cols] contiguous (for augment; else [N, ...] with D = numel / N pixels),
  // labels I64 [N] contiguous, order I64 1-D (any stride) with values in [0, N) (not checked: the caller made or
  // checked them), x F32 contiguous with B * D elements, y I64 [B] contiguous or undefined.
  virtual void gather_batch(const Tensor& x, const Tensor& y, const Tensor& images, const Tensor& labels,
                            const Tensor& order, const BatchParams& p) = 0;

  // ---- convolution (conv primitives block). Every tensor contiguous NCHW, one floating dtype;
  // x [N, C_in, H, W], w [C_out, C_in / groups, kH, kW], y / dy [N, C_out, H_out, W_out] with
  // H_out at most (H + pad_begin + pad_end - dilation (kH - 1) - 1) / stride + 1 (the op layer
  // checked the shapes; N may be 0). Output row oh reads input rows oh * stride - pad_begin +
  // i * dilation; rows and windows beyond the tensors' extents count as zero padding, so an
  // H_out below the formula (conv_transpose2d's output_padding) computes only the first H_out
  // windows, and input rows that no window reaches get a zero data gradient. ----
  // y = conv(x, w) (+ bias [C_out] when defined).
  virtual void conv2d_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                              const ConvParams& p) = 0;
  // dx = the data gradient of conv for dy (overwritten, not accumulated); also conv_transpose2d's forward.
  virtual void conv2d_backward_data(const Tensor& dx, const Tensor& dy, const Tensor& w, const ConvParams& p) = 0;
  // dw = the weight gradient of conv for dy and x (overwritten); when db [C_out] is defined, also
  // the bias gradient db = sum of dy over N, H_out, W_out (which oneDNN and cuDNN compute in the same pass).
  virtual void conv2d_backward_weight(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                                      const ConvParams& p) = 0;
  // ---- end of the conv primitives block ----
};

// The backend that runs ops for tensors on `device`: the built-in one for its type unless
// set_backend replaced it.
EMBER_API Backend& backend_for(Device device);
// Installs `backend` for every device of `type` (a decorator around the previous one: a profiler,
// a checker: wrap backend_for(device) read before) and returns the installed one it replaces
// (nullptr for the built-in one); nullptr restores the built-in one. A tensor's storage
// keeps a pointer to the backend that allocated it, so an installed backend must live until the
// process ends or until every tensor it allocated is gone.
EMBER_API Backend* set_backend(DeviceType type, Backend* backend);
Backend& cpu_backend();
// The CUDA backend; throws ember::Error when ember was built without it.
Backend& cuda_backend();

}  // namespace ember
