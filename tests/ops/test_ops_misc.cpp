// Op behaviour beyond the table: error messages per family, numerical stability, integer and
// boolean results, 0-sized dims, and a golden end-to-end SGD run of a 2-layer MLP.
#include <cmath>

#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

TEST(OpErrors, ElementwiseNamesOpAndShapes) {
  EXPECT_TRUE(throws_with([] { add(zeros({2, 3}), zeros({4})); }, {"add", "[2, 3]", "[4]", "broadcast"}));
  EXPECT_TRUE(throws_with([] { mul(zeros({2}), Tensor()); }, {"mul", "undefined"}));
  EXPECT_TRUE(throws_with([] { where(zeros({2}), zeros({2}), zeros({2})); }, {"where", "condition", "bool"}));
  EXPECT_TRUE(throws_with([] { clamp(zeros({2}), 1.0, -1.0); }, {"clamp", "greater"}));
  // bf16 tensors exist (mixed precision); an op that computes in f32/f64 only names the dtype and the way out.
  EXPECT_TRUE(throws_with([] { softmax(zeros({2, 3}).to(DType::BF16), 1); }, {"softmax", "bf16", "autocast"}));
}

TEST(OpErrors, ReductionsNameOpAndDim) {
  EXPECT_TRUE(throws_with([] { sum(zeros({2, 3}), {2}); }, {"sum", "dim 2", "2 dims"}));
  EXPECT_TRUE(throws_with([] { sum(zeros({2, 3}), {1, -1}); }, {"sum", "twice"}));
  EXPECT_TRUE(throws_with([] { max(zeros({0})); }, {"max", "empty"}));
  EXPECT_TRUE(throws_with([] { max(zeros({2, 0}), 1); }, {"max", "size 0"}));
  EXPECT_TRUE(throws_with([] { argmax(zeros({2}), 3); }, {"argmax", "dim 3"}));
}

TEST(OpErrors, LinearAlgebraNamesShapes) {
  EXPECT_TRUE(throws_with([] { linear(zeros({64, 783}), zeros({500, 784})); },
                          {"linear: input has 783 features but weight expects 784", "[64, 783]", "[500, 784]"}));
  EXPECT_TRUE(throws_with([] { matmul(zeros({2, 3}), zeros({4, 5})); }, {"matmul", "[2, 3]", "[4, 5]", "3 vs 4"}));
  EXPECT_TRUE(throws_with([] { matmul(zeros({2, 2, 3}), zeros({3, 3, 1})); }, {"matmul", "batch"}));
  EXPECT_TRUE(throws_with([] { matmul(zeros({2, 3}), zeros({3, 2}, DType::F64)); }, {"matmul", "f32", "f64"}));
  EXPECT_TRUE(throws_with([] { matmul(zeros({2, 3}, DType::I64), zeros({3, 2}, DType::I64)); }, {"matmul", "i64"}));
  EXPECT_TRUE(throws_with([] { linear(zeros({4, 3}), zeros({2, 3}), zeros({3})); }, {"linear", "bias", "[2]", "[3]"}));
  EXPECT_TRUE(throws_with([] { linear(zeros({4, 3}), zeros({3})); }, {"linear", "weight must be 2-D"}));
}

TEST(OpErrors, LossesNameLabelsAndShapes) {
  EXPECT_TRUE(throws_with([] { cross_entropy(zeros({3, 5}), from_vector<int64_t>({0, 7, 1}, {3})); },
                          {"cross_entropy", "label 7", "[0, 5)"}));
  EXPECT_TRUE(throws_with([] { cross_entropy(zeros({3, 5}), zeros({3})); }, {"cross_entropy", "labels", "i64"}));
  EXPECT_TRUE(throws_with([] { cross_entropy(zeros({3, 5}), zeros({4}, DType::I64)); },
                          {"cross_entropy", "[3]", "[4]"}));
  EXPECT_TRUE(throws_with([] { cross_entropy(zeros({3, 5}), zeros({3}, DType::I64), {Reduction::Mean, -100, 1.5}); },
                          {"label_smoothing"}));
  EXPECT_TRUE(throws_with([] { nll_loss(zeros({2, 3}), from_vector<int64_t>({0, 3}, {2})); },
                          {"nll_loss", "[0, 3)", "[0, 3]"}));
  EXPECT_TRUE(throws_with([] { mse_loss(zeros({2, 3}), zeros({3})); }, {"mse_loss", "[2, 3]", "[3]"}));
}

TEST(OpErrors, ShapeOpsNameArguments) {
  EXPECT_TRUE(throws_with([] { cat({zeros({2, 3}), zeros({2, 4})}, 0); }, {"cat", "tensor 1", "[2, 4]", "dim 0"}));
  EXPECT_TRUE(throws_with([] { cat({}, 0); }, {"cat", "at least one"}));
  EXPECT_TRUE(throws_with([] { stack({zeros({2}), zeros({3})}); }, {"stack", "[3]"}));
  EXPECT_TRUE(throws_with([] { index_select(zeros({3, 2}), 0, from_vector<int64_t>({0, 3}, {2})); },
                          {"index_select", "[0, 3]", "size of the indexed dim is 3"}));
  EXPECT_TRUE(throws_with([] { one_hot(from_vector<int64_t>({0, 4}, {2}), 3); }, {"one_hot", "num_classes is 3"}));
  EXPECT_TRUE(throws_with([] { dropout(zeros({2}), 1.5); }, {"dropout", "[0, 1]"}));
  EXPECT_TRUE(throws_with([] { split(zeros({2}), 0); }, {"split", "positive"}));
}

TEST(Ops, SoftmaxIsStableAtLargeLogits) {
  Tensor x = from_vector<float>({1e4f, -1e4f, 0.0f, 1e4f, 1e4f, -1e4f}, {2, 3});
  std::vector<float> ls = log_softmax(x, 1).to_vector<float>();
  for (float v : ls) EXPECT_TRUE(std::isfinite(v) || v == -INFINITY);
  EXPECT_NEAR(ls[0], 0.0f, 1e-6);
  EXPECT_NEAR(ls[3], -std::log(2.0f), 1e-6);
  EXPECT_NEAR(ls[4], -std::log(2.0f), 1e-6);
  std::vector<float> sm = softmax(x, 1).to_vector<float>();
  EXPECT_NEAR(sm[0], 1.0f, 1e-6);
  EXPECT_EQ(sm[1], 0.0f);
  float l = cross_entropy(x, from_vector<int64_t>({0, 2}, {2}), {Reduction::Sum}).item<float>();
  EXPECT_NEAR(l, 2e4f + std::log(2.0f), 1.0f);
  Tensor big = from_vector<float>({1e4f, 1e4f}, {2});
  EXPECT_NEAR(logsumexp(big, {0}).item<float>(), 1e4f + std::log(2.0f), 1e-2);
  EXPECT_TRUE(std::isfinite(sigmoid(from_vector<float>({-1e4f}, {1})).item<float>()));
  EXPECT_EQ(softplus(from_vector<float>({1e4f}, {1})).item<float>(), 1e4f);
}

TEST(Ops, ComparisonsArgmaxOneHot) {
  Tensor a = from_vector<float>({1, 5, 3, 5}, {2, 2});
  EXPECT_EQ(gt(a, 2.0).dtype(), DType::Bool);
  EXPECT_EQ(gt(a, 2.0).to_vector<bool>(), (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(eq(a, from_vector<float>({5}, {1})).to_vector<bool>(), (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(le(a, 3.0).to_vector<bool>(), (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(argmax(a, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(argmax(a).item<int64_t>(), 1);  // first of the ties
  EXPECT_EQ(argmin(a, 0, true).shape(), (Shape{1, 2}));
  auto [v, i] = max(a, 0);
  EXPECT_EQ(v.to_vector<float>(), (std::vector<float>{3, 5}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
  Tensor oh = one_hot(from_vector<int64_t>({2, 0}, {2}), 3);
  EXPECT_EQ(oh.dtype(), DType::I64);
  EXPECT_EQ(oh.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(sum(from_vector<bool>({true, false, true}, {3})).item<int64_t>(), 2);
  EXPECT_EQ(add(arange(3), 2.0).dtype(), DType::I64);
  EXPECT_EQ(add(arange(3), 0.5).dtype(), DType::F32);
  EXPECT_FALSE(isfinite(from_vector<float>({NAN}, {1})).item<bool>());
}

TEST(Ops, ZeroSizedDims) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ(add(e, ones({3})).shape(), (Shape{0, 3}));
  EXPECT_EQ(sum(e, {0}).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(sum(e).item<float>(), 0.0f);
  EXPECT_EQ(matmul(zeros({2, 0}), zeros({0, 3})).to_vector<float>(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(matmul(e, ones({3, 4})).shape(), (Shape{0, 4}));
  EXPECT_EQ(relu(e).shape(), (Shape{0, 3}));
  EXPECT_EQ(cat({e, ones({2, 3})}, 0).shape(), (Shape{2, 3}));
  EXPECT_EQ(softmax(e, 1).shape(), (Shape{0, 3}));
  Tensor w = ones({0, 3}).requires_grad_();
  sum(mul(w, 2.0)).backward();
  EXPECT_EQ(w.grad().shape(), (Shape{0, 3}));
}

TEST(Ops, DropoutIsSeededAndOffInEval) {
  Tensor x = ones({100});
  Generator g1(9), g2(9);
  EXPECT_EQ(dropout(x, 0.5, true, &g1).to_vector<float>(), dropout(x, 0.5, true, &g2).to_vector<float>());
  EXPECT_TRUE(dropout(x, 0.5, false).is_same(x));
  EXPECT_EQ(sum(dropout(x, 1.0)).item<float>(), 0.0f);
}

// Five plain-SGD steps of a 784-free toy MLP (4 -> 5 -> 3, ReLU, cross-entropy) in f64: ember ops
// and autograd against a forward and backward written out with loops in the test.
TEST(Golden, MlpSgdStepsMatchHandWrittenLoops) {
  const int N = 6, I = 4, H = 5, O = 3;
  const double lr = 0.5;
  Generator g(2024);
  Tensor x = rand({N, I}, DType::F64, &g);
  Tensor y = from_vector<int64_t>({0, 2, 1, 1, 0, 2}, {N});
  Tensor w1 = sub(rand({H, I}, DType::F64, &g), 0.5).detach().requires_grad_();
  Tensor b1 = sub(rand({H}, DType::F64, &g), 0.5).detach().requires_grad_();
  Tensor w2 = sub(rand({O, H}, DType::F64, &g), 0.5).detach().requires_grad_();
  Tensor b2 = sub(rand({O}, DType::F64, &g), 0.5).detach().requires_grad_();
  // The hand-written copy.
  std::vector<double> X = x.to_vector<double>(), W1 = w1.to_vector<double>(), B1 = b1.to_vector<double>(),
                      W2 = w2.to_vector<double>(), B2 = b2.to_vector<double>();
  std::vector<int64_t> Y = y.to_vector<int64_t>();
  for (int step = 0; step < 5; ++step) {
    // ember
    Tensor loss = cross_entropy(linear(relu(linear(x, w1, b1)), w2, b2), y);
    loss.backward();
    {
      autograd::NoGradGuard no_grad;
      for (Tensor* p : {&w1, &b1, &w2, &b2}) {
        add_(*p, p->grad(), -lr);
        p->zero_grad();
      }
    }
    // loops
    std::vector<double> h(N * H), z(N * H), logits(N * O), dlogits(N * O), dh(N * H);
    double L = 0;
    for (int n = 0; n < N; ++n) {
      for (int j = 0; j < H; ++j) {
        double s = B1[j];
        for (int i = 0; i < I; ++i) s += X[n * I + i] * W1[j * I + i];
        z[n * H + j] = s;
        h[n * H + j] = s > 0 ? s : 0;
      }
      double m = -1e300;
      for (int k = 0; k < O; ++k) {
        double s = B2[k];
        for (int j = 0; j < H; ++j) s += h[n * H + j] * W2[k * H + j];
        logits[n * O + k] = s;
        m = std::max(m, s);
      }
      double se = 0;
      for (int k = 0; k < O; ++k) se += std::exp(logits[n * O + k] - m);
      L += (m + std::log(se) - logits[n * O + Y[n]]) / N;
      for (int k = 0; k < O; ++k) dlogits[n * O + k] = (std::exp(logits[n * O + k] - m) / se - (k == Y[n])) / N;
    }
    EXPECT_NEAR(loss.item<double>(), L, 1e-12) << "step " << step;
    std::vector<double> gW2(O * H, 0), gB2(O, 0), gW1(H * I, 0), gB1(H, 0);
    for (int n = 0; n < N; ++n) {
      for (int k = 0; k < O; ++k) {
        gB2[k] += dlogits[n * O + k];
        for (int j = 0; j < H; ++j) gW2[k * H + j] += dlogits[n * O + k] * h[n * H + j];
      }
      for (int j = 0; j < H; ++j) {
        double s = 0;
        for (int k = 0; k < O; ++k) s += dlogits[n * O + k] * W2[k * H + j];
        dh[n * H + j] = z[n * H + j] > 0 ? s : 0;
        gB1[j] += dh[n * H + j];
        for (int i = 0; i < I; ++i) gW1[j * I + i] += dh[n * H + j] * X[n * I + i];
      }
    }
    for (int i = 0; i < O * H; ++i) W2[i] -= lr * gW2[i];
    for (int i = 0; i < O; ++i) B2[i] -= lr * gB2[i];
    for (int i = 0; i < H * I; ++i) W1[i] -= lr * gW1[i];
    for (int i = 0; i < H; ++i) B1[i] -= lr * gB1[i];
  }
  const Tol tol{1e-12, 1e-10};
  EXPECT_TRUE(all_close(w1, W1, tol));
  EXPECT_TRUE(all_close(b1, B1, tol));
  EXPECT_TRUE(all_close(w2, W2, tol));
  EXPECT_TRUE(all_close(b2, B2, tol));
}

// ---- ops users reach for: behaviour the op table's rows cannot show ----

TEST(Embedding, PaddingRowTakesNoGradient) {
  Tensor w = arange(0.0, 12.0, 1.0, DType::F64).reshape({4, 3}).detach().requires_grad_();
  Tensor idx = from_vector<int64_t>({1, 3, 1, 0, 3}, {5});
  Tensor out = embedding(w, idx, -1);  // -1 is row 3
  // The padding row is looked up like any other (PyTorch's rule)...
  EXPECT_EQ(out.to_vector<double>(), (std::vector<double>{3, 4, 5, 9, 10, 11, 3, 4, 5, 0, 1, 2, 9, 10, 11}));
  sum(out).backward();
  // ...but its gradient stays zero: rows 0 and 1 gather 1 and 2 uses, rows 2 and 3 none.
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0}));
  EXPECT_TRUE(throws_with([&] { embedding(w, idx, 4); }, {"embedding", "padding_idx 4", "[-4, 4)"}));
}

TEST(OpErrors, GatherScatterSplitAndLossArgumentsAreChecked) {
  Tensor x = zeros({3, 4});
  EXPECT_TRUE(throws_with(
      [&] {
        gather(x, 1, from_vector<int64_t>({0, 4}, {1, 2}));
      },
      {"gather", "[0, 4]", "the size of the indexed dim is 4"}));
  EXPECT_TRUE(throws_with([&] { gather(x, 1, zeros({2}, DType::I64)); }, {"gather", "1 dims", "same number"}));
  EXPECT_TRUE(throws_with([&] { gather(x, 1, zeros({4, 1}, DType::I64)); }, {"gather", "larger", "dim 0"}));
  EXPECT_TRUE(throws_with(
      [&] {
        scatter_add(x, 0, zeros({2, 2}, DType::I64), zeros({1, 2}));
      },
      {"scatter_add", "larger than src"}));
  EXPECT_TRUE(throws_with([&] { split(x, std::vector<int64_t>{1, 1}, 0); }, {"split", "add up to 2", "size 3"}));
  EXPECT_TRUE(throws_with([&] { split(x, std::vector<int64_t>{2, 2}, 0); }, {"split", "more than"}));
  EXPECT_TRUE(throws_with(
      [&] {
        cross_entropy(zeros({2, 3}), from_vector<int64_t>({0, 1}, {2}), {.weight = ones({2})});
      },
      {"cross_entropy", "weight must be [3]"}));
  EXPECT_TRUE(throws_with([&] { binary_cross_entropy(full({2}, 1.5), zeros({2})); },
                          {"binary_cross_entropy", "[0, 1]", "1.5"}));
  EXPECT_TRUE(throws_with(
      [&] {
        binary_cross_entropy_with_logits(zeros({2, 3}), zeros({2, 3}), {.pos_weight = ones({2})});
      },
      {"pos_weight", "[2]", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { matmul(zeros({2, 2, 3}), zeros({3, 3, 1})); }, {"matmul", "batch dims", "2 vs 3"}));
  EXPECT_TRUE(throws_with([&] { softplus(x, 0.0); }, {"softplus", "beta"}));
}

// PyTorch's binary_cross_entropy clamps each log at -100 and keeps the gradient finite at 0 and 1.
TEST(Losses, BinaryCrossEntropyAtZeroAndOneIsFinite) {
  Tensor p = from_vector<double>({0.0, 1.0, 0.5}, {3}).requires_grad_();
  Tensor t = from_vector<double>({1.0, 0.0, 1.0}, {3});
  Tensor loss = binary_cross_entropy(p, t, {.reduction = Reduction::Sum});
  EXPECT_DOUBLE_EQ(loss.item<double>(), 100.0 + 100.0 - std::log(0.5));
  loss.backward();
  // (p - t) / max(p (1 - p), 1e-12): -1e12, 1e12, (0.5 - 1) / 0.25 = -2.
  EXPECT_EQ(p.grad().to_vector<double>(), (std::vector<double>{-1e12, 1e12, -2.0}));
}

TEST(Matmul, DotProductAndBroadcastShapes) {
  EXPECT_EQ(matmul(ones({4}), ones({4})).shape(), Shape{});
  EXPECT_EQ(matmul(ones({4}), ones({4})).item<float>(), 4.0f);
  EXPECT_EQ(matmul(ones({5, 1, 2, 3}), ones({4, 3, 6})).shape(), (Shape{5, 4, 2, 6}));
  EXPECT_EQ(matmul(ones({2, 3, 4}), ones({4})).shape(), (Shape{2, 3}));
  EXPECT_EQ(matmul(ones({1, 2, 3}), ones({5, 3, 2})).shape(), (Shape{5, 2, 2}));
  EXPECT_TRUE(throws_with([] { matmul(ones({3}), ones({4})); }, {"matmul", "dot product", "[3]", "[4]"}));
}

TEST(Losses, LossModulesCarryTheirWeightsAsBuffers) {
  Tensor w = from_vector<float>({1.0f, 2.0f, 0.5f}, {3});
  nn::CrossEntropyLoss ce({.weight = w});
  const auto state = ce.state_dict();
  ASSERT_EQ(state.size(), 1u);
  EXPECT_EQ(state[0].first, "weight");
  Tensor logits = from_vector<float>({0.5f, -1.0f, 2.0f, 1.0f, 0.0f, -0.5f}, {2, 3});
  Tensor y = from_vector<int64_t>({2, 1}, {2});
  EXPECT_EQ(ce(logits, y).item<float>(), cross_entropy(logits, y, {.weight = w}).item<float>());
  nn::BCEWithLogitsLoss bce({.pos_weight = from_vector<float>({2.0f, 1.0f, 3.0f}, {3})});
  EXPECT_EQ(bce.state_dict().at(0).first, "pos_weight");
  EXPECT_TRUE(throws_with([] { nn::BCELoss({.pos_weight = ones({3})}); }, {"BCELoss", "pos_weight"}));
}
