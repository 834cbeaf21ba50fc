// ember against PyTorch's own numbers: tests/fixtures/torch_optim_groups.json (made by
// tests/fixtures/make_torch_optim_groups.py) holds a few f64 steps of SGD, Adam, AdamW, RMSprop and
// Adagrad over three parameter groups whose every option differs, and the learning rates of
// ChainedScheduler, SequentialLR and their nestings. Each group here carries its own typed options.
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace ember;
using json = nlohmann::json;
using Sched = std::shared_ptr<optim::LRScheduler>;

namespace {

const json& fixture() {
  static const json j = [] {
    std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/torch_optim_groups.json");
    return json::parse(in);
  }();
  return j;
}

// A group's options as the optimizer's typed struct, every field from the fixture.
optim::AnyOptions options_of(const std::string& name, const json& g) {
  auto d = [&](const char* k) { return g.at(k).get<double>(); };
  auto b = [&](const char* k) { return g.at(k).get<bool>(); };
  if (name == "SGD")
    return optim::SGDOptions{.lr = d("lr"), .momentum = d("momentum"), .dampening = d("dampening"),
                             .weight_decay = d("weight_decay"), .nesterov = b("nesterov"), .maximize = b("maximize")};
  if (name == "Adam")
    return optim::AdamOptions{.lr = d("lr"), .beta1 = d("beta1"), .beta2 = d("beta2"), .eps = d("eps"),
                              .weight_decay = d("weight_decay"), .amsgrad = b("amsgrad"), .maximize = b("maximize")};
  if (name == "AdamW")
    return optim::AdamWOptions{.lr = d("lr"), .beta1 = d("beta1"), .beta2 = d("beta2"), .eps = d("eps"),
                               .weight_decay = d("weight_decay"), .amsgrad = b("amsgrad"), .maximize = b("maximize")};
  if (name == "RMSprop")
    return optim::RMSpropOptions{.lr = d("lr"), .alpha = d("alpha"), .eps = d("eps"), .weight_decay = d("weight_decay"),
                                 .momentum = d("momentum"), .centered = b("centered"), .maximize = b("maximize")};
  return optim::AdagradOptions{.lr = d("lr"), .lr_decay = d("lr_decay"), .weight_decay = d("weight_decay"),
                               .initial_accumulator_value = d("initial_accumulator_value"), .eps = d("eps"),
                               .maximize = b("maximize")};
}

std::unique_ptr<optim::Optimizer> make(const std::string& name, const std::vector<optim::ParamGroup>& groups,
                                       double default_lr) {
  if (name == "SGD") return std::make_unique<optim::SGD>(groups, optim::SGDOptions{.lr = default_lr});
  if (name == "Adam") return std::make_unique<optim::Adam>(groups, optim::AdamOptions{.lr = default_lr});
  if (name == "AdamW") return std::make_unique<optim::AdamW>(groups, optim::AdamWOptions{.lr = default_lr});
  if (name == "RMSprop") return std::make_unique<optim::RMSprop>(groups, optim::RMSpropOptions{.lr = default_lr});
  return std::make_unique<optim::Adagrad>(groups, optim::AdagradOptions{.lr = default_lr});
}

Shape shape_of(const json& s) { return Shape(s.get<std::vector<int64_t>>()); }

}  // namespace

TEST(TorchOptimGroups, EveryOptionPerGroupMatchesPyTorch) {
  const json& cases = fixture().at("optimizers");
  ASSERT_EQ(cases.size(), 5u);
  for (const json& c : cases) {
    const std::string name = c.at("name");
    SCOPED_TRACE(name);
    std::vector<Tensor> params;
    std::vector<optim::ParamGroup> groups;
    for (size_t k = 0; k < c.at("shapes").size(); ++k) {
      params.push_back(from_vector<double>(c.at("initial")[k].get<std::vector<double>>(), shape_of(c.at("shapes")[k]))
                           .requires_grad_());
      groups.push_back({.params = {params.back()}, .options = options_of(name, c.at("groups")[k])});
    }
    auto opt = make(name, groups, c.at("defaults").at("lr").get<double>());
    // Each group holds exactly the options it was given.
    for (size_t k = 0; k < groups.size(); ++k) EXPECT_EQ(opt->any_options(k), *groups[k].options) << "group " << k;
    for (size_t t = 0; t < c.at("grads").size(); ++t) {
      for (size_t k = 0; k < params.size(); ++k)
        params[k].set_grad(from_vector<double>(c.at("grads")[t][k].get<std::vector<double>>(), params[k].shape()));
      opt->step();
      for (size_t k = 0; k < params.size(); ++k)
        EXPECT_TRUE(test::all_close(params[k], c.at("params")[t][k].get<std::vector<double>>(), test::Tol{1e-14, 1e-12}))
            << "parameter " << k << " after step " << t + 1;
    }
    for (size_t k = 0; k < params.size(); ++k) {
      const auto& want = c.at("state")[k];
      EXPECT_EQ(opt->state(k).size(), want.size()) << "parameter " << k;
      for (const auto& [buf, values] : want.items()) {
        ASSERT_TRUE(opt->state(k).count(buf)) << "parameter " << k << " lacks " << buf;
        EXPECT_TRUE(test::all_close(opt->state(k).at(buf), values.get<std::vector<double>>(), test::Tol{1e-14, 1e-12}))
            << buf << " of parameter " << k;
      }
    }
  }
}

namespace {

// The fixture's schedulers, built the same way on `o`.
const std::map<std::string, std::function<Sched(optim::Optimizer&)>>& builders() {
  using namespace optim;
  static const auto warm_exp = [](Optimizer& o) -> Sched {
    return std::make_shared<SequentialLR>(
        o, std::vector<Sched>{std::make_shared<LinearLR>(o, 0.5, 1.0, 3), std::make_shared<ExponentialLR>(o, 0.8)},
        std::vector<int64_t>{3});
  };
  static const auto step_exp = [](Optimizer& o) -> Sched {
    return std::make_shared<ChainedScheduler>(
        std::vector<Sched>{std::make_shared<StepLR>(o, 3, 0.5), std::make_shared<ExponentialLR>(o, 0.9)});
  };
  static const auto step2 = [](Optimizer& o) -> Sched { return std::make_shared<StepLR>(o, 2, 0.5); };
  static const auto linear3 = [](Optimizer& o) -> Sched { return std::make_shared<LinearLR>(o, 0.5, 1.0, 3); };
  auto seq = [](Optimizer& o, std::vector<Sched> s, std::vector<int64_t> m) -> Sched {
    return std::make_shared<SequentialLR>(o, std::move(s), std::move(m));
  };
  static const std::map<std::string, std::function<Sched(Optimizer&)>> b{
      {"chained_step_exponential", step_exp},
      {"chained_holding_sequential",
       [](Optimizer& o) -> Sched {
         return std::make_shared<ChainedScheduler>(std::vector<Sched>{warm_exp(o), std::make_shared<StepLR>(o, 4, 0.5)});
       }},
      {"sequential_linear_cosine",
       [=](Optimizer& o) {
         return seq(o, {std::make_shared<LinearLR>(o, 0.25, 1.0, 4), std::make_shared<CosineAnnealingLR>(o, 10)}, {4});
       }},
      {"sequential_nested_second", [=](Optimizer& o) { return seq(o, {step2(o), warm_exp(o)}, {4}); }},
      {"sequential_nested_first", [=](Optimizer& o) { return seq(o, {warm_exp(o), step2(o)}, {6}); }},
      {"sequential_holding_chained", [=](Optimizer& o) { return seq(o, {linear3(o), step_exp(o)}, {4}); }},
      {"sequential_chained_first", [=](Optimizer& o) { return seq(o, {step_exp(o), linear3(o)}, {5}); }},
  };
  return b;
}

struct TwoGroups {
  Tensor a = zeros({2}).requires_grad_(), b = zeros({3}).requires_grad_();
  optim::SGD opt;
  explicit TwoGroups(const std::vector<double>& lrs) : opt({{{a}, lrs[0]}, {{b}, lrs[1]}}, {.lr = 0.5}) {}
};

}  // namespace

TEST(TorchOptimGroups, ComposedSchedulersMatchPyTorch) {
  const json& s = fixture().at("schedulers");
  const std::vector<double> initial = s.at("initial_lrs");
  ASSERT_EQ(s.at("cases").size(), builders().size());
  for (const json& c : s.at("cases")) {
    const std::string name = c.at("name");
    SCOPED_TRACE(name);
    ASSERT_TRUE(builders().count(name));
    TwoGroups f(initial);
    Sched sched = builders().at(name)(f.opt);
    const auto& lrs = c.at("lrs");
    for (size_t e = 0; e < lrs.size(); ++e) {
      if (e > 0) sched->step();
      for (size_t g = 0; g < 2; ++g) {
        const double want = lrs[e][g].get<double>();
        EXPECT_NEAR(f.opt.lr(g), want, 1e-12 * std::abs(want)) << "epoch " << e << ", group " << g;
        EXPECT_EQ(sched->get_last_lr()[g], f.opt.lr(g)) << "epoch " << e;
      }
    }
  }
}

TEST(TorchOptimGroups, ComposedSchedulersResumeFromTheirState) {
  // Every fixture scheduler, stepped 5 times, saved, restored into a fresh one (after the
  // optimizer), then stepped on: both give the same lrs, nested children included.
  const std::vector<double> initial = fixture().at("schedulers").at("initial_lrs");
  for (const auto& [name, build] : builders()) {
    SCOPED_TRACE(name);
    TwoGroups a(initial), b(initial);
    Sched sa = build(a.opt), sb = build(b.opt);
    for (int e = 0; e < 5; ++e) sa->step();
    const optim::SchedulerState st = sa->state_dict();
    b.opt.load_state_dict(a.opt.state_dict());
    sb->load_state_dict(st);
    EXPECT_EQ(sb->state_dict().children.size(), st.children.size());
    for (int e = 5; e < 14; ++e) {
      sa->step();
      sb->step();
      EXPECT_EQ(a.opt.lr(0), b.opt.lr(0)) << "epoch " << e;
      EXPECT_EQ(a.opt.lr(1), b.opt.lr(1)) << "epoch " << e;
      EXPECT_EQ(sa->get_last_lr(), sb->get_last_lr());
    }
  }
}
