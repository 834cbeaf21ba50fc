// ember-mnist's training checkpoints: ember's safetensors training checkpoint plus the trainer's
// own progress (epoch, step within the epoch, per-epoch history) and the flags that shape the model.
#pragma once
#include <string>
#include <utility>
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

// What a resumed run must share with the run that saved it, as (flag, value) pairs: the dataset's
// identity (counts, image size and a checksum of its bytes, not its path), batch size, seed, learning
// rate, weight decay, augmentation, normalisation and, with a scheduler, the epoch count. Resuming
// with any of these changed would not continue the saved run (batch size shifts where the saved step
// falls, a seed reorders the epoch, another dataset trains another model), so it is refused. Free to
// change on --resume: --epochs (with --scheduler none: train further or stop sooner), --device,
// --threads, --deterministic, --save, --metrics-out and --quiet.
using RunSettings = std::vector<std::pair<std::string, std::string>>;

void save_training_checkpoint(const std::string& path, const ember::nn::Module& model, const ember::optim::Optimizer& opt,
                              const ember::optim::LRScheduler* sched, const Progress& progress, const Config& cfg,
                              const RunSettings& settings);
// opt and sched may be null (evaluation: only the model must match). Throws ember::Error when the
// checkpoint was made for a different model (hidden size, dataset shape) than `cfg` describes, or,
// when resuming, by a run whose settings differ from `settings` (each difference listed).
void load_training_checkpoint(const std::string& path, ember::nn::Module& model, ember::optim::Optimizer* opt,
                              ember::optim::LRScheduler* sched, Progress& progress, const Config& cfg,
                              const RunSettings& settings);

}  // namespace mnist
