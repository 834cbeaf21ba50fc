// What the optim sources share: the fused update's plumbing, the serialized names of every
// option struct's fields, and the option checks.
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
using SlotsFn = std::function<std::vector<Slot>(const AnyOptions&)>;
// The step-independent inputs of a group's scalars (its options); optim_math::hyper_at adds the
// step count, on the host for an eager update and on the device inside a captured one.
using InputsFn = std::function<OptimizerInputs(const AnyOptions&)>;

// A capturable optimizer's state (Optimizer::set_capturable): the host scalars prepare_step()
// computed for the next step(), and per (device, dtype) of a CUDA batch the device tables that the
// update's first kernel computes its scalars from (backend.h's OptimizerStep), with what the host
// knows they hold once the queued work has run, so that only what changed is written.
struct Optimizer::CaptureState {
  bool preparing = false;  // prepare_step() is running step(): fused_step does the host part only
  bool prepared = false;   // the next fused_step uses `hyper` instead of advancing the steps
  std::vector<OptimizerHyper> hyper;  // in the order fused_step visits the parameters with a gradient
  struct DeviceTables {
    std::pair<Device, DType> key;
    Tensor groups;  // F64 [capacity, kOptimizerInputFields]: row r is the batch's r-th param group
    Tensor params;  // F64 [capacity, kOptimizerParamFields]: row i is the batch's i-th parameter
    Tensor hyper;   // U8 [capacity * sizeof(OptimizerHyper)]: written by the scalars kernel, read by the update
    std::vector<OptimizerInputs> groups_known;
    std::vector<OptimizerParamScalars> params_known;
  };
  std::vector<DeviceTables> device;
  // Tables replaced because a batch outgrew them: kept, since a captured graph may still hold their
  // addresses (its replays would read stale values, never freed memory; capture with the
  // parameters that have gradients at every replay).
  std::vector<Tensor> retired;
};

struct OptimizerAccess {
  // Increments the step of every parameter that has a gradient, creates missing buffers, and
  // runs one backend update per (device, dtype).
  static void fused_step(Optimizer& o, OptimizerAlgo algo, const SlotsFn& slots, const InputsFn& inputs);
};

// Runs one OptimizerStep on `device`'s backend.
void run_backend_step(Device device, const OptimizerStep& step);

// One field of an options struct under its serialized name (the names ember's state_dict and
// checkpoints have always used; a flag is stored as 0 or 1). Exactly one of the pointers is set.
template <class O>
struct Field {
  const char* name;
  double O::*number = nullptr;
  bool O::*flag = nullptr;
};
// Every field of each struct, in declaration order.
template <class O>
const std::vector<Field<O>>& fields();

// By-name access over any alternative (the serialized form and Optimizer::option).
const char* options_type_name(const AnyOptions& o);
Hyperparameters to_map(const AnyOptions& o);
// The field names of `o`'s type.
std::vector<std::string> field_names(const AnyOptions& o);
// Reads field `name` (false when `o`'s type has none).
bool get_field(const AnyOptions& o, const std::string& name, double& out);
// Sets field `name`; a flag must be 0 or 1. Throws ember::Error (prefixed by `who`) on a bad
// value or unknown name.
void set_field(AnyOptions& o, const std::string& name, double value, const std::string& who);

// Option checks: `who` is "<optimizer>: <where>" in the message.
void check_finite(const std::string& who, const char* key, double v);
void check_min(const std::string& who, const char* key, double v, double lo);

}  // namespace ember::optim
