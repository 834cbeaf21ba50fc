// ember-mnist --precision (precision.h): the autocast scope, the loss scaler and the banner line.
#include "precision.h"

namespace mnist {
using namespace ember;

Precision::Precision(const Config& cfg, Device device) : mode_(cfg.precision), device_(device) {
  EMBER_CHECK(mode_ == "fp32" || mode_ == "tf32" || mode_ == "bf16" || mode_ == "fp16",
              "--precision must be fp32, tf32, bf16 or fp16, got '", mode_, "'");
  EMBER_CHECK(!(cfg.deterministic && mode_ == "tf32"), "--deterministic turns TF32 off, so it contradicts --precision ",
              "tf32; drop one of them");
  EMBER_CHECK(mode_ != "tf32" || device.is_cuda(), "--precision tf32 runs on the GPU's tensor cores only, but this run ",
              "is on ", device.str(), "; use --precision fp32 (or bf16) on the CPU, or --device cuda");
  if (device.is_cuda()) cuda::set_allow_tf32(mode_ == "tf32");
  if (mode_ == "fp16") scaler_ = std::make_unique<optim::GradScaler>();
}

autocast Precision::forward_scope() const {
  return autocast(mode_ == "fp16" ? DType::F16 : DType::BF16, mode_ == "bf16" || mode_ == "fp16");
}

void Precision::backward(const Tensor& loss) const {
  if (scaler_) scaler_->scale(loss).backward();
  else loss.backward();
}

bool Precision::unscale_and_check(optim::Optimizer& opt) {
  if (!scaler_) return false;
  scaler_->unscale_(opt);
  return scaler_->found_inf();
}

void Precision::step(optim::Optimizer& opt, bool take) {
  if (!scaler_) {
    if (take) opt.step();
    return;
  }
  if (take) scaler_->step(opt);
  scaler_->update();
}

std::string Precision::describe() const {
  const std::string where = device_.is_cuda() ? "cuBLASLt/cuDNN" : "oneDNN";
  if (mode_ == "fp32") return device_.is_cuda() ? "fp32 (TF32 off)" : "fp32";
  if (mode_ == "tf32") return "tf32 (f32 GEMMs and convolutions on TF32 tensor cores)";
  const std::string low = mode_ == "bf16" ? "bf16" : "f16";
  // On the CPU, f16 operands are widened to f32 where oneDNN has no f16 kernel (every CPU without AVX512_FP16).
  const std::string widened = !device_.is_cuda() && mode_ == "fp16" ? ", f16 widened to f32 without AVX512_FP16" : "";
  std::string s = mode_ + " autocast: linear/matmul and convolutions in " + low + " with f32 accumulation (" + where +
                  widened + "), max-pool in " + low + " too; softmax, loss, normalisation, average pooling and "
                  "reductions in f32; f32 master weights and optimizer state";
  if (scaler_) s += "; dynamic loss scaling from 2^16";
  return s;
}

}  // namespace mnist
