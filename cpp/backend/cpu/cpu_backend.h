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
  void* allocate(size_t nbytes, Device device) override;
  void deallocate(void* ptr, size_t nbytes, Device device) override;
  void synchronize(Device) override {}
  void fill(const Tensor& out, double value) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void transfer(const Tensor& dst, const Tensor& src) override;
  void random(const Tensor& out, const RandomParams& p) override;
  void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) override;
  void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p) override;
  void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) override;
  void reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner) override;
  void gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) override;
  void softmax(const Tensor& out, const Tensor& in, bool log) override;
  void softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log) override;
  void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& labels,
                             const CrossEntropyOptions& o) override;
  void cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                              const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o) override;
  void check_index(const Tensor& index, const IndexCheck& c) override;
  void index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                    int64_t inner) override;
  void index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                 int64_t inner) override;
  void optimizer_step(const OptimizerStep& s) override;
  void random_permutation(const Tensor& out, uint64_t seed, uint64_t counter) override;
  void gather_batch(const Tensor& x, const Tensor& y, const Tensor& images, const Tensor& labels, const Tensor& order,
                    const BatchParams& p) override;
  // ---- convolution (conv primitives block): oneDNN for f32, im2col + GEMM for f64 (cpu_conv.cpp) ----
  void conv2d_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const ConvParams& p) override;
  void conv2d_backward_data(const Tensor& dx, const Tensor& dy, const Tensor& w, const ConvParams& p) override;
  void conv2d_backward_weight(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                              const ConvParams& p) override;
  // ---- end of the conv primitives block ----
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
