// The CPU backend: the reference implementation of every primitive in backend.h.
#pragma once
#include <array>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/backend/dtype_visit.h"
#include "cpp/core/tensor_impl.h"

namespace ember {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  bool supports(Primitive p) const override { return static_cast<int>(p) >= 0 && static_cast<int>(p) < kPrimitiveCount; }
  // Every primitive of primitives.def: one the CPU does not define is a link error.
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) RET NAME PARAMS override;
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
};

namespace cpu {

using ember::visit_dtype;  // dtype_visit.h, shared with the CUDA launchers
using ember::visit_floating;

// Visits every element of `shape`, passing f the element offsets of N operands with the given
// strides. All-contiguous operands take a flat loop.
template <size_t N, class F>
void for_each_offset(const Shape& shape, const std::array<const Shape*, N>& strides, F&& f) {
  const int64_t total = shape_numel(shape);
  if (total == 0) return;
  bool flat = true;
  for (size_t k = 0; k < N; ++k) flat = flat && compute_contiguous(shape, *strides[k]);
  if (flat) {
    for (int64_t i = 0; i < total; ++i) {
      std::array<int64_t, N> o;
      o.fill(i);
      f(o);
    }
    return;
  }
  const int64_t nd = static_cast<int64_t>(shape.size());
  std::vector<int64_t> idx(nd, 0);
  std::array<int64_t, N> base{};
  const int64_t inner = shape[nd - 1];
  std::array<int64_t, N> inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = (*strides[k])[nd - 1];
  for (;;) {
    std::array<int64_t, N> o = base;
    for (int64_t j = 0; j < inner; ++j) {
      f(o);
      for (size_t k = 0; k < N; ++k) o[k] += inner_stride[k];
    }
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) base[k] += (*strides[k])[d];
      if (idx[d] < shape[d]) break;
      for (size_t k = 0; k < N; ++k) base[k] -= (*strides[k])[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

template <class T>
T* ptr(const Tensor& t) {
  return reinterpret_cast<T*>(t.impl()->data());
}

}  // namespace cpu
}  // namespace ember
