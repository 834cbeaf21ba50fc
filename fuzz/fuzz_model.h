// The objects the checkpoint fuzz target loads into, and make_seeds saves from: a small MLP, Adam
// and a StepLR, built the same way every time.
#pragma once
#include <memory>

#include "ember/checkpoint.h"

namespace ember::fuzz {

struct CheckpointObjects {
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<optim::Adam> opt;
  std::unique_ptr<optim::StepLR> sched;

  CheckpointObjects() {
    Generator g(7);
    model = nn::sequential({std::make_shared<nn::Linear>(3, 4, nn::LinearOptions{.generator = &g}),
                            std::make_shared<nn::ReLU>(),
                            std::make_shared<nn::Linear>(4, 2, nn::LinearOptions{.generator = &g})});
    opt = std::make_unique<optim::Adam>(model->parameters(), optim::AdamOptions{.lr = 0.01});
    sched = std::make_unique<optim::StepLR>(*opt, 2, 0.5);
  }
};

}  // namespace ember::fuzz
