// Activations and softmax: forward through the backend's unary map, backward through the fused
// derivative ops (BinaryOp::*Backward) whose arithmetic lives in elementwise_math.h.
#include <cmath>
#include <limits>

#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

// y = f(x); dx = backward_op(dy, saved) where saved is x or (save_output) y.
Tensor activation(UnaryOp op, BinaryOp backward_op, const Tensor& x, const char* name, bool save_output,
                  double alpha = 0.0) {
  profile::Range range(name);
  ops::check_defined(x, name);
  ops::check_floating(x, name);
  Tensor out = ops::unary_kernel(op, x, {alpha, 0.0});
  if (!any_requires_grad({&x})) return out;
  SavedTensor saved = save_output ? SavedTensor(out, true) : SavedTensor(x);
  record(name, {x}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {ops::binary_kernel(backward_op, g[0].contiguous(), saved.unpack(name), {alpha, 0.0})};
  });
  return out;
}

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log, const char* name) {
  profile::Range range(name);
  ops::check_defined(x, name);
  ops::check_floating(x, name);
  if (x.dim() == 0) return softmax_impl(x.reshape({1}), 0, log, name).reshape({});
  const int64_t d = wrap_dim(dim, x.dim(), name);
  // The backend works on rows of the last dim: move `dim` last, and back afterwards.
  const bool moved = d != x.dim() - 1;
  Tensor xt = (moved ? x.detach().transpose(d, x.dim() - 1) : x.detach()).contiguous();
  Tensor yt = make_empty(xt.shape(), xt.dtype(), xt.device());
  if (xt.numel() > 0) ops::backend_of(xt).softmax(yt, xt, log);
  Tensor out = moved ? yt.transpose(d, x.dim() - 1) : yt;
  if (!any_requires_grad({&x})) return out;
  SavedTensor sy(yt, true);
  record(name, {x}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor y = sy.unpack(name);
    Tensor gt = (moved ? g[0].transpose(d, y.dim() - 1) : g[0]).contiguous();
    Tensor gi = make_empty(y.shape(), y.dtype(), y.device());
    if (y.numel() > 0) ops::backend_of(y).softmax_backward(gi, gt, y, log);
    return {moved ? gi.transpose(d, y.dim() - 1) : gi};
  });
  return out;
}

}  // namespace

Tensor relu(const Tensor& x) { return activation(UnaryOp::Relu, BinaryOp::ReluBackward, x, "relu", true); }
Tensor leaky_relu(const Tensor& x, double slope) {
  return activation(UnaryOp::LeakyRelu, BinaryOp::LeakyReluBackward, x, "leaky_relu", false, slope);
}
Tensor sigmoid(const Tensor& x) {
  return activation(UnaryOp::Sigmoid, BinaryOp::SigmoidBackward, x, "sigmoid", true);
}
Tensor tanh(const Tensor& x) { return activation(UnaryOp::Tanh, BinaryOp::TanhBackward, x, "tanh", true); }
Tensor gelu(const Tensor& x, GeluApproximation approximate) {
  return approximate == GeluApproximation::Tanh
             ? activation(UnaryOp::GeluTanh, BinaryOp::GeluTanhBackward, x, "gelu", false)
             : activation(UnaryOp::GeluErf, BinaryOp::GeluErfBackward, x, "gelu", false);
}
Tensor silu(const Tensor& x) { return activation(UnaryOp::Silu, BinaryOp::SiluBackward, x, "silu", false); }
Tensor softplus(const Tensor& x) {
  return activation(UnaryOp::Softplus, BinaryOp::SoftplusBackward, x, "softplus", false);
}
Tensor softplus(const Tensor& x, double beta, double threshold) {
  profile::Range range("softplus");
  ops::check_defined(x, "softplus");
  ops::check_floating(x, "softplus");
  EMBER_CHECK(std::isfinite(beta) && beta > 0, "softplus: beta must be positive and finite, got ", beta);
  EMBER_CHECK(!std::isnan(threshold), "softplus: threshold is NaN; PyTorch's default is 20");
  if (beta == 1.0 && threshold == std::numeric_limits<double>::infinity()) return softplus(x);
  // Composed, so the gradient comes for free: sigmoid(beta x) below the threshold, 1 above it.
  Tensor bx = mul(x, beta);
  Tensor soft = beta == 1.0 ? softplus(bx) : div(softplus(bx), beta);
  return where(gt(bx, threshold), x, soft);
}
Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(ops::autocast_input(x, "softmax"), dim, false, "softmax"); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(ops::autocast_input(x, "log_softmax"), dim, true, "log_softmax"); }

}  // namespace ember
