// Reductions: sum, mean, var/std, max/min (values and indices), argmax/argmin, logsumexp.
#include <algorithm>

#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

// Runs a backend reduction of `x` over sorted `dims` into a tensor of `out_dtype`.
Tensor reduce_kernel(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, DType out_dtype) {
  const Shape out_shape = ops::reduced_shape(x.shape(), dims, keepdim);
  Tensor out = make_empty(out_shape, out_dtype, x.device());
  const bool run = !dims.empty() && dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
  Tensor src = x;
  int64_t outer = 1, n = 1, inner = 1;
  if (run || dims.empty()) {
    src = x.contiguous();
    for (int64_t i = 0; i < x.dim(); ++i) {
      if (dims.empty() || i < dims.front()) outer *= x.size(i);
      else if (i > dims.back()) inner *= x.size(i);
      else n *= x.size(i);
    }
    if (dims.empty()) std::swap(outer, n);  // 0-d input: a one-element reduction
  } else {
    // Kept dims first, reduced dims last, so the reduction runs over one contiguous block.
    std::vector<int64_t> perm;
    for (int64_t i = 0; i < x.dim(); ++i)
      if (!std::binary_search(dims.begin(), dims.end(), i)) perm.push_back(i);
    for (int64_t d : dims) perm.push_back(d);
    Shape ps(perm.size()), pst(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) {
      ps[i] = x.shape()[perm[i]];
      pst[i] = x.strides()[perm[i]];
    }
    src = make_view(x, ps, pst, x.offset()).contiguous();
    for (size_t i = 0; i < perm.size(); ++i) (i < perm.size() - dims.size() ? outer : n) *= ps[i];
  }
  ops::backend_of(x).reduce(op, out, src, outer, n, inner);
  return out;
}

// The gradient of a reduced tensor broadcast back over the input's shape.
Tensor expand_grad(const Tensor& g, const std::vector<int64_t>& dims, const Shape& in_shape) {
  return ops::unsqueeze_dims(g, dims, static_cast<int64_t>(in_shape.size())).expand(in_shape);
}

Tensor sum_impl(const Tensor& x0, const std::vector<int64_t>& dims0, bool keepdim, bool mean_of, const char* name) {
  profile::Range range(name);
  ops::check_defined(x0, name);
  const std::vector<int64_t> dims = ops::reduce_dims(x0, dims0, name);
  Tensor x = mean_of ? ops::to_floating(x0) : (x0.dtype() == DType::Bool || x0.dtype() == DType::U8 ||
                                                       x0.dtype() == DType::I32 ? x0.to(DType::I64) : x0);
  Tensor out = reduce_kernel(mean_of ? ReduceOp::Mean : ReduceOp::Sum, x, dims, keepdim, x.dtype());
  if (!any_requires_grad({&x0})) return out;
  const Shape in_shape = x.shape();
  int64_t n = 1;
  for (int64_t d : dims) n *= in_shape[d];
  record(name, {x0}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor gi = expand_grad(g[0], dims, in_shape);
    return {mean_of ? mul(gi, 1.0 / static_cast<double>(n)) : gi};
  });
  return out;
}

// Values and indices of max/min along one dim; the gradient goes to the selected index.
std::pair<Tensor, Tensor> extreme_dim(const Tensor& x, int64_t dim, bool keepdim, bool is_max, const char* name) {
  profile::Range range(name);
  ops::check_defined(x, name);
  EMBER_CHECK(x.dtype() != DType::Bool, name, ": bool tensors have no order; convert with .to(DType::I64)");
  const int64_t d = wrap_dim(dim, x.dim(), name);
  const std::vector<int64_t> dims = x.dim() == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{d};
  EMBER_CHECK(x.dim() == 0 || x.size(d) > 0, name, ": cannot reduce over dim ", dim, " of size 0 (shape ",
              shape_str(x.shape()), ")");
  Tensor values = reduce_kernel(is_max ? ReduceOp::Max : ReduceOp::Min, x, dims, keepdim, x.dtype());
  Tensor indices = reduce_kernel(is_max ? ReduceOp::ArgMax : ReduceOp::ArgMin, x, dims, keepdim, DType::I64);
  if (any_requires_grad({&x})) {
    const Shape in_shape = x.shape();
    Tensor idx = indices;
    record(name, {x}, {values, indices}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      if (in_shape.empty()) return {g[0]};
      Shape pos_shape(in_shape.size(), 1);
      pos_shape[d] = in_shape[d];
      Tensor positions = arange(in_shape[d], TensorOptions(DType::I64, g[0].device())).reshape(pos_shape);
      Tensor hit = eq(positions, ops::unsqueeze_dims(idx, dims, static_cast<int64_t>(in_shape.size())));
      return {where(hit, expand_grad(g[0], dims, in_shape), zeros(in_shape, g[0].options()))};
    });
  }
  return {values, indices};
}

// Max/min over all elements; ties share the gradient evenly.
Tensor extreme_all(const Tensor& x, bool is_max, const char* name) {
  profile::Range range(name);
  ops::check_defined(x, name);
  EMBER_CHECK(x.numel() > 0, name, ": cannot reduce an empty tensor (shape ", shape_str(x.shape()),
              "); it has no maximum or minimum");
  const std::vector<int64_t> dims = ops::reduce_dims(x, {}, name);
  Tensor out = reduce_kernel(is_max ? ReduceOp::Max : ReduceOp::Min, x, dims, false, x.dtype());
  if (any_requires_grad({&x})) {
    SavedTensor sx(x), so(out, true);
    const Shape in_shape = x.shape();
    record(name, {x}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      Tensor hit = eq(sx.unpack(name), so.unpack(name)).to(g[0].dtype());
      return {mul(div(hit, sum(hit)), g[0])};
    });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) { return sum_impl(ops::autocast_input(x, "sum"), {}, false, false, "sum"); }
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_impl(ops::autocast_input(x, "sum"), dims, keepdim, false, "sum");
}
Tensor mean(const Tensor& x) { return sum_impl(ops::autocast_input(x, "mean"), {}, false, true, "mean"); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_impl(ops::autocast_input(x, "mean"), dims, keepdim, true, "mean");
}

Tensor var(const Tensor& x0, const std::vector<int64_t>& dims0, int64_t correction, bool keepdim) {
  profile::Range range("var");
  ops::check_defined(x0, "var");
  Tensor x = ops::to_floating(x0);
  const std::vector<int64_t> dims = ops::reduce_dims(x, dims0, "var");
  int64_t n = 1;
  for (int64_t d : dims) n *= x.size(d);
  EMBER_CHECK(correction >= 0, "var: correction must be >= 0, got ", correction);
  // Composite (recorded op by op), so its gradient comes from the pieces.
  Tensor centered = sub(x, mean(x, dims, true));
  Tensor ss = sum(square(centered), dims, keepdim);
  return div(ss, static_cast<double>(std::max<int64_t>(n - correction, 0)));
}

Tensor std(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  return sqrt(var(x, dims, correction, keepdim));
}

Tensor max(const Tensor& x) { return extreme_all(x, true, "max"); }
Tensor min(const Tensor& x) { return extreme_all(x, false, "min"); }
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_dim(x, dim, keepdim, true, "max");
}
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_dim(x, dim, keepdim, false, "min");
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  profile::Range range("argmax");
  autograd::NoGradGuard no_grad;
  return extreme_dim(x, dim, keepdim, true, "argmax").second;
}
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  profile::Range range("argmin");
  autograd::NoGradGuard no_grad;
  return extreme_dim(x, dim, keepdim, false, "argmin").second;
}
Tensor argmax(const Tensor& x) {
  profile::Range range("argmax");
  ops::check_defined(x, "argmax");
  return argmax(x.reshape({-1}), 0, false);
}

Tensor logsumexp(const Tensor& x0, const std::vector<int64_t>& dims0, bool keepdim) {
  profile::Range range("logsumexp");
  ops::check_defined(x0, "logsumexp");
  Tensor x = ops::to_floating(x0);
  const std::vector<int64_t> dims = ops::reduce_dims(x, dims0, "logsumexp");
  for (int64_t d : dims)
    EMBER_CHECK(x.size(d) > 0, "logsumexp: cannot reduce over dim ", d, " of size 0 (shape ", shape_str(x.shape()), ")");
  // Shifting by the (constant, detached) max keeps exp() from overflowing and leaves the value and
  // gradient unchanged; a row of -inf keeps a shift of 0.
  Tensor m = reduce_kernel(ReduceOp::Max, x.detach(), dims, true, x.dtype());
  m = where(isfinite(m), m, zeros_like(m));
  Tensor lse = add(log(sum(exp(sub(x, m)), dims, true)), m);
  return keepdim ? lse : lse.reshape(ops::reduced_shape(x.shape(), dims, false));
}

}  // namespace ember
