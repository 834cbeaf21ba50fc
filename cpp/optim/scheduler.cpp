// Learning-rate schedulers, each a transcription of PyTorch's torch.optim.lr_scheduler: the
// recursive get_lr() used by step(), the closed form used by step(epoch), and state_dict().
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "cpp/optim/optim_internal.h"

namespace ember::optim {
namespace {

constexpr double kPi = std::numbers::pi;

// Python's a % b for b > 0: never negative.
int64_t py_mod(int64_t a, int64_t b) {
  const int64_t r = a % b;
  return r < 0 ? r + b : r;
}

double value_of(const SchedulerState& s, const char* key) {
  auto it = s.values.find(key);
  EMBER_CHECK(it != s.values.end(), s.type, ".load_state_dict: the state lacks \"", key, "\"");
  return it->second;
}

const std::vector<double>& list_of(const SchedulerState& s, const char* key) {
  auto it = s.lists.find(key);
  EMBER_CHECK(it != s.lists.end(), s.type, ".load_state_dict: the state lacks the list \"", key, "\"");
  return it->second;
}

// A saved counter or size: casting a NaN, a fraction or a double beyond int64_t would be undefined
// or silently wrong, so each is checked first.
int64_t int_of(const SchedulerState& s, const char* key) {
  const double v = value_of(s, key);
  EMBER_CHECK(std::isfinite(v) && v == std::floor(v) && std::abs(v) <= 9007199254740992.0, s.type,
              ".load_state_dict: \"", key, "\" must be an integer (at most 2^53 in size), got ", v);
  return static_cast<int64_t>(v);
}

// The checks each constructor makes, shared with load_state_dict so that a restored state is held to
// the same rules as a built one (`who` is "StepLR" or "StepLR.load_state_dict").
void check_gamma(const std::string& who, double gamma) {
  EMBER_CHECK(std::isfinite(gamma) && gamma >= 0.0, who, ": gamma must be finite and >= 0, got ", gamma);
}
void check_eta_min(const std::string& who, double eta_min) {
  EMBER_CHECK(std::isfinite(eta_min) && eta_min >= 0.0, who, ": eta_min must be finite and >= 0, got ", eta_min);
}
void check_positive(const std::string& who, const char* what, int64_t v) {
  EMBER_CHECK(v > 0, who, ": ", what, " must be positive, got ", v);
}
void check_linear(const std::string& who, double start_factor, double end_factor) {
  EMBER_CHECK(start_factor > 0.0 && start_factor <= 1.0, who, ": start_factor must be in (0, 1], got ", start_factor);
  EMBER_CHECK(end_factor >= 0.0 && end_factor <= 1.0, who, ": end_factor must be in [0, 1], got ", end_factor);
}
void check_one_cycle(const std::string& who, const OneCycleLROptions& o) {
  EMBER_CHECK(o.pct_start >= 0.0 && o.pct_start <= 1.0, who, ": pct_start must be in [0, 1], got ", o.pct_start);
  EMBER_CHECK(std::isfinite(o.div_factor) && std::isfinite(o.final_div_factor) && o.div_factor > 0.0 &&
                  o.final_div_factor > 0.0,
              who, ": div_factor and final_div_factor must be positive, got ", o.div_factor, " and ",
              o.final_div_factor);
  if (o.cycle_momentum)
    EMBER_CHECK(o.base_momentum >= 0.0 && o.max_momentum >= o.base_momentum && o.max_momentum < 1.0 + 1e-12, who,
                ": needs 0 <= base_momentum <= max_momentum, got ", o.base_momentum, " and ", o.max_momentum);
}
void check_plateau(const std::string& who, const ReduceLROnPlateauOptions& o) {
  EMBER_CHECK(o.factor >= 0.0 && o.factor < 1.0, who, ": factor must be in [0, 1), got ", o.factor);
  EMBER_CHECK(o.patience >= 0 && o.cooldown >= 0, who, ": patience and cooldown must be >= 0, got ", o.patience,
              " and ", o.cooldown);
  EMBER_CHECK(std::isfinite(o.threshold) && o.threshold >= 0.0, who, ": threshold must be >= 0, got ", o.threshold);
  EMBER_CHECK(std::isfinite(o.eps) && o.eps >= 0.0, who, ": eps must be >= 0, got ", o.eps);
}
void check_lrs(const std::string& who, const char* what, const std::vector<double>& lrs) {
  for (double v : lrs) EMBER_CHECK(std::isfinite(v) && v >= 0.0, who, ": ", what, " must be finite and >= 0, got ", v);
}

}  // namespace

// ---- LRScheduler ----

LRScheduler::LRScheduler(std::string type, Optimizer& optimizer) : type_(std::move(type)), opt_(&optimizer) {}

LRScheduler::~LRScheduler() = default;

void LRScheduler::init_base_lrs() {
  base_lrs_.clear();
  for (size_t g = 0; g < opt_->num_param_groups(); ++g) {
    if (!opt_->has_scheduler_value(g, "initial_lr")) opt_->set_scheduler_value(g, "initial_lr", opt_->lr(g));
    base_lrs_.push_back(opt_->scheduler_value(g, "initial_lr"));
  }
}

std::vector<double> LRScheduler::current_lrs() const {
  std::vector<double> lrs;
  for (size_t g = 0; g < opt_->num_param_groups(); ++g) lrs.push_back(opt_->lr(g));
  return lrs;
}

void LRScheduler::step(double metric) {
  throw Error(detail::str_cat(type_, ".step(", metric, "): ", type_, " follows no metric; call step() (only "
                              "ReduceLROnPlateau takes one)"));
}

void LRScheduler::restart() {
  for (size_t g = 0; g < opt_->num_param_groups(); ++g)
    opt_->set_lr(g, opt_->scheduler_value(g, "initial_lr"));
  begin();
}

void LRScheduler::set_lrs(const std::vector<double>& lrs) {
  EMBER_CHECK(lrs.size() == opt_->num_param_groups(), type_, ": the optimizer has ", opt_->num_param_groups(),
              " parameter groups but the scheduler was built for ", lrs.size(),
              "; build the scheduler after adding every group");
  last_lr_.clear();
  for (size_t g = 0; g < lrs.size(); ++g) {
    opt_->set_lr(g, lrs[g]);
    last_lr_.push_back(opt_->lr(g));
  }
}

SchedulerState LRScheduler::state_dict() const {
  SchedulerState s;
  s.type = type_;
  s.values["last_epoch"] = static_cast<double>(last_epoch_);
  s.values["step_count"] = static_cast<double>(step_count_);
  s.lists["base_lrs"] = base_lrs_;
  s.lists["last_lr"] = last_lr_;
  save_extra(s);
  return s;
}

void LRScheduler::load_state_dict(const SchedulerState& s) {
  EMBER_CHECK(s.type == type_, type_, ".load_state_dict: the state was saved by a ", s.type.empty() ? "?" : s.type,
              " scheduler; load it into a scheduler of that type");
  const std::vector<double>& base = list_of(s, "base_lrs");
  const std::vector<double>& last = list_of(s, "last_lr");
  EMBER_CHECK(base.size() == opt_->num_param_groups() && last.size() == opt_->num_param_groups(), type_,
              ".load_state_dict: the state covers ", base.size(), " parameter group(s) but the optimizer has ",
              opt_->num_param_groups());
  const std::string who = type_ + ".load_state_dict";
  check_lrs(who, "base_lrs", base);
  check_lrs(who, "last_lr", last);
  const int64_t last_epoch = int_of(s, "last_epoch");
  const int64_t step_count = int_of(s, "step_count");
  // PyTorch's schedulers start at last_epoch -1 and count up; step_count counts step() calls.
  EMBER_CHECK(last_epoch >= -1 && step_count >= 0, who, ": last_epoch ", last_epoch, " and step_count ", step_count,
              " must be >= -1 and >= 0");
  load_extra(s);
  last_epoch_ = last_epoch;
  step_count_ = step_count;
  base_lrs_ = base;
  last_lr_ = last;
}

// ---- EpochLRScheduler ----

void EpochLRScheduler::initial_step() {
  step_count_ = 0;
  step();
}

void EpochLRScheduler::begin() {
  last_epoch_ = -1;
  initial_step();
}

void EpochLRScheduler::step() {
  ++step_count_;
  ++last_epoch_;
  set_lrs(get_lr());
}

void EpochLRScheduler::step_to(int64_t epoch) {
  EMBER_CHECK(epoch >= 0, type_, ".step_to(epoch): epoch must be >= 0, got ", epoch);
  ++step_count_;
  last_epoch_ = epoch;
  set_lrs(closed_form_lr());
}

// ---- StepLR ----

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : EpochLRScheduler("StepLR", optimizer), step_size_(step_size), gamma_(gamma) {
  EMBER_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
  check_gamma("StepLR", gamma);
  init_base_lrs();
  initial_step();
}

std::vector<double> StepLR::get_lr() {
  std::vector<double> lrs = current_lrs();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return lrs;
  for (double& lr : lrs) lr *= gamma_;
  return lrs;
}

std::vector<double> StepLR::closed_form_lr() {
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(gamma_, static_cast<double>(last_epoch_ / step_size_)));
  return lrs;
}

void StepLR::save_extra(SchedulerState& s) const {
  s.values["step_size"] = static_cast<double>(step_size_);
  s.values["gamma"] = gamma_;
}

void StepLR::load_extra(const SchedulerState& s) {
  const int64_t step_size = int_of(s, "step_size");
  check_positive("StepLR.load_state_dict", "step_size", step_size);
  const double gamma = value_of(s, "gamma");
  check_gamma("StepLR.load_state_dict", gamma);
  step_size_ = step_size;
  gamma_ = gamma;
}

// ---- MultiStepLR ----

MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma)
    : EpochLRScheduler("MultiStepLR", optimizer), milestones_(std::move(milestones)), gamma_(gamma) {
  check_gamma("MultiStepLR", gamma);
  for (int64_t m : milestones_) EMBER_CHECK(m >= 0, "MultiStepLR: milestones must be >= 0, got ", m);
  std::sort(milestones_.begin(), milestones_.end());
  init_base_lrs();
  initial_step();
}

std::vector<double> MultiStepLR::get_lr() {
  std::vector<double> lrs = current_lrs();
  const auto hits = std::count(milestones_.begin(), milestones_.end(), last_epoch_);
  if (hits == 0) return lrs;
  for (double& lr : lrs) lr *= std::pow(gamma_, static_cast<double>(hits));
  return lrs;
}

std::vector<double> MultiStepLR::closed_form_lr() {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(gamma_, static_cast<double>(passed)));
  return lrs;
}

void MultiStepLR::save_extra(SchedulerState& s) const {
  s.values["gamma"] = gamma_;
  auto& m = s.lists["milestones"];
  for (int64_t v : milestones_) m.push_back(static_cast<double>(v));
}

void MultiStepLR::load_extra(const SchedulerState& s) {
  std::vector<int64_t> m;
  for (double v : list_of(s, "milestones")) {
    EMBER_CHECK(std::isfinite(v) && v == std::floor(v) && v >= 0.0 && v <= 9007199254740992.0,
                "MultiStepLR.load_state_dict: milestones must be integers >= 0, got ", v);
    m.push_back(static_cast<int64_t>(v));
  }
  std::sort(m.begin(), m.end());
  const double gamma = value_of(s, "gamma");
  check_gamma("MultiStepLR.load_state_dict", gamma);
  gamma_ = gamma;
  milestones_ = std::move(m);
}

// ---- ExponentialLR ----

ExponentialLR::ExponentialLR(Optimizer& optimizer, double gamma) : EpochLRScheduler("ExponentialLR", optimizer), gamma_(gamma) {
  check_gamma("ExponentialLR", gamma);
  init_base_lrs();
  initial_step();
}

std::vector<double> ExponentialLR::get_lr() {
  std::vector<double> lrs = current_lrs();
  if (last_epoch_ == 0) return lrs;
  for (double& lr : lrs) lr *= gamma_;
  return lrs;
}

std::vector<double> ExponentialLR::closed_form_lr() {
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(gamma_, static_cast<double>(last_epoch_)));
  return lrs;
}

void ExponentialLR::save_extra(SchedulerState& s) const { s.values["gamma"] = gamma_; }
void ExponentialLR::load_extra(const SchedulerState& s) {
  const double gamma = value_of(s, "gamma");
  check_gamma("ExponentialLR.load_state_dict", gamma);
  gamma_ = gamma;
}

// ---- CosineAnnealingLR ----

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min)
    : EpochLRScheduler("CosineAnnealingLR", optimizer), t_max_(t_max), eta_min_(eta_min) {
  check_positive("CosineAnnealingLR", "t_max", t_max);
  check_eta_min("CosineAnnealingLR", eta_min);
  init_base_lrs();
  initial_step();
}

std::vector<double> CosineAnnealingLR::get_lr() {
  std::vector<double> lrs = current_lrs();
  const double t = static_cast<double>(last_epoch_), T = static_cast<double>(t_max_);
  if (last_epoch_ == 0) return lrs;
  if (step_count_ == 1 && last_epoch_ > 0) {
    for (size_t g = 0; g < lrs.size(); ++g)
      lrs[g] = eta_min_ + (base_lrs_[g] - eta_min_) * (1.0 + std::cos(t * kPi / T)) / 2.0;
    return lrs;
  }
  if (py_mod(last_epoch_ - 1 - t_max_, 2 * t_max_) == 0) {
    for (size_t g = 0; g < lrs.size(); ++g) lrs[g] = lrs[g] + (base_lrs_[g] - eta_min_) * (1.0 - std::cos(kPi / T)) / 2.0;
    return lrs;
  }
  for (double& lr : lrs)
    lr = (1.0 + std::cos(kPi * t / T)) / (1.0 + std::cos(kPi * (t - 1.0) / T)) * (lr - eta_min_) + eta_min_;
  return lrs;
}

std::vector<double> CosineAnnealingLR::closed_form_lr() {
  std::vector<double> lrs;
  const double t = static_cast<double>(last_epoch_), T = static_cast<double>(t_max_);
  for (double base : base_lrs_) lrs.push_back(eta_min_ + (base - eta_min_) * (1.0 + std::cos(kPi * t / T)) / 2.0);
  return lrs;
}

void CosineAnnealingLR::save_extra(SchedulerState& s) const {
  s.values["t_max"] = static_cast<double>(t_max_);
  s.values["eta_min"] = eta_min_;
}

void CosineAnnealingLR::load_extra(const SchedulerState& s) {
  const int64_t t_max = int_of(s, "t_max");
  check_positive("CosineAnnealingLR.load_state_dict", "t_max", t_max);
  const double eta_min = value_of(s, "eta_min");
  check_eta_min("CosineAnnealingLR.load_state_dict", eta_min);
  t_max_ = t_max;
  eta_min_ = eta_min;
}

// ---- LinearLR ----

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters)
    : EpochLRScheduler("LinearLR", optimizer),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  check_linear("LinearLR", start_factor, end_factor);
  EMBER_CHECK(total_iters > 0, "LinearLR: total_iters must be positive, got ", total_iters);
  init_base_lrs();
  initial_step();
}

std::vector<double> LinearLR::get_lr() {
  std::vector<double> lrs = current_lrs();
  if (last_epoch_ == 0) {
    for (double& lr : lrs) lr *= start_factor_;
    return lrs;
  }
  if (last_epoch_ > total_iters_) return lrs;
  const double d = end_factor_ - start_factor_;
  const double factor = 1.0 + d / (static_cast<double>(total_iters_) * start_factor_ +
                                   static_cast<double>(last_epoch_ - 1) * d);
  for (double& lr : lrs) lr *= factor;
  return lrs;
}

std::vector<double> LinearLR::closed_form_lr() {
  std::vector<double> lrs;
  const double progress = static_cast<double>(std::min(total_iters_, last_epoch_)) / static_cast<double>(total_iters_);
  for (double base : base_lrs_) lrs.push_back(base * (start_factor_ + (end_factor_ - start_factor_) * progress));
  return lrs;
}

void LinearLR::save_extra(SchedulerState& s) const {
  s.values["start_factor"] = start_factor_;
  s.values["end_factor"] = end_factor_;
  s.values["total_iters"] = static_cast<double>(total_iters_);
}

void LinearLR::load_extra(const SchedulerState& s) {
  const int64_t total = int_of(s, "total_iters");
  check_positive("LinearLR.load_state_dict", "total_iters", total);
  const double start_factor = value_of(s, "start_factor"), end_factor = value_of(s, "end_factor");
  check_linear("LinearLR.load_state_dict", start_factor, end_factor);
  start_factor_ = start_factor;
  end_factor_ = end_factor;
  total_iters_ = total;
}

// ---- OneCycleLR ----

OneCycleLR::OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, const OneCycleLROptions& o)
    : OneCycleLR(optimizer, std::vector<double>(optimizer.num_param_groups(), max_lr), total_steps, o) {}

OneCycleLR::OneCycleLR(Optimizer& optimizer, const std::vector<double>& max_lrs, int64_t total_steps,
                       const OneCycleLROptions& o)
    : EpochLRScheduler("OneCycleLR", optimizer), total_steps_(total_steps), o_(o) {
  EMBER_CHECK(total_steps > 0, "OneCycleLR: total_steps must be positive, got ", total_steps,
              " (epochs * steps_per_epoch)");
  EMBER_CHECK(max_lrs.size() == optimizer.num_param_groups(), "OneCycleLR: got ", max_lrs.size(),
              " max_lr value(s) for ", optimizer.num_param_groups(), " parameter group(s)");
  for (double m : max_lrs) EMBER_CHECK(std::isfinite(m) && m >= 0.0, "OneCycleLR: max_lr must be >= 0, got ", m);
  check_one_cycle("OneCycleLR", o);
  if (o.cycle_momentum) {
    EMBER_CHECK(optimizer.has_option("momentum") || optimizer.has_option("beta1"), "OneCycleLR: cycle_momentum needs "
                "an optimizer with momentum or beta1, and ", optimizer.type_name(), " has neither; pass "
                "cycle_momentum=false");
    use_beta1_ = optimizer.has_option("beta1");
  }
  build_phases();
  for (size_t g = 0; g < optimizer.num_param_groups(); ++g) {
    const double initial = max_lrs[g] / o.div_factor;
    optimizer.set_scheduler_value(g, "initial_lr", initial);
    optimizer.set_scheduler_value(g, "max_lr", max_lrs[g]);
    optimizer.set_scheduler_value(g, "min_lr", initial / o.final_div_factor);
    if (o.cycle_momentum) {
      optimizer.set_option(g, use_beta1_ ? "beta1" : "momentum", o.max_momentum);
      optimizer.set_scheduler_value(g, "max_momentum", o.max_momentum);
      optimizer.set_scheduler_value(g, "base_momentum", o.base_momentum);
    }
  }
  init_base_lrs();
  initial_step();
}

void OneCycleLR::build_phases() {
  const double total = static_cast<double>(total_steps_);
  if (o_.three_phase) {
    phases_ = {{o_.pct_start * total - 1.0, "initial_lr", "max_lr", "max_momentum", "base_momentum"},
               {2.0 * o_.pct_start * total - 2.0, "max_lr", "initial_lr", "base_momentum", "max_momentum"},
               {total - 1.0, "initial_lr", "min_lr", "max_momentum", "max_momentum"}};
  } else {
    phases_ = {{o_.pct_start * total - 1.0, "initial_lr", "max_lr", "max_momentum", "base_momentum"},
               {total - 1.0, "max_lr", "min_lr", "base_momentum", "max_momentum"}};
  }
}

std::vector<double> OneCycleLR::get_lr() {
  EMBER_CHECK(last_epoch_ <= total_steps_, "OneCycleLR: stepped ", last_epoch_, " times but total_steps is ",
              total_steps_, "; the schedule is over (step it once per batch, total_steps = epochs * batches)");
  auto anneal = [&](double start, double end, double pct) {
    if (o_.anneal_strategy == AnnealStrategy::Linear) return (end - start) * pct + start;
    const double cos_out = std::cos(kPi * pct) + 1.0;
    return end + (start - end) / 2.0 * cos_out;
  };
  const double step_num = static_cast<double>(last_epoch_);
  std::vector<double> lrs;
  for (size_t g = 0; g < opt_->num_param_groups(); ++g) {
    double start_step = 0.0, lr = 0.0, momentum = 0.0;
    for (size_t i = 0; i < phases_.size(); ++i) {
      const Phase& ph = phases_[i];
      if (step_num <= ph.end_step || i + 1 == phases_.size()) {
        const double pct = (step_num - start_step) / (ph.end_step - start_step);
        lr = anneal(opt_->scheduler_value(g, ph.start_lr), opt_->scheduler_value(g, ph.end_lr), pct);
        if (o_.cycle_momentum)
          momentum = anneal(opt_->scheduler_value(g, ph.start_momentum), opt_->scheduler_value(g, ph.end_momentum), pct);
        break;
      }
      start_step = ph.end_step;
    }
    lrs.push_back(lr);
    if (o_.cycle_momentum) opt_->set_option(g, use_beta1_ ? "beta1" : "momentum", momentum);
  }
  return lrs;
}

void OneCycleLR::save_extra(SchedulerState& s) const {
  s.values["total_steps"] = static_cast<double>(total_steps_);
  s.values["pct_start"] = o_.pct_start;
  s.values["anneal_linear"] = o_.anneal_strategy == AnnealStrategy::Linear ? 1.0 : 0.0;
  s.values["cycle_momentum"] = o_.cycle_momentum ? 1.0 : 0.0;
  s.values["base_momentum"] = o_.base_momentum;
  s.values["max_momentum"] = o_.max_momentum;
  s.values["div_factor"] = o_.div_factor;
  s.values["final_div_factor"] = o_.final_div_factor;
  s.values["three_phase"] = o_.three_phase ? 1.0 : 0.0;
  s.values["use_beta1"] = use_beta1_ ? 1.0 : 0.0;
}

void OneCycleLR::load_extra(const SchedulerState& s) {
  const int64_t total = int_of(s, "total_steps");
  check_positive("OneCycleLR.load_state_dict", "total_steps", total);
  OneCycleLROptions o;
  o.pct_start = value_of(s, "pct_start");
  o.anneal_strategy = value_of(s, "anneal_linear") != 0.0 ? AnnealStrategy::Linear : AnnealStrategy::Cos;
  o.cycle_momentum = value_of(s, "cycle_momentum") != 0.0;
  o.base_momentum = value_of(s, "base_momentum");
  o.max_momentum = value_of(s, "max_momentum");
  o.div_factor = value_of(s, "div_factor");
  o.final_div_factor = value_of(s, "final_div_factor");
  o.three_phase = value_of(s, "three_phase") != 0.0;
  check_one_cycle("OneCycleLR.load_state_dict", o);
  const bool use_beta1 = value_of(s, "use_beta1") != 0.0;
  if (o.cycle_momentum)
    EMBER_CHECK(opt_->has_option(use_beta1 ? "beta1" : "momentum"), "OneCycleLR.load_state_dict: the state cycles ",
                use_beta1 ? "beta1" : "momentum", ", which ", opt_->type_name(), " does not have");
  EMBER_CHECK(int_of(s, "last_epoch") <= total, "OneCycleLR.load_state_dict: stepped ", int_of(s, "last_epoch"),
              " times but total_steps is ", total);
  total_steps_ = total;
  o_ = o;
  use_beta1_ = use_beta1;
  build_phases();
}

// ---- the composites ----

namespace {

// The checks SequentialLR and ChainedScheduler make of the schedulers they are given.
void check_children(const char* who, const Optimizer& optimizer, const std::vector<std::shared_ptr<LRScheduler>>& ss) {
  EMBER_CHECK(!ss.empty(), who, ": needs at least one scheduler");
  for (size_t i = 0; i < ss.size(); ++i) {
    EMBER_CHECK(ss[i] != nullptr, who, ": scheduler ", i, " is null");
    EMBER_CHECK(&ss[i]->optimizer() == &optimizer, who, ": scheduler ", i, " (", ss[i]->type_name(),
                ") drives another optimizer; build every scheduler on the same one");
    // As PyTorch: the composite steps its schedulers without a metric.
    EMBER_CHECK(!ss[i]->uses_metric(), who, ": scheduler ", i, " is a ", ss[i]->type_name(), ", which needs a metric "
                "at every step, and ", who, " steps its schedulers without one (PyTorch refuses it too); step the ",
                ss[i]->type_name(), " on its own");
  }
}

// Checks a saved composite's children against this one's, by type, before anything is loaded.
void check_saved_children(const std::string& who, const SchedulerState& s,
                          const std::vector<std::shared_ptr<LRScheduler>>& ss) {
  EMBER_CHECK(s.children.size() == ss.size(), who, ".load_state_dict: the state holds ", s.children.size(),
              " scheduler(s) but this ", who, " has ", ss.size());
  for (size_t i = 0; i < ss.size(); ++i)
    EMBER_CHECK(s.children[i].type == ss[i]->type_name(), who, ".load_state_dict: scheduler ", i, " was a ",
                s.children[i].type, " but is a ", ss[i]->type_name(), " here");
}

}  // namespace

SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler("SequentialLR", optimizer), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
  check_children("SequentialLR", optimizer, schedulers_);
  EMBER_CHECK(milestones_.size() + 1 == schedulers_.size(), "SequentialLR: ", schedulers_.size(),
              " schedulers need ", schedulers_.size() - 1, " milestone(s), got ", milestones_.size());
  for (size_t i = 0; i < milestones_.size(); ++i)
    EMBER_CHECK(milestones_[i] > 0 && (i == 0 || milestones_[i] > milestones_[i - 1]),
                "SequentialLR: milestones must be positive and increasing, got ", milestones_[i], " at position ", i);
  // As PyTorch: undo the schedulers' initial steps, back to the initial lrs, and only the first
  // scheduler takes its epoch-0 step.
  undo_initial_step();
  restart();
  base_lrs_ = schedulers_[0]->base_lrs();
}

void SequentialLR::undo_initial_step() {
  for (auto& c : schedulers_) undo_child(*c);
}

void SequentialLR::begin() {
  last_epoch_ = 0;
  begin_child(*schedulers_[0]);
  last_lr_ = schedulers_[0]->get_last_lr();
}

void SequentialLR::step() {
  ++last_epoch_;
  ++step_count_;
  const size_t idx = static_cast<size_t>(std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) -
                                         milestones_.begin());
  LRScheduler& s = *schedulers_[idx];
  if (idx > 0 && milestones_[idx - 1] == last_epoch_) restart_child(s);
  else s.step();
  last_lr_ = s.get_last_lr();
}

SchedulerState SequentialLR::state_dict() const {
  SchedulerState s = LRScheduler::state_dict();
  auto& m = s.lists["milestones"];
  for (int64_t v : milestones_) m.push_back(static_cast<double>(v));
  for (const auto& c : schedulers_) s.children.push_back(c->state_dict());
  return s;
}

void SequentialLR::load_state_dict(const SchedulerState& s) {
  EMBER_CHECK(s.type == type_, type_, ".load_state_dict: the state was saved by a ", s.type.empty() ? "?" : s.type,
              " scheduler");
  check_saved_children(type_, s, schedulers_);
  std::vector<int64_t> m;
  // A value that is no exact integer becomes -1, which no milestone equals (they are all positive).
  for (double v : list_of(s, "milestones"))
    m.push_back(std::isfinite(v) && v == std::floor(v) && std::abs(v) <= 9007199254740992.0 ? static_cast<int64_t>(v)
                                                                                             : -1);
  EMBER_CHECK(m == milestones_, "SequentialLR.load_state_dict: the saved milestones differ from this scheduler's");
  LRScheduler::load_state_dict(s);
  for (size_t i = 0; i < schedulers_.size(); ++i) schedulers_[i]->load_state_dict(s.children[i]);
}

ChainedScheduler::ChainedScheduler(std::vector<std::shared_ptr<LRScheduler>> schedulers)
    : LRScheduler("ChainedScheduler",
                  [&]() -> Optimizer& {
                    EMBER_CHECK(!schedulers.empty() && schedulers[0] != nullptr,
                                "ChainedScheduler: needs at least one scheduler (the first may not be null)");
                    return schedulers[0]->optimizer();
                  }()),
      schedulers_(std::move(schedulers)) {
  check_children("ChainedScheduler", *opt_, schedulers_);
  // The schedulers took their epoch-0 steps when they were built, one after another.
  last_epoch_ = 0;
  init_base_lrs();
  last_lr_ = current_lrs();
}

void ChainedScheduler::undo_initial_step() {
  for (auto& c : schedulers_) undo_child(*c);
}

void ChainedScheduler::begin() {
  last_epoch_ = 0;
  for (auto& c : schedulers_) begin_child(*c);
  last_lr_ = current_lrs();
}

void ChainedScheduler::step() {
  ++last_epoch_;
  ++step_count_;
  for (auto& c : schedulers_) c->step();
  last_lr_ = current_lrs();
}

SchedulerState ChainedScheduler::state_dict() const {
  SchedulerState s = LRScheduler::state_dict();
  for (const auto& c : schedulers_) s.children.push_back(c->state_dict());
  return s;
}

void ChainedScheduler::load_state_dict(const SchedulerState& s) {
  EMBER_CHECK(s.type == type_, type_, ".load_state_dict: the state was saved by a ", s.type.empty() ? "?" : s.type,
              " scheduler");
  check_saved_children(type_, s, schedulers_);
  LRScheduler::load_state_dict(s);
  for (size_t i = 0; i < schedulers_.size(); ++i) schedulers_[i]->load_state_dict(s.children[i]);
}

// ---- ReduceLROnPlateau ----

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, const ReduceLROnPlateauOptions& o)
    : LRScheduler("ReduceLROnPlateau", optimizer), o_(o) {
  check_plateau("ReduceLROnPlateau", o);
  const size_t groups = optimizer.num_param_groups();
  if (o.min_lrs.empty()) {
    min_lrs_.assign(groups, o.min_lr);
  } else {
    EMBER_CHECK(o.min_lrs.size() == groups, "ReduceLROnPlateau: got ", o.min_lrs.size(), " min_lrs for ", groups,
                " parameter group(s)");
    min_lrs_ = o.min_lrs;
  }
  for (double m : min_lrs_) EMBER_CHECK(std::isfinite(m) && m >= 0.0, "ReduceLROnPlateau: min_lr must be >= 0, got ", m);
  best_ = o.mode == ReduceLROnPlateauOptions::Mode::Min ? std::numeric_limits<double>::infinity()
                                                         : -std::numeric_limits<double>::infinity();
  last_epoch_ = 0;
  last_lr_ = current_lrs();
  base_lrs_ = last_lr_;
}

void ReduceLROnPlateau::begin() {
  best_ = o_.mode == ReduceLROnPlateauOptions::Mode::Min ? std::numeric_limits<double>::infinity()
                                                          : -std::numeric_limits<double>::infinity();
  num_bad_epochs_ = 0;
  cooldown_counter_ = 0;
  last_epoch_ = 0;
  last_lr_ = current_lrs();
}

void ReduceLROnPlateau::step() {
  throw Error("ReduceLROnPlateau.step(): this scheduler follows a metric; call step(metric) with the value it "
              "watches (for example the validation loss)");
}

bool ReduceLROnPlateau::is_better(double a, double best) const {
  using M = ReduceLROnPlateauOptions::Mode;
  using T = ReduceLROnPlateauOptions::ThresholdMode;
  if (o_.mode == M::Min && o_.threshold_mode == T::Rel) return a < best * (1.0 - o_.threshold);
  if (o_.mode == M::Min) return a < best - o_.threshold;
  if (o_.threshold_mode == T::Rel) return a > best * (o_.threshold + 1.0);
  return a > best + o_.threshold;
}

void ReduceLROnPlateau::step(double metric) {
  ++last_epoch_;
  ++step_count_;
  if (is_better(metric, best_)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    ++num_bad_epochs_;
  }
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    num_bad_epochs_ = 0;
  }
  if (num_bad_epochs_ > o_.patience) {
    for (size_t g = 0; g < opt_->num_param_groups(); ++g) {
      const double old_lr = opt_->lr(g);
      const double new_lr = std::max(old_lr * o_.factor, min_lrs_[g]);
      if (old_lr - new_lr > o_.eps) opt_->set_lr(g, new_lr);
    }
    cooldown_counter_ = o_.cooldown;
    num_bad_epochs_ = 0;
  }
  last_lr_ = current_lrs();
}

void ReduceLROnPlateau::save_extra(SchedulerState& s) const {
  s.values["best"] = best_;
  s.values["num_bad_epochs"] = static_cast<double>(num_bad_epochs_);
  s.values["cooldown_counter"] = static_cast<double>(cooldown_counter_);
  s.values["mode_max"] = o_.mode == ReduceLROnPlateauOptions::Mode::Max ? 1.0 : 0.0;
  s.values["threshold_abs"] = o_.threshold_mode == ReduceLROnPlateauOptions::ThresholdMode::Abs ? 1.0 : 0.0;
  s.values["factor"] = o_.factor;
  s.values["patience"] = static_cast<double>(o_.patience);
  s.values["threshold"] = o_.threshold;
  s.values["cooldown"] = static_cast<double>(o_.cooldown);
  s.values["eps"] = o_.eps;
  s.lists["min_lrs"] = min_lrs_;
}

void ReduceLROnPlateau::load_extra(const SchedulerState& s) {
  const std::vector<double>& min_lrs = list_of(s, "min_lrs");
  EMBER_CHECK(min_lrs.size() == opt_->num_param_groups(), "ReduceLROnPlateau.load_state_dict: ", min_lrs.size(),
              " min_lrs for ", opt_->num_param_groups(), " parameter group(s)");
  ReduceLROnPlateauOptions o;
  o.mode = value_of(s, "mode_max") != 0.0 ? ReduceLROnPlateauOptions::Mode::Max : ReduceLROnPlateauOptions::Mode::Min;
  o.threshold_mode = value_of(s, "threshold_abs") != 0.0 ? ReduceLROnPlateauOptions::ThresholdMode::Abs
                                                          : ReduceLROnPlateauOptions::ThresholdMode::Rel;
  o.factor = value_of(s, "factor");
  o.patience = int_of(s, "patience");
  o.threshold = value_of(s, "threshold");
  o.cooldown = int_of(s, "cooldown");
  o.eps = value_of(s, "eps");
  o.min_lrs = min_lrs;
  check_plateau("ReduceLROnPlateau.load_state_dict", o);
  check_lrs("ReduceLROnPlateau.load_state_dict", "min_lrs", min_lrs);
  const double best = value_of(s, "best");
  const int64_t bad = int_of(s, "num_bad_epochs"), cooldown = int_of(s, "cooldown_counter");
  EMBER_CHECK(!std::isnan(best) && bad >= 0 && cooldown >= 0, "ReduceLROnPlateau.load_state_dict: best ", best,
              ", num_bad_epochs ", bad, " and cooldown_counter ", cooldown, " must be a number, >= 0 and >= 0");
  best_ = best;
  num_bad_epochs_ = bad;
  cooldown_counter_ = cooldown;
  o_ = o;
  min_lrs_ = min_lrs;
}

}  // namespace ember::optim
