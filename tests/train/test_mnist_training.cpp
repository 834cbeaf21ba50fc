// End to end on real data: one epoch of a small MLP on the 8,000 MNIST training digits (CPU) must
// reach accuracy far above chance (10%) on the 2,000 test digits.
#include <cmath>
#include <filesystem>
#include <optional>

#include "test_util.h"

using namespace ember;

TEST(Training, OneEpochMlpOnMnistDigitsBeatsChance) {
  const std::string dir = std::string(EMBER_SOURCE_DIR) + "/data/mnist";
  ASSERT_TRUE(std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz"))
      << dir << " lacks the MNIST digits that ship with the repository: git checkout -- data/mnist";
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

// The GPU training loop of ember-mnist, step by step, with the host forbidden to wait for the
// device (cuda::SyncDebugMode::Error) and the upload counter watched: after the first step (which
// uploads the dataset and the optimizer's parameter table once), whole epochs run (device-drawn
// permutations, fused gather + augmentation + normalisation, forward, loss, backward, a OneCycle lr
// changing every step, the fused Adam step, running sums, the progress bar's AsyncRead) without a
// single host-to-device copy or host wait.
TEST(Training, CudaStepsNeitherUploadNorWait) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  const Device dev = Device::cuda();
  std::vector<uint8_t> px(200 * 784);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 37 + i / 784) % 256);
  std::vector<int64_t> y(200);
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int64_t>(i % 10);
  data::DataLoaderOptions o;
  o.batch_size = 64;
  o.shuffle = true;
  o.augment = true;
  o.seed = 5;
  o.device = dev;
  data::DataLoader loader(data::TensorDataset(from_vector<uint8_t>(px, {200, 28, 28}), from_vector<int64_t>(y, {200})), o);
  manual_seed(5);
  auto model = nn::sequential({std::make_shared<nn::Linear>(784, 32), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(32, 10)});
  model->to(dev);
  optim::Adam opt(model->parameters(), {.lr = 1e-3});
  optim::OneCycleLR sched(opt, 1e-2, 4 * loader.num_batches());
  Tensor loss_sum = zeros({}, TensorOptions(DType::F32, dev));
  Tensor correct = zeros({}, TensorOptions(DType::I64, dev));
  AsyncRead reader;
  auto step = [&](const data::Batch& b) {
    Tensor logits = (*model)(b.x);
    Tensor loss = cross_entropy(logits, b.y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    sched.step();
    autograd::NoGradGuard no_grad;
    loss_sum = add(loss_sum, mul(loss.detach(), static_cast<double>(b.y.size(0))));
    correct = add(correct, sum(eq(argmax(logits.detach(), 1), b.y)));
    if (!reader.pending()) reader.start(loss_sum);
    if (reader.ready()) (void)reader.get();
  };
  // Epoch 0, first batch: the one-time uploads.
  std::optional<data::Batch> first = loader.next();
  ASSERT_TRUE(first.has_value());
  step(*first);
  cuda::synchronize();
  const cuda::TransferStats before = cuda::transfer_stats();
  int64_t steps = 0;
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
  try {
    while (std::optional<data::Batch> b = loader.next()) step(*b), ++steps;  // the rest of epoch 0
    for (int epoch = 1; epoch < 4; ++epoch)
      while (std::optional<data::Batch> b = loader.next()) step(*b), ++steps;
  } catch (...) {
    cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
    throw;
  }
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
  const cuda::TransferStats after = cuda::transfer_stats();
  EXPECT_EQ(steps, 4 * loader.num_batches() - 1);
  EXPECT_EQ(after.host_to_device_copies, before.host_to_device_copies);
  EXPECT_EQ(after.device_to_host_copies, before.device_to_host_copies);
  EXPECT_EQ(after.synchronizations, before.synchronizations);
  // And the loop trained: the sums are finite and the reads after the loop see them.
  EXPECT_TRUE(std::isfinite(loss_sum.item<double>()));
  EXPECT_GT(correct.item<int64_t>(), 0);
}
