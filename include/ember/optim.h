// ember::optim: optimizers (SGD, Adam, AdamW, RMSprop, Adagrad) following PyTorch's documented
// algorithms, learning-rate schedulers, gradient clipping and the L1 penalty.
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::optim {

// ---- typed options, one struct per optimizer (defaults as in PyTorch) ----
//
// Design: every setting of an optimizer lives in one plain struct (SGDOptions, AdamOptions, ...),
// used the same way for the optimizer's defaults and for each parameter group, as libtorch does.
// A group either takes the defaults or carries its own complete struct (ParamGroup::options), so
// any field can differ per group, is checked when set (ember::Error naming the optimizer, the
// group, the field and the value), and is read back typed: opt.options<SGDOptions>(g).momentum.
// Designated initializers keep a group short (`SGDOptions{.lr = 0.1, .momentum = 0.5}`); the
// fields a group does not name take PyTorch's defaults, as in libtorch, so start from a copy of
// the optimizer's defaults to change just one. No optional-of-every-field mirror structs to keep
// in step. Values a scheduler keeps per group ("initial_lr", "max_lr", ...) are not options: they
// live beside them (Optimizer::scheduler_values) and are saved with the group, where PyTorch and
// ember's earlier files keep them.

// p -= lr * update, where g = grad + weight_decay * p, and with momentum
//   buf = g on the first step, else momentum * buf + (1 - dampening) * g;
//   update = nesterov ? g + momentum * buf : buf.
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
  bool operator==(const SGDOptions&) const = default;
};

// Adam (Kingma & Ba, 2015) with bias correction and optional AMSGrad: m = lerp(m, g, 1 - beta1),
// v = beta2 v + (1 - beta2) g², p -= lr / (1 - beta1^t) * m / (sqrt(v̂) / sqrt(1 - beta2^t) + eps),
// v̂ = v or (amsgrad) the running max of v. weight_decay adds weight_decay * p to g (L2).
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
  bool maximize = false;
  bool operator==(const AdamOptions&) const = default;
};

// AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, p *= 1 - lr * weight_decay
// before the Adam update (weight_decay defaults to 0.01).
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;
  bool operator==(const AdamWOptions&) const = default;
};

// RMSprop (Hinton): v = alpha v + (1 - alpha) g²; centered subtracts the square of the running
// mean of g; p -= lr * g / (sqrt(v) + eps), through a momentum buffer when momentum > 0.
struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  bool maximize = false;
  bool operator==(const RMSpropOptions&) const = default;
};

// Adagrad (Duchi et al., 2011): sum += g², p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps).
struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
  bool maximize = false;
  bool operator==(const AdagradOptions&) const = default;
};

// The options of any optimizer; an optimizer holds the alternative of its own type for every group.
using AnyOptions = std::variant<SGDOptions, AdamOptions, AdamWOptions, RMSpropOptions, AdagradOptions>;

// Parameters that share options. Without `options` the group takes the optimizer's defaults;
// with them (the optimizer's own struct type) it takes those. `lr` and `weight_decay`, when set,
// override the field of whichever of the two applies (the common case, kept short).
struct ParamGroup {
  std::vector<Tensor> params;
  std::optional<double> lr;
  std::optional<double> weight_decay;
  std::optional<AnyOptions> options;
};

// The serialized form of a group's options: PyTorch's param_groups dict, by name ("lr",
// "momentum", "beta1", ...; flags 0 or 1), together with the group's scheduler values
// ("initial_lr", ...). This is what state_dict() gives and what checkpoints store.
using Hyperparameters = std::map<std::string, double>;

// An optimizer's state in serializable form (PyTorch's state_dict()).
struct OptimizerState {
  std::string type;  // "Adam", ...
  // "state.<parameter index>.<buffer>" (e.g. "state.0.exp_avg") and "state.<i>.step" (I64, 0-d).
  // Indices count parameters across groups in order. The tensors are the live state (not copies).
  std::vector<std::pair<std::string, Tensor>> tensors;
  struct Group {
    Hyperparameters options;      // the typed options by name, plus the scheduler values
    std::vector<int64_t> params;  // the parameter indices of the group
  };
  std::vector<Group> param_groups;
};

// The base of every optimizer: parameter groups with their typed options, per-parameter state,
// zero_grad, state_dict. step() updates every parameter that has a gradient (parameters without
// one are skipped, as in PyTorch). On CUDA all parameters of one dtype are updated by one fused
// kernel launch per 48 of them (nothing copied from the host); on the CPU one pass per
// parameter; both run the same per-element arithmetic.
class EMBER_API Optimizer {
 public:
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const std::string& type_name() const { return type_; }
  virtual void step() = 0;
  // Drops (set_to_none) or zeroes the gradient of every parameter.
  void zero_grad(bool set_to_none = true);

  // Adds a group (its parameters must not be in another group already).
  void add_param_group(const ParamGroup& group);
  size_t num_param_groups() const { return groups_.size(); }
  const std::vector<Tensor>& params(size_t group) const;
  // Every parameter, groups in order (the indices state_dict uses).
  std::vector<Tensor> parameters() const;

  // A group's options, typed: opt.options<SGDOptions>(g). Naming another optimizer's struct
  // throws ember::Error.
  template <class O>
  const O& options(size_t group) const {
    const O* o = std::get_if<O>(&group_options(group, options_index<O>()));
    return *o;  // group_options checked the alternative
  }
  const AnyOptions& any_options(size_t group) const { return group_options(group, -1); }
  // Replaces a group's options after checking them (the struct must be this optimizer's type).
  void set_options(size_t group, const AnyOptions& options);
  // The defaults groups without their own options took.
  const AnyOptions& defaults() const { return defaults_; }

  double lr(size_t group = 0) const;
  void set_lr(size_t group, double lr);
  // One option by its serialized name ("momentum", "beta1"; flags read 0 or 1), for code that
  // works across optimizers (OneCycleLR cycles "momentum" or "beta1"). set_option checks the group.
  bool has_option(const std::string& name) const;
  double option(size_t group, const std::string& name) const;
  void set_option(size_t group, const std::string& name, double value);

  // Values schedulers keep per group ("initial_lr", "max_lr", "min_lr", ...), beside the options.
  // A name may not be one of the options'.
  const std::map<std::string, double>& scheduler_values(size_t group) const;
  bool has_scheduler_value(size_t group, const std::string& name) const;
  double scheduler_value(size_t group, const std::string& name) const;
  void set_scheduler_value(size_t group, const std::string& name, double value);

  // Per-parameter state by index (see parameters()): how many updates it had and its buffers
  // ("exp_avg", "momentum_buffer", ...), empty before its first update.
  int64_t state_step(size_t param_index) const;
  const std::map<std::string, Tensor>& state(size_t param_index) const;

  // ---- CUDA graphs (ember/cuda.h's Graph) ----
  // Capturable (off by default): on a CUDA device, the update's scalars are computed on the device
  // when the update runs. The optimizer keeps, per (device, dtype), a table of its groups' options
  // and a table of each parameter's step count; the update's first kernel adds one to each count
  // and computes the scalars (bias corrections, Adagrad's decayed lr, ...) with the host's own
  // arithmetic (optim_math::hyper_at), so a replayed graph counts its steps and follows a
  // scheduler's lr, and equals an eager update bit for bit. step() / prepare_step() write an option
  // there only when it changed (one fill kernel per changed value, the value in its arguments; a new
  // table is one upload), so a replay needs no copy from the host. The host keeps its step counts in
  // step (state_dict, checkpoints). No effect on the CPU.
  void set_capturable(bool capturable);
  bool capturable() const { return capturable_; }
  // The host part of the next step() without the update: the host step counts, the missing state
  // buffers, and the device tables' writes for options that changed (a scheduler's lr). The next
  // step() then only queues the update (with the parameters that have a gradient then, which must
  // be the same ones). Needs set_capturable(true). Call it before Graph::capture, whose recorded
  // step() must not copy from the host, and before each replay.
  void prepare_step();

  OptimizerState state_dict() const;
  // Restores state, group options and scheduler values saved from an optimizer of the same type
  // over parameters of the same shapes, copying the tensors to each parameter's device and dtype.
  void load_state_dict(const OptimizerState& state);

 protected:
  // Subclass constructors pass their defaults (checked here), then add their groups.
  Optimizer(std::string type, AnyOptions defaults);
  // Throws ember::Error naming the optimizer, `where` ("parameter group 1", "the default
  // options") and the field and value when the options are invalid.
  virtual void validate(const AnyOptions& options, const std::string& where) const = 0;
  // The state buffers a parameter of a group with these options has after an update.
  virtual std::vector<std::string> buffer_names(const AnyOptions& options) const = 0;

  struct Group {
    std::vector<Tensor> params;
    AnyOptions options;
    std::map<std::string, double> scheduler_values;
  };
  struct ParamState {
    int64_t step = 0;
    std::map<std::string, Tensor> buffers;
  };
  std::string type_;
  AnyOptions defaults_;
  std::vector<Group> groups_;
  std::vector<ParamState> state_;  // by parameter index

  friend struct OptimizerAccess;  // the fused update (cpp/optim)
  struct CaptureState;              // cpp/optim/optim_internal.h
  bool capturable_ = false;
  std::unique_ptr<CaptureState> capture_;  // made by set_capturable(true)

  // validate() with `options` of this optimizer's type checked first.
  void check_options(const AnyOptions& options, const std::string& where) const;

 private:
  template <class O>
  static constexpr int options_index() {
    constexpr AnyOptions probe{O{}};
    return static_cast<int>(probe.index());
  }
  // The group's options after checking the group exists and (want >= 0) holds alternative `want`.
  const AnyOptions& group_options(size_t group, int want) const;
};

// ---- the optimizers ----

class EMBER_API SGD : public Optimizer {
 public:
  SGD(const std::vector<Tensor>& params, const SGDOptions& options = {});
  SGD(const std::vector<ParamGroup>& groups, const SGDOptions& defaults = {});
  void step() override;

 protected:
  void validate(const AnyOptions& o, const std::string& where) const override;
  std::vector<std::string> buffer_names(const AnyOptions& o) const override;
};

class EMBER_API Adam : public Optimizer {
 public:
  Adam(const std::vector<Tensor>& params, const AdamOptions& options = {});
  Adam(const std::vector<ParamGroup>& groups, const AdamOptions& defaults = {});
  void step() override;

 protected:
  Adam(std::string type, const std::vector<ParamGroup>& groups, AnyOptions defaults);
  void validate(const AnyOptions& o, const std::string& where) const override;
  std::vector<std::string> buffer_names(const AnyOptions& o) const override;
  bool decoupled_weight_decay_ = false;
};

// Groups of an AdamW hold AdamWOptions.
class EMBER_API AdamW : public Adam {
 public:
  AdamW(const std::vector<Tensor>& params, const AdamWOptions& options = {});
  AdamW(const std::vector<ParamGroup>& groups, const AdamWOptions& defaults = {});
};

class EMBER_API RMSprop : public Optimizer {
 public:
  RMSprop(const std::vector<Tensor>& params, const RMSpropOptions& options = {});
  RMSprop(const std::vector<ParamGroup>& groups, const RMSpropOptions& defaults = {});
  void step() override;

 protected:
  void validate(const AnyOptions& o, const std::string& where) const override;
  std::vector<std::string> buffer_names(const AnyOptions& o) const override;
};

class EMBER_API Adagrad : public Optimizer {
 public:
  Adagrad(const std::vector<Tensor>& params, const AdagradOptions& options = {});
  Adagrad(const std::vector<ParamGroup>& groups, const AdagradOptions& defaults = {});
  void step() override;

 protected:
  void validate(const AnyOptions& o, const std::string& where) const override;
  std::vector<std::string> buffer_names(const AnyOptions& o) const override;
};

// ---- regularisation and gradient clipping ----

// lambda * sum of |p| over the parameters: add it to the loss for an L1 penalty (L2 is the
// optimizers' weight_decay).
EMBER_API Tensor l1_penalty(const std::vector<Tensor>& params, double lambda);

// Scales every gradient by min(1, max_norm / (total_norm + 1e-6)) where total_norm is the
// norm_type-norm of all gradients together (norm_type may be INFINITY), and returns total_norm
// (0-d, on the gradients' device). With error_if_nonfinite a NaN or infinite norm throws before
// any gradient changes. Parameters without a gradient are skipped.
EMBER_API Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                                 bool error_if_nonfinite = false);
// Clamps every gradient element into [-clip_value, clip_value].
EMBER_API void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

// ---- learning-rate schedulers ----

// A scheduler's state in serializable form: scalars, lists and (SequentialLR, ChainedScheduler)
// the children's.
struct SchedulerState {
  std::string type;
  std::map<std::string, double> values;
  std::map<std::string, std::vector<double>> lists;
  std::vector<SchedulerState> children;
};

// The base of every scheduler: the optimizer it drives, its epoch counter, the base and last
// learning rates, step(), and state_dict()/load_state_dict(). Every scheduler is stepped through
// this interface: step() once per epoch (or per batch for OneCycleLR) after optimizer.step(),
// or step(metric) for a scheduler that follows a metric (ReduceLROnPlateau). A scheduler that
// uses no metric refuses step(metric), and ReduceLROnPlateau refuses step(), with an ember::Error
// (PyTorch would read the number as an epoch, or fail with a TypeError). Composites
// (SequentialLR, ChainedScheduler) take any scheduler but ReduceLROnPlateau, which PyTorch's
// refuse too since they step their schedulers without a metric.
class EMBER_API LRScheduler {
 public:
  virtual ~LRScheduler();
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  const std::string& type_name() const { return type_; }
  Optimizer& optimizer() const { return *opt_; }
  int64_t last_epoch() const { return last_epoch_; }
  // The learning rate of each group the last step set.
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }

  virtual void step() = 0;
  virtual void step(double metric);
  // Whether step(metric) is the way to step this scheduler.
  virtual bool uses_metric() const { return false; }

  virtual SchedulerState state_dict() const;
  // Restores a state saved from a scheduler of the same type (and, for a composite, the same
  // structure) over as many groups.
  virtual void load_state_dict(const SchedulerState& state);

 protected:
  LRScheduler(std::string type, Optimizer& optimizer);
  // Each group's "initial_lr" scheduler value (set to its lr when absent) becomes its base lr,
  // as in PyTorch.
  void init_base_lrs();
  void set_lrs(const std::vector<double>& lrs);
  std::vector<double> current_lrs() const;
  // The subclass's own configuration and state, beyond the base's counters and lrs.
  virtual void save_extra(SchedulerState& s) const {}
  virtual void load_extra(const SchedulerState& s) {}
  // What a composite asks of its children. begin(): the epoch-0 step taken from the optimizer's
  // current lrs (the step a constructor takes). restart(): start again at epoch 0 from the base
  // lrs, as at a SequentialLR milestone: PyTorch's closed form at epoch 0 for a leaf scheduler;
  // by default every group's lr back to its "initial_lr", then begin().
  virtual void begin() = 0;
  virtual void restart();
  // PyTorch's SequentialLR.recursive_undo: a leaf scheduler's epoch counter goes back by one (its
  // constructor's step is undone), a composite passes it on to its children. -1 (not started) is
  // as far back as it goes, where PyTorch would count a twice-nested child down to -2.
  virtual void undo_initial_step() { last_epoch_ = std::max<int64_t>(last_epoch_ - 1, -1); }
  static void begin_child(LRScheduler& s) { s.begin(); }
  static void restart_child(LRScheduler& s) { s.restart(); }
  static void undo_child(LRScheduler& s) { s.undo_initial_step(); }

  std::string type_;
  Optimizer* opt_;
  int64_t last_epoch_ = -1;
  int64_t step_count_ = 0;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
};

// Schedulers whose learning rate follows from the epoch counter. The constructor performs the
// initial step (epoch 0), as PyTorch's; call step() once per epoch (or iteration) after
// optimizer.step(). Each computes PyTorch's recursive form from the group's current lr, so
// schedulers compose the way they do in PyTorch.
class EMBER_API EpochLRScheduler : public LRScheduler {
 public:
  using LRScheduler::step;
  void step() override;
  // Jumps to `epoch` using the closed form (PyTorch's deprecated step(epoch)).
  void step_to(int64_t epoch);

 protected:
  EpochLRScheduler(std::string type, Optimizer& optimizer) : LRScheduler(std::move(type), optimizer) {}
  // Runs the first step; each concrete constructor calls it last (virtual calls need the
  // derived object constructed).
  void initial_step();
  void begin() override;
  void restart() override { step_to(0); }
  virtual std::vector<double> get_lr() = 0;
  virtual std::vector<double> closed_form_lr() { return get_lr(); }
};

// lr = base_lr * gamma^floor(epoch / step_size).
class EMBER_API StepLR : public EpochLRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  int64_t step_size_;
  double gamma_;
};

// lr = base_lr * gamma^(number of milestones <= epoch); a milestone listed twice counts twice.
class EMBER_API MultiStepLR : public EpochLRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  std::vector<int64_t> milestones_;  // sorted
  double gamma_;
};

// lr = base_lr * gamma^epoch.
class EMBER_API ExponentialLR : public EpochLRScheduler {
 public:
  ExponentialLR(Optimizer& optimizer, double gamma);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  double gamma_;
};

// lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / t_max)) / 2 (SGDR without restarts).
class EMBER_API CosineAnnealingLR : public EpochLRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min = 0.0);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  int64_t t_max_;
  double eta_min_;
};

// Linear warm-up: lr = base_lr * (start_factor + (end_factor - start_factor) min(epoch, total_iters) / total_iters).
class EMBER_API LinearLR : public EpochLRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3.0, double end_factor = 1.0, int64_t total_iters = 5);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  double start_factor_;
  double end_factor_;
  int64_t total_iters_;
};

// The 1cycle policy (Smith & Topin, 2017), stepped once per batch: from max_lr / div_factor up
// to max_lr over pct_start of total_steps, then down to initial_lr / final_div_factor (three
// phases: up, back down to the initial lr, then to the minimum). With cycle_momentum the group's
// momentum (or Adam's beta1) moves inversely between max_momentum and base_momentum.
enum class AnnealStrategy { Cos, Linear };
struct OneCycleLROptions {
  double pct_start = 0.3;
  AnnealStrategy anneal_strategy = AnnealStrategy::Cos;
  bool cycle_momentum = true;
  double base_momentum = 0.85;
  double max_momentum = 0.95;
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  bool three_phase = false;
};
class EMBER_API OneCycleLR : public EpochLRScheduler {
 public:
  // One max_lr for every group, or one per group.
  OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, const OneCycleLROptions& options = {});
  OneCycleLR(Optimizer& optimizer, const std::vector<double>& max_lrs, int64_t total_steps,
             const OneCycleLROptions& options = {});
  int64_t total_steps() const { return total_steps_; }

 protected:
  std::vector<double> get_lr() override;
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  struct Phase {
    double end_step;
    std::string start_lr, end_lr;  // scheduler value names (Optimizer::scheduler_values)
    std::string start_momentum, end_momentum;
  };
  void build_phases();
  int64_t total_steps_;
  OneCycleLROptions o_;
  std::vector<Phase> phases_;
  bool use_beta1_ = false;
};

// Runs `schedulers` one after another, switching at each milestone (epoch counts), e.g. a
// LinearLR warm-up followed by CosineAnnealingLR. All must drive `optimizer`. Any scheduler but
// ReduceLROnPlateau may be a child, a SequentialLR or ChainedScheduler included: at its milestone
// a child starts again at its own epoch 0 from the base lrs, so each part of the schedule runs as
// it would alone. (PyTorch 2.x fails at a milestone whose child is a composite, and a composite
// first child runs one epoch ahead there: tests/fixtures/make_torch_optim_groups.py shows both.)
class EMBER_API SequentialLR : public LRScheduler {
 public:
  SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones);
  using LRScheduler::step;
  void step() override;
  SchedulerState state_dict() const override;
  void load_state_dict(const SchedulerState& state) override;

 protected:
  void begin() override;
  void undo_initial_step() override;

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

// PyTorch's ChainedScheduler: each step() steps every scheduler it holds, in order, so their
// recursive forms multiply (StepLR and ExponentialLR together: base * gamma1^(t/s) * gamma2^t);
// get_last_lr() is the lr the last one left. Any scheduler but ReduceLROnPlateau may be held,
// composites included.
class EMBER_API ChainedScheduler : public LRScheduler {
 public:
  explicit ChainedScheduler(std::vector<std::shared_ptr<LRScheduler>> schedulers);
  using LRScheduler::step;
  void step() override;
  SchedulerState state_dict() const override;
  void load_state_dict(const SchedulerState& state) override;

 protected:
  void begin() override;
  void undo_initial_step() override;

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
};

// Divides the learning rate by 1/factor once the metric passed to step() has not improved for
// more than `patience` epochs, then waits `cooldown` epochs before counting again.
struct ReduceLROnPlateauOptions {
  enum class Mode { Min, Max };
  enum class ThresholdMode { Rel, Abs };
  Mode mode = Mode::Min;
  double factor = 0.1;
  int64_t patience = 10;
  double threshold = 1e-4;
  ThresholdMode threshold_mode = ThresholdMode::Rel;
  int64_t cooldown = 0;
  double min_lr = 0.0;
  std::vector<double> min_lrs;  // one per group; overrides min_lr when given
  double eps = 1e-8;            // changes smaller than this are not applied
};
class EMBER_API ReduceLROnPlateau : public LRScheduler {
 public:
  ReduceLROnPlateau(Optimizer& optimizer, const ReduceLROnPlateauOptions& options = {});
  void step() override;  // throws: the metric is needed
  void step(double metric) override;
  bool uses_metric() const override { return true; }
  double best() const { return best_; }
  int64_t num_bad_epochs() const { return num_bad_epochs_; }
  int64_t cooldown_counter() const { return cooldown_counter_; }

 protected:
  void save_extra(SchedulerState& s) const override;
  void load_extra(const SchedulerState& s) override;
  // Back to the state of a new ReduceLROnPlateau: no best metric yet, no bad epochs, no cooldown.
  void begin() override;

 private:
  bool is_better(double a, double best) const;
  ReduceLROnPlateauOptions o_;
  std::vector<double> min_lrs_;
  double best_;
  int64_t num_bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
};

}  // namespace ember::optim
