// ember::quant against a naive int8 reference written here (the formulas in quant.h, evaluated in
// f64 with integer accumulation): weight and activation scales, one Linear (s8 input), a
// Linear-ReLU-Linear chain (u8 input, requantised hidden layer), a Conv-ReLU-MaxPool-Flatten-Linear
// chain, percentile calibration, save/load, errors, and an accuracy-level check on a trained MLP.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "ember/io.h"
#include "ember/quant.h"
#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

namespace {

// Rounds v/s to the int8 / uint8 grid; flags a value within 1e-3 of a rounding boundary, where f32
// and f64 evaluations of the same formula may round differently (the tests require none).
struct Quantized {
  std::vector<double> q;
  int ambiguous = 0;
};
Quantized quantize_ref(const std::vector<double>& v, double s, bool is_unsigned) {
  Quantized r;
  for (double x : v) {
    const double t = x / s;
    const double frac = t - std::floor(t);
    if (std::fabs(frac - 0.5) < 1e-3 && t > (is_unsigned ? 0 : -128) && t < (is_unsigned ? 255 : 127)) ++r.ambiguous;
    r.q.push_back(std::clamp(std::nearbyint(t), is_unsigned ? 0.0 : -128.0, is_unsigned ? 255.0 : 127.0));
  }
  return r;
}

// Checks a layer's weight_q and weight_scale against the formula and returns them as doubles.
std::vector<double> check_weights(const quant::QuantizedLayer& l, const Tensor& w) {
  const std::vector<double> v = w.to_vector<double>();
  const size_t row = v.size() / static_cast<size_t>(l.out);
  std::vector<double> q(v.size());
  for (size_t o = 0; o < static_cast<size_t>(l.out); ++o) {
    double amax = 0;
    for (size_t j = 0; j < row; ++j) amax = std::max(amax, std::fabs(v[o * row + j]));
    // An all-zero channel (pruned) gets scale 1 and zero weights.
    const double scale = amax > 0 ? amax / 127 : 1.0;
    EXPECT_NEAR(l.weight_scale[o], scale, 1e-6 * scale) << l.name << " channel " << o;
    for (size_t j = 0; j < row; ++j) {
      const double expect = std::nearbyint(v[o * row + j] / scale);
      EXPECT_EQ(static_cast<double>(l.weight_q[o * row + j]), expect) << l.name << " element " << o * row + j;
      q[o * row + j] = l.weight_q[o * row + j];
    }
  }
  return q;
}

// y[n, o] = s_in * s_w[o] * sum_k xq[n, k] * wq[o, k] + b[o] (integer sums, exact in f64).
std::vector<double> linear_ref(const std::vector<double>& xq, int64_t n, const std::vector<double>& wq,
                               const quant::QuantizedLayer& l) {
  std::vector<double> y(static_cast<size_t>(n * l.out));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < l.out; ++o) {
      int64_t acc = 0;
      for (int64_t k = 0; k < l.in; ++k)
        acc += static_cast<int64_t>(xq[static_cast<size_t>(i * l.in + k)]) *
               static_cast<int64_t>(wq[static_cast<size_t>(o * l.in + k)]);
      double v =
          l.input_scale * static_cast<double>(l.weight_scale[static_cast<size_t>(o)]) * static_cast<double>(acc) +
          (l.bias.empty() ? 0.0 : l.bias[static_cast<size_t>(o)]);
      if (l.relu) v = std::max(v, 0.0);
      y[static_cast<size_t>(i * l.out + o)] = v;
    }
  return y;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace

TEST(Quant, OneLinearSignedInputAgainstTheFormula) {
  Generator g(1);
  auto lin = std::make_shared<nn::Linear>(37, 9, nn::LinearOptions{.generator = &g});
  auto model = nn::sequential({lin});
  const Tensor x = test::uniform({5, 37}, -2, 2, DType::F32, 7);
  auto q = quant::quantize(*model, {x});
  ASSERT_EQ(q->layers().size(), 1u);
  const quant::QuantizedLayer& l = q->layers()[0];
  const std::vector<double> xv = x.to_vector<double>();
  EXPECT_FALSE(l.input_unsigned);
  EXPECT_NEAR(l.input_scale, max_abs(xv) / 127, 1e-6 * max_abs(xv) / 127);
  const std::vector<double> wq = check_weights(l, lin->weight);
  const Quantized xq = quantize_ref(xv, l.input_scale, false);
  ASSERT_EQ(xq.ambiguous, 0);
  const std::vector<double> y = linear_ref(xq.q, 5, wq, l);
  // acc is exact in both; the f32 scale-and-bias of the library is good to a few ulp.
  EXPECT_TRUE(all_close((*q)(x), from_vector<double>(y, {5, 9}), Tol{1e-5, 1e-5}));
}

TEST(Quant, LinearReluLinearUnsignedInputRequantisesTheHiddenLayer) {
  Generator g(2);
  auto model = nn::sequential({std::make_shared<nn::Linear>(20, 16, nn::LinearOptions{.generator = &g}),
                               std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(16, 4, nn::LinearOptions{.generator = &g})});
  const Tensor x = test::uniform({6, 20}, 0, 1, DType::F32, 8);
  auto q = quant::quantize(*model, {x});
  ASSERT_EQ(q->layers().size(), 2u);
  const auto& l0 = q->layers()[0];
  const auto& l1 = q->layers()[1];
  EXPECT_TRUE(l0.relu);
  EXPECT_TRUE(l0.input_unsigned);
  EXPECT_TRUE(l1.input_unsigned);
  const std::vector<double> xv = x.to_vector<double>();
  EXPECT_NEAR(l0.input_scale, max_abs(xv) / 255, 1e-6 * max_abs(xv) / 255);
  // The hidden layer's scale: the float model's largest ReLU output over the calibration set / 255.
  autograd::NoGradGuard ng;
  const std::vector<double> h = relu((*model->at<nn::Linear>(0))(x)).to_vector<double>();
  EXPECT_NEAR(l1.input_scale, max_abs(h) / 255, 1e-6 * max_abs(h) / 255);
  const auto w0 = check_weights(l0, model->at<nn::Linear>(0)->weight);
  const auto w1 = check_weights(l1, model->at<nn::Linear>(2)->weight);
  const Quantized xq = quantize_ref(xv, l0.input_scale, true);
  ASSERT_EQ(xq.ambiguous, 0);
  const Quantized hq = quantize_ref(linear_ref(xq.q, 6, w0, l0), l1.input_scale, true);
  ASSERT_EQ(hq.ambiguous, 0);
  const std::vector<double> y = linear_ref(hq.q, 6, w1, l1);
  EXPECT_TRUE(all_close((*q)(x), from_vector<double>(y, {6, 4}), Tol{1e-5, 1e-5}));
}

TEST(Quant, ConvReluPoolFlattenLinearChain) {
  Generator g(3);
  nn::ConvOptions co{.padding = {1, 1}, .generator = &g};
  auto model = std::make_shared<nn::Sequential>(std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>{
      {"conv", std::make_shared<nn::Conv2d>(2, 4, 3, co)},
      {"relu", std::make_shared<nn::ReLU>()},
      {"pool", std::make_shared<nn::MaxPool2d>(2)},
      {"drop", std::make_shared<nn::Dropout>(0.5)},
      {"flatten", std::make_shared<nn::Flatten>()},
      {"fc", std::make_shared<nn::Linear>(4 * 4 * 4, 3, nn::LinearOptions{.generator = &g})}});
  const int64_t N = 2, C = 2, H = 8, W = 8, O = 4;
  const Tensor x = test::uniform({N, C, H, W}, -1, 1, DType::F32, 19);
  auto q = quant::quantize(*model, {x});
  ASSERT_EQ(q->layers().size(), 2u);
  const auto& lc = q->layers()[0];
  const auto& lf = q->layers()[1];
  EXPECT_EQ(lc.maxpool_after, 2);
  EXPECT_TRUE(lc.relu);
  EXPECT_TRUE(lf.flatten_before);
  const auto wc = check_weights(lc, model->at<nn::Conv2d>(0)->weight);
  const auto wf = check_weights(lf, model->at<nn::Linear>(5)->weight);
  const Quantized xq = quantize_ref(x.to_vector<double>(), lc.input_scale, false);
  ASSERT_EQ(xq.ambiguous, 0);
  // Naive 3x3 convolution, padding 1, integer accumulation, then scale, bias, ReLU.
  std::vector<double> conv(static_cast<size_t>(N * O * H * W));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          int64_t acc = 0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t a = 0; a < 3; ++a)
              for (int64_t b = 0; b < 3; ++b) {
                const int64_t ii = i + a - 1, jj = j + b - 1;
                if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                acc += static_cast<int64_t>(xq.q[static_cast<size_t>(((n * C + c) * H + ii) * W + jj)]) *
                       static_cast<int64_t>(wc[static_cast<size_t>(((o * C + c) * 3 + a) * 3 + b)]);
              }
          const double v = lc.input_scale * lc.weight_scale[static_cast<size_t>(o)] * static_cast<double>(acc) +
                           lc.bias[static_cast<size_t>(o)];
          conv[static_cast<size_t>(((n * O + o) * H + i) * W + j)] = std::max(v, 0.0);
        }
  const Quantized cq = quantize_ref(conv, lf.input_scale, true);
  ASSERT_EQ(cq.ambiguous, 0);
  // 2x2 max-pool of the quantised values, in NCHW flatten order.
  std::vector<double> pooled;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < H / 2; ++i)
        for (int64_t j = 0; j < W / 2; ++j) {
          double m = 0;
          for (int64_t a = 0; a < 2; ++a)
            for (int64_t b = 0; b < 2; ++b)
              m = std::max(m, cq.q[static_cast<size_t>(((n * O + o) * H + 2 * i + a) * W + 2 * j + b)]);
          pooled.push_back(m);
        }
  const std::vector<double> y = linear_ref(pooled, N, wf, lf);
  EXPECT_TRUE(all_close((*q)(x), from_vector<double>(y, {N, 3}), Tol{1e-5, 1e-5}));
}

TEST(Quant, PercentileCalibrationClipsOutliers) {
  auto model = nn::sequential({std::make_shared<nn::Linear>(4, 2)});
  // |x| = 1..100 over 100 values: the 90th percentile is the 90th smallest, 90.
  std::vector<float> v(100);
  for (int i = 0; i < 100; ++i) v[static_cast<size_t>(i)] = static_cast<float>((i % 2 ? -1 : 1) * (i + 1));
  const Tensor x = from_vector<float>(v, {25, 4});
  auto q = quant::quantize(*model, {x}, {.calibration = quant::Calibration::Percentile, .percentile = 90});
  EXPECT_FLOAT_EQ(q->layers()[0].input_scale, 90.0f / 127);
  auto m = quant::quantize(*model, {x});
  EXPECT_FLOAT_EQ(m->layers()[0].input_scale, 100.0f / 127);
}

TEST(Quant, SaveLoadRoundTrip) {
  Generator g(4);
  auto model = models::mnist_cnn(12, 12, 5);
  const Tensor x = test::uniform({3, 1, 12, 12}, -0.5, 2.5, DType::F32, 10);
  auto q = quant::quantize(*model, {x});
  const std::string path = (std::filesystem::temp_directory_path() / "ember_test_quant_roundtrip.safetensors").string();
  q->save(path);
  auto back = quant::QuantizedSequential::load(path);
  ASSERT_EQ(back->layers().size(), q->layers().size());
  for (size_t i = 0; i < q->layers().size(); ++i) {
    EXPECT_EQ(back->layers()[i].weight_q, q->layers()[i].weight_q);
    EXPECT_EQ(back->layers()[i].weight_scale, q->layers()[i].weight_scale);
    EXPECT_EQ(back->layers()[i].input_scale, q->layers()[i].input_scale);
    EXPECT_EQ(back->layers()[i].relu, q->layers()[i].relu);
  }
  EXPECT_TRUE(all_close((*back)(x), (*q)(x), Tol{0, 0}));
  // The int8 file is about a quarter of the float weights.
  EXPECT_LT(static_cast<double>(std::filesystem::file_size(path)),
            0.3 * 4.0 * static_cast<double>(model->num_parameters()));
  // A float safetensors file is refused with the reason.
  io::save_safetensors(path, {{"w", zeros({2})}});
  EXPECT_TRUE(throws_with([&] { quant::QuantizedSequential::load(path); }, {path, "ember.quant.int8"}));
  std::filesystem::remove(path);
}

TEST(Quant, UnsupportedModelsThrow) {
  auto sig = nn::sequential(
      {std::make_shared<nn::Linear>(4, 4), std::make_shared<nn::Sigmoid>(), std::make_shared<nn::Linear>(4, 2)});
  EXPECT_TRUE(throws_with([&] { quant::quantize(*sig, {zeros({1, 4})}); }, {"'1'", "Sigmoid", "supports"}));
  auto resnet = models::small_resnet(10);
  EXPECT_TRUE(throws_with([&] { quant::quantize(*resnet, {zeros({1, 1, 8, 8})}); }, {"Sequential", "ResNet"}));
  auto ok = nn::sequential({std::make_shared<nn::Linear>(4, 2)});
  EXPECT_TRUE(throws_with([&] { quant::quantize(*ok, {}); }, {"calibration"}));
  auto q = quant::quantize(*ok, {ones({2, 4})});
  EXPECT_TRUE(throws_with([&] { (*q)(zeros({2, 4}, DType::F64)); }, {"F32"}));
  EXPECT_TRUE(throws_with([&] { (*q)(zeros({2, 5})); }, {"'0'", "4 features", "5"}));
}

TEST(Quant, TrainedMlpKeepsItsAccuracy) {
  // Three Gaussian blobs in 16 dimensions; an MLP trained on them in float, then quantised.
  Generator g(5);
  const Tensor centers = mul(randn({3, 16}, DType::F32, &g), 2.0);
  auto make = [&](int64_t n) {
    Tensor y = randint(0, 3, {n}, DType::I64, &g);
    Tensor x = add(index_select(centers, 0, y), randn({n, 16}, DType::F32, &g));
    return std::make_pair(x, y);
  };
  auto [xtr, ytr] = make(512);
  auto [xte, yte] = make(1000);
  auto model = nn::sequential({std::make_shared<nn::Linear>(16, 32, nn::LinearOptions{.generator = &g}),
                               std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(32, 3, nn::LinearOptions{.generator = &g})});
  optim::Adam opt(model->parameters(), optim::AdamOptions{.lr = 1e-2});
  for (int i = 0; i < 200; ++i) {
    opt.zero_grad();
    cross_entropy((*model)(xtr), ytr).backward();
    opt.step();
  }
  auto q = quant::quantize(*model, {xtr.slice(0, 0, 256)});
  autograd::NoGradGuard ng;
  const Tensor pf = argmax((*model)(xte), 1), pq = argmax((*q)(xte), 1);
  const double acc_f = sum(eq(pf, yte)).item<double>() / 1000, acc_q = sum(eq(pq, yte)).item<double>() / 1000;
  const double agree = sum(eq(pf, pq)).item<double>() / 1000;
  EXPECT_GT(acc_f, 0.9);  // the float model learnt the blobs
  EXPECT_LE(std::fabs(acc_f - acc_q), 0.01);
  EXPECT_GE(agree, 0.98);
}

TEST(Quant, FlattenFirstAndAnAllZeroChannel) {
  // A Flatten before the first Linear (the NHWC input read as 2-D with permuted weight columns) and
  // an output channel pruned to zero (scale 1, output = its bias).
  Generator g(6);
  auto lin = std::make_shared<nn::Linear>(2 * 3 * 3, 4, nn::LinearOptions{.generator = &g});
  {
    autograd::NoGradGuard ng;
    Tensor row = lin->weight.select(0, 1);
    row.zero_();
  }
  auto model = nn::sequential({std::make_shared<nn::Flatten>(), lin});
  const Tensor x = test::uniform({3, 2, 3, 3}, -1, 1, DType::F32, 12);
  auto q = quant::quantize(*model, {x});
  const quant::QuantizedLayer& l = q->layers()[0];
  EXPECT_TRUE(l.flatten_before);
  EXPECT_EQ(l.weight_scale[1], 1.0f);
  const std::vector<double> wq = check_weights(l, lin->weight);
  const Quantized xq = quantize_ref(x.to_vector<double>(), l.input_scale, false);
  ASSERT_EQ(xq.ambiguous, 0);
  const std::vector<double> y = linear_ref(xq.q, 3, wq, l);  // NCHW flatten order, as the float model
  const Tensor out = (*q)(x);
  EXPECT_TRUE(all_close(out, from_vector<double>(y, {3, 4}), Tol{1e-5, 1e-5}));
  for (int64_t n = 0; n < 3; ++n) EXPECT_FLOAT_EQ(out.to_vector<float>()[static_cast<size_t>(n * 4 + 1)], l.bias[1]);
}
