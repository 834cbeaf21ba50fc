// Losses: the fused cross-entropy (one backend pass forward, one backward) and, as compositions of
// ember ops, cross-entropy with class weights or probability targets, nll, mse, l1, binary
// cross-entropy (on probabilities, with PyTorch's clamped logs and gradient) and with logits
// (weight, pos_weight). Class losses take [N, C] or [N, C, d1, ...] inputs.
#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

Tensor reduce_loss(const Tensor& per_element, Reduction r) {
  switch (r) {
    case Reduction::None:
      return per_element;
    case Reduction::Sum:
      return sum(per_element);
    case Reduction::Mean:
      return mean(per_element);
  }
  return per_element;
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

namespace {

// [N, C, d1, ...] -> [N * d1 * ..., C] (classes last), and the shape of one value per target.
Tensor classes_last(const Tensor& x) {
  if (x.dim() <= 2) return x;
  std::vector<int64_t> perm{0};
  for (int64_t d = 2; d < x.dim(); ++d) perm.push_back(d);
  perm.push_back(1);
  return x.permute(perm).reshape({-1, x.size(1)});
}

Shape per_target_shape(const Tensor& x) {
  Shape s = x.shape();
  s.erase(s.begin() + 1);
  return s;
}

void check_spatial(const Tensor& input, const Tensor& target, const char* op, const char* what) {
  ops::check_defined(input, op, what);
  ops::check_defined(target, op, "target");
  ops::check_floating(input, op);
  ops::check_same_device(input, target, op);
  EMBER_CHECK(input.dim() >= 2, op, ": ", what, " must be [N, C] or [N, C, d1, ...], got shape ",
              shape_str(input.shape()));
  EMBER_CHECK(input.size(1) > 0, op, ": ", what, " has 0 classes (shape ", shape_str(input.shape()), ")");
}

void check_class_weight(const Tensor& weight, const Tensor& input, const char* op) {
  if (!weight.defined()) return;
  ops::check_same_device(input, weight, op);
  EMBER_CHECK(weight.dim() == 1 && weight.size(0) == input.size(1), op, ": weight must be [", input.size(1),
              "] (one per class of ", shape_str(input.shape()), "), got ", shape_str(weight.shape()));
  EMBER_CHECK(weight.dtype() == input.dtype(), op, ": weight is ", dtype_name(weight.dtype()), " but the input is ",
              dtype_name(input.dtype()), "; convert one with .to(DType)");
}

void check_index_target(const Tensor& input, const Tensor& labels, const char* op, const char* what) {
  ops::check_dtype(labels, DType::I64, op, "labels");
  EMBER_CHECK(labels.shape() == per_target_shape(input), op, ": labels must be ", shape_str(per_target_shape(input)),
              " to match ", what, " ", shape_str(input.shape()), ", got ", shape_str(labels.shape()));
}

// Weighted negative log-likelihood of rows of log-probabilities lp [M, C] at labels [M]: the
// per-row losses (0 where ignored), each row's weight (0 where ignored) and the 0/1 mask of the rows
// that count (in lp's dtype).
struct NllRows {
  Tensor rows, weight, valid;
};
NllRows weighted_nll_rows(const Tensor& lp, const Tensor& lab, const Tensor& weight, int64_t ignore_index) {
  Tensor keep = ne(lab, static_cast<double>(ignore_index));
  Tensor safe = where(keep, lab, zeros_like(lab));
  Tensor picked = gather(lp, 1, safe.unsqueeze(1)).squeeze(1);
  Tensor valid = keep.to(lp.dtype());
  Tensor w = weight.defined() ? mul(valid, index_select(weight, 0, safe)) : valid;
  return {neg(mul(picked, w)), w, valid};
}

Tensor finish_rows(const Tensor& rows, const Tensor& denominator, Reduction r, const Shape& shape) {
  switch (r) {
    case Reduction::None:
      return rows.reshape(shape);
    case Reduction::Sum:
      return sum(rows);
    case Reduction::Mean:
      return div(sum(rows), denominator);
  }
  return rows;
}

// The fused kernel: logits [N, C] contiguous, I64 labels [N], no class weights.
Tensor fused_cross_entropy(const Tensor& logits0, const Tensor& labels, const CrossEntropyArgs& args) {
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

}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target_in, const CrossEntropyArgs& args) {
  const Tensor logits = ops::autocast_input(logits_in, "cross_entropy");
  const Tensor target = ops::autocast_input(target_in, "cross_entropy");
  profile::Range range("cross_entropy");
  check_spatial(logits, target, "cross_entropy", "logits");
  check_class_weight(args.weight, logits, "cross_entropy");
  const double eps = args.label_smoothing;
  EMBER_CHECK(eps >= 0.0 && eps <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got ", eps);
  const int64_t C = logits.size(1);
  const Shape shape = per_target_shape(logits);
  if (is_floating(target.dtype())) {
    // Class probabilities: -sum_c w_c t_c log p_c per target; Mean divides by the number of targets.
    EMBER_CHECK(target.shape() == logits.shape(), "cross_entropy: target is ", dtype_name(target.dtype()), " ",
                shape_str(target.shape()), ": class indices must be i64 labels of shape ", shape_str(shape),
                ", class probabilities must have the logits' shape ", shape_str(logits.shape()));
    Tensor t = classes_last(target.to(logits.dtype()));
    if (eps > 0) t = add(mul(t, 1.0 - eps), eps / static_cast<double>(C));
    Tensor wt = args.weight.defined() ? mul(t, args.weight) : t;
    Tensor rows = neg(sum(mul(log_softmax(classes_last(logits), 1), wt), {1}));
    return finish_rows(rows,
                       full({}, static_cast<double>(rows.numel()), TensorOptions(logits.dtype(), logits.device())),
                       args.reduction, shape);
  }
  check_index_target(logits, target, "cross_entropy", "logits");
  Tensor x2 = classes_last(logits), y = target.reshape({-1});
  if (!args.weight.defined()) {  // the fused kernel checks the labels itself
    Tensor out = fused_cross_entropy(x2, y, args);
    return args.reduction == Reduction::None ? out.reshape(shape) : out;
  }
  check_label_range(target, C, args.ignore_index, "cross_entropy");
  // Class weights (PyTorch's formula): (1 - eps) w_y nll + eps / C sum_c w_c (-log p_c) per target,
  // 0 where ignored; Mean divides by the summed w_y of the targets that count.
  Tensor lp = log_softmax(x2, 1);
  auto [rows, w, valid] = weighted_nll_rows(lp, y, args.weight, args.ignore_index);
  if (eps > 0) {
    Tensor smooth = mul(neg(sum(mul(lp, args.weight), {1})), valid);
    rows = add(mul(rows, 1.0 - eps), mul(smooth, eps / static_cast<double>(C)));
  }
  return finish_rows(rows, sum(w), args.reduction, shape);
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& labels, Reduction reduction, int64_t ignore_index) {
  return nll_loss(log_probs, labels, NllLossArgs{reduction, ignore_index, Tensor()});
}

Tensor nll_loss(const Tensor& log_probs_in, const Tensor& labels, const NllLossArgs& args) {
  const Tensor log_probs = ops::autocast_input(log_probs_in, "nll_loss");
  profile::Range range("nll_loss");
  check_spatial(log_probs, labels, "nll_loss", "log_probs");
  check_class_weight(args.weight, log_probs, "nll_loss");
  check_index_target(log_probs, labels, "nll_loss", "log_probs");
  check_label_range(labels, log_probs.size(1), args.ignore_index, "nll_loss");
  const NllRows r = weighted_nll_rows(classes_last(log_probs), labels.reshape({-1}), args.weight, args.ignore_index);
  return finish_rows(r.rows, sum(r.weight), args.reduction, per_target_shape(log_probs));
}

Tensor mse_loss(const Tensor& input_in, const Tensor& target_in, Reduction reduction) {
  const Tensor input = ops::autocast_input(input_in, "mse_loss");
  const Tensor target = ops::autocast_input(target_in, "mse_loss");
  profile::Range range("mse_loss");
  check_same_shape(input, target, "mse_loss");
  return reduce_loss(square(sub(input, target)), reduction);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  profile::Range range("l1_loss");
  check_same_shape(input, target, "l1_loss");
  return reduce_loss(abs(sub(input, target)), reduction);
}

namespace {

// weight (or pos_weight) must broadcast to the input's shape without growing it.
void check_broadcasts_to(const Tensor& w, const Tensor& input, const char* op, const char* what) {
  if (!w.defined()) return;
  ops::check_same_device(input, w, op);
  EMBER_CHECK(w.dtype() == input.dtype(), op, ": ", what, " is ", dtype_name(w.dtype()), " but the input is ",
              dtype_name(input.dtype()), "; convert one with .to(DType)");
  bool fits = w.dim() <= input.dim();
  for (int64_t i = 1; fits && i <= w.dim(); ++i) fits = w.size(-i) == 1 || w.size(-i) == input.size(-i);
  EMBER_CHECK(fits, op, ": ", what, " ", shape_str(w.shape()), " does not broadcast to the input's shape ",
              shape_str(input.shape()), " (aligned from the last dim, each size must match or be 1)");
}

}  // namespace

Tensor binary_cross_entropy(const Tensor& probs_in, const Tensor& target_in, const BceArgs& args) {
  const Tensor probs = ops::autocast_input(probs_in, "binary_cross_entropy");
  const Tensor target = ops::autocast_input(target_in, "binary_cross_entropy");
  profile::Range range("binary_cross_entropy");
  check_same_shape(probs, target, "binary_cross_entropy");
  ops::check_floating(probs, "binary_cross_entropy");
  check_broadcasts_to(args.weight, probs, "binary_cross_entropy", "weight");
  EMBER_CHECK(!args.pos_weight.defined(),
              "binary_cross_entropy: pos_weight applies to logits only; use "
              "binary_cross_entropy_with_logits");
  // Checked on the CPU (reading every value). On a device the check would be a host wait inside
  // the op; there a value outside [0, 1] makes its log, and so the loss, NaN instead.
  if (probs.numel() > 0 && probs.device().is_cpu()) {
    autograd::NoGradGuard no_grad;
    const double lo = min(probs).item<double>(), hi = max(probs).item<double>();
    EMBER_CHECK(lo >= 0.0 && hi <= 1.0, "binary_cross_entropy: probabilities must be in [0, 1] but range over [", lo,
                ", ", hi, "]; for scores use binary_cross_entropy_with_logits");
  }
  Tensor p = probs.detach(), t = target.detach().to(probs.dtype());
  const Tensor& w = args.weight;
  Tensor loss, out;
  {
    autograd::NoGradGuard no_grad;
    loss = neg(add(mul(t, clamp(log(p), -100.0, std::nullopt)),
                   mul(rsub(t, 1.0), clamp(log(rsub(p, 1.0)), -100.0, std::nullopt))));
    out = reduce_loss(w.defined() ? mul(loss, w) : loss, args.reduction);
  }
  if (!any_requires_grad({&probs, &target, &w})) return out;
  // PyTorch's gradient, finite at p = 0 and 1: w (p - t) / max(p (1 - p), 1e-12); for the target
  // w (log(1 - p) - log p), each log clamped at -100; for the weight, the unweighted loss.
  const bool gp = probs.requires_grad(), gt = target.requires_grad(), gw = w.defined() && w.requires_grad();
  const Tensor wv = w.defined() ? w.detach() : Tensor();
  const Reduction red = args.reduction;
  const int64_t n = probs.numel();
  const DType target_dtype = target.dtype();
  const Shape shape = probs.shape();
  record("binary_cross_entropy", {probs, target, w}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor go = (red == Reduction::Mean ? div(g[0], static_cast<double>(n)) : g[0]).expand(shape);
    std::vector<Tensor> r(3);
    if (gw) r[2] = ops::sum_to(mul(go, loss), wv.shape());
    if (wv.defined()) go = mul(go, wv);
    if (gp) r[0] = mul(go, div(sub(p, t), clamp(mul(p, rsub(p, 1.0)), 1e-12, std::nullopt)));
    if (gt)
      r[1] = mul(go, sub(clamp(log(rsub(p, 1.0)), -100.0, std::nullopt), clamp(log(p), -100.0, std::nullopt)))
                 .to(target_dtype);
    return r;
  });
  return out;
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  return binary_cross_entropy_with_logits(logits, target, BceArgs{reduction, Tensor(), Tensor()});
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits_in, const Tensor& target_in, const BceArgs& args) {
  const Tensor logits = ops::autocast_input(logits_in, "binary_cross_entropy_with_logits");
  const Tensor target = ops::autocast_input(target_in, "binary_cross_entropy_with_logits");
  profile::Range range("binary_cross_entropy_with_logits");
  check_same_shape(logits, target, "binary_cross_entropy_with_logits");
  ops::check_floating(logits, "binary_cross_entropy_with_logits");
  check_broadcasts_to(args.weight, logits, "binary_cross_entropy_with_logits", "weight");
  check_broadcasts_to(args.pos_weight, logits, "binary_cross_entropy_with_logits", "pos_weight");
  Tensor t = target.to(logits.dtype());
  Tensor loss;
  if (!args.pos_weight.defined()) {
    // softplus(x) - x t = max(x, 0) - x t + log(1 + exp(-|x|)): never overflows.
    loss = sub(softplus(logits), mul(logits, t));
  } else {
    // (1 - t) x + (1 + (pw - 1) t) softplus(-x): -[pw t log sigmoid(x) + (1 - t) log sigmoid(-x)].
    Tensor log_weight = add(mul(sub(args.pos_weight, 1.0), t), 1.0);
    loss = add(mul(rsub(t, 1.0), logits), mul(log_weight, softplus(neg(logits))));
  }
  if (args.weight.defined()) loss = mul(loss, args.weight);
  return reduce_loss(loss, args.reduction);
}

}  // namespace ember
