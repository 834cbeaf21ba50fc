// ember::data: seeded, stratified hold-out splits and k-fold partitions of a labelled dataset, and
// the subset of a dataset at given indices (validation sets, cross-validation).
#pragma once
#include <cstdint>
#include <vector>

#include "ember/data.h"
#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::data {

// Both index sets ascending, I64 on the CPU; disjoint, and together every index of the labels.
struct SplitIndices {
  Tensor train;
  Tensor val;
};

// Stratified hold-out: of each class's n_c samples, round(val_fraction * n_c) go to `val`, chosen by
// a seeded shuffle of that class (the same seed gives the same split on every machine), the rest to
// `train`. labels: I64 [N] with values >= 0; val_fraction in (0, 1). Throws ember::Error when either
// side would be empty.
EMBER_API SplitIndices stratified_split(const Tensor& labels, double val_fraction, uint64_t seed);

// Stratified k-fold partition (as scikit-learn's StratifiedKFold with shuffling): each class's
// samples are shuffled (seeded) and dealt in turn to folds 0, 1, ..., k-1, the dealing carrying on
// from one class to the next, so every fold holds floor or ceil of n_c / k samples of class c and
// the fold sizes differ by at most one. Returns k ascending I64 index sets, disjoint, covering [0, N).
// k in [2, N].
EMBER_API std::vector<Tensor> stratified_folds(const Tensor& labels, int64_t k, uint64_t seed);

// The split of fold `fold` as validation against the other k - 1 folds as training.
EMBER_API SplitIndices fold_split(const std::vector<Tensor>& folds, int64_t fold);

// The samples at `indices` (I64 [M], each in [0, size)), in that order: a copy, on the host.
EMBER_API TensorDataset subset(const TensorDataset& dataset, const Tensor& indices);

}  // namespace ember::data
