// Loss modules: thin wrappers over the loss ops that carry their reduction and options.
#include "ember/nn.h"

namespace ember::nn {

namespace {
const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
    case Reduction::None: return "none";
  }
  return "?";
}
}  // namespace

Tensor Loss::forward(const Tensor&) {
  throw Error(detail::str_cat(type_name(), ": a loss takes (input, target); call loss(input, target)"));
}

std::string Loss::extra_repr() const { return detail::str_cat("reduction=", reduction_name(reduction)); }

Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& labels) {
  return cross_entropy(logits, labels, CrossEntropyArgs{reduction, ignore_index, label_smoothing});
}

std::string CrossEntropyLoss::extra_repr() const {
  return detail::str_cat(Loss::extra_repr(), ", ignore_index=", ignore_index, ", label_smoothing=", label_smoothing);
}

Tensor NLLLoss::forward(const Tensor& log_probs, const Tensor& labels) {
  return nll_loss(log_probs, labels, reduction, ignore_index);
}

std::string NLLLoss::extra_repr() const { return detail::str_cat(Loss::extra_repr(), ", ignore_index=", ignore_index); }

Tensor MSELoss::forward(const Tensor& input, const Tensor& target) { return mse_loss(input, target, reduction); }

Tensor L1Loss::forward(const Tensor& input, const Tensor& target) { return l1_loss(input, target, reduction); }

Tensor BCEWithLogitsLoss::forward(const Tensor& logits, const Tensor& target) {
  return binary_cross_entropy_with_logits(logits, target, reduction);
}

}  // namespace ember::nn
