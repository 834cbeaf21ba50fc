// nn tests: registration and dotted names, state_dict round trips and strict-loading errors,
// train/eval, to(), zero_grad, apply, printing and summary, Sequential (with the fused path),
// layer and loss modules against the ops, Linear's default initialisation and nn::init.
#include <cmath>
#include <set>

#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

namespace {

// A normalisation-like layer with a parameter and buffers, to get `features.3.running_mean`.
class Norm : public nn::Module {
 public:
  explicit Norm(int64_t n) {
    weight = register_parameter("weight", ones({n}));
    running_mean = register_buffer("running_mean", zeros({n}));
    register_buffer("scratch", zeros({n}), /*persistent=*/false);
  }
  Tensor forward(const Tensor& x) override { return mul(sub(x, running_mean), weight); }
  std::string type_name() const override { return "Norm"; }
  Tensor weight, running_mean;
};

// A model with named submodules, as a user writes it.
class Net : public nn::Module {
 public:
  Net() {
    features = register_module("features", nn::sequential({std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::ReLU>(),
                                                            std::make_shared<nn::Dropout>(0.5), std::make_shared<Norm>(8)}));
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(8, 3));
  }
  Tensor forward(const Tensor& x) override { return (*fc1)((*features)(x)); }
  std::string type_name() const override { return "Net"; }
  std::shared_ptr<nn::Sequential> features;
  std::shared_ptr<nn::Linear> fc1;
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> out;
  for (const auto& [n, t] : named) out.push_back(n);
  return out;
}

}  // namespace

TEST(Module, NamesFollowPyTorchConvention) {
  Net net;
  EXPECT_EQ(names_of(net.named_parameters()),
            (std::vector<std::string>{"features.0.weight", "features.0.bias", "features.3.weight", "fc1.weight",
                                      "fc1.bias"}));
  EXPECT_EQ(names_of(net.named_buffers()), (std::vector<std::string>{"features.3.running_mean", "features.3.scratch"}));
  // state_dict: parameters and persistent buffers, module by module.
  EXPECT_EQ(names_of(net.state_dict()),
            (std::vector<std::string>{"features.0.weight", "features.0.bias", "features.3.weight",
                                      "features.3.running_mean", "fc1.weight", "fc1.bias"}));
  EXPECT_EQ(names_of(net.named_parameters(/*recurse=*/false)), std::vector<std::string>{});
  std::vector<std::string> modules;
  for (auto& [n, m] : net.named_modules()) modules.push_back(n + ":" + m->type_name());
  EXPECT_EQ(modules, (std::vector<std::string>{":Net", "features:Sequential", "features.0:Linear", "features.1:ReLU",
                                               "features.2:Dropout", "features.3:Norm", "fc1:Linear"}));
  EXPECT_EQ(net.children().size(), 2u);
  EXPECT_EQ(net.num_parameters(), 4 * 8 + 8 + 8 + 8 * 3 + 3);
  // Parameters require grad and are the very tensors the layers hold.
  EXPECT_TRUE(net.parameters()[0].is_same(net.features->at<nn::Linear>(0)->weight));
  for (const Tensor& p : net.parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Module, TiedParametersAppearOnce) {
  auto a = std::make_shared<nn::Linear>(3, 3);
  auto b = std::make_shared<nn::Linear>(3, 3, nn::LinearOptions{.bias = false});
  nn::Sequential seq{a, b};
  EXPECT_EQ(seq.parameters().size(), 3u);
  // Tie b's weight to a's: named_parameters lists it once, state_dict under both names.
  class Tied : public nn::Module {
   public:
    explicit Tied(const Tensor& w) {
      register_parameter("w1", w);
      register_parameter("w2", w);
    }
  } tied(a->weight);
  EXPECT_EQ(tied.parameters().size(), 1u);
  EXPECT_EQ(tied.state_dict().size(), 2u);
  EXPECT_EQ(tied.num_parameters(), 9);
}

TEST(Module, RegistrationErrorsNameTheProblem) {
  nn::Module m;
  m.register_parameter("w", zeros({2}));
  EXPECT_TRUE(throws_with([&] { m.register_parameter("w", zeros({2})); }, {"\"w\"", "already exists"}));
  EXPECT_TRUE(throws_with([&] { m.register_buffer("w", zeros({2})); }, {"\"w\"", "a parameter"}));
  EXPECT_TRUE(throws_with([&] { m.register_parameter("a.b", zeros({2})); }, {"a.b", "'.'"}));
  EXPECT_TRUE(throws_with([&] { m.register_parameter("", zeros({2})); }, {"empty"}));
  EXPECT_TRUE(throws_with([&] { m.register_parameter("i", zeros({2}, DType::I64)); }, {"floating", "i64"}));
  Tensor leaf = ones({2}, TensorOptions(DType::F32, Device::cpu(), true));
  EXPECT_TRUE(throws_with([&] { m.register_parameter("y", mul(leaf, 2.0)); }, {"leaf", "detach()"}));
  EXPECT_TRUE(throws_with([&] { m.register_module("n", std::shared_ptr<nn::Module>()); }, {"null"}));
  EXPECT_TRUE(throws_with([&] { m.forward(zeros({1})); }, {"Module::forward", "override"}));
}

TEST(Module, StateDictRoundTripCopiesValues) {
  manual_seed(1);
  Net a;
  manual_seed(2);
  Net b;
  Tensor x = test::uniform({5, 4}, -1, 1, DType::F32, 7);
  a.eval();
  b.eval();
  a.features->at<Norm>(3)->running_mean.fill_(0.25);
  EXPECT_FALSE(all_close(a(x), b(x), Tol::for_dtype(DType::F32)));
  nn::LoadResult r = b.load_state_dict(a.state_dict());
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  EXPECT_EQ(a(x).to_vector<float>(), b(x).to_vector<float>());
  for (auto& [name, t] : b.state_dict()) {
    bool found = false;
    for (auto& [n2, t2] : a.state_dict())
      if (n2 == name) {
        found = true;
        EXPECT_EQ(t.to_vector<float>(), t2.to_vector<float>()) << name;
        EXPECT_FALSE(t.shares_storage(t2)) << name << " must be a copy";
      }
    EXPECT_TRUE(found) << name;
  }
  // Loading converts dtype: an f64 state dict into the f32 model.
  nn::StateDict f64;
  for (auto& [n, t] : a.state_dict()) f64.emplace_back(n, add(t.to(DType::F64), 1.0));
  b.load_state_dict(f64);
  EXPECT_TRUE(all_close(b.fc1->bias, add(a.fc1->bias, 1.0), Tol::for_dtype(DType::F32)));
  EXPECT_EQ(b.fc1->bias.dtype(), DType::F32);
}

TEST(Module, StrictLoadListsMissingUnexpectedAndMisShapedKeys) {
  Net net;
  nn::StateDict sd = net.state_dict();
  const std::vector<float> before = net.fc1->weight.to_vector<float>();
  nn::StateDict bad;
  for (auto& [n, t] : sd) {
    if (n == "features.3.running_mean") continue;                // missing
    if (n == "fc1.weight") bad.emplace_back(n, zeros({3, 9}));   // mis-shaped
    else bad.emplace_back(n, zeros_like(t));
  }
  bad.emplace_back("fc2.weight", zeros({1}));  // unexpected
  EXPECT_TRUE(throws_with([&] { net.load_state_dict(bad); },
                          {"load_state_dict", "Net", "missing key(s): \"features.3.running_mean\"",
                           "unexpected key(s): \"fc2.weight\"", "size mismatch for \"fc1.weight\"", "[3, 9]", "[3, 8]"}));
  // Nothing was changed by the failed load.
  EXPECT_EQ(net.fc1->weight.to_vector<float>(), before);
  // Non-strict: mis-shaped keys still fail; without them the load reports what it skipped.
  EXPECT_TRUE(throws_with([&] { net.load_state_dict(bad, false); }, {"size mismatch for \"fc1.weight\""}));
  bad.erase(std::remove_if(bad.begin(), bad.end(), [](auto& kv) { return kv.first == "fc1.weight"; }), bad.end());
  nn::LoadResult r = net.load_state_dict(bad, false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"features.3.running_mean", "fc1.weight"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"fc2.weight"}));
  EXPECT_EQ(net.fc1->bias.to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(net.fc1->weight.to_vector<float>(), before);
  nn::StateDict dup = sd;
  dup.push_back(sd[0]);
  EXPECT_TRUE(throws_with([&] { net.load_state_dict(dup); }, {"appears twice"}));
}

TEST(Module, TrainEvalReachesEveryDescendant) {
  Net net;
  EXPECT_TRUE(net.is_training());
  net.eval();
  for (auto& [n, m] : net.named_modules()) EXPECT_FALSE(m->is_training()) << n;
  // Dropout is the identity in eval mode and zeroes about half the elements in training.
  auto drop = net.features->at<nn::Dropout>(2);
  Tensor x = ones({1000});
  EXPECT_EQ((*drop)(x).to_vector<float>(), x.to_vector<float>());
  net.train();
  for (auto& [n, m] : net.named_modules()) EXPECT_TRUE(m->is_training()) << n;
  std::vector<float> y = (*drop)(x).to_vector<float>();
  int zeros_seen = 0;
  for (float v : y) {
    EXPECT_TRUE(v == 0.0f || v == 2.0f);
    zeros_seen += v == 0.0f;
  }
  EXPECT_GT(zeros_seen, 400);
  EXPECT_LT(zeros_seen, 600);
}

TEST(Module, ToDTypeKeepsHandlesAndMovesGradients) {
  auto lin = std::make_shared<nn::Linear>(3, 2);
  Tensor held = lin->weight;  // what an optimizer holds
  Tensor out = sum((*lin)(ones({1, 3})));
  out.backward();
  const std::vector<float> w = lin->weight.to_vector<float>();
  lin->to(DType::F64);
  EXPECT_EQ(held.dtype(), DType::F64);
  EXPECT_EQ(lin->weight.dtype(), DType::F64);
  EXPECT_EQ(lin->weight.grad().dtype(), DType::F64);
  EXPECT_TRUE(held.is_same(lin->weight));
  EXPECT_TRUE(held.requires_grad());
  std::vector<double> w64 = held.to_vector<double>();
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(w64[i], static_cast<double>(w[i]));
  // Integer buffers keep their dtype.
  nn::Module m;
  m.register_buffer("count", zeros({1}, DType::I64));
  m.to(DType::F64);
  EXPECT_EQ(m.buffers()[0].dtype(), DType::I64);
  EXPECT_TRUE(throws_with([&] { m.to(DType::I32); }, {"floating"}));
  lin->to(Device::cpu());
  EXPECT_EQ(lin->weight.device(), Device::cpu());
}

TEST(Module, ZeroGradAndApply) {
  Net net;
  sum(net(ones({2, 4}))).backward();
  for (const Tensor& p : net.parameters()) EXPECT_TRUE(p.grad().defined());
  net.zero_grad(/*set_to_none=*/false);
  for (const Tensor& p : net.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    for (float v : p.grad().to_vector<float>()) EXPECT_EQ(v, 0.0f);
  }
  net.zero_grad();
  for (const Tensor& p : net.parameters()) EXPECT_FALSE(p.grad().defined());
  // apply: children before parents, the root last.
  std::vector<std::string> order;
  net.apply([&](nn::Module& m) { order.push_back(m.type_name()); });
  EXPECT_EQ(order, (std::vector<std::string>{"Linear", "ReLU", "Dropout", "Norm", "Sequential", "Linear", "Net"}));
  // A typical use: re-initialise every Linear.
  net.apply([](nn::Module& m) {
    if (auto* lin = dynamic_cast<nn::Linear*>(&m)) nn::init::zeros_(lin->bias);
  });
  for (float v : net.fc1->bias.to_vector<float>()) EXPECT_EQ(v, 0.0f);
}

TEST(Module, PrintsTreeAndSummary) {
  Net net;
  EXPECT_EQ(net.repr(),
            "Net(\n"
            "  (features): Sequential(\n"
            "    (0): Linear(in_features=4, out_features=8, bias=true)\n"
            "    (1): ReLU()\n"
            "    (2): Dropout(p=0.5)\n"
            "    (3): Norm()\n"
            "  )\n"
            "  (fc1): Linear(in_features=8, out_features=3, bias=true)\n"
            ")");
  const std::string s = net.summary({16, 4});
  for (const char* part : {"features.0", "Linear", "[16, 8]", "40", "features.1", "ReLU", "features.3", "Norm",
                           "fc1", "[16, 3]", "27", "Total params: 75", "Trainable params: 75",
                           "Non-trainable params: 0", "Output shape: [16, 3]"})
    EXPECT_NE(s.find(part), std::string::npos) << "summary lacks " << part << ":\n" << s;
  // Rows come in call order, each module once.
  EXPECT_LT(s.find("features.0"), s.find("features.1"));
  EXPECT_LT(s.find("features.3"), s.find("fc1"));
  // A frozen parameter counts as non-trainable.
  net.fc1->bias.requires_grad_(false);
  EXPECT_NE(net.summary({1, 4}).find("Non-trainable params: 3"), std::string::npos);
  EXPECT_TRUE(throws_with([&] { net.summary({16, 5}); }, {"linear", "5 features"}));
}

TEST(Sequential, BuildAppendIndex) {
  nn::Sequential seq{std::make_shared<nn::Linear>(2, 3), std::make_shared<nn::Tanh>()};
  seq.push_back(std::make_shared<nn::Linear>(3, 1));
  EXPECT_EQ(seq.size(), 3u);
  EXPECT_EQ(seq[2]->type_name(), "Linear");
  EXPECT_EQ(seq[-1].get(), seq[2].get());
  EXPECT_EQ(seq.at<nn::Linear>(2)->in_features, 3);
  EXPECT_TRUE(throws_with([&] { seq[3]; }, {"index 3", "3 modules"}));
  EXPECT_TRUE(throws_with([&] { seq.at<nn::Linear>(1); }, {"Tanh", "not the requested type"}));
  EXPECT_EQ(names_of(seq.named_parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  nn::Sequential named(std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>{
      {"fc1", std::make_shared<nn::Linear>(2, 2)}, {"act", std::make_shared<nn::SiLU>()}});
  EXPECT_EQ(names_of(named.named_parameters()), (std::vector<std::string>{"fc1.weight", "fc1.bias"}));
  Tensor x = test::uniform({4, 2}, -1, 1, DType::F32);
  Tensor ref = linear(tanh(linear(x, seq.at<nn::Linear>(0)->weight, seq.at<nn::Linear>(0)->bias)),
                      seq.at<nn::Linear>(2)->weight, seq.at<nn::Linear>(2)->bias);
  EXPECT_EQ(seq(x).to_vector<float>(), ref.to_vector<float>());
  EXPECT_TRUE(throws_with([&] { seq.push_back(nullptr); }, {"null"}));
}

TEST(Sequential, LinearReluRunsFused) {
  auto l1 = std::make_shared<nn::Linear>(5, 6);
  auto l2 = std::make_shared<nn::Linear>(6, 2);
  nn::Sequential seq{l1, std::make_shared<nn::ReLU>(), l2, std::make_shared<nn::ReLU>()};
  Tensor x = test::uniform({7, 5}, -2, 2, DType::F32, 3);
  Tensor y = seq(x);
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "linear_relu");
  // The fused path equals the composite, forward and backward.
  Tensor ref = relu(linear(relu(linear(x, l1->weight, l1->bias)), l2->weight, l2->bias));
  EXPECT_TRUE(all_close(y, ref, Tol::for_dtype(DType::F32)));
  sum(mul(y, y)).backward();
  std::vector<Tensor> fused_grads;
  for (const Tensor& p : seq.parameters()) fused_grads.push_back(p.grad().clone());
  seq.zero_grad();
  sum(mul(ref, ref)).backward();
  for (size_t i = 0; i < fused_grads.size(); ++i)
    EXPECT_TRUE(all_close(fused_grads[i], seq.parameters()[i].grad(), Tol::for_dtype(DType::F32))) << i;
  // A ReLU that is not directly after a Linear runs on its own.
  nn::Sequential other{std::make_shared<nn::Tanh>(), std::make_shared<nn::ReLU>()};
  EXPECT_EQ(other(x).grad_fn(), nullptr);  // x does not require grad
  EXPECT_EQ(other(x).to_vector<float>(), relu(tanh(x)).to_vector<float>());
}

// set_relu_nan_to_zero: Linear + ReLU pairs run as fused_linear_relu, whose ReLU maps a NaN
// pre-activation to 0 (cuBLASLt's RELU_BIAS semantics); off, NaN stays NaN as in torch.relu.
TEST(Sequential, ReluNanToZeroRunsFusedLinearRelu) {
  auto l1 = std::make_shared<nn::Linear>(3, 2);
  nn::Sequential seq{l1, std::make_shared<nn::ReLU>()};
  EXPECT_FALSE(seq.relu_nan_to_zero());
  nn::init::zeros_(l1->weight);
  {
    autograd::NoGradGuard guard;
    l1->bias.copy_(from_vector<float>({-1.0f, 2.0f}, {2}));
  }
  // Row 0 is finite: both semantics give relu(bias) = (0, 2). Row 1 holds a NaN: 0 * NaN = NaN
  // pre-activations, which relu keeps and the fused epilogue's ReLU turns into 0.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = from_vector<float>({1, 2, 3, nan, 0, 0}, {2, 3});
  std::vector<float> kept = seq(x).to_vector<float>();
  EXPECT_EQ(kept[0], 0.0f);
  EXPECT_EQ(kept[1], 2.0f);
  EXPECT_TRUE(std::isnan(kept[2]) && std::isnan(kept[3]));
  seq.set_relu_nan_to_zero(true);
  Tensor y = seq(x);
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{0, 2, 0, 0}));
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "fused_linear_relu");
  // A Linear without a bias keeps linear_relu (the fused op needs one).
  auto nb = std::make_shared<nn::Linear>(3, 2, nn::LinearOptions{.bias = false});
  nn::Sequential seq2{nb, std::make_shared<nn::ReLU>()};
  seq2.set_relu_nan_to_zero(true);
  EXPECT_EQ(seq2(x).grad_fn()->name(), "linear_relu");
}

TEST(Layers, ActivationsAndShapeModulesMatchTheOps) {
  Tensor x = test::uniform({3, 4}, -3, 3, DType::F64, 11);
  EXPECT_EQ(nn::ReLU()(x).to_vector<double>(), relu(x).to_vector<double>());
  EXPECT_EQ(nn::LeakyReLU(0.2)(x).to_vector<double>(), leaky_relu(x, 0.2).to_vector<double>());
  EXPECT_EQ(nn::Sigmoid()(x).to_vector<double>(), sigmoid(x).to_vector<double>());
  EXPECT_EQ(nn::Tanh()(x).to_vector<double>(), tanh(x).to_vector<double>());
  EXPECT_EQ(nn::GELU()(x).to_vector<double>(), gelu(x).to_vector<double>());
  EXPECT_EQ(nn::GELU(GeluApproximation::Tanh)(x).to_vector<double>(),
            gelu(x, GeluApproximation::Tanh).to_vector<double>());
  EXPECT_EQ(nn::SiLU()(x).to_vector<double>(), silu(x).to_vector<double>());
  EXPECT_EQ(nn::Softmax(1)(x).to_vector<double>(), softmax(x, 1).to_vector<double>());
  EXPECT_EQ(nn::LogSoftmax(0)(x).to_vector<double>(), log_softmax(x, 0).to_vector<double>());
  EXPECT_TRUE(nn::Identity()(x).is_same(x));
  EXPECT_EQ(nn::Flatten()(zeros({2, 3, 4, 5})).shape(), (Shape{2, 60}));
  EXPECT_EQ(nn::Flatten(0, 1)(zeros({2, 3, 4})).shape(), (Shape{6, 4}));
  EXPECT_EQ(nn::LeakyReLU(0.2).repr(), "LeakyReLU(negative_slope=0.2)");
  EXPECT_EQ(nn::Flatten().repr(), "Flatten(start_dim=1, end_dim=-1)");
  EXPECT_TRUE(throws_with([] { nn::Dropout(1.5); }, {"Dropout", "1.5"}));
  EXPECT_TRUE(throws_with([] { nn::Linear(0, 3); }, {"Linear", "in_features=0"}));
  EXPECT_TRUE(throws_with([] { nn::Linear(2, 3, {.dtype = DType::I64}); }, {"Linear", "i64"}));
}

TEST(Layers, LossModulesMatchTheOps) {
  Tensor logits = test::uniform({6, 4}, -2, 2, DType::F64, 5);
  Tensor labels = from_vector<int64_t>({0, 3, 1, 2, 3, -100}, {6});
  EXPECT_EQ(nn::CrossEntropyLoss()(logits, labels).item(), cross_entropy(logits, labels).item());
  CrossEntropyArgs args{Reduction::Sum, -100, 0.1};
  EXPECT_EQ(nn::CrossEntropyLoss(args)(logits, labels).item(), cross_entropy(logits, labels, args).item());
  Tensor lp = log_softmax(logits, 1);
  EXPECT_EQ(nn::NLLLoss()(lp, labels).item(), nll_loss(lp, labels).item());
  Tensor target = test::uniform({6, 4}, 0, 1, DType::F64, 9);
  EXPECT_EQ(nn::MSELoss()(logits, target).item(), mse_loss(logits, target).item());
  EXPECT_EQ(nn::L1Loss(Reduction::Sum)(logits, target).item(), l1_loss(logits, target, Reduction::Sum).item());
  EXPECT_EQ(nn::BCEWithLogitsLoss()(logits, target).item(), binary_cross_entropy_with_logits(logits, target).item());
  EXPECT_EQ(nn::MSELoss(Reduction::None)(logits, target).shape(), (Shape{6, 4}));
  nn::MSELoss mse;
  EXPECT_TRUE(throws_with([&] { mse.nn::Module::operator()(logits); }, {"MSELoss", "(input, target)"}));
  EXPECT_EQ(nn::CrossEntropyLoss(args).repr(), "CrossEntropyLoss(reduction=sum, ignore_index=-100, label_smoothing=0.1)");
}

TEST(Init, LinearDefaultsFollowPyTorch) {
  // weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)), weight drawn first from the generator.
  Generator g(99);
  nn::Linear lin(16, 5, {.dtype = DType::F64, .generator = &g});
  const double bound = 1.0 / std::sqrt(16.0);
  Generator ref(99);
  // kaiming_uniform_(a = sqrt(5)): gain = sqrt(2 / (1 + 5)), bound = sqrt(3) * gain / sqrt(fan_in).
  const double kaiming_bound = std::sqrt(3.0) * std::sqrt(2.0 / 6.0) / std::sqrt(16.0);
  EXPECT_NEAR(kaiming_bound, bound, 1e-15);
  std::vector<double> uw = rand({5, 16}, DType::F64, &ref).to_vector<double>();
  std::vector<double> ub = rand({5}, DType::F64, &ref).to_vector<double>();
  std::vector<double> w = lin.weight.to_vector<double>(), b = lin.bias.to_vector<double>();
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_NEAR(w[i], -kaiming_bound + 2 * kaiming_bound * uw[i], 1e-15);
    EXPECT_LE(std::abs(w[i]), bound + 1e-15);
  }
  for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(b[i], -bound + 2 * bound * ub[i], 1e-15);
  // Reproducible through manual_seed and the default generator.
  manual_seed(5);
  nn::Linear a(8, 8);
  manual_seed(5);
  nn::Linear c(8, 8);
  EXPECT_EQ(a.weight.to_vector<float>(), c.weight.to_vector<float>());
  EXPECT_EQ(a.bias.to_vector<float>(), c.bias.to_vector<float>());
  nn::Linear d(8, 8);
  EXPECT_NE(a.weight.to_vector<float>(), d.weight.to_vector<float>());
}

TEST(Init, GainsFansAndDistributions) {
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain(nn::init::Nonlinearity::Linear), 1.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain(nn::init::Nonlinearity::Tanh), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain(nn::init::Nonlinearity::Relu), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain(nn::init::Nonlinearity::LeakyRelu), std::sqrt(2.0 / (1 + 0.01 * 0.01)));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain(nn::init::Nonlinearity::LeakyRelu, 0.2), std::sqrt(2.0 / 1.04));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain(nn::init::Nonlinearity::Selu), 0.75);
  EXPECT_EQ(nn::init::calculate_fan_in_and_fan_out(zeros({8, 3, 5, 5})), (std::pair<int64_t, int64_t>{75, 200}));
  EXPECT_TRUE(throws_with([] { nn::init::calculate_fan_in_and_fan_out(zeros({4})); }, {"2 dims", "[4]"}));

  auto stats = [](const Tensor& t) {
    std::vector<double> v = t.to_vector<double>();
    double m = 0, s = 0, mx = 0;
    for (double x : v) m += x;
    m /= static_cast<double>(v.size());
    for (double x : v) {
      s += (x - m) * (x - m);
      mx = std::max(mx, std::abs(x));
    }
    return std::array<double, 3>{m, std::sqrt(s / static_cast<double>(v.size())), mx};
  };
  Tensor w = empty({200, 300}, DType::F64);
  // xavier_uniform: U(-a, a), a = sqrt(6 / 500): std a / sqrt(3).
  const double a = std::sqrt(6.0 / 500.0);
  auto s = stats(nn::init::xavier_uniform_(w));
  EXPECT_LE(s[2], a);
  EXPECT_NEAR(s[1], a / std::sqrt(3.0), 0.01 * a);
  EXPECT_NEAR(s[0], 0.0, 0.01 * a);
  s = stats(nn::init::xavier_normal_(w, 2.0));
  EXPECT_NEAR(s[1], 2.0 * std::sqrt(2.0 / 500.0), 0.02 * 2.0 * std::sqrt(2.0 / 500.0));
  // kaiming with relu, fan_in 300 / fan_out 200.
  s = stats(nn::init::kaiming_uniform_(w, 0.0, nn::init::FanMode::FanIn, nn::init::Nonlinearity::Relu));
  EXPECT_LE(s[2], std::sqrt(6.0 / 300.0));
  EXPECT_NEAR(s[1], std::sqrt(2.0 / 300.0), 0.01 * std::sqrt(2.0 / 300.0));
  s = stats(nn::init::kaiming_normal_(w, 0.0, nn::init::FanMode::FanOut, nn::init::Nonlinearity::Relu));
  EXPECT_NEAR(s[1], std::sqrt(2.0 / 200.0), 0.02 * std::sqrt(2.0 / 200.0));
  s = stats(nn::init::normal_(w, 3.0, 0.5));
  EXPECT_NEAR(s[0], 3.0, 0.01);
  EXPECT_NEAR(s[1], 0.5, 0.01);
  s = stats(nn::init::uniform_(w, 1.0, 3.0));
  EXPECT_NEAR(s[0], 2.0, 0.01);
  for (double v : w.to_vector<double>()) ASSERT_TRUE(v >= 1.0 && v < 3.0);
  for (double v : nn::init::constant_(w, 0.3).to_vector<double>()) ASSERT_EQ(v, 0.3);
  for (double v : nn::init::ones_(w).to_vector<double>()) ASSERT_EQ(v, 1.0);
  for (double v : nn::init::zeros_(w).to_vector<double>()) ASSERT_EQ(v, 0.0);
  // A strided view is filled in place.
  Tensor base = zeros({4, 4}, DType::F64);
  nn::init::ones_(base.t().narrow(0, 1, 2));
  EXPECT_EQ(sum(base).item(), 8.0);
  nn::init::uniform_(base.t().narrow(0, 0, 1), 5.0, 6.0);
  EXPECT_GE(base.select(1, 0).to_vector<double>()[3], 5.0);
  EXPECT_TRUE(throws_with([&] { nn::init::uniform_(w, 2.0, 1.0); }, {"uniform_", "a=2", "b=1"}));
  EXPECT_TRUE(throws_with([&] { nn::init::normal_(zeros({2}, DType::I64)); }, {"normal_", "i64"}));
}

TEST(Sequential, CudaFusedPathMatchesCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: the fused linear_relu epilogue is not exercised";
  Generator g(3);
  auto seq = nn::sequential({std::make_shared<nn::Linear>(6, 5, nn::LinearOptions{.generator = &g}),
                             std::make_shared<nn::ReLU>()});
  Tensor x = test::uniform({4, 6}, -1, 1, DType::F32, 8);
  Tensor cpu_out = (*seq)(x);
  seq->to(Device::cuda());
  Tensor gpu_out = (*seq)(x.cuda());
  ASSERT_NE(gpu_out.grad_fn(), nullptr);
  EXPECT_EQ(gpu_out.grad_fn()->name(), "linear_relu");
  EXPECT_EQ(gpu_out.device(), Device::cuda());
  EXPECT_TRUE(all_close(gpu_out.cpu(), cpu_out, {1e-5, 1e-5}));
}
