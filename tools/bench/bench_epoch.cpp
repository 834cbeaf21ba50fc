// ember-bench epoch: one training epoch of the MNIST MLP or CNN on the GPU (or the CPU), eager or with
// the whole step replayed as a CUDA graph (ember-mnist's GraphedStep), fp32 or tf32; beside
// tools/bench/torch_gpu_epoch.py (tools/bench/gpu_epoch.sh runs both and prints the ratios).
#include "bench_epoch.h"

#include <chrono>
#include <cstdio>

#include "ember/ember.h"
#include "tools/mnist/graph_step.h"

using namespace ember;

int bench_epoch(const EpochBench& b) {
  EMBER_CHECK(b.model == "mlp" || b.model == "cnn", "ember-bench epoch: --model ", b.model, ": expected mlp or cnn");
  EMBER_CHECK(b.precision == "fp32" || b.precision == "tf32", "ember-bench epoch: --precision ", b.precision,
              ": expected fp32 or tf32");
  EMBER_CHECK(!b.cuda_graph || b.device.is_cuda(), "ember-bench epoch: --cuda-graph needs --device cuda");
  cuda::set_allow_tf32(b.precision == "tf32");
  data::Mnist ds = data::load_mnist_dir(b.data_dir);
  manual_seed(b.seed);
  const int64_t rows = ds.train.images.size(1), cols = ds.train.images.size(2);
  std::shared_ptr<nn::Module> model =
      b.model == "mlp" ? nn::sequential({std::make_shared<nn::Linear>(rows * cols, b.hidden),
                                         std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(b.hidden, 10)})
                       : models::mnist_cnn(rows, cols, 10);
  model->to(b.device);
  optim::Adam opt(model->parameters(), {.lr = 1e-3});
  data::DataLoaderOptions o;
  o.batch_size = b.batch;
  o.shuffle = true;
  o.drop_last = true;  // as the PyTorch script: full batches only
  o.seed = b.seed;
  o.device = b.device;
  o.flatten = b.model == "mlp";
  data::DataLoader loader(data::TensorDataset(ds.train.images, ds.train.labels), o);
  std::unique_ptr<mnist::GraphedStep> graphed;
  if (b.cuda_graph) graphed = std::make_unique<mnist::GraphedStep>(*model, opt, b.device, /*quiet=*/false);
  auto sync = [&] {
    if (b.device.is_cuda()) cuda::synchronize(b.device.index);
  };
  double best = 1e300;
  Tensor loss;
  for (int e = 0; e < b.epochs; ++e) {
    loader.set_epoch(e);
    sync();
    const auto t0 = std::chrono::steady_clock::now();
    for (data::Batch& batch : loader) {
      if (graphed) {
        loss = graphed->step(batch.x, batch.y).loss;
      } else {
        loss = cross_entropy((*model)(batch.x), batch.y);
        opt.zero_grad();
        loss.backward();
        opt.step();
      }
    }
    sync();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double images = static_cast<double>(loader.num_batches() * b.batch);
  const double peak_mb =
      b.device.is_cuda() ? static_cast<double>(cuda::memory_stats(b.device.index).peak_allocated) / (1 << 20) : 0.0;
  const char* mode = graphed ? (graphed->graphed() ? "graph" : "graph-fallback-eager") : "eager";
  std::printf(
      "{\"framework\": \"ember\", \"device\": \"%s\", \"model\": \"%s\", \"mode\": \"%s\", "
      "\"precision\": \"%s\", \"batch\": %lld, \"seconds\": %.5f, \"images_per_s\": %.1f, \"peak_mb\": %.1f, "
      "\"final_loss\": %.4f}\n",
      b.device.str().c_str(), b.model.c_str(), mode, b.precision.c_str(), static_cast<long long>(b.batch), best,
      images / best, peak_mb, loss.item<double>());
  return 0;
}
