// Transfer learning on Module: requires_grad_, freeze (batch norm kept in eval mode), replacing a
// head in place, and parameter groups with a lower backbone learning rate.
#include <cmath>

#include "ember/models.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

std::shared_ptr<models::ResNet> tiny_resnet(uint64_t seed) {
  models::ResNetOptions o;
  o.layers = {1, 1};
  o.widths = {4, 8};
  o.stem = models::ResNetStem::Small;
  o.in_channels = 1;
  o.num_classes = 3;
  static Generator g(0);
  g = Generator(seed);
  o.generator = &g;
  return std::make_shared<models::ResNet>(o);
}

TEST(Transfer, RequiresGradFalseFreezesEveryParameterOfTheSubtree) {
  auto m = tiny_resnet(1);
  m->stages[0]->requires_grad_(false);
  for (auto& [name, p] : m->named_parameters())
    EXPECT_EQ(p.requires_grad(), name.rfind("layer1.", 0) != 0) << name;
  m->requires_grad_(true);
  for (auto& [name, p] : m->named_parameters()) EXPECT_TRUE(p.requires_grad()) << name;
}

TEST(Transfer, FrozenBatchNormStaysInEvalModeAndKeepsItsStatistics) {
  auto m = tiny_resnet(2);
  m->bn1->freeze();
  m->train();  // what a trainer does every epoch
  EXPECT_FALSE(m->bn1->is_training());
  EXPECT_TRUE(m->is_training());
  EXPECT_TRUE(m->stages[0]->is_training());
  const std::vector<float> mean = m->bn1->running_mean.to_vector<float>();
  const std::vector<float> var = m->bn1->running_var.to_vector<float>();
  Tensor x = add(mul(rand({4, 1, 8, 8}), 3.0), 1.0);  // statistics far from the running (0, 1)
  Tensor loss = sum((*m)(x));
  loss.backward();
  EXPECT_EQ(m->bn1->running_mean.to_vector<float>(), mean);
  EXPECT_EQ(m->bn1->running_var.to_vector<float>(), var);
  EXPECT_FALSE(m->bn1->weight.grad().defined()) << "frozen parameters get no gradient";
  EXPECT_TRUE(m->fc->weight.grad().defined());
  // Eval-mode batch norm: (x - running_mean) / sqrt(running_var + eps) * w + b, per channel.
  Tensor y = (*m->bn1)(full({1, 4, 1, 1}, 2.0));
  const std::vector<float> yv = y.to_vector<float>(), w = m->bn1->weight.to_vector<float>(),
                           b = m->bn1->bias.to_vector<float>();
  for (size_t c = 0; c < 4; ++c) EXPECT_NEAR(yv[c], (2.0 - mean[c]) / std::sqrt(var[c] + 1e-5) * w[c] + b[c], 1e-5);
  m->bn1->freeze(false);
  m->train();
  EXPECT_TRUE(m->bn1->is_training());
  EXPECT_TRUE(m->bn1->weight.requires_grad());
}

TEST(Transfer, ReplaceModuleSwapsTheHeadInPlace) {
  auto m = tiny_resnet(3);
  const size_t n_before = m->state_dict().size();
  m->fc = m->replace_module("fc", std::make_shared<nn::Linear>(8, 7));
  nn::StateDict sd = m->state_dict();
  ASSERT_EQ(sd.size(), n_before);
  EXPECT_EQ(sd[sd.size() - 2].first, "fc.weight");
  EXPECT_EQ(sd[sd.size() - 2].second.shape(), (Shape{7, 8}));
  EXPECT_EQ((*m)(rand({2, 1, 8, 8})).shape(), (Shape{2, 7}));
  EXPECT_TRUE(throws_with([&] { m->replace_module("head", std::make_shared<nn::Linear>(8, 7)); },
                          {"replace_module(\"head\"): no submodule of that name", "\"fc\""}));
}

TEST(Transfer, BackboneGroupStepsAtTheScaledLearningRate) {
  // SGD without momentum: each parameter moves by exactly -lr_group * grad.
  auto m = tiny_resnet(4);
  optim::ParamGroup head, backbone;
  for (auto& [name, p] : m->named_parameters()) (name.rfind("fc.", 0) == 0 ? head : backbone).params.push_back(p);
  backbone.lr = 0.01;
  optim::SGD opt({head, backbone}, optim::SGDOptions{.lr = 0.1});
  Tensor before_fc = m->fc->weight.detach().contiguous(), before_c = m->conv1->weight.detach().contiguous();
  std::vector<float> bf = before_fc.to_vector<float>(), bc = before_c.to_vector<float>();
  sum((*m)(rand({2, 1, 8, 8}))).backward();
  std::vector<float> gf = m->fc->weight.grad().to_vector<float>(), gc = m->conv1->weight.grad().to_vector<float>();
  opt.step();
  std::vector<float> af = m->fc->weight.to_vector<float>(), ac = m->conv1->weight.to_vector<float>();
  for (size_t i = 0; i < af.size(); ++i) EXPECT_NEAR(af[i], bf[i] - 0.1f * gf[i], 1e-6);
  for (size_t i = 0; i < ac.size(); ++i) EXPECT_NEAR(ac[i], bc[i] - 0.01f * gc[i], 1e-6);
}

}  // namespace
