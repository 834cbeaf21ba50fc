// ember-mnist's training checkpoints: ember's safetensors training checkpoint plus the trainer's
// own progress (epoch, step within the epoch, per-epoch history) and the flags that shape the model.
#pragma once
#include <string>
#include <vector>

#include "config.h"
#include "ember/nn.h"
#include "ember/optim.h"
#include "report.h"

namespace mnist {

struct Progress {
  int64_t epoch = 0;          // epochs completed
  int64_t step_in_epoch = 0;  // steps done in the interrupted epoch (0 at an epoch boundary)
  std::vector<EpochStats> history;
};

void save_training_checkpoint(const std::string& path, const ember::nn::Module& model, const ember::optim::Optimizer& opt,
                              const ember::optim::LRScheduler* sched, const Progress& progress, const Config& cfg);
// opt and sched may be null (evaluation). Throws ember::Error when the checkpoint was made for a
// different model (hidden size, dataset shape) than `cfg` describes.
void load_training_checkpoint(const std::string& path, ember::nn::Module& model, ember::optim::Optimizer* opt,
                              ember::optim::LRScheduler* sched, Progress& progress, const Config& cfg);

}  // namespace mnist
