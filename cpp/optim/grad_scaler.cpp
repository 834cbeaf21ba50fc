// GradScaler: dynamic loss scaling for f16 training (include/ember/amp.h).
#include <cmath>

#include "ember/amp.h"
#include "ember/autograd.h"
#include "ember/error.h"
#include "ember/ops.h"
#include "ember/optim.h"

namespace ember::optim {

GradScaler::GradScaler(const GradScalerOptions& o) : o_(o), scale_(o.init_scale) {
  EMBER_CHECK(std::isfinite(o.init_scale) && o.init_scale > 0.0, "GradScaler: init_scale must be finite and > 0, got ",
              o.init_scale);
  EMBER_CHECK(o.growth_factor > 1.0 && std::isfinite(o.growth_factor), "GradScaler: growth_factor must be > 1, got ",
              o.growth_factor);
  EMBER_CHECK(o.backoff_factor > 0.0 && o.backoff_factor < 1.0, "GradScaler: backoff_factor must be in (0, 1), got ",
              o.backoff_factor);
  EMBER_CHECK(o.growth_interval >= 1, "GradScaler: growth_interval must be >= 1, got ", o.growth_interval);
}

Tensor GradScaler::scale(const Tensor& loss) const {
  if (!o_.enabled) return loss;
  EMBER_CHECK(loss.defined() && is_floating(loss.dtype()), "GradScaler::scale: expected a floating loss tensor");
  return mul(loss, scale_);
}

void GradScaler::unscale_(Optimizer& opt) {
  if (!o_.enabled) return;
  EMBER_CHECK(!unscaled_, "GradScaler::unscale_: already called since the last update(); call it once per step");
  autograd::NoGradGuard no_grad;
  const double inv = 1.0 / scale_;
  // 0 * g is NaN exactly where g is inf or NaN: one sum over every gradient, read once, tells
  // whether any is (one host read per step instead of one per parameter).
  Tensor probe;
  for (const Tensor& p : opt.parameters()) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    g.copy_(mul(g, inv));
    Tensor s = sum(mul(g, 0.0)).to(DType::F64);
    if (g.device() != Device::cpu()) s = s.to(Device::cpu());
    probe = probe.defined() ? add(probe, s) : s;
  }
  found_inf_ = probe.defined() && !std::isfinite(probe.item());
  unscaled_ = true;
}

bool GradScaler::step(Optimizer& opt) {
  if (!o_.enabled) {
    opt.step();
    return true;
  }
  EMBER_CHECK(!stepped_, "GradScaler::step: called twice without update() in between");
  if (!unscaled_) unscale_(opt);
  stepped_ = true;
  if (found_inf_) {
    ++skipped_;
    return false;
  }
  opt.step();
  return true;
}

void GradScaler::update() {
  if (!o_.enabled) return;
  EMBER_CHECK(unscaled_, "GradScaler::update: call step() (or unscale_()) first, once per update()");
  if (found_inf_) {
    scale_ *= o_.backoff_factor;
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == o_.growth_interval) {
    scale_ *= o_.growth_factor;
    growth_tracker_ = 0;
  }
  unscaled_ = stepped_ = found_inf_ = false;
}

}  // namespace ember::optim
