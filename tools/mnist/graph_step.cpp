// ember-mnist's CUDA-graph training step: warm-up, capture, replay (see graph_step.h).
#include "graph_step.h"

#include <cstdio>

namespace mnist {

using namespace ember;

std::optional<std::string> cuda_graph_unavailable(const Config& cfg, const Device& device) {
  if (!device.is_cuda()) return "on the CPU";
  if (cfg.no_cuda_graph) return "--no-cuda-graph";
  if (cfg.skip_nonfinite) return "--skip-nonfinite reads a flag back before every update";
  if (cfg.detect_anomaly) return "--detect-anomaly checks every op's output on the host";
  if (cfg.distributed) return "--distributed all-reduces gradients from backward hooks outside the capture";
  if (cfg.precision == "bf16" || cfg.precision == "fp16")
    return "--precision " + cfg.precision + ": autocast steps (and fp16's loss scaler, which decides on the host) are not captured";
  if (cfg.profile) return "--profile times each op with events that a replayed graph cannot record";
  return std::nullopt;
}

GraphedStep::GraphedStep(nn::Module& model, optim::Optimizer& opt, Device device, bool quiet)
    : model_(model), opt_(opt), device_(device), quiet_(quiet), params_(model.parameters()) {
  // The update's scalars are read from device memory, so the captured update follows the schedule.
  opt_.set_capturable(true);
}

GraphedStep::~GraphedStep() {
  // The graph's output tensors (and the gradients it wrote) must go before its pool does.
  static_logits_ = Tensor();
  static_loss_ = Tensor();
  static_grads_.clear();
  for (Tensor& p : params_) p.zero_grad();
  graph_.reset();
}

GraphedStep::Result GraphedStep::eager(const Tensor& x, const Tensor& y) {
  Tensor logits = model_(x);
  Tensor loss = cross_entropy(logits, y);
  opt_.zero_grad();
  loss.backward();
  opt_.step();
  return {logits, loss};
}

// After an eager step the parameters hold that step's gradients; a replay writes the graph's.
void GraphedStep::bind_graph_grads() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (static_grads_[i].defined()) params_[i].set_grad(static_grads_[i]);
}

GraphedStep::Result GraphedStep::step(const Tensor& x, const Tensor& y) {
  ++steps_;
  if (failed_ || steps_ == 1) return eager(x, y);  // the first step is the warm-up
  if (!graph_) {
    static_x_ = x.clone();
    static_y_ = y.clone();
    opt_.prepare_step();  // the host step counts; options written to the device tables before capture
    auto graph = std::make_unique<cuda::Graph>(device_.index);
    try {
      graph->capture([&] {
        static_logits_ = model_(static_x_);
        static_loss_ = cross_entropy(static_logits_, static_y_);
        opt_.zero_grad();
        static_loss_.backward();
        opt_.step();
      });
    } catch (const Error& e) {
      // Nothing captured ran: this step runs eagerly (its step() uses the scalars prepared above),
      // and so does the rest of the run. The failed graph's pool stays with the run (tensors made
      // during the attempt may still point into it).
      if (!quiet_) std::printf("ember-mnist: CUDA graph capture failed, training eagerly: %s\n", e.what());
      failed_ = true;
      graph_ = std::move(graph);
      static_logits_ = Tensor();
      static_loss_ = Tensor();
      return eager(x, y);
    }
    graph_ = std::move(graph);
    static_grads_.clear();
    for (const Tensor& p : params_) static_grads_.push_back(p.grad());
    graph_->replay();  // capture recorded this step without running it
    ++replays_;
    return {static_logits_, static_loss_};
  }
  if (x.shape() != static_x_.shape() || y.shape() != static_y_.shape()) return eager(x, y);
  static_x_.copy_(x);
  static_y_.copy_(y);
  bind_graph_grads();
  opt_.prepare_step();
  graph_->replay();
  ++replays_;
  return {static_logits_, static_loss_};
}

}  // namespace mnist
