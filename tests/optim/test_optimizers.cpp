// Optimizer tests: every optimizer against its documented algorithm (PyTorch's torch.optim docs),
// re-implemented here in f64 with plain loops, over several steps with weight decay, momentum,
// dampening, Nesterov, AMSGrad, decoupled decay, centering, lr decay and maximize; parameter
// groups; skipped parameters; option checks; state_dict round trips and their errors.
#include <cmath>
#include <functional>
#include <map>

#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

using Vec = std::vector<double>;

// The reference state of one parameter: its values, named buffers and step count.
struct Ref {
  Vec p;
  std::map<std::string, Vec> s;
  int64_t t = 0;
  Vec& buf(const std::string& name, double init = 0.0) {
    auto it = s.find(name);
    if (it == s.end()) it = s.emplace(name, Vec(p.size(), init)).first;
    return it->second;
  }
};
using RefStep = std::function<void(Ref&, const Vec& grad)>;

// A gradient that depends on the parameter and shrinks over the steps (so AMSGrad's running max
// differs from the current second moment).
Vec grad_at(const Vec& p, int64_t t, int k) {
  Vec g(p.size());
  for (size_t i = 0; i < p.size(); ++i)
    g[i] = (0.5 * p[i] + std::cos(1.3 * static_cast<double>(i) + 0.7 * static_cast<double>(t) + k)) * 3.0 /
           static_cast<double>(t);
  return g;
}

// ---- the documented algorithms ----

RefStep sgd_ref(optim::SGDOptions o) {
  return [o](Ref& r, const Vec& grad) {
    ++r.t;
    for (size_t i = 0; i < r.p.size(); ++i) {
      double g = o.maximize ? -grad[i] : grad[i];
      if (o.weight_decay != 0) g += o.weight_decay * r.p[i];
      if (o.momentum != 0) {
        Vec& b = r.buf("momentum_buffer");
        b[i] = r.t > 1 ? o.momentum * b[i] + (1 - o.dampening) * g : g;
        g = o.nesterov ? g + o.momentum * b[i] : b[i];
      }
      r.p[i] -= o.lr * g;
    }
  };
}

RefStep adam_ref(optim::AdamOptions o, bool decoupled) {
  return [o, decoupled](Ref& r, const Vec& grad) {
    ++r.t;
    const double t = static_cast<double>(r.t);
    Vec& m = r.buf("exp_avg");
    Vec& v = r.buf("exp_avg_sq");
    for (size_t i = 0; i < r.p.size(); ++i) {
      double g = o.maximize ? -grad[i] : grad[i];
      if (decoupled) r.p[i] -= o.lr * o.weight_decay * r.p[i];
      else if (o.weight_decay != 0) g += o.weight_decay * r.p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(o.beta1, t));
      double v_hat;
      if (o.amsgrad) {
        Vec& vmax = r.buf("max_exp_avg_sq");
        vmax[i] = std::max(vmax[i], v[i]);
        v_hat = vmax[i] / (1 - std::pow(o.beta2, t));
      } else {
        v_hat = v[i] / (1 - std::pow(o.beta2, t));
      }
      r.p[i] -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
  };
}

RefStep rmsprop_ref(optim::RMSpropOptions o) {
  return [o](Ref& r, const Vec& grad) {
    ++r.t;
    Vec& v = r.buf("square_avg");
    for (size_t i = 0; i < r.p.size(); ++i) {
      double g = o.maximize ? -grad[i] : grad[i];
      if (o.weight_decay != 0) g += o.weight_decay * r.p[i];
      v[i] = o.alpha * v[i] + (1 - o.alpha) * g * g;
      double v_tilde = v[i];
      if (o.centered) {
        Vec& ga = r.buf("grad_avg");
        ga[i] = ga[i] * o.alpha + (1 - o.alpha) * g;
        v_tilde -= ga[i] * ga[i];
      }
      if (o.momentum > 0) {
        Vec& b = r.buf("momentum_buffer");
        b[i] = o.momentum * b[i] + g / (std::sqrt(v_tilde) + o.eps);
        r.p[i] -= o.lr * b[i];
      } else {
        r.p[i] -= o.lr * g / (std::sqrt(v_tilde) + o.eps);
      }
    }
  };
}

RefStep adagrad_ref(optim::AdagradOptions o) {
  return [o](Ref& r, const Vec& grad) {
    ++r.t;
    Vec& sum = r.buf("sum", o.initial_accumulator_value);
    const double lr = o.lr / (1 + static_cast<double>(r.t - 1) * o.lr_decay);
    for (size_t i = 0; i < r.p.size(); ++i) {
      double g = o.maximize ? -grad[i] : grad[i];
      if (o.weight_decay != 0) g += o.weight_decay * r.p[i];
      sum[i] += g * g;
      r.p[i] -= lr * g / (std::sqrt(sum[i]) + o.eps);
    }
  };
}

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Tensor>&)>;

::testing::AssertionResult close(const Vec& got, const Vec& want, double rtol, double atol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << got.size() << " vs " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " vs reference " << want[i];
  return ::testing::AssertionSuccess();
}

// Runs `steps` updates of ember's optimizer and of the reference side by side, comparing the
// parameters after every step and the state buffers and step counts at the end.
void check_against_reference(const MakeOpt& make, const RefStep& ref, DType dt = DType::F64, int steps = 6) {
  const double rtol = dt == DType::F64 ? 1e-12 : 2e-5, atol = dt == DType::F64 ? 1e-14 : 1e-6;
  std::vector<Tensor> params{test::uniform({3, 4}, -1, 1, dt, 21), test::uniform({5}, -1, 1, dt, 22)};
  for (Tensor& p : params) p.requires_grad_();
  std::vector<Ref> refs(params.size());
  for (size_t k = 0; k < params.size(); ++k) refs[k].p = params[k].to_vector<double>();
  std::unique_ptr<optim::Optimizer> opt = make(params);
  for (int64_t t = 1; t <= steps; ++t) {
    for (size_t k = 0; k < params.size(); ++k) {
      params[k].set_grad(from_vector<double>(grad_at(params[k].to_vector<double>(), t, int(k)), params[k].shape()).to(dt));
      ref(refs[k], grad_at(refs[k].p, t, int(k)));
    }
    opt->step();
    for (size_t k = 0; k < params.size(); ++k)
      ASSERT_TRUE(close(params[k].to_vector<double>(), refs[k].p, rtol, atol)) << "parameter " << k << ", step " << t;
  }
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_EQ(opt->state_step(k), steps);
    const auto& state = opt->state(k);
    EXPECT_EQ(state.size(), refs[k].s.size()) << "parameter " << k;
    for (const auto& [name, want] : refs[k].s) {
      auto it = state.find(name);
      ASSERT_NE(it, state.end()) << "missing buffer " << name;
      EXPECT_EQ(it->second.dtype(), dt);
      EXPECT_TRUE(close(it->second.to_vector<double>(), want, rtol, atol)) << name << " of parameter " << k;
    }
  }
}

template <class Opt, class Options>
MakeOpt maker(Options o) {
  return [o](const std::vector<Tensor>& ps) { return std::make_unique<Opt>(ps, o); };
}

}  // namespace

TEST(SGD, MatchesDocumentedAlgorithm) {
  for (optim::SGDOptions o : {optim::SGDOptions{.lr = 0.1},
                              optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01},
                              optim::SGDOptions{.lr = 0.05, .momentum = 0.8, .weight_decay = 0.05, .nesterov = true},
                              optim::SGDOptions{.lr = 0.02, .momentum = 0.5, .weight_decay = 0.1, .maximize = true}}) {
    SCOPED_TRACE(::testing::Message() << "momentum " << o.momentum << " nesterov " << o.nesterov);
    check_against_reference(maker<optim::SGD>(o), sgd_ref(o));
    check_against_reference(maker<optim::SGD>(o), sgd_ref(o), DType::F32);
  }
}

TEST(Adam, MatchesDocumentedAlgorithm) {
  for (optim::AdamOptions o : {optim::AdamOptions{.lr = 0.01},
                               optim::AdamOptions{.lr = 0.02, .beta1 = 0.8, .beta2 = 0.99, .weight_decay = 0.1},
                               optim::AdamOptions{.lr = 0.01, .eps = 1e-6, .weight_decay = 0.05, .amsgrad = true},
                               optim::AdamOptions{.lr = 0.01, .beta2 = 0.6, .amsgrad = true, .maximize = true}}) {
    SCOPED_TRACE(::testing::Message() << "weight_decay " << o.weight_decay << " amsgrad " << o.amsgrad);
    check_against_reference(maker<optim::Adam>(o), adam_ref(o, false));
    check_against_reference(maker<optim::Adam>(o), adam_ref(o, false), DType::F32);
  }
}

TEST(Adam, AmsgradKeepsTheRunningMax) {
  // The gradients shrink and beta2 is small, so the running max must exceed the current second
  // moment somewhere: otherwise the reference test (same options) would not tell AMSGrad from Adam.
  Tensor p = test::uniform({4}, -1, 1, DType::F64, 3).requires_grad_();
  optim::Adam opt({p}, {.lr = 0.01, .beta2 = 0.6, .amsgrad = true});
  for (int64_t t = 1; t <= 4; ++t) {
    p.set_grad(from_vector<double>(grad_at(p.to_vector<double>(), t, 0), {4}));
    opt.step();
  }
  Vec v = opt.state(0).at("exp_avg_sq").to_vector<double>(), vmax = opt.state(0).at("max_exp_avg_sq").to_vector<double>();
  bool differs = false;
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_GE(vmax[i], v[i]);
    differs = differs || vmax[i] > v[i];
  }
  EXPECT_TRUE(differs);
}

TEST(AdamW, MatchesDocumentedAlgorithm) {
  for (optim::AdamWOptions o : {optim::AdamWOptions{.lr = 0.01},
                                optim::AdamWOptions{.lr = 0.05, .beta2 = 0.6, .weight_decay = 0.1, .amsgrad = true},
                                optim::AdamWOptions{.lr = 0.01, .beta1 = 0.5, .weight_decay = 0.3, .maximize = true}}) {
    const optim::AdamOptions a{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize};
    check_against_reference(maker<optim::AdamW>(o), adam_ref(a, true));
    check_against_reference(maker<optim::AdamW>(o), adam_ref(a, true), DType::F32);
  }
  // AdamW's default weight decay is PyTorch's 0.01.
  Tensor p = zeros({1}).requires_grad_();
  EXPECT_EQ(optim::AdamW({p}).option(0, "weight_decay"), 0.01);
}

TEST(RMSprop, MatchesDocumentedAlgorithm) {
  for (optim::RMSpropOptions o :
       {optim::RMSpropOptions{.lr = 0.01},
        optim::RMSpropOptions{.lr = 0.01, .alpha = 0.9, .weight_decay = 0.01, .momentum = 0.5, .centered = true},
        optim::RMSpropOptions{.lr = 0.005, .alpha = 0.95, .eps = 1e-6, .momentum = 0.9},
        optim::RMSpropOptions{.lr = 0.01, .alpha = 0.8, .centered = true, .maximize = true}}) {
    SCOPED_TRACE(::testing::Message() << "momentum " << o.momentum << " centered " << o.centered);
    check_against_reference(maker<optim::RMSprop>(o), rmsprop_ref(o));
    check_against_reference(maker<optim::RMSprop>(o), rmsprop_ref(o), DType::F32);
  }
}

TEST(Adagrad, MatchesDocumentedAlgorithm) {
  for (optim::AdagradOptions o :
       {optim::AdagradOptions{.lr = 0.1},
        optim::AdagradOptions{.lr = 0.1, .lr_decay = 0.1, .weight_decay = 0.02, .initial_accumulator_value = 0.5},
        optim::AdagradOptions{.lr = 0.05, .eps = 1e-6, .maximize = true}}) {
    SCOPED_TRACE(::testing::Message() << "lr_decay " << o.lr_decay);
    check_against_reference(maker<optim::Adagrad>(o), adagrad_ref(o));
    check_against_reference(maker<optim::Adagrad>(o), adagrad_ref(o), DType::F32);
  }
}

TEST(Optimizer, ParamGroupsHaveTheirOwnLrAndWeightDecay) {
  Tensor a = test::uniform({6}, -1, 1, DType::F64, 1).requires_grad_();
  Tensor b = test::uniform({2, 2}, -1, 1, DType::F64, 2).requires_grad_();
  Tensor frozen = test::uniform({3}, -1, 1, DType::F64, 3).requires_grad_();
  const optim::SGDOptions defaults{.lr = 0.01, .momentum = 0.9};
  optim::SGD opt({{{a}, 0.1, 0.05}, {{b, frozen}, std::nullopt, std::nullopt}}, defaults);
  EXPECT_EQ(opt.num_param_groups(), 2u);
  EXPECT_EQ(opt.lr(0), 0.1);
  EXPECT_EQ(opt.option(0, "weight_decay"), 0.05);
  EXPECT_EQ(opt.lr(1), 0.01);
  EXPECT_EQ(opt.option(1, "weight_decay"), 0.0);
  EXPECT_EQ(opt.option(1, "momentum"), 0.9);
  optim::SGDOptions group0 = defaults;
  group0.lr = 0.1;
  group0.weight_decay = 0.05;
  Ref ra{a.to_vector<double>()}, rb{b.to_vector<double>()};
  const Vec frozen_before = frozen.to_vector<double>();
  for (int64_t t = 1; t <= 4; ++t) {
    a.set_grad(from_vector<double>(grad_at(a.to_vector<double>(), t, 0), a.shape()));
    b.set_grad(from_vector<double>(grad_at(b.to_vector<double>(), t, 1), b.shape()));
    sgd_ref(group0)(ra, grad_at(ra.p, t, 0));
    sgd_ref(defaults)(rb, grad_at(rb.p, t, 1));
    opt.step();
  }
  EXPECT_TRUE(close(a.to_vector<double>(), ra.p, 1e-12, 1e-14));
  EXPECT_TRUE(close(b.to_vector<double>(), rb.p, 1e-12, 1e-14));
  // A parameter without a gradient is skipped: unchanged, no state, no step.
  EXPECT_EQ(frozen.to_vector<double>(), frozen_before);
  EXPECT_EQ(opt.state_step(2), 0);
  EXPECT_TRUE(opt.state(2).empty());
  // set_lr reaches only its group; zero_grad drops every gradient.
  opt.set_lr(1, 0.5);
  EXPECT_EQ(opt.lr(0), 0.1);
  EXPECT_EQ(opt.lr(1), 0.5);
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_EQ(opt.parameters().size(), 3u);
  Tensor c = zeros({2}).requires_grad_();
  opt.add_param_group({{c}, 1.0});
  EXPECT_EQ(opt.lr(2), 1.0);
  EXPECT_EQ(opt.option(2, "momentum"), 0.9);
}

TEST(Optimizer, ChecksOptionsAndParameters) {
  Tensor p = zeros({2}).requires_grad_();
  EXPECT_TRUE(throws_with([&] { optim::SGD({p}, {.lr = -1}); }, {"SGD", "lr", ">= 0", "-1"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({p}, {.lr = 0.1, .nesterov = true}); }, {"Nesterov", "momentum > 0"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({p}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
                          {"dampening = 0"}));
  EXPECT_TRUE(throws_with([&] { optim::Adam({p}, {.beta1 = 1.0}); }, {"Adam", "beta1", "[0, 1)"}));
  EXPECT_TRUE(throws_with([&] { optim::Adam({p}, {.eps = -1e-8}); }, {"Adam", "eps"}));
  EXPECT_TRUE(throws_with([&] { optim::AdamW({p}, {.weight_decay = -0.1}); }, {"AdamW", "weight_decay"}));
  EXPECT_TRUE(throws_with([&] { optim::RMSprop({p}, {.alpha = -0.5}); }, {"RMSprop", "alpha"}));
  EXPECT_TRUE(throws_with([&] { optim::Adagrad({p}, {.lr_decay = -1}); }, {"Adagrad", "lr_decay"}));
  EXPECT_TRUE(throws_with([&] { optim::Adam({p}, {.lr = NAN}); }, {"lr", "finite"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD(std::vector<Tensor>{}); }, {"SGD", "empty"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({p, p}); }, {"more than once"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({mul(p, 2.0)}); }, {"leaf"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({zeros({2}, DType::I64)}); }, {"i64", "f32 or f64"}));
  EXPECT_TRUE(throws_with([&] { optim::SGD({zeros({2, 3}).t()}); }, {"not contiguous"}));
  optim::SGD opt({p}, {.lr = 0.1});
  EXPECT_TRUE(throws_with([&] { opt.set_option(0, "momentum", -1); }, {"momentum", ">= 0"}));
  EXPECT_EQ(opt.option(0, "momentum"), 0.0);  // unchanged by the failed set
  EXPECT_TRUE(throws_with([&] { opt.option(0, "beta1"); }, {"no option \"beta1\"", "lr"}));
  EXPECT_TRUE(throws_with([&] { opt.lr(3); }, {"group 3"}));
  EXPECT_TRUE(throws_with([&] { opt.state(5); }, {"index 5"}));
}

TEST(Optimizer, StepBumpsVersionsAndWorksWithAutograd) {
  // A real backward pass feeds the gradients; the step is not recorded and bumps versions.
  Tensor w = test::uniform({3}, -1, 1, DType::F64, 4).requires_grad_();
  optim::SGD opt({w}, {.lr = 0.1});
  Tensor loss = sum(square(w));
  loss.backward();
  const Vec before = w.to_vector<double>();
  const uint64_t v = w.version();
  opt.step();
  EXPECT_GT(w.version(), v);
  EXPECT_FALSE(w.grad_fn());
  Vec after = w.to_vector<double>();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_NEAR(after[i], before[i] * (1 - 0.2), 1e-15);
}

TEST(Optimizer, StateFollowsAParameterCastAfterwards) {
  // Module::to changes the parameter in place; the optimizer's existing state follows it.
  auto lin = std::make_shared<nn::Linear>(3, 2);
  optim::Adam opt(lin->parameters(), {.lr = 0.01});
  sum((*lin)(ones({4, 3}))).backward();
  opt.step();
  lin->to(DType::F64);
  opt.zero_grad();
  sum((*lin)(ones({4, 3}, DType::F64))).backward();
  const Vec before = lin->weight.to_vector<double>();
  opt.step();
  EXPECT_EQ(opt.state(0).at("exp_avg").dtype(), DType::F64);
  EXPECT_EQ(opt.state_step(0), 2);
  EXPECT_NE(lin->weight.to_vector<double>(), before);
}

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  auto make_params = [] {
    std::vector<Tensor> ps{test::uniform({3, 4}, -1, 1, DType::F32, 31), test::uniform({4}, -1, 1, DType::F32, 32)};
    for (Tensor& p : ps) p.requires_grad_();
    return ps;
  };
  std::vector<Tensor> pa = make_params(), pb = make_params();
  const optim::AdamOptions o{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true};
  optim::Adam a(pa, o);
  auto feed = [](std::vector<Tensor>& ps, int64_t t) {
    for (size_t k = 0; k < ps.size(); ++k)
      ps[k].set_grad(from_vector<double>(grad_at(ps[k].to_vector<double>(), t, int(k)), ps[k].shape()).to(DType::F32));
  };
  for (int64_t t = 1; t <= 3; ++t) {
    feed(pa, t);
    a.step();
  }
  a.set_lr(0, 0.003);
  optim::OptimizerState s = a.state_dict();
  EXPECT_EQ(s.type, "Adam");
  std::vector<std::string> keys;
  for (auto& [k, t] : s.tensors) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq",
                                            "state.0.max_exp_avg_sq", "state.1.step", "state.1.exp_avg",
                                            "state.1.exp_avg_sq", "state.1.max_exp_avg_sq"}));
  EXPECT_EQ(s.tensors[0].second.dtype(), DType::I64);
  EXPECT_EQ(s.tensors[0].second.item<int64_t>(), 3);
  ASSERT_EQ(s.param_groups.size(), 1u);
  EXPECT_EQ(s.param_groups[0].params, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(s.param_groups[0].options.at("lr"), 0.003);
  // b: same parameter values, fresh optimizer with other options; loading restores all of a's.
  for (size_t k = 0; k < pa.size(); ++k) pb[k].detach().copy_(pa[k]);
  optim::Adam b(pb, {.lr = 0.5});
  b.load_state_dict(s);
  EXPECT_EQ(b.lr(0), 0.003);
  EXPECT_EQ(b.option(0, "amsgrad"), 1.0);
  EXPECT_EQ(b.state_step(1), 3);
  EXPECT_FALSE(b.state(0).at("exp_avg").shares_storage(a.state(0).at("exp_avg")));
  for (int64_t t = 4; t <= 6; ++t) {
    feed(pa, t);
    feed(pb, t);
    a.step();
    b.step();
  }
  for (size_t k = 0; k < pa.size(); ++k) {
    EXPECT_EQ(pa[k].to_vector<float>(), pb[k].to_vector<float>());
    for (auto& [name, t] : a.state(k)) EXPECT_EQ(t.to_vector<float>(), b.state(k).at(name).to_vector<float>()) << name;
  }
}

TEST(Optimizer, LoadStateDictRejectsWhatDoesNotFit) {
  Tensor p = zeros({3}).requires_grad_(), q = zeros({2}).requires_grad_();
  optim::SGD sgd({p, q}, {.lr = 0.1, .momentum = 0.9});
  p.set_grad(ones({3}));
  sgd.step();
  optim::OptimizerState s = sgd.state_dict();
  optim::Adam adam({p, q});
  EXPECT_TRUE(throws_with([&] { adam.load_state_dict(s); }, {"Adam", "saved by a SGD"}));
  optim::SGD one({p}, {.lr = 0.1, .momentum = 0.9});
  EXPECT_TRUE(throws_with([&] { one.load_state_dict(s); }, {"group 0", "2 parameter(s) in the state", "1 in this"}));
  optim::SGD two_groups(std::vector<optim::ParamGroup>{{{p}}, {{q}}}, {.lr = 0.1, .momentum = 0.9});
  EXPECT_TRUE(throws_with([&] { two_groups.load_state_dict(s); }, {"1 parameter group(s)", "has 2"}));
  optim::SGD target({p, q}, {.lr = 0.1, .momentum = 0.9});
  optim::OptimizerState bad = s;
  for (auto& [k, t] : bad.tensors)
    if (k == "state.0.momentum_buffer") t = zeros({5});
  bad.tensors.emplace_back("state.1.momentum_buffer", zeros({2}));
  bad.tensors.emplace_back("state.0.exp_avg", zeros({3}));
  bad.tensors.emplace_back("state.0.step", from_vector<int64_t>({1}, {}));
  bad.tensors.emplace_back("state.7.step", from_vector<int64_t>({1}, {}));
  bad.tensors.emplace_back("weights", zeros({3}));
  EXPECT_TRUE(throws_with([&] { target.load_state_dict(bad); },
                          {"state.0.momentum_buffer", "[5]", "parameter 0 has shape [3]", "no buffer \"exp_avg\"",
                           "\"state.0.step\" appears twice",
                           "refers to parameter 7", "\"weights\" is not of the form", "no \"state.1.step\""}));
  EXPECT_EQ(target.state_step(0), 0);  // nothing loaded
  target.load_state_dict(s);
  EXPECT_EQ(target.state_step(0), 1);
  EXPECT_EQ(target.state(0).at("momentum_buffer").to_vector<float>(), (std::vector<float>{1, 1, 1}));
}
