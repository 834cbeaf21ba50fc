// Loss modules: thin wrappers over the loss ops that carry their reduction and options.
#include "ember/nn.h"

namespace ember::nn {

namespace {
const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::Mean:
      return "mean";
    case Reduction::Sum:
      return "sum";
    case Reduction::None:
      return "none";
  }
  return "?";
}
}  // namespace

Tensor Loss::forward(const Tensor&) {
  throw Error(detail::str_cat(type_name(), ": a loss takes (input, target); call loss(input, target)"));
}

std::string Loss::extra_repr() const { return detail::str_cat("reduction=", reduction_name(reduction)); }

namespace {
// A loss's optional weight tensors live in its buffers (so to() moves them); undefined when absent.
Tensor buffer_or_none(const Module& m, const std::string& name) {
  for (const auto& [n, t] : m.named_buffers(false))
    if (n == name) return t;
  return Tensor();
}
}  // namespace

CrossEntropyLoss::CrossEntropyLoss(const CrossEntropyArgs& args)
    : Loss(args.reduction), ignore_index(args.ignore_index), label_smoothing(args.label_smoothing) {
  if (args.weight.defined()) register_buffer("weight", args.weight);
}

Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& target) {
  return cross_entropy(logits, target,
                       CrossEntropyArgs{reduction, ignore_index, label_smoothing, buffer_or_none(*this, "weight")});
}

std::string CrossEntropyLoss::extra_repr() const {
  return detail::str_cat(Loss::extra_repr(), ", ignore_index=", ignore_index, ", label_smoothing=", label_smoothing);
}

NLLLoss::NLLLoss(const NllLossArgs& args) : Loss(args.reduction), ignore_index(args.ignore_index) {
  if (args.weight.defined()) register_buffer("weight", args.weight);
}

Tensor NLLLoss::forward(const Tensor& log_probs, const Tensor& labels) {
  return nll_loss(log_probs, labels, NllLossArgs{reduction, ignore_index, buffer_or_none(*this, "weight")});
}

std::string NLLLoss::extra_repr() const { return detail::str_cat(Loss::extra_repr(), ", ignore_index=", ignore_index); }

Tensor MSELoss::forward(const Tensor& input, const Tensor& target) { return mse_loss(input, target, reduction); }

Tensor L1Loss::forward(const Tensor& input, const Tensor& target) { return l1_loss(input, target, reduction); }

BCELoss::BCELoss(const BceArgs& args) : Loss(args.reduction) {
  EMBER_CHECK(!args.pos_weight.defined(), "BCELoss: pos_weight applies to logits only; use BCEWithLogitsLoss");
  if (args.weight.defined()) register_buffer("weight", args.weight);
}

Tensor BCELoss::forward(const Tensor& probs, const Tensor& target) {
  return binary_cross_entropy(probs, target, BceArgs{reduction, buffer_or_none(*this, "weight"), Tensor()});
}

BCEWithLogitsLoss::BCEWithLogitsLoss(const BceArgs& args) : Loss(args.reduction) {
  if (args.weight.defined()) register_buffer("weight", args.weight);
  if (args.pos_weight.defined()) register_buffer("pos_weight", args.pos_weight);
}

Tensor BCEWithLogitsLoss::forward(const Tensor& logits, const Tensor& target) {
  return binary_cross_entropy_with_logits(
      logits, target, BceArgs{reduction, buffer_or_none(*this, "weight"), buffer_or_none(*this, "pos_weight")});
}

}  // namespace ember::nn
