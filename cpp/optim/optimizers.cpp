// SGD, Adam, AdamW, RMSprop and Adagrad: their options, checks, state buffers and the host-side
// scalars of each update (the per-element arithmetic is cpp/backend/optim_math.h).
#include <cmath>

#include "cpp/optim/optim_internal.h"
#include "ember/profile.h"

namespace ember::optim {

void run_backend_step(Device device, const OptimizerStep& step) {
  if (!step.params.empty()) backend_for(device).optimizer_step(step);
}

double require_option(const std::string& type, const Hyperparameters& o, const char* key) {
  auto it = o.find(key);
  EMBER_CHECK(it != o.end(), type, ": the options lack \"", key, "\"");
  EMBER_CHECK(std::isfinite(it->second), type, ": ", key, " must be finite, got ", it->second);
  return it->second;
}

void check_min(const std::string& type, const Hyperparameters& o, const char* key, double lo) {
  const double v = require_option(type, o, key);
  EMBER_CHECK(v >= lo, type, ": ", key, " must be >= ", lo, ", got ", v);
}

void check_flag(const std::string& type, const Hyperparameters& o, const char* key) {
  const double v = require_option(type, o, key);
  EMBER_CHECK(v == 0.0 || v == 1.0, type, ": ", key, " is a flag and must be 0 or 1, got ", v);
}

namespace {

std::vector<ParamGroup> one_group(const std::vector<Tensor>& params) { return {ParamGroup{params, {}, {}}}; }

double b(bool v) { return v ? 1.0 : 0.0; }

// Checks the optimizer got at least one parameter overall (PyTorch: "empty parameter list").
void check_nonempty(const std::string& type, const std::vector<ParamGroup>& groups) {
  EMBER_CHECK(!groups.empty(), type, ": got an empty list of parameter groups; pass model->parameters()");
}

}  // namespace

// ---- SGD ----

SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& o) : SGD(one_group(params), o) {}

SGD::SGD(const std::vector<ParamGroup>& groups, const SGDOptions& o)
    : Optimizer("SGD", {{"lr", o.lr},
                        {"momentum", o.momentum},
                        {"dampening", o.dampening},
                        {"weight_decay", o.weight_decay},
                        {"nesterov", b(o.nesterov)},
                        {"maximize", b(o.maximize)}}) {
  validate(defaults_);
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void SGD::validate(const Hyperparameters& o) const {
  check_min(type_, o, "lr", 0.0);
  check_min(type_, o, "momentum", 0.0);
  require_option(type_, o, "dampening");
  check_min(type_, o, "weight_decay", 0.0);
  check_flag(type_, o, "nesterov");
  check_flag(type_, o, "maximize");
  EMBER_CHECK(!flag(o, "nesterov") || (o.at("momentum") > 0.0 && o.at("dampening") == 0.0),
              "SGD: Nesterov momentum needs momentum > 0 and dampening = 0, got momentum=", o.at("momentum"),
              ", dampening=", o.at("dampening"));
}

std::vector<std::string> SGD::buffer_names(const Hyperparameters& o) const {
  if (o.at("momentum") != 0.0) return {"momentum_buffer"};
  return {};
}

void SGD::step() {
  profile::Range range("optimizer.step");
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Sgd,
      [](const Hyperparameters& o) {
        std::vector<Slot> s;
        if (o.at("momentum") != 0.0) s.push_back({"momentum_buffer", 0, 0.0, true});
        return s;
      },
      [](const Hyperparameters& o, int64_t) {
        OptimizerHyper h;
        h.step_size = o.at("lr");
        h.weight_decay = o.at("weight_decay");
        h.momentum = o.at("momentum");
        h.dampening_complement = 1.0 - o.at("dampening");
        h.nesterov = flag(o, "nesterov");
        h.maximize = flag(o, "maximize");
        return h;
      });
}

// ---- Adam and AdamW ----

namespace {
Hyperparameters adam_defaults(double lr, double beta1, double beta2, double eps, double wd, bool amsgrad,
                              bool maximize) {
  return {{"lr", lr},           {"beta1", beta1},         {"beta2", beta2},          {"eps", eps},
          {"weight_decay", wd}, {"amsgrad", b(amsgrad)}, {"maximize", b(maximize)}};
}
}  // namespace

Adam::Adam(const std::vector<Tensor>& params, const AdamOptions& o) : Adam(one_group(params), o) {}

Adam::Adam(const std::vector<ParamGroup>& groups, const AdamOptions& o) : Adam("Adam", groups, o) {}

Adam::Adam(std::string type, const std::vector<ParamGroup>& groups, const AdamOptions& o)
    : Optimizer(std::move(type), adam_defaults(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize)) {
  decoupled_weight_decay_ = type_ == "AdamW";
  validate(defaults_);
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void Adam::validate(const Hyperparameters& o) const {
  check_min(type_, o, "lr", 0.0);
  check_min(type_, o, "eps", 0.0);
  check_min(type_, o, "weight_decay", 0.0);
  for (const char* key : {"beta1", "beta2"}) {
    const double beta = require_option(type_, o, key);
    EMBER_CHECK(beta >= 0.0 && beta < 1.0, type_, ": ", key, " must be in [0, 1), got ", beta);
  }
  check_flag(type_, o, "amsgrad");
  check_flag(type_, o, "maximize");
}

std::vector<std::string> Adam::buffer_names(const Hyperparameters& o) const {
  if (flag(o, "amsgrad")) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

void Adam::step() {
  profile::Range range("optimizer.step");
  const bool decoupled = decoupled_weight_decay_;
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Adam,
      [](const Hyperparameters& o) {
        std::vector<Slot> s{{"exp_avg", 0, 0.0, false}, {"exp_avg_sq", 1, 0.0, false}};
        if (flag(o, "amsgrad")) s.push_back({"max_exp_avg_sq", 2, 0.0, false});
        return s;
      },
      [decoupled](const Hyperparameters& o, int64_t step) {
        const double lr = o.at("lr"), beta1 = o.at("beta1"), beta2 = o.at("beta2"), wd = o.at("weight_decay");
        // As PyTorch's _single_tensor_adam, in Python floats.
        const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
        const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
        OptimizerHyper h;
        h.step_size = lr / bias_correction1;
        h.bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
        h.weight_decay = wd;
        h.decoupled_weight_decay = decoupled;
        h.decay_factor = 1.0 - lr * wd;
        h.beta1_complement = 1.0 - beta1;
        h.beta2 = beta2;
        h.beta2_complement = 1.0 - beta2;
        h.eps = o.at("eps");
        h.amsgrad = flag(o, "amsgrad");
        h.maximize = flag(o, "maximize");
        return h;
      });
}

namespace {
AdamOptions as_adam(const AdamWOptions& o) {
  return AdamOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize};
}
}  // namespace

AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& o) : Adam("AdamW", one_group(params), as_adam(o)) {}

AdamW::AdamW(const std::vector<ParamGroup>& groups, const AdamWOptions& o) : Adam("AdamW", groups, as_adam(o)) {}

// ---- RMSprop ----

RMSprop::RMSprop(const std::vector<Tensor>& params, const RMSpropOptions& o) : RMSprop(one_group(params), o) {}

RMSprop::RMSprop(const std::vector<ParamGroup>& groups, const RMSpropOptions& o)
    : Optimizer("RMSprop", {{"lr", o.lr},
                            {"alpha", o.alpha},
                            {"eps", o.eps},
                            {"weight_decay", o.weight_decay},
                            {"momentum", o.momentum},
                            {"centered", b(o.centered)},
                            {"maximize", b(o.maximize)}}) {
  validate(defaults_);
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void RMSprop::validate(const Hyperparameters& o) const {
  check_min(type_, o, "lr", 0.0);
  check_min(type_, o, "alpha", 0.0);
  check_min(type_, o, "eps", 0.0);
  check_min(type_, o, "weight_decay", 0.0);
  check_min(type_, o, "momentum", 0.0);
  check_flag(type_, o, "centered");
  check_flag(type_, o, "maximize");
}

std::vector<std::string> RMSprop::buffer_names(const Hyperparameters& o) const {
  std::vector<std::string> names{"square_avg"};
  if (o.at("momentum") > 0.0) names.push_back("momentum_buffer");
  if (flag(o, "centered")) names.push_back("grad_avg");
  return names;
}

void RMSprop::step() {
  profile::Range range("optimizer.step");
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Rmsprop,
      [](const Hyperparameters& o) {
        std::vector<Slot> s{{"square_avg", 0, 0.0, false}};
        if (o.at("momentum") > 0.0) s.push_back({"momentum_buffer", 1, 0.0, false});
        if (flag(o, "centered")) s.push_back({"grad_avg", 2, 0.0, false});
        return s;
      },
      [](const Hyperparameters& o, int64_t) {
        OptimizerHyper h;
        h.step_size = o.at("lr");
        h.beta2 = o.at("alpha");
        h.beta2_complement = 1.0 - o.at("alpha");
        h.eps = o.at("eps");
        h.weight_decay = o.at("weight_decay");
        h.momentum = o.at("momentum");
        h.centered = flag(o, "centered");
        h.maximize = flag(o, "maximize");
        return h;
      });
}

// ---- Adagrad ----

Adagrad::Adagrad(const std::vector<Tensor>& params, const AdagradOptions& o) : Adagrad(one_group(params), o) {}

Adagrad::Adagrad(const std::vector<ParamGroup>& groups, const AdagradOptions& o)
    : Optimizer("Adagrad", {{"lr", o.lr},
                            {"lr_decay", o.lr_decay},
                            {"weight_decay", o.weight_decay},
                            {"initial_accumulator_value", o.initial_accumulator_value},
                            {"eps", o.eps},
                            {"maximize", b(o.maximize)}}) {
  validate(defaults_);
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void Adagrad::validate(const Hyperparameters& o) const {
  check_min(type_, o, "lr", 0.0);
  check_min(type_, o, "lr_decay", 0.0);
  check_min(type_, o, "weight_decay", 0.0);
  check_min(type_, o, "initial_accumulator_value", 0.0);
  check_min(type_, o, "eps", 0.0);
  check_flag(type_, o, "maximize");
}

std::vector<std::string> Adagrad::buffer_names(const Hyperparameters&) const { return {"sum"}; }

void Adagrad::step() {
  profile::Range range("optimizer.step");
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Adagrad,
      [](const Hyperparameters& o) { return std::vector<Slot>{{"sum", 0, o.at("initial_accumulator_value"), false}}; },
      [](const Hyperparameters& o, int64_t step) {
        OptimizerHyper h;
        h.step_size = o.at("lr") / (1.0 + static_cast<double>(step - 1) * o.at("lr_decay"));
        h.eps = o.at("eps");
        h.weight_decay = o.at("weight_decay");
        h.maximize = flag(o, "maximize");
        return h;
      });
}

}  // namespace ember::optim
