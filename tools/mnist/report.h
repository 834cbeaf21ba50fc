// What ember-mnist shows and writes: the progress bar, per-epoch lines, the final report, the
// JSONL metrics file and its SVG plot.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ember/metrics.h"

namespace mnist {

struct EpochStats {
  int64_t epoch = 0;  // 1-based
  double train_loss = 0, train_acc = 0, test_loss = 0, test_acc = 0;
  double seconds = 0, images_per_s = 0, lr = 0;
  double val_loss = NAN, val_acc = NAN;  // --val-split / --folds; NaN: no validation set
};

// One updating line on a terminal (percent, ETA, running loss, images/s); a plain line every 10%
// otherwise (logs, CI).
class ProgressBar {
 public:
  ProgressBar(int64_t epoch, int64_t epochs, int64_t total_steps, bool quiet);
  // True when the caller should pass fresh figures (a refresh is due). The caller reads the running
  // loss back asynchronously (AsyncRead), so it may be a refresh old, or NaN before the first read.
  bool due(int64_t step) const;
  void update(int64_t step, double running_loss, int64_t images);
  void finish();

 private:
  int64_t epoch_, epochs_, total_;
  bool quiet_, tty_;
  int64_t next_decile_ = 1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

void print_epoch(const EpochStats& s, int64_t epochs, bool quiet);
void print_final(const std::vector<EpochStats>& history, const ember::metrics::ConfusionMatrix& cm,
                 const std::vector<std::string>& class_names);

// Appends JSON lines (one per epoch, then a summary) and rewrites the SVG plot beside the file.
class MetricsWriter {
 public:
  explicit MetricsWriter(std::string path);
  bool enabled() const { return !path_.empty(); }
  void epoch(const EpochStats& s, const std::vector<EpochStats>& history);
  void summary(const std::vector<EpochStats>& history, const ember::metrics::ConfusionMatrix& cm);
  std::string svg_path() const;

 private:
  void append(const std::string& line);
  std::string path_;
};

// The SVG document: loss (left axis) and accuracy (right axis) per epoch, train and test.
std::string svg_plot(const std::vector<EpochStats>& history);

}  // namespace mnist
