// Gradient clipping and the L1 penalty against hand-computed values, and the end-to-end check:
// an nn::Sequential MLP trained with Adam on a synthetic task reaches a low loss.
#include <cmath>

#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {
std::vector<Tensor> params_with_grads(const std::vector<std::vector<double>>& grads) {
  std::vector<Tensor> ps;
  for (const auto& g : grads) {
    Tensor p = zeros({static_cast<int64_t>(g.size())}, DType::F64).requires_grad_();
    p.set_grad(from_vector<double>(g));
    ps.push_back(p);
  }
  return ps;
}

void expect_grads(const std::vector<Tensor>& ps, const std::vector<std::vector<double>>& want) {
  for (size_t k = 0; k < ps.size(); ++k) {
    std::vector<double> g = ps[k].grad().to_vector<double>();
    ASSERT_EQ(g.size(), want[k].size());
    for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[k][i], 1e-12) << "param " << k << " element " << i;
  }
}
}  // namespace

TEST(Clip, GradNormScalesByTotalNorm) {
  // |[3, 4, -12]|_2 = 13.
  auto ps = params_with_grads({{3, 4}, {-12}});
  Tensor none = zeros({2}, DType::F64).requires_grad_();  // no gradient: skipped
  ps.push_back(none);
  Tensor total = optim::clip_grad_norm_(ps, 6.5);
  EXPECT_NEAR(total.item(), 13.0, 1e-12);
  const double c = 6.5 / (13.0 + 1e-6);
  expect_grads({ps[0], ps[1]}, {{3 * c, 4 * c}, {-12 * c}});
  EXPECT_FALSE(none.grad().defined());
  // Under the limit: the coefficient clamps to 1 and nothing changes.
  ps = params_with_grads({{3, 4}, {-12}});
  EXPECT_NEAR(optim::clip_grad_norm_(ps, 100.0).item(), 13.0, 1e-12);
  expect_grads(ps, {{3, 4}, {-12}});
  // Other orders: inf (max |g|), 1, and 3.
  ps = params_with_grads({{3, 4}, {-12}});
  EXPECT_NEAR(optim::clip_grad_norm_(ps, 6.0, INFINITY).item(), 12.0, 1e-12);
  expect_grads(ps, {{3 * 6 / (12 + 1e-6), 4 * 6 / (12 + 1e-6)}, {-12 * 6 / (12 + 1e-6)}});
  ps = params_with_grads({{3, 4}, {-12}});
  EXPECT_NEAR(optim::clip_grad_norm_(ps, 1.0, 1.0).item(), 19.0, 1e-12);
  ps = params_with_grads({{3, 4}, {-12}});
  EXPECT_NEAR(optim::clip_grad_norm_(ps, 1.0, 3.0).item(), std::cbrt(27.0 + 64.0 + 1728.0), 1e-10);
  EXPECT_EQ(optim::clip_grad_norm_({none}, 1.0).item(), 0.0);
}

TEST(Clip, GradNormRaisesOnNonFiniteWhenAsked) {
  auto ps = params_with_grads({{1, NAN}, {2}});
  EXPECT_TRUE(throws_with([&] { optim::clip_grad_norm_(ps, 1.0, 2.0, true); }, {"clip_grad_norm_", "nan",
                                                                                "error_if_nonfinite"}));
  EXPECT_EQ(ps[1].grad().item(), 2.0);  // untouched
  ps = params_with_grads({{1, INFINITY}});
  EXPECT_TRUE(throws_with([&] { optim::clip_grad_norm_(ps, 1.0, 2.0, true); }, {"inf"}));
  // Without the flag the NaN norm is returned, as PyTorch does.
  ps = params_with_grads({{1, NAN}});
  EXPECT_TRUE(std::isnan(optim::clip_grad_norm_(ps, 1.0).item()));
  EXPECT_TRUE(throws_with([&] { optim::clip_grad_norm_(ps, -1.0); }, {"max_norm", "-1"}));
  EXPECT_TRUE(throws_with([&] { optim::clip_grad_norm_(ps, 1.0, 0.0); }, {"norm_type"}));
}

TEST(Clip, GradValueClamps) {
  auto ps = params_with_grads({{-3, 0.5, 2}, {1.5}});
  optim::clip_grad_value_(ps, 1.0);
  expect_grads(ps, {{-1, 0.5, 1}, {1}});
  EXPECT_TRUE(throws_with([&] { optim::clip_grad_value_(ps, -1.0); }, {"clip_value", "-1"}));
}

TEST(Regularisation, L1PenaltyValueAndGradient) {
  Tensor a = from_vector<double>({-1.5, 2.0}).requires_grad_();
  Tensor b = from_vector<double>({0.25}).requires_grad_();
  Tensor pen = optim::l1_penalty({a, b}, 0.1);
  EXPECT_NEAR(pen.item(), 0.1 * 3.75, 1e-15);
  pen.backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{-0.1, 0.1}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.1}));
  EXPECT_TRUE(throws_with([&] { optim::l1_penalty({a}, -1.0); }, {"lambda"}));
  // L2 is the optimizers' weight decay: one SGD step with zero gradient shrinks p by lr * wd.
  Tensor p = from_vector<double>({2.0}).requires_grad_();
  p.set_grad(zeros({1}, DType::F64));
  optim::SGD sgd({p}, {.lr = 0.1, .weight_decay = 0.5});
  sgd.step();
  EXPECT_NEAR(p.item(), 2.0 - 0.1 * 0.5 * 2.0, 1e-15);
}

TEST(Training, SequentialMlpWithAdamReachesLowLoss) {
  // Four classes by quadrant of a 2-D point: not linearly separable, easy for a small MLP.
  Generator g(2024);
  const int64_t n = 256;
  Tensor x = randn({n, 2}, DType::F32, &g);
  std::vector<float> xv = x.to_vector<float>();
  std::vector<int64_t> yv(n);
  for (int64_t i = 0; i < n; ++i) yv[i] = (xv[2 * i] > 0 ? 2 : 0) + (xv[2 * i + 1] > 0 ? 1 : 0);
  Tensor y = from_vector<int64_t>(yv);

  Generator init(7);
  auto model = nn::sequential({
      std::make_shared<nn::Linear>(2, 32, nn::LinearOptions{.generator = &init}), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(32, 32, nn::LinearOptions{.generator = &init}), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(32, 4, nn::LinearOptions{.generator = &init})});
  optim::Adam opt(model->parameters(), {.lr = 0.01});
  nn::CrossEntropyLoss loss_fn;
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 300; ++step) {
    opt.zero_grad();
    Tensor loss = loss_fn((*model)(x), y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item();
    last = loss.item();
  }
  EXPECT_NEAR(first, std::log(4.0), 0.3);  // chance level at the start
  EXPECT_LT(last, 0.1);
  model->eval();
  std::vector<int64_t> pred = argmax((*model)(x), 1).to_vector<int64_t>();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) correct += pred[i] == yv[i];
  EXPECT_GE(correct, n * 97 / 100);
}
