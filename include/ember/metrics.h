// Classification metrics: a confusion matrix accumulated from predictions, with accuracy and
// per-class precision, recall and F1 (and their macro averages).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::metrics {

class EMBER_API ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t num_classes);

  // Adds predictions and true labels (I64 [N], any device; read to the host).
  void update(const Tensor& predictions, const Tensor& labels);
  void update(int64_t prediction, int64_t label);
  void reset();

  int64_t num_classes() const { return n_; }
  int64_t total() const { return total_; }
  // count(true_label, predicted)
  int64_t count(int64_t label, int64_t predicted) const { return counts_[label * n_ + predicted]; }
  double accuracy() const;
  // Per class; 0 where undefined (no predictions of the class for precision, no samples for recall),
  // as scikit-learn's zero_division=0.
  double precision(int64_t c) const;
  double recall(int64_t c) const;
  double f1(int64_t c) const;
  double macro_precision() const;
  double macro_recall() const;
  double macro_f1() const;
  // A text table: the matrix (rows: true class, columns: predicted), then per-class precision,
  // recall and F1, then the macro averages. `names` labels the classes when given.
  std::string to_string(const std::vector<std::string>& names = {}) const;

 private:
  int64_t n_;
  int64_t total_ = 0;
  std::vector<int64_t> counts_;
};

}  // namespace ember::metrics
