// Elementwise ops with NumPy broadcasting: arithmetic, math, comparisons, where, and in-place
// updates. Backward formulas are written with ember ops so they run on any device.
#include <cmath>
#include <limits>

#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;
using ops::sum_to;

namespace ops {

Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  const size_t lead = shape.size() - static_cast<size_t>(t.dim());
  Shape st(shape.size(), 0);
  for (size_t i = lead; i < shape.size(); ++i) st[i] = t.shape()[i - lead] == shape[i] ? t.strides()[i - lead] : 0;
  return make_view(t, shape, st, t.offset());
}

Tensor unary_kernel(UnaryOp op, const Tensor& in, ElementwiseParams p, DType out_dtype, bool keep_dtype) {
  Tensor out = make_empty(in.shape(), keep_dtype ? in.dtype() : out_dtype, in.device());
  backend_of(in).unary(op, out, in, p);
  return out;
}

Tensor binary_kernel(BinaryOp op, const Tensor& a, const Tensor& b, ElementwiseParams p) {
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), "binary op");
  Tensor out = make_empty(shape, is_comparison(op) ? DType::Bool : a.dtype(), a.device());
  backend_of(a).binary(op, out, broadcast_view(a, shape), broadcast_view(b, shape), p);
  return out;
}

}  // namespace ops

namespace {

// Checks and promotes the operands of a binary op; returns them in the common dtype.
std::pair<Tensor, Tensor> prepare(const Tensor& a, const Tensor& b, const char* op, bool need_float) {
  ops::check_defined(a, op, "first operand");
  ops::check_defined(b, op, "second operand");
  ops::check_same_device(a, b, op);
  broadcast_shapes(a.shape(), b.shape(), op);
  DType dt = ops::promote(a.dtype(), b.dtype());
  if (need_float && !is_floating(dt)) dt = DType::F32;
  if (dt == DType::Bool && !(std::string(op) == "eq" || std::string(op) == "ne")) dt = DType::I64;
  return {a.to(dt), b.to(dt)};
}

Tensor binary_op(BinaryOp op, const Tensor& a0, const Tensor& b0) {
  const char* name = op_name(op);
  profile::Range range(name);
  const bool need_float = op == BinaryOp::Div || op == BinaryOp::Pow;
  auto [a, b] = prepare(a0, b0, name, need_float);
  Tensor out = ops::binary_kernel(op, a, b);
  if (is_comparison(op) || !any_requires_grad({&a0, &b0})) return out;
  const Shape as = a.shape(), bs = b.shape();
  const bool ga = a0.requires_grad(), gb = b0.requires_grad();
  SavedTensor sa(a), sb(b), so(out, true);
  record(name, {a0, b0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor& go = g[0];
    Tensor da, db;
    switch (op) {
      case BinaryOp::Add:
        da = go;
        db = go;
        break;
      case BinaryOp::Sub:
        da = go;
        db = neg(go);
        break;
      case BinaryOp::Mul:
        if (ga) da = mul(go, sb.unpack(name));
        if (gb) db = mul(go, sa.unpack(name));
        break;
      case BinaryOp::Div: {
        Tensor bv = sb.unpack(name);
        if (ga) da = div(go, bv);
        if (gb) db = neg(div(mul(go, so.unpack(name)), bv));
        break;
      }
      case BinaryOp::Pow: {
        Tensor av = sa.unpack(name), bv = sb.unpack(name);
        if (ga) da = mul(go, mul(bv, pow(av, sub(bv, 1.0))));
        if (gb) {
          // d/db a^b = a^b log a; taken as 0 where a == 0 (the limit for b > 0), as PyTorch does.
          Tensor safe_log = log(where(eq(av, 0.0), ones_like(av), av));
          db = mul(go, mul(so.unpack(name), safe_log));
        }
        break;
      }
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        Tensor av = sa.unpack(name), bv = sb.unpack(name);
        // Ties split the gradient evenly between the operands.
        Tensor half = mul(go, 0.5);
        Tensor a_wins = op == BinaryOp::Maximum ? gt(av, bv) : lt(av, bv);
        Tensor b_wins = op == BinaryOp::Maximum ? lt(av, bv) : gt(av, bv);
        Tensor zero = zeros_like(go);
        if (ga) da = where(a_wins, go, where(eq(av, bv), half, zero));
        if (gb) db = where(b_wins, go, where(eq(av, bv), half, zero));
        break;
      }
      default:
        throw Error(detail::str_cat(name, ": no gradient"));
    }
    std::vector<Tensor> r(2);
    if (ga && da.defined()) r[0] = sum_to(da, as).to(a0.dtype());
    if (gb && db.defined()) r[1] = sum_to(db, bs).to(b0.dtype());
    return r;
  });
  return out;
}

// x op scalar, where integer tensors stay integer for integral scalars under add/sub/mul.
Tensor scalar_op(UnaryOp op, const Tensor& x0, double s, const char* name) {
  profile::Range range(name);
  ops::check_defined(x0, name);
  const bool exact_int = !is_floating(x0.dtype()) && s == static_cast<double>(static_cast<int64_t>(s)) &&
                         (op == UnaryOp::AddScalar || op == UnaryOp::MulScalar || op == UnaryOp::RSubScalar);
  Tensor x = exact_int ? (x0.dtype() == DType::Bool ? x0.to(DType::I64) : x0) : ops::to_floating(x0);
  Tensor out = ops::unary_kernel(op, x, {s, 0.0});
  if (!any_requires_grad({&x0})) return out;
  SavedTensor sx(x), so(out, true);
  record(name, {x0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor& go = g[0];
    switch (op) {
      case UnaryOp::AddScalar: return {go};
      case UnaryOp::MulScalar: return {mul(go, s)};
      case UnaryOp::RSubScalar: return {neg(go)};
      case UnaryOp::RDivScalar: {  // d(s/x) = -s/x^2 = -out/x
        Tensor xv = sx.unpack(name);
        return {neg(div(mul(go, so.unpack(name)), xv))};
      }
      case UnaryOp::PowScalar: {
        if (s == 0.0) return {zeros_like(go)};
        Tensor xv = sx.unpack(name);
        return {mul(go, mul(pow(xv, s - 1.0), s))};
      }
      case UnaryOp::RPowScalar:  // d(s^x) = s^x log s
        return {mul(go, mul(so.unpack(name), std::log(s)))};
      default: throw Error(detail::str_cat(name, ": no gradient"));
    }
  });
  return out;
}

// Unary math with a backward written from the input x and/or the output y.
Tensor math_op(UnaryOp op, const Tensor& x0, const char* name) {
  profile::Range range(name);
  ops::check_defined(x0, name);
  Tensor x = op == UnaryOp::Neg || op == UnaryOp::Abs || op == UnaryOp::Square
                 ? (x0.dtype() == DType::Bool ? x0.to(DType::I64) : x0)
                 : ops::to_floating(x0);
  Tensor out = ops::unary_kernel(op, x);
  if (!any_requires_grad({&x0})) return out;
  SavedTensor sx(x), so(out, true);
  record(name, {x0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor& go = g[0];
    switch (op) {
      case UnaryOp::Neg: return {neg(go)};
      case UnaryOp::Exp: return {mul(go, so.unpack(name))};
      case UnaryOp::Log: return {div(go, sx.unpack(name))};
      case UnaryOp::Sqrt: return {div(mul(go, 0.5), so.unpack(name))};
      case UnaryOp::Rsqrt: {  // d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
        Tensor y = so.unpack(name);
        return {mul(go, mul(mul(y, mul(y, y)), -0.5))};
      }
      case UnaryOp::Abs: return {mul(go, ops::unary_kernel(UnaryOp::Sign, sx.unpack(name)))};
      case UnaryOp::Square: return {mul(go, mul(sx.unpack(name), 2.0))};
      default: throw Error(detail::str_cat(name, ": no gradient"));
    }
  });
  return out;
}

Tensor compare_scalar(BinaryOp op, const Tensor& a, double b) {
  ops::check_defined(a, op_name(op));
  Tensor bt = full({}, b, TensorOptions(is_floating(a.dtype()) ? a.dtype() : DType::F64, a.device()));
  return binary_op(op, a, bt);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, a, b); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Pow, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Minimum, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Ge, a, b); }
Tensor eq(const Tensor& a, double b) { return compare_scalar(BinaryOp::Eq, a, b); }
Tensor ne(const Tensor& a, double b) { return compare_scalar(BinaryOp::Ne, a, b); }
Tensor lt(const Tensor& a, double b) { return compare_scalar(BinaryOp::Lt, a, b); }
Tensor le(const Tensor& a, double b) { return compare_scalar(BinaryOp::Le, a, b); }
Tensor gt(const Tensor& a, double b) { return compare_scalar(BinaryOp::Gt, a, b); }
Tensor ge(const Tensor& a, double b) { return compare_scalar(BinaryOp::Ge, a, b); }

Tensor add(const Tensor& a, double b) { return scalar_op(UnaryOp::AddScalar, a, b, "add"); }
Tensor sub(const Tensor& a, double b) { return scalar_op(UnaryOp::AddScalar, a, -b, "sub"); }
Tensor rsub(const Tensor& a, double b) { return scalar_op(UnaryOp::RSubScalar, a, b, "rsub"); }
Tensor mul(const Tensor& a, double b) { return scalar_op(UnaryOp::MulScalar, a, b, "mul"); }
Tensor div(const Tensor& a, double b) { return scalar_op(UnaryOp::MulScalar, ops::to_floating(a), 1.0 / b, "div"); }
Tensor rdiv(const Tensor& a, double b) { return scalar_op(UnaryOp::RDivScalar, a, b, "rdiv"); }
Tensor pow(const Tensor& a, double e) { return scalar_op(UnaryOp::PowScalar, a, e, "pow"); }
Tensor pow(double base, const Tensor& e) {
  EMBER_CHECK(base > 0.0, "pow: scalar base must be positive for a tensor exponent, got ", base);
  return scalar_op(UnaryOp::RPowScalar, e, base, "pow");
}

Tensor neg(const Tensor& x) { return math_op(UnaryOp::Neg, x, "neg"); }
Tensor exp(const Tensor& x) { return math_op(UnaryOp::Exp, x, "exp"); }
Tensor log(const Tensor& x) { return math_op(UnaryOp::Log, x, "log"); }
Tensor sqrt(const Tensor& x) { return math_op(UnaryOp::Sqrt, x, "sqrt"); }
Tensor rsqrt(const Tensor& x) { return math_op(UnaryOp::Rsqrt, x, "rsqrt"); }
Tensor abs(const Tensor& x) { return math_op(UnaryOp::Abs, x, "abs"); }
Tensor square(const Tensor& x) { return math_op(UnaryOp::Square, x, "square"); }

Tensor clamp(const Tensor& x0, std::optional<double> lo, std::optional<double> hi) {
  ops::check_defined(x0, "clamp");
  EMBER_CHECK(lo || hi, "clamp: give at least one of min and max");
  const double a = lo.value_or(-std::numeric_limits<double>::infinity()),
               b = hi.value_or(std::numeric_limits<double>::infinity());
  EMBER_CHECK(!(a > b), "clamp: min ", a, " is greater than max ", b);
  Tensor x = ops::to_floating(x0);
  Tensor out = ops::unary_kernel(UnaryOp::Clamp, x, {a, b});
  if (!any_requires_grad({&x0})) return out;
  SavedTensor sx(x);
  record("clamp", {x0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {ops::binary_kernel(BinaryOp::ClampBackward, g[0], sx.unpack("clamp"), {a, b})};
  });
  return out;
}

Tensor isfinite(const Tensor& x) {
  ops::check_defined(x, "isfinite");
  if (!is_floating(x.dtype())) return ones(x.shape(), TensorOptions(DType::Bool, x.device()));
  return ops::unary_kernel(UnaryOp::IsFinite, x, {}, DType::Bool, false);
}

Tensor where(const Tensor& cond, const Tensor& a0, const Tensor& b0) {
  ops::check_defined(cond, "where", "condition");
  ops::check_dtype(cond, DType::Bool, "where", "condition");
  auto [a, b] = prepare(a0, b0, "where", false);
  ops::check_same_device(cond, a, "where");
  const Shape shape = broadcast_shapes(cond.shape(), broadcast_shapes(a.shape(), b.shape(), "where"), "where");
  Tensor out = make_empty(shape, a.dtype(), a.device());
  ops::backend_of(a).where(out, ops::broadcast_view(cond, shape), ops::broadcast_view(a, shape),
                           ops::broadcast_view(b, shape));
  if (!any_requires_grad({&a0, &b0})) return out;
  const Shape as = a.shape(), bs = b.shape();
  Tensor c = cond;
  record("where", {a0, b0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor zero = zeros_like(g[0]);
    return {sum_to(where(c, g[0], zero), as), sum_to(where(c, zero, g[0]), bs)};
  });
  return out;
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double b) { return add(a, b); }
Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
Tensor operator/(const Tensor& a, double b) { return div(a, b); }
Tensor operator+(double a, const Tensor& b) { return add(b, a); }
Tensor operator-(double a, const Tensor& b) { return rsub(b, a); }
Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
Tensor operator/(double a, const Tensor& b) { return rdiv(b, a); }
Tensor operator-(const Tensor& x) { return neg(x); }

// In place: computes into t's memory when it is contiguous, else through a temporary.
static Tensor& write_back(Tensor& t, const Tensor& value) {
  if (!value.is_same(t)) backend_for(t.device()).copy(t, value);
  t.impl()->storage->version++;
  return t;
}

Tensor& add_(Tensor& t, const Tensor& other, double alpha) {
  ops::check_defined(t, "add_");
  ops::check_defined(other, "add_", "other");
  ops::check_same_device(t, other, "add_");
  autograd::check_inplace(t, "add_");
  EMBER_CHECK(broadcast_shapes(t.shape(), other.shape(), "add_") == t.shape(), "add_: other of shape ",
              shape_str(other.shape()), " does not broadcast to ", shape_str(t.shape()));
  autograd::NoGradGuard no_grad;
  Tensor o = other.to(t.dtype());
  if (alpha != 1.0) o = ops::unary_kernel(UnaryOp::MulScalar, o, {alpha, 0.0});
  Tensor target = t.is_contiguous() ? t : make_empty(t.shape(), t.dtype(), t.device());
  backend_for(t.device()).binary(BinaryOp::Add, target, t, ops::broadcast_view(o, t.shape()), {});
  return write_back(t, target);
}

Tensor& mul_(Tensor& t, double s) {
  ops::check_defined(t, "mul_");
  autograd::check_inplace(t, "mul_");
  Tensor target = t.is_contiguous() ? t : make_empty(t.shape(), t.dtype(), t.device());
  backend_for(t.device()).unary(UnaryOp::MulScalar, target, t, {s, 0.0});
  return write_back(t, target);
}

}  // namespace ember
