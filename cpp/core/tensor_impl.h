// TensorImpl and Storage: what a Tensor handle points at (internal to libember).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "ember/tensor.h"

namespace ember {

class Backend;

// A buffer on one device, shared by every view of it. The version counter lives here so that
// every view sees in-place writes made through any other view.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Backend* owner = nullptr;  // frees `data` when set; null for borrowed memory (from_blob)
  std::atomic<uint64_t> version{0};

  Storage(void* d, size_t n, Device dev, Backend* b) : data(d), nbytes(n), device(dev), owner(b) {}
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;

  // Autograd state. A leaf that requires grad has no grad_fn; a non-leaf has grad_fn and
  // output_nr (which of the node's outputs it is).
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;
  uint32_t output_nr = 0;
  std::weak_ptr<autograd::Node> grad_accumulator;  // a leaf's AccumulateGrad node, while alive
  bool retains_grad = false;
  // Run by AccumulateGrad after each accumulation into `grad` (autograd.h), with their ids.
  std::vector<std::pair<uint64_t, std::function<void(const Tensor&)>>> post_accumulate_hooks;

  int64_t numel() const { return shape_numel(shape); }
  char* data() const { return static_cast<char*>(storage->data) + offset * static_cast<int64_t>(dtype_size(dtype)); }
};

// Makes a tensor over `storage` with the given geometry (no autograd state).
std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset,
                                      DType dtype);
// Allocates an uninitialized contiguous tensor.
Tensor make_empty(const Shape& shape, DType dtype, Device device);
// A view of `t`'s storage with new geometry (no autograd recording).
Tensor make_view(const Tensor& t, Shape shape, Shape strides, int64_t offset);
bool compute_contiguous(const Shape& shape, const Shape& strides);

namespace autograd {
// Throws when an in-place op would write into a tensor autograd must protect: a leaf that
// requires grad, while grad mode is on (as PyTorch refuses). Defined with the engine; declared
// here so Tensor::fill_/zero_/copy_ (core) and the in-place ops (ops) share it.
void check_inplace(const Tensor& t, const char* op);
}  // namespace autograd

}  // namespace ember
