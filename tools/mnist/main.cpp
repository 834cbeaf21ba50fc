// ember-mnist: trains an MLP on MNIST or Fashion-MNIST with ember, on the GPU when there is one.
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "ember/error.h"
#include "train.h"

namespace {
// CLI11's PositiveNumber prints the whole double range in its message; this says it plainly.
const CLI::Validator kPositive(
    [](std::string& v) {
      try {
        return std::stod(v) > 0 ? std::string() : "must be positive, got " + v;
      } catch (const std::exception&) {
        return "expected a number, got " + v;
      }
    },
    "POSITIVE");

void on_sigint(int) {
  mnist::request_stop();
  // A second Ctrl-C ends the process at once.
  std::signal(SIGINT, SIG_DFL);
}
}  // namespace

int main(int argc, char** argv) {
  mnist::Config cfg;
  CLI::App app{"ember-mnist: train a multilayer perceptron on MNIST digits or Fashion-MNIST with ember.\n"
               "Data comes from tools/get-data.sh (data/mnist, data/fashion-mnist) or any folder of the\n"
               "standard IDX files (--data). Ctrl-C finishes the current step and, with --save, writes a\n"
               "checkpoint to --resume from."};
  app.option_defaults()->always_capture_default();
  auto data_opt = app.add_option("--data", cfg.data_dir, "folder with train-images-idx3-ubyte[.gz] and the other 3 IDX files");
  app.add_option("--dataset", cfg.dataset, "which fetched dataset to use when --data is not given")
      ->check(CLI::IsMember({"mnist", "fashion-mnist"}))
      ->excludes(data_opt);
  app.add_option("--model", cfg.model, "model architecture")->check(CLI::IsMember({"mlp", "cnn"}));
  app.add_option("--hidden", cfg.hidden, "hidden units of the MLP")->check(kPositive);
  app.add_option("--epochs", cfg.epochs, "passes over the training set")->check(kPositive);
  app.add_option("--batch-size", cfg.batch_size, "images per training step")->check(kPositive);
  app.add_option("--lr", cfg.lr, "learning rate (the peak rate with --scheduler onecycle)")->check(kPositive);
  app.add_option("--optimizer", cfg.optimizer, "sgd, momentum (SGD with momentum 0.9), adam or adamw")
      ->check(CLI::IsMember({"sgd", "momentum", "adam", "adamw"}));
  app.add_option("--weight-decay", cfg.weight_decay, "L2 penalty (decoupled for adamw)")->check(CLI::NonNegativeNumber);
  app.add_option("--scheduler", cfg.scheduler,
                 "learning-rate schedule: none, step (x0.1 every epochs/3), cosine (to 0 over the run), onecycle")
      ->check(CLI::IsMember({"none", "step", "cosine", "onecycle"}));
  app.add_option("--device", cfg.device, "auto (CUDA when available, else CPU), cpu, cuda or cuda:N");
  app.add_option("--seed", cfg.seed, "seeds initialisation, shuffling and augmentation");
  app.add_option("--threads", cfg.threads, "CPU threads for matrix products (0: the BLAS default)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--save", cfg.save_path, "training checkpoint (safetensors) written atomically after each epoch");
  auto resume_opt = app.add_option("--resume", cfg.resume_path, "continue training from a checkpoint written by --save");
  app.add_option("--eval", cfg.eval_path, "evaluate a checkpoint on the test set; no training")->excludes(resume_opt);
  app.add_option("--metrics-out", cfg.metrics_out, "JSON lines per epoch and a summary; an SVG plot is written beside it");
  app.add_option("--target-accuracy", cfg.target_accuracy,
                 "exit with status 3 when the final test accuracy (percent) is below this")
      ->check(CLI::Range(0.0, 100.0));
  app.add_flag("--augment", cfg.augment, "random shifts (up to 2 px) and rotations (up to 10 degrees) of training images");
  app.add_flag("--deterministic", cfg.deterministic, "turn off TF32 on the GPU (results as close to the CPU as possible)");
  app.add_flag("--quiet,-q", cfg.quiet, "no progress bar or per-epoch lines; only the final report");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::signal(SIGINT, on_sigint);
  try {
    return mnist::run(cfg);
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
