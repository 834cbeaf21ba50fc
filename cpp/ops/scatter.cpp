// gather and scatter_add along a dim (PyTorch's semantics), composed from the backend's
// index_select and index_add over the flattened tensor: each index element becomes the linear
// offset of the element it names, so every backend that has those two primitives has these ops.
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;

namespace {

// index's values must lie in [0, n): through the backend's check (on a device: no host wait, raised
// at the next one).
void check_index_values(const Tensor& index, int64_t n, const char* op) {
  if (index.numel() == 0) return;
  ops::backend_of(index).check_index(index.reshape({-1}).contiguous(),
                                     {.op = op, .what = "index values", .bound_name = "the size of the indexed dim",
                                      .bound = n});
}

// The shape rules: `index` has `shape`'s number of dims, and no dim larger than `bound`'s except
// (when skip_dim) along `dim`.
void check_index_shape(const Tensor& index, const Shape& bound, int64_t dim, bool skip_dim, const char* op,
                       const char* what) {
  EMBER_CHECK(index.dim() == static_cast<int64_t>(bound.size()), op, ": index has ", index.dim(), " dims (shape ",
              shape_str(index.shape()), ") but ", what, " has ", bound.size(), " (shape ", shape_str(bound),
              "); they must have the same number");
  for (int64_t d = 0; d < index.dim(); ++d)
    EMBER_CHECK((skip_dim && d == dim) || index.size(d) <= bound[d], op, ": index ", shape_str(index.shape()),
                " is larger than ", what, " ", shape_str(bound), " in dim ", d);
}

// For every element of `index`, the offset into a contiguous tensor of `shape` of the element it
// names: index along `dim`, its own coordinate along every other dim. I64, index's shape.
Tensor linear_offsets(const Tensor& index, int64_t dim, const Shape& shape) {
  const TensorOptions i64(DType::I64, index.device());
  int64_t stride = 1;
  Tensor offsets;
  for (int64_t d = index.dim() - 1; d >= 0; --d) {
    Tensor part;
    if (d == dim) {
      part = stride == 1 ? index : mul(index, full({}, static_cast<double>(stride), i64));
    } else {
      Shape along(static_cast<size_t>(index.dim()), 1);
      along[d] = index.size(d);
      part = arange(0.0, static_cast<double>(index.size(d) * stride), static_cast<double>(stride), i64).reshape(along);
    }
    offsets = offsets.defined() ? add(offsets, part) : part;
    stride *= shape[d];
  }
  return offsets.expand(index.shape()).contiguous();
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  profile::Range range("gather");
  ops::check_defined(x, "gather");
  ops::check_defined(index, "gather", "index");
  ops::check_same_device(x, index, "gather");
  ops::check_dtype(index, DType::I64, "gather", "index");
  EMBER_CHECK(x.dim() >= 1, "gather: input must have at least 1 dim, got a 0-d tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  check_index_shape(index, x.shape(), d, true, "gather", "input");
  check_index_values(index, x.size(d), "gather");
  if (index.numel() == 0) return zeros(index.shape(), TensorOptions(x.dtype(), x.device()));
  Tensor flat = x.contiguous().reshape({-1});
  return index_select(flat, 0, linear_offsets(index, d, x.shape()).reshape({-1})).reshape(index.shape());
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  profile::Range range("scatter_add");
  ops::check_defined(x, "scatter_add");
  ops::check_defined(index, "scatter_add", "index");
  ops::check_defined(src, "scatter_add", "src");
  ops::check_same_device(x, index, "scatter_add");
  ops::check_same_device(x, src, "scatter_add");
  ops::check_dtype(index, DType::I64, "scatter_add", "index");
  EMBER_CHECK(src.dtype() == x.dtype(), "scatter_add: src is ", dtype_name(src.dtype()), " but input is ",
              dtype_name(x.dtype()), "; convert one with .to(DType)");
  EMBER_CHECK(x.dim() >= 1, "scatter_add: input must have at least 1 dim, got a 0-d tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "scatter_add");
  check_index_shape(index, src.shape(), d, false, "scatter_add", "src");
  check_index_shape(index, x.shape(), d, true, "scatter_add", "input");
  check_index_values(index, x.size(d), "scatter_add");
  // Only the part of src that index covers is added (PyTorch's rule for a larger src).
  Tensor part = src.detach();
  for (int64_t i = 0; i < src.dim(); ++i) part = part.narrow(i, 0, index.size(i));
  Tensor out = x.detach().clone();  // a fresh contiguous copy
  if (index.numel() > 0) {
    const Tensor offsets = linear_offsets(index, d, x.shape()).reshape({-1});
    ops::backend_of(out).index_add(out, part.contiguous(), offsets, 1, out.numel(), 1);
  }
  if (!any_requires_grad({&x, &src})) return out;
  const bool gsrc = src.requires_grad();
  const Shape src_shape = src.shape();
  const Tensor idx = index.detach();
  record("scatter_add", {x, src}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    std::vector<Tensor> r{g[0], Tensor()};
    if (gsrc) {
      // d src = g gathered where src was added, zero where index did not reach.
      Tensor picked = gather(g[0], d, idx);
      if (picked.shape() == src_shape) {
        r[1] = picked;
      } else {
        r[1] = zeros(src_shape, g[0].options());
        Tensor view = r[1];
        for (int64_t i = 0; i < view.dim(); ++i) view = view.narrow(i, 0, idx.size(i));
        view.copy_(picked);
      }
    }
    return r;
  });
  return out;
}

}  // namespace ember
