// ember-mnist's output: progress bar, epoch lines, final report, JSONL metrics and the SVG plot.
#include "report.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ember/error.h"
#include "ember/io.h"

namespace mnist {

namespace {
std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}
}  // namespace

ProgressBar::ProgressBar(int64_t epoch, int64_t epochs, int64_t total_steps, bool quiet)
    : epoch_(epoch), epochs_(epochs), total_(std::max<int64_t>(total_steps, 1)), quiet_(quiet),
      tty_(isatty(STDOUT_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

bool ProgressBar::due(int64_t step) const {
  if (quiet_) return false;
  if (tty_) return std::chrono::steady_clock::now() - last_draw_ > std::chrono::milliseconds(100) || step == total_;
  return step * 10 >= next_decile_ * total_;
}

void ProgressBar::update(int64_t step, double running_loss, int64_t images) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double frac = static_cast<double>(step) / static_cast<double>(total_);
  const double eta = frac > 0 ? elapsed * (1 - frac) / frac : NAN;
  const double ips = elapsed > 0 ? static_cast<double>(images) / elapsed : 0.0;
  last_draw_ = now;
  // Not read back yet (a GPU's first refresh): shown as "..." rather than "nan".
  char loss[16];
  if (std::isfinite(running_loss)) std::snprintf(loss, sizeof loss, "%.4f", running_loss);
  else std::snprintf(loss, sizeof loss, "%s", std::isnan(running_loss) ? "  ... " : "inf");
  if (tty_) {
    const int width = 30, filled = static_cast<int>(frac * width);
    std::printf("\repoch %lld/%lld [%s%s] %3.0f%% ETA %s loss %s %.0f img/s ", static_cast<long long>(epoch_),
                static_cast<long long>(epochs_), std::string(filled, '#').c_str(),
                std::string(width - filled, '.').c_str(), frac * 100, format_duration(eta).c_str(), loss, ips);
  } else {
    while (next_decile_ <= 10 && step * 10 >= next_decile_ * total_) ++next_decile_;
    std::printf("epoch %lld/%lld %3.0f%% ETA %s loss %s %.0f img/s\n", static_cast<long long>(epoch_),
                static_cast<long long>(epochs_), frac * 100, format_duration(eta).c_str(), loss, ips);
  }
  std::fflush(stdout);
}

void ProgressBar::finish() {
  if (tty_ && !quiet_) std::printf("\r\033[K");
  std::fflush(stdout);
}

void print_epoch(const EpochStats& s, int64_t epochs, bool quiet) {
  if (quiet) return;
  char test[64];
  if (!std::isnan(s.val_acc)) std::snprintf(test, sizeof test, "val loss %.4f acc %.2f%%", s.val_loss, 100 * s.val_acc);
  else if (std::isnan(s.test_acc)) std::snprintf(test, sizeof test, "test not measured (no test images)");
  else std::snprintf(test, sizeof test, "test loss %.4f acc %.2f%%", s.test_loss, 100 * s.test_acc);
  std::printf("epoch %lld/%lld: train loss %.4f acc %.2f%% | %s | %.1f s, %.0f img/s, lr %.3g\n",
              static_cast<long long>(s.epoch), static_cast<long long>(epochs), s.train_loss, 100 * s.train_acc, test,
              s.seconds, s.images_per_s, s.lr);
  std::fflush(stdout);
}

void print_final(const std::vector<EpochStats>& history, const ember::metrics::ConfusionMatrix& cm,
                 const std::vector<std::string>& class_names) {
  if (cm.total() == 0) {
    std::printf("\nno test images: the test loss and accuracy were not measured\n");
    std::fflush(stdout);
    return;
  }
  if (!history.empty() && !std::isnan(history.back().val_acc)) {
    const auto best = std::max_element(history.begin(), history.end(),
                                       [](const EpochStats& a, const EpochStats& b) { return a.val_acc < b.val_acc; });
    std::printf("\nbest epoch by validation: %lld (validation accuracy %.2f%%); the test figures below are "
                "that epoch's\n", static_cast<long long>(best->epoch), 100 * best->val_acc);
  } else if (!history.empty()) {
    const auto best = std::max_element(history.begin(), history.end(),
                                       [](const EpochStats& a, const EpochStats& b) { return a.test_acc < b.test_acc; });
    std::printf("\nbest epoch: %lld (test accuracy %.2f%%)\n", static_cast<long long>(best->epoch),
                100 * best->test_acc);
  }
  std::printf("final test accuracy: %.2f%%, macro-F1 %.4f\n\n%s", 100 * cm.accuracy(), cm.macro_f1(),
              cm.to_string(class_names).c_str());
  std::fflush(stdout);
}

namespace {
// Writes `text` to `path` opened with `mode` ("wb" or "ab"), checking the open, the write, the flush
// and the close: a full disk shows at one of them, and the run must not exit 0 having lost it.
void write_checked(const std::string& path, const std::string& text, const char* mode) {
  std::FILE* f = std::fopen(path.c_str(), mode);
  EMBER_CHECK(f, "--metrics-out: cannot open '", path, "': ", std::strerror(errno));
  errno = 0;
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  const int err = errno;
  const bool closed = std::fclose(f) == 0;
  EMBER_CHECK(written && closed, "--metrics-out: writing '", path, "' failed: ",
              std::strerror(err ? err : errno ? errno : EIO));
}
}  // namespace

MetricsWriter::MetricsWriter(std::string path) : path_(std::move(path)) {
  if (!enabled()) return;
  write_checked(path_, "", "wb");
}

std::string MetricsWriter::svg_path() const {
  const size_t dot = path_.find_last_of('.');
  const size_t slash = path_.find_last_of('/');
  const std::string stem = dot != std::string::npos && (slash == std::string::npos || dot > slash) ? path_.substr(0, dot) : path_;
  return stem + ".svg";
}

void MetricsWriter::append(const std::string& line) { write_checked(path_, line + "\n", "ab"); }

void MetricsWriter::epoch(const EpochStats& s, const std::vector<EpochStats>& history) {
  if (!enabled()) return;
  nlohmann::json j = {{"type", "epoch"},        {"epoch", s.epoch},           {"train_loss", s.train_loss},
                      {"train_accuracy", s.train_acc}, {"test_loss", s.test_loss}, {"test_accuracy", s.test_acc},
                      {"seconds", s.seconds},     {"images_per_s", s.images_per_s}, {"lr", s.lr}};
  if (!std::isnan(s.val_acc)) {
    j["val_loss"] = s.val_loss;
    j["val_accuracy"] = s.val_acc;
  }
  append(j.dump());
  // Replaced atomically, so a viewer never sees a half-written plot; every step is checked.
  const std::string svg = svg_plot(history);
  try {
    ember::io::write_file_atomic(svg_path(), [&](std::FILE* f) { ember::io::write_bytes(f, svg.data(), svg.size()); });
  } catch (const ember::Error& e) {
    throw ember::Error(std::string("--metrics-out: the plot: ") + e.what());
  }
}

void MetricsWriter::summary(const std::vector<EpochStats>& history, const ember::metrics::ConfusionMatrix& cm) {
  if (!enabled()) return;
  nlohmann::json per_class = nlohmann::json::array();
  for (int64_t c = 0; c < cm.num_classes(); ++c)
    per_class.push_back({{"class", c}, {"precision", cm.precision(c)}, {"recall", cm.recall(c)}, {"f1", cm.f1(c)}});
  nlohmann::json matrix = nlohmann::json::array();
  for (int64_t l = 0; l < cm.num_classes(); ++l) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t p = 0; p < cm.num_classes(); ++p) row.push_back(cm.count(l, p));
    matrix.push_back(row);
  }
  int64_t best = 0;
  const bool by_val = !history.empty() && !std::isnan(history.back().val_acc);  // --val-split: the epoch kept
  for (size_t i = 0; i < history.size(); ++i)
    if (by_val ? history[i].val_acc > history[best].val_acc : history[i].test_acc > history[best].test_acc)
      best = static_cast<int64_t>(i);
  nlohmann::json j = {{"type", "summary"},
                      {"epochs", history.size()},
                      {"best_epoch", history.empty() || cm.total() == 0 ? nlohmann::json() : nlohmann::json(history[best].epoch)},
                      // null: not measured (no test images), rather than a 0 that reads as a result
                      {"test_accuracy", cm.total() ? nlohmann::json(cm.accuracy()) : nlohmann::json()},
                      {"macro_f1", cm.total() ? nlohmann::json(cm.macro_f1()) : nlohmann::json()},
                      {"per_class", per_class},
                      {"confusion_matrix", matrix}};
  append(j.dump());
}

std::string svg_plot(const std::vector<EpochStats>& history) {
  const double W = 720, H = 400, L = 60, R = 60, T = 40, B = 50;
  const double pw = W - L - R, ph = H - T - B;
  double max_loss = 1e-9;
  for (const EpochStats& s : history) max_loss = std::max({max_loss, s.train_loss, s.test_loss, std::isfinite(s.val_loss) ? s.val_loss : 0.0});
  const size_t n = history.size();
  auto x = [&](size_t i) { return L + (n <= 1 ? pw / 2 : pw * static_cast<double>(i) / static_cast<double>(n - 1)); };
  auto y_loss = [&](double v) { return T + ph * (1 - v / max_loss); };
  auto y_acc = [&](double v) { return T + ph * (1 - v); };
  auto polyline = [&](auto value, auto y, const char* color, const char* dash) {
    std::ostringstream os;
    os << "<polyline fill='none' stroke='" << color << "' stroke-width='2' stroke-dasharray='" << dash << "' points='";
    for (size_t i = 0; i < n; ++i)
      if (std::isfinite(value(history[i]))) os << std::fixed << std::setprecision(1) << x(i) << ',' << y(value(history[i])) << ' ';
    os << "'/>\n";
    return os.str();
  };
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << W / 2 << "' y='20' text-anchor='middle' font-size='14'>ember-mnist: loss and accuracy per epoch</text>\n"
      << "<rect x='" << L << "' y='" << T << "' width='" << pw << "' height='" << ph << "' fill='none' stroke='#999'/>\n";
  for (int k = 0; k <= 4; ++k) {
    const double yy = T + ph * k / 4.0;
    svg << "<line x1='" << L << "' x2='" << L + pw << "' y1='" << yy << "' y2='" << yy << "' stroke='#eee'/>\n"
        << "<text x='" << L - 6 << "' y='" << yy + 4 << "' text-anchor='end' fill='#c33'>" << std::setprecision(3)
        << max_loss * (1 - k / 4.0) << "</text>\n"
        << "<text x='" << L + pw + 6 << "' y='" << yy + 4 << "' fill='#36c'>" << 100 * (1 - k / 4.0) << "%</text>\n";
  }
  for (size_t i = 0; i < n; ++i)
    svg << "<text x='" << x(i) << "' y='" << T + ph + 16 << "' text-anchor='middle'>" << history[i].epoch << "</text>\n";
  svg << "<text x='" << L + pw / 2 << "' y='" << H - 12 << "' text-anchor='middle'>epoch</text>\n"
      << polyline([](const EpochStats& s) { return s.train_loss; }, y_loss, "#c33", "6,3")
      << polyline([](const EpochStats& s) { return s.test_loss; }, y_loss, "#c33", "none")
      << polyline([](const EpochStats& s) { return s.train_acc; }, y_acc, "#36c", "6,3")
      << polyline([](const EpochStats& s) { return s.test_acc; }, y_acc, "#36c", "none")
      << polyline([](const EpochStats& s) { return s.val_loss; }, y_loss, "#c33", "2,2")
      << polyline([](const EpochStats& s) { return s.val_acc; }, y_acc, "#36c", "2,2")
      << "<text x='" << L + 10 << "' y='" << T + 16 << "' fill='#c33'>loss (left): dashed train, solid test, dotted validation</text>\n"
      << "<text x='" << L + 10 << "' y='" << T + 32 << "' fill='#36c'>accuracy (right): dashed train, solid test, dotted validation</text>\n"
      << "</svg>\n";
  return svg.str();
}

}  // namespace mnist
