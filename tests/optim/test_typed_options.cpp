// Typed optimizer options per parameter group: a group's own struct, reading and setting options
// typed, checks that name the optimizer, group, field and value, per-group overrides of every
// field through state_dict and a checkpoint; the scheduler interface (step(), step(metric)) and
// the composites' checks.
#include <cmath>
#include <filesystem>

#include "ember/checkpoint.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

Tensor param(int64_t n, uint64_t seed) { return test::uniform({n}, -1, 1, DType::F64, seed).requires_grad_(); }

}  // namespace

TEST(TypedOptions, GroupsCarryTheirOwnOptionsAndReadBackTyped) {
  Tensor a = param(3, 1), b = param(2, 2), c = param(4, 3);
  const optim::SGDOptions defaults{.lr = 0.1, .momentum = 0.9};
  const optim::SGDOptions own{.lr = 0.02, .momentum = 0.5, .dampening = 0.0, .weight_decay = 0.1, .nesterov = true,
                              .maximize = true};
  optim::SGD opt(std::vector<optim::ParamGroup>{{.params = {a}},
                                                {.params = {b}, .options = own},
                                                {.params = {c}, .lr = 0.3, .options = own}},
                 defaults);
  EXPECT_EQ(opt.options<optim::SGDOptions>(0), defaults);
  EXPECT_EQ(opt.options<optim::SGDOptions>(1), own);
  optim::SGDOptions own_lr = own;
  own_lr.lr = 0.3;  // the lr shortcut applies on top of the group's own struct
  EXPECT_EQ(opt.options<optim::SGDOptions>(2), own_lr);
  EXPECT_TRUE(opt.options<optim::SGDOptions>(1).nesterov);
  EXPECT_EQ(opt.option(1, "nesterov"), 1.0);
  EXPECT_EQ(std::get<optim::SGDOptions>(opt.defaults()), defaults);

  // set_options replaces a group's options after checking them; a bad one leaves them as they were.
  optim::SGDOptions changed = opt.options<optim::SGDOptions>(0);
  changed.dampening = 0.3;
  opt.set_options(0, changed);
  EXPECT_EQ(opt.options<optim::SGDOptions>(0).dampening, 0.3);
  changed.momentum = -0.5;
  EXPECT_TRUE(throws_with([&] { opt.set_options(0, changed); }, {"SGD", "parameter group 0", "momentum", ">= 0", "-0.5"}));
  EXPECT_EQ(opt.options<optim::SGDOptions>(0).momentum, 0.9);
  EXPECT_TRUE(throws_with([&] { opt.set_options(0, optim::AdamOptions{}); }, {"SGD", "AdamOptions", "SGDOptions"}));
  EXPECT_TRUE(throws_with([&] { opt.options<optim::AdamOptions>(0); }, {"SGD", "options<AdamOptions>(0)", "SGDOptions"}));
  EXPECT_TRUE(throws_with([&] { opt.options<optim::SGDOptions>(7); }, {"group 7", "there are 3"}));
  // set_lr and set_option go through the same checks.
  opt.set_lr(2, 0.7);
  EXPECT_EQ(opt.options<optim::SGDOptions>(2).lr, 0.7);
  EXPECT_TRUE(throws_with([&] { opt.set_option(1, "dampening", 0.5); }, {"parameter group 1", "Nesterov", "dampening=0.5"}));
  EXPECT_TRUE(throws_with([&] { opt.set_option(1, "nesterov", 0.5); }, {"nesterov", "flag", "0 or 1", "0.5"}));
  EXPECT_TRUE(throws_with([&] { opt.set_option(1, "betas", 0.5); }, {"no option \"betas\"", "momentum"}));

  // A group given another optimizer's struct is refused, naming both.
  EXPECT_TRUE(throws_with(
      [&] { optim::SGD(std::vector<optim::ParamGroup>{{.params = {param(2, 9)}, .options = optim::AdamOptions{}}}); },
      {"SGD", "parameter group 0", "carries AdamOptions", "SGDOptions"}));
  // AdamW groups hold AdamWOptions.
  optim::AdamW w({param(2, 4)}, {.lr = 0.01});
  EXPECT_EQ(w.options<optim::AdamWOptions>(0).weight_decay, 0.01);
  EXPECT_TRUE(throws_with([&] { w.options<optim::AdamOptions>(0); }, {"AdamW", "AdamWOptions"}));
}

TEST(TypedOptions, ChecksNameTheOptimizerGroupFieldAndValue) {
  Tensor p = param(2, 5), q = param(2, 6);
  auto second = [&](optim::AnyOptions o) { return std::vector<optim::ParamGroup>{{.params = {p}}, {.params = {q}, .options = o}}; };
  EXPECT_TRUE(throws_with([&] { optim::SGD(second(optim::SGDOptions{.momentum = -0.1})); },
                          {"SGD: parameter group 1", "momentum must be >= 0", "-0.1"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD(second(optim::SGDOptions{.momentum = 0.9, .dampening = 0.1, .nesterov = true})); },
                          {"SGD: parameter group 1", "Nesterov", "dampening = 0", "dampening=0.1"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD(second(optim::SGDOptions{.nesterov = true})); },
                          {"parameter group 1", "momentum > 0", "momentum=0"}));
  EXPECT_TRUE(throws_with([&] { optim::Adam(second(optim::AdamOptions{.beta2 = 1.0})); },
                          {"Adam: parameter group 1", "beta2", "[0, 1)", "got 1"}));
  EXPECT_TRUE(throws_with([&] { optim::Adam(second(optim::AdamOptions{.beta1 = -0.1})); }, {"beta1", "-0.1"}));
  EXPECT_TRUE(throws_with([&] { optim::AdamW(second(optim::AdamWOptions{.eps = -1})); },
                          {"AdamW: parameter group 1", "eps", "-1"}));
  EXPECT_TRUE(throws_with([&] { optim::RMSprop(second(optim::RMSpropOptions{.momentum = -2})); },
                          {"RMSprop: parameter group 1", "momentum", "-2"}));
  EXPECT_TRUE(throws_with([&] { optim::Adagrad(second(optim::AdagradOptions{.initial_accumulator_value = -1})); },
                          {"Adagrad: parameter group 1", "initial_accumulator_value", "-1"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD(second(optim::SGDOptions{.lr = INFINITY})); }, {"group 1", "lr", "finite"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({p}, {.weight_decay = -1}); }, {"SGD: the default options", "weight_decay"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD(std::vector<optim::ParamGroup>{{{p}, -0.5}}); },
                          {"parameter group 0", "lr", "-0.5"}));
}

TEST(TypedOptions, EveryFieldPerGroupRoundTripsThroughStateDictAndCheckpoint) {
  // Two groups whose every field differs, a few steps, then state_dict into an optimizer built
  // with other options: it gets each group's options back and continues identically.
  auto make_groups = [](std::vector<Tensor>& ps) {
    return std::vector<optim::ParamGroup>{
        {.params = {ps[0]},
         .options = optim::RMSpropOptions{.lr = 0.01, .alpha = 0.9, .eps = 1e-6, .weight_decay = 0.01, .momentum = 0.5,
                                          .centered = true, .maximize = false}},
        {.params = {ps[1]},
         .options = optim::RMSpropOptions{.lr = 0.003, .alpha = 0.7, .eps = 1e-4, .weight_decay = 0.2, .momentum = 0.0,
                                          .centered = false, .maximize = true}}};
  };
  std::vector<Tensor> pa{param(3, 11), param(4, 12)}, pb{param(3, 11), param(4, 12)};
  optim::RMSprop a(make_groups(pa));
  auto feed = [](std::vector<Tensor>& ps, int t) {
    for (size_t k = 0; k < ps.size(); ++k) ps[k].set_grad(test::uniform(ps[k].shape(), -1, 1, DType::F64, 100 * t + k));
  };
  for (int t = 1; t <= 3; ++t) {
    feed(pa, t);
    a.step();
  }
  optim::OptimizerState s = a.state_dict();
  ASSERT_EQ(s.param_groups.size(), 2u);
  EXPECT_EQ(s.param_groups[1].options, (optim::Hyperparameters{{"alpha", 0.7},
                                                               {"centered", 0.0},
                                                               {"eps", 1e-4},
                                                               {"lr", 0.003},
                                                               {"maximize", 1.0},
                                                               {"momentum", 0.0},
                                                               {"weight_decay", 0.2}}));
  optim::RMSprop b(std::vector<optim::ParamGroup>{{.params = {pb[0]}}, {.params = {pb[1]}}}, {.lr = 0.5});
  b.load_state_dict(s);
  for (size_t g = 0; g < 2; ++g) EXPECT_EQ(b.options<optim::RMSpropOptions>(g), a.options<optim::RMSpropOptions>(g));
  EXPECT_EQ(b.state(1).count("momentum_buffer"), 0u);
  EXPECT_EQ(b.state(0).count("grad_avg"), 1u);
  for (size_t k = 0; k < pa.size(); ++k) pb[k].detach().copy_(pa[k]);
  for (int t = 4; t <= 5; ++t) {
    feed(pa, t);
    feed(pb, t);
    a.step();
    b.step();
  }
  for (size_t k = 0; k < pa.size(); ++k) EXPECT_EQ(pa[k].to_vector<double>(), pb[k].to_vector<double>());

  // A saved flag that is not 0 or 1, or a missing field, is refused naming the group.
  optim::OptimizerState bad = a.state_dict();
  bad.param_groups[1].options["centered"] = 0.5;
  EXPECT_TRUE(throws_with([&] { b.load_state_dict(bad); }, {"parameter group 1", "centered", "0 or 1", "0.5"}));
  bad = a.state_dict();
  bad.param_groups[0].options.erase("alpha");
  EXPECT_TRUE(throws_with([&] { b.load_state_dict(bad); }, {"parameter group 0", "lack", "alpha"}));

  // Through a checkpoint: per-group options and a scheduler's values come back.
  auto model = std::make_shared<nn::Linear>(2, 2);
  auto ps = model->parameters();
  optim::Adam adam(std::vector<optim::ParamGroup>{
      {.params = {ps[0]}, .options = optim::AdamOptions{.lr = 0.02, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6,
                                                         .weight_decay = 0.1, .amsgrad = true, .maximize = true}},
      {.params = {ps[1]}, .lr = 0.004}});
  optim::StepLR sched(adam, 2, 0.5);
  sum((*model)(ones({3, 2}))).backward();
  adam.step();
  sched.step();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("ember_typed." + std::to_string(::getpid()) + ".safetensors")).string();
  save_checkpoint(path, *model, adam, &sched, {});
  auto model2 = std::make_shared<nn::Linear>(2, 2);
  auto ps2 = model2->parameters();
  optim::Adam adam2(std::vector<optim::ParamGroup>{{.params = {ps2[0]}}, {.params = {ps2[1]}}});
  optim::StepLR sched2(adam2, 2, 0.5);
  load_checkpoint(path, *model2, adam2, &sched2);
  for (size_t g = 0; g < 2; ++g) {
    EXPECT_EQ(adam2.options<optim::AdamOptions>(g), adam.options<optim::AdamOptions>(g)) << g;
    EXPECT_EQ(adam2.scheduler_values(g), adam.scheduler_values(g)) << g;
  }
  EXPECT_EQ(adam2.scheduler_value(0, "initial_lr"), 0.02);
  EXPECT_EQ(adam2.scheduler_value(1, "initial_lr"), 0.004);
  EXPECT_EQ(adam2.state(0).count("max_exp_avg_sq"), 1u);
  EXPECT_EQ(adam2.state(1).count("max_exp_avg_sq"), 0u);
  std::filesystem::remove(path);
}

TEST(TypedOptions, SchedulerValuesLiveBesideTheOptions) {
  Tensor p = param(2, 7);
  optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
  EXPECT_TRUE(opt.scheduler_values(0).empty());
  optim::OneCycleLR sched(opt, 0.4, 10);
  EXPECT_EQ(opt.scheduler_value(0, "max_lr"), 0.4);
  EXPECT_EQ(opt.scheduler_value(0, "initial_lr"), 0.4 / 25);
  EXPECT_EQ(opt.options<optim::SGDOptions>(0).momentum, 0.95);  // cycled: a typed option
  EXPECT_TRUE(throws_with([&] { opt.option(0, "max_lr"); }, {"no option \"max_lr\""}));
  EXPECT_TRUE(throws_with([&] { opt.set_scheduler_value(0, "momentum", 1); }, {"\"momentum\" is an option", "set_option"}));
  EXPECT_TRUE(throws_with([&] { opt.scheduler_value(0, "warmup"); }, {"no scheduler value \"warmup\""}));
  // state_dict puts them among the options, by name, as files have always held them.
  const auto saved = opt.state_dict().param_groups[0].options;
  EXPECT_EQ(saved.at("max_lr"), 0.4);
  EXPECT_EQ(saved.at("momentum"), 0.95);
  EXPECT_EQ(saved.at("nesterov"), 0.0);
}

TEST(SchedulerInterface, StepAndStepMetricWhereEachApplies) {
  Tensor p = param(2, 8);
  optim::SGD opt({p}, {.lr = 0.1});
  std::vector<std::unique_ptr<optim::LRScheduler>> all;
  all.push_back(std::make_unique<optim::StepLR>(opt, 2));
  all.push_back(std::make_unique<optim::ReduceLROnPlateau>(opt));
  for (auto& s : all) {
    if (s->uses_metric()) {
      EXPECT_TRUE(throws_with([&] { s->step(); }, {"ReduceLROnPlateau.step()", "step(metric)"}));
      s->step(0.5);
      EXPECT_EQ(s->last_epoch(), 1);
    } else {
      EXPECT_TRUE(throws_with([&] { s->step(0.5); }, {"StepLR.step(0.5)", "no metric", "call step()"}));
      s->step();
      EXPECT_EQ(s->last_epoch(), 1);
    }
  }
  // The composites refuse ReduceLROnPlateau, as PyTorch's do, and schedulers of another optimizer.
  auto warm = std::make_shared<optim::LinearLR>(opt, 0.5, 1.0, 2);
  auto plateau = std::make_shared<optim::ReduceLROnPlateau>(opt);
  EXPECT_TRUE(throws_with([&] { optim::SequentialLR(opt, {warm, plateau}, {2}); },
                          {"SequentialLR", "scheduler 1", "ReduceLROnPlateau", "metric"}));
  EXPECT_TRUE(throws_with([&] { optim::ChainedScheduler({warm, plateau}); },
                          {"ChainedScheduler", "scheduler 1", "ReduceLROnPlateau"}));
  EXPECT_TRUE(throws_with([&] { optim::ChainedScheduler({}); }, {"ChainedScheduler", "at least one"}));
  optim::SGD other({param(1, 9)});
  auto foreign = std::make_shared<optim::StepLR>(other, 2);
  EXPECT_TRUE(throws_with([&] { optim::ChainedScheduler({warm, foreign}); }, {"scheduler 1", "another optimizer"}));
  // A nested composite's state must have the same structure.
  auto exp = std::make_shared<optim::ExponentialLR>(opt, 0.9);
  auto inner = std::make_shared<optim::SequentialLR>(opt, std::vector<std::shared_ptr<optim::LRScheduler>>{warm, exp},
                                                     std::vector<int64_t>{2});
  optim::ChainedScheduler chain({inner, std::make_shared<optim::StepLR>(opt, 3)});
  optim::SchedulerState st = chain.state_dict();
  ASSERT_EQ(st.children.size(), 2u);
  EXPECT_EQ(st.children[0].type, "SequentialLR");
  EXPECT_EQ(st.children[0].children.size(), 2u);
  st.children[0].children[1].type = "StepLR";
  EXPECT_TRUE(throws_with([&] { chain.load_state_dict(st); }, {"SequentialLR", "scheduler 1 was a StepLR", "ExponentialLR"}));
  st = chain.state_dict();
  st.children.pop_back();
  EXPECT_TRUE(throws_with([&] { chain.load_state_dict(st); }, {"ChainedScheduler", "1 scheduler(s)", "has 2"}));
}
