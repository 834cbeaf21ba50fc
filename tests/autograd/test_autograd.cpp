// Autograd engine: accumulation, graph lifetime, grad modes, version counter, anomaly mode, and
// differentiable casts and moves.
#include <cmath>

#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

TEST(Autograd, SumsGradientsOfATensorUsedTwice) {
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = add(mul(x, x), mul(x, 3.0));  // dy/dx = 2x + 3
  sum(y).backward();
  EXPECT_TRUE(all_close(x.grad(), {5, 7, 9}, Tol::for_dtype(DType::F64)));
}

TEST(Autograd, AccumulatesIntoLeafGradAcrossBackwards) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  sum(mul(x, 2.0)).backward();
  sum(mul(x, 3.0)).backward();
  EXPECT_TRUE(all_close(x.grad(), {5, 5}, Tol::for_dtype(DType::F64)));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  sum(x).backward();
  EXPECT_TRUE(all_close(x.grad(), {1, 1}, Tol::for_dtype(DType::F64)));
}

TEST(Autograd, ReducesBroadcastGradients) {
  Tensor a = ones({3, 1}, DType::F64).requires_grad_();
  Tensor b = ones({4}, DType::F64).requires_grad_();
  sum(add(a, b)).backward();
  EXPECT_EQ(a.grad().shape(), (Shape{3, 1}));
  EXPECT_TRUE(all_close(a.grad(), {4, 4, 4}, Tol::for_dtype(DType::F64)));
  EXPECT_TRUE(all_close(b.grad(), {3, 3, 3, 3}, Tol::for_dtype(DType::F64)));
}

TEST(Autograd, ExplicitGradientForNonScalar) {
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = mul(x, x);
  EXPECT_TRUE(throws_with([&] { y.backward(); }, {"backward", "[3]", "pass a gradient"}));
  y.backward(from_vector<double>({1, 0, 2}, {3}));
  EXPECT_TRUE(all_close(x.grad(), {2, 0, 12}, Tol::for_dtype(DType::F64)));
  EXPECT_TRUE(throws_with([&] { mul(x, 2.0).backward(zeros({2}, DType::F64)); }, {"gradient shape [2]", "[3]"}));
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = from_vector<double>({2}, {1}).requires_grad_();
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_TRUE(all_close(x.grad(), {2 * std::exp(2.0)}, Tol::for_dtype(DType::F64)));
  EXPECT_TRUE(throws_with([&] { y.backward(); }, {"second time", "retain_graph"}));
}

TEST(Autograd, SavedTensorsAreReleasedAfterBackward) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor big = ones({1000}, DType::F64);
  std::weak_ptr<TensorImpl> watch = big.impl_ptr();
  Tensor y = sum(mul(x, sum(big)));
  big = Tensor();
  y.backward();
  // The sum's input was not saved at all; mul saved sum(big) and released it after backward.
  EXPECT_TRUE(watch.expired());
}

TEST(Autograd, NoGradAndInferenceRecordNothing) {
  Tensor x = ones({2}, DType::F64).requires_grad_();
  {
    autograd::NoGradGuard g;
    Tensor y = mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    {
      autograd::EnableGradGuard e;
      EXPECT_TRUE(mul(x, 2.0).requires_grad());
    }
  }
  {
    autograd::InferenceModeGuard inf;
    autograd::EnableGradGuard e;  // cannot re-enable recording inside inference mode
    EXPECT_FALSE(mul(x, 2.0).requires_grad());
  }
  EXPECT_TRUE(mul(x, 2.0).requires_grad());
}

TEST(Autograd, DetachStopsGradientAndSharesStorage) {
  Tensor x = ones({2}, DType::F64).requires_grad_();
  Tensor d = mul(x, 2.0).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  Tensor y = add(mul(x, d), x);
  sum(y).backward();
  EXPECT_TRUE(all_close(x.grad(), {3, 3}, Tol::for_dtype(DType::F64)));
}

TEST(Autograd, InPlaceChangeOfSavedTensorIsAnError) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor e = exp(x);  // saves its output
  Tensor y = sum(mul(e, e));
  mul_(e, 2.0);  // e was saved by mul (and exp): modified after saving
  EXPECT_TRUE(throws_with([&] { y.backward(); }, {"mul", "modified in place", "clone()"}));
}

TEST(Autograd, InPlaceOnLeafThatRequiresGradIsRejected) {
  Tensor w = ones({2}).requires_grad_();
  EXPECT_TRUE(throws_with([&] { mul_(w, 2.0); }, {"mul_", "leaf", "NoGradGuard"}));
  // Tensor's own in-place methods follow the same rule (they once wrote silently).
  EXPECT_TRUE(throws_with([&] { w.fill_(3.0); }, {"fill_", "leaf", "NoGradGuard"}));
  EXPECT_TRUE(throws_with([&] { w.zero_(); }, {"fill_", "leaf"}));
  EXPECT_TRUE(throws_with([&] { w.copy_(zeros({2})); }, {"copy_", "leaf"}));
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{1, 1}));
  autograd::NoGradGuard g;
  mul_(w, 2.0);
  w.fill_(5.0);
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{5, 5}));
}

TEST(Autograd, RequiresGradRules) {
  EXPECT_TRUE(throws_with([] { ones({2}, DType::I64).requires_grad_(); }, {"floating", "i64"}));
  Tensor x = ones({2}).requires_grad_();
  Tensor y = mul(x, 2.0);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(throws_with([&] { y.requires_grad_(false); }, {"leaf", "mul"}));
  EXPECT_TRUE(throws_with([] { sum(ones({2})).backward(); }, {"does not require grad"}));
  // Comparisons and argmax carry no gradient.
  EXPECT_FALSE(gt(x, 0.5).requires_grad());
  EXPECT_FALSE(argmax(x, 0).requires_grad());
}

TEST(Autograd, AnomalyModeNamesTheOp) {
  autograd::detect_anomaly(true);
  Tensor x = from_vector<double>({-1.0, 4.0}, {2}).requires_grad_();
  EXPECT_TRUE(throws_with([&] { log(x); }, {"anomaly", "log (forward)", "1 NaN/Inf"}));
  // A backward that produces Inf: sqrt at 0 has an infinite derivative.
  Tensor z = from_vector<double>({0.0, 4.0}, {2}).requires_grad_();
  Tensor y = sum(sqrt(z));
  EXPECT_TRUE(throws_with([&] { y.backward(); }, {"anomaly", "sqrt (backward)"}));
  autograd::detect_anomaly(false);
  EXPECT_NO_THROW(log(x));
}

TEST(Autograd, ViewGradientsFlowToBase) {
  Tensor x = arange(0.0, 6.0, 1.0, DType::F64).reshape({2, 3}).detach().requires_grad_();
  Tensor y = mul(x.t().slice(0, 1, 3), 2.0);  // [2, 2] view of columns 1 and 2
  sum(y).backward();
  EXPECT_TRUE(all_close(x.grad(), {0, 2, 2, 0, 2, 2}, Tol::for_dtype(DType::F64)));
}

TEST(Autograd, DeepChainRunsInDependencyOrder) {
  Tensor x = ones({4}, DType::F64).requires_grad_();
  Tensor h = x;
  for (int i = 0; i < 200; ++i) h = add(mul(h, 1.01), mul(h, 0.0));
  sum(h).backward();
  EXPECT_TRUE(all_close(x.grad(), std::vector<double>(4, std::pow(1.01, 200)), Tol{1e-9, 1e-9}));
}

// ---- casts and moves are differentiable (as in PyTorch) ----

TEST(AutogradCast, GradientIsCastBackToTheInputDType) {
  Tensor x = from_vector<double>({0.5, -1.25, 2.0}, {3}).requires_grad_();
  Tensor y = x.to(DType::F32);
  ASSERT_TRUE(y.requires_grad());
  ASSERT_TRUE(y.grad_fn() != nullptr);
  const Tensor w = from_vector<float>({3.0f, -2.0f, 0.25f}, {3});
  sum(mul(mul(y, y), w)).backward();  // d/dx = 2 x w, every value exact in f32
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::F64);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2 * 0.5 * 3.0, 2 * -1.25 * -2.0, 2 * 2.0 * 0.25}));
}

// A central-difference gradient check in f64 through f64 -> f32 -> f64: the inputs and the step
// (2^-10) lie on a grid f32 holds exactly, and the function is quadratic, so the finite difference
// is exact and must equal the backward pass to f64 rounding.
TEST(AutogradCast, F64GradcheckThroughACast) {
  const std::vector<double> x0 = {0.5, -0.75, 1.125, 3.0, -2.0, 0.0078125};
  const std::vector<double> w = {1.0, -3.0, 0.5, 2.0, -0.25, 4.0};
  auto f = [&](const Tensor& x) {
    Tensor y = x.to(DType::F32).to(DType::F64);
    return sum(add(mul(mul(y, y), from_vector<double>(w, {6})), y));
  };
  Tensor x = from_vector<double>(x0, {6}).requires_grad_();
  f(x).backward();
  const std::vector<double> analytic = x.grad().to_vector<double>();
  const double h = 1.0 / 1024;
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < x0.size(); ++i) {
    std::vector<double> up = x0, down = x0;
    up[i] += h;
    down[i] -= h;
    const double numeric =
        (f(from_vector<double>(up, {6})).item<double>() - f(from_vector<double>(down, {6})).item<double>()) / (2 * h);
    EXPECT_NEAR(analytic[i], numeric, 1e-12) << "element " << i;
    EXPECT_NEAR(analytic[i], 2 * x0[i] * w[i] + 1, 1e-12) << "element " << i;  // the formula
  }
}

TEST(AutogradCast, CastToAnIntegerDTypeEndsTheGraph) {
  Tensor x = from_vector<double>({1.5, -2.5}, {2}).requires_grad_();
  Tensor i = x.to(DType::I64);
  EXPECT_FALSE(i.requires_grad());
  EXPECT_TRUE(x.to(DType::F64).is_same(x));  // the same dtype is the tensor itself
}

TEST(AutogradCast, ReadingValuesRecordsNothing) {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = mul(x, 2.0);
  const auto before = y.grad_fn();
  Tensor s = sum(y);  // recorded: s is what is read below
  const auto s_fn = s.grad_fn();
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{2, 4}));
  EXPECT_EQ(s.item<double>(), 6.0);
  EXPECT_EQ(s.grad_fn(), s_fn);
  EXPECT_EQ(y.grad_fn(), before);
}

TEST(AutogradCast, CudaMoveIsDifferentiableBothWays) {
  if (!cuda::is_available())
    GTEST_SKIP() << "no CUDA device: the differentiable move to and from CUDA is not exercised";
  Tensor x = from_vector<float>({1, -2, 3}, {3}).requires_grad_();
  Tensor g = x.cuda();
  ASSERT_TRUE(g.requires_grad());
  Tensor back = mul(mul(g, g), 0.5).cpu();  // d/dx = x, computed on the GPU and moved back
  ASSERT_TRUE(back.requires_grad());
  sum(back).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(x.grad().device().is_cpu());
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{1, -2, 3}));
}
