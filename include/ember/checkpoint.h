// Training checkpoints: model, optimizer, scheduler, counters and generator in one safetensors
// file, written atomically, so a resumed run continues exactly where the saved one stopped.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "ember/export.h"
#include "ember/generator.h"
#include "ember/nn.h"
#include "ember/optim.h"

namespace ember {

// The loop's counters, plus any strings the caller wants kept with them.
struct TrainingState {
  int64_t epoch = 0;
  int64_t step = 0;
  std::map<std::string, std::string> extra;
};

// Writes `path` as a safetensors file any reader opens:
//   tensors     the model's state_dict under its own names ("0.weight", "features.3.running_mean"),
//               the optimizer's state as "optimizer.state.<i>.<buffer>" and "optimizer.state.<i>.step" (I64)
//   __metadata__ "format" = "ember-checkpoint", "format_version" = "1", "epoch", "step",
//               "optimizer" (JSON: type and param groups' hyper-parameters), "scheduler" (JSON, when
//               given), "generator" (JSON: seed and offset), "model" (the printed module tree),
//               "model_type", and "extra.<key>" for each TrainingState::extra entry.
// The file is replaced atomically: a failed write leaves the previous checkpoint at `path` intact.
EMBER_API void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer& optimizer,
                               const optim::LRScheduler* scheduler, const TrainingState& state,
                               const Generator& generator = default_generator());

// Restores everything save_checkpoint wrote into objects built the same way (same architecture,
// optimizer type and groups, scheduler type) and returns the counters. The model's state must
// match strictly. If any part does not fit, the model, optimizer and scheduler are restored to
// what they were and ember::Error says what did not fit. A checkpoint saved with a scheduler may
// be loaded with `scheduler` null (its state is then ignored); one saved without cannot fill one.
EMBER_API TrainingState load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& optimizer,
                                        optim::LRScheduler* scheduler, Generator& generator = default_generator());

}  // namespace ember
