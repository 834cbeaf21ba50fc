// The autograd engine: grad mode, recording, and backward by dependency counting.
#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "cpp/autograd/backward_runs.h"
#include "cpp/autograd/function.h"
#include "cpp/backend/backend.h"
#include "ember/ops.h"
#include "ember/profile.h"

namespace ember::autograd {
namespace {
thread_local bool g_grad_enabled = true;
thread_local bool g_inference = false;
std::atomic<bool> g_anomaly{false};
std::atomic<uint64_t> g_sequence{0};
}  // namespace

bool grad_mode_enabled() { return g_grad_enabled && !g_inference; }
void set_grad_mode(bool enabled) { g_grad_enabled = enabled; }
bool inference_mode_enabled() { return g_inference; }
InferenceModeGuard::InferenceModeGuard() : prev_grad_(g_grad_enabled), prev_inference_(g_inference) {
  g_grad_enabled = false;
  g_inference = true;
}
InferenceModeGuard::~InferenceModeGuard() {
  g_grad_enabled = prev_grad_;
  g_inference = prev_inference_;
}
void detect_anomaly(bool enabled) { g_anomaly = enabled; }
bool anomaly_enabled() { return g_anomaly; }

// ---- saved tensors ----

SavedTensor::SavedTensor(const Tensor& t, bool is_output) {
  if (!t.defined()) return;
  // An output is saved without its grad_fn: the node holding it must not keep itself alive.
  tensor_ = is_output ? make_view(t, t.shape(), t.strides(), t.offset()) : t;
  version_ = t.version();
}

Tensor SavedTensor::unpack(const char* op) const {
  if (tensor_.defined() && tensor_.version() != version_)
    throw Error(detail::str_cat("autograd: a tensor that ", op, " saved for backward (shape ",
                                shape_str(tensor_.shape()), ") was modified in place afterwards (version ",
                                tensor_.version(), ", saved at version ", version_,
                                "); clone() it before modifying it, or modify a copy"));
  return tensor_;
}

// ---- nodes ----

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor>&& grad_outputs) {
  if (!fn_)
    throw Error(detail::str_cat("autograd: backward through ", name_,
                                " a second time, but its saved tensors were freed after the first backward; pass "
                                "retain_graph=true to the first backward() to keep them"));
  return fn_(grad_outputs);
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grad_outputs) {
  const Tensor& g = grad_outputs[0];
  if (!g.defined()) return {};
  NoGradGuard no_grad;
  TensorImpl& leaf = *leaf_;
  if (!leaf.grad.defined()) {
    // A fresh, contiguous copy: the incoming gradient may alias a tensor the caller still owns.
    // Unless nothing else can reach it (as PyTorch's AccumulateGrad steals such a gradient): the
    // last handle to a packed buffer of its own, with no history, the leaf's shape and dtype. Then
    // it becomes the gradient itself, saving a copy of every parameter per step.
    const TensorImpl* gi = g.impl();
    const bool sole = g.impl_ptr().use_count() == 1 && gi->storage.use_count() == 1 && gi->storage->owner &&
                      !gi->grad_fn && !gi->requires_grad && gi->offset == 0 && g.is_contiguous() &&
                      gi->dtype == leaf.dtype && gi->shape == leaf.shape && gi->storage->device == leaf.storage->device &&
                      gi->storage->nbytes == static_cast<size_t>(gi->numel()) * dtype_size(gi->dtype);
    leaf.grad = sole ? g : g.clone();
  } else {
    Tensor acc = leaf.grad;
    add_(acc, g);
  }
  if (!leaf.post_accumulate_hooks.empty()) {
    // A copy: a hook may register or remove hooks on this leaf.
    const auto hooks = leaf.post_accumulate_hooks;
    const Tensor handle(leaf_);
    for (const auto& [id, hook] : hooks) hook(handle);
  }
  return {};
}

uint64_t register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor&)> hook) {
  EMBER_CHECK(leaf.defined() && leaf.is_leaf() && leaf.requires_grad(),
              "register_post_accumulate_grad_hook: expected a leaf tensor that requires grad, got ",
              !leaf.defined() ? std::string("an undefined tensor")
                              : detail::str_cat(leaf.is_leaf() ? "a leaf that does not require grad" : "a non-leaf",
                                                " of shape ", shape_str(leaf.shape())));
  EMBER_CHECK(hook != nullptr, "register_post_accumulate_grad_hook: the hook is empty");
  static std::atomic<uint64_t> next_id{1};
  const uint64_t id = next_id++;
  leaf.impl()->post_accumulate_hooks.emplace_back(id, std::move(hook));
  return id;
}

void remove_post_accumulate_grad_hook(const Tensor& leaf, uint64_t id) {
  if (!leaf.defined()) return;
  auto& hooks = leaf.impl()->post_accumulate_hooks;
  std::erase_if(hooks, [id](const auto& h) { return h.first == id; });
}

// ---- recording ----

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_mode_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  std::shared_ptr<Node> acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    // The highest priority (as PyTorch): a leaf's gradient is accumulated, and its hooks run, as
    // soon as it is complete, not after the rest of backward (DistributedDataParallel starts its
    // all-reduces from there).
    acc->sequence_nr = UINT64_MAX;
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}

void check_finite(const Tensor& t, const std::string& what) {
  if (!g_anomaly || !t.defined() || !is_floating(t.dtype()) || t.numel() == 0) return;
  NoGradGuard no_grad;
  Tensor finite = isfinite(t).to(DType::I64);
  const int64_t count = sum(finite).item<int64_t>();
  if (count != t.numel())
    throw Error(detail::str_cat("anomaly detected: ", what, " produced ", t.numel() - count,
                                " NaN/Inf values (shape ", shape_str(t.shape()), ")"));
}

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn) {
  // Nothing here builds a string unless anomaly mode asks for the check (and its message).
  if (g_anomaly)
    for (const Tensor& out : outputs) check_finite(out, detail::str_cat(name, " (forward)"));
  auto node = std::make_shared<FunctionNode>(name, std::move(fn));
  node->sequence_nr = g_sequence++;
  node->next_edges.reserve(inputs.size());
  for (const Tensor& in : inputs) node->next_edges.push_back(gradient_edge(in));
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* impl = outputs[i].impl();
    if (!is_floating(impl->dtype)) continue;
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = static_cast<uint32_t>(i);
  }
  // Integer outputs (indices) take no gradient but keep their slot.
  node->output_options.resize(outputs.size());
  node->output_shapes.resize(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    node->output_options[i] = outputs[i].options();
    node->output_shapes[i] = outputs[i].shape();
  }
}

void check_inplace(const Tensor& t, const char* op) {
  if (grad_mode_enabled() && t.requires_grad() && t.is_leaf())
    throw Error(detail::str_cat(op, ": a leaf tensor that requires grad (shape ", shape_str(t.shape()),
                                ") cannot be modified in place while autograd records; wrap the update in "
                                "NoGradGuard or detach() it"));
}

// ---- backward ----

namespace {
std::atomic<uint64_t> g_backward_runs{0};
}  // namespace

uint64_t backward_runs() { return g_backward_runs.load(std::memory_order_relaxed); }

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  g_backward_runs.fetch_add(1, std::memory_order_relaxed);
  // Each node's pending gradient slots, and how many edges still have to deliver into it.
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::unordered_map<Node*, int64_t> dependencies;
  std::unordered_map<Node*, std::shared_ptr<Node>> owners;

  std::vector<Edge> root_edges;
  for (size_t i = 0; i < roots.size(); ++i) {
    Edge e = gradient_edge(roots[i]);
    EMBER_CHECK(e.valid(), "backward: tensor of shape ", shape_str(roots[i].shape()),
                " does not require grad and has no grad_fn; call requires_grad_() on the inputs before computing it");
    root_edges.push_back(e);
  }

  // Count dependencies over everything reachable from the roots.
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  for (const Edge& e : root_edges) {
    if (seen.insert(e.node.get()).second) {
      stack.push_back(e.node.get());
      owners[e.node.get()] = e.node;
    }
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.valid()) continue;
      dependencies[e.node.get()]++;
      if (seen.insert(e.node.get()).second) {
        stack.push_back(e.node.get());
        owners[e.node.get()] = e.node;
      }
    }
  }

  auto deliver = [&](const Edge& e, const Tensor& g) {
    std::vector<Tensor>& buf = buffers[e.node.get()];
    if (buf.empty()) buf.resize(std::max<size_t>(e.node->output_shapes.size(), e.input_nr + 1));
    if (!g.defined()) return;
    Tensor& slot = buf[e.input_nr];
    if (!slot.defined()) {
      slot = g;
    } else {
      NoGradGuard no_grad;
      slot = add(slot, g);
    }
  };
  for (size_t i = 0; i < root_edges.size(); ++i) deliver(root_edges[i], grads[i]);

  // Later-recorded nodes first among the ready ones (a reverse topological order).
  auto later = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later)> ready(later);
  for (const Edge& e : root_edges)
    if (dependencies[e.node.get()] == 0 && !buffers[e.node.get()].empty()) {
      ready.push(e.node.get());
      buffers[e.node.get()].shrink_to_fit();
    }
  std::unordered_set<Node*> queued;
  for (const Edge& e : root_edges) queued.insert(e.node.get());

  NoGradGuard no_grad;  // backward formulas are not themselves recorded
  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    std::vector<Tensor> in = std::move(buffers[node]);
    buffers.erase(node);
    in.resize(std::max(in.size(), node->output_shapes.size()));
    bool any = false;
    for (const Tensor& g : in) any = any || g.defined();
    std::vector<Tensor> out;
    if (any) {
      for (size_t i = 0; i < node->output_shapes.size(); ++i)
        if (!in[i].defined() && is_floating(node->output_options[i].dtype))
          in[i] = zeros(node->output_shapes[i], node->output_options[i]);
      {
        // "<op> backward", built in a per-thread buffer that keeps its capacity (no allocation per node).
        thread_local std::string range_name;
        range_name.assign(node->name()).append(" backward");
        profile::Range range(range_name.c_str());
        out = node->apply(std::move(in));
      }
      if (!retain_graph) node->release_saved();
      if (g_anomaly)
        for (const Tensor& g : out) check_finite(g, detail::str_cat(node->name(), " (backward)"));
    }
    out.resize(node->next_edges.size());
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.valid()) continue;
      deliver(e, out[i]);
      if (--dependencies[e.node.get()] == 0) ready.push(e.node.get());
    }
  }
}

}  // namespace ember::autograd

namespace ember {

using autograd::run_backward;

bool Tensor::requires_grad() const { return defined() && impl_->requires_grad; }

Tensor& Tensor::requires_grad_(bool requires_grad) {
  EMBER_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad (this one was computed by ",
              impl_->grad_fn->name(), "); use detach().requires_grad_() for a new leaf");
  EMBER_CHECK(!requires_grad || is_floating(dtype()), "requires_grad_: only floating tensors can require grad, got ",
              dtype_name(dtype()));
  impl_->requires_grad = requires_grad;
  return *this;
}

bool Tensor::is_leaf() const { return defined() && impl_->grad_fn == nullptr; }
Tensor Tensor::grad() const { return defined() ? impl_->grad : Tensor(); }
void Tensor::set_grad(const Tensor& grad) {
  EMBER_CHECK(!grad.defined() || grad.shape() == shape(), "set_grad: gradient shape ", shape_str(grad.shape()),
              " does not match tensor shape ", shape_str(shape()));
  impl_->grad = grad;
}
void Tensor::zero_grad() { impl_->grad = Tensor(); }
std::shared_ptr<autograd::Node> Tensor::grad_fn() const { return defined() ? impl_->grad_fn : nullptr; }

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  Tensor g = gradient;
  if (!g.defined()) {
    EMBER_CHECK(numel() == 1, "backward: the gradient can be implied only for a one-element tensor, but this one has "
                              "shape ", shape_str(shape()), "; pass a gradient of that shape");
    g = ones(shape(), options());
  } else {
    EMBER_CHECK(g.shape() == shape(), "backward: gradient shape ", shape_str(g.shape()), " does not match tensor shape ",
                shape_str(shape()));
    EMBER_CHECK(g.device() == device(), "backward: gradient is on ", g.device().str(), " but the tensor is on ",
                device().str());
  }
  run_backward({*this}, {g}, retain_graph);
}

}  // namespace ember
