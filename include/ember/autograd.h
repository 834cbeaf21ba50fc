// Autograd: grad mode guards, inference mode, anomaly detection and the graph's Node type.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::autograd {

// An edge from a node to input `input_nr` of `node` (the node that receives that gradient).
struct Edge {
  std::shared_ptr<Node> node;
  uint32_t input_nr = 0;
  bool valid() const { return node != nullptr; }
};

// One recorded operation. apply() maps the gradients of its outputs to the gradients of its
// inputs (one per next_edges entry; an undefined Tensor means "no gradient").
struct EMBER_API Node {
  virtual ~Node() = default;
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) = 0;
  virtual std::string name() const = 0;
  // Drops saved tensors once backward has passed (unless retain_graph).
  virtual void release_saved() {}

  std::vector<Edge> next_edges;
  uint64_t sequence_nr = 0;
  // Shape/dtype/device of each output, so a missing output gradient can be made as zeros.
  std::vector<TensorOptions> output_options;
  std::vector<Shape> output_shapes;
};

// Post-accumulate gradient hooks (PyTorch's register_post_accumulate_grad_hook): `hook(leaf)` runs
// each time backward has accumulated a gradient into `leaf.grad()` (once per backward pass that
// reaches the leaf), in the thread running backward, with grad mode off. `leaf` must be a leaf
// tensor that requires grad. Hooks run in registration order; an exception a hook throws ends
// backward with it. Returns an id for remove_post_accumulate_grad_hook (unknown ids are ignored).
EMBER_API uint64_t register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor& leaf)> hook);
EMBER_API void remove_post_accumulate_grad_hook(const Tensor& leaf, uint64_t id);

EMBER_API bool grad_mode_enabled();
EMBER_API void set_grad_mode(bool enabled);

// Disables recording in its scope.
class EMBER_API NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_mode_enabled()) { set_grad_mode(false); }
  ~NoGradGuard() { set_grad_mode(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Enables recording in its scope (inside a NoGradGuard, for example).
class EMBER_API EnableGradGuard {
 public:
  EnableGradGuard() : prev_(grad_mode_enabled()) { set_grad_mode(true); }
  ~EnableGradGuard() { set_grad_mode(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

// Inference: records nothing, and no EnableGradGuard inside it turns recording back on.
EMBER_API bool inference_mode_enabled();
class EMBER_API InferenceModeGuard {
 public:
  InferenceModeGuard();
  ~InferenceModeGuard();
  InferenceModeGuard(const InferenceModeGuard&) = delete;
  InferenceModeGuard& operator=(const InferenceModeGuard&) = delete;

 private:
  bool prev_grad_;
  bool prev_inference_;
};

// Anomaly mode: the first op whose forward output or backward gradient holds NaN/Inf raises
// ember::Error naming the op. Costs a check (and a device sync) per op: for debugging.
EMBER_API void detect_anomaly(bool enabled);
EMBER_API bool anomaly_enabled();

}  // namespace ember::autograd
