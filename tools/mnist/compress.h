// ember-mnist's model compression: --prune (magnitude or structured channel pruning, then
// fine-tuning) and --eval CKPT --int8 (post-training int8 quantisation against fp32).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "config.h"
#include "ember/ember.h"

namespace mnist::compress {

struct TrainHooks {
  // A fresh optimizer of the run's kind (--optimizer, --lr, --weight-decay) over `params`.
  std::function<std::unique_ptr<ember::optim::Optimizer>(const std::vector<ember::Tensor>& params)> make_optimizer;
  // Test-set accuracy in [0, 1] of a model.
  std::function<double(ember::nn::Module& model)> test_accuracy;
};

// --prune AMOUNT after training: prints the per-layer sparsity, parameter counts and sizes before
// and after, the test accuracy after pruning and after --finetune-epochs of fine-tuning (with the
// masks kept applied, or on the smaller dense model with --prune-structured); returns the model to
// report on (the pruned one).
std::shared_ptr<ember::nn::Module> prune_and_finetune(const Config& cfg, std::shared_ptr<ember::nn::Module> model,
                                                      ember::data::DataLoader& train, const TrainHooks& hooks);

// --eval CKPT --int8: quantises the loaded model (calibrated on --int8-calibration-images training
// images), and prints fp32 and int8 test accuracy, model sizes and inference images/s side by side.
// Returns the exit code (3 below --target-accuracy for the int8 model).
int evaluate_int8(const Config& cfg, ember::nn::Module& model, const ember::data::Mnist& ds,
                  ember::data::DataLoader& test, bool flatten);

}  // namespace mnist::compress
