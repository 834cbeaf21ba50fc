// ember-mnist's CUDA-graph training step (on by default on a GPU; --no-cuda-graph turns it off).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config.h"
#include "ember/ember.h"

namespace mnist {

// Why this run's steps cannot be captured (a flag that reads values back every step, or needs work
// outside the capture), or nullopt when they can; `device` is the run's device.
std::optional<std::string> cuda_graph_unavailable(const Config& cfg, const ember::Device& device);

// A training step (zero_grad, forward, loss, backward, optimizer step) as a CUDA graph: the first
// step runs eagerly (warm-up: cuBLASLt's algorithms, the optimizer's buffers), the second is
// captured into a graph and replayed, and each later step copies its batch into the graph's input
// tensors and replays it. A batch of another shape (an epoch's last, partial batch) runs eagerly.
// Dropout (the CNN) is captured: each replay draws new masks from the generator's device-resident
// counter (ember/cuda.h). If capture fails (something a graph cannot hold, named in the error),
// the step runs eagerly, and so do the rest, after a one-line notice saying why.
class GraphedStep {
 public:
  GraphedStep(ember::nn::Module& model, ember::optim::Optimizer& opt, ember::Device device, bool quiet);
  ~GraphedStep();

  struct Result {
    ember::Tensor logits, loss;  // a replay's are the graph's output tensors, overwritten by the next
  };
  // One whole step on (x, y), the optimizer's update included.
  Result step(const ember::Tensor& x, const ember::Tensor& y);

  bool graphed() const { return graph_ != nullptr && !failed_; }
  int64_t replays() const { return replays_; }

 private:
  Result eager(const ember::Tensor& x, const ember::Tensor& y);
  void bind_graph_grads();

  ember::nn::Module& model_;
  ember::optim::Optimizer& opt_;
  ember::Device device_;
  bool quiet_;
  int64_t steps_ = 0, replays_ = 0;
  bool failed_ = false;
  std::unique_ptr<ember::cuda::Graph> graph_;
  ember::Tensor static_x_, static_y_, static_logits_, static_loss_;
  std::vector<ember::Tensor> params_, static_grads_;
};

}  // namespace mnist
