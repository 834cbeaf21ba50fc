// ember::prune against formulas written here: which weights magnitude pruning zeroes (per layer,
// global, threshold), masks that keep them zero through Adam, and structured channel pruning whose
// smaller model computes what the masked original computes.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ember/prune.h"
#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

namespace {

void set_weight(const Tensor& w, const Tensor& v) {
  autograd::NoGradGuard g;
  Tensor t = w;
  t.copy_(v);
}

// The k-th smallest magnitude (1-based) of a set of values.
double kth_abs(std::vector<double> v, size_t k) {
  for (double& x : v) x = std::fabs(x);
  std::sort(v.begin(), v.end());
  return v[k - 1];
}

std::shared_ptr<nn::Sequential> mlp(uint64_t seed) {
  Generator g(seed);
  return nn::sequential({std::make_shared<nn::Linear>(12, 10, nn::LinearOptions{.generator = &g}),
                         std::make_shared<nn::ReLU>(),
                         std::make_shared<nn::Linear>(10, 4, nn::LinearOptions{.generator = &g})});
}

}  // namespace

TEST(Prune, PerLayerAmountZeroesTheSmallestMagnitudes) {
  auto model = mlp(3);
  const std::vector<double> w0 = model->at<nn::Linear>(0)->weight.to_vector<double>();
  const std::vector<double> w2 = model->at<nn::Linear>(2)->weight.to_vector<double>();
  auto masks = prune::magnitude_prune(*model, {.amount = 0.3});
  // round(0.3 * 120) = 36 and round(0.3 * 40) = 12 of each layer's smallest |w| (magnitudes of
  // uniform random floats are distinct, so the set is the |w| up to the k-th smallest).
  const std::vector<std::pair<std::vector<double>, int64_t>> expect = {{w0, 36}, {w2, 12}};
  const std::vector<Tensor> after = {model->at<nn::Linear>(0)->weight, model->at<nn::Linear>(2)->weight};
  for (size_t l = 0; l < 2; ++l) {
    const auto& [before, k] = expect[l];
    const double cut = kth_abs(before, static_cast<size_t>(k));
    const std::vector<double> now = after[l].to_vector<double>();
    int64_t zeros = 0;
    for (size_t j = 0; j < before.size(); ++j) {
      if (std::fabs(before[j]) <= cut) {
        EXPECT_EQ(now[j], 0.0) << "layer " << l << " element " << j;
        ++zeros;
      } else {
        EXPECT_EQ(now[j], before[j]) << "layer " << l << " element " << j;
      }
    }
    EXPECT_EQ(zeros, k);
    EXPECT_EQ(masks->entries()[l].pruned(), k);
  }
  EXPECT_EQ(masks->entries()[0].name, "0.weight");
  EXPECT_EQ(masks->entries()[1].name, "2.weight");
  EXPECT_EQ(masks->pruned(), 48);
  EXPECT_DOUBLE_EQ(masks->sparsity(), 48.0 / 160.0);
  const auto sp = prune::weight_sparsity(*model);
  ASSERT_EQ(sp.size(), 2u);
  EXPECT_EQ(sp[0].zeros, 36);
  EXPECT_EQ(sp[1].numel, 40);
}

TEST(Prune, GlobalAmountRanksAllLayersTogether) {
  auto model = mlp(5);
  // The second layer's weights 10x larger: a global ranking takes almost all of its cut from layer 0.
  set_weight(model->at<nn::Linear>(2)->weight, mul(model->at<nn::Linear>(2)->weight, 10.0));
  std::vector<double> all = model->at<nn::Linear>(0)->weight.to_vector<double>();
  const std::vector<double> w2 = model->at<nn::Linear>(2)->weight.to_vector<double>();
  const std::vector<double> w0 = all;
  all.insert(all.end(), w2.begin(), w2.end());
  auto masks = prune::magnitude_prune(*model, {.amount = 0.5, .scope = prune::Scope::Global});
  const double cut = kth_abs(all, 80);  // round(0.5 * 160)
  int64_t z0 = 0, z2 = 0;
  for (double v : w0) z0 += std::fabs(v) <= cut;
  for (double v : w2) z2 += std::fabs(v) <= cut;
  EXPECT_EQ(z0 + z2, 80);
  EXPECT_EQ(masks->entries()[0].pruned(), z0);
  EXPECT_EQ(masks->entries()[1].pruned(), z2);
  EXPECT_GT(z0, 60);  // the formula's consequence: layer 0 is far sparser
  const std::vector<double> now2 = model->at<nn::Linear>(2)->weight.to_vector<double>();
  for (size_t j = 0; j < w2.size(); ++j) EXPECT_EQ(now2[j], std::fabs(w2[j]) <= cut ? 0.0 : w2[j]);
}

TEST(Prune, ThresholdZeroesMagnitudesBelowIt) {
  auto model = mlp(7);
  const std::vector<double> w0 = model->at<nn::Linear>(0)->weight.to_vector<double>();
  prune::magnitude_prune(*model, {.threshold = 0.1});
  const std::vector<double> now = model->at<nn::Linear>(0)->weight.to_vector<double>();
  int64_t zeros = 0;
  for (size_t j = 0; j < w0.size(); ++j) {
    EXPECT_EQ(now[j], std::fabs(w0[j]) < 0.1 ? 0.0 : w0[j]);
    zeros += std::fabs(w0[j]) < 0.1;
  }
  EXPECT_GT(zeros, 0);
}

TEST(Prune, MasksKeepPrunedWeightsZeroThroughAdam) {
  auto model = mlp(9);
  Generator g(11);
  const Tensor x = randn({16, 12}, DType::F32, &g);
  const Tensor y = randint(0, 4, {16}, DType::I64, &g);
  optim::Adam opt(model->parameters(), optim::AdamOptions{.lr = 1e-2, .weight_decay = 1e-3});
  auto train_step = [&] {
    opt.zero_grad();
    cross_entropy((*model)(x), y).backward();
    opt.step();
  };
  for (int i = 0; i < 5; ++i) train_step();  // Adam's moments now non-zero everywhere
  const Tensor w0 = model->at<nn::Linear>(0)->weight;
  {
    auto masks = prune::magnitude_prune(*model, {.amount = 0.5});
    const std::vector<double> mask = masks->entries()[0].mask.to_vector<double>();
    const std::vector<double> kept_before = w0.to_vector<double>();
    for (int i = 0; i < 5; ++i) {
      opt.zero_grad();
      cross_entropy((*model)(x), y).backward();
      // The gradient hook: no gradient reaches a pruned weight.
      const std::vector<double> grad = w0.grad().to_vector<double>();
      for (size_t j = 0; j < grad.size(); ++j)
        if (mask[j] == 0) ASSERT_EQ(grad[j], 0.0) << j;
      opt.step();
      masks->apply();
    }
    const std::vector<double> now = w0.to_vector<double>();
    int64_t moved = 0;
    for (size_t j = 0; j < now.size(); ++j) {
      if (mask[j] == 0)
        EXPECT_EQ(now[j], 0.0) << j;
      else
        moved += now[j] != kept_before[j];
    }
    EXPECT_GT(moved, 0);  // the kept weights still train
    // Without apply(), Adam's momentum from before the pruning moves pruned weights off zero: the
    // reason apply() runs after each step.
    opt.zero_grad();
    cross_entropy((*model)(x), y).backward();
    opt.step();
    const std::vector<double> drifted = w0.to_vector<double>();
    int64_t off = 0;
    for (size_t j = 0; j < drifted.size(); ++j) off += mask[j] == 0 && drifted[j] != 0.0;
    EXPECT_GT(off, 0);
  }
}

TEST(Prune, BadOptionsThrow) {
  auto model = mlp(1);
  EXPECT_TRUE(throws_with([&] { prune::magnitude_prune(*model, {.amount = 1.5}); }, {"amount", "[0, 1]", "1.5"}));
  EXPECT_TRUE(throws_with([&] { prune::magnitude_prune(*model, {}); }, {"exactly one", "neither"}));
  EXPECT_TRUE(throws_with([&] { prune::magnitude_prune(*model, {.amount = 0.5, .threshold = 0.1}); }, {"both"}));
  EXPECT_TRUE(throws_with([&] { prune::magnitude_prune(*model, {.threshold = -1.0}); }, {"threshold", ">= 0"}));
  nn::ReLU relu;
  EXPECT_TRUE(throws_with([&] { prune::magnitude_prune(relu, {.amount = 0.5}); }, {"no Linear or Conv2d"}));
  EXPECT_TRUE(throws_with([&] { prune::prune_channels(*model, {.amount = 1.0}); }, {"amount", "[0, 1)"}));
  auto resnet = models::small_resnet(10);
  EXPECT_TRUE(throws_with([&] { prune::prune_channels(*resnet, {}); }, {"Sequential", "ResNet", "residual"}));
  auto odd =
      nn::sequential({std::make_shared<nn::Linear>(4, 4), std::make_shared<nn::LayerNorm>(std::vector<int64_t>{4}),
                      std::make_shared<nn::Linear>(4, 2)});
  EXPECT_TRUE(throws_with([&] { prune::prune_channels(*odd, {}); }, {"'1'", "LayerNorm", "supported children"}));
}

namespace {

// Output channels a layer keeps by the formula: drop the round(amount * n) smallest norms.
std::vector<int64_t> expected_keep(const Tensor& w, double amount, prune::Norm norm) {
  const int64_t n = w.size(0);
  const std::vector<double> v = w.to_vector<double>();
  const size_t row = v.size() / static_cast<size_t>(n);
  std::vector<double> nrm(static_cast<size_t>(n));
  for (size_t c = 0; c < nrm.size(); ++c) {
    double s = 0;
    for (size_t j = 0; j < row; ++j)
      s += norm == prune::Norm::L1 ? std::fabs(v[c * row + j]) : v[c * row + j] * v[c * row + j];
    nrm[c] = s;  // the L2 ranking is the ranking of its square
  }
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](int64_t a, int64_t b) { return nrm[static_cast<size_t>(a)] > nrm[static_cast<size_t>(b)]; });
  idx.resize(static_cast<size_t>(n - std::llround(amount * static_cast<double>(n))));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Zeroes the inputs of `w` (dim 1, in blocks of `block` columns) that are not in `keep`.
void zero_inputs(const Tensor& w, const std::vector<int64_t>& keep, int64_t block) {
  Tensor m = zeros({w.size(1)}, DType::F64);
  std::vector<double> mv(static_cast<size_t>(w.size(1)), 0.0);
  for (int64_t c : keep)
    for (int64_t j = 0; j < block; ++j) mv[static_cast<size_t>(c * block + j)] = 1.0;
  Shape s(static_cast<size_t>(w.dim()), 1);
  s[1] = w.size(1);
  set_weight(w, mul(w, from_vector<double>(mv, s).to(w.dtype())));
}

}  // namespace

TEST(PruneChannels, MlpKeepsTheLargestNormsAndComputesTheMaskedModel) {
  Generator g(21);
  auto model =
      nn::sequential({std::make_shared<nn::Linear>(8, 6, nn::LinearOptions{.dtype = DType::F64, .generator = &g}),
                      std::make_shared<nn::ReLU>(),
                      std::make_shared<nn::Linear>(6, 5, nn::LinearOptions{.dtype = DType::F64, .generator = &g}),
                      std::make_shared<nn::Tanh>(),
                      std::make_shared<nn::Linear>(5, 3, nn::LinearOptions{.dtype = DType::F64, .generator = &g})});
  for (prune::Norm norm : {prune::Norm::L1, prune::Norm::L2}) {
    auto small = prune::prune_channels(*model, {.amount = 0.5, .norm = norm});
    const auto l0 = model->at<nn::Linear>(0), l2 = model->at<nn::Linear>(2), l4 = model->at<nn::Linear>(4);
    const auto k0 = expected_keep(l0->weight, 0.5, norm);  // 3 of 6
    // Layer 2's ranking is over its rows restricted to the inputs kept from layer 0.
    const Tensor w2_in = index_select(l2->weight, 1, from_vector<int64_t>(k0));
    const auto k2 = expected_keep(w2_in, 0.5, norm);  // 5 - round(2.5) = 2 of 5
    ASSERT_EQ(k0.size(), 3u);
    ASSERT_EQ(k2.size(), 2u);
    EXPECT_EQ(small->at<nn::Linear>(0)->weight.shape(), (Shape{3, 8}));
    EXPECT_EQ(small->at<nn::Linear>(2)->weight.shape(), (Shape{2, 3}));
    EXPECT_EQ(small->at<nn::Linear>(4)->weight.shape(), (Shape{3, 2}));
    EXPECT_TRUE(
        all_close(small->at<nn::Linear>(0)->weight, index_select(l0->weight, 0, from_vector<int64_t>(k0)), Tol{0, 0}));
    EXPECT_TRUE(
        all_close(small->at<nn::Linear>(0)->bias, index_select(l0->bias, 0, from_vector<int64_t>(k0)), Tol{0, 0}));
    // The masked original: layers 2 and 4 ignore the removed channels.
    auto masked = nn::sequential(
        {std::make_shared<nn::Linear>(8, 6, nn::LinearOptions{.dtype = DType::F64}), std::make_shared<nn::ReLU>(),
         std::make_shared<nn::Linear>(6, 5, nn::LinearOptions{.dtype = DType::F64}), std::make_shared<nn::Tanh>(),
         std::make_shared<nn::Linear>(5, 3, nn::LinearOptions{.dtype = DType::F64})});
    masked->load_state_dict(model->state_dict());
    zero_inputs(masked->at<nn::Linear>(2)->weight, k0, 1);
    zero_inputs(masked->at<nn::Linear>(4)->weight, k2, 1);
    const Tensor x = test::uniform({7, 8});
    autograd::NoGradGuard ng;
    EXPECT_TRUE(all_close((*small)(x), (*masked)(x), Tol::for_dtype(DType::F64)));
    EXPECT_LT(small->num_parameters(), model->num_parameters());
  }
}

TEST(PruneChannels, ConvBatchNormFlattenChain) {
  Generator g(31);
  nn::ConvOptions co{.padding = {1, 1}, .dtype = DType::F64, .generator = &g};
  auto model = std::make_shared<nn::Sequential>(std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>{
      {"conv1", std::make_shared<nn::Conv2d>(2, 6, 3, co)},
      {"bn1", std::make_shared<nn::BatchNorm2d>(6, nn::BatchNormOptions{.dtype = DType::F64})},
      {"relu1", std::make_shared<nn::ReLU>()},
      {"conv2", std::make_shared<nn::Conv2d>(6, 4, 3, co)},
      {"relu2", std::make_shared<nn::ReLU>()},
      {"pool", std::make_shared<nn::MaxPool2d>(2)},
      {"flatten", std::make_shared<nn::Flatten>()},
      {"fc", std::make_shared<nn::Linear>(4 * 4 * 4, 3, nn::LinearOptions{.dtype = DType::F64, .generator = &g})}});
  auto bn = model->at<nn::BatchNorm2d>(1);
  set_weight(bn->weight, test::uniform({6}, 0.5, 1.5, DType::F64, 1));
  set_weight(bn->bias, test::uniform({6}, -0.5, 0.5, DType::F64, 2));
  set_weight(bn->running_mean, test::uniform({6}, -0.2, 0.2, DType::F64, 3));
  set_weight(bn->running_var, test::uniform({6}, 0.5, 2.0, DType::F64, 4));
  model->eval();
  auto small = prune::prune_channels(*model, {.amount = 0.5, .norm = prune::Norm::L2});
  EXPECT_FALSE(small->is_training());
  const auto c1 = model->at<nn::Conv2d>(0), c2 = model->at<nn::Conv2d>(3);
  const auto k1 = expected_keep(c1->weight, 0.5, prune::Norm::L2);
  const auto k2 = expected_keep(index_select(c2->weight, 1, from_vector<int64_t>(k1)), 0.5, prune::Norm::L2);
  ASSERT_EQ(k1.size(), 3u);
  ASSERT_EQ(k2.size(), 2u);
  auto sbn = small->at<nn::BatchNorm2d>(1);
  EXPECT_EQ(sbn->num_features, 3);
  EXPECT_TRUE(all_close(sbn->running_var, index_select(bn->running_var, 0, from_vector<int64_t>(k1)), Tol{0, 0}));
  EXPECT_EQ(small->at<nn::Conv2d>(3)->weight.shape(), (Shape{2, 3, 3, 3}));
  EXPECT_EQ(small->at<nn::Linear>(7)->weight.shape(), (Shape{3, 2 * 16}));
  // The masked original: conv2 ignores conv1's removed channels (whose BatchNorm output is not zero,
  // bias and mean being non-zero), fc ignores conv2's removed channels' 16 features each.
  auto masked_c2 = std::make_shared<nn::Conv2d>(6, 4, 3, co);
  auto masked_fc = std::make_shared<nn::Linear>(64, 3, nn::LinearOptions{.dtype = DType::F64});
  set_weight(masked_c2->weight, c2->weight);
  set_weight(masked_c2->bias, c2->bias);
  set_weight(masked_fc->weight, model->at<nn::Linear>(7)->weight);
  set_weight(masked_fc->bias, model->at<nn::Linear>(7)->bias);
  zero_inputs(masked_c2->weight, k1, 1);
  zero_inputs(masked_fc->weight, k2, 16);
  auto masked = nn::sequential({c1, bn, std::make_shared<nn::ReLU>(), masked_c2, std::make_shared<nn::ReLU>(),
                                std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(), masked_fc});
  masked->eval();
  const Tensor x = test::uniform({3, 2, 8, 8});
  autograd::NoGradGuard ng;
  EXPECT_TRUE(all_close((*small)(x), (*masked)(x), Tol::for_dtype(DType::F64)));
}

TEST(PruneChannels, MnistCnnShapes) {
  auto model = models::mnist_cnn();
  auto small = prune::prune_channels(*model, {.amount = 0.5});
  EXPECT_EQ(small->at<nn::Conv2d>(0)->weight.shape(), (Shape{16, 1, 3, 3}));
  EXPECT_EQ(small->at<nn::Conv2d>(2)->weight.shape(), (Shape{32, 16, 3, 3}));
  EXPECT_EQ(small->at<nn::Linear>(7)->weight.shape(), (Shape{64, 32 * 12 * 12}));
  EXPECT_EQ(small->at<nn::Linear>(10)->weight.shape(), (Shape{10, 64}));
  small->eval();
  autograd::NoGradGuard ng;
  EXPECT_EQ((*small)(zeros({2, 1, 28, 28})).shape(), (Shape{2, 10}));
}
