// What the optim sources share: the fused update's plumbing and option checks.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/autograd.h"
#include "ember/optim.h"

namespace ember::optim {

// A state buffer an algorithm keeps: its name, its OptimizerParam slot, and its initial value
// (from_grad: written by the first update itself, like SGD's momentum buffer).
struct Slot {
  std::string name;
  int index = 0;
  double init = 0.0;
  bool from_grad = false;
};
using SlotsFn = std::function<std::vector<Slot>(const Hyperparameters&)>;
// The update's scalars for a group's options at step t (1 on the first update).
using HyperFn = std::function<OptimizerHyper(const Hyperparameters&, int64_t step)>;

struct OptimizerAccess {
  // Increments the step of every parameter that has a gradient, creates missing buffers, and
  // runs one backend update per (device, dtype).
  static void fused_step(Optimizer& o, OptimizerAlgo algo, const SlotsFn& slots, const HyperFn& hyper);
};

// Runs one OptimizerStep on `device`'s backend.
void run_backend_step(Device device, const OptimizerStep& step);

// Option checks: `type` names the optimizer in the message.
double require_option(const std::string& type, const Hyperparameters& o, const char* key);
void check_min(const std::string& type, const Hyperparameters& o, const char* key, double lo);
void check_flag(const std::string& type, const Hyperparameters& o, const char* key);
inline bool flag(const Hyperparameters& o, const char* key) { return o.at(key) != 0.0; }

}  // namespace ember::optim
