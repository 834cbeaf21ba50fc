// Autograd engine: accumulation, graph lifetime, grad modes, version counter, anomaly mode.
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
  Tensor e = exp(x);      // saves its output
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
