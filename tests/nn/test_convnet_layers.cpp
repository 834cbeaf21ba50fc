// The convnet layers and ResNet against PyTorch: tests/fixtures/torch_convnets.json (made by
// tests/fixtures/make_torch_convnets.py) holds torchvision's ResNet state_dict names and shapes, and a
// small batch-norm model's state_dict, input, outputs, gradients and running statistics. Also the
// layers' own rules (initialisation bounds, PyTorch's repr text, errors).
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

namespace {

const nlohmann::json& fixture() {
  static const nlohmann::json j = [] {
    std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/torch_convnets.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

Tensor tensor_of(const nlohmann::json& e) {
  const Shape shape = e["shape"].get<std::vector<int64_t>>();
  return from_vector<double>(e["values"].get<std::vector<double>>(), shape);
}

void expect_names_and_shapes(const nn::Module& model, const nlohmann::json& expected) {
  const nn::StateDict sd = model.state_dict();
  ASSERT_EQ(sd.size(), expected.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(sd[i].first, expected[i][0].get<std::string>()) << "entry " << i;
    EXPECT_EQ(sd[i].second.shape(), expected[i][1].get<Shape>()) << sd[i].first;
  }
}

// The fixture's bn_net: Conv2d(2, 3, 3, padding=1) -> BatchNorm2d(3) -> ReLU -> MaxPool2d(2) ->
// Flatten -> Linear(27, 4), in f64.
std::shared_ptr<nn::Sequential> bn_net() {
  nn::ConvOptions co;
  co.padding = {1, 1};
  co.dtype = DType::F64;
  nn::BatchNormOptions bo;
  bo.dtype = DType::F64;
  nn::LinearOptions lo;
  lo.dtype = DType::F64;
  return nn::sequential({std::make_shared<nn::Conv2d>(2, 3, 3, co), std::make_shared<nn::BatchNorm2d>(3, bo),
                         std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(2),
                         std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(27, 4, lo)});
}

nn::StateDict fixture_state(const nlohmann::json& net) {
  nn::StateDict sd;
  for (const auto& name : net["order"]) {
    const auto& e = net["state_dict"][name.get<std::string>()];
    Tensor t = tensor_of(e);
    if (name.get<std::string>().find("num_batches_tracked") != std::string::npos) t = t.to(DType::I64);
    sd.emplace_back(name.get<std::string>(), t);
  }
  return sd;
}

TEST(ConvnetLayers, ResNetStateDictNamesAndShapesAreTorchvisions) {
  expect_names_and_shapes(*models::resnet18(), fixture()["resnet18"]);
  expect_names_and_shapes(*models::resnet50(), fixture()["resnet50"]);
}

TEST(ConvnetLayers, BatchNormModelLoadsPyTorchsStateDictAndGivesItsNumbers) {
  const auto& net = fixture()["bn_net"];
  auto model = bn_net();
  // Same names, same order, as PyTorch's state_dict.
  const nn::StateDict mine = model->state_dict();
  ASSERT_EQ(mine.size(), net["order"].size());
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_EQ(mine[i].first, net["order"][i].get<std::string>());
  model->load_state_dict(fixture_state(net), true);

  const Tensor x = tensor_of(net["input"]);
  const Tol tol{1e-10, 1e-9};
  model->eval();
  EXPECT_TRUE(all_close((*model)(x), tensor_of(net["eval_output"]), tol));

  model->train();
  const Tensor y = (*model)(x);
  EXPECT_TRUE(all_close(y, tensor_of(net["train_output"]), tol));
  sum(mul(y, tensor_of(net["grad_output"]))).backward();
  for (const auto& [name, p] : model->named_parameters())
    EXPECT_TRUE(all_close(p.grad(), tensor_of(net["grads"][name]), tol)) << name;

  // And back: ember's state_dict after the step holds PyTorch's updated statistics under its names.
  for (const auto& [name, t] : model->state_dict()) {
    if (!net["after_train"].contains(name)) continue;
    EXPECT_TRUE(all_close(t.to(DType::F64), tensor_of(net["after_train"][name]), tol)) << name;
  }
  auto bn = model->at<nn::BatchNorm2d>(1);
  EXPECT_EQ(bn->num_batches_tracked.dtype(), DType::I64);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 8);  // 7 in the fixture, plus this step
}

TEST(ConvnetLayers, BatchNorm1dWithoutMomentumKeepsACumulativeAverage) {
  const auto& f = fixture()["bn1d_cumulative"];
  nn::BatchNormOptions o;
  o.momentum = std::nullopt;
  o.dtype = DType::F64;
  nn::BatchNorm1d bn(3, o);
  bn(tensor_of(f["batch1"]));
  bn(tensor_of(f["batch2"]));
  EXPECT_TRUE(all_close(bn.running_mean, tensor_of(f["running_mean"]), Tol{1e-12, 1e-10}));
  EXPECT_TRUE(all_close(bn.running_var, tensor_of(f["running_var"]), Tol{1e-12, 1e-10}));
}

TEST(ConvnetLayers, BatchNormRunningStatisticsFollowTheFormula) {
  // Channel c of a [2, 2, 1, 2] batch holds {a, b, c, d}: mean m, biased variance v for the
  // normalisation, unbiased v * n / (n - 1) for the running variance.
  nn::BatchNormOptions o;
  o.dtype = DType::F64;
  o.momentum = 0.25;
  nn::BatchNorm2d bn(2, o);
  const std::vector<double> xs = {1, 2, 10, 20, 3, 6, 30, 40};  // [n][c][w]
  const Tensor x = from_vector<double>(xs, {2, 2, 1, 2});
  const Tensor y = bn(x);
  for (int c = 0; c < 2; ++c) {
    std::vector<double> v = {xs[c * 2], xs[c * 2 + 1], xs[4 + c * 2], xs[4 + c * 2 + 1]};
    double m = 0;
    for (double e : v) m += e / 4;
    double var = 0;
    for (double e : v) var += (e - m) * (e - m) / 4;
    EXPECT_NEAR(bn.running_mean.to_vector<double>()[c], 0.75 * 0 + 0.25 * m, 1e-12);
    EXPECT_NEAR(bn.running_var.to_vector<double>()[c], 0.75 * 1 + 0.25 * var * 4 / 3, 1e-12);
    const std::vector<double> out = y.to_vector<double>();
    EXPECT_NEAR(out[c * 2], (v[0] - m) / std::sqrt(var + 1e-5), 1e-9);
  }
  // Eval mode normalises by the running statistics.
  bn.eval();
  const std::vector<double> rm = bn.running_mean.to_vector<double>(), rv = bn.running_var.to_vector<double>();
  const std::vector<double> e = bn(x).to_vector<double>();
  EXPECT_NEAR(e[0], (xs[0] - rm[0]) / std::sqrt(rv[0] + 1e-5), 1e-9);
  EXPECT_NEAR(e[3], (xs[3] - rm[1]) / std::sqrt(rv[1] + 1e-5), 1e-9);
}

TEST(ConvnetLayers, ConvolutionsDrawPyTorchsInitialBounds) {
  Generator g(7);
  nn::ConvOptions o;
  o.generator = &g;
  o.groups = 2;
  nn::Conv2d conv(4, 6, Int2{3, 5}, o);
  EXPECT_EQ(conv.weight.shape(), (Shape{6, 2, 3, 5}));
  const double bound = 1.0 / std::sqrt(2.0 * 3 * 5);  // fan_in = in / groups * kH * kW
  for (const Tensor& t : {conv.weight, conv.bias}) {
    const std::vector<double> v = t.to_vector<double>();
    double lo = 1, hi = -1;
    for (double e : v) lo = std::min(lo, e), hi = std::max(hi, e);
    EXPECT_GE(lo, -bound);
    EXPECT_LE(hi, bound);
    EXPECT_LT(lo, -bound / 4);  // spread over the range, not a constant
    EXPECT_GT(hi, bound / 4);
  }
  nn::ConvTranspose2d up(4, 6, 2, {});
  EXPECT_EQ(up.weight.shape(), (Shape{4, 6, 2, 2}));
  nn::Conv1d c1(3, 5, 4);
  EXPECT_EQ(c1.weight.shape(), (Shape{5, 3, 4}));
}

TEST(ConvnetLayers, ReprIsPyTorchs) {
  nn::ConvOptions o;
  o.stride = {2, 2};
  o.padding = {1, 1};
  o.bias = false;
  auto net = nn::sequential({std::make_shared<nn::Conv2d>(1, 32, 3), std::make_shared<nn::Conv2d>(32, 64, 3, o),
                             std::make_shared<nn::BatchNorm2d>(64), std::make_shared<nn::MaxPool2d>(2),
                             std::make_shared<nn::Dropout2d>(0.25), std::make_shared<nn::AdaptiveAvgPool2d>(1)});
  const std::string r = net->repr();
  EXPECT_NE(r.find("(0): Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))"), std::string::npos) << r;
  EXPECT_NE(r.find("(1): Conv2d(32, 64, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("(2): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("(4): Dropout2d(p=0.25)"), std::string::npos) << r;
}

TEST(ConvnetLayers, BadShapesAndSettingsSayWhatToChange) {
  EXPECT_TRUE(throws_with([] { nn::Conv2d(6, 4, 3, {.groups = 4}); }, {"groups=4", "in_channels=6", "divide"}));
  EXPECT_TRUE(throws_with([] { nn::GroupNorm(4, 6); }, {"num_groups=4", "num_channels=6"}));
  nn::BatchNorm2d bn(3);
  EXPECT_TRUE(throws_with([&] { bn(zeros({2, 3, 4})); }, {"BatchNorm2d", "4-D", "[2, 3, 4]"}));
  EXPECT_TRUE(throws_with([&] { bn(zeros({2, 5, 4, 4})); }, {"5 channels", "num_features=3"}));
  nn::BatchNorm1d bn1(3);
  EXPECT_TRUE(throws_with([&] { bn1(zeros({2, 3, 4, 4})); }, {"BatchNorm1d", "[2, 3, 4, 4]"}));
  nn::Unflatten u(1, {2, -1});
  EXPECT_EQ(u(zeros({3, 8})).shape(), (Shape{3, 2, 4}));
  EXPECT_TRUE(throws_with([&] { u(zeros({3, 7})); }, {"Unflatten", "7"}));
  EXPECT_TRUE(throws_with([] { models::ResNetOptions o; o.widths = {16, 32}; models::ResNet r(o); },
                          {"layers", "widths"}));
}

// Two stages of one BasicBlock (widths 4 and 8), the 3x3 stem, one input channel, f64.
models::ResNetOptions tiny_resnet(int64_t classes) {
  models::ResNetOptions o;
  o.layers = {1, 1};
  o.widths = {4, 8};
  o.stem = models::ResNetStem::Small;
  o.in_channels = 1;
  o.num_classes = classes;
  o.dtype = DType::F64;
  return o;
}

TEST(ConvnetLayers, SmallResNetTrainsOneStepAndSwitchesModes) {
  models::ResNet net(tiny_resnet(3));
  EXPECT_EQ(net.maxpool, nullptr);
  // layer2.0 changes width and stride, so it has the 1x1 projection torchvision names downsample.
  bool has_downsample = false;
  for (const auto& [name, t] : net.state_dict()) has_downsample |= name == "layer2.0.downsample.0.weight";
  EXPECT_TRUE(has_downsample);
  const Tensor x = test::uniform({2, 1, 8, 8});
  const Tensor y = net(x);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  cross_entropy(y, from_vector<int64_t>({0, 2}, {2})).backward();
  for (const auto& [name, p] : net.named_parameters()) ASSERT_TRUE(p.grad().defined()) << name;
  // Eval mode: each sample's output no longer depends on the rest of the batch.
  net.eval();
  const Tensor both = net(x), first = net(x.narrow(0, 0, 1));
  EXPECT_TRUE(all_close(both.narrow(0, 0, 1), first, Tol{1e-12, 1e-10}));
}

// ResNetOptions::fc_dropout: dropout on the pooled features before fc. No module, no parameter:
// the state_dict is the plain ResNet's. With fc the identity, the train-mode output is the pooled
// features of the same network without dropout, each either 0 or scaled by 1 / (1 - p); in eval
// mode the two networks agree.
TEST(ConvnetLayers, ResNetFcDropoutDropsPooledFeaturesInTrainingOnly) {
  models::ResNetOptions o = tiny_resnet(8);  // fc [8, 8], set to the identity below
  models::ResNet plain(o);
  o.fc_dropout = 0.5;
  models::ResNet dropped(o);
  ASSERT_NE(dropped.dropout, nullptr);
  EXPECT_EQ(plain.dropout, nullptr);
  std::vector<std::string> plain_names, dropped_names;
  for (const auto& [name, t] : plain.state_dict()) plain_names.push_back(name);
  for (const auto& [name, t] : dropped.state_dict()) dropped_names.push_back(name);
  EXPECT_EQ(plain_names, dropped_names);
  {
    autograd::NoGradGuard no_grad;
    std::vector<double> identity(64, 0.0);
    for (int k = 0; k < 8; ++k) identity[k * 9] = 1.0;
    plain.fc->weight.copy_(from_vector<double>(identity, {8, 8}));
    plain.fc->bias.zero_();
  }
  dropped.load_state_dict(plain.state_dict());
  const Tensor x = test::uniform({2, 1, 8, 8}, -1, 1, DType::F64, 3);
  const std::vector<double> pooled = plain(x).to_vector<double>(), out = dropped(x).to_vector<double>();
  ASSERT_EQ(out.size(), pooled.size());
  int zeros_seen = 0, kept = 0;
  for (size_t k = 0; k < out.size(); ++k) {
    if (out[k] == 0.0) ++zeros_seen;
    else {
      EXPECT_NEAR(out[k], 2.0 * pooled[k], 1e-12 * std::abs(pooled[k])) << k;
      ++kept;
    }
  }
  EXPECT_GT(zeros_seen, 0);  // 16 features, each dropped with probability 1/2
  EXPECT_GT(kept, 0);
  plain.eval();
  dropped.eval();
  EXPECT_TRUE(all_close(dropped(x), plain(x), Tol{0, 0}));
  for (double bad : {-0.1, 1.0}) {
    models::ResNetOptions b = o;
    b.fc_dropout = bad;
    EXPECT_TRUE(throws_with([&] { models::ResNet r(b); }, {"fc_dropout", "[0, 1)"}));
  }
}

}  // namespace
