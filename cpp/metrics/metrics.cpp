// ConfusionMatrix: counts on the host, metrics derived from the counts.
#include <iomanip>
#include <sstream>

#include "ember/metrics.h"

namespace ember::metrics {

ConfusionMatrix::ConfusionMatrix(int64_t num_classes) : n_(num_classes) {
  EMBER_CHECK(num_classes > 0, "ConfusionMatrix: num_classes must be positive, got ", num_classes);
  counts_.assign(static_cast<size_t>(n_ * n_), 0);
}

void ConfusionMatrix::update(int64_t prediction, int64_t label) {
  EMBER_CHECK(prediction >= 0 && prediction < n_ && label >= 0 && label < n_, "ConfusionMatrix::update: prediction ",
              prediction, " or label ", label, " is outside [0, ", n_, ")");
  ++counts_[label * n_ + prediction];
  ++total_;
}

void ConfusionMatrix::update(const Tensor& predictions, const Tensor& labels) {
  EMBER_CHECK(predictions.defined() && labels.defined(), "ConfusionMatrix::update: undefined tensor");
  EMBER_CHECK(predictions.numel() == labels.numel(), "ConfusionMatrix::update: ", predictions.numel(),
              " predictions but ", labels.numel(), " labels");
  std::vector<int64_t> p = predictions.to_vector<int64_t>(), l = labels.to_vector<int64_t>();
  for (size_t i = 0; i < p.size(); ++i) update(p[i], l[i]);
}

void ConfusionMatrix::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = 0;
}

double ConfusionMatrix::accuracy() const {
  int64_t hit = 0;
  for (int64_t c = 0; c < n_; ++c) hit += count(c, c);
  return total_ == 0 ? 0.0 : static_cast<double>(hit) / static_cast<double>(total_);
}

double ConfusionMatrix::precision(int64_t c) const {
  int64_t predicted = 0;
  for (int64_t l = 0; l < n_; ++l) predicted += count(l, c);
  return predicted == 0 ? 0.0 : static_cast<double>(count(c, c)) / static_cast<double>(predicted);
}

double ConfusionMatrix::recall(int64_t c) const {
  int64_t actual = 0;
  for (int64_t p = 0; p < n_; ++p) actual += count(c, p);
  return actual == 0 ? 0.0 : static_cast<double>(count(c, c)) / static_cast<double>(actual);
}

double ConfusionMatrix::f1(int64_t c) const {
  const double p = precision(c), r = recall(c);
  return p + r == 0.0 ? 0.0 : 2.0 * p * r / (p + r);
}

double ConfusionMatrix::macro_precision() const {
  double s = 0;
  for (int64_t c = 0; c < n_; ++c) s += precision(c);
  return s / static_cast<double>(n_);
}

double ConfusionMatrix::macro_recall() const {
  double s = 0;
  for (int64_t c = 0; c < n_; ++c) s += recall(c);
  return s / static_cast<double>(n_);
}

double ConfusionMatrix::macro_f1() const {
  double s = 0;
  for (int64_t c = 0; c < n_; ++c) s += f1(c);
  return s / static_cast<double>(n_);
}

std::string ConfusionMatrix::to_string(const std::vector<std::string>& names) const {
  auto name = [&](int64_t c) { return c < static_cast<int64_t>(names.size()) ? names[c] : std::to_string(c); };
  size_t w = 6;
  for (int64_t c = 0; c < n_; ++c) w = std::max(w, name(c).size() + 1);
  std::ostringstream os;
  os << "confusion matrix (rows: true class, columns: predicted)\n" << std::setw(static_cast<int>(w)) << "";
  for (int64_t c = 0; c < n_; ++c) os << std::setw(static_cast<int>(w)) << name(c);
  os << '\n';
  for (int64_t l = 0; l < n_; ++l) {
    os << std::setw(static_cast<int>(w)) << name(l);
    for (int64_t p = 0; p < n_; ++p) os << std::setw(static_cast<int>(w)) << count(l, p);
    os << '\n';
  }
  os << '\n' << std::setw(static_cast<int>(w)) << "class" << "  precision  recall      f1\n" << std::fixed
     << std::setprecision(4);
  for (int64_t c = 0; c < n_; ++c)
    os << std::setw(static_cast<int>(w)) << name(c) << "  " << std::setw(9) << precision(c) << "  " << std::setw(6)
       << recall(c) << "  " << std::setw(6) << f1(c) << '\n';
  os << std::setw(static_cast<int>(w)) << "macro" << "  " << std::setw(9) << macro_precision() << "  "
     << std::setw(6) << macro_recall() << "  " << std::setw(6) << macro_f1() << '\n';
  return os.str();
}

}  // namespace ember::metrics
