// ConfusionMatrix against counts and formulas worked out by hand.
#include "test_util.h"
#include "ember/metrics.h"

using namespace ember;

TEST(Metrics, ConfusionMatrixCountsAndScores) {
  metrics::ConfusionMatrix cm(3);
  // true:      0 0 0 1 1 2 2 2
  // predicted: 0 0 1 1 2 2 2 0
  cm.update(from_vector<int64_t>({0, 0, 1, 1, 2, 2, 2, 0}, {8}), from_vector<int64_t>({0, 0, 0, 1, 1, 2, 2, 2}, {8}));
  EXPECT_EQ(cm.total(), 8);
  EXPECT_EQ(cm.count(0, 0), 2);
  EXPECT_EQ(cm.count(0, 1), 1);
  EXPECT_EQ(cm.count(2, 0), 1);
  EXPECT_DOUBLE_EQ(cm.accuracy(), 5.0 / 8.0);
  // class 0: predicted 3 times (2 right) -> precision 2/3; 3 samples -> recall 2/3
  EXPECT_DOUBLE_EQ(cm.precision(0), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(cm.recall(0), 2.0 / 3.0);
  // class 1: predicted twice (1 right) -> 1/2; 2 samples -> 1/2
  EXPECT_DOUBLE_EQ(cm.f1(1), 0.5);
  // class 2: predicted 3 times (2 right) -> 2/3; 3 samples -> 2/3
  EXPECT_DOUBLE_EQ(cm.macro_f1(), (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0);
  EXPECT_NE(cm.to_string({"a", "b", "c"}).find("macro"), std::string::npos);
  EXPECT_THROW(cm.update(3, 0), Error);
  metrics::ConfusionMatrix empty(2);
  EXPECT_EQ(empty.precision(0), 0.0);  // zero_division = 0
  EXPECT_EQ(empty.accuracy(), 0.0);
}
