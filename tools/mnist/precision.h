// ember-mnist --precision: fp32 | tf32 (GPU) | bf16 (autocast) | fp16 (autocast + dynamic loss scaling).
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "config.h"
#include "ember/ember.h"

namespace mnist {

class Precision {
 public:
  // Checks the flag against the device (tf32 exists only on the GPU) and sets the GPU's TF32 mode.
  Precision(const Config& cfg, ember::Device device);

  // The autocast scope for the forward pass and loss (a disabled one for fp32/tf32).
  ember::autocast forward_scope() const;
  // loss.backward(), on the scaled loss for fp16.
  void backward(const ember::Tensor& loss) const;
  // fp16: unscales the gradients (before anything reads them) and says whether they overflowed,
  // in which case the step is skipped. Always false otherwise.
  bool unscale_and_check(ember::optim::Optimizer& opt);
  // The optimizer step (fp16: GradScaler's, which skips it on overflow), then the scale update.
  // take false (--skip-nonfinite dropped the step): only the scale update.
  void step(ember::optim::Optimizer& opt, bool take);

  int64_t skipped_steps() const { return scaler_ ? scaler_->skipped_steps() : 0; }
  double loss_scale() const { return scaler_ ? scaler_->get_scale() : 1.0; }
  bool loss_scaling() const { return scaler_ != nullptr; }
  // For the banner: what runs in which precision.
  std::string describe() const;

 private:
  std::string mode_;
  ember::Device device_;
  std::unique_ptr<ember::optim::GradScaler> scaler_;
};

}  // namespace mnist
