// Losses: the fused cross-entropy (one backend pass forward, one backward), and nll, mse, l1 and
// binary cross-entropy with logits as compositions of ember ops.
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

Tensor reduce_loss(const Tensor& per_element, Reduction r) {
  switch (r) {
    case Reduction::None: return per_element;
    case Reduction::Sum: return sum(per_element);
    case Reduction::Mean: return mean(per_element);
  }
  return per_element;
}

void check_class_args(const Tensor& input, const Tensor& labels, const char* op, const char* what) {
  ops::check_defined(input, op, what);
  ops::check_defined(labels, op, "labels");
  ops::check_floating(input, op);
  ops::check_same_device(input, labels, op);
  EMBER_CHECK(input.dim() == 2, op, ": ", what, " must be [N, C], got shape ", shape_str(input.shape()));
  ops::check_dtype(labels, DType::I64, op, "labels");
  EMBER_CHECK(labels.dim() == 1 && labels.size(0) == input.size(0), op, ": labels must be [", input.size(0),
              "] to match ", what, " ", shape_str(input.shape()), ", got ", shape_str(labels.shape()));
  EMBER_CHECK(input.size(1) > 0, op, ": ", what, " has 0 classes (shape ", shape_str(input.shape()), ")");
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  ops::check_defined(a, op, "input");
  ops::check_defined(b, op, "target");
  ops::check_same_device(a, b, op);
  EMBER_CHECK(a.shape() == b.shape(), op, ": input shape ", shape_str(a.shape()), " and target shape ",
              shape_str(b.shape()), " differ; they must be equal");
}

// The label check of the composite losses, through the backend (on a device: no host wait).
void check_label_range(const Tensor& labels, int64_t classes, int64_t ignore_index, const char* op) {
  if (labels.numel() == 0) return;
  ops::backend_of(labels).check_index(labels, {.op = op,
                                               .what = "labels",
                                               .bound_name = "the number of classes",
                                               .hint = "; fix the labels or set ignore_index",
                                               .bound = classes,
                                               .allow_ignore = true,
                                               .ignore_index = ignore_index});
}

}  // namespace

Tensor cross_entropy(const Tensor& logits0, const Tensor& labels, const CrossEntropyArgs& args) {
  profile::Range range("cross_entropy");
  check_class_args(logits0, labels, "cross_entropy", "logits");
  EMBER_CHECK(args.label_smoothing >= 0.0 && args.label_smoothing <= 1.0,
              "cross_entropy: label_smoothing must be in [0, 1], got ", args.label_smoothing);
  Tensor logits = logits0.detach().contiguous();
  Tensor lab = labels.contiguous();
  const int64_t n = logits.size(0);
  Tensor rows = make_empty({n}, logits.dtype(), logits.device());
  Tensor lse = make_empty({n}, logits.dtype(), logits.device());
  const CrossEntropyOptions o{args.ignore_index, args.label_smoothing};
  if (n > 0) ops::backend_of(logits).cross_entropy_forward(rows, lse, logits, lab, o);
  // Mean divides by the rows that count, kept on the device (no host sync).
  Tensor count;
  Tensor out;
  {
    autograd::NoGradGuard no_grad;
    if (args.reduction == Reduction::Mean) {
      count = sum(ne(lab, static_cast<double>(args.ignore_index))).to(logits.dtype());
      out = div(sum(rows), count);
    } else {
      out = args.reduction == Reduction::Sum ? sum(rows) : rows;
    }
  }
  if (!any_requires_grad({&logits0})) return out;
  SavedTensor sl(logits), slse(lse);
  const Reduction red = args.reduction;
  record("cross_entropy", {logits0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor x = sl.unpack("cross_entropy");
    Tensor per_row = red == Reduction::None ? g[0] : (red == Reduction::Sum ? g[0] : div(g[0], count)).expand({n});
    Tensor gx = make_empty(x.shape(), x.dtype(), x.device());
    if (n > 0)
      ops::backend_of(x).cross_entropy_backward(gx, per_row.contiguous(), x, slse.unpack("cross_entropy"), lab, o);
    return {gx};
  });
  return out;
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, Reduction reduction, int64_t ignore_index) {
  profile::Range range("nll_loss");
  check_class_args(log_probs, labels, "nll_loss", "log_probs");
  check_label_range(labels, log_probs.size(1), ignore_index, "nll_loss");
  Tensor valid = ne(labels, static_cast<double>(ignore_index));
  Tensor safe = where(valid, labels, zeros_like(labels));
  Tensor picked = sum(mul(log_probs, one_hot(safe, log_probs.size(1)).to(log_probs.dtype())), {1});
  Tensor per_row = where(valid, neg(picked), zeros_like(picked));
  if (reduction != Reduction::Mean) return reduce_loss(per_row, reduction);
  return div(sum(per_row), sum(valid).to(log_probs.dtype()));
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  profile::Range range("mse_loss");
  check_same_shape(input, target, "mse_loss");
  return reduce_loss(square(sub(input, target)), reduction);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  profile::Range range("l1_loss");
  check_same_shape(input, target, "l1_loss");
  return reduce_loss(abs(sub(input, target)), reduction);
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  profile::Range range("binary_cross_entropy_with_logits");
  check_same_shape(logits, target, "binary_cross_entropy_with_logits");
  ops::check_floating(logits, "binary_cross_entropy_with_logits");
  // softplus(x) - x t = max(x, 0) - x t + log(1 + exp(-|x|)): never overflows.
  return reduce_loss(sub(softplus(logits), mul(logits, target.to(logits.dtype()))), reduction);
}

}  // namespace ember
