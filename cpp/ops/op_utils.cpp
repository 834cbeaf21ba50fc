// Helpers shared by the op families.
#include "cpp/ops/op_utils.h"

#include <algorithm>

namespace ember::ops {

void check_defined(const Tensor& t, const char* op, const char* what) {
  EMBER_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  EMBER_CHECK(a.device() == b.device(), op, ": tensors are on different devices (", a.device().str(), " and ",
              b.device().str(), "; shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
              "); move one with .to(device)");
}

void check_floating(const Tensor& t, const char* op) {
  EMBER_CHECK(is_floating(t.dtype()), op, ": expected a floating tensor (f32 or f64, or bf16/f16) but got ",
              dtype_name(t.dtype()), " (shape ", shape_str(t.shape()), "); convert it with .to(DType::F32)");
}

void check_dtype(const Tensor& t, DType dt, const char* op, const char* what) {
  EMBER_CHECK(t.dtype() == dt, op, ": ", what, " must be ", dtype_name(dt), " but is ", dtype_name(t.dtype()),
              " (shape ", shape_str(t.shape()), ")");
}

DType promote(DType a, DType b) {
  if (a == b) return a;
  // bf16 with f16: neither holds the other (PyTorch gives f32).
  if ((a == DType::BF16 && b == DType::F16) || (a == DType::F16 && b == DType::BF16)) return DType::F32;
  auto rank = [](DType d) {
    switch (d) {
      case DType::Bool: return 0;
      case DType::U8: return 1;
      case DType::I32: return 2;
      case DType::I64: return 3;
      case DType::BF16:
      case DType::F16: return 4;
      case DType::F32: return 5;
      case DType::F64: return 6;
      default: return 7;
    }
  };
  EMBER_CHECK(rank(a) < 7 && rank(b) < 7, "ops on ", dtype_name(a), " and ", dtype_name(b),
              " are not supported; convert to f32 first");
  return rank(a) > rank(b) ? a : b;
}

Tensor to_floating(const Tensor& t) { return is_floating(t.dtype()) ? t : t.to(DType::F32); }

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.size(i) != 1)) dims.push_back(i);
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  if (lead > 0 || r.shape() != shape) r = r.reshape(shape);
  return r;
}

std::vector<int64_t> reduce_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t i = 0; i < x.dim(); ++i) out.push_back(i);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, x.dim(), op));
  std::sort(out.begin(), out.end());
  EMBER_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dim listed twice in the reduction dims");
  return out;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
  Shape out;
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    const bool reduced = std::find(dims.begin(), dims.end(), i) != dims.end();
    if (!reduced) out.push_back(shape[i]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

Tensor unsqueeze_dims(const Tensor& g, const std::vector<int64_t>& dims, int64_t ndim) {
  if (g.dim() == ndim) return g;
  Shape s;
  size_t gi = 0;
  for (int64_t i = 0; i < ndim; ++i) {
    if (std::find(dims.begin(), dims.end(), i) != dims.end()) s.push_back(1);
    else s.push_back(g.shape()[gi++]);
  }
  return g.reshape(s);
}

}  // namespace ember::ops
