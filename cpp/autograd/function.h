// Recording ops into the autograd graph: saved tensors with version checks, the node that runs a
// backward lambda, and record() which wires a new node to its inputs and outputs.
#pragma once
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "cpp/core/tensor_impl.h"
#include "ember/autograd.h"

namespace ember::autograd {

// A tensor kept for backward, with the version it had when saved. Outputs of the recording node
// are saved detached (sharing storage and version) so the node does not own itself.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, bool is_output = false);
  // Returns the tensor, or throws when it was modified in place since it was saved.
  Tensor unpack(const char* op) const;
  bool defined() const { return tensor_.defined(); }

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
};

using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

// A node whose backward is a lambda holding its saved tensors; release_saved() drops the lambda.
// `name` has static storage duration (a literal, or an op table's name): recording copies no string.
struct FunctionNode final : Node {
  FunctionNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override;
  std::string name() const override { return name_; }
  void release_saved() override { fn_ = nullptr; }

 private:
  const char* name_;
  BackwardFn fn_;
};

// Adds a leaf's gradient into its .grad().
struct AccumulateGrad final : Node {
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override;
  std::string name() const override { return "AccumulateGrad"; }
  std::shared_ptr<TensorImpl> leaf_;
};

// True when grad mode is on and any input requires grad: the op must record a node.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Records `name` with backward `fn` for `outputs` computed from `inputs`. fn returns one gradient
// per input (undefined where none). Checks outputs for NaN/Inf in anomaly mode. `name` must outlive
// the graph (a literal or an op table's name); no string is built unless anomaly mode is on.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn);

// The edge a gradient for `t` flows into (its grad_fn, or a leaf's AccumulateGrad), or none.
Edge gradient_edge(const Tensor& t);

// check_inplace(t, op) is declared in cpp/core/tensor_impl.h: Tensor's own in-place methods use it.

// In anomaly mode, throws naming `what` when `t` holds NaN or Inf.
void check_finite(const Tensor& t, const std::string& what);

// Runs backward from `roots` seeded with `grads`.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph);

}  // namespace ember::autograd
