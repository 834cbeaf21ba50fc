// ember-mnist's model compression: pruning with fine-tuning, and int8 evaluation against fp32.
#include "compress.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "ember/cuda.h"
#include "ember/prune.h"
#include "ember/quant.h"

namespace mnist::compress {
namespace {

using namespace ember;

int64_t nonzero_parameters(nn::Module& model) {
  autograd::NoGradGuard ng;
  int64_t n = 0;
  for (const Tensor& p : model.parameters()) n += static_cast<int64_t>(sum(ne(p, 0.0).to(DType::I64)).item<int64_t>());
  return n;
}

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// Per-layer sparsity, then the totals: parameters (all and non-zero), the dense f32 size, and what
// the non-zero weights would take stored sparsely (CSR: f32 value + i32 column per non-zero, i32 row
// offsets), the size a sparse format would reach.
void print_model(const char* title, nn::Module& model) {
  std::printf("%s\n", title);
  int64_t rows = 0;
  for (const prune::LayerSparsity& l : prune::weight_sparsity(model)) {
    std::printf("  %-14s %9lld weights, %9lld zero (%5.1f%% sparse)\n", l.name.c_str(), static_cast<long long>(l.numel),
                static_cast<long long>(l.zeros),
                l.numel ? 100.0 * static_cast<double>(l.zeros) / static_cast<double>(l.numel) : 0.0);
  }
  for (auto& [name, w] : prune::prunable_weights(model)) rows += w.size(0) + 1;
  const int64_t params = model.num_parameters(), nz = nonzero_parameters(model);
  std::printf("  parameters %lld (%lld non-zero), dense f32 %.3f MiB, as CSR %.3f MiB\n",
              static_cast<long long>(params), static_cast<long long>(nz), mib(4.0 * static_cast<double>(params)),
              mib(8.0 * static_cast<double>(nz) + 4.0 * static_cast<double>(rows)));
}

}  // namespace

std::shared_ptr<nn::Module> prune_and_finetune(const Config& cfg, std::shared_ptr<nn::Module> model,
                                               data::DataLoader& train, const TrainHooks& hooks) {
  EMBER_CHECK(cfg.prune > 0 && cfg.prune < 1, "--prune must be a fraction in (0, 1), got ", cfg.prune);
  std::printf("\n--prune %.2f (%s):\n", cfg.prune,
              cfg.prune_structured ? "structured: output channels by L1 norm"
              : cfg.prune_global   ? "unstructured, global magnitude"
                                   : "unstructured, per-layer magnitude");
  print_model("before pruning:", *model);
  const double acc_before = hooks.test_accuracy(*model);
  std::unique_ptr<prune::Masks> masks;
  if (cfg.prune_structured) {
    model = prune::prune_channels(*model, {.amount = cfg.prune, .norm = prune::Norm::L1});
  } else {
    masks = prune::magnitude_prune(
        *model, {.amount = cfg.prune, .scope = cfg.prune_global ? prune::Scope::Global : prune::Scope::PerLayer});
  }
  print_model("after pruning:", *model);
  const double acc_pruned = hooks.test_accuracy(*model);
  double acc_tuned = acc_pruned;
  if (cfg.finetune_epochs > 0) {
    auto opt = hooks.make_optimizer(model->parameters());
    model->train();
    for (int64_t e = 0; e < cfg.finetune_epochs; ++e) {
      train.set_epoch(cfg.epochs + e);  // new orders, after the training epochs'
      const auto t0 = std::chrono::steady_clock::now();
      double loss_sum = 0;
      int64_t steps = 0;
      for (data::Batch& b : train) {
        Tensor loss = cross_entropy((*model)(b.x), b.y);
        opt->zero_grad();
        loss.backward();
        opt->step();
        if (masks) masks->apply();  // pruned weights stay exactly zero (see prune::Masks)
        loss_sum += loss.item<double>();
        ++steps;
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      acc_tuned = hooks.test_accuracy(*model);
      std::printf("fine-tune epoch %lld/%lld: train loss %.4f, test accuracy %.2f%% (%.1f s)\n",
                  static_cast<long long>(e + 1), static_cast<long long>(cfg.finetune_epochs),
                  steps ? loss_sum / static_cast<double>(steps) : 0.0, 100 * acc_tuned, s);
    }
    if (masks) print_model("after fine-tuning:", *model);
  }
  std::printf("test accuracy: %.2f%% before pruning, %.2f%% after pruning, %.2f%% after %lld fine-tuning epoch(s)\n",
              100 * acc_before, 100 * acc_pruned, 100 * acc_tuned, static_cast<long long>(cfg.finetune_epochs));
  return model;
}

namespace {

struct Pass {
  double accuracy = 0, seconds = 0;
  int64_t images = 0;
};

// One pass over the test set (inputs on the model's device), timing only the forward calls; on a
// CUDA device each timed call ends when the device has finished it (the launches are asynchronous).
Pass run_pass(const std::function<Tensor(const Tensor&)>& forward, data::DataLoader& test, Device device) {
  autograd::InferenceModeGuard inference;
  Pass p;
  int64_t correct = 0;
  for (data::Batch& b : test) {
    if (device.is_cuda()) ember::cuda::synchronize(device.index);  // the batch's own copy is not timed
    const auto t0 = std::chrono::steady_clock::now();
    Tensor logits = forward(b.x);
    if (device.is_cuda()) ember::cuda::synchronize(device.index);
    p.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    correct += sum(eq(argmax(logits, 1), b.y)).item<int64_t>();
    p.images += b.y.size(0);
  }
  p.accuracy = p.images ? static_cast<double>(correct) / static_cast<double>(p.images) : 0.0;
  return p;
}

}  // namespace

int evaluate_int8(const Config& cfg, nn::Module& model, const data::Mnist& ds, data::DataLoader& test, bool flatten) {
  // The CPU runs oneDNN's int8 primitives, a CUDA device cuBLASLt's int8 GEMM (ember::quant).
  const Device device = model.parameters().empty() ? Device::cpu() : model.parameters()[0].device();
  EMBER_CHECK(cfg.int8_calibration_images >= 1, "--int8-calibration-images must be at least 1, got ",
              cfg.int8_calibration_images);
  model.eval();
  // Calibration: the first images of the training set, normalised as in training.
  data::DataLoaderOptions o;
  o.batch_size = 256;
  o.flatten = flatten;
  std::vector<Tensor> calib;
  int64_t taken = 0;
  data::DataLoader loader(data::TensorDataset(ds.train.images, ds.train.labels), o);
  for (data::Batch& b : loader) {
    if (taken >= cfg.int8_calibration_images) break;
    const int64_t n = std::min<int64_t>(b.x.size(0), cfg.int8_calibration_images - taken);
    calib.push_back(b.x.slice(0, 0, n).contiguous().to(device));
    taken += n;
  }
  quant::QuantizeOptions qo;
  qo.calibration = cfg.int8_calibration == "percentile" ? quant::Calibration::Percentile : quant::Calibration::MinMax;
  const auto t0 = std::chrono::steady_clock::now();
  auto q = quant::quantize(model, calib, qo);
  const double quant_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!cfg.int8_save.empty()) q->save(cfg.int8_save);
  if (device.is_cuda()) q->to(device);
  // fp32 and int8 passes interleaved, at least 3 each and until each has run 1 s in all (at most 50);
  // the fastest pass of each is reported (the first also builds oneDNN's primitives or cuBLASLt's
  // plans and warms caches).
  auto fp32 = [&](const Tensor& x) { return model(x); };
  auto int8 = [&](const Tensor& x) { return (*q)(x); };
  Pass best_f, best_q;
  double total_f = 0, total_q = 0;
  int reps = 0;
  for (; reps < 50 && (reps < 3 || total_f < 1.0 || total_q < 1.0); ++reps) {
    Pass f = run_pass(fp32, test, device), i = run_pass(int8, test, device);
    total_f += f.seconds;
    total_q += i.seconds;
    if (reps == 0 || f.seconds < best_f.seconds) best_f = f;
    if (reps == 0 || i.seconds < best_q.seconds) best_q = i;
  }
  const double fp32_bytes = 4.0 * static_cast<double>(model.num_parameters());
  const double ips_f = static_cast<double>(best_f.images) / best_f.seconds;
  const double ips_q = static_cast<double>(best_q.images) / best_q.seconds;
  std::printf("int8 (%s calibration on %lld training images, %.2f s): %zu quantised layers, on %s\n",
              cfg.int8_calibration.c_str(), static_cast<long long>(taken), quant_s, q->layers().size(),
              device.str().c_str());
  std::printf("%-6s %10s %12s %14s\n", "", "accuracy", "size", "images/s");
  std::printf("%-6s %9.2f%% %9.3f MiB %14.0f\n", "fp32", 100 * best_f.accuracy, mib(fp32_bytes), ips_f);
  std::printf("%-6s %9.2f%% %9.3f MiB %14.0f\n", "int8", 100 * best_q.accuracy,
              mib(static_cast<double>(q->size_bytes())), ips_q);
  std::printf(
      "int8 vs fp32: accuracy %+.2f points, size x%.2f, speed x%.2f (%lld test images, batch %lld, best of %d "
      "passes)\n",
      100 * (best_q.accuracy - best_f.accuracy), static_cast<double>(q->size_bytes()) / fp32_bytes, ips_q / ips_f,
      static_cast<long long>(best_q.images), static_cast<long long>(test.options().batch_size), reps);
  if (!cfg.int8_save.empty())
    std::printf("int8 model saved to %s (%.3f MiB)\n", cfg.int8_save.c_str(),
                mib(static_cast<double>(std::filesystem::file_size(cfg.int8_save))));
  return cfg.target_accuracy >= 0 && 100 * best_q.accuracy < cfg.target_accuracy ? 3 : 0;
}

}  // namespace mnist::compress
