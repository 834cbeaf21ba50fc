// --val-split, best-by-validation, --early-stopping and --folds.
#include "validation.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "ember/data_split.h"
#include "ember/error.h"
#include "ember/io.h"

namespace mnist {

using ember::data::MnistSplit;

std::optional<MnistSplit> hold_out_validation(const Config& cfg, ember::data::Mnist& ds) {
  if (cfg.val_split <= 0 && cfg.fold_index < 0) return std::nullopt;
  const ember::data::SplitIndices split =
      cfg.fold_index >= 0
          ? ember::data::fold_split(ember::data::stratified_folds(ds.train.labels, cfg.folds, cfg.seed), cfg.fold_index)
          : ember::data::stratified_split(ds.train.labels, cfg.val_split, cfg.seed);
  const ember::data::TensorDataset all(ds.train);
  const ember::data::TensorDataset train = ember::data::subset(all, split.train);
  const ember::data::TensorDataset val = ember::data::subset(all, split.val);
  ds.train = {train.images(), train.labels()};
  return MnistSplit{val.images(), val.labels()};
}

int64_t best_val_epoch(const std::vector<EpochStats>& history) {
  int64_t best = 0;
  double best_acc = -1;
  for (const EpochStats& s : history)
    if (std::isfinite(s.val_acc) && s.val_acc > best_acc) {
      best_acc = s.val_acc;
      best = s.epoch;
    }
  return best;
}

bool should_stop_early(const std::vector<EpochStats>& history, int64_t patience) {
  if (patience <= 0 || history.empty()) return false;
  const int64_t best = best_val_epoch(history);
  return best > 0 && history.back().epoch - best >= patience;
}

std::string best_checkpoint_path(const std::string& save_path) {
  const size_t slash = save_path.find_last_of('/');
  const size_t dot = save_path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) || dot == slash + 1)
    return save_path + ".best";
  return save_path.substr(0, dot) + ".best" + save_path.substr(dot);
}

void check_extra_flags(const Config& cfg) {
  EMBER_CHECK(std::isfinite(cfg.l1) && cfg.l1 >= 0, "--l1 must be a finite number >= 0, got ", cfg.l1);
  EMBER_CHECK(cfg.val_split >= 0 && cfg.val_split <= 0.9, "--val-split must lie in [0, 0.9], got ", cfg.val_split);
  EMBER_CHECK(cfg.folds == 0 || cfg.folds >= 2, "--folds must be at least 2, got ", cfg.folds);
  EMBER_CHECK(cfg.early_stopping >= 0, "--early-stopping must be >= 0, got ", cfg.early_stopping);
  EMBER_CHECK(cfg.early_stopping == 0 || cfg.val_split > 0 || cfg.folds > 0,
              "--early-stopping watches the validation accuracy: pass --val-split F (or --folds K) with it");
  EMBER_CHECK(cfg.eval_path.empty() || (cfg.val_split == 0 && cfg.folds == 0),
              "--eval evaluates a checkpoint on the test set: --val-split and --folds do not apply to it");
  if (cfg.folds > 0) {
    EMBER_CHECK(cfg.val_split == 0, "--folds K holds out each fold in turn: drop --val-split");
    EMBER_CHECK(cfg.save_path.empty() && cfg.resume_path.empty(),
                "--folds trains K models to estimate accuracy and keeps none: --save and --resume do not apply "
                "(train the final model without --folds)");
    EMBER_CHECK(cfg.target_accuracy < 0, "--folds does not use the test set, so --target-accuracy cannot be checked");
    EMBER_CHECK(!cfg.distributed, "--folds runs on one process: drop --distributed");
  }
}

FoldResult fold_result(const std::vector<EpochStats>& history) {
  const int64_t best = best_val_epoch(history);
  EMBER_CHECK(best > 0, "--folds: the fold's validation accuracy was never measured");
  for (const EpochStats& s : history)
    if (s.epoch == best) return {best, static_cast<int64_t>(history.size()), s.val_loss, s.val_acc};
  throw ember::Error("--folds: the best epoch is missing from the history");
}

std::pair<double, double> mean_std(const std::vector<double>& v) {
  if (v.empty()) return {NAN, NAN};
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  if (v.size() < 2) return {mean, 0.0};
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / static_cast<double>(v.size() - 1))};
}

int run_cross_validation(const Config& cfg, const std::function<std::optional<FoldResult>(const Config&)>& train_fold) {
  std::vector<FoldResult> results;
  std::vector<double> accs;
  const std::string tb_root = cfg.tensorboard_dir;
  for (int64_t k = 0; k < cfg.folds; ++k) {
    Config c = cfg;
    c.fold_index = k;
    c.metrics_out.clear();
    if (!tb_root.empty()) c.tensorboard_dir = tb_root + "/fold" + std::to_string(k + 1);  // one run per fold
    if (!cfg.quiet) std::printf("\n== fold %lld/%lld ==\n", static_cast<long long>(k + 1), static_cast<long long>(cfg.folds));
    const std::optional<FoldResult> r = train_fold(c);
    if (!r) return 130;  // Ctrl-C: the fold said where it stopped
    results.push_back(*r);
    accs.push_back(results.back().val_acc);
  }
  const auto [mean, sd] = mean_std(accs);
  std::printf("\n%lld-fold cross-validation (stratified, seed %llu):\n", static_cast<long long>(cfg.folds),
              static_cast<unsigned long long>(cfg.seed));
  for (size_t k = 0; k < results.size(); ++k)
    std::printf("  fold %zu: best epoch %lld of %lld, validation loss %.4f, accuracy %.2f%%\n", k + 1,
                static_cast<long long>(results[k].best_epoch), static_cast<long long>(results[k].epochs),
                results[k].val_loss, 100 * results[k].val_acc);
  std::printf("validation accuracy: mean %.2f%% +- %.2f%% (std over %lld folds)\n", 100 * mean, 100 * sd,
              static_cast<long long>(cfg.folds));
  if (!cfg.metrics_out.empty()) {
    std::string text;
    for (size_t k = 0; k < results.size(); ++k)
      text += nlohmann::json({{"type", "fold"}, {"fold", k + 1}, {"best_epoch", results[k].best_epoch},
                              {"epochs", results[k].epochs}, {"val_loss", results[k].val_loss},
                              {"val_accuracy", results[k].val_acc}}).dump() + "\n";
    text += nlohmann::json({{"type", "cross_validation"}, {"folds", cfg.folds}, {"val_accuracy_mean", mean},
                            {"val_accuracy_std", sd}}).dump() + "\n";
    ember::io::write_file_atomic(cfg.metrics_out, [&](std::FILE* f) { ember::io::write_bytes(f, text.data(), text.size()); });
  }
  return 0;
}

}  // namespace mnist
