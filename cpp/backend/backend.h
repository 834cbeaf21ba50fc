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
#include <memory>
#include <utility>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember {

class Generator;

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
  // The generator that reserved [offset, offset + numel) (seed is its seed). Only a CUDA graph
  // capture reads it: a captured fill takes its seed and counter base from that generator's
  // device-resident state when the graph replays, so each replay draws new numbers (cuda/graph.cpp).
  // Null for a fill whose counters come from no generator; such a fill cannot be captured.
  Generator* generator = nullptr;
};

enum class ReduceOp : int8_t { Sum, Mean, Max, Min, ArgMax, ArgMin };

enum class Epilogue : int8_t {
  None,
  Bias,       // out[i, j] += bias[j]
  Relu,       // out = max(out, 0)
  BiasRelu,   // out = max(out + bias[j], 0)
  BiasGradA,  // also writes bias_grad[i] = sum_k op(a)[i, k] (the bias gradient of a linear layer)
  // out = v > 0 ? v : 0 with v = out + bias[j]: NaN becomes 0, as in cuBLASLt's RELU_BIAS epilogue,
  // which CUDA fuses into the GEMM (fused_linear_relu). Relu and BiasRelu pass NaN on instead.
  BiasReluNanToZero,
  // BiasReluNanToZero that also writes the ReLU's bit mask (relu_mask.h: bit (i, j) = out[i, j] > 0)
  // into relu_mask: cuBLASLt's RELU_AUX_BIAS. The forward GEMM of fused_linear_relu_linear's first layer.
  BiasReluNanToZeroMask,
  // out = mask(i, j) ? out : 0 (the ReLU's backward, mask from relu_mask as BiasReluNanToZeroMask wrote
  // it), then bias_grad[j] = sum_i out[i, j] (the bias gradient of the layer whose ReLU that was):
  // cuBLASLt's DRELU_BGRAD. The input-gradient GEMM of fused_linear_relu_linear's second layer.
  DReluBiasGrad,
};

// What an epilogue asks of a GEMM. Every backend reads its epilogue through this one switch over
// every Epilogue (a missing case is a compile error: -Werror=switch), so a new epilogue cannot pass
// as None on one backend; a value outside the enum throws ember::Error naming `backend`.
struct EpilogueParts {
  bool bias = false;       // out[i, j] += bias[j]
  bool relu = false;       // then out = max(out, 0)
  bool nan_to_zero = false;  // that ReLU maps NaN to 0 (BiasReluNanToZero); else NaN passes
  bool bias_grad = false;  // bias_grad[i] = sum_k op(a)[i, k]
  bool relu_mask_out = false;  // after the ReLU: relu_mask bit (i, j) = out[i, j] > 0
  bool relu_mask_in = false;   // out[i, j] = 0 where relu_mask bit (i, j) is 0
  bool bias_grad_out = false;  // after that: bias_grad[j] = sum_i out[i, j] (column sums of out)
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
  Tensor bias_grad;  // [M], written by BiasGradA; [N], written by DReluBiasGrad
  // BiasReluNanToZeroMask writes it, DReluBiasGrad reads it: U8 [M, relu_mask::row_bytes(N)]
  // (cpp/backend/relu_mask.h), contiguous; out must be 2-D for both.
  Tensor relu_mask;
};

// For the epilogues that write or read GemmOptions::relu_mask: out is 2-D and the mask is a defined,
// contiguous U8 [M, relu_mask::row_bytes(N)] on out's device (and bias_grad [N] for DReluBiasGrad).
// Throws ember::Error naming the shapes and `backend`.
void check_relu_mask_args(const Tensor& out, const GemmOptions& o, const char* backend);

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
// The step-independent inputs of one param group's scalars (its options), all doubles (a flag is 0
// or 1) so that a row of an f64 tensor holds one: a capturable optimizer keeps them in device
// memory, and optim_math::hyper_at turns them and a step count into the OptimizerHyper, on the host
// for an eager step and in a kernel inside a captured one, with the same arithmetic.
struct OptimizerInputs {
  double lr = 0.0;
  double weight_decay = 0.0;
  double momentum = 0.0;      // SGD, RMSprop
  double dampening = 0.0;     // SGD
  double beta1 = 0.0;         // Adam
  double beta2 = 0.0;         // Adam: beta2; RMSprop: alpha
  double eps = 0.0;           // Adam, RMSprop, Adagrad
  double lr_decay = 0.0;      // Adagrad
  double maximize = 0.0;
  double nesterov = 0.0;                // SGD
  double amsgrad = 0.0;                 // Adam
  double decoupled_weight_decay = 0.0;  // Adam (AdamW)
  double centered = 0.0;                // RMSprop
};
inline constexpr int kOptimizerInputFields = 13;
static_assert(sizeof(OptimizerInputs) == kOptimizerInputFields * sizeof(double), "OptimizerInputs is a row of doubles");

// A capturable parameter's device-resident record (a row of an f64 tensor): which row of the group
// table its options are in, its step count before the next update, and whether that update is its
// first (SGD's momentum buffer starts as the gradient).
struct OptimizerParamScalars {
  double group = 0.0;
  double step = 0.0;
  double first_step = 0.0;
};
inline constexpr int kOptimizerParamFields = 3;
static_assert(sizeof(OptimizerParamScalars) == kOptimizerParamFields * sizeof(double), "a row of doubles");

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
  // Capturable updates (CUDA graphs; Optimizer::set_capturable), all three set together: device
  // memory that the CUDA backend's update computes its scalars in when it runs, so a replayed graph
  // advances the step counts and follows the options (a scheduler's lr) written before the replay.
  // First one kernel does, for each parameter i, device_params[i].step += 1 and
  // device_hyper[i] = optim_math::hyper_at(algo, device_groups[device_params[i].group], that step,
  // device_params[i].first_step); then the update reads device_hyper[i]. The host computed
  // params[i].hyper with the same function from the same values: the CPU backend reads that and
  // ignores these.
  const OptimizerInputs* device_groups = nullptr;
  OptimizerParamScalars* device_params = nullptr;
  OptimizerHyper* device_hyper = nullptr;
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
  double max_scale = 0.0;    // see data_math::random_warp
  int64_t crop_padding = 0;
  bool hflip = false;
};

// ---- pooling and normalisation (begin poolnorm block; arithmetic in pool_norm_math.h) ----

enum class PoolKind : int8_t { Max, Avg };

// ---- int8 inference (ember::quant's device path; arithmetic in quant_math.h) ----
// Activation codes live in U8 tensors as bytes read as int8: a u8 code q as q - 128, an s8 code as
// is (math::int8_code_offset). Padding is the code of 0: the byte of the offset.
struct Int8QuantizeParams {
  float inv_scale = 1.0f;    // 1.0f / the layer's input scale
  bool is_unsigned = false;  // u8 codes (else s8)
  bool nhwc = false;         // in [N, C, H, W] -> out [N, H, W, C]; else in [rows, F] -> out [rows, ld]
};
struct Int8Im2colParams {
  int64_t kernel[2] = {1, 1};
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
  int64_t out_h = 1, out_w = 1;
  int32_t zero_byte = 0;  // the stored byte of code 0 (int8_code_offset of the input's signedness)
};
// out[m, o] for m < M, o < N (w has n_pad >= N rows) from acc = sum_k a[m, k] w[o, k] + comp[o]:
// y = math::int8_dequantize(acc, bias_div[o], scale[o], relu), then either F32 y or, when
// out is U8, the byte of math::int8_saturate_round(y) + int8_code_offset(out_unsigned).
struct Int8GemmParams {
  Tensor comp;      // I32 [n_pad]: 128 * sum_k w[o, k] when a holds u8 codes, else 0
  Tensor bias_div;  // F32 [n_pad]
  Tensor scale;     // F32 [n_pad]
  bool relu = false;
  bool out_unsigned = false;  // U8 out: u8 (else s8) codes
  int64_t out_hw = 0;         // F32 out only: > 0 writes out as [M / out_hw, N, out_hw] (NCHW)
};

// One 2-D pooling over [N, C, H, W] planes. Regular windows (kernel, stride, padding, dilation;
// math::pool_taps) or, when `adaptive`, PyTorch's adaptive windows for the output's size
// (math::adaptive_taps). Avg ignores dilation (always 1).
struct PoolParams {
  PoolKind kind = PoolKind::Max;
  bool adaptive = false;
  int64_t kernel[2] = {1, 1};
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
  bool count_include_pad = true;  // Avg, regular: divide by the window clipped to the padded input
  int64_t divisor_override = 0;   // Avg, regular: > 0 divides every window by it
};

// One normalisation of contiguous x viewed as [n, c, s] (sample, channel, spatial), with the
// statistics (mean and rstd = 1 / sqrt(biased variance + eps)) per (sample, group of c / groups
// channels) over the group's channels and s (group norm; layer norm is c = the normalised size,
// s = 1, groups = 1), or, when per_channel, per channel over n and s (batch norm). weight and
// bias [c] scale and shift each channel.
struct NormParams {
  int64_t n = 1, c = 1, s = 1;
  int64_t groups = 1;
  bool per_channel = false;
  double eps = 1e-5;
  double momentum = 0.1;  // per_channel with running statistics
};

// ---- end poolnorm block ----

// ---- convolution ----
// A 2-D convolution's geometry, NCHW. Padding is given per side ({top, left} and {bottom, right})
// so PyTorch's padding="same" with an odd total (one more at the bottom/right) needs no copy.
struct ConvParams {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> pad_begin{0, 0};  // top, left
  std::array<int64_t, 2> pad_end{0, 0};    // bottom, right
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};

// A reader of one device's tensors into host memory (ember::AsyncRead): start() queues the copy
// behind the work already queued on the device and returns at once; the host buffer is reused
// from one start() to the next. Made by Backend::make_host_reader; not thread-safe.
class HostReader {
 public:
  // Waits for a copy still in flight into the buffer before freeing it (never throws).
  virtual ~HostReader() = default;
  // Queues the copy of contiguous `src` (on the reader's device). A copy not yet taken is dropped.
  virtual void start(const Tensor& src) = 0;
  // Whether the last started copy has arrived (never waits).
  virtual bool ready() = 0;
  // The last started copy as a CPU tensor of its shape and dtype, waiting for it if it has not
  // arrived (`wait_reason` names that wait for cuda::set_sync_debug_mode), and raising a device-side
  // check that failed in the work queued before start().
  virtual Tensor get(const char* wait_reason) = 0;
};

// The primitives by name, made from primitives.def (so the decorator's hook and the errors can
// name each one).
enum class Primitive : int16_t {
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) NAME,
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
};
inline constexpr const char* kPrimitiveNames[] = {
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) #NAME,
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
};
inline constexpr int kPrimitiveCount = static_cast<int>(std::size(kPrimitiveNames));
inline const char* primitive_name(Primitive p) {
  const int i = static_cast<int>(p);
  return i >= 0 && i < kPrimitiveCount ? kPrimitiveNames[i] : "unknown";
}
// Whether the built-in CUDA backend implements each primitive (the BACKENDS column: ALL or CPU_ONLY;
// any other word is a compile error here). The CPU implements every one.
#define EMBER_PRIMITIVE_ON_CUDA_ALL true
#define EMBER_PRIMITIVE_ON_CUDA_CPU_ONLY false
inline constexpr bool kPrimitiveOnCuda[] = {
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) EMBER_PRIMITIVE_ON_CUDA_##BACKENDS,
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
};
static_assert(std::size(kPrimitiveOnCuda) == std::size(kPrimitiveNames));

// Throws the ember::Error of a primitive `backend` does not implement: it names the primitive and
// the backend and says to run the op on the CPU.
[[noreturn]] EMBER_API void throw_unsupported_primitive(Primitive p, const char* backend);

// THE interface every backend implements: name(), supports(), and one virtual per line of
// primitives.def (documented there). A primitive a backend does not override throws
// throw_unsupported_primitive's error, so an op can land CPU-first; the built-in backends declare
// their overrides from the same list (cpu_backend.h, cuda_backend.h), so one they claim and do not
// define is a link error. A decorator derives from ForwardingBackend (forwarding_backend.h).
//
// To add a primitive: one EMBER_PRIMITIVE line in primitives.def (with ALL, or CPU_ONLY while CUDA
// lacks it), then define CpuBackend::NAME (and CudaBackend::NAME for ALL). Nothing else is declared.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Whether this backend implements `p` (ggml's supports_op): false means calling it throws.
  virtual bool supports(Primitive p) const = 0;

#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) \
  virtual RET NAME PARAMS { throw_unsupported_primitive(Primitive::NAME, name()); }
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
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

// Profiler ranges in the accelerator's tools (ember::profile::Range): NVTX ranges in the "ember"
// domain when ember is built with CUDA (cuda/runtime.cpp), nothing otherwise (cpp/core/no_cuda.cpp).
void device_range_push(const char* name);
void device_range_pop();

}  // namespace ember
