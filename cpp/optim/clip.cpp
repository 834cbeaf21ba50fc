// Gradient clipping (by total norm, by value) and the L1 penalty, as torch.nn.utils does them.
#include <cmath>

#include "cpp/optim/optim_internal.h"
#include "ember/ops.h"

namespace ember::optim {
namespace {

// The gradients clipping acts on: every defined one, checked against its parameter.
std::vector<Tensor> grads_of(const std::vector<Tensor>& params, const char* fn) {
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    EMBER_CHECK(params[i].defined(), fn, ": parameter ", i, " is an undefined tensor");
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    EMBER_CHECK(is_floating(g.dtype()), fn, ": the gradient of parameter ", i, " has dtype ", dtype_name(g.dtype()));
    grads.push_back(g);
  }
  return grads;
}

// torch.linalg.vector_norm(x, ord) over all elements of x (ord > 0 or inf).
Tensor vector_norm(const Tensor& x, double ord) {
  if (std::isinf(ord)) return max(abs(x));
  if (ord == 1.0) return sum(abs(x));
  if (ord == 2.0) return sqrt(sum(square(x)));
  return pow(sum(pow(abs(x), ord)), 1.0 / ord);
}

}  // namespace

Tensor l1_penalty(const std::vector<Tensor>& params, double lambda) {
  EMBER_CHECK(std::isfinite(lambda) && lambda >= 0.0, "l1_penalty: lambda must be finite and >= 0, got ", lambda);
  EMBER_CHECK(!params.empty(), "l1_penalty: got no parameters; pass model->parameters()");
  Tensor total;
  for (size_t i = 0; i < params.size(); ++i) {
    EMBER_CHECK(params[i].defined(), "l1_penalty: parameter ", i, " is an undefined tensor");
    Tensor s = sum(abs(params[i]));
    if (total.defined()) {
      EMBER_CHECK(s.device() == total.device(), "l1_penalty: parameter ", i, " is on ", s.device().str(),
                  " but parameter 0 is on ", total.device().str(), "; keep the model on one device");
      total = add(total, s.to(total.dtype()));
    } else {
      total = s;
    }
  }
  return mul(total, lambda);
}

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  EMBER_CHECK(std::isfinite(max_norm) && max_norm >= 0.0, "clip_grad_norm_: max_norm must be finite and >= 0, got ",
              max_norm);
  EMBER_CHECK(norm_type > 0.0 && !std::isnan(norm_type), "clip_grad_norm_: norm_type must be positive or INFINITY, got ",
              norm_type);
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> grads = grads_of(params, "clip_grad_norm_");
  if (grads.empty()) return zeros({});
  // The norm of the per-tensor norms equals the norm over all elements; it stays on the device.
  std::vector<Tensor> norms;
  for (const Tensor& g : grads) {
    EMBER_CHECK(g.device() == grads[0].device(), "clip_grad_norm_: gradients are on ", grads[0].device().str(),
                " and ", g.device().str(), "; keep the model on one device");
    norms.push_back(vector_norm(g, norm_type).to(grads[0].dtype()));
  }
  Tensor total = vector_norm(stack(norms), norm_type);
  if (error_if_nonfinite) {
    const double t = total.item();
    EMBER_CHECK(std::isfinite(t), "clip_grad_norm_: the total norm of order ", norm_type, " of the gradients is ", t,
                ", so they cannot be clipped; look for the op that produced NaN/Inf (autograd::detect_anomaly), or "
                "pass error_if_nonfinite=false");
  }
  // clip_coef = min(max_norm / (total + 1e-6), 1), applied to every gradient even when 1.
  Tensor coef = clamp(rdiv(add(total, 1e-6), max_norm), std::nullopt, 1.0);
  for (Tensor& g : grads) g.copy_(mul(g, coef.to(g.dtype())));
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  EMBER_CHECK(std::isfinite(clip_value) && clip_value >= 0.0,
              "clip_grad_value_: clip_value must be finite and >= 0, got ", clip_value);
  autograd::NoGradGuard no_grad;
  for (Tensor& g : grads_of(params, "clip_grad_value_")) g.copy_(clamp(g, -clip_value, clip_value));
}

}  // namespace ember::optim
