// ember-mnist --profile: ember::profiler around the chosen steps, its table and Chrome trace after the
// run, and the run's peak memory.
#pragma once
#include <cstdint>
#include <optional>

#include "config.h"
#include "ember/ember.h"

namespace mnist {

class RunProfiler {
 public:
  // Checks --profile-steps (throws ember::Error on a malformed range).
  RunProfiler(const Config& cfg, ember::Device device);
  // Around the run's step `step` (1, 2, ... across epochs): starts the profiler before the first
  // profiled step and stops it after the last; after() is the step's last statement.
  void before(int64_t step);
  void after(int64_t step);
  // After training: stops the profiler if it still runs, prints the table and writes the trace;
  // prints the peak memory of the run (also without --profile).
  void finish();

 private:
  const Config& cfg_;
  ember::Device device_;
  bool enabled_ = false;
  int64_t first_ = 1, last_ = INT64_MAX;  // the profiled steps, inclusive
  std::optional<ember::profiler::Session> session_;
  bool done_ = false;
};

}  // namespace mnist
