// Optimizer: parameter groups, per-parameter state and its state_dict, and the fused update that
// gathers every parameter with a gradient into one backend call per (device, dtype).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <set>
#include <sstream>
#include <unordered_set>

#include "cpp/core/text_brief.h"
#include "cpp/backend/optim_math.h"
#include "cpp/optim/optim_internal.h"
#include "ember/cuda.h"

namespace ember::optim {

Optimizer::Optimizer(std::string type, AnyOptions defaults) : type_(std::move(type)), defaults_(std::move(defaults)) {}

Optimizer::~Optimizer() = default;

void Optimizer::check_options(const AnyOptions& o, const std::string& where) const {
  EMBER_CHECK(o.index() == defaults_.index(), type_, ": ", where, " holds ", options_type_name(o), " but the groups of ",
              type_, " take ", options_type_name(defaults_));
  validate(o, where);
}

void Optimizer::add_param_group(const ParamGroup& group) {
  const size_t gi = groups_.size();
  const std::string where = "parameter group " + std::to_string(gi);
  EMBER_CHECK(!group.params.empty(), type_, ": parameter group ", gi,
              " is empty; pass at least one tensor (for example model->parameters())");
  std::unordered_set<const TensorImpl*> seen;
  for (const Group& g : groups_)
    for (const Tensor& p : g.params) seen.insert(p.impl());
  for (size_t i = 0; i < group.params.size(); ++i) {
    const Tensor& p = group.params[i];
    EMBER_CHECK(p.defined(), type_, ": parameter ", i, " of group ", gi, " is an undefined tensor");
    EMBER_CHECK(p.is_leaf(), type_, ": parameter ", i, " of group ", gi, " (shape ", shape_str(p.shape()),
                ") was computed by ", p.grad_fn()->name(), "; an optimizer can only update leaf tensors");
    EMBER_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, type_, ": parameter ", i, " of group ", gi,
                " has dtype ", dtype_name(p.dtype()), "; optimizers update f32 or f64 parameters");
    EMBER_CHECK(p.is_contiguous(), type_, ": parameter ", i, " of group ", gi, " (shape ", shape_str(p.shape()),
                ") is not contiguous; register a contiguous tensor (x.contiguous()) as the parameter");
    EMBER_CHECK(seen.insert(p.impl()).second, type_, ": parameter ", i, " of group ", gi, " (shape ",
                shape_str(p.shape()), ") appears more than once across the parameter groups; list it once");
  }
  AnyOptions options = group.options ? *group.options : defaults_;
  EMBER_CHECK(options.index() == defaults_.index(), type_, ": ", where, " carries ", options_type_name(options),
              "; a group of ", type_, " takes ", options_type_name(defaults_));
  const std::string who = type_ + ": " + where;
  if (group.lr) set_field(options, "lr", *group.lr, who);
  if (group.weight_decay) set_field(options, "weight_decay", *group.weight_decay, who);
  validate(options, where);
  groups_.push_back({group.params, std::move(options), {}});
  size_t total = 0;
  for (const Group& g : groups_) total += g.params.size();
  state_.resize(total);
}

void Optimizer::zero_grad(bool set_to_none) {
  for (const Group& g : groups_) {
    for (Tensor p : g.params) {
      if (!p.grad().defined()) continue;
      if (set_to_none) {
        p.zero_grad();
      } else {
        Tensor grad = p.grad();
        grad.zero_();
      }
    }
  }
}

const std::vector<Tensor>& Optimizer::params(size_t group) const {
  EMBER_CHECK(group < groups_.size(), type_, ": parameter group ", group, " does not exist (there are ",
              groups_.size(), ")");
  return groups_[group].params;
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  for (const Group& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

namespace {
// The struct names by AnyOptions index.
const char* const kOptionsNames[] = {"SGDOptions", "AdamOptions", "AdamWOptions", "RMSpropOptions", "AdagradOptions"};
static_assert(std::size(kOptionsNames) == std::variant_size_v<AnyOptions>);
}  // namespace

const AnyOptions& Optimizer::group_options(size_t group, int want) const {
  EMBER_CHECK(group < groups_.size(), type_, ": parameter group ", group, " does not exist (there are ",
              groups_.size(), ")");
  const AnyOptions& o = groups_[group].options;
  EMBER_CHECK(want < 0 || static_cast<size_t>(want) == o.index(), type_, ".options<", kOptionsNames[want],
              ">(", group, "): the groups of ", type_, " hold ", options_type_name(o), "; ask for that");
  return o;
}

void Optimizer::set_options(size_t group, const AnyOptions& options) {
  EMBER_CHECK(group < groups_.size(), type_, ".set_options: parameter group ", group, " does not exist (there are ",
              groups_.size(), ")");
  check_options(options, "parameter group " + std::to_string(group));
  groups_[group].options = options;
}

double Optimizer::lr(size_t group) const {
  return std::visit([](const auto& o) { return o.lr; }, group_options(group, -1));
}

void Optimizer::set_lr(size_t group, double lr) { set_option(group, "lr", lr); }

bool Optimizer::has_option(const std::string& name) const {
  double unused = 0;
  return get_field(defaults_, name, unused);
}

double Optimizer::option(size_t group, const std::string& name) const {
  const AnyOptions& o = group_options(group, -1);
  double v = 0;
  if (!get_field(o, name, v)) {
    std::string known;
    for (const std::string& k : field_names(o)) known += (known.empty() ? "" : ", ") + k;
    throw Error(detail::str_cat(type_, ": parameter group ", group, " has no option \"", name, "\" (it has ", known,
                                ")"));
  }
  return v;
}

void Optimizer::set_option(size_t group, const std::string& name, double value) {
  EMBER_CHECK(group < groups_.size(), type_, ".set_option(\"", name, "\"): parameter group ", group,
              " does not exist (there are ", groups_.size(), ")");
  const std::string where = "parameter group " + std::to_string(group);
  AnyOptions o = groups_[group].options;
  set_field(o, name, value, type_ + ": " + where);
  validate(o, where);
  groups_[group].options = o;
}

const std::map<std::string, double>& Optimizer::scheduler_values(size_t group) const {
  EMBER_CHECK(group < groups_.size(), type_, ": parameter group ", group, " does not exist (there are ",
              groups_.size(), ")");
  return groups_[group].scheduler_values;
}

bool Optimizer::has_scheduler_value(size_t group, const std::string& name) const {
  return scheduler_values(group).count(name) != 0;
}

double Optimizer::scheduler_value(size_t group, const std::string& name) const {
  const auto& values = scheduler_values(group);
  auto it = values.find(name);
  EMBER_CHECK(it != values.end(), type_, ": parameter group ", group, " has no scheduler value \"", name,
              "\"; a scheduler sets it when it is built");
  return it->second;
}

void Optimizer::set_scheduler_value(size_t group, const std::string& name, double value) {
  EMBER_CHECK(group < groups_.size(), type_, ".set_scheduler_value(\"", name, "\"): parameter group ", group,
              " does not exist (there are ", groups_.size(), ")");
  EMBER_CHECK(!has_option(name), type_, ".set_scheduler_value: \"", name, "\" is an option of ", type_,
              ", not a scheduler value; use set_option");
  groups_[group].scheduler_values[name] = value;
}

int64_t Optimizer::state_step(size_t i) const {
  EMBER_CHECK(i < state_.size(), type_, ".state_step: parameter index ", i, " is out of range (", state_.size(),
              " parameters)");
  return state_[i].step;
}

const std::map<std::string, Tensor>& Optimizer::state(size_t i) const {
  EMBER_CHECK(i < state_.size(), type_, ".state: parameter index ", i, " is out of range (", state_.size(),
              " parameters)");
  return state_[i].buffers;
}

OptimizerState Optimizer::state_dict() const {
  OptimizerState s;
  s.type = type_;
  for (size_t i = 0; i < state_.size(); ++i) {
    const ParamState& st = state_[i];
    if (st.step == 0 && st.buffers.empty()) continue;
    const std::string prefix = "state." + std::to_string(i) + ".";
    s.tensors.emplace_back(prefix + "step", from_vector<int64_t>({st.step}, {}));
    for (const auto& [name, t] : st.buffers) s.tensors.emplace_back(prefix + name, t);
  }
  int64_t index = 0;
  for (const Group& g : groups_) {
    // The same names and values as ever: the options by field name (flags 0/1) and the
    // scheduler values beside them, in one map.
    OptimizerState::Group sg{to_map(g.options), {}};
    for (const auto& [k, v] : g.scheduler_values) sg.options.emplace(k, v);
    for (size_t k = 0; k < g.params.size(); ++k) sg.params.push_back(index++);
    s.param_groups.push_back(std::move(sg));
  }
  return s;
}

void Optimizer::load_state_dict(const OptimizerState& s) {
  EMBER_CHECK(s.type == type_, type_, ".load_state_dict: the state was saved by a ", s.type.empty() ? "?" : s.type,
              " optimizer; load it into a ", s.type.empty() ? "matching" : s.type, " optimizer instead");
  EMBER_CHECK(s.param_groups.size() == groups_.size(), type_, ".load_state_dict: the state has ",
              s.param_groups.size(), " parameter group(s) but this optimizer has ", groups_.size());
  // Validate everything before changing anything.
  std::vector<const Tensor*> params;  // by index
  std::vector<size_t> group_of;
  // Typed options and scheduler values of each saved group: every field of this optimizer's
  // struct must be there; the other names are scheduler values.
  std::vector<std::pair<AnyOptions, std::map<std::string, double>>> parsed;
  auto parse_group = [&](const Hyperparameters& saved, size_t g) {
    AnyOptions o = defaults_;
    const std::string where = "parameter group " + std::to_string(g);
    for (const std::string& name : field_names(o)) {
      auto it = saved.find(name);
      EMBER_CHECK(it != saved.end(), type_, ": the options lack \"", name, "\"");
      set_field(o, name, it->second, type_ + ": " + where);
    }
    validate(o, where);
    std::map<std::string, double> extra;
    for (const auto& [k, v] : saved) {
      double unused = 0;
      if (!get_field(o, k, unused)) extra.emplace(k, v);
    }
    return std::pair{o, extra};
  };
  int64_t index = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const auto& saved = s.param_groups[g].params;
    EMBER_CHECK(saved.size() == groups_[g].params.size(), type_, ".load_state_dict: parameter group ", g,
                " has ", saved.size(), " parameter(s) in the state but ", groups_[g].params.size(),
                " in this optimizer; build the optimizer over the same parameters");
    for (size_t k = 0; k < saved.size(); ++k) {
      EMBER_CHECK(saved[k] == index, type_, ".load_state_dict: parameter group ", g, " lists parameter index ",
                  saved[k], " at position ", k, " where ", index, " was expected");
      params.push_back(&groups_[g].params[k]);
      group_of.push_back(g);
      ++index;
    }
    try {
      parsed.push_back(parse_group(s.param_groups[g].options, g));
    } catch (const Error& e) {
      throw Error(detail::str_cat(type_, ".load_state_dict: the options of parameter group ", g,
                                  " are invalid: ", e.what()));
    }
  }
  std::vector<ParamState> fresh(state_.size());
  std::vector<std::set<std::string>> seen(state_.size());
  std::vector<std::string> errors;
  std::set<std::string> keys;
  for (const auto& [key, t] : s.tensors) {
    if (!keys.insert(key).second) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\" appears twice");
      continue;
    }
    // "state.<index>.<name>"
    const size_t dot = key.find('.', 6);
    if (key.rfind("state.", 0) != 0 || dot == std::string::npos || dot == 6 || dot + 1 == key.size()) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\" is not of the form state.<index>.<name>");
      continue;
    }
    const std::string idx_text = key.substr(6, dot - 6), name = key.substr(dot + 1);
    if (idx_text.find_first_not_of("0123456789") != std::string::npos || idx_text.size() > 9) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\" has a malformed parameter index");
      continue;
    }
    const size_t i = std::stoul(idx_text);
    if (i >= params.size()) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\" refers to parameter " + idx_text + " but there are " +
                       std::to_string(params.size()));
      continue;
    }
    if (!t.defined()) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\" holds an undefined tensor");
      continue;
    }
    seen[i].insert(name);
    const Tensor& p = *params[i];
    if (name == "step") {
      if (t.numel() != 1 || is_floating(t.dtype()) || t.dtype() == DType::Bool) {
        errors.push_back("key \"" + detail::cut_brief(key) + "\" must be one integer, got " + dtype_name(t.dtype()) + " of shape " +
                         shape_str(t.shape()));
        continue;
      }
      fresh[i].step = t.item<int64_t>();
      if (fresh[i].step < 0) errors.push_back("key \"" + detail::cut_brief(key) + "\" is negative");
      continue;
    }
    const std::vector<std::string> allowed = buffer_names(parsed[group_of[i]].first);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\": " + type_ + " keeps no buffer \"" + name + "\" with these options");
      continue;
    }
    if (t.shape() != p.shape() || !is_floating(t.dtype())) {
      errors.push_back("key \"" + detail::cut_brief(key) + "\" has " + dtype_name(t.dtype()) + " shape " + shape_str(t.shape()) +
                       " but parameter " + idx_text + " has shape " + shape_str(p.shape()));
      continue;
    }
    fresh[i].buffers[name] = t;
  }
  for (size_t i = 0; i < fresh.size(); ++i)
    if (!fresh[i].buffers.empty() && !seen[i].count("step"))
      errors.push_back("parameter " + std::to_string(i) + " has state buffers but no \"state." + std::to_string(i) +
                       ".step\"");
  if (!errors.empty()) {
    std::ostringstream msg;
    msg << type_ << ".load_state_dict: the state does not fit this optimizer:";
    // At most 20 lines: a hostile state may hold thousands of bad keys.
    for (size_t k = 0; k < errors.size() && k < 20; ++k) msg << "\n  " << errors[k];
    if (errors.size() > 20) msg << "\n  (and " << errors.size() - 20 << " more)";
    throw Error(msg.str());
  }
  // Copies on each parameter's device and dtype (the saved tensors may be on the CPU).
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < fresh.size(); ++i)
    for (auto& [name, t] : fresh[i].buffers) t = t.to(params[i]->dtype()).to(params[i]->device()).clone();
  state_ = std::move(fresh);
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].options = parsed[g].first;
    groups_[g].scheduler_values = parsed[g].second;
  }
}

// ---- the fused step ----

void Optimizer::set_capturable(bool capturable) {
  capturable_ = capturable;
  if (capturable && !capture_) capture_ = std::make_unique<CaptureState>();
  if (!capturable) capture_.reset();
}

void Optimizer::prepare_step() {
  EMBER_CHECK(capturable_, type_, ".prepare_step: the optimizer is not capturable; call set_capturable(true) first");
  CaptureState& cs = *capture_;
  EMBER_CHECK(!cs.prepared, type_, ".prepare_step: the step prepared before has not run yet; call step() (or replay "
              "the graph that holds it) first");
  cs.preparing = true;
  try {
    step();
  } catch (...) {
    cs.preparing = false;
    throw;
  }
  // Every built-in optimizer's step() is the fused update, which clears `preparing`; one that is
  // not would have run a whole update here.
  EMBER_CHECK(!cs.preparing, type_, ".prepare_step: this optimizer's step() does not go through the fused update, so "
              "it cannot be prepared or captured");
}

namespace {

// The bits of a row of doubles, compared as bits (so -0.0, 0.0 and NaN are told apart).
template <class Row>
bool same_bits(const Row& a, const Row& b) {
  return std::memcmp(&a, &b, sizeof(Row)) == 0;
}

// Makes the first want.size() rows of the device table `dev` (F64 [capacity, fields]) hold `want`, given that it holds `known` once the
// queued work has run. A few changed fields (a scheduler's lr) are each written by a fill, whose value
// travels in the kernel's arguments; a new table, or many changes, is one upload.
template <class Row>
void write_rows(Tensor& dev, std::vector<Row>& known, const std::vector<Row>& want) {
  constexpr int64_t kFields = static_cast<int64_t>(sizeof(Row) / sizeof(double));
  constexpr size_t kMaxFills = 8;
  const auto rows = static_cast<int64_t>(want.size());
  std::vector<std::pair<int64_t, int64_t>> changed;  // (row, field)
  bool upload = known.size() != want.size();
  for (int64_t r = 0; r < rows && !upload; ++r) {
    if (same_bits(known[static_cast<size_t>(r)], want[static_cast<size_t>(r)])) continue;
    const auto* k = reinterpret_cast<const double*>(&known[static_cast<size_t>(r)]);
    const auto* w = reinterpret_cast<const double*>(&want[static_cast<size_t>(r)]);
    for (int64_t f = 0; f < kFields; ++f)
      if (std::memcmp(k + f, w + f, sizeof(double)) != 0) changed.push_back({r, f});
    upload = changed.size() > kMaxFills;
  }
  if (upload) {
    std::vector<Row> host = want;  // from_blob needs a mutable pointer; the upload copies it at once
    dev.narrow(0, 0, rows).copy_(from_blob(host.data(), {rows, kFields}, DType::F64));
  } else {
    for (const auto& [r, f] : changed)
      dev.select(0, r).select(0, f).fill_(reinterpret_cast<const double*>(&want[static_cast<size_t>(r)])[f]);
  }
  known = want;
}

}  // namespace

void OptimizerAccess::fused_step(Optimizer& o, OptimizerAlgo algo, const SlotsFn& slots, const InputsFn& inputs) {
  autograd::NoGradGuard no_grad;
  Optimizer::CaptureState* cs = o.capture_.get();  // null unless capturable
  const bool preparing = cs && cs->preparing;
  const bool prepared = cs && !preparing && cs->prepared;
  if (cs && !prepared) cs->hyper.clear();
  size_t visited = 0;  // parameters with a gradient so far (the index into cs->hyper)
  // One backend call per (device, dtype); the usual single-device model makes exactly one. A
  // capturable CUDA batch also gathers the rows of its device tables.
  struct Batch {
    std::pair<Device, DType> key;
    OptimizerStep step;
    std::vector<size_t> group_ids;  // the optimizer's group of each row of `groups`
    std::vector<OptimizerInputs> groups;
    std::vector<OptimizerParamScalars> records;
  };
  std::vector<Batch> batches;
  auto batch_for = [&](Device d, DType dt) -> Batch& {
    for (auto& b : batches)
      if (b.key.first == d && b.key.second == dt) return b;
    batches.push_back({{d, dt}, OptimizerStep{algo, {}}, {}, {}, {}});
    return batches.back();
  };
  size_t index = 0;
  std::vector<Tensor> written;
  for (size_t gi = 0; gi < o.groups_.size(); ++gi) {
    const Optimizer::Group& group = o.groups_[gi];
    const std::vector<Slot> group_slots = slots(group.options);
    const OptimizerInputs group_inputs = inputs(group.options);
    for (const Tensor& p : group.params) {
      Optimizer::ParamState& st = o.state_[index++];
      Tensor g = p.grad();
      if (!g.defined()) continue;
      EMBER_CHECK(g.shape() == p.shape() && g.device() == p.device(), o.type_, ".step: the gradient of parameter ",
                  index - 1, " has shape ", shape_str(g.shape()), " on ", g.device().str(), " but the parameter has ",
                  shape_str(p.shape()), " on ", p.device().str());
      OptimizerParam e;
      e.param = p;
      e.grad = g.to(p.dtype()).contiguous();
      bool first = false;
      for (const Slot& slot : group_slots) {
        auto it = st.buffers.find(slot.name);
        if (it == st.buffers.end()) {
          first = first || slot.from_grad;
          Tensor b = slot.from_grad ? empty_like(p) : full_like(p, slot.init);
          it = st.buffers.emplace(slot.name, b).first;
        } else if (it->second.device() != p.device() || it->second.dtype() != p.dtype()) {
          // The parameter was moved or cast (Module::to) after its state was made: follow it.
          it->second = it->second.to(p.dtype()).to(p.device()).contiguous();
        }
        e.state[slot.index] = it->second;
        written.push_back(it->second);
      }
      if (prepared) {
        EMBER_CHECK(visited < cs->hyper.size(), o.type_, ".step: more parameters have a gradient (", visited + 1,
                    " or more) than when prepare_step() ran (", cs->hyper.size(), "); prepare with the same gradients");
        e.hyper = cs->hyper[visited];
      } else {
        st.step += 1;
        e.hyper = optim_math::hyper_at(algo, group_inputs, static_cast<double>(st.step), first);
        if (cs) cs->hyper.push_back(e.hyper);
      }
      ++visited;
      written.push_back(p);
      Batch& b = batch_for(p.device(), p.dtype());
      if (cs && p.device().is_cuda() && !prepared) {
        size_t row = 0;
        while (row < b.group_ids.size() && b.group_ids[row] != gi) ++row;
        if (row == b.group_ids.size()) {
          b.group_ids.push_back(gi);
          b.groups.push_back(group_inputs);
        }
        // The step before this update (the kernel adds one, as the host just did).
        b.records.push_back({static_cast<double>(row), static_cast<double>(st.step - 1), first ? 1.0 : 0.0});
      }
      b.step.params.push_back(std::move(e));
    }
  }
  if (prepared)
    EMBER_CHECK(visited == cs->hyper.size(), o.type_, ".step: ", visited, " parameters have a gradient but ",
                cs->hyper.size(), " had one when prepare_step() ran; prepare with the same gradients");
  if (cs) {
    // The scalars of a CUDA batch are computed on the device by the update's first kernel from
    // tables at stable addresses: a step count there that the kernel advances, and the options
    // (lr...) written here when they changed. So a captured update replays with the options and
    // step counts of the moment it runs, and nothing is uploaded while a graph captures.
    for (Batch& b : batches) {
      const Device device = b.key.first;
      if (!device.is_cuda() || b.step.params.empty()) continue;
      EMBER_CHECK(prepared || !cuda::is_capturing(device.index), o.type_,
                  ".step: a capturable optimizer's step() is being captured in a CUDA graph on ", device.str(),
                  " without prepare_step(); call prepare_step() before capturing (and before each replay)");
      Optimizer::CaptureState::DeviceTables* t = nullptr;
      for (auto& d : cs->device)
        if (d.key == b.key) t = &d;
      if (!t) {
        t = &cs->device.emplace_back();
        t->key = b.key;
      }
      const auto n = static_cast<int64_t>(b.step.params.size());
      // n times 88 bytes: far from overflowing int64_t.
      const int64_t hyper_bytes = n * static_cast<int64_t>(sizeof(OptimizerHyper));
      if (prepared) {
        EMBER_CHECK(t->params.defined() && t->params_known.size() == static_cast<size_t>(n), o.type_,
                    ".step: the prepared scalars' tables do not fit ", n, " parameters; call prepare_step() again");
      } else {
        const auto rows = static_cast<int64_t>(b.groups.size());
        // A table grows, never shrinks, so its address stays while a batch's size only varies below
        // its largest (a parameter without a gradient now and then).
        if (!t->groups.defined() || t->groups.size(0) < rows) {
          if (t->groups.defined()) cs->retired.push_back(t->groups);
          t->groups = empty({rows, kOptimizerInputFields}, TensorOptions(DType::F64, device));
          t->groups_known.clear();
        }
        if (!t->params.defined() || t->params.size(0) < n) {
          if (t->params.defined()) {
            cs->retired.push_back(t->params);
            cs->retired.push_back(t->hyper);
          }
          t->params = empty({n, kOptimizerParamFields}, TensorOptions(DType::F64, device));
          t->params_known.clear();
          t->hyper = empty({hyper_bytes}, TensorOptions(DType::U8, device));
        }
        write_rows(t->groups, t->groups_known, b.groups);
        write_rows(t->params, t->params_known, b.records);
        for (OptimizerParamScalars& r : t->params_known) r.step += 1.0;  // what the update's kernel will do
      }
      b.step.device_groups = static_cast<const OptimizerInputs*>(t->groups.data_ptr());
      b.step.device_params = static_cast<OptimizerParamScalars*>(t->params.data_ptr());
      b.step.device_hyper = static_cast<OptimizerHyper*>(t->hyper.data_ptr());
    }
    if (preparing) {  // the host part only: the update runs at the next step()
      cs->preparing = false;
      cs->prepared = true;
      return;
    }
    cs->prepared = false;
  }
  for (Batch& b : batches) run_backend_step(b.key.first, b.step);
  for (const Tensor& t : written) t.impl()->storage->version++;
}

}  // namespace ember::optim
