// conv2d, conv_transpose2d and conv1d: argument checks, output shapes, and forward and backward
// through the backend's three conv primitives. The three are closed under differentiation:
//   forward  F(x, w)   -> y    d/dx: D(dy, w)        d/dw: W(dy, x)
//   data     D(dy, w)  -> dx   d/ddy: F(g, w)        d/dw: W(dy, g)
//   weight   W(dy, x)  -> dw   d/ddy: F(x, g)        d/dx: D(dy, g)
// so each backward is made of the other two ops (recorded as nodes themselves), and
// conv_transpose2d is D with its bias added: its forward is conv2d's data gradient.
#include <string>

#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

std::string int2_str(const Int2& v) { return detail::str_cat("[", v[0], ", ", v[1], "]"); }

// a + b and a * b, throwing (naming the op and the sizes) instead of overflowing int64_t.
int64_t add_checked(int64_t a, int64_t b, const char* op) {
  int64_t r = 0;
  EMBER_CHECK(!__builtin_add_overflow(a, b, &r), op, ": the sizes ", a, " + ", b,
              " overflow 64 bits; use a smaller input, kernel, padding or dilation");
  return r;
}
int64_t mul_checked(int64_t a, int64_t b, const char* op) {
  int64_t r = 0;
  EMBER_CHECK(!__builtin_mul_overflow(a, b, &r), op, ": the sizes ", a, " * ", b,
              " overflow 64 bits; use a smaller input, kernel, stride or dilation");
  return r;
}

// The extent a dilated kernel covers: dilation * (k - 1) + 1.
int64_t kernel_extent(int64_t k, int64_t dilation, const char* op) {
  return add_checked(mul_checked(dilation, k - 1, op), 1, op);
}

void check_common(const Tensor& x, const Tensor& w, const Tensor& b, const char* op) {
  ops::check_defined(x, op, "input");
  ops::check_defined(w, op, "weight");
  ops::check_same_device(x, w, op);
  ops::check_floating(x, op);
  EMBER_CHECK(x.dtype() == w.dtype(), op, ": input is ", dtype_name(x.dtype()), " but weight is ",
              dtype_name(w.dtype()), "; convert one with .to(DType)");
  if (b.defined()) {
    ops::check_same_device(x, b, op);
    EMBER_CHECK(b.dtype() == x.dtype(), op, ": bias is ", dtype_name(b.dtype()), " but input is ",
                dtype_name(x.dtype()), "; convert one with .to(DType)");
  }
}

void check_geometry(const Int2& stride, const Int2& dilation, const Int2& padding, int64_t groups, const char* op) {
  EMBER_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be positive, got ", int2_str(stride));
  EMBER_CHECK(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be positive, got ", int2_str(dilation));
  EMBER_CHECK(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be non-negative, got ", int2_str(padding));
  EMBER_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
}

void check_bias(const Tensor& b, int64_t c_out, const char* op) {
  if (!b.defined()) return;
  EMBER_CHECK(b.dim() == 1 && b.size(0) == c_out, op, ": bias must have shape [C_out] = [", c_out, "], got ",
              shape_str(b.shape()), "; give one bias per output channel or none");
}

// ---- the three differentiable ops over the primitives ----

// An incoming gradient in the dtype of the tensor it belongs to (`like`): each primitive takes one
// dtype, and under autocast a bf16/f16 output may receive an f32 gradient from a consumer that
// promoted it.
Tensor grad_as(const Tensor& g, DType dt) { return g.dtype() == dt ? g : g.to(dt); }

Tensor conv_forward(const char* name, const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p,
                    const Shape& y_shape);
Tensor conv_data(const char* name, const Tensor& dy, const Tensor& w, const ConvParams& p, const Shape& dx_shape);
// With `db`: also the bias gradient (sum of dy over N, H, W) from the same primitive call, when
// the result is not recorded (a backward formula runs without recording); else *db stays undefined.
Tensor conv_weight(const Tensor& dy, const Tensor& x, const ConvParams& p, const Shape& w_shape, Tensor* db = nullptr);

// conv2d's backward when it needs both the data and the weight gradient (and the bias gradient when
// `with_bias`) and records nothing (no create_graph): one backend call for all of them, into r[0],
// r[1] and r[2], so a backend can share work between them (the CPU converts dy to the layout of
// oneDNN's primitives once instead of twice). False (r untouched) for an empty batch or an empty
// tensor, and whenever the separate ops would record: the caller then runs them.
bool conv_data_weight(const Tensor& dy, const Tensor& x, const Tensor& w, const ConvParams& p, const Shape& dx_shape,
                      const Shape& w_shape, std::vector<Tensor>& r, bool with_bias) {
  if (any_requires_grad({&dy, &x, &w}) || dy.numel() == 0 || x.numel() == 0 || w.numel() == 0) return false;
  Tensor dyc = dy.detach().contiguous(), xc = x.detach().contiguous(), wc = w.detach().contiguous();
  Tensor dx = make_empty(dx_shape, dy.dtype(), dy.device()), dw = make_empty(w_shape, dy.dtype(), dy.device());
  Tensor db = with_bias ? make_empty({dy.size(1)}, dy.dtype(), dy.device()) : Tensor();
  ops::backend_of(dy).conv2d_backward(dx, dw, db, dyc, xc, wc, p);
  r[0] = dx;
  r[1] = dw;
  if (with_bias) r[2] = db;
  return true;
}

Tensor conv_forward(const char* name, const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p,
                    const Shape& y_shape) {
  Tensor xc = x.detach().contiguous(), wc = w.detach().contiguous();
  Tensor y = make_empty(y_shape, x.dtype(), x.device());
  if (y.numel() > 0)
    ops::backend_of(x).conv2d_forward(y, xc, wc, b.defined() ? b.detach().contiguous() : Tensor(), p);
  if (!any_requires_grad({&x, &w, &b})) return y;
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = b.defined() && b.requires_grad();
  // Each gradient needs only the other operand: keep only what will be read.
  SavedTensor sx = gw ? SavedTensor(xc) : SavedTensor(), sw = gx ? SavedTensor(wc) : SavedTensor();
  const Shape x_shape = x.shape(), w_shape = w.shape();
  const DType dt = y.dtype();
  record(name, {x, w, b}, {y}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    std::vector<Tensor> r(3);
    const Tensor gy = grad_as(g[0], dt);
    if (gx && gw && conv_data_weight(gy, sx.unpack(name), sw.unpack(name), p, x_shape, w_shape, r, gb)) return r;
    if (gx) r[0] = conv_data("conv2d_backward_data", gy, sw.unpack(name), p, x_shape);
    if (gw) r[1] = conv_weight(gy, sx.unpack(name), p, w_shape, gb ? &r[2] : nullptr);
    if (gb && !r[2].defined()) r[2] = sum(gy, {0, 2, 3});
    return r;
  });
  return y;
}

Tensor conv_data(const char* name, const Tensor& dy, const Tensor& w, const ConvParams& p, const Shape& dx_shape) {
  Tensor dyc = dy.detach().contiguous(), wc = w.detach().contiguous();
  Tensor dx = make_empty(dx_shape, dy.dtype(), dy.device());
  if (dx.numel() > 0) ops::backend_of(dy).conv2d_backward_data(dx, dyc, wc, p);
  if (!any_requires_grad({&dy, &w})) return dx;
  const bool gdy = dy.requires_grad(), gw = w.requires_grad();
  SavedTensor sdy = gw ? SavedTensor(dyc) : SavedTensor(), sw = gdy ? SavedTensor(wc) : SavedTensor();
  const Shape dy_shape = dy.shape(), w_shape = w.shape();
  const DType dt = dx.dtype();
  record(name, {dy, w}, {dx}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    std::vector<Tensor> r(2);
    const Tensor gx = grad_as(g[0], dt);
    if (gdy) r[0] = conv_forward("conv2d", gx, sw.unpack(name), Tensor(), p, dy_shape);
    if (gw) r[1] = conv_weight(sdy.unpack(name), gx, p, w_shape);
    return r;
  });
  return dx;
}

Tensor conv_weight(const Tensor& dy, const Tensor& x, const ConvParams& p, const Shape& w_shape, Tensor* db) {
  static constexpr const char* name = "conv2d_backward_weight";
  Tensor dyc = dy.detach().contiguous(), xc = x.detach().contiguous();
  Tensor dw = make_empty(w_shape, dy.dtype(), dy.device());
  const bool recorded = any_requires_grad({&dy, &x});
  Tensor bias_grad = db && !recorded ? make_empty({dy.size(1)}, dy.dtype(), dy.device()) : Tensor();
  if (dyc.numel() == 0) {  // an empty batch: no contribution
    dw.fill_(0.0);
    if (bias_grad.defined()) bias_grad.fill_(0.0);
  } else if (dw.numel() > 0) {
    ops::backend_of(dy).conv2d_backward_weight(dw, bias_grad, dyc, xc, p);
  }
  if (db) *db = bias_grad;
  if (!recorded) return dw;
  const bool gdy = dy.requires_grad(), gx = x.requires_grad();
  SavedTensor sdy = gx ? SavedTensor(dyc) : SavedTensor(), sx = gdy ? SavedTensor(xc) : SavedTensor();
  const Shape dy_shape = dy.shape(), x_shape = x.shape();
  const DType dt = dw.dtype();
  record(name, {dy, x}, {dw}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    std::vector<Tensor> r(2);
    const Tensor gw = grad_as(g[0], dt);
    if (gdy) r[0] = conv_forward("conv2d", sx.unpack(name), gw, Tensor(), p, dy_shape);
    if (gx) r[1] = conv_data("conv2d_backward_data", sdy.unpack(name), gw, p, x_shape);
    return r;
  });
  return dw;
}

// conv2d's checks and shape rule. `x_shown` / `w_shown` are the shapes the caller gave (conv1d's
// 3-D ones), so messages name what the user passed.
struct Conv2dPlan {
  ConvParams p;
  Shape y_shape;
};

Conv2dPlan plan_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dArgs& a, const char* op,
                       const Shape& x_shown, const Shape& w_shown) {
  const int64_t groups = a.groups;
  check_geometry(a.stride, a.dilation, a.padding, groups, op);
  EMBER_CHECK(a.padding_mode == ConvPadding::Explicit || (a.padding[0] == 0 && a.padding[1] == 0), op,
              ": padding ", int2_str(a.padding), " given together with padding_mode ",
              a.padding_mode == ConvPadding::Same ? "Same" : "Valid", "; use one or the other");
  EMBER_CHECK(a.padding_mode != ConvPadding::Same || (a.stride[0] == 1 && a.stride[1] == 1), op,
              ": padding='same' is not supported for strided convolutions (stride ", int2_str(a.stride),
              "), as in PyTorch; use stride 1 or explicit padding");
  EMBER_CHECK(w.numel() > 0, op, ": weight ", shape_str(w_shown), " has no elements");
  const int64_t c_in = x.size(1), c_out = w.size(0);
  EMBER_CHECK(c_out % groups == 0, op, ": groups ", groups, " must divide the output channels (weight ",
              shape_str(w_shown), " has ", c_out, "); change groups or the weight's first dim");
  EMBER_CHECK(c_in % groups == 0, op, ": groups ", groups, " must divide the input channels (input ",
              shape_str(x_shown), " has ", c_in, "); change groups or the input's channels");
  EMBER_CHECK(c_in == w.size(1) * groups, op, ": input ", shape_str(x_shown), " has ", c_in,
              " channels but weight ", shape_str(w_shown), " with groups ", groups, " expects ", w.size(1) * groups,
              " (weight.size(1) * groups); give the input ", w.size(1) * groups,
              " channels or build the weight as [C_out, ", c_in / groups, ", ...]");
  check_bias(b, c_out, op);
  ConvParams p;
  p.stride = a.stride;
  p.dilation = a.dilation;
  p.groups = groups;
  Shape y_shape{x.size(0), c_out, 0, 0};
  for (int d = 0; d < 2; ++d) {
    const int64_t k = w.size(2 + d), extent = kernel_extent(k, a.dilation[d], op);
    switch (a.padding_mode) {
      case ConvPadding::Explicit: p.pad_begin[d] = p.pad_end[d] = a.padding[d]; break;
      case ConvPadding::Valid: break;
      case ConvPadding::Same:
        // PyTorch: total dilation * (k - 1), half before; an odd total pads one more after.
        p.pad_begin[d] = (extent - 1) / 2;
        p.pad_end[d] = extent - 1 - p.pad_begin[d];
        break;
    }
    const int64_t padded = add_checked(add_checked(x.size(2 + d), p.pad_begin[d], op), p.pad_end[d], op);
    EMBER_CHECK(padded >= extent, op, ": the kernel covers ", w.size(2), " x ", w.size(3), " (weight ",
                shape_str(w_shown), ", dilation ", int2_str(a.dilation), ") which is larger than the padded input ",
                x.size(2), " + ", p.pad_begin[0] + p.pad_end[0], " by ", x.size(3), " + ", p.pad_begin[1] + p.pad_end[1],
                " (input ", shape_str(x_shown), "); pad the input more or use a smaller kernel or dilation");
    y_shape[2 + d] = (padded - extent) / a.stride[d] + 1;
  }
  return {p, y_shape};
}

Tensor conv2d_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dArgs& args, const char* op,
                   const Shape& x_shown, const Shape& w_shown) {
  const Conv2dPlan plan = plan_conv2d(x, weight, bias, args, op, x_shown, w_shown);
  return conv_forward(op, x, weight, bias, plan.p, plan.y_shape);
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const Conv2dArgs& args) {
  const Tensor x = ops::autocast_input(x_in, "conv2d");
  const Tensor weight = ops::autocast_input(weight_in, "conv2d");
  const Tensor bias = ops::autocast_input(bias_in, "conv2d");
  static constexpr const char* op = "conv2d";
  profile::Range range(op);
  check_common(x, weight, bias, op);
  EMBER_CHECK(x.dim() == 4, op, ": input must be 4-D [N, C_in, H, W], got shape ", shape_str(x.shape()),
              x.dim() == 3 ? "; add the batch dim with x.unsqueeze(0)" : "");
  EMBER_CHECK(weight.dim() == 4, op, ": weight must be 4-D [C_out, C_in / groups, kH, kW], got shape ",
              shape_str(weight.shape()));
  return conv2d_impl(x, weight, bias, args, op, x.shape(), weight.shape());
}

Tensor conv1d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const Conv1dArgs& args) {
  const Tensor x = ops::autocast_input(x_in, "conv1d");
  const Tensor weight = ops::autocast_input(weight_in, "conv1d");
  const Tensor bias = ops::autocast_input(bias_in, "conv1d");
  static constexpr const char* op = "conv1d";
  profile::Range range(op);
  check_common(x, weight, bias, op);
  EMBER_CHECK(x.dim() == 3, op, ": input must be 3-D [N, C_in, L], got shape ", shape_str(x.shape()),
              x.dim() == 2 ? "; add the batch dim with x.unsqueeze(0)" : "");
  EMBER_CHECK(weight.dim() == 3, op, ": weight must be 3-D [C_out, C_in / groups, k], got shape ",
              shape_str(weight.shape()));
  EMBER_CHECK(args.stride >= 1, op, ": stride must be positive, got ", args.stride);
  EMBER_CHECK(args.dilation >= 1, op, ": dilation must be positive, got ", args.dilation);
  EMBER_CHECK(args.padding >= 0, op, ": padding must be non-negative, got ", args.padding);
  // Height 1: views of x and weight (no copy), a 1-row kernel, and the result's height dropped.
  Conv2dArgs a{.stride = {1, args.stride}, .padding = {0, args.padding}, .dilation = {1, args.dilation},
               .groups = args.groups, .padding_mode = args.padding_mode};
  return conv2d_impl(x.unsqueeze(2), weight.unsqueeze(2), bias, a, op, x.shape(), weight.shape()).squeeze(2);
}

Tensor conv_transpose2d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const ConvTranspose2dArgs& a) {
  const Tensor x = ops::autocast_input(x_in, "conv_transpose2d");
  const Tensor weight = ops::autocast_input(weight_in, "conv_transpose2d");
  const Tensor bias = ops::autocast_input(bias_in, "conv_transpose2d");
  static constexpr const char* op = "conv_transpose2d";
  profile::Range range(op);
  check_common(x, weight, bias, op);
  EMBER_CHECK(x.dim() == 4, op, ": input must be 4-D [N, C_in, H, W], got shape ", shape_str(x.shape()),
              x.dim() == 3 ? "; add the batch dim with x.unsqueeze(0)" : "");
  EMBER_CHECK(weight.dim() == 4, op, ": weight must be 4-D [C_in, C_out / groups, kH, kW], got shape ",
              shape_str(weight.shape()));
  const int64_t groups = a.groups;
  check_geometry(a.stride, a.dilation, a.padding, groups, op);
  for (int d = 0; d < 2; ++d)
    EMBER_CHECK(a.output_padding[d] >= 0 && (a.output_padding[d] < a.stride[d] || a.output_padding[d] < a.dilation[d]),
                op, ": output_padding ", int2_str(a.output_padding),
                " must be non-negative and, in each dim, smaller than the stride ", int2_str(a.stride),
                " or the dilation ", int2_str(a.dilation), "; reduce it");
  EMBER_CHECK(weight.numel() > 0, op, ": weight ", shape_str(weight.shape()), " has no elements");
  const int64_t c_in = x.size(1);
  EMBER_CHECK(weight.size(0) % groups == 0, op, ": groups ", groups, " must divide the input channels (weight ",
              shape_str(weight.shape()), " has ", weight.size(0), " in its first dim); change groups or the weight");
  EMBER_CHECK(c_in == weight.size(0), op, ": input ", shape_str(x.shape()), " has ", c_in, " channels but weight ",
              shape_str(weight.shape()), " expects ", weight.size(0),
              " (weight.size(0): the layout is [C_in, C_out / groups, kH, kW], as PyTorch's); give the input ",
              weight.size(0), " channels or build the weight as [", c_in, ", ...]");
  const int64_t c_out = mul_checked(weight.size(1), groups, op);
  check_bias(bias, c_out, op);
  ConvParams p;
  p.stride = a.stride;
  p.dilation = a.dilation;
  p.groups = groups;
  p.pad_begin = p.pad_end = a.padding;
  Shape y_shape{x.size(0), c_out, 0, 0};
  EMBER_CHECK(x.size(2) >= 1 && x.size(3) >= 1, op, ": input ", shape_str(x.shape()), " has an empty spatial dim");
  for (int d = 0; d < 2; ++d) {
    // (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    const int64_t extent = kernel_extent(weight.size(2 + d), a.dilation[d], op);
    const int64_t grown = add_checked(mul_checked(x.size(2 + d) - 1, a.stride[d], op),
                                      add_checked(extent, a.output_padding[d], op), op);
    const int64_t out = grown - mul_checked(2, a.padding[d], op);
    EMBER_CHECK(out >= 1, op, ": the output would be ", out, " in dim ", 2 + d, " (input ", shape_str(x.shape()),
                ", weight ", shape_str(weight.shape()), ", stride ", int2_str(a.stride), ", padding ",
                int2_str(a.padding), ", output_padding ", int2_str(a.output_padding),
                "); reduce the padding or use a larger input");
    y_shape[2 + d] = out;
  }
  Tensor y = conv_data(op, x, weight, p, y_shape);
  if (bias.defined()) y = add(y, bias.reshape({1, c_out, 1, 1}));
  return y;
}

}  // namespace ember
