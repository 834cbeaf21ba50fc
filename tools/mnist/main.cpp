// ember-mnist: trains an MLP on MNIST or Fashion-MNIST with ember, on the GPU when there is one.
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <CLI/CLI.hpp>

#include "ember/error.h"
#include "train.h"

namespace {
// The value as the user typed it, cut short: a message never prints a 300-digit number.
std::string as_given(const std::string& v) { return v.size() <= 40 ? v : v.substr(0, 37) + "..."; }

// An integer flag in [lo, hi], written in plain decimal digits. A fraction, an exponent or a value
// beyond the range is refused, never clamped or wrapped (CLI11 clamps, and -1 wraps to 2^64 - 1).
template <class T>
CLI::Validator integer_in(T lo, T hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) {
        T x{};
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
        if (ec != std::errc() || end != v.data() + v.size() || x < lo || x > hi)
          return "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " +
                 as_given(v);
        return std::string();
      },
      "INT in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

// A finite number, > 0 or (zero_ok) >= 0; inf, nan and out-of-range text are refused.
CLI::Validator finite_number(bool zero_ok) {
  return CLI::Validator(
      [zero_ok](std::string& v) {
        char* end = nullptr;
        errno = 0;
        const double x = std::strtod(v.c_str(), &end);
        const bool ok = !v.empty() && end == v.c_str() + v.size() && errno != ERANGE && std::isfinite(x) &&
                        (zero_ok ? x >= 0 : x > 0);
        return ok ? std::string() : std::string("must be a finite number ") + (zero_ok ? ">= 0" : "> 0") + ", got " +
                                        as_given(v);
      },
      zero_ok ? "NUMBER >= 0" : "NUMBER > 0");
}

// Ctrl-C (SIGINT) or SIGTERM (what mpirun sends every rank on Ctrl-C, and what batch schedulers
// send at a time limit): finish the current step, save and exit 130. A second one ends the process.
void on_stop_signal(int sig) {
  mnist::request_stop();
  std::signal(sig, SIG_DFL);
}
}  // namespace

int main(int argc, char** argv) {
  mnist::Config cfg;
  CLI::App app{"ember-mnist: train a multilayer perceptron on MNIST digits or Fashion-MNIST with ember.\n"
               "Data: the MNIST digits shipped in data/mnist (default), Fashion-MNIST linked into\n"
               "data/fashion-mnist by tools/get-data.sh, or any folder of the\n"
               "standard IDX files (--data). Ctrl-C (or SIGTERM) finishes the current step and, with --save,\n"
               "writes a checkpoint to --resume from (under mpirun: on every rank, after the same step)."};
  app.option_defaults()->always_capture_default();
  auto data_opt = app.add_option("--data", cfg.data_dir, "folder with train-images-idx3-ubyte[.gz] and the other 3 IDX files");
  app.add_option("--dataset", cfg.dataset, "which dataset in data/ to use when --data is not given")
      ->check(CLI::IsMember({"mnist", "fashion-mnist"}))
      ->excludes(data_opt);
  app.add_option("--model", cfg.model, "model architecture")->check(CLI::IsMember({"mlp", "cnn", "resnet"}));
  // 2^31 - 1: the CPU BLAS takes 32-bit extents.
  app.add_option("--hidden", cfg.hidden, "hidden units of the MLP")->check(integer_in<int64_t>(1, INT32_MAX));
  app.add_option("--resnet-widths", cfg.resnet_widths,
                 "--model resnet: planes of each stage, comma-separated (the stem has the first stage's width)")
      ->delimiter(',')
      ->check(integer_in<int64_t>(1, 65536));
  app.add_option("--resnet-blocks", cfg.resnet_blocks,
                 "--model resnet: BasicBlocks in each stage, comma-separated, one per --resnet-widths entry")
      ->delimiter(',')
      ->check(integer_in<int64_t>(1, 64));
  app.add_option("--resnet-fc-dropout", cfg.resnet_fc_dropout,
                 "--model resnet: dropout probability on the pooled features, before fc (0: none)")
      ->check(CLI::Range(0.0, 0.99));
  // A million epochs is far beyond any useful run and well inside the DataLoader's epoch counter.
  app.add_option("--epochs", cfg.epochs, "passes over the training set")->check(integer_in<int64_t>(1, 1'000'000));
  app.add_option("--batch-size", cfg.batch_size, "images per training step")
      ->check(integer_in<int64_t>(1, INT64_MAX));
  app.add_option("--lr", cfg.lr, "learning rate (the peak rate with --scheduler onecycle)")
      ->check(finite_number(false));
  app.add_option("--optimizer", cfg.optimizer, "sgd, momentum (SGD with momentum 0.9), adam or adamw")
      ->check(CLI::IsMember({"sgd", "momentum", "adam", "adamw"}));
  app.add_option("--weight-decay", cfg.weight_decay, "L2 penalty (decoupled for adamw)")->check(finite_number(true));
  app.add_option("--scheduler", cfg.scheduler,
                 "learning-rate schedule: none, step (x0.1 every epochs/3), cosine (to 0 over the run), onecycle")
      ->check(CLI::IsMember({"none", "step", "cosine", "onecycle"}));
  app.add_option("--device", cfg.device, "auto (CUDA when available, else CPU), cpu, cuda or cuda:N");
  app.add_option("--seed", cfg.seed, "seeds initialisation, shuffling and augmentation")
      ->check(integer_in<uint64_t>(0, UINT64_MAX));
  app.add_option("--threads", cfg.threads,
                 "CPU threads for matrix products (0: the BLAS default; more than the cores present: capped, with a "
                 "warning)")
      ->check(integer_in<int>(0, 4096));
  app.add_option("--save", cfg.save_path, "training checkpoint (safetensors) written atomically after each epoch");
  auto resume_opt = app.add_option("--resume", cfg.resume_path, "continue training from a checkpoint written by --save");
  app.add_option("--eval", cfg.eval_path, "evaluate a checkpoint on the test set; no training")->excludes(resume_opt);
  app.add_option("--metrics-out", cfg.metrics_out, "JSON lines per epoch and a summary; an SVG plot is written beside it");
  app.add_option("--target-accuracy", cfg.target_accuracy,
                 "exit with status 3 when the final test accuracy (percent) is below this")
      ->check(CLI::Range(0.0, 100.0));
  app.add_flag("--augment", cfg.augment, "random shifts (up to 2 px) and rotations (up to 10 degrees) of training images");
  app.add_flag("--deterministic", cfg.deterministic, "deterministic cuDNN algorithms and fp32 arithmetic (refuses --precision tf32)");
  app.add_flag("--skip-nonfinite", cfg.skip_nonfinite,
               "skip (and count) steps whose loss or gradient norm is NaN/Inf instead of stopping the run there "
               "(reads a flag back every step: a host wait per step on a GPU)");
  app.add_flag("--detect-anomaly", cfg.detect_anomaly,
               "stop at the first op whose output is NaN/Inf and name it (slow: every op is checked)");
  app.add_flag("--distributed", cfg.distributed,
               "data-parallel training under mpirun -np N (also on when mpirun starts more than one rank): "
               "each rank takes --batch-size images per step, global batch N x --batch-size");
  // Model compression (issue 17).
  app.add_option("--prune", cfg.prune,
                 "after training, prune this fraction of the Linear/Conv2d weights by magnitude (or of their output "
                 "channels with --prune-structured), then fine-tune")
      ->check(CLI::Range(0.0, 1.0));
  app.add_flag("--prune-structured", cfg.prune_structured,
               "--prune removes whole output channels (L1 norm) into a smaller dense model (mlp and cnn)");
  app.add_flag("--prune-global", cfg.prune_global, "--prune ranks the weights of all layers together");
  app.add_option("--finetune-epochs", cfg.finetune_epochs, "fine-tuning epochs after --prune (masks kept applied)")
      ->check(integer_in<int64_t>(0, 1'000'000));
  app.add_flag("--int8", cfg.int8,
               "with --eval: quantise the model to int8 (CPU: oneDNN; CUDA: cuBLASLt int8 GEMM) and report "
               "accuracy, size and images/s against fp32 on the same device");
  app.add_option("--int8-calibration", cfg.int8_calibration, "activation scales from minmax or percentile (99.99%)")
      ->check(CLI::IsMember({"minmax", "percentile"}));
  app.add_option("--int8-calibration-images", cfg.int8_calibration_images, "training images used for calibration")
      ->check(integer_in<int64_t>(1, INT64_MAX));
  app.add_option("--int8-save", cfg.int8_save, "with --int8: write the int8 model (safetensors with scales) here");
  // ---- CUDA graphs and --precision (issue 14) ----
  app.add_flag("--no-cuda-graph", cfg.no_cuda_graph,
               "run each GPU step eagerly instead of replaying it as one CUDA graph (the default on a GPU)");
  // ---- end CUDA graphs and --precision ----
  // Transfer learning (tools/mnist/transfer.cpp)
  app.add_option("--pretrained", cfg.pretrained,
                 "start --model resnet from these weights (.pth state_dict or ember checkpoint), head (fc) re-initialised");
  app.add_flag("--freeze-backbone", cfg.freeze_backbone, "with --pretrained: train only the head; batch norms stay in eval mode");
  app.add_option("--backbone-lr-scale", cfg.backbone_lr_scale, "with --pretrained: the backbone's lr is --lr times this")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--train-per-class", cfg.train_per_class, "train on N labelled images per class (seeded choice)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--quiet,-q", cfg.quiet, "no progress bar or per-epoch lines; only the final report");
  // ember::profiler (tools/mnist/profiling.cpp, docs/profiling.md)
  app.add_flag("--profile", cfg.profile, "time every op and backend primitive; print the table after the run");
  app.add_option("--profile-steps", cfg.profile_steps,
                 "profile only steps FIRST:LAST (counted from 1 across the run; implies --profile); on a GPU also "
                 "brackets them with cudaProfilerStart/Stop for nsys --capture-range=cudaProfilerApi");
  app.add_option("--trace", cfg.trace_path, "write a Chrome trace (Perfetto) of the profiled steps (implies --profile)");
  // Training extras and TensorBoard (issue 17).
  app.add_option("--l1", cfg.l1, "L1 penalty: adds LAMBDA * sum |w| over all parameters to the loss (gradient "
                 "LAMBDA * sign(w))")->check(finite_number(true));
  app.add_option("--val-split", cfg.val_split,
                 "hold out this fraction of the training set (stratified, seeded by --seed) for validation; "
                 "the test set is then evaluated only at the end, with the best epoch's weights")
      ->check(CLI::Range(0.0, 0.9));
  app.add_option("--early-stopping", cfg.early_stopping,
                 "stop when validation accuracy has not improved for PATIENCE epochs (needs --val-split or --folds)")
      ->check(integer_in<int64_t>(0, 1'000'000));
  app.add_option("--folds", cfg.folds,
                 "k-fold cross-validation: trains K models on K stratified folds of the training set and reports "
                 "each fold's and the mean +- std validation accuracy (the test set is not used)")
      ->check(integer_in<int64_t>(2, 1000));
  app.add_option("--tensorboard", cfg.tensorboard_dir,
                 "write TensorBoard event files (scalars, weight/gradient histograms, confusion matrix) into DIR");
  app.add_option("--aug-scale", cfg.aug_scale,
                 "augment: scale each training image by a factor uniform in [1 - S, 1 + S] (S at most 0.5)")
      ->check(CLI::Range(0.0, 0.5));
  app.add_option("--aug-crop-padding", cfg.aug_crop_padding,
                 "augment: pad each side with P zero pixels and crop the image size back at a random offset")
      ->check(integer_in<int64_t>(0, 1024));
  app.add_flag("--aug-hflip", cfg.aug_hflip,
               "augment: mirror left-right with probability 1/2 (for clothing, not digits: a mirrored digit is "
               "another symbol)");
  // --precision (mixed precision, issue 13): the values are checked in precision.cpp against the device.
  app.add_option("--precision", cfg.precision,
                 "fp32, tf32 (GPU only: f32 on TF32 tensor cores), bf16 (autocast: linear layers in bf16 with f32 "
                 "accumulation) or fp16 (autocast in f16 with dynamic loss scaling)")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16", "fp16"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  try {
    const int rc = mnist::run(cfg);
    // The report is the run's result: if it could not be written (stdout on a full disk, a closed
    // pipe), the run did not succeed.
    errno = 0;
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
      std::fprintf(stderr, "\nember-mnist: error: writing the report to stdout failed: %s\n",
                   errno ? std::strerror(errno) : "stream error");
      return 2;
    }
    return rc;
  } catch (const ember::Error& e) {
    std::fprintf(stderr, "\nember-mnist: error: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "\nember-mnist: error: out of host memory (std::bad_alloc); try a smaller --batch-size or "
                         "--hidden\n");
    return 2;
  } catch (const std::exception& e) {
    // A library below ember threw past it: a bug to report, but still a clear exit, not an abort.
    std::fprintf(stderr, "\nember-mnist: internal error (please report it): %s\n", e.what());
    return 2;
  }
}
