// The layers: Linear (PyTorch's default initialisation), activations, Dropout, Flatten and
// Sequential (which fuses Linear + ReLU into linear_relu).
#include <cmath>
#include <sstream>
#include <typeinfo>

#include "cpp/nn/nn_internal.h"
#include "ember/autograd.h"
#include "ember/nn.h"

namespace ember::nn {

namespace {
template <class... Args>
std::string text(const Args&... args) {
  return detail::str_cat(args...);
}
}  // namespace

// ---- Linear ----

Linear::Linear(int64_t in, int64_t out, const LinearOptions& o) : in_features(in), out_features(out) {
  EMBER_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be positive, got in_features=", in,
              ", out_features=", out);
  EMBER_CHECK(o.dtype == DType::F32 || o.dtype == DType::F64, "Linear: dtype must be f32 or f64, got ",
              dtype_name(o.dtype));
  weight = register_parameter("weight", empty({out, in}, TensorOptions(o.dtype, o.device)));
  if (o.bias) bias = register_parameter("bias", empty({out}, TensorOptions(o.dtype, o.device)));
  reset_parameters(o.generator);
}

void Linear::reset_parameters(Generator* gen) {
  // PyTorch: kaiming_uniform_(weight, a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the
  // bias uses the same bound. Drawn weight first, then bias, from one generator.
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyRelu, gen);
  if (bias.defined()) {
    const double fan_in = static_cast<double>(init::calculate_fan_in_and_fan_out(weight).first);
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(fan_in) : 0.0;
    init::uniform_(bias, -bound, bound, gen);
  }
}

Tensor Linear::forward(const Tensor& input) { return linear(input, weight, bias); }

std::string Linear::extra_repr() const {
  return text("in_features=", in_features, ", out_features=", out_features, ", bias=", bias.defined() ? "true" : "false");
}

// ---- activations and shape layers ----

std::string LeakyReLU::extra_repr() const { return text("negative_slope=", negative_slope); }
std::string GELU::extra_repr() const {
  return approximate == GeluApproximation::Tanh ? "approximate=tanh" : "approximate=none";
}
std::string Softmax::extra_repr() const { return text("dim=", dim); }
std::string LogSoftmax::extra_repr() const { return text("dim=", dim); }
std::string Flatten::extra_repr() const { return text("start_dim=", start_dim, ", end_dim=", end_dim); }

Dropout::Dropout(double p, Generator* generator) : p(p), generator(generator) {
  EMBER_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability p must be in [0, 1], got ", p);
}

Tensor Dropout::forward(const Tensor& input) { return dropout(input, p, is_training(), generator); }

std::string Dropout::extra_repr() const { return text("p=", p); }

// ---- Sequential ----

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

Sequential::Sequential(const std::vector<std::shared_ptr<Module>>& modules) {
  for (const auto& m : modules) push_back(m);
}

Sequential::Sequential(const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_modules) {
  for (const auto& [name, m] : named_modules) push_back(name, m);
}

std::shared_ptr<Sequential> sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  return std::make_shared<Sequential>(modules);
}

Sequential& Sequential::push_back(std::shared_ptr<Module> module) {
  return push_back(std::to_string(size()), std::move(module));
}

Sequential& Sequential::push_back(const std::string& name, std::shared_ptr<Module> module) {
  EMBER_CHECK(module != nullptr, "Sequential::push_back: module ", size(), " (\"", name, "\") is a null pointer");
  register_module(name, std::move(module));
  return *this;
}

std::shared_ptr<Module> Sequential::operator[](int64_t index) const {
  const auto n = static_cast<int64_t>(size());
  EMBER_CHECK(index >= -n && index < n, "Sequential: index ", index, " is out of range for ", n,
              " modules (valid: ", -n, " to ", n - 1, ")");
  return named_children()[static_cast<size_t>(index < 0 ? index + n : index)].second;
}

void Sequential::throw_wrong_type(int64_t index) const {
  throw Error(text("Sequential::at: module ", index, " is a ", (*this)[index]->type_name(),
                   ", not the requested type"));
}

Tensor Sequential::forward(const Tensor& input) {
  const auto& mods = named_children();
  const bool fuse = !summary_running();
  Tensor x = input;
  for (size_t i = 0; i < mods.size(); ++i) {
    Module* m = mods[i].second.get();
    // Exact types only: a subclass may override forward().
    const Module* next = i + 1 < mods.size() ? mods[i + 1].second.get() : nullptr;
    const Module* third = i + 2 < mods.size() ? mods[i + 2].second.get() : nullptr;
    if (fuse && next && typeid(*m) == typeid(Linear) && typeid(*next) == typeid(ReLU)) {
      auto* lin = static_cast<Linear*>(m);
      // Linear, ReLU, Linear (both with a bias) in the NaN-to-zero mode: one two-layer node, so that the
      // ReLU's backward runs inside the second layer's input-gradient GEMM. Greedy, left to right.
      const auto* l2 = third && typeid(*third) == typeid(Linear) ? static_cast<const Linear*>(third) : nullptr;
      if (relu_nan_to_zero_ && l2 && lin->bias.defined() && l2->bias.defined()) {
        x = fused_linear_relu_linear(x, lin->weight, lin->bias, l2->weight, l2->bias);
        i += 2;
        continue;
      }
      x = relu_nan_to_zero_ && lin->bias.defined() ? fused_linear_relu(x, lin->weight, lin->bias)
                                                   : linear_relu(x, lin->weight, lin->bias);
      ++i;
      continue;
    }
    x = (*m)(x);
  }
  return x;
}

}  // namespace ember::nn
