// SGD, Adam, AdamW, RMSprop and Adagrad: their options' serialized names, checks, state buffers
// and the host-side scalars of each update (the per-element arithmetic is cpp/backend/optim_math.h).
#include <cmath>

#include "cpp/optim/optim_internal.h"
#include "ember/profile.h"

namespace ember::optim {

void run_backend_step(Device device, const OptimizerStep& step) {
  if (!step.params.empty()) backend_for(device).optimizer_step(step);
}

// ---- the serialized names of the fields (the names state_dicts and checkpoints hold) ----

template <>
const std::vector<Field<SGDOptions>>& fields() {
  using O = SGDOptions;
  static const std::vector<Field<O>> f{{"lr", &O::lr},
                                       {"momentum", &O::momentum},
                                       {"dampening", &O::dampening},
                                       {"weight_decay", &O::weight_decay},
                                       {"nesterov", nullptr, &O::nesterov},
                                       {"maximize", nullptr, &O::maximize}};
  return f;
}

namespace {
template <class O>
std::vector<Field<O>> adam_fields() {
  return {{"lr", &O::lr},
          {"beta1", &O::beta1},
          {"beta2", &O::beta2},
          {"eps", &O::eps},
          {"weight_decay", &O::weight_decay},
          {"amsgrad", nullptr, &O::amsgrad},
          {"maximize", nullptr, &O::maximize}};
}
}  // namespace

template <>
const std::vector<Field<AdamOptions>>& fields() {
  static const std::vector<Field<AdamOptions>> f = adam_fields<AdamOptions>();
  return f;
}

template <>
const std::vector<Field<AdamWOptions>>& fields() {
  static const std::vector<Field<AdamWOptions>> f = adam_fields<AdamWOptions>();
  return f;
}

template <>
const std::vector<Field<RMSpropOptions>>& fields() {
  using O = RMSpropOptions;
  static const std::vector<Field<O>> f{{"lr", &O::lr},
                                       {"alpha", &O::alpha},
                                       {"eps", &O::eps},
                                       {"weight_decay", &O::weight_decay},
                                       {"momentum", &O::momentum},
                                       {"centered", nullptr, &O::centered},
                                       {"maximize", nullptr, &O::maximize}};
  return f;
}

template <>
const std::vector<Field<AdagradOptions>>& fields() {
  using O = AdagradOptions;
  static const std::vector<Field<O>> f{{"lr", &O::lr},
                                       {"lr_decay", &O::lr_decay},
                                       {"weight_decay", &O::weight_decay},
                                       {"initial_accumulator_value", &O::initial_accumulator_value},
                                       {"eps", &O::eps},
                                       {"maximize", nullptr, &O::maximize}};
  return f;
}

const char* options_type_name(const AnyOptions& o) {
  return std::visit(
      [](const auto& v) -> const char* {
        using O = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<O, SGDOptions>) return "SGDOptions";
        else if constexpr (std::is_same_v<O, AdamOptions>) return "AdamOptions";
        else if constexpr (std::is_same_v<O, AdamWOptions>) return "AdamWOptions";
        else if constexpr (std::is_same_v<O, RMSpropOptions>) return "RMSpropOptions";
        else return "AdagradOptions";
      },
      o);
}

Hyperparameters to_map(const AnyOptions& o) {
  return std::visit(
      [](const auto& v) {
        Hyperparameters m;
        for (const auto& f : fields<std::decay_t<decltype(v)>>()) m[f.name] = f.number ? v.*f.number : (v.*f.flag ? 1.0 : 0.0);
        return m;
      },
      o);
}

std::vector<std::string> field_names(const AnyOptions& o) {
  return std::visit(
      [](const auto& v) {
        std::vector<std::string> names;
        for (const auto& f : fields<std::decay_t<decltype(v)>>()) names.emplace_back(f.name);
        return names;
      },
      o);
}

bool get_field(const AnyOptions& o, const std::string& name, double& out) {
  return std::visit(
      [&](const auto& v) {
        for (const auto& f : fields<std::decay_t<decltype(v)>>()) {
          if (name != f.name) continue;
          out = f.number ? v.*f.number : (v.*f.flag ? 1.0 : 0.0);
          return true;
        }
        return false;
      },
      o);
}

void set_field(AnyOptions& o, const std::string& name, double value, const std::string& who) {
  std::visit(
      [&](auto& v) {
        for (const auto& f : fields<std::decay_t<decltype(v)>>()) {
          if (name != f.name) continue;
          if (f.number) {
            v.*f.number = value;
          } else {
            EMBER_CHECK(value == 0.0 || value == 1.0, who, ": ", name, " is a flag and must be 0 or 1, got ", value);
            v.*f.flag = value != 0.0;
          }
          return;
        }
        std::string known;
        for (const auto& f : fields<std::decay_t<decltype(v)>>()) known += (known.empty() ? "" : ", ") + std::string(f.name);
        throw Error(detail::str_cat(who, ": ", options_type_name(o), " has no option \"", name, "\" (it has ", known, ")"));
      },
      o);
}

void check_finite(const std::string& who, const char* key, double v) {
  EMBER_CHECK(std::isfinite(v), who, ": ", key, " must be finite, got ", v);
}

void check_min(const std::string& who, const char* key, double v, double lo) {
  check_finite(who, key, v);
  EMBER_CHECK(v >= lo, who, ": ", key, " must be >= ", lo, ", got ", v);
}

namespace {

std::vector<ParamGroup> one_group(const std::vector<Tensor>& params) { return {ParamGroup{params, {}, {}, {}}}; }

// Checks the optimizer got at least one parameter overall (PyTorch: "empty parameter list").
void check_nonempty(const std::string& type, const std::vector<ParamGroup>& groups) {
  EMBER_CHECK(!groups.empty(), type, ": got an empty list of parameter groups; pass model->parameters()");
}

}  // namespace

// ---- SGD ----

SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& o) : SGD(one_group(params), o) {}

SGD::SGD(const std::vector<ParamGroup>& groups, const SGDOptions& o) : Optimizer("SGD", o) {
  check_options(defaults_, "the default options");
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void SGD::validate(const AnyOptions& any, const std::string& where) const {
  const SGDOptions& o = std::get<SGDOptions>(any);
  const std::string who = type_ + ": " + where;
  check_min(who, "lr", o.lr, 0.0);
  check_min(who, "momentum", o.momentum, 0.0);
  check_finite(who, "dampening", o.dampening);
  check_min(who, "weight_decay", o.weight_decay, 0.0);
  // As PyTorch: "Nesterov momentum requires a momentum and zero dampening".
  EMBER_CHECK(!o.nesterov || (o.momentum > 0.0 && o.dampening == 0.0), who,
              ": Nesterov momentum needs momentum > 0 and dampening = 0, got momentum=", o.momentum,
              ", dampening=", o.dampening);
}

std::vector<std::string> SGD::buffer_names(const AnyOptions& o) const {
  if (std::get<SGDOptions>(o).momentum != 0.0) return {"momentum_buffer"};
  return {};
}

void SGD::step() {
  profile::Range range("optimizer.step");
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Sgd,
      [](const AnyOptions& any) {
        std::vector<Slot> s;
        if (std::get<SGDOptions>(any).momentum != 0.0) s.push_back({"momentum_buffer", 0, 0.0, true});
        return s;
      },
      [](const AnyOptions& any) {
        const SGDOptions& o = std::get<SGDOptions>(any);
        OptimizerInputs in;
        in.lr = o.lr;
        in.weight_decay = o.weight_decay;
        in.momentum = o.momentum;
        in.dampening = o.dampening;
        in.nesterov = o.nesterov;
        in.maximize = o.maximize;
        return in;
      });
}

// ---- Adam and AdamW ----

namespace {
// An AdamW group's options read as Adam's (the fields are the same; only the defaults differ).
AdamOptions as_adam(const AnyOptions& any) {
  if (const auto* w = std::get_if<AdamWOptions>(&any))
    return AdamOptions{w->lr, w->beta1, w->beta2, w->eps, w->weight_decay, w->amsgrad, w->maximize};
  return std::get<AdamOptions>(any);
}
}  // namespace

Adam::Adam(const std::vector<Tensor>& params, const AdamOptions& o) : Adam(one_group(params), o) {}

Adam::Adam(const std::vector<ParamGroup>& groups, const AdamOptions& o) : Adam("Adam", groups, AnyOptions(o)) {}

Adam::Adam(std::string type, const std::vector<ParamGroup>& groups, AnyOptions defaults)
    : Optimizer(std::move(type), std::move(defaults)) {
  decoupled_weight_decay_ = type_ == "AdamW";
  check_options(defaults_, "the default options");
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void Adam::validate(const AnyOptions& any, const std::string& where) const {
  const AdamOptions o = as_adam(any);
  const std::string who = type_ + ": " + where;
  check_min(who, "lr", o.lr, 0.0);
  check_min(who, "eps", o.eps, 0.0);
  check_min(who, "weight_decay", o.weight_decay, 0.0);
  for (const auto& [key, beta] : {std::pair{"beta1", o.beta1}, std::pair{"beta2", o.beta2}}) {
    check_finite(who, key, beta);
    EMBER_CHECK(beta >= 0.0 && beta < 1.0, who, ": ", key, " must be in [0, 1), got ", beta);
  }
}

std::vector<std::string> Adam::buffer_names(const AnyOptions& o) const {
  if (as_adam(o).amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

void Adam::step() {
  profile::Range range("optimizer.step");
  const bool decoupled = decoupled_weight_decay_;
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Adam,
      [](const AnyOptions& any) {
        std::vector<Slot> s{{"exp_avg", 0, 0.0, false}, {"exp_avg_sq", 1, 0.0, false}};
        if (as_adam(any).amsgrad) s.push_back({"max_exp_avg_sq", 2, 0.0, false});
        return s;
      },
      [decoupled](const AnyOptions& any) {
        const AdamOptions o = as_adam(any);
        OptimizerInputs in;
        in.lr = o.lr;
        in.beta1 = o.beta1;
        in.beta2 = o.beta2;
        in.eps = o.eps;
        in.weight_decay = o.weight_decay;
        in.decoupled_weight_decay = decoupled;
        in.amsgrad = o.amsgrad;
        in.maximize = o.maximize;
        return in;
      });
}

AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& o) : Adam("AdamW", one_group(params), AnyOptions(o)) {}

AdamW::AdamW(const std::vector<ParamGroup>& groups, const AdamWOptions& o) : Adam("AdamW", groups, AnyOptions(o)) {}

// ---- RMSprop ----

RMSprop::RMSprop(const std::vector<Tensor>& params, const RMSpropOptions& o) : RMSprop(one_group(params), o) {}

RMSprop::RMSprop(const std::vector<ParamGroup>& groups, const RMSpropOptions& o) : Optimizer("RMSprop", o) {
  check_options(defaults_, "the default options");
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void RMSprop::validate(const AnyOptions& any, const std::string& where) const {
  const RMSpropOptions& o = std::get<RMSpropOptions>(any);
  const std::string who = type_ + ": " + where;
  check_min(who, "lr", o.lr, 0.0);
  check_min(who, "alpha", o.alpha, 0.0);
  check_min(who, "eps", o.eps, 0.0);
  check_min(who, "weight_decay", o.weight_decay, 0.0);
  check_min(who, "momentum", o.momentum, 0.0);
}

std::vector<std::string> RMSprop::buffer_names(const AnyOptions& any) const {
  const RMSpropOptions& o = std::get<RMSpropOptions>(any);
  std::vector<std::string> names{"square_avg"};
  if (o.momentum > 0.0) names.push_back("momentum_buffer");
  if (o.centered) names.push_back("grad_avg");
  return names;
}

void RMSprop::step() {
  profile::Range range("optimizer.step");
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Rmsprop,
      [](const AnyOptions& any) {
        const RMSpropOptions& o = std::get<RMSpropOptions>(any);
        std::vector<Slot> s{{"square_avg", 0, 0.0, false}};
        if (o.momentum > 0.0) s.push_back({"momentum_buffer", 1, 0.0, false});
        if (o.centered) s.push_back({"grad_avg", 2, 0.0, false});
        return s;
      },
      [](const AnyOptions& any) {
        const RMSpropOptions& o = std::get<RMSpropOptions>(any);
        OptimizerInputs in;
        in.lr = o.lr;
        in.beta2 = o.alpha;
        in.eps = o.eps;
        in.weight_decay = o.weight_decay;
        in.momentum = o.momentum;
        in.centered = o.centered;
        in.maximize = o.maximize;
        return in;
      });
}

// ---- Adagrad ----

Adagrad::Adagrad(const std::vector<Tensor>& params, const AdagradOptions& o) : Adagrad(one_group(params), o) {}

Adagrad::Adagrad(const std::vector<ParamGroup>& groups, const AdagradOptions& o) : Optimizer("Adagrad", o) {
  check_options(defaults_, "the default options");
  check_nonempty(type_, groups);
  for (const ParamGroup& g : groups) add_param_group(g);
}

void Adagrad::validate(const AnyOptions& any, const std::string& where) const {
  const AdagradOptions& o = std::get<AdagradOptions>(any);
  const std::string who = type_ + ": " + where;
  check_min(who, "lr", o.lr, 0.0);
  check_min(who, "lr_decay", o.lr_decay, 0.0);
  check_min(who, "weight_decay", o.weight_decay, 0.0);
  check_min(who, "initial_accumulator_value", o.initial_accumulator_value, 0.0);
  check_min(who, "eps", o.eps, 0.0);
}

std::vector<std::string> Adagrad::buffer_names(const AnyOptions&) const { return {"sum"}; }

void Adagrad::step() {
  profile::Range range("optimizer.step");
  OptimizerAccess::fused_step(
      *this, OptimizerAlgo::Adagrad,
      [](const AnyOptions& any) {
        return std::vector<Slot>{{"sum", 0, std::get<AdagradOptions>(any).initial_accumulator_value, false}};
      },
      [](const AnyOptions& any) {
        const AdagradOptions& o = std::get<AdagradOptions>(any);
        OptimizerInputs in;
        in.lr = o.lr;
        in.lr_decay = o.lr_decay;
        in.eps = o.eps;
        in.weight_decay = o.weight_decay;
        in.maximize = o.maximize;
        return in;
      });
}

}  // namespace ember::optim
