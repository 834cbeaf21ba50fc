// ember-mnist's TensorBoard log (--tensorboard DIR).
#include "tensorboard.h"

#include <cmath>

#include "tools/tensorboard/event_writer.h"

namespace mnist {

TensorBoardLog::TensorBoardLog(const std::string& dir) {
  if (!dir.empty()) writer_ = std::make_unique<ember::tensorboard::EventWriter>(dir);
}

TensorBoardLog::~TensorBoardLog() = default;

void TensorBoardLog::epoch(const EpochStats& s, const ember::nn::Module& model) {
  if (!writer_) return;
  auto scalar = [&](const char* tag, double v) {
    if (std::isfinite(v)) writer_->add_scalar(tag, v, s.epoch);  // not measured: no point at all
  };
  scalar("train/loss", s.train_loss);
  scalar("train/accuracy", s.train_acc);
  scalar("val/loss", s.val_loss);
  scalar("val/accuracy", s.val_acc);
  scalar("test/loss", s.test_loss);
  scalar("test/accuracy", s.test_acc);
  scalar("learning_rate", s.lr);
  scalar("images_per_s", s.images_per_s);
  for (const auto& [name, p] : model.named_parameters()) {
    writer_->add_histogram("weights/" + name,
                           ember::tensorboard::make_histogram(p.detach().cpu().to(ember::DType::F32).to_vector<float>()),
                           s.epoch);
    if (p.grad().defined())
      writer_->add_histogram("gradients/" + name,
                             ember::tensorboard::make_histogram(p.grad().cpu().to(ember::DType::F32).to_vector<float>()),
                             s.epoch);
  }
}

std::vector<uint8_t> confusion_image(const ember::metrics::ConfusionMatrix& cm, int64_t cell) {
  const int64_t n = cm.num_classes(), side = n * cell;
  std::vector<uint8_t> px(static_cast<size_t>(side * side * 3));
  for (int64_t l = 0; l < n; ++l) {
    int64_t row_total = 0;
    for (int64_t p = 0; p < n; ++p) row_total += cm.count(l, p);
    for (int64_t p = 0; p < n; ++p) {
      const double f = row_total ? static_cast<double>(cm.count(l, p)) / static_cast<double>(row_total) : 0.0;
      const auto r = static_cast<uint8_t>(std::lround(255 * (1 - f))), g = static_cast<uint8_t>(std::lround(255 - 200 * f)),
                 b = static_cast<uint8_t>(std::lround(255 - 100 * f));
      for (int64_t y = l * cell; y < (l + 1) * cell; ++y)
        for (int64_t x = p * cell; x < (p + 1) * cell; ++x) {
          uint8_t* q = &px[static_cast<size_t>((y * side + x) * 3)];
          q[0] = r;
          q[1] = g;
          q[2] = b;
        }
    }
  }
  return px;
}

void TensorBoardLog::final_test(double loss, double accuracy, const ember::metrics::ConfusionMatrix& cm, int64_t step) {
  if (!writer_ || cm.total() == 0) return;
  writer_->add_scalar("test/loss", loss, step);
  writer_->add_scalar("test/accuracy", accuracy, step);
  const int64_t cell = 16, side = cm.num_classes() * cell;
  writer_->add_image("test/confusion_matrix", confusion_image(cm, cell), side, side, 3, step);
}

}  // namespace mnist
