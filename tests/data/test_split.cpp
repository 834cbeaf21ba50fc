// Stratified hold-out splits, stratified k folds and dataset subsets, against counts worked out in
// the test from the labels.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "ember/data_split.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

// Unbalanced labels: class c has 7 + 3c samples, interleaved.
std::vector<int64_t> unbalanced_labels() {
  std::vector<int64_t> y;
  for (int round = 0; round < 40; ++round)
    for (int64_t c = 0; c < 5; ++c)
      if (round < 7 + 3 * c) y.push_back(c);
  return y;
}

std::map<int64_t, int64_t> class_counts(const std::vector<int64_t>& y, const std::vector<int64_t>& idx) {
  std::map<int64_t, int64_t> m;
  for (int64_t i : idx) ++m[y[static_cast<size_t>(i)]];
  return m;
}

}  // namespace

TEST(DataSplit, StratifiedSplitKeepsEachClassShare) {
  const std::vector<int64_t> y = unbalanced_labels();
  const Tensor labels = from_vector<int64_t>(y);
  const data::SplitIndices s = data::stratified_split(labels, 0.2, 7);
  const auto train = s.train.to_vector<int64_t>(), val = s.val.to_vector<int64_t>();
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_TRUE(std::is_sorted(val.begin(), val.end()));
  std::set<int64_t> all(train.begin(), train.end());
  for (int64_t v : val) EXPECT_TRUE(all.insert(v).second) << "index " << v << " on both sides";
  EXPECT_EQ(all.size(), y.size());
  EXPECT_EQ(*all.rbegin(), static_cast<int64_t>(y.size()) - 1);
  const auto vc = class_counts(y, val), tc = class_counts(y, train);
  for (int64_t c = 0; c < 5; ++c) {
    const int64_t n_c = 7 + 3 * c;
    EXPECT_EQ(vc.at(c), std::llround(0.2 * static_cast<double>(n_c))) << "class " << c;
    EXPECT_EQ(tc.at(c), n_c - vc.at(c)) << "class " << c;
  }
  // Seeded: the same seed the same split, another seed another one.
  EXPECT_EQ(data::stratified_split(labels, 0.2, 7).val.to_vector<int64_t>(), val);
  EXPECT_NE(data::stratified_split(labels, 0.2, 8).val.to_vector<int64_t>(), val);
}

TEST(DataSplit, StratifiedFoldsPartitionWithBalancedClasses) {
  const std::vector<int64_t> y = unbalanced_labels();
  const Tensor labels = from_vector<int64_t>(y);
  const int64_t k = 4;
  const auto folds = data::stratified_folds(labels, k, 3);
  ASSERT_EQ(folds.size(), static_cast<size_t>(k));
  std::set<int64_t> all;
  size_t min_size = y.size(), max_size = 0;
  for (const Tensor& f : folds) {
    const auto v = f.to_vector<int64_t>();
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    min_size = std::min(min_size, v.size());
    max_size = std::max(max_size, v.size());
    for (int64_t i : v) EXPECT_TRUE(all.insert(i).second) << "index " << i << " in two folds";
    const auto cc = class_counts(y, v);
    for (int64_t c = 0; c < 5; ++c) {
      const int64_t n_c = 7 + 3 * c, got = cc.count(c) ? cc.at(c) : 0;
      EXPECT_TRUE(got == n_c / k || got == (n_c + k - 1) / k) << "class " << c << ": " << got << " of " << n_c;
    }
  }
  EXPECT_EQ(all.size(), y.size());
  EXPECT_LE(max_size - min_size, 1u);
  // fold_split: fold 2 against the other three.
  const data::SplitIndices s = data::fold_split(folds, 2);
  EXPECT_EQ(s.val.to_vector<int64_t>(), folds[2].to_vector<int64_t>());
  EXPECT_EQ(s.train.numel() + s.val.numel(), static_cast<int64_t>(y.size()));
  const std::vector<int64_t> held = s.val.to_vector<int64_t>();
  for (int64_t i : s.train.to_vector<int64_t>()) EXPECT_FALSE(std::binary_search(held.begin(), held.end(), i)) << i;
}

TEST(DataSplit, SubsetCopiesTheChosenSamples) {
  std::vector<uint8_t> px(5 * 2 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(3 * i + 1);
  const data::TensorDataset ds(from_vector<uint8_t>(px, {5, 2, 3}), from_vector<int64_t>({4, 3, 2, 1, 0}));
  const data::TensorDataset sub = data::subset(ds, from_vector<int64_t>({3, 0, 3}));
  EXPECT_EQ(sub.images().shape(), (Shape{3, 2, 3}));
  EXPECT_EQ(sub.labels().to_vector<int64_t>(), (std::vector<int64_t>{1, 4, 1}));
  const auto got = sub.images().to_vector<uint8_t>();
  const size_t rows[3] = {3, 0, 3};
  for (size_t s = 0; s < 3; ++s)
    for (size_t k = 0; k < 6; ++k) EXPECT_EQ(got[s * 6 + k], px[rows[s] * 6 + k]);
}

TEST(DataSplit, BadArgumentsSayWhat) {
  const Tensor labels = from_vector<int64_t>({0, 1, 0, 1});
  EXPECT_TRUE(throws_with([&] { data::stratified_split(labels, 1.0, 1); }, {"val_fraction", "(0, 1)"}));
  EXPECT_TRUE(throws_with([&] { data::stratified_split(labels, 0.01, 1); }, {"both need at least one"}));
  EXPECT_TRUE(throws_with([&] { data::stratified_folds(labels, 5, 1); }, {"k must lie in [2, N]", "5"}));
  EXPECT_TRUE(throws_with([&] { data::stratified_split(from_vector<int64_t>({0, -1}), 0.5, 1); }, {"label -1"}));
  const data::TensorDataset ds(from_vector<uint8_t>(std::vector<uint8_t>(4 * 4, 1), {4, 2, 2}), labels);
  EXPECT_TRUE(throws_with([&] { data::subset(ds, from_vector<int64_t>({0, 4})); }, {"index 4", "[0, 4)"}));
}
