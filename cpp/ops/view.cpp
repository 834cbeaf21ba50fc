// Views (reshape, transpose, slice, expand, ...) and copies (contiguous, clone), with their
// backward: a view's gradient is the incoming gradient mapped back through the same geometry.
#include <algorithm>
#include <numeric>
#include <optional>

#include "cpp/ops/op_utils.h"

namespace ember {
using autograd::record;
using ops::sum_to;

namespace {

// Strides that let `shape` view memory laid out as (old_shape, old_strides), if any (the
// algorithm PyTorch's view uses: split the old dims into contiguous chunks and map each chunk).
std::optional<Shape> view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& shape) {
  if (shape_numel(old_shape) == 0 || old_shape.empty()) return contiguous_strides(shape);
  Shape strides(shape.size());
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base = old_strides.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return strides;
}

// Resolves one -1 in `shape` against `numel`.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      EMBER_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      EMBER_CHECK(out[i] >= 0, op, ": invalid size ", out[i], " in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    EMBER_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(shape), " is invalid for ", numel,
                " elements");
    out[infer] = numel / known;
  }
  EMBER_CHECK(shape_numel(out) == numel, op, ": shape ", shape_str(shape), " is invalid for a tensor of ", numel,
              " elements");
  return out;
}

// Records a view whose gradient is `back(g)`.
Tensor finish_view(const Tensor& in, Tensor out, const char* name, std::function<Tensor(const Tensor&)> back) {
  if (autograd::any_requires_grad({&in}))
    record(name, {in}, {out}, [back = std::move(back)](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{back(g[0])};
    });
  return out;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  Shape s = infer_shape(shape, numel(), "view");
  std::optional<Shape> st = view_strides(this->shape(), strides(), s);
  EMBER_CHECK(st.has_value(), "view: shape ", shape_str(s), " is not compatible with the strides ",
              shape_str(strides()), " of a tensor of shape ", shape_str(this->shape()),
              "; use reshape() (which copies when needed) or contiguous() first");
  Shape in_shape = this->shape();
  return finish_view(*this, make_view(*this, s, *st, offset()), "view",
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = infer_shape(shape, numel(), "reshape");
  if (view_strides(this->shape(), strides(), s)) return view(s);
  return contiguous().view(s);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int64_t s = wrap_dim(start_dim, dim(), "flatten"), e = wrap_dim(end_dim, dim(), "flatten");
  EMBER_CHECK(s <= e, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim);
  Shape out(shape().begin(), shape().begin() + s);
  int64_t n = 1;
  for (int64_t i = s; i <= e; ++i) n *= shape()[i];
  out.push_back(n);
  out.insert(out.end(), shape().begin() + e + 1, shape().end());
  return reshape(out);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  EMBER_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: got ", dims.size(), " dims for a tensor of ", dim(),
              " dims (shape ", shape_str(shape()), ")");
  std::vector<int64_t> p(dims.size()), inverse(dims.size());
  std::vector<bool> used(dims.size(), false);
  Shape s(dims.size()), st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    p[i] = wrap_dim(dims[i], dim(), "permute");
    EMBER_CHECK(!used[p[i]], "permute: dim ", dims[i], " is repeated");
    used[p[i]] = true;
    s[i] = shape()[p[i]];
    st[i] = strides()[p[i]];
    inverse[p[i]] = static_cast<int64_t>(i);
  }
  return finish_view(*this, make_view(*this, s, st, offset()), "permute",
                     [inverse](const Tensor& g) { return g.permute(inverse); });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(static_cast<size_t>(dim()));
  std::iota(p.begin(), p.end(), 0);
  if (dim() == 0) return *this;
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::t() const {
  EMBER_CHECK(dim() <= 2, "t(): expects a tensor of at most 2 dims but got shape ", shape_str(shape()),
              "; use transpose(d0, d1)");
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  EMBER_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = shape()[d];
  auto clampi = [n](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + n : v, 0, n); };
  start = clampi(start);
  end = std::max(clampi(end), start);
  Shape s = shape(), st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Shape in_shape = shape();
  Tensor out = make_view(*this, s, st, offset() + start * strides()[d]);
  return finish_view(*this, out, "slice", [in_shape, d, start, end, step](const Tensor& g) {
    Tensor gi = zeros(in_shape, g.options());
    gi.slice(d, start, end, step).copy_(g);
    return gi;
  });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  EMBER_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
              ") is outside dim ", d, " of size ", n, " (shape ", shape_str(shape()), ")");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t n = shape()[d];
  EMBER_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", d, " of size ", n);
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape s = shape(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Shape in_shape = shape();
  return finish_view(*this, make_view(*this, s, st, offset()), "squeeze",
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::squeeze() const {
  Shape s, st;
  for (int64_t i = 0; i < dim(); ++i)
    if (shape()[i] != 1) {
      s.push_back(shape()[i]);
      st.push_back(strides()[i]);
    }
  Shape in_shape = shape();
  return finish_view(*this, make_view(*this, s, st, offset()), "squeeze",
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape(), st = strides();
  const int64_t stride = d < dim() ? shape()[d] * strides()[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  Shape in_shape = shape();
  return finish_view(*this, make_view(*this, s, st, offset()), "unsqueeze",
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::expand(const Shape& shape) const {
  EMBER_CHECK(static_cast<int64_t>(shape.size()) >= dim(), "expand: target ", shape_str(shape), " has fewer dims than ",
              shape_str(this->shape()));
  const size_t lead = shape.size() - static_cast<size_t>(dim());
  Shape s(shape.size()), st(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      EMBER_CHECK(shape[i] >= 0, "expand: invalid size ", shape[i], " in ", shape_str(shape));
      s[i] = shape[i];
      st[i] = 0;
      continue;
    }
    const int64_t have = this->shape()[i - lead];
    const int64_t want = shape[i] == -1 ? have : shape[i];
    EMBER_CHECK(have == want || have == 1, "expand: cannot expand shape ", shape_str(this->shape()), " to ",
                shape_str(shape), " (dim ", i, ": ", have, " to ", want, "; only size-1 dims expand)");
    s[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  if (s == this->shape()) return *this;
  Shape in_shape = this->shape();
  return finish_view(*this, make_view(*this, s, st, offset()), "expand",
                     [in_shape](const Tensor& g) { return sum_to(g, in_shape); });
}

// Casts and moves are differentiable, as in PyTorch: the gradient is cast back to the input's dtype
// or moved back to its device. A cast to an integer or bool dtype ends the graph there (such a
// tensor cannot require grad), also as in PyTorch.
Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = make_empty(shape(), dt, device());
  backend_for(device()).copy(out, *this);
  if (!is_floating(dt)) return out;
  const DType in_dtype = dtype();
  return finish_view(*this, out, "to", [in_dtype](const Tensor& g) { return g.to(in_dtype); });
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = make_empty(shape(), dtype(), d);
  Tensor src = detach().contiguous();  // the move records one node, below
  Backend& mover = d.is_cpu() ? backend_for(device()) : backend_for(d);
  mover.transfer(out, src);
  const Device in_device = device();
  return finish_view(*this, out, "to", [in_device](const Tensor& g) { return g.to(in_device); });
}

Tensor Tensor::clone() const {
  Tensor out = make_empty(shape(), dtype(), device());
  backend_for(device()).copy(out, *this);
  return finish_view(*this, out, "clone", [](const Tensor& g) { return g; });
}

}  // namespace ember
