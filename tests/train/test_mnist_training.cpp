// End to end on real data: one epoch of a small MLP on the 8,000 MNIST training digits (CPU) must
// reach accuracy far above chance (10%) on the 2,000 test digits.
#include <filesystem>

#include "test_util.h"

using namespace ember;

TEST(Training, OneEpochMlpOnMnistDigitsBeatsChance) {
  const std::string dir = std::string(EMBER_SOURCE_DIR) + "/data/mnist";
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "no MNIST data in " << dir << ": run tools/get-data.sh (tools/setup.sh does)";
  data::Mnist ds = data::load_mnist_dir(dir);
  ASSERT_EQ(ds.train.images.size(0), 8000);
  ASSERT_EQ(ds.test.images.size(0), 2000);
  manual_seed(3);
  auto model = nn::sequential({std::make_shared<nn::Linear>(784, 64), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(64, 10)});
  optim::Adam opt(model->parameters(), {.lr = 2e-3});
  data::DataLoaderOptions o;
  o.batch_size = 64;
  o.shuffle = true;
  o.seed = 3;
  data::DataLoader train(data::TensorDataset(ds.train.images, ds.train.labels), o);
  for (data::Batch& b : train) {
    Tensor loss = cross_entropy((*model)(b.x), b.y);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  data::DataLoaderOptions t;
  t.batch_size = 500;
  data::DataLoader test(data::TensorDataset(ds.test.images, ds.test.labels), t);
  metrics::ConfusionMatrix cm(10);
  autograd::InferenceModeGuard inference;
  for (data::Batch& b : test) cm.update(argmax((*model)(b.x), 1), b.y);
  EXPECT_EQ(cm.total(), 2000);
  // Chance is 10%; one epoch of this MLP reaches about 90%.
  EXPECT_GT(cm.accuracy(), 0.80) << cm.to_string();
}
