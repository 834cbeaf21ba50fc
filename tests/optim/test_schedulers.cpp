// Scheduler tests: each learning-rate sequence against the closed form PyTorch documents for it,
// momentum cycling, composition, ReduceLROnPlateau against a hand-worked trace, state_dict
// round trips and argument checks.
#include <cmath>
#include <functional>
#include <numbers>

#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

constexpr double kPi = std::numbers::pi;

struct Fixture {
  Tensor a = zeros({2}).requires_grad_();
  Tensor b = zeros({3}).requires_grad_();
  // Two groups with different base lrs, so per-group bases are exercised.
  optim::SGD opt{{{{a}, 0.1, std::nullopt}, {{b}, 0.02, std::nullopt}}, {.lr = 0.1, .momentum = 0.9}};
  const std::vector<double> base{0.1, 0.02};
};

// Steps `sched` `epochs` times, checking each group's lr (after the constructor's initial step,
// then after each step) against want(base_lr, epoch).
template <class S>
void expect_sequence(Fixture& f, S& sched, int epochs, const std::function<double(double, int)>& want) {
  for (int e = 0; e <= epochs; ++e) {
    if (e > 0) sched.step();
    for (size_t g = 0; g < 2; ++g) {
      const double w = want(f.base[g], e);
      EXPECT_NEAR(f.opt.lr(g), w, 1e-12 * std::abs(w) + 1e-15) << "epoch " << e << ", group " << g;
      EXPECT_EQ(sched.get_last_lr()[g], f.opt.lr(g));
    }
    EXPECT_EQ(sched.last_epoch(), e);
  }
}

double cos_anneal(double start, double end, double pct) { return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1.0); }

}  // namespace

TEST(Scheduler, StepLR) {
  Fixture f;
  optim::StepLR s(f.opt, 3, 0.5);
  EXPECT_EQ(s.base_lrs(), f.base);
  expect_sequence(f, s, 12, [](double base, int e) { return base * std::pow(0.5, e / 3); });
}

TEST(Scheduler, MultiStepLR) {
  Fixture f;
  // Unsorted, with a repeated milestone that counts twice.
  optim::MultiStepLR s(f.opt, {8, 2, 5, 5}, 0.1);
  expect_sequence(f, s, 10, [](double base, int e) {
    const int passed = (e >= 2) + 2 * (e >= 5) + (e >= 8);
    return base * std::pow(0.1, passed);
  });
}

TEST(Scheduler, ExponentialLR) {
  Fixture f;
  optim::ExponentialLR s(f.opt, 0.9);
  expect_sequence(f, s, 15, [](double base, int e) { return base * std::pow(0.9, e); });
}

TEST(Scheduler, CosineAnnealingLR) {
  Fixture f;
  const double eta_min = 0.001;
  optim::CosineAnnealingLR s(f.opt, 10, eta_min);
  // eta_min + (base - eta_min)(1 + cos(pi t / T)) / 2, past T_max too (the formula's period).
  expect_sequence(f, s, 25, [&](double base, int e) {
    return eta_min + (base - eta_min) * (1 + std::cos(kPi * e / 10.0)) / 2;
  });
}

TEST(Scheduler, LinearLRWarmup) {
  Fixture f;
  optim::LinearLR s(f.opt, 0.25, 1.0, 4);
  expect_sequence(f, s, 8, [](double base, int e) { return base * (0.25 + 0.75 * std::min(e, 4) / 4.0); });
  Fixture g;
  optim::LinearLR decay(g.opt, 1.0, 0.5, 5);
  expect_sequence(g, decay, 7, [](double base, int e) { return base * (1.0 - 0.5 * std::min(e, 5) / 5.0); });
}

TEST(Scheduler, OneCycleLRTwoPhaseCosine) {
  Fixture f;
  const int total = 20;
  optim::OneCycleLR s(f.opt, 1.0, total);
  // PyTorch's defaults: pct_start 0.3, div_factor 25, final_div_factor 1e4, momentum 0.95 -> 0.85.
  const double initial = 1.0 / 25, min_lr = initial / 1e4, up_end = 0.3 * total - 1;
  for (int e = 0; e <= total; ++e) {
    if (e > 0) s.step();
    double lr, mom;
    if (e <= up_end) {
      lr = cos_anneal(initial, 1.0, e / up_end);
      mom = cos_anneal(0.95, 0.85, e / up_end);
    } else {
      const double pct = (e - up_end) / (total - 1 - up_end);
      lr = cos_anneal(1.0, min_lr, pct);
      mom = cos_anneal(0.85, 0.95, pct);
    }
    for (size_t g = 0; g < 2; ++g) {
      EXPECT_NEAR(f.opt.lr(g), lr, 1e-12 * lr) << "step " << e;
      EXPECT_NEAR(f.opt.option(g, "momentum"), mom, 1e-12) << "step " << e;
    }
  }
  EXPECT_TRUE(throws_with([&] { s.step(); }, {"OneCycleLR", "total_steps is 20"}));
}

TEST(Scheduler, OneCycleLRThreePhaseLinearCyclesAdamBeta1) {
  Tensor p = zeros({2}).requires_grad_();
  optim::Adam opt({p}, {.lr = 0.001, .beta1 = 0.9, .beta2 = 0.99});
  const int total = 20;
  optim::OneCycleLR s(opt, 0.5, total,
                      {.anneal_strategy = optim::AnnealStrategy::Linear, .div_factor = 10, .three_phase = true});
  auto lin = [](double a, double b, double pct) { return (b - a) * pct + a; };
  const double initial = 0.05, min_lr = initial / 1e4, e1 = 5, e2 = 10, e3 = 19;
  for (int e = 0; e < total; ++e) {
    if (e > 0) s.step();
    double lr, mom;
    if (e <= e1) {
      lr = lin(initial, 0.5, e / e1);
      mom = lin(0.95, 0.85, e / e1);
    } else if (e <= e2) {
      lr = lin(0.5, initial, (e - e1) / (e2 - e1));
      mom = lin(0.85, 0.95, (e - e1) / (e2 - e1));
    } else {
      lr = lin(initial, min_lr, (e - e2) / (e3 - e2));
      mom = 0.95;
    }
    EXPECT_NEAR(opt.lr(0), lr, 1e-12 * lr) << "step " << e;
    EXPECT_NEAR(opt.option(0, "beta1"), mom, 1e-12) << "step " << e;
    EXPECT_EQ(opt.option(0, "beta2"), 0.99);
  }
  Tensor q = zeros({2}).requires_grad_();
  optim::Adagrad ada({q});
  EXPECT_TRUE(throws_with([&] { optim::OneCycleLR(ada, 0.1, 10); }, {"cycle_momentum", "Adagrad"}));
  optim::OneCycleLR no_momentum(ada, 0.1, 10, {.cycle_momentum = false});
  EXPECT_NEAR(ada.lr(0), 0.1 / 25, 1e-15);
}

TEST(Scheduler, SequentialLRWarmupThenCosine) {
  Fixture f;
  auto warm = std::make_shared<optim::LinearLR>(f.opt, 0.1, 1.0, 5);
  auto cosine = std::make_shared<optim::CosineAnnealingLR>(f.opt, 10);
  optim::SequentialLR s(f.opt, {warm, cosine}, {5});
  expect_sequence(f, s, 18, [](double base, int e) {
    if (e < 5) return base * (0.1 + 0.9 * e / 5.0);
    return base * (1 + std::cos(kPi * (e - 5) / 10.0)) / 2;
  });
  EXPECT_TRUE(throws_with([&] { optim::SequentialLR(f.opt, {warm, cosine}, {}); }, {"need 1 milestone"}));
  Tensor other = zeros({1}).requires_grad_();
  optim::SGD opt2({other});
  auto foreign = std::make_shared<optim::StepLR>(opt2, 2);
  EXPECT_TRUE(throws_with([&] { optim::SequentialLR(f.opt, {warm, foreign}, {3}); }, {"another optimizer"}));
}

TEST(Scheduler, TwoSchedulersOnOneOptimizerCompose) {
  // The recursive forms multiply into the current lr, so schedulers stepped together compose.
  Fixture f;
  optim::StepLR a(f.opt, 2, 0.5);
  optim::ExponentialLR b(f.opt, 0.9);
  for (int e = 0; e <= 8; ++e) {
    if (e > 0) {
      a.step();
      b.step();
    }
    for (size_t g = 0; g < 2; ++g)
      EXPECT_NEAR(f.opt.lr(g), f.base[g] * std::pow(0.5, e / 2) * std::pow(0.9, e), 1e-12 * f.base[g]) << e;
  }
}

TEST(Scheduler, ReduceLROnPlateauFollowsItsRules) {
  Fixture f;
  optim::ReduceLROnPlateau s(f.opt, {.factor = 0.5, .patience = 2, .threshold = 0.1, .cooldown = 1, .min_lr = 0.02});
  // Hand-worked: improvement needs metric < best * 0.9; more than 2 bad epochs halve the lr (not
  // below 0.02), then one cooldown epoch during which bad epochs are not counted.
  const std::vector<double> metrics{10, 9.5, 9.2, 9.1, 9.3, 9.4, 9.5, 9.6, 8.0, 7.9, 7.9, 7.9, 7.9, 7.9, 7.9, 7.9};
  const std::vector<double> lrs{0.1,   0.1,   0.1,   0.05, 0.05, 0.05, 0.05, 0.025,
                                0.025, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02, 0.02};
  for (size_t i = 0; i < metrics.size(); ++i) {
    s.step(metrics[i]);
    EXPECT_DOUBLE_EQ(f.opt.lr(0), lrs[i]) << "epoch " << i + 1;
    EXPECT_EQ(s.get_last_lr()[0], f.opt.lr(0));
  }
  EXPECT_EQ(s.best(), 8.0);
  // The second group started at 0.02 = min_lr, so it never moved.
  EXPECT_EQ(f.opt.lr(1), 0.02);
  EXPECT_EQ(s.last_epoch(), 16);

  Tensor p = zeros({1}).requires_grad_();
  optim::SGD opt({p}, {.lr = 0.1});
  using O = optim::ReduceLROnPlateauOptions;
  optim::ReduceLROnPlateau mx(opt, {.mode = O::Mode::Max, .patience = 0, .threshold = 0.5,
                                    .threshold_mode = O::ThresholdMode::Abs});
  mx.step(1.0);  // better than -inf
  EXPECT_EQ(opt.lr(0), 0.1);
  mx.step(1.4);  // not above 1.0 + 0.5: one bad epoch > patience 0
  EXPECT_NEAR(opt.lr(0), 0.01, 1e-17);
  mx.step(2.0);  // better
  EXPECT_NEAR(opt.lr(0), 0.01, 1e-17);
  EXPECT_EQ(mx.best(), 2.0);
  EXPECT_TRUE(throws_with([&] { optim::ReduceLROnPlateau(opt, {.factor = 1.0}); }, {"factor", "[0, 1)"}));
  EXPECT_TRUE(throws_with([&] { optim::ReduceLROnPlateau(opt, {.min_lrs = {0.1, 0.2}}); }, {"2 min_lrs", "1 parameter"}));
}

TEST(Scheduler, StateDictRoundTripResumesTheSequence) {
  using MakeSched = std::function<std::shared_ptr<optim::LRScheduler>(optim::Optimizer&)>;
  const std::vector<std::pair<std::string, MakeSched>> cases{
      {"StepLR", [](optim::Optimizer& o) { return std::make_shared<optim::StepLR>(o, 3, 0.5); }},
      {"MultiStepLR", [](optim::Optimizer& o) { return std::make_shared<optim::MultiStepLR>(o, std::vector<int64_t>{2, 6}); }},
      {"ExponentialLR", [](optim::Optimizer& o) { return std::make_shared<optim::ExponentialLR>(o, 0.8); }},
      {"CosineAnnealingLR", [](optim::Optimizer& o) { return std::make_shared<optim::CosineAnnealingLR>(o, 7, 0.01); }},
      {"LinearLR", [](optim::Optimizer& o) { return std::make_shared<optim::LinearLR>(o, 0.2, 1.0, 6); }},
      {"OneCycleLR", [](optim::Optimizer& o) { return std::make_shared<optim::OneCycleLR>(o, 0.5, 12); }},
      {"SequentialLR", [](optim::Optimizer& o) {
         return std::make_shared<optim::SequentialLR>(
             o, std::vector<std::shared_ptr<optim::LRScheduler>>{std::make_shared<optim::LinearLR>(o, 0.5, 1.0, 3),
                                                                       std::make_shared<optim::ExponentialLR>(o, 0.7)},
             std::vector<int64_t>{3});
       }},
      {"ReduceLROnPlateau", [](optim::Optimizer& o) {
         return std::make_shared<optim::ReduceLROnPlateau>(o, optim::ReduceLROnPlateauOptions{.patience = 1});
       }}};
  auto advance = [](optim::LRScheduler& s, int epoch) {
    if (s.uses_metric()) s.step(1.0 + 0.1 * std::sin(epoch));
    else s.step();
  };
  for (const auto& [name, make] : cases) {
    SCOPED_TRACE(name);
    Tensor p = zeros({2}).requires_grad_(), q = zeros({2}).requires_grad_();
    optim::SGD a({p}, {.lr = 0.1, .momentum = 0.9}), b({q}, {.lr = 0.3, .momentum = 0.5});
    auto sa = make(a);
    for (int e = 1; e <= 5; ++e) advance(*sa, e);
    optim::SchedulerState st = sa->state_dict();
    EXPECT_EQ(st.type, name);
    auto sb = make(b);  // constructed fresh, then restored: optimizer first, then scheduler
    b.load_state_dict(a.state_dict());
    sb->load_state_dict(st);
    EXPECT_EQ(sb->last_epoch(), sa->last_epoch());
    EXPECT_EQ(sb->get_last_lr(), sa->get_last_lr());
    for (int e = 6; e <= 11; ++e) {
      advance(*sa, e);
      advance(*sb, e);
      EXPECT_EQ(a.lr(0), b.lr(0)) << "epoch " << e;
      EXPECT_EQ(a.option(0, "momentum"), b.option(0, "momentum")) << "epoch " << e;
    }
    optim::SchedulerState wrong = st;
    wrong.type = "Other";
    EXPECT_TRUE(throws_with([&] { sb->load_state_dict(wrong); }, {"saved by a Other"}));
  }
}

TEST(Scheduler, ChecksArguments) {
  Fixture f;
  EXPECT_TRUE(throws_with([&] { optim::StepLR(f.opt, 0); }, {"StepLR", "step_size", "0"}));
  EXPECT_TRUE(throws_with([&] { optim::LinearLR(f.opt, 0.0); }, {"LinearLR", "start_factor", "(0, 1]"}));
  EXPECT_TRUE(throws_with([&] { optim::LinearLR(f.opt, 0.5, 1.5); }, {"end_factor"}));
  EXPECT_TRUE(throws_with([&] { optim::CosineAnnealingLR(f.opt, 0); }, {"t_max"}));
  EXPECT_TRUE(throws_with([&] { optim::OneCycleLR(f.opt, 0.1, 0); }, {"total_steps"}));
  EXPECT_TRUE(throws_with([&] { optim::OneCycleLR(f.opt, std::vector<double>{0.1}, 10); }, {"1 max_lr", "2 parameter group"}));
  EXPECT_TRUE(throws_with([&] { optim::OneCycleLR(f.opt, 0.1, 10, {.pct_start = 1.5}); }, {"pct_start"}));
  EXPECT_TRUE(throws_with([&] { optim::MultiStepLR(f.opt, {-1}); }, {"milestones"}));
  optim::StepLR s(f.opt, 2);
  EXPECT_TRUE(throws_with([&] { s.step_to(-3); }, {"epoch", "-3"}));
}
