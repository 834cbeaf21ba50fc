// ember's ops: every function records its backward when autograd tracks an input.
#pragma once
#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember {

// ---- elementwise (NumPy broadcasting; integer inputs are promoted where math needs floats) ----
EMBER_API Tensor add(const Tensor& a, const Tensor& b);
EMBER_API Tensor sub(const Tensor& a, const Tensor& b);
EMBER_API Tensor mul(const Tensor& a, const Tensor& b);
EMBER_API Tensor div(const Tensor& a, const Tensor& b);
EMBER_API Tensor pow(const Tensor& a, const Tensor& b);
EMBER_API Tensor maximum(const Tensor& a, const Tensor& b);
EMBER_API Tensor minimum(const Tensor& a, const Tensor& b);
EMBER_API Tensor add(const Tensor& a, double b);
EMBER_API Tensor sub(const Tensor& a, double b);
EMBER_API Tensor rsub(const Tensor& a, double b);  // b - a
EMBER_API Tensor mul(const Tensor& a, double b);
EMBER_API Tensor div(const Tensor& a, double b);
EMBER_API Tensor rdiv(const Tensor& a, double b);  // b / a
EMBER_API Tensor pow(const Tensor& a, double exponent);
EMBER_API Tensor pow(double base, const Tensor& exponent);
EMBER_API Tensor neg(const Tensor& x);
EMBER_API Tensor exp(const Tensor& x);
EMBER_API Tensor log(const Tensor& x);
EMBER_API Tensor sqrt(const Tensor& x);
EMBER_API Tensor rsqrt(const Tensor& x);
EMBER_API Tensor abs(const Tensor& x);
EMBER_API Tensor square(const Tensor& x);
EMBER_API Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);
EMBER_API Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// Comparisons return bool tensors and have no gradient.
EMBER_API Tensor eq(const Tensor& a, const Tensor& b);
EMBER_API Tensor ne(const Tensor& a, const Tensor& b);
EMBER_API Tensor lt(const Tensor& a, const Tensor& b);
EMBER_API Tensor le(const Tensor& a, const Tensor& b);
EMBER_API Tensor gt(const Tensor& a, const Tensor& b);
EMBER_API Tensor ge(const Tensor& a, const Tensor& b);
EMBER_API Tensor eq(const Tensor& a, double b);
EMBER_API Tensor ne(const Tensor& a, double b);
EMBER_API Tensor lt(const Tensor& a, double b);
EMBER_API Tensor le(const Tensor& a, double b);
EMBER_API Tensor gt(const Tensor& a, double b);
EMBER_API Tensor ge(const Tensor& a, double b);
EMBER_API Tensor isfinite(const Tensor& x);

EMBER_API Tensor operator+(const Tensor& a, const Tensor& b);
EMBER_API Tensor operator-(const Tensor& a, const Tensor& b);
EMBER_API Tensor operator*(const Tensor& a, const Tensor& b);
EMBER_API Tensor operator/(const Tensor& a, const Tensor& b);
EMBER_API Tensor operator+(const Tensor& a, double b);
EMBER_API Tensor operator-(const Tensor& a, double b);
EMBER_API Tensor operator*(const Tensor& a, double b);
EMBER_API Tensor operator/(const Tensor& a, double b);
EMBER_API Tensor operator+(double a, const Tensor& b);
EMBER_API Tensor operator-(double a, const Tensor& b);
EMBER_API Tensor operator*(double a, const Tensor& b);
EMBER_API Tensor operator/(double a, const Tensor& b);
EMBER_API Tensor operator-(const Tensor& x);

// In place, never recorded: for optimizers and initialisers (inside NoGradGuard or on tensors
// autograd does not track). `t += alpha * other`, `t *= s`.
EMBER_API Tensor& add_(Tensor& t, const Tensor& other, double alpha = 1.0);
EMBER_API Tensor& mul_(Tensor& t, double s);

// ---- reductions (dims may be negative; an empty dims list reduces everything) ----
EMBER_API Tensor sum(const Tensor& x);
EMBER_API Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
EMBER_API Tensor mean(const Tensor& x);
EMBER_API Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// correction 1 gives the unbiased (Bessel) estimate, 0 the population variance.
EMBER_API Tensor var(const Tensor& x, const std::vector<int64_t>& dims = {}, int64_t correction = 1,
                     bool keepdim = false);
EMBER_API Tensor std(const Tensor& x, const std::vector<int64_t>& dims = {}, int64_t correction = 1,
                     bool keepdim = false);
EMBER_API Tensor max(const Tensor& x);  // over all elements
EMBER_API Tensor min(const Tensor& x);
// Values and (I64) indices along `dim`.
EMBER_API std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);
EMBER_API std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim = false);
EMBER_API Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
EMBER_API Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);
EMBER_API Tensor argmax(const Tensor& x);  // index into the flattened tensor
EMBER_API Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);

// ---- linear algebra ----
// PyTorch's matmul: operands of any rank >= 1; a 1-D operand is a row (first) or column (second)
// vector whose dim is removed from the result; the batch dims (all but the last two) broadcast.
EMBER_API Tensor matmul(const Tensor& a, const Tensor& b);
// x [.., in] · w [out, in]ᵀ + b [out]; b may be undefined.
EMBER_API Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
// relu(linear(x, w, b)), one fused GEMM epilogue on CUDA.
EMBER_API Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
// linear(x, w, b) followed by v > 0 ? v : 0, where a NaN becomes 0 rather than staying NaN as in
// relu / linear_relu (torch.relu's semantics): the semantics of cuBLASLt's RELU_BIAS epilogue,
// which PyTorch's fused _addmm_activation uses on CUDA. On CUDA the bias and this ReLU run inside
// the GEMM; the CPU computes the same values. Equal to linear_relu wherever the pre-activation is
// not NaN; a NaN in it is hidden (the anomaly check will not see it there). Needs a bias.
// Backward as linear_relu's: dy where the output is > 0, else 0.
EMBER_API Tensor fused_linear_relu(const Tensor& x, const Tensor& w, const Tensor& b);
// linear(fused_linear_relu(x, w1, b1), w2, b2) as one op and one autograd node: x [.., in], w1
// [hidden, in], b1 [hidden], w2 [out, hidden], b2 [out] -> [.., out]. The ReLU is fused_linear_relu's
// (NaN -> 0). On CUDA the first GEMM runs cuBLASLt's RELU_AUX_BIAS epilogue (bias, ReLU and a bit
// mask of it), and the backward applies that mask and computes b1's gradient inside the GEMM
// dY·W2 (DRELU_BGRAD); where cuBLASLt has no algorithm for a case, separate kernels compute the same.
// The CPU computes the same values (equal to the composite's). Needs both biases.
EMBER_API Tensor fused_linear_relu_linear(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                                          const Tensor& b2);

// ---- activations ----
enum class GeluApproximation { None, Tanh };
EMBER_API Tensor relu(const Tensor& x);
EMBER_API Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
EMBER_API Tensor sigmoid(const Tensor& x);
EMBER_API Tensor tanh(const Tensor& x);
EMBER_API Tensor gelu(const Tensor& x, GeluApproximation approximate = GeluApproximation::None);
EMBER_API Tensor silu(const Tensor& x);
EMBER_API Tensor softplus(const Tensor& x);
// PyTorch's Softplus(beta, threshold): log(1 + exp(beta x)) / beta, and x itself where
// beta x > threshold (the two agree there to within exp(-threshold)).
EMBER_API Tensor softplus(const Tensor& x, double beta, double threshold = 20.0);
EMBER_API Tensor softmax(const Tensor& x, int64_t dim);
EMBER_API Tensor log_softmax(const Tensor& x, int64_t dim);

// ---- losses ----
enum class Reduction { Mean, Sum, None };
struct CrossEntropyArgs {
  Reduction reduction = Reduction::Mean;
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Tensor weight;  // optional [C] rescaling of each class (undefined: every class weighs 1)
};
// PyTorch's cross_entropy. logits [N, C] or [N, C, d1, ...]. The target is either class indices
// (I64, [N] or [N, d1, ...]; Mean divides by the summed weights of the non-ignored targets) or class
// probabilities (floating, the shape of logits; ignore_index does not apply; Mean divides by the
// number of targets, N * d1 * ...). label_smoothing mixes in the uniform distribution, as PyTorch.
EMBER_API Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyArgs& args = {});
struct NllLossArgs {
  Reduction reduction = Reduction::Mean;
  int64_t ignore_index = -100;
  Tensor weight;  // optional [C]
};
// log_probs [N, C] or [N, C, d1, ...], labels [N] or [N, d1, ...] (I64). Mean divides by the summed
// weights of the non-ignored labels.
EMBER_API Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, Reduction reduction = Reduction::Mean,
                          int64_t ignore_index = -100);
EMBER_API Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, const NllLossArgs& args);
EMBER_API Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
EMBER_API Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
struct BceArgs {
  Reduction reduction = Reduction::Mean;
  Tensor weight;      // optional, broadcast against the input: rescales each element's loss
  Tensor pos_weight;  // optional, with logits only: weight of the positive term, broadcast from the last dim ([C])
};
// Binary cross-entropy on probabilities in [0, 1]; as PyTorch, each log is clamped at -100 so a
// probability of exactly 0 or 1 gives a finite loss. Values outside [0, 1] are an error.
EMBER_API Tensor binary_cross_entropy(const Tensor& probs, const Tensor& target, const BceArgs& args = {});
EMBER_API Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                                  Reduction reduction = Reduction::Mean);
// With weight and pos_weight: -w [pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], computed
// without overflow for any x.
EMBER_API Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const BceArgs& args);

// ---- shape and indexing ----
EMBER_API Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
EMBER_API Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
// Pieces of `split_size` along dim (the last may be smaller).
EMBER_API std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
// Pieces of the given sizes along dim; they must add up to x.size(dim).
EMBER_API std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
// Rows (or slices along dim) picked by I64 `index` [k].
EMBER_API Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// weight [num, dim] looked up at I64 indices of any shape: result indices.shape + [dim]. The row
// `padding_idx` (if given; negative counts from the end) is looked up as usual but takes no gradient.
EMBER_API Tensor embedding(const Tensor& weight, const Tensor& indices,
                           std::optional<int64_t> padding_idx = std::nullopt);
// PyTorch's gather: out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (and so on); index (I64) has
// x's number of dims, each no larger than x's except along dim; out has index's shape.
EMBER_API Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// PyTorch's scatter_add (out of place): x with src[i][j][k] added at [index[i][j][k]][j][k] for dim 0
// (and so on); duplicates accumulate. index (I64) and src have the same shape, index's dims no
// larger than src's nor, except along dim, than x's.
EMBER_API Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// I64 labels -> [.., num_classes] I64 one-hot (no gradient).
EMBER_API Tensor one_hot(const Tensor& labels, int64_t num_classes);

// ---- regularisation ----
// Zeroes elements with probability p and scales the rest by 1/(1-p) when training; the mask comes
// from the counter-based generator, so one seed gives the same mask on CPU and CUDA.
EMBER_API Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);


// ---- convolution, pooling, normalisation and resampling (NCHW; f32 on every backend, f64 on
// the CPU). Pairs of sizes are {height, width}. Bad shapes throw ember::Error naming the shapes
// and what to change. ----

// How a convolution pads: the explicit `padding`, or PyTorch's padding="same" (output size =
// input size; stride 1 only; an odd total pads one more at the bottom/right) or "valid" (none).
enum class ConvPadding { Explicit, Same, Valid };
using Int2 = std::array<int64_t, 2>;

struct Conv2dArgs {
  Int2 stride{1, 1};
  Int2 padding{0, 0};
  Int2 dilation{1, 1};
  int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::Explicit;
};
// x [N, C_in, H, W], weight [C_out, C_in / groups, kH, kW], bias [C_out] or undefined.
EMBER_API Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                        const Conv2dArgs& args = {});

struct ConvTranspose2dArgs {
  Int2 stride{1, 1};
  Int2 padding{0, 0};
  Int2 output_padding{0, 0};  // each smaller than its stride or its dilation
  Int2 dilation{1, 1};
  int64_t groups = 1;
};
// x [N, C_in, H, W], weight [C_in, C_out / groups, kH, kW] (PyTorch's layout), bias [C_out] or undefined.
// Output size (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1.
EMBER_API Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                                  const ConvTranspose2dArgs& args = {});

struct Conv1dArgs {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t dilation = 1;
  int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::Explicit;
};
// x [N, C_in, L], weight [C_out, C_in / groups, k]: conv2d with height 1.
EMBER_API Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                        const Conv1dArgs& args = {});

struct MaxPool2dArgs {
  Int2 kernel_size{2, 2};
  std::optional<Int2> stride;  // the kernel size when not given, as PyTorch
  Int2 padding{0, 0};          // at most half the kernel size
  Int2 dilation{1, 1};
  bool ceil_mode = false;
};
// x [N, C, H, W] (or [C, H, W]); the padding counts as -inf, a NaN in a window wins it. Output size
// floor((H + 2 pad - dilation (k - 1) - 1) / stride) + 1; ceil_mode rounds up instead, except
// that the last window must start inside the input or its left padding (PyTorch's rule). Throws
// when the output would be empty (a kernel larger than the padded input) or padding > kernel / 2.
EMBER_API Tensor max_pool2d(const Tensor& x, const MaxPool2dArgs& args);
// Also the I64 index h * W + w of each maximum in its plane (PyTorch's return_indices=True; the
// first of equal maxima).
EMBER_API std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, const MaxPool2dArgs& args);

struct AvgPool2dArgs {
  Int2 kernel_size{2, 2};
  std::optional<Int2> stride;
  Int2 padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;
  std::optional<int64_t> divisor_override;
};
// Output size as max_pool2d's (dilation 1). Each window's sum is divided by divisor_override when
// given, else (count_include_pad) by the window clipped to the padded input [-pad, H + pad), else
// by the number of input elements it covers.
EMBER_API Tensor avg_pool2d(const Tensor& x, const AvgPool2dArgs& args);
// PyTorch's adaptive pools: output cell (i, j) covers rows [floor(i H / oh), ceil((i + 1) H / oh))
// and the columns likewise; output_size at least 1x1 (it may exceed the input's).
EMBER_API Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size);
EMBER_API Tensor adaptive_max_pool2d(const Tensor& x, Int2 output_size);
EMBER_API std::pair<Tensor, Tensor> adaptive_max_pool2d_with_indices(const Tensor& x, Int2 output_size);

// PyTorch's batch_norm over dim 1 of x [N, C, ...]. training: normalises by the batch statistics
// (biased variance) and, when running_mean / running_var are defined, updates them in place:
// r = (1 - momentum) r + momentum * batch statistic, with the unbiased variance for running_var.
// Not training: normalises by the running statistics. weight / bias [C] or undefined.
EMBER_API Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& weight = Tensor(), const Tensor& bias = Tensor(), bool training = false,
                            double momentum = 0.1, double eps = 1e-5);
// Normalises over the last normalized_shape.size() dims (which must equal normalized_shape);
// weight / bias of normalized_shape or undefined.
EMBER_API Tensor layer_norm(const Tensor& x, const std::vector<int64_t>& normalized_shape,
                            const Tensor& weight = Tensor(), const Tensor& bias = Tensor(), double eps = 1e-5);
// x [N, C, ...] in num_groups groups of C / num_groups channels; weight / bias [C] or undefined.
EMBER_API Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(),
                            const Tensor& bias = Tensor(), double eps = 1e-5);
// Each (sample, channel) plane by its own statistics (use_input_stats), updating the running
// statistics (averaged over the batch) when defined, as PyTorch; else by the running statistics.
EMBER_API Tensor instance_norm(const Tensor& x, const Tensor& running_mean = Tensor(),
                               const Tensor& running_var = Tensor(), const Tensor& weight = Tensor(),
                               const Tensor& bias = Tensor(), bool use_input_stats = true, double momentum = 0.1,
                               double eps = 1e-5);

// Zeroes whole channels of x [N, C, ...] with probability p (scaling the rest by 1/(1-p)) when
// training; one draw per (sample, channel) from the counter-based generator.
EMBER_API Tensor dropout2d(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);

enum class PadMode { Constant, Reflect, Replicate };
// PyTorch's F.pad: `pads` lists (before, after) pairs from the last dim backwards
// ({left, right, top, bottom} for the last two dims). Constant pads may be negative (cropping);
// reflect needs each pad smaller than its dim, replicate a non-empty dim.
EMBER_API Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, PadMode mode = PadMode::Constant,
                     double value = 0.0);

enum class InterpolateMode { Nearest, Bilinear };
struct InterpolateArgs {
  std::optional<Int2> size;                       // exactly one of size and scale_factor
  std::optional<std::array<double, 2>> scale_factor;
  InterpolateMode mode = InterpolateMode::Nearest;
  bool align_corners = false;  // bilinear only, as PyTorch
};
// x [N, C, H, W] resized as PyTorch's F.interpolate: the output size is `size`, or floor(in *
// scale_factor) (then 1 / scale_factor is the source scale, as PyTorch without
// recompute_scale_factor). Nearest: source index floor(dst * scale) in float. Bilinear: source
// (dst + 0.5) * scale - 0.5 clamped at 0, or dst * (in - 1) / (out - 1) with align_corners.
EMBER_API Tensor interpolate(const Tensor& x, const InterpolateArgs& args);

}  // namespace ember
