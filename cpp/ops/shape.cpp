// Shape and indexing ops with gradients: cat, stack, split (by size or sizes), index_select, embedding
// (with padding_idx), one_hot;
// and dropout, whose mask comes from the counter-based generator.
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  profile::Range range("cat");
  EMBER_CHECK(!tensors.empty(), "cat: expected at least one tensor");
  const Tensor& first = tensors[0];
  ops::check_defined(first, "cat");
  const int64_t d = wrap_dim(dim, first.dim(), "cat");
  DType dt = first.dtype();
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    ops::check_defined(t, "cat");
    ops::check_same_device(first, t, "cat");
    EMBER_CHECK(t.dim() == first.dim(), "cat: tensor ", i, " has shape ", shape_str(t.shape()), " but tensor 0 has ",
                shape_str(first.shape()), "; all need the same number of dims");
    for (int64_t k = 0; k < t.dim(); ++k)
      EMBER_CHECK(k == d || t.size(k) == first.size(k), "cat: tensor ", i, " has shape ", shape_str(t.shape()),
                  " but tensor 0 has ", shape_str(first.shape()), "; sizes must match except in dim ", d);
    dt = ops::promote(dt, t.dtype());
    total += t.size(d);
  }
  Shape shape = first.shape();
  shape[d] = total;
  Tensor out = make_empty(shape, dt, first.device());
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const Tensor& t : tensors) {
    Tensor piece = make_view(out, out.shape(), out.strides(), out.offset()).narrow(d, at, t.size(d));
    ops::backend_of(out).copy(piece, t);
    sizes.push_back(t.size(d));
    at += t.size(d);
  }
  if (!any_requires_grad(tensors)) return out;
  record("cat", tensors, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    std::vector<Tensor> r;
    int64_t start = 0;
    for (int64_t s : sizes) {
      r.push_back(g[0].narrow(d, start, s));
      start += s;
    }
    return r;
  });
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  profile::Range range("stack");
  EMBER_CHECK(!tensors.empty(), "stack: expected at least one tensor");
  ops::check_defined(tensors[0], "stack");
  const int64_t d = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    ops::check_defined(tensors[i], "stack");
    EMBER_CHECK(tensors[i].shape() == tensors[0].shape(), "stack: tensor ", i, " has shape ",
                shape_str(tensors[i].shape()), " but tensor 0 has ", shape_str(tensors[0].shape()),
                "; all must be equal");
    parts.push_back(tensors[i].unsqueeze(d));
  }
  return cat(parts, d);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  profile::Range range("split");
  ops::check_defined(x, "split");
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  EMBER_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  std::vector<Tensor> out;
  for (int64_t start = 0; start < x.size(d); start += split_size)
    out.push_back(x.narrow(d, start, std::min(split_size, x.size(d) - start)));
  if (out.empty()) out.push_back(x);
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  profile::Range range("split");
  ops::check_defined(x, "split");
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    EMBER_CHECK(s >= 0, "split: sizes must not be negative, got ", s, " in ", shape_str(sizes));
    EMBER_CHECK(s <= x.size(d) - total, "split: sizes ", shape_str(sizes), " add up to more than dim ", d, "'s size ",
                x.size(d), " (shape ", shape_str(x.shape()), ")");
    total += s;
  }
  EMBER_CHECK(total == x.size(d), "split: sizes ", shape_str(sizes), " add up to ", total, " but dim ", d, " has size ",
              x.size(d), " (shape ", shape_str(x.shape()), "); they must add up to it");
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(x.narrow(d, start, s));
    start += s;
  }
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  profile::Range range("index_select");
  ops::check_defined(x, "index_select");
  ops::check_defined(index, "index_select", "index");
  ops::check_same_device(x, index, "index_select");
  ops::check_dtype(index, DType::I64, "index_select", "index");
  EMBER_CHECK(index.dim() <= 1, "index_select: index must be 0-D or 1-D, got shape ", shape_str(index.shape()));
  EMBER_CHECK(x.dim() >= 1, "index_select: input must have at least 1 dim");
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
  const int64_t n = x.size(d);
  Tensor idx = index.reshape({-1}).contiguous();
  // On a device, checked there (no host wait): a bad value is raised at the next host wait.
  if (idx.numel() > 0)
    ops::backend_of(idx).check_index(
        idx, {.op = "index_select", .what = "index values", .bound_name = "the size of the indexed dim", .bound = n});
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  Shape shape = x.shape();
  shape[d] = idx.numel();
  Tensor out = make_empty(shape, x.dtype(), x.device());
  if (out.numel() > 0) ops::backend_of(x).index_select(out, x.contiguous(), idx, outer, n, inner);
  if (!any_requires_grad({&x})) return out;
  const Shape in_shape = x.shape();
  record("index_select", {x}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor gi = zeros(in_shape, g[0].options());
    if (g[0].numel() > 0) ops::backend_of(gi).index_add(gi, g[0].contiguous(), idx, outer, n, inner);
    return {gi};
  });
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  profile::Range range("embedding");
  ops::check_defined(weight, "embedding", "weight");
  ops::check_defined(indices, "embedding", "indices");
  EMBER_CHECK(weight.dim() == 2, "embedding: weight must be [num_embeddings, dim], got ", shape_str(weight.shape()));
  Shape shape = indices.shape();
  shape.push_back(weight.size(1));
  Tensor out = index_select(weight, 0, indices.reshape({-1})).reshape(shape);
  if (!padding_idx) return out;
  const int64_t num = weight.size(0);
  EMBER_CHECK(*padding_idx >= -num && *padding_idx < num, "embedding: padding_idx ", *padding_idx, " is outside [",
              -num, ", ", num, ") for weight ", shape_str(weight.shape()));
  const int64_t pad = *padding_idx < 0 ? *padding_idx + num : *padding_idx;
  // The padding row's value is looked up as usual; only its gradient is cut (PyTorch's rule).
  return where(eq(indices, static_cast<double>(pad)).unsqueeze(-1), out.detach(), out);
}

Tensor one_hot(const Tensor& labels, int64_t num_classes) {
  profile::Range range("one_hot");
  ops::check_defined(labels, "one_hot", "labels");
  ops::check_dtype(labels, DType::I64, "one_hot", "labels");
  EMBER_CHECK(num_classes > 0, "one_hot: num_classes must be positive, got ", num_classes);
  if (labels.numel() > 0) {
    const Tensor flat = labels.reshape({-1});
    ops::backend_of(flat).check_index(
        flat, {.op = "one_hot", .what = "labels", .bound_name = "num_classes", .bound = num_classes});
  }
  Tensor classes = arange(num_classes, TensorOptions(DType::I64, labels.device()));
  return eq(labels.unsqueeze(-1), classes).to(DType::I64);
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  profile::Range range("dropout");
  ops::check_defined(x, "dropout");
  EMBER_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  ops::check_floating(x, "dropout");
  if (p == 1.0) return mul(x, 0.0);
  // keep ~ Bernoulli(1 - p), scaled by 1 / (1 - p) so the expectation is unchanged.
  Tensor keep = make_empty(x.shape(), x.dtype(), x.device());
  Generator& g = gen ? *gen : default_generator();
  RandomParams rp{RandomKind::Bernoulli, 1.0 - p, 0.0, g.seed(), g.advance(static_cast<uint64_t>(x.numel())), &g};
  ops::backend_of(x).random(keep, rp);
  return mul(x, mul(keep, 1.0 / (1.0 - p)));
}

}  // namespace ember
