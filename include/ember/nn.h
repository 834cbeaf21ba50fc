// ember::nn: Module (named parameters, buffers and submodules, state_dict), the layers, losses,
// containers and the initialisers, following PyTorch's torch.nn conventions and defaults.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "ember/export.h"
#include "ember/generator.h"
#include "ember/ops.h"
#include "ember/tensor.h"

namespace ember::nn {

// Named tensors in registration order (PyTorch's OrderedDict), e.g. {"0.weight", ...}.
using StateDict = std::vector<std::pair<std::string, Tensor>>;

// What a non-strict load_state_dict left out (a strict load throws instead).
struct LoadResult {
  std::vector<std::string> missing_keys;     // in the module, absent from the state dict
  std::vector<std::string> unexpected_keys;  // in the state dict, absent from the module
};

// The base of every layer. A module owns named parameters (tensors the optimizer trains), named
// buffers (state such as running statistics) and named submodules; names nest with dots, as in
// PyTorch: `features.3.running_mean`. Modules are held by std::shared_ptr.
class EMBER_API Module {
 public:
  Module() = default;
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation. The base version throws: a module either overrides it or is a container.
  virtual Tensor forward(const Tensor& input);
  // Runs forward(); prefer this to calling forward() directly (summary() sees the call).
  Tensor operator()(const Tensor& input);

  // The class name shown in printouts ("Linear"), and the text inside its parentheses.
  virtual std::string type_name() const { return "Module"; }
  virtual std::string extra_repr() const { return ""; }
  // PyTorch-style tree: "Sequential(\n  (0): Linear(in_features=4, ...)\n)".
  std::string repr() const;

  // Registration. Names are non-empty, contain no '.', and are unique within this module.
  // A parameter must be a floating leaf tensor; its requires_grad is set to `requires_grad`.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  // A buffer is any tensor; a non-persistent one stays out of state_dict().
  Tensor register_buffer(const std::string& name, Tensor tensor, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    register_module_impl(name, module);
    return module;
  }

  // Replaces the submodule registered as `name` in place (its position, so state_dict order, is
  // kept) and returns the new one, for the caller's typed member as well (transfer learning):
  //   model->fc = model->replace_module("fc", std::make_shared<nn::Linear>(512, 10));
  template <class M>
  std::shared_ptr<M> replace_module(const std::string& name, std::shared_ptr<M> module) {
    replace_module_impl(name, module);
    return module;
  }

  // Parameters in registration order, depth first; a tensor registered twice (tied weights)
  // appears once.
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  // This module (named "") and every descendant, depth first.
  std::vector<std::pair<std::string, Module*>> named_modules();
  std::vector<std::pair<std::string, const Module*>> named_modules() const;
  // Number of parameter elements (each tied tensor counted once).
  int64_t num_parameters(bool trainable_only = false) const;

  // Parameters and persistent buffers under dotted names, detached but sharing storage.
  StateDict state_dict() const;
  // Copies values into this module's tensors (converting dtype and device). Throws ember::Error
  // listing every mis-shaped key, and with strict every missing and unexpected key, before
  // changing anything.
  LoadResult load_state_dict(const StateDict& state, bool strict = true);

  // Training mode (on by default) for this module and its descendants; Dropout reads it. A frozen
  // module (freeze()) and its descendants stay in eval mode.
  Module& train(bool on = true);
  Module& eval() { return train(false); }
  bool is_training() const { return training_; }

  // Sets requires_grad on every parameter of this module and its descendants, as PyTorch's
  // requires_grad_: false freezes them (no gradients, so optimizers skip them).
  Module& requires_grad_(bool on = true);
  // freeze(): requires_grad_(false) and eval mode that a later train() does not undo, so a frozen
  // backbone's batch norms keep normalizing with their (pretrained) running statistics and leave
  // them unchanged, and its dropout stays off. freeze(false) undoes both (the mode then follows the
  // next train()/eval()).
  Module& freeze(bool on = true);
  bool is_frozen() const { return frozen_; }

  // Moves (or casts the floating) parameters and buffers in place: every Tensor handle that
  // refers to them, including an optimizer's, sees the new storage. Gradients move along.
  Module& to(Device device);
  Module& to(DType dtype);

  // Drops every parameter's gradient (set_to_none) or zeroes it.
  void zero_grad(bool set_to_none = true);
  // Calls fn on every descendant, children first, then on this module (as PyTorch's apply).
  Module& apply(const std::function<void(Module&)>& fn);

  // A table of every submodule call made by one forward pass on zeros of `input_shape` (dtype
  // and device of the first parameter): name, type, output shape, own parameter count, totals.
  std::string summary(const Shape& input_shape);
  std::string summary(const Tensor& example_input);

 private:
  void register_module_impl(const std::string& name, std::shared_ptr<Module> module);
  void replace_module_impl(const std::string& name, std::shared_ptr<Module> module);
  void check_new_name(const std::string& name, const char* what) const;
  template <class Visit>
  void visit_named(const std::string& prefix, bool recurse, Visit&& visit) const;
  void repr_into(std::ostream& os, int indent) const;

  struct Param {
    std::string name;
    Tensor tensor;
  };
  struct Buffer {
    std::string name;
    Tensor tensor;
    bool persistent = true;
  };
  std::vector<Param> params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  bool frozen_ = false;
};

EMBER_API std::ostream& operator<<(std::ostream& os, const Module& m);

// ---- layers ----

struct LinearOptions {
  bool bias = true;
  DType dtype = DType::F32;
  Device device = Device::cpu();
  Generator* generator = nullptr;  // for the initial values; default_generator() when null
};

// y = x Wᵀ + b with W [out_features, in_features] and b [out_features], both drawn from
// U(-1/sqrt(in_features), 1/sqrt(in_features)) as PyTorch does (kaiming_uniform_ with a = sqrt(5)).
class EMBER_API Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, const LinearOptions& options = {});
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;
  // Draws new initial values (PyTorch's reset_parameters).
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_features;
  const int64_t out_features;
  Tensor weight;
  Tensor bias;  // undefined without a bias
};

class EMBER_API ReLU : public Module {
 public:
  Tensor forward(const Tensor& input) override { return relu(input); }
  std::string type_name() const override { return "ReLU"; }
};

class EMBER_API LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : negative_slope(negative_slope) {}
  Tensor forward(const Tensor& input) override { return leaky_relu(input, negative_slope); }
  std::string type_name() const override { return "LeakyReLU"; }
  std::string extra_repr() const override;
  double negative_slope;
};

class EMBER_API Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& input) override { return sigmoid(input); }
  std::string type_name() const override { return "Sigmoid"; }
};

class EMBER_API Tanh : public Module {
 public:
  Tensor forward(const Tensor& input) override { return tanh(input); }
  std::string type_name() const override { return "Tanh"; }
};

class EMBER_API GELU : public Module {
 public:
  explicit GELU(GeluApproximation approximate = GeluApproximation::None) : approximate(approximate) {}
  Tensor forward(const Tensor& input) override { return gelu(input, approximate); }
  std::string type_name() const override { return "GELU"; }
  std::string extra_repr() const override;
  GeluApproximation approximate;
};

class EMBER_API SiLU : public Module {
 public:
  Tensor forward(const Tensor& input) override { return silu(input); }
  std::string type_name() const override { return "SiLU"; }
};

class EMBER_API Softmax : public Module {
 public:
  explicit Softmax(int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& input) override { return softmax(input, dim); }
  std::string type_name() const override { return "Softmax"; }
  std::string extra_repr() const override;
  int64_t dim;
};

class EMBER_API LogSoftmax : public Module {
 public:
  explicit LogSoftmax(int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& input) override { return log_softmax(input, dim); }
  std::string type_name() const override { return "LogSoftmax"; }
  std::string extra_repr() const override;
  int64_t dim;
};

// Zeroes elements with probability p while training (scaling the rest by 1/(1-p)); the identity
// in eval mode. The mask comes from `generator` (default_generator() when null).
class EMBER_API Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* generator = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  double p;
  Generator* generator;
};

class EMBER_API Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& input) override { return input.flatten(start_dim, end_dim); }
  std::string type_name() const override { return "Flatten"; }
  std::string extra_repr() const override;
  int64_t start_dim;
  int64_t end_dim;
};

class EMBER_API Identity : public Module {
 public:
  Tensor forward(const Tensor& input) override { return input; }
  std::string type_name() const override { return "Identity"; }
};

// Runs its modules in order. Children are named "0", "1", ... unless built from named pairs.
// A Linear directly followed by a ReLU runs as one linear_relu (the fused GEMM epilogue on CUDA;
// the same values on the CPU).
class EMBER_API Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules);
  explicit Sequential(const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_modules);

  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Sequential"; }

  // Appends under the name of its index, or under `name`.
  Sequential& push_back(std::shared_ptr<Module> module);
  Sequential& push_back(const std::string& name, std::shared_ptr<Module> module);
  size_t size() const { return named_children().size(); }
  // The module at `index` (negative counts from the end).
  std::shared_ptr<Module> operator[](int64_t index) const;
  // The module at `index` as M; throws when it is another type.
  template <class M>
  std::shared_ptr<M> at(int64_t index) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[index]);
    if (!m) throw_wrong_type(index);
    return m;
  }
  // With this on, a Linear (with a bias) directly followed by a ReLU runs as fused_linear_relu:
  // bias and ReLU inside the GEMM through cuBLASLt's RELU_BIAS epilogue on CUDA, where a NaN
  // pre-activation becomes 0 (see ops.h) instead of staying NaN as in linear_relu / torch.relu.
  // And a Linear, ReLU, Linear run (both Linears with a bias) runs as fused_linear_relu_linear, one
  // node whose backward applies the ReLU inside the second layer's input-gradient GEMM (cuBLASLt's
  // RELU_AUX_BIAS / DRELU_BGRAD on CUDA), with the same NaN -> 0 ReLU. Greedy, left to right:
  // Linear-ReLU-Linear-ReLU-Linear runs the two-layer op, then relu (NaN passes), then linear.
  // Off by default; ember-mnist turns it on for its MLP on a GPU unless --detect-anomaly is given.
  void set_relu_nan_to_zero(bool on) { relu_nan_to_zero_ = on; }
  bool relu_nan_to_zero() const { return relu_nan_to_zero_; }

 private:
  [[noreturn]] void throw_wrong_type(int64_t index) const;
  bool relu_nan_to_zero_ = false;
};

// A shared Sequential, the way models are held: nn::sequential({linear, relu, ...}).
EMBER_API std::shared_ptr<Sequential> sequential(std::initializer_list<std::shared_ptr<Module>> modules);

// ---- convolutional, pooling, normalisation and resampling layers (NCHW) ----

// The options of Conv2d and ConvTranspose2d; `padding_mode` Same / Valid overrides `padding`.
struct ConvOptions {
  Int2 stride{1, 1};
  Int2 padding{0, 0};
  Int2 dilation{1, 1};
  Int2 output_padding{0, 0};  // ConvTranspose2d only
  int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::Explicit;  // Conv1d / Conv2d only
  bool bias = true;
  DType dtype = DType::F32;
  Device device = Device::cpu();
  Generator* generator = nullptr;
};

// The convolutions hold weight (and bias) initialised as PyTorch does: kaiming_uniform_(weight,
// a = sqrt(5)) and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
// Conv2d: weight [out_channels, in_channels / groups, kH, kW], bias [out_channels].
class EMBER_API Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Int2 kernel_size, const ConvOptions& options = {});
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, const ConvOptions& options = {})
      : Conv2d(in_channels, out_channels, Int2{kernel_size, kernel_size}, options) {}
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_channels;
  const int64_t out_channels;
  const Int2 kernel_size;
  const ConvOptions options;
  Tensor weight;
  Tensor bias;  // undefined without a bias
};

// The options of Conv1d (one value per setting: the width).
struct Conv1dOptions {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t dilation = 1;
  int64_t groups = 1;
  ConvPadding padding_mode = ConvPadding::Explicit;
  bool bias = true;
  DType dtype = DType::F32;
  Device device = Device::cpu();
  Generator* generator = nullptr;
};

// Conv1d over [N, C, L]: weight [out_channels, in_channels / groups, k].
class EMBER_API Conv1d : public Module {
 public:
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, const Conv1dOptions& options = {});
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Conv1d"; }
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_channels;
  const int64_t out_channels;
  const int64_t kernel_size;
  const Conv1dOptions options;
  Tensor weight;
  Tensor bias;
};

// ConvTranspose2d: weight [in_channels, out_channels / groups, kH, kW] (PyTorch's layout).
class EMBER_API ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, Int2 kernel_size, const ConvOptions& options = {});
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, const ConvOptions& options = {})
      : ConvTranspose2d(in_channels, out_channels, Int2{kernel_size, kernel_size}, options) {}
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "ConvTranspose2d"; }
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_channels;
  const int64_t out_channels;
  const Int2 kernel_size;
  const ConvOptions options;
  Tensor weight;
  Tensor bias;
};

class EMBER_API MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const MaxPool2dArgs& args) : args(args) {}
  explicit MaxPool2d(int64_t kernel_size) { args.kernel_size = {kernel_size, kernel_size}; }
  Tensor forward(const Tensor& input) override { return max_pool2d(input, args); }
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;
  MaxPool2dArgs args;
};

class EMBER_API AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const AvgPool2dArgs& args) : args(args) {}
  explicit AvgPool2d(int64_t kernel_size) { args.kernel_size = {kernel_size, kernel_size}; }
  Tensor forward(const Tensor& input) override { return avg_pool2d(input, args); }
  std::string type_name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override;
  AvgPool2dArgs args;
};

class EMBER_API AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Int2 output_size) : output_size(output_size) {}
  explicit AdaptiveAvgPool2d(int64_t output_size) : output_size{output_size, output_size} {}
  Tensor forward(const Tensor& input) override { return adaptive_avg_pool2d(input, output_size); }
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  std::string extra_repr() const override;
  Int2 output_size;
};

class EMBER_API AdaptiveMaxPool2d : public Module {
 public:
  explicit AdaptiveMaxPool2d(Int2 output_size) : output_size(output_size) {}
  explicit AdaptiveMaxPool2d(int64_t output_size) : output_size{output_size, output_size} {}
  Tensor forward(const Tensor& input) override { return adaptive_max_pool2d(input, output_size); }
  std::string type_name() const override { return "AdaptiveMaxPool2d"; }
  std::string extra_repr() const override;
  Int2 output_size;
};

struct BatchNormOptions {
  double eps = 1e-5;
  // The running statistics' update weight; nullopt: a cumulative average (1 / num_batches_tracked).
  std::optional<double> momentum = 0.1;
  bool affine = true;               // learnable weight (ones) and bias (zeros)
  bool track_running_stats = true;  // buffers running_mean (zeros), running_var (ones), num_batches_tracked (I64)
  DType dtype = DType::F32;
  Device device = Device::cpu();
};

// Batch normalisation over the channel dim 1 (PyTorch's _BatchNorm): batch statistics while training
// (and updates of the running ones), running statistics in eval mode; without running statistics,
// always the batch's. BatchNorm1d takes [N, C] or [N, C, L]; BatchNorm2d [N, C, H, W].
class EMBER_API BatchNorm : public Module {
 public:
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  void reset_running_stats();
  void reset_parameters();

  const int64_t num_features;
  const BatchNormOptions options;
  Tensor weight;
  Tensor bias;
  Tensor running_mean;
  Tensor running_var;
  Tensor num_batches_tracked;

 protected:
  BatchNorm(int64_t num_features, const BatchNormOptions& options, const char* type, std::vector<int64_t> input_dims);

 private:
  const char* type_;
  std::vector<int64_t> input_dims_;
};

class EMBER_API BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t num_features, const BatchNormOptions& options = {})
      : BatchNorm(num_features, options, "BatchNorm1d", {2, 3}) {}
  std::string type_name() const override { return "BatchNorm1d"; }
};

class EMBER_API BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t num_features, const BatchNormOptions& options = {})
      : BatchNorm(num_features, options, "BatchNorm2d", {4}) {}
  std::string type_name() const override { return "BatchNorm2d"; }
};

// Instance normalisation of [N, C, H, W]: PyTorch's defaults (no affine, no running statistics).
struct InstanceNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = false;
  bool track_running_stats = false;
  DType dtype = DType::F32;
  Device device = Device::cpu();
};
class EMBER_API InstanceNorm2d : public Module {
 public:
  explicit InstanceNorm2d(int64_t num_features, const InstanceNormOptions& options = {});
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "InstanceNorm2d"; }
  std::string extra_repr() const override;
  const int64_t num_features;
  const InstanceNormOptions options;
  Tensor weight;
  Tensor bias;
  Tensor running_mean;
  Tensor running_var;
};

struct LayerNormOptions {
  double eps = 1e-5;
  bool elementwise_affine = true;  // weight (ones) and bias (zeros) of normalized_shape
  bool bias = true;
  DType dtype = DType::F32;
  Device device = Device::cpu();
};
class EMBER_API LayerNorm : public Module {
 public:
  explicit LayerNorm(std::vector<int64_t> normalized_shape, const LayerNormOptions& options = {});
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "LayerNorm"; }
  std::string extra_repr() const override;
  const std::vector<int64_t> normalized_shape;
  const LayerNormOptions options;
  Tensor weight;
  Tensor bias;
};

struct GroupNormOptions {
  double eps = 1e-5;
  bool affine = true;  // weight (ones) and bias (zeros) of [num_channels]
  DType dtype = DType::F32;
  Device device = Device::cpu();
};
class EMBER_API GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, const GroupNormOptions& options = {});
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "GroupNorm"; }
  std::string extra_repr() const override;
  const int64_t num_groups;
  const int64_t num_channels;
  const GroupNormOptions options;
  Tensor weight;
  Tensor bias;
};

// Zeroes whole channels with probability p while training (dropout2d); the identity in eval mode.
class EMBER_API Dropout2d : public Module {
 public:
  explicit Dropout2d(double p = 0.5, Generator* generator = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Dropout2d"; }
  std::string extra_repr() const override;
  double p;
  Generator* generator;
};

// Splits dim `dim` into `sizes` (PyTorch's Unflatten).
class EMBER_API Unflatten : public Module {
 public:
  Unflatten(int64_t dim, std::vector<int64_t> sizes);
  Tensor forward(const Tensor& input) override;
  std::string type_name() const override { return "Unflatten"; }
  std::string extra_repr() const override;
  int64_t dim;
  std::vector<int64_t> sizes;
};

// interpolate() as a layer.
class EMBER_API Upsample : public Module {
 public:
  explicit Upsample(const InterpolateArgs& args) : args(args) {}
  Tensor forward(const Tensor& input) override { return interpolate(input, args); }
  std::string type_name() const override { return "Upsample"; }
  std::string extra_repr() const override;
  InterpolateArgs args;
};

// ---- losses: forward(input, target) ----

class EMBER_API Loss : public Module {
 public:
  virtual Tensor forward(const Tensor& input, const Tensor& target) = 0;
  Tensor operator()(const Tensor& input, const Tensor& target) { return forward(input, target); }
  // A loss needs a target: the one-argument forward throws.
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  Reduction reduction = Reduction::Mean;

 protected:
  explicit Loss(Reduction r) : reduction(r) {}
};

// The class weight (args.weight), when given, is a buffer named "weight" (moves with to(), saved in
// state_dict), as in PyTorch.
class EMBER_API CrossEntropyLoss : public Loss {
 public:
  explicit CrossEntropyLoss(const CrossEntropyArgs& args = {});
  Tensor forward(const Tensor& logits, const Tensor& target) override;
  using Loss::forward;
  std::string type_name() const override { return "CrossEntropyLoss"; }
  std::string extra_repr() const override;
  int64_t ignore_index;
  double label_smoothing;
};

class EMBER_API NLLLoss : public Loss {
 public:
  explicit NLLLoss(Reduction reduction = Reduction::Mean, int64_t ignore_index = -100)
      : Loss(reduction), ignore_index(ignore_index) {}
  explicit NLLLoss(const NllLossArgs& args);
  Tensor forward(const Tensor& log_probs, const Tensor& labels) override;
  using Loss::forward;
  std::string type_name() const override { return "NLLLoss"; }
  std::string extra_repr() const override;
  int64_t ignore_index;
};

class EMBER_API MSELoss : public Loss {
 public:
  explicit MSELoss(Reduction reduction = Reduction::Mean) : Loss(reduction) {}
  Tensor forward(const Tensor& input, const Tensor& target) override;
  using Loss::forward;
  std::string type_name() const override { return "MSELoss"; }
};

class EMBER_API L1Loss : public Loss {
 public:
  explicit L1Loss(Reduction reduction = Reduction::Mean) : Loss(reduction) {}
  Tensor forward(const Tensor& input, const Tensor& target) override;
  using Loss::forward;
  std::string type_name() const override { return "L1Loss"; }
};

// weight (and, with logits, pos_weight) are buffers when given, as in PyTorch.
class EMBER_API BCELoss : public Loss {
 public:
  explicit BCELoss(const BceArgs& args = {});
  Tensor forward(const Tensor& probs, const Tensor& target) override;
  using Loss::forward;
  std::string type_name() const override { return "BCELoss"; }
};

class EMBER_API BCEWithLogitsLoss : public Loss {
 public:
  explicit BCEWithLogitsLoss(Reduction reduction = Reduction::Mean) : Loss(reduction) {}
  explicit BCEWithLogitsLoss(const BceArgs& args);
  Tensor forward(const Tensor& logits, const Tensor& target) override;
  using Loss::forward;
  std::string type_name() const override { return "BCEWithLogitsLoss"; }
};

// ---- initialisers (torch.nn.init): fill a tensor in place, unrecorded, and return it ----
namespace init {

enum class Nonlinearity { Linear, Conv, Sigmoid, Tanh, Relu, LeakyRelu, Selu };
enum class FanMode { FanIn, FanOut };

// The recommended gain for a nonlinearity (leaky_relu takes its negative slope, 0.01 by default).
EMBER_API double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param = std::nullopt);
// {fan_in, fan_out} of a weight of at least 2 dims: [out, in, *receptive field].
EMBER_API std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& tensor);

EMBER_API Tensor uniform_(const Tensor& tensor, double a = 0.0, double b = 1.0, Generator* gen = nullptr);
EMBER_API Tensor normal_(const Tensor& tensor, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
EMBER_API Tensor constant_(const Tensor& tensor, double value);
EMBER_API Tensor zeros_(const Tensor& tensor);
EMBER_API Tensor ones_(const Tensor& tensor);
// U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010).
EMBER_API Tensor xavier_uniform_(const Tensor& tensor, double gain = 1.0, Generator* gen = nullptr);
// N(0, std²) with std = gain * sqrt(2 / (fan_in + fan_out)).
EMBER_API Tensor xavier_normal_(const Tensor& tensor, double gain = 1.0, Generator* gen = nullptr);
// U(-b, b) with b = gain * sqrt(3 / fan) (He et al., 2015); `a` is leaky_relu's negative slope.
EMBER_API Tensor kaiming_uniform_(const Tensor& tensor, double a = 0.0, FanMode mode = FanMode::FanIn,
                                  Nonlinearity nonlinearity = Nonlinearity::LeakyRelu, Generator* gen = nullptr);
// N(0, std²) with std = gain / sqrt(fan).
EMBER_API Tensor kaiming_normal_(const Tensor& tensor, double a = 0.0, FanMode mode = FanMode::FanIn,
                                 Nonlinearity nonlinearity = Nonlinearity::LeakyRelu, Generator* gen = nullptr);

}  // namespace init
}  // namespace ember::nn
