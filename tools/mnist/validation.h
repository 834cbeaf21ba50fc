// ember-mnist's validation: --val-split (a stratified hold-out of the training set), the best epoch
// by validation accuracy, --early-stopping, and --folds (stratified k-fold cross-validation).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config.h"
#include "ember/data.h"
#include "report.h"

namespace mnist {

// The validation images this run holds out of ds.train (--val-split F, or fold cfg.fold_index of
// --folds K), seeded by --seed; ds.train keeps the rest. nullopt: no validation asked for.
std::optional<ember::data::MnistSplit> hold_out_validation(const Config& cfg, ember::data::Mnist& ds);

// The epoch (1-based) of the highest validation accuracy in `history` (the first such epoch on a
// tie); 0 when no epoch measured it.
int64_t best_val_epoch(const std::vector<EpochStats>& history);
// --early-stopping P: the last P epochs all came after the best one (P > 0). Recomputed from the
// history alone, so a resumed run stops where the uninterrupted one would have.
bool should_stop_early(const std::vector<EpochStats>& history, int64_t patience);

// Where the best checkpoint goes beside --save PATH: "run.safetensors" -> "run.best.safetensors".
std::string best_checkpoint_path(const std::string& save_path);

// One fold's outcome: its best epoch by validation accuracy and that epoch's figures.
struct FoldResult {
  int64_t best_epoch = 0, epochs = 0;
  double val_loss = 0, val_acc = 0;
};
// --folds K: trains fold 0..K-1 (cfg.fold_index set) through `train_fold`, then prints each fold's
// best validation accuracy and their mean and standard deviation (sample std, K - 1 in the
// denominator); with --metrics-out, one JSON line per fold and a summary line. Returns 0, or 130
// when a fold was interrupted (train_fold returned nullopt).
int run_cross_validation(const Config& cfg, const std::function<std::optional<FoldResult>(const Config&)>& train_fold);

// The flags of this file and --l1 / --tensorboard, against each other and the rest.
void check_extra_flags(const Config& cfg);
// A fold's FoldResult from its history (which must hold validation figures).
FoldResult fold_result(const std::vector<EpochStats>& history);

// The mean and sample standard deviation of `v` (std 0 for fewer than 2 values).
std::pair<double, double> mean_std(const std::vector<double>& v);

}  // namespace mnist
