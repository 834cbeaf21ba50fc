// Tensor: a cheap handle to shared storage plus shape, strides, offset, dtype and autograd state.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <vector>

#include "ember/device.h"
#include "ember/dtype.h"
#include "ember/error.h"
#include "ember/export.h"
#include "ember/generator.h"
#include "ember/shape.h"

namespace ember {

struct TensorImpl;
namespace autograd {
struct Node;
}

// What a factory makes: dtype, device and whether autograd tracks it.
struct TensorOptions {
  DType dtype = DType::F32;
  Device device = Device::cpu();
  bool requires_grad = false;

  TensorOptions() = default;
  TensorOptions(DType dt) : dtype(dt) {}
  TensorOptions(Device d) : device(d) {}
  TensorOptions(DType dt, Device d, bool rg = false) : dtype(dt), device(d), requires_grad(rg) {}
};

class EMBER_API Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // Metadata.
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const;
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  TensorOptions options() const;
  bool is_contiguous() const;
  bool shares_storage(const Tensor& o) const;

  // Raw data: data_ptr() points at element 0 (storage + offset). data<T>() checks the dtype and
  // that the tensor is on the CPU.
  void* data_ptr() const;
  template <class T> T* data() const;

  // Views: share storage with this tensor (and record autograd nodes when tracked).
  Tensor view(const Shape& shape) const;     // requires compatible strides
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // transpose of a 2-D tensor
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor expand(const Shape& shape) const;

  // Copies.
  Tensor contiguous() const;  // this tensor when already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;  // this tensor when already there
  Tensor to(DType dtype) const;
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }

  // Reading values (synchronizes with the device).
  double item() const;
  template <class T> T item() const;
  template <class T> std::vector<T> to_vector() const;

  // In place (bump the version counter).
  Tensor& fill_(double value);
  Tensor& zero_();
  Tensor& copy_(const Tensor& src);

  // Autograd.
  bool requires_grad() const;
  Tensor& requires_grad_(bool requires_grad = true);
  bool is_leaf() const;
  Tensor grad() const;
  void set_grad(const Tensor& grad);
  void zero_grad();  // drops the gradient (grad = none)
  Tensor detach() const;
  std::shared_ptr<autograd::Node> grad_fn() const;
  // Runs backward from this tensor; `gradient` may be omitted for a one-element tensor.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  uint64_t version() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

EMBER_API std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Factories.
EMBER_API Tensor empty(const Shape& shape, const TensorOptions& opts = {});
EMBER_API Tensor zeros(const Shape& shape, const TensorOptions& opts = {});
EMBER_API Tensor ones(const Shape& shape, const TensorOptions& opts = {});
EMBER_API Tensor full(const Shape& shape, double value, const TensorOptions& opts = {});
EMBER_API Tensor zeros_like(const Tensor& t);
EMBER_API Tensor ones_like(const Tensor& t);
EMBER_API Tensor empty_like(const Tensor& t);
EMBER_API Tensor full_like(const Tensor& t, double value);
// [start, end) with step; dtype I64 unless opts say otherwise.
EMBER_API Tensor arange(double start, double end, double step = 1.0, const TensorOptions& opts = DType::I64);
EMBER_API Tensor arange(int64_t end, const TensorOptions& opts = DType::I64);
// Copies `values` into a new tensor of `shape` (the dtype follows T) on opts.device.
template <class T>
EMBER_API Tensor from_vector(const std::vector<T>& values, const Shape& shape, const TensorOptions& opts = {});
template <class T>
Tensor from_vector(const std::vector<T>& values) {
  return from_vector<T>(values, Shape{static_cast<int64_t>(values.size())});
}
// Wraps host memory without copying; the caller keeps it alive while the tensor is used.
EMBER_API Tensor from_blob(void* data, const Shape& shape, DType dtype);
// Random fills from the counter-based generator (default_generator() when gen is null).
EMBER_API Tensor rand(const Shape& shape, const TensorOptions& opts = {}, Generator* gen = nullptr);
EMBER_API Tensor randn(const Shape& shape, const TensorOptions& opts = {}, Generator* gen = nullptr);
EMBER_API Tensor randint(int64_t low, int64_t high, const Shape& shape, const TensorOptions& opts = DType::I64,
                         Generator* gen = nullptr);

}  // namespace ember
