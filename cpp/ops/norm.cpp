// Normalisation: batch norm (training through the fused norm primitive, which also updates the
// running statistics on the device; eval as one scale-and-shift composite), layer norm and group
// norm (the same primitive over [n, c, s] views), and instance norm (group norm with one group per
// channel, its running statistics composed from ember ops). Backward of the fused paths is the
// primitive's norm_backward (first order: it is not itself differentiable).
#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

void check_norm_input(const Tensor& x, const char* op, int64_t min_dim) {
  ops::check_defined(x, op);
  ops::check_floating(x, op);
  EMBER_CHECK(x.dim() >= min_dim, op, ": expected an input with at least ", min_dim, " dims ([N, C, ...]), got shape ",
              shape_str(x.shape()));
}

// A per-channel (or per-normalised-element) parameter: undefined, or `shape` on x's device and dtype.
void check_param(const Tensor& t, const Tensor& x, const Shape& shape, const char* op, const char* what,
                 const char* role) {
  if (!t.defined()) return;
  ops::check_same_device(x, t, op);
  EMBER_CHECK(t.shape() == shape, op, ": ", what, " must be ", shape_str(shape), " (", role, " of input ",
              shape_str(x.shape()), "), got ", shape_str(t.shape()));
  EMBER_CHECK(t.dtype() == x.dtype(), op, ": ", what, " is ", dtype_name(t.dtype()), " but the input is ",
              dtype_name(x.dtype()), "; convert one with .to(DType)");
}

void check_running(const Tensor& t, const Tensor& x, int64_t c, const char* op, const char* what) {
  if (!t.defined()) return;
  check_param(t, x, {c}, op, what, "one per channel");
  EMBER_CHECK(t.is_contiguous(), op, ": ", what, " must be contiguous (it is updated in place)");
  EMBER_CHECK(!t.requires_grad(), op, ": ", what, " requires grad; running statistics are buffers, detach() them");
}

// Runs the norm primitive on x0 viewed as p's [n, c, s] and records the backward for x0, weight
// and bias (each [c] or undefined).
Tensor fused_norm(const char* name, const Tensor& x0, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, const NormParams& p) {
  Tensor x = x0.detach().contiguous();
  Tensor w = weight.defined() ? weight.detach().reshape({p.c}).contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.detach().reshape({p.c}).contiguous() : Tensor();
  const int64_t stats = p.per_channel ? p.c : p.n * p.groups;
  Tensor out = make_empty(x.shape(), x.dtype(), x.device());
  Tensor mean = make_empty({stats}, x.dtype(), x.device());
  Tensor rstd = make_empty({stats}, x.dtype(), x.device());
  ops::backend_of(x).norm_forward(out, mean, rstd, x, w, b, running_mean, running_var, p);
  for (const Tensor* r : {&running_mean, &running_var})
    if (r->defined()) r->impl()->storage->version++;
  if (!any_requires_grad({&x0, &weight, &bias})) return out;
  const bool gx = x0.requires_grad(), gw = weight.defined() && weight.requires_grad(),
             gb = bias.defined() && bias.requires_grad();
  const Shape w_shape = weight.defined() ? weight.shape() : Shape{};
  const Shape b_shape = bias.defined() ? bias.shape() : Shape{};
  SavedTensor sx(x), sw(w);
  record(name, {x0, weight, bias}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor xs = sx.unpack(name);
    const Tensor go = g[0].contiguous();
    Tensor dx = gx ? make_empty(xs.shape(), xs.dtype(), xs.device()) : Tensor();
    Tensor dw = gw ? make_empty({p.c}, xs.dtype(), xs.device()) : Tensor();
    Tensor db = gb ? make_empty({p.c}, xs.dtype(), xs.device()) : Tensor();
    ops::backend_of(xs).norm_backward(dx, dw, db, go, xs, mean, rstd, sw.defined() ? sw.unpack(name) : Tensor(), p);
    return {dx, gw ? dw.reshape(w_shape) : Tensor(), gb ? db.reshape(b_shape) : Tensor()};
  });
  return out;
}

// [1, C, 1, ...] for broadcasting a per-channel vector against x [N, C, ...].
Shape channel_shape(const Tensor& x) {
  Shape s(static_cast<size_t>(x.dim()), 1);
  s[1] = x.size(1);
  return s;
}

int64_t spatial_size(const Tensor& x) {
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return s;
}

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  const Tensor x = ops::autocast_input(x_in, "batch_norm");
  profile::Range range("batch_norm");
  check_norm_input(x, "batch_norm", 2);
  const int64_t c = x.size(1);
  check_param(weight, x, {c}, "batch_norm", "weight", "one per channel");
  check_param(bias, x, {c}, "batch_norm", "bias", "one per channel");
  check_running(running_mean, x, c, "batch_norm", "running_mean");
  check_running(running_var, x, c, "batch_norm", "running_var");
  EMBER_CHECK(eps > 0.0, "batch_norm: eps must be positive, got ", eps);
  if (!training) {
    EMBER_CHECK(running_mean.defined() && running_var.defined(),
                "batch_norm: eval mode (training = false) normalises by running_mean and running_var, but ",
                running_mean.defined() ? "running_var" : "running_mean",
                " is undefined; pass both, or training = true to use the batch statistics");
    // y = x * scale + shift with scale = weight / sqrt(running_var + eps), shift = bias - mean * scale.
    Tensor scale = rsqrt(add(running_var, eps));
    if (weight.defined()) scale = mul(scale, weight);
    Tensor shift = neg(mul(running_mean, scale));
    if (bias.defined()) shift = add(shift, bias);
    const Shape cs = channel_shape(x);
    return add(mul(x, scale.reshape(cs)), shift.reshape(cs));
  }
  const int64_t n = x.size(0), s = spatial_size(x);
  EMBER_CHECK(n * s > 1, "batch_norm: training needs more than 1 value per channel to compute a variance, got input ",
              shape_str(x.shape()), "; use a larger batch or eval mode");
  EMBER_CHECK(momentum >= 0.0 && momentum <= 1.0, "batch_norm: momentum must be in [0, 1], got ", momentum);
  NormParams p{.n = n, .c = c, .s = s, .groups = 1, .per_channel = true, .eps = eps, .momentum = momentum};
  return fused_norm("batch_norm", x, weight, bias, running_mean, running_var, p);
}

Tensor layer_norm(const Tensor& x_in, const std::vector<int64_t>& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  const Tensor x = ops::autocast_input(x_in, "layer_norm");
  profile::Range range("layer_norm");
  ops::check_defined(x, "layer_norm");
  ops::check_floating(x, "layer_norm");
  const Shape ns(normalized_shape.begin(), normalized_shape.end());
  const int64_t k = static_cast<int64_t>(ns.size());
  bool matches = k >= 1 && k <= x.dim();
  for (int64_t i = 0; matches && i < k; ++i) matches = x.size(x.dim() - k + i) == ns[i];
  EMBER_CHECK(matches, "layer_norm: normalized_shape ", shape_str(ns), " must be non-empty and equal the last ", k,
              " dims of the input ", shape_str(x.shape()));
  EMBER_CHECK(eps > 0.0, "layer_norm: eps must be positive, got ", eps);
  check_param(weight, x, ns, "layer_norm", "weight", "normalized_shape");
  check_param(bias, x, ns, "layer_norm", "bias", "normalized_shape");
  const int64_t d = shape_numel(ns);
  EMBER_CHECK(d > 0, "layer_norm: normalized_shape ", shape_str(ns), " has no elements");
  NormParams p{.n = x.numel() / d, .c = d, .s = 1, .groups = 1, .per_channel = false, .eps = eps};
  return fused_norm("layer_norm", x, weight, bias, Tensor(), Tensor(), p);
}

Tensor group_norm(const Tensor& x_in, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  const Tensor x = ops::autocast_input(x_in, "group_norm");
  profile::Range range("group_norm");
  check_norm_input(x, "group_norm", 2);
  const int64_t c = x.size(1);
  EMBER_CHECK(num_groups >= 1 && c % num_groups == 0, "group_norm: num_groups ", num_groups,
              " must be positive and divide the ", c, " channels of input ", shape_str(x.shape()),
              "; pick a divisor of ", c);
  EMBER_CHECK(eps > 0.0, "group_norm: eps must be positive, got ", eps);
  check_param(weight, x, {c}, "group_norm", "weight", "one per channel");
  check_param(bias, x, {c}, "group_norm", "bias", "one per channel");
  NormParams p{.n = x.size(0), .c = c, .s = spatial_size(x), .groups = num_groups, .per_channel = false, .eps = eps};
  return fused_norm("group_norm", x, weight, bias, Tensor(), Tensor(), p);
}

Tensor instance_norm(const Tensor& x_in, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                     const Tensor& bias, bool use_input_stats, double momentum, double eps) {
  const Tensor x = ops::autocast_input(x_in, "instance_norm");
  profile::Range range("instance_norm");
  check_norm_input(x, "instance_norm", 3);
  const int64_t c = x.size(1), s = spatial_size(x);
  check_param(weight, x, {c}, "instance_norm", "weight", "one per channel");
  check_param(bias, x, {c}, "instance_norm", "bias", "one per channel");
  check_running(running_mean, x, c, "instance_norm", "running_mean");
  check_running(running_var, x, c, "instance_norm", "running_var");
  if (!use_input_stats) {
    EMBER_CHECK(running_mean.defined() && running_var.defined(),
                "instance_norm: use_input_stats = false normalises by running_mean and running_var; pass both");
    return batch_norm(x, running_mean, running_var, weight, bias, false, momentum, eps);
  }
  EMBER_CHECK(s > 1, "instance_norm: needs more than 1 spatial element per channel to compute a variance, got input ",
              shape_str(x.shape()));
  EMBER_CHECK(momentum >= 0.0 && momentum <= 1.0, "instance_norm: momentum must be in [0, 1], got ", momentum);
  if (running_mean.defined() || running_var.defined()) {
    // PyTorch's update: each (sample, channel) plane's mean and unbiased variance, averaged over the
    // batch, enter r = (1 - momentum) r + momentum * stat.
    autograd::NoGradGuard no_grad;
    const Tensor planes = x.detach().reshape({x.size(0), c, s});
    Tensor rm = running_mean, rv = running_var;  // handles to the same buffers
    if (rm.defined())
      rm.copy_(add(mul(running_mean, 1.0 - momentum), mul(mean(planes, {0, 2}), momentum)));
    if (rv.defined()) {
      rv.copy_(add(mul(running_var, 1.0 - momentum), mul(mean(var(planes, {2}, 1), {0}), momentum)));
    }
  }
  return group_norm(x, c, weight, bias, eps);
}

Tensor dropout2d(const Tensor& x, double p, bool training, Generator* gen) {
  profile::Range range("dropout2d");
  ops::check_defined(x, "dropout2d");
  EMBER_CHECK(p >= 0.0 && p <= 1.0, "dropout2d: probability must be in [0, 1], got ", p);
  EMBER_CHECK(x.dim() >= 2, "dropout2d: expected an input [N, C, ...] with at least 2 dims, got shape ",
              shape_str(x.shape()));
  if (!training || p == 0.0) return x;
  ops::check_floating(x, "dropout2d");
  if (p == 1.0) return mul(x, 0.0);
  // One Bernoulli(1 - p) draw per (sample, channel), broadcast over the plane, scaled by 1 / (1 - p).
  Shape ms(static_cast<size_t>(x.dim()), 1);
  ms[0] = x.size(0);
  ms[1] = x.size(1);
  Tensor keep = make_empty(ms, x.dtype(), x.device());
  Generator& g = gen ? *gen : default_generator();
  ops::backend_of(x).random(keep, {RandomKind::Bernoulli, 1.0 - p, 0.0, g.seed(),
                                   g.advance(static_cast<uint64_t>(keep.numel())), &g});
  return mul(x, mul(keep, 1.0 / (1.0 - p)));
}

}  // namespace ember
