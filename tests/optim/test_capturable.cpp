// Optimizer::set_capturable / prepare_step (the CUDA-graph path of the optimizers) on the CPU: a
// prepared step equals a plain one bit for bit (the scalars are computed by the same host code; the
// CPU backend reads the same values), step counts and state follow, and misuse is a clear error.
#include <cmath>
#include <functional>

#include "cpp/backend/optim_math.h"
#include "test_util.h"

using namespace ember;

namespace {

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Tensor>&)>;

template <class Opt, class Options> MakeOpt maker(Options o) {
  return [o](const std::vector<Tensor>& p) { return std::make_unique<Opt>(p, o); };
}

std::vector<Tensor> make_params(uint64_t seed) {
  std::vector<Tensor> ps;
  for (int64_t n : {3, 17, 1}) ps.push_back(test::uniform({n}, -1, 1, DType::F32, seed + n).requires_grad_());
  return ps;
}

}  // namespace

TEST(CapturableOptim, PreparedStepsEqualPlainSteps) {
  const std::vector<std::pair<std::string, MakeOpt>> cases{
      {"SGD momentum", maker<optim::SGD>(optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01})},
      {"Adam", maker<optim::Adam>(optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1})},
      {"AdamW amsgrad", maker<optim::AdamW>(optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true})},
      {"RMSprop centered", maker<optim::RMSprop>(optim::RMSpropOptions{.lr = 0.01, .momentum = 0.5, .centered = true})},
      {"Adagrad", maker<optim::Adagrad>(optim::AdagradOptions{.lr = 0.1, .lr_decay = 0.05})}};
  for (const auto& [name, make] : cases) {
    SCOPED_TRACE(name);
    std::vector<Tensor> plain_p = make_params(7), cap_p = make_params(7);
    auto plain = make(plain_p), cap = make(cap_p);
    cap->set_capturable(true);
    EXPECT_TRUE(cap->capturable());
    for (int t = 1; t <= 5; ++t) {
      // A schedule changes the rate between steps: the prepared scalars must follow it.
      plain->set_lr(0, 0.01 * t);
      cap->set_lr(0, 0.01 * t);
      for (size_t k = 0; k < plain_p.size(); ++k) {
        Tensor g = test::uniform(plain_p[k].shape(), -1, 1, DType::F32, 100 * t + k);
        plain_p[k].set_grad(g);
        cap_p[k].set_grad(g.clone());
      }
      plain->step();
      if (t % 2 == 1) {  // odd steps prepared (the graph's path), even steps plain capturable steps
        const std::vector<double> before = cap_p[1].to_vector<double>();
        cap->prepare_step();
        EXPECT_EQ(cap->state_step(0), plain->state_step(0)) << "prepare_step advances the step count";
        EXPECT_EQ(cap_p[1].to_vector<double>(), before) << "prepare_step must not update the parameters";
      }
      cap->step();
    }
    for (size_t k = 0; k < plain_p.size(); ++k) {
      EXPECT_TRUE(test::all_close(cap_p[k], plain_p[k], test::Tol{0.0, 0.0})) << "parameter " << k << " (bitwise)";
      EXPECT_EQ(cap->state_step(k), 5);
      EXPECT_EQ(cap->state_step(k), plain->state_step(k));
      ASSERT_EQ(cap->state(k).size(), plain->state(k).size());
      for (const auto& [buf, v] : plain->state(k))
        EXPECT_TRUE(test::all_close(cap->state(k).at(buf), v, test::Tol{0.0, 0.0})) << "state " << k << "." << buf;
    }
  }
}

TEST(CapturableOptim, MisuseIsAClearError) {
  std::vector<Tensor> ps = make_params(3);
  optim::Adam opt(ps, {.lr = 0.01});
  EXPECT_TRUE(test::throws_with([&] { opt.prepare_step(); }, {"Adam.prepare_step", "set_capturable(true)"}));
  opt.set_capturable(true);
  for (Tensor& p : ps) p.set_grad(ones_like(p));
  opt.prepare_step();
  EXPECT_TRUE(test::throws_with([&] { opt.prepare_step(); }, {"prepared before has not run yet"}));
  // The step that runs must update the parameters the prepared scalars were computed for.
  ps[2].zero_grad();
  EXPECT_TRUE(test::throws_with([&] { opt.step(); }, {"Adam.step", "2 parameters have a gradient but 3", "prepare"}));
  ps[2].set_grad(ones_like(ps[2]));
  // Turning capture off drops the prepared scalars: the next step is a plain one.
  opt.set_capturable(false);
  opt.step();
  EXPECT_EQ(opt.state_step(0), 2);  // one from the prepare that never ran its update, one from this step
}

// optim_math::hyper_at, the scalars the host computes for an eager step and a capturable
// optimizer's kernel computes inside a graph, against PyTorch's formulas written here with std::pow.
// step_pow multiplies (binary exponentiation) where PyTorch calls pow: exact for a power of two,
// and within 2 log2(t) roundings of x^t otherwise. Through 1 - beta^t that relative error is
// amplified by beta^t / (1 - beta^t) (9 for beta1 = 0.9 at t = 1, about 1000 for beta2 = 0.999),
// so the bound used here is 1e-12 relative.
TEST(OptimMath, HyperAtFollowsPyTorchsFormulas) {
  using optim_math::hyper_at;
  using optim_math::step_pow;
  for (int t = 0; t <= 60; ++t) EXPECT_EQ(step_pow(0.5, t), std::ldexp(1.0, -t)) << t;
  EXPECT_EQ(step_pow(3.0, 5), 243.0);
  EXPECT_EQ(step_pow(0.9, 0), 1.0);
  auto rel = [](double a, double b) { return std::abs(a - b) / std::abs(b); };

  OptimizerInputs adam;
  adam.lr = 0.01;
  adam.beta1 = 0.9;
  adam.beta2 = 0.999;
  adam.eps = 1e-8;
  adam.weight_decay = 0.1;
  adam.decoupled_weight_decay = 1.0;
  adam.amsgrad = 1.0;
  for (double t : {1.0, 2.0, 3.0, 10.0, 1000.0, 123456.0}) {
    SCOPED_TRACE(t);
    const OptimizerHyper h = hyper_at(OptimizerAlgo::Adam, adam, t, false);
    EXPECT_LT(rel(h.step_size, 0.01 / (1.0 - std::pow(0.9, t))), 1e-12);
    EXPECT_LT(rel(h.bias_correction2_sqrt, std::sqrt(1.0 - std::pow(0.999, t))), 1e-12);
    EXPECT_EQ(h.decay_factor, 1.0 - 0.01 * 0.1);
    EXPECT_EQ(h.beta1_complement, 1.0 - 0.9);
    EXPECT_EQ(h.beta2, 0.999);
    EXPECT_EQ(h.beta2_complement, 1.0 - 0.999);
    EXPECT_EQ(h.eps, 1e-8);
    EXPECT_EQ(h.weight_decay, 0.1);
    EXPECT_TRUE(h.decoupled_weight_decay && h.amsgrad && !h.maximize && !h.first_step);
  }

  OptimizerInputs sgd;
  sgd.lr = 0.05;
  sgd.momentum = 0.9;
  sgd.dampening = 0.25;
  sgd.weight_decay = 0.01;
  sgd.nesterov = 1.0;
  sgd.maximize = 1.0;
  const OptimizerHyper hs = hyper_at(OptimizerAlgo::Sgd, sgd, 7.0, true);
  EXPECT_EQ(hs.step_size, 0.05);
  EXPECT_EQ(hs.momentum, 0.9);
  EXPECT_EQ(hs.dampening_complement, 0.75);
  EXPECT_EQ(hs.weight_decay, 0.01);
  EXPECT_TRUE(hs.nesterov && hs.maximize && hs.first_step);

  OptimizerInputs rms;
  rms.lr = 0.01;
  rms.beta2 = 0.99;
  rms.eps = 1e-8;
  rms.momentum = 0.5;
  rms.centered = 1.0;
  const OptimizerHyper hr = hyper_at(OptimizerAlgo::Rmsprop, rms, 3.0, false);
  EXPECT_EQ(hr.step_size, 0.01);
  EXPECT_EQ(hr.beta2, 0.99);
  EXPECT_EQ(hr.beta2_complement, 1.0 - 0.99);
  EXPECT_EQ(hr.momentum, 0.5);
  EXPECT_TRUE(hr.centered);

  OptimizerInputs ada;
  ada.lr = 0.05;
  ada.lr_decay = 0.1;
  ada.eps = 1e-10;
  for (double t : {1.0, 2.0, 50.0}) EXPECT_EQ(hyper_at(OptimizerAlgo::Adagrad, ada, t, false).step_size,
                                             0.05 / (1.0 + (t - 1.0) * 0.1)) << t;
}
