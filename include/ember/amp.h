// Mixed precision: the autocast scope (which ops run in bf16/f16, from one table) and GradScaler
// (dynamic loss scaling for f16 training). See docs/mixed-precision.md.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "ember/dtype.h"
#include "ember/export.h"
#include "ember/tensor.h"

namespace ember {

namespace optim {
class Optimizer;
}

// What autocast does to an op's floating inputs (the table is autocast_table() in cpp/ops/autocast.cpp).
enum class AutocastPolicy : int8_t {
  Lower,    // f32 inputs are cast to the scope's dtype (matmul, linear): bf16/f16 GEMM, f32 accumulation
  Float32,  // bf16/f16 inputs are cast to f32 (softmax, losses, normalisation, reductions)
  Keep,     // not listed: the op runs in its inputs' dtype (elementwise ops compute in f32 internally)
};

// Within the scope (per thread, nestable), ops run in the precision autocast_policy(name) gives.
// Parameters stay f32: the casts are ordinary differentiable ops, so the gradients reaching the
// parameters are f32 again. dtype: BF16 or F16.
class EMBER_API autocast {
 public:
  explicit autocast(DType dtype = DType::BF16, bool enabled = true);
  ~autocast();
  autocast(const autocast&) = delete;
  autocast& operator=(const autocast&) = delete;

  static bool active();  // whether the calling thread is inside an enabled scope
  static DType dtype();  // the innermost scope's dtype (BF16 outside any scope)

 private:
  bool prev_enabled_;
  DType prev_dtype_;
};

EMBER_API AutocastPolicy autocast_policy(std::string_view op);

namespace optim {

// Dynamic loss scaling (PyTorch's torch.cuda.amp.GradScaler rule): the loss is multiplied by
// scale() before backward; step() unscales the gradients (unless unscale_() already did, e.g.
// before clipping), skips the optimizer step when any gradient is inf or NaN, and update() then
// halves the scale; after growth_interval clean steps in a row it doubles.
struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;  // disabled: scale() returns the loss, step() just steps
};

class EMBER_API GradScaler {
 public:
  explicit GradScaler(const GradScalerOptions& o = {});
  Tensor scale(const Tensor& loss) const;
  // Divides the gradients of `opt`'s parameters by the scale once per step and records whether
  // any is inf/NaN. Call before clip_grad_norm_ so that clipping sees true gradients.
  void unscale_(Optimizer& opt);
  // Unscales (if not yet done) and runs opt.step() unless a gradient was inf/NaN. Returns whether it stepped.
  bool step(Optimizer& opt);
  // Adjusts the scale after step() (or after unscale_() for a step the caller dropped): x backoff
  // when a gradient was inf/NaN, x growth after growth_interval clean steps in a row.
  void update();
  // Whether unscale_() found an inf/NaN gradient in this step.
  bool found_inf() const { return found_inf_; }

  double get_scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }  // over the scaler's life
  bool enabled() const { return o_.enabled; }

 private:
  GradScalerOptions o_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t skipped_ = 0;
  bool unscaled_ = false, found_inf_ = false, stepped_ = false;
};

}  // namespace optim
}  // namespace ember
