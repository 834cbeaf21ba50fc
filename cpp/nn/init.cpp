// nn::init: torch.nn.init's initialisers, drawing from ember's counter-based generator so a seed
// gives the same initial weights on the CPU and on CUDA.
#include <cmath>

#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/autograd.h"
#include "ember/nn.h"

namespace ember::nn::init {
namespace {

void check_target(const Tensor& t, const char* fn) {
  EMBER_CHECK(t.defined(), "init::", fn, ": the tensor is undefined");
  EMBER_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, "init::", fn,
              ": expected an f32 or f64 tensor, got ", dtype_name(t.dtype()), " (shape ", shape_str(t.shape()), ")");
}

// Draws into `t` from the generator: one rounding from the f64 sample to t's dtype, consuming
// numel() counters, written through a contiguous scratch tensor when t is a strided view.
Tensor random_fill(const Tensor& t, RandomParams p, Generator* gen) {
  if (t.numel() == 0) return t;
  Generator& g = gen ? *gen : default_generator();
  p.seed = g.seed();
  p.offset = g.advance(static_cast<uint64_t>(t.numel()));
  p.generator = &g;
  autograd::NoGradGuard no_grad;
  Tensor target = t.is_contiguous() ? t : make_empty(t.shape(), t.dtype(), t.device());
  backend_for(t.device()).random(target, p);
  Tensor dst = t;
  if (!target.is_same(t)) dst.copy_(target);
  else t.impl()->storage->version++;
  return t;
}

double fan(const Tensor& t, FanMode mode) {
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  return static_cast<double>(mode == FanMode::FanIn ? fan_in : fan_out);
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param) {
  switch (nonlinearity) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::Relu: return std::sqrt(2.0);
    case Nonlinearity::LeakyRelu: {
      const double slope = param.value_or(0.01);
      EMBER_CHECK(std::isfinite(slope), "init::calculate_gain: leaky_relu's negative slope must be finite, got ", slope);
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case Nonlinearity::Selu: return 3.0 / 4.0;
  }
  throw Error("init::calculate_gain: unknown nonlinearity");
}

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  EMBER_CHECK(t.defined(), "init::calculate_fan_in_and_fan_out: the tensor is undefined");
  EMBER_CHECK(t.dim() >= 2, "init: fan in and fan out need a tensor of at least 2 dims ([out, in, ...]), got shape ",
              shape_str(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor uniform_(const Tensor& t, double a, double b, Generator* gen) {
  check_target(t, "uniform_");
  EMBER_CHECK(std::isfinite(a) && std::isfinite(b) && a <= b, "init::uniform_: needs finite bounds a <= b, got a=", a,
              ", b=", b);
  return random_fill(t, {RandomKind::Uniform, a, b}, gen);
}

Tensor normal_(const Tensor& t, double mean, double std, Generator* gen) {
  check_target(t, "normal_");
  EMBER_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0.0,
              "init::normal_: needs a finite mean and a finite std >= 0, got mean=", mean, ", std=", std);
  return random_fill(t, {RandomKind::Normal, mean, std}, gen);
}

Tensor constant_(const Tensor& t, double value) {
  check_target(t, "constant_");
  autograd::NoGradGuard no_grad;
  Tensor dst = t;
  dst.fill_(value);
  return t;
}

Tensor zeros_(const Tensor& t) { return constant_(t, 0.0); }
Tensor ones_(const Tensor& t) { return constant_(t, 1.0); }

Tensor xavier_uniform_(const Tensor& t, double gain, Generator* gen) {
  check_target(t, "xavier_uniform_");
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  EMBER_CHECK(fan_in + fan_out > 0, "init::xavier_uniform_: fan_in + fan_out is 0 for shape ", shape_str(t.shape()));
  const double std = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
  const double a = std::sqrt(3.0) * std;
  return uniform_(t, -a, a, gen);
}

Tensor xavier_normal_(const Tensor& t, double gain, Generator* gen) {
  check_target(t, "xavier_normal_");
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  EMBER_CHECK(fan_in + fan_out > 0, "init::xavier_normal_: fan_in + fan_out is 0 for shape ", shape_str(t.shape()));
  const double std = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
  return normal_(t, 0.0, std, gen);
}

Tensor kaiming_uniform_(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity, Generator* gen) {
  check_target(t, "kaiming_uniform_");
  if (t.numel() == 0) return t;  // as PyTorch: initialising a zero-element tensor does nothing
  const double f = fan(t, mode);
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(f);
  const double bound = std::sqrt(3.0) * std;
  return uniform_(t, -bound, bound, gen);
}

Tensor kaiming_normal_(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity, Generator* gen) {
  check_target(t, "kaiming_normal_");
  if (t.numel() == 0) return t;
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(fan(t, mode));
  return normal_(t, 0.0, std, gen);
}

}  // namespace ember::nn::init
