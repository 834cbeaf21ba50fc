// Stratified hold-out splits, stratified k-fold partitions and dataset subsets.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ember/data_split.h"
#include "ember/error.h"

namespace ember::data {
namespace {

// SplitMix64 (Steele, Lea & Flood 2014): a fixed, portable stream of 64-bit numbers per seed, so a
// split does not depend on the standard library's distributions (which differ between vendors).
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by Lemire's multiply-shift (bias below 2^-64 * n, irrelevant here).
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
};

// The labels' indices grouped by class (classes ascending), each class shuffled by Fisher-Yates.
std::vector<std::vector<int64_t>> shuffled_classes(const Tensor& labels, uint64_t seed, const char* who) {
  EMBER_CHECK(labels.defined() && labels.dtype() == DType::I64 && labels.dim() == 1, who,
              ": labels must be I64 [N], got ", labels.defined() ? dtype_name(labels.dtype()) : "undefined", " ",
              labels.defined() ? shape_str(labels.shape()) : "");
  const std::vector<int64_t> y = labels.cpu().contiguous().to_vector<int64_t>();
  int64_t classes = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    EMBER_CHECK(y[i] >= 0 && y[i] < (int64_t{1} << 24), who, ": label ", y[i], " at index ", i,
                " is outside [0, 2^24); labels must be class indices");
    classes = std::max(classes, y[i] + 1);
  }
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
  for (size_t i = 0; i < y.size(); ++i) by_class[static_cast<size_t>(y[i])].push_back(static_cast<int64_t>(i));
  SplitMix64 rng{seed};
  for (auto& c : by_class)
    for (size_t i = c.size(); i > 1; --i) std::swap(c[i - 1], c[rng.below(i)]);
  return by_class;
}

Tensor sorted_tensor(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return from_vector<int64_t>(v);
}

}  // namespace

SplitIndices stratified_split(const Tensor& labels, double val_fraction, uint64_t seed) {
  EMBER_CHECK(std::isfinite(val_fraction) && val_fraction > 0 && val_fraction < 1,
              "stratified_split: val_fraction must lie in (0, 1), got ", val_fraction);
  std::vector<int64_t> train, val;
  for (const auto& c : shuffled_classes(labels, seed, "stratified_split")) {
    const auto n_val = static_cast<size_t>(std::llround(val_fraction * static_cast<double>(c.size())));
    val.insert(val.end(), c.begin(), c.begin() + static_cast<std::ptrdiff_t>(n_val));
    train.insert(train.end(), c.begin() + static_cast<std::ptrdiff_t>(n_val), c.end());
  }
  EMBER_CHECK(!val.empty() && !train.empty(), "stratified_split: ", labels.size(0), " samples with val_fraction ",
              val_fraction, " leave ", train.size(), " for training and ", val.size(),
              " for validation; both need at least one (use more data or another fraction)");
  return {sorted_tensor(std::move(train)), sorted_tensor(std::move(val))};
}

std::vector<Tensor> stratified_folds(const Tensor& labels, int64_t k, uint64_t seed) {
  const auto by_class = shuffled_classes(labels, seed, "stratified_folds");
  const int64_t n = labels.size(0);
  EMBER_CHECK(k >= 2 && k <= n, "stratified_folds: k must lie in [2, N] = [2, ", n, "], got ", k);
  std::vector<std::vector<int64_t>> folds(static_cast<size_t>(k));
  int64_t dealt = 0;
  for (const auto& c : by_class)
    for (int64_t i : c) folds[static_cast<size_t>(dealt++ % k)].push_back(i);
  std::vector<Tensor> out;
  for (auto& f : folds) out.push_back(sorted_tensor(std::move(f)));
  return out;
}

SplitIndices fold_split(const std::vector<Tensor>& folds, int64_t fold) {
  const auto k = static_cast<int64_t>(folds.size());
  EMBER_CHECK(k >= 2, "fold_split: need at least 2 folds, got ", k);
  EMBER_CHECK(fold >= 0 && fold < k, "fold_split: fold ", fold, " is outside [0, ", k, ")");
  std::vector<int64_t> train;
  for (int64_t f = 0; f < k; ++f)
    if (f != fold) {
      const auto v = folds[static_cast<size_t>(f)].cpu().contiguous().to_vector<int64_t>();
      train.insert(train.end(), v.begin(), v.end());
    }
  return {sorted_tensor(std::move(train)), folds[static_cast<size_t>(fold)].cpu().contiguous()};
}

TensorDataset subset(const TensorDataset& dataset, const Tensor& indices) {
  EMBER_CHECK(indices.defined() && indices.dtype() == DType::I64 && indices.dim() == 1,
              "subset: indices must be I64 [M], got ", indices.defined() ? dtype_name(indices.dtype()) : "undefined",
              " ", indices.defined() ? shape_str(indices.shape()) : "");
  const std::vector<int64_t> idx = indices.cpu().contiguous().to_vector<int64_t>();
  const int64_t n = dataset.size();
  for (size_t i = 0; i < idx.size(); ++i)
    EMBER_CHECK(idx[i] >= 0 && idx[i] < n, "subset: index ", idx[i], " at position ", i, " is outside [0, ", n,
                ") for a dataset of ", n, " samples");
  Shape shape = dataset.images().shape();
  const size_t per = static_cast<size_t>(dataset.images().numel() / std::max<int64_t>(n, 1));
  shape[0] = static_cast<int64_t>(idx.size());
  Tensor images = empty(shape, TensorOptions(DType::U8));
  Tensor labels = empty({static_cast<int64_t>(idx.size())}, TensorOptions(DType::I64));
  const auto* src = static_cast<const uint8_t*>(dataset.images().data_ptr());
  const auto* ysrc = static_cast<const int64_t*>(dataset.labels().data_ptr());
  auto* dst = static_cast<uint8_t*>(images.data_ptr());
  auto* ydst = static_cast<int64_t*>(labels.data_ptr());
  for (size_t i = 0; i < idx.size(); ++i) {
    std::memcpy(dst + i * per, src + static_cast<size_t>(idx[i]) * per, per);
    ydst[i] = ysrc[idx[i]];
  }
  return TensorDataset(images, labels);
}

}  // namespace ember::data
