// ember-mnist --tensorboard DIR: per-epoch scalars, weight and gradient histograms per layer, and the
// final confusion matrix as an image, in TensorBoard event files (tools/tensorboard).
#pragma once
#include <memory>
#include <string>

#include "ember/metrics.h"
#include "ember/nn.h"
#include "report.h"

namespace ember::tensorboard {
class EventWriter;
}

namespace mnist {

class TensorBoardLog {
 public:
  // An empty `dir`: nothing is written.
  explicit TensorBoardLog(const std::string& dir);
  ~TensorBoardLog();
  bool enabled() const { return writer_ != nullptr; }
  // Step = the epoch (1-based): train/{loss,accuracy}, val/... and test/... where measured,
  // learning_rate, images_per_s; weights/<parameter> and gradients/<parameter> histograms.
  void epoch(const EpochStats& s, const ember::nn::Module& model);
  // After training: test/{loss,accuracy} and the image test/confusion_matrix at `step`.
  void final_test(double loss, double accuracy, const ember::metrics::ConfusionMatrix& cm, int64_t step);

 private:
  std::unique_ptr<ember::tensorboard::EventWriter> writer_;
};

// The confusion matrix as an RGB image, `cell` pixels per entry: row = true label, column =
// prediction, each row's counts shaded by their share of the row (white 0, dark blue 1).
std::vector<uint8_t> confusion_image(const ember::metrics::ConfusionMatrix& cm, int64_t cell);

}  // namespace mnist
