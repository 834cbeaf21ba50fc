// The convnet layers: convolutions (PyTorch's default initialisation), pooling, batch / instance /
// layer / group normalisation with PyTorch's buffers and names, Dropout2d, Unflatten and Upsample.
#include <cmath>

#include "ember/autograd.h"
#include "ember/nn.h"

namespace ember::nn {

namespace {
template <class... Args>
std::string text(const Args&... args) {
  return detail::str_cat(args...);
}

std::string pair_text(Int2 v) { return text("(", v[0], ", ", v[1], ")"); }
const char* bool_text(bool b) { return b ? "True" : "False"; }

void check_float_dtype(const char* layer, DType dt) {
  EMBER_CHECK(dt == DType::F32 || dt == DType::F64, layer, ": dtype must be f32 or f64, got ", dtype_name(dt));
}

void check_conv_sizes(const char* layer, int64_t in, int64_t out, int64_t groups) {
  EMBER_CHECK(in > 0 && out > 0, layer, ": in_channels and out_channels must be positive, got in_channels=", in,
              ", out_channels=", out);
  EMBER_CHECK(groups > 0, layer, ": groups must be positive, got ", groups);
  EMBER_CHECK(in % groups == 0 && out % groups == 0, layer, ": groups=", groups,
              " must divide both in_channels=", in, " and out_channels=", out,
              "; pick a groups value that divides both");
}

void check_kernel(const char* layer, Int2 k) {
  EMBER_CHECK(k[0] > 0 && k[1] > 0, layer, ": kernel_size must be positive, got ", pair_text(k));
}

// PyTorch's _ConvNd.reset_parameters: kaiming_uniform_(weight, a = sqrt(5)), i.e. U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)), and the bias from the same bound; weight first, then bias, from one generator.
void reset_conv(const Tensor& weight, const Tensor& bias, Generator* gen) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyRelu, gen);
  if (bias.defined()) {
    const double fan_in = static_cast<double>(init::calculate_fan_in_and_fan_out(weight).first);
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(fan_in) : 0.0;
    init::uniform_(bias, -bound, bound, gen);
  }
}

std::string padding_text(ConvPadding mode, const std::string& explicit_text, bool explicit_is_zero) {
  switch (mode) {
    case ConvPadding::Same: return ", padding='same'";
    case ConvPadding::Valid: return ", padding='valid'";
    case ConvPadding::Explicit: return explicit_is_zero ? "" : ", padding=" + explicit_text;
  }
  return "";
}

// PyTorch's _ConvNd.extra_repr for Conv2d and ConvTranspose2d: settings at their defaults are left out.
std::string conv2d_repr(int64_t in, int64_t out, Int2 k, const ConvOptions& o, const Tensor& bias, bool transposed) {
  std::string s = text(in, ", ", out, ", kernel_size=", pair_text(k), ", stride=", pair_text(o.stride));
  s += padding_text(o.padding_mode, pair_text(o.padding), o.padding == Int2{0, 0});
  if (o.dilation != Int2{1, 1}) s += ", dilation=" + pair_text(o.dilation);
  if (transposed && o.output_padding != Int2{0, 0}) s += ", output_padding=" + pair_text(o.output_padding);
  if (o.groups != 1) s += text(", groups=", o.groups);
  if (!bias.defined()) s += ", bias=False";
  return s;
}
}  // namespace

// ---- convolutions ----

Conv2d::Conv2d(int64_t in, int64_t out, Int2 k, const ConvOptions& o)
    : in_channels(in), out_channels(out), kernel_size(k), options(o) {
  check_conv_sizes("Conv2d", in, out, o.groups);
  check_kernel("Conv2d", k);
  check_float_dtype("Conv2d", o.dtype);
  const TensorOptions to(o.dtype, o.device);
  weight = register_parameter("weight", empty({out, in / o.groups, k[0], k[1]}, to));
  if (o.bias) bias = register_parameter("bias", empty({out}, to));
  reset_parameters(o.generator);
}

void Conv2d::reset_parameters(Generator* gen) { reset_conv(weight, bias, gen); }

Tensor Conv2d::forward(const Tensor& input) {
  Conv2dArgs a;
  a.stride = options.stride;
  a.padding = options.padding;
  a.dilation = options.dilation;
  a.groups = options.groups;
  a.padding_mode = options.padding_mode;
  return conv2d(input, weight, bias, a);
}

std::string Conv2d::extra_repr() const { return conv2d_repr(in_channels, out_channels, kernel_size, options, bias, false); }

Conv1d::Conv1d(int64_t in, int64_t out, int64_t k, const Conv1dOptions& o)
    : in_channels(in), out_channels(out), kernel_size(k), options(o) {
  check_conv_sizes("Conv1d", in, out, o.groups);
  EMBER_CHECK(k > 0, "Conv1d: kernel_size must be positive, got ", k);
  check_float_dtype("Conv1d", o.dtype);
  const TensorOptions to(o.dtype, o.device);
  weight = register_parameter("weight", empty({out, in / o.groups, k}, to));
  if (o.bias) bias = register_parameter("bias", empty({out}, to));
  reset_parameters(o.generator);
}

void Conv1d::reset_parameters(Generator* gen) { reset_conv(weight, bias, gen); }

Tensor Conv1d::forward(const Tensor& input) {
  Conv1dArgs a;
  a.stride = options.stride;
  a.padding = options.padding;
  a.dilation = options.dilation;
  a.groups = options.groups;
  a.padding_mode = options.padding_mode;
  return conv1d(input, weight, bias, a);
}

std::string Conv1d::extra_repr() const {
  const Conv1dOptions& o = options;
  std::string s = text(in_channels, ", ", out_channels, ", kernel_size=(", kernel_size, ",), stride=(", o.stride, ",)");
  s += padding_text(o.padding_mode, text("(", o.padding, ",)"), o.padding == 0);
  if (o.dilation != 1) s += text(", dilation=(", o.dilation, ",)");
  if (o.groups != 1) s += text(", groups=", o.groups);
  if (!bias.defined()) s += ", bias=False";
  return s;
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, Int2 k, const ConvOptions& o)
    : in_channels(in), out_channels(out), kernel_size(k), options(o) {
  check_conv_sizes("ConvTranspose2d", in, out, o.groups);
  check_kernel("ConvTranspose2d", k);
  check_float_dtype("ConvTranspose2d", o.dtype);
  EMBER_CHECK(o.padding_mode == ConvPadding::Explicit,
              "ConvTranspose2d: padding_mode must be Explicit (PyTorch has no 'same' or 'valid' for transposed "
              "convolutions); give the padding as numbers");
  const TensorOptions to(o.dtype, o.device);
  weight = register_parameter("weight", empty({in, out / o.groups, k[0], k[1]}, to));
  if (o.bias) bias = register_parameter("bias", empty({out}, to));
  reset_parameters(o.generator);
}

void ConvTranspose2d::reset_parameters(Generator* gen) { reset_conv(weight, bias, gen); }

Tensor ConvTranspose2d::forward(const Tensor& input) {
  ConvTranspose2dArgs a;
  a.stride = options.stride;
  a.padding = options.padding;
  a.output_padding = options.output_padding;
  a.dilation = options.dilation;
  a.groups = options.groups;
  return conv_transpose2d(input, weight, bias, a);
}

std::string ConvTranspose2d::extra_repr() const {
  return conv2d_repr(in_channels, out_channels, kernel_size, options, bias, true);
}

// ---- pooling ----

std::string MaxPool2d::extra_repr() const {
  return text("kernel_size=", pair_text(args.kernel_size), ", stride=", pair_text(args.stride.value_or(args.kernel_size)),
              ", padding=", pair_text(args.padding), ", dilation=", pair_text(args.dilation),
              ", ceil_mode=", bool_text(args.ceil_mode));
}

std::string AvgPool2d::extra_repr() const {
  std::string s = text("kernel_size=", pair_text(args.kernel_size), ", stride=",
                       pair_text(args.stride.value_or(args.kernel_size)), ", padding=", pair_text(args.padding),
                       ", ceil_mode=", bool_text(args.ceil_mode), ", count_include_pad=", bool_text(args.count_include_pad));
  if (args.divisor_override) s += text(", divisor_override=", *args.divisor_override);
  return s;
}

std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + pair_text(output_size); }
std::string AdaptiveMaxPool2d::extra_repr() const { return "output_size=" + pair_text(output_size); }

// ---- batch normalisation ----

BatchNorm::BatchNorm(int64_t n, const BatchNormOptions& o, const char* type, std::vector<int64_t> input_dims)
    : num_features(n), options(o), type_(type), input_dims_(std::move(input_dims)) {
  EMBER_CHECK(n > 0, type, ": num_features must be positive, got ", n);
  EMBER_CHECK(o.eps > 0 && std::isfinite(o.eps), type, ": eps must be a positive number, got ", o.eps);
  EMBER_CHECK(!o.momentum || (*o.momentum >= 0 && *o.momentum <= 1), type, ": momentum must be in [0, 1], got ",
              o.momentum.value_or(0.0));
  check_float_dtype(type, o.dtype);
  const TensorOptions to(o.dtype, o.device);
  if (o.affine) {
    weight = register_parameter("weight", ones({n}, to));
    bias = register_parameter("bias", zeros({n}, to));
  }
  if (o.track_running_stats) {
    running_mean = register_buffer("running_mean", zeros({n}, to));
    running_var = register_buffer("running_var", ones({n}, to));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, TensorOptions(DType::I64, o.device)));
  }
}

void BatchNorm::reset_running_stats() {
  if (!options.track_running_stats) return;
  running_mean.zero_();
  running_var.fill_(1.0);
  num_batches_tracked.zero_();
}

void BatchNorm::reset_parameters() {
  reset_running_stats();
  if (options.affine) {
    weight.fill_(1.0);
    bias.zero_();
  }
}

Tensor BatchNorm::forward(const Tensor& input) {
  bool dims_ok = false;
  for (int64_t d : input_dims_) dims_ok = dims_ok || input.dim() == d;
  EMBER_CHECK(dims_ok, type_, ": expected ", input_dims_.size() == 1 ? "a 4-D input [N, C, H, W]" : "a 2-D or 3-D input [N, C] or [N, C, L]",
              ", got shape ", shape_str(input.shape()));
  EMBER_CHECK(input.size(1) == num_features, type_, ": input has ", input.size(1), " channels (dim 1 of shape ",
              shape_str(input.shape()), ") but the layer was built for num_features=", num_features);
  // PyTorch's _BatchNorm.forward: count the batch, pick the update weight, and use batch statistics
  // while training or whenever there are no running ones.
  double factor = options.momentum.value_or(0.0);
  if (is_training() && options.track_running_stats) {
    autograd::NoGradGuard no_grad;
    num_batches_tracked.copy_(add(num_batches_tracked, ones({}, num_batches_tracked.options())));
    if (!options.momentum) factor = 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());
  }
  const bool use_batch_stats = is_training() || !options.track_running_stats;
  const bool pass_running = !is_training() || options.track_running_stats;
  return batch_norm(input, pass_running ? running_mean : Tensor(), pass_running ? running_var : Tensor(), weight, bias,
                    use_batch_stats, factor, options.eps);
}

std::string BatchNorm::extra_repr() const {
  return text(num_features, ", eps=", options.eps, ", momentum=",
              options.momentum ? text(*options.momentum) : std::string("None"), ", affine=", bool_text(options.affine),
              ", track_running_stats=", bool_text(options.track_running_stats));
}

// ---- instance, layer and group normalisation ----

InstanceNorm2d::InstanceNorm2d(int64_t n, const InstanceNormOptions& o) : num_features(n), options(o) {
  EMBER_CHECK(n > 0, "InstanceNorm2d: num_features must be positive, got ", n);
  EMBER_CHECK(o.eps > 0 && std::isfinite(o.eps), "InstanceNorm2d: eps must be a positive number, got ", o.eps);
  check_float_dtype("InstanceNorm2d", o.dtype);
  const TensorOptions to(o.dtype, o.device);
  if (o.affine) {
    weight = register_parameter("weight", ones({n}, to));
    bias = register_parameter("bias", zeros({n}, to));
  }
  if (o.track_running_stats) {
    running_mean = register_buffer("running_mean", zeros({n}, to));
    running_var = register_buffer("running_var", ones({n}, to));
    register_buffer("num_batches_tracked", zeros({}, TensorOptions(DType::I64, o.device)));
  }
}

Tensor InstanceNorm2d::forward(const Tensor& input) {
  EMBER_CHECK(input.dim() == 4, "InstanceNorm2d: expected a 4-D input [N, C, H, W], got shape ", shape_str(input.shape()));
  EMBER_CHECK(input.size(1) == num_features, "InstanceNorm2d: input has ", input.size(1),
              " channels (dim 1 of shape ", shape_str(input.shape()), ") but the layer was built for num_features=", num_features);
  const bool use_input_stats = is_training() || !options.track_running_stats;
  return instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, options.momentum, options.eps);
}

std::string InstanceNorm2d::extra_repr() const {
  return text(num_features, ", eps=", options.eps, ", momentum=", options.momentum, ", affine=",
              bool_text(options.affine), ", track_running_stats=", bool_text(options.track_running_stats));
}

LayerNorm::LayerNorm(std::vector<int64_t> shape, const LayerNormOptions& o)
    : normalized_shape(std::move(shape)), options(o) {
  EMBER_CHECK(!normalized_shape.empty(), "LayerNorm: normalized_shape must name at least one dim");
  for (int64_t d : normalized_shape)
    EMBER_CHECK(d > 0, "LayerNorm: every size of normalized_shape must be positive, got ", shape_str(normalized_shape));
  EMBER_CHECK(o.eps > 0 && std::isfinite(o.eps), "LayerNorm: eps must be a positive number, got ", o.eps);
  check_float_dtype("LayerNorm", o.dtype);
  const TensorOptions to(o.dtype, o.device);
  if (o.elementwise_affine) {
    weight = register_parameter("weight", ones(Shape(normalized_shape), to));
    if (o.bias) bias = register_parameter("bias", zeros(Shape(normalized_shape), to));
  }
}

Tensor LayerNorm::forward(const Tensor& input) { return layer_norm(input, normalized_shape, weight, bias, options.eps); }

std::string LayerNorm::extra_repr() const {
  std::string dims = "(";
  for (size_t i = 0; i < normalized_shape.size(); ++i) dims += text(i ? ", " : "", normalized_shape[i]);
  dims += normalized_shape.size() == 1 ? ",)" : ")";
  return text(dims, ", eps=", options.eps, ", elementwise_affine=", bool_text(options.elementwise_affine));
}

GroupNorm::GroupNorm(int64_t groups, int64_t channels, const GroupNormOptions& o)
    : num_groups(groups), num_channels(channels), options(o) {
  EMBER_CHECK(groups > 0 && channels > 0, "GroupNorm: num_groups and num_channels must be positive, got num_groups=",
              groups, ", num_channels=", channels);
  EMBER_CHECK(channels % groups == 0, "GroupNorm: num_groups=", groups, " must divide num_channels=", channels);
  EMBER_CHECK(o.eps > 0 && std::isfinite(o.eps), "GroupNorm: eps must be a positive number, got ", o.eps);
  check_float_dtype("GroupNorm", o.dtype);
  const TensorOptions to(o.dtype, o.device);
  if (o.affine) {
    weight = register_parameter("weight", ones({channels}, to));
    bias = register_parameter("bias", zeros({channels}, to));
  }
}

Tensor GroupNorm::forward(const Tensor& input) {
  EMBER_CHECK(input.dim() >= 2 && input.size(1) == num_channels, "GroupNorm: expected an input [N, ", num_channels,
              ", ...], got shape ", shape_str(input.shape()));
  return group_norm(input, num_groups, weight, bias, options.eps);
}

std::string GroupNorm::extra_repr() const {
  return text(num_groups, ", ", num_channels, ", eps=", options.eps, ", affine=", bool_text(options.affine));
}

// ---- Dropout2d, Unflatten, Upsample ----

Dropout2d::Dropout2d(double p, Generator* generator) : p(p), generator(generator) {
  EMBER_CHECK(p >= 0.0 && p <= 1.0, "Dropout2d: probability p must be in [0, 1], got ", p);
}

Tensor Dropout2d::forward(const Tensor& input) { return dropout2d(input, p, is_training(), generator); }

std::string Dropout2d::extra_repr() const { return text("p=", p); }

Unflatten::Unflatten(int64_t dim, std::vector<int64_t> sizes) : dim(dim), sizes(std::move(sizes)) {
  EMBER_CHECK(!this->sizes.empty(), "Unflatten: sizes must name at least one size");
  int inferred = 0;
  for (int64_t s : this->sizes) {
    EMBER_CHECK(s > 0 || s == -1, "Unflatten: sizes must be positive (or one -1 to infer), got ", shape_str(this->sizes));
    inferred += s == -1;
  }
  EMBER_CHECK(inferred <= 1, "Unflatten: at most one size may be -1, got ", shape_str(this->sizes));
}

Tensor Unflatten::forward(const Tensor& input) {
  const int64_t n = input.dim();
  EMBER_CHECK(dim >= -n && dim < n, "Unflatten: dim ", dim, " is out of range for an input of shape ", shape_str(input.shape()));
  const int64_t d = dim < 0 ? dim + n : dim;
  int64_t known = 1;
  for (int64_t s : sizes)
    if (s != -1) known *= s;
  std::vector<int64_t> resolved = sizes;
  for (int64_t& s : resolved)
    if (s == -1) s = known > 0 && input.size(d) % known == 0 ? input.size(d) / known : -1;
  int64_t product = 1;
  for (int64_t s : resolved) product = s < 0 ? -1 : product * s;
  EMBER_CHECK(product == input.size(d), "Unflatten: sizes ", shape_str(sizes), " do not multiply to dim ", d, "'s size ",
              input.size(d), " (input shape ", shape_str(input.shape()), ")");
  Shape out;
  for (int64_t i = 0; i < n; ++i) {
    if (i == d)
      out.insert(out.end(), resolved.begin(), resolved.end());
    else
      out.push_back(input.size(i));
  }
  return input.reshape(out);
}

std::string Unflatten::extra_repr() const { return text("dim=", dim, ", unflattened_size=", shape_str(sizes)); }

std::string Upsample::extra_repr() const {
  std::string s;
  if (args.size) s = "size=" + pair_text(*args.size);
  if (args.scale_factor) s = text("scale_factor=(", (*args.scale_factor)[0], ", ", (*args.scale_factor)[1], ")");
  s += args.mode == InterpolateMode::Nearest ? ", mode='nearest'" : ", mode='bilinear'";
  if (args.mode == InterpolateMode::Bilinear) s += text(", align_corners=", bool_text(args.align_corners));
  return s;
}

}  // namespace ember::nn
