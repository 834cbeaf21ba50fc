// ember::profiler: where a program's time and memory go, per op (every profile::Range: op
// forwards, backward nodes, modules, optimizer steps, the program's own step and epoch ranges) and
// per backend primitive, as a table and a Chrome trace (chrome://tracing, https://ui.perfetto.dev).
//
//   auto prof = ember::profiler::start();
//   ... train some steps ...
//   prof.stop();
//   std::fputs(prof.report().table().c_str(), stdout);
//   prof.report().write_chrome_trace("trace.json");
//
// CPU primitives and ranges are timed with a steady clock. CUDA primitives are timed with CUDA events
// recorded on the compute stream around each one, never waited for while profiling: stop() reads
// them all at the end (one wait), so profiling does not serialise the host with the device.
// Not profiling costs nothing: no backend wrapper is installed and a range checks one atomic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ember/export.h"

namespace ember::profiler {

struct Options {
  // The range whose total time is "the step" of the table's % column (and its calls the number of
  // steps); when no such range was recorded, the profiled wall time is used.
  std::string step_range = "train.step";
  // Wrap the CUDA backend too (events on its stream); the CPU backend is always wrapped.
  bool cuda = true;
  // Also call cudaProfilerStart() at start and cudaProfilerStop() at stop, so that
  // `nsys profile --capture-range=cudaProfilerApi` records exactly the profiled stretch (nothing on
  // the CPU or without a GPU).
  bool capture_range = false;
};

// One line of the table: an op (a profile::Range name) or a backend primitive on a device.
struct Row {
  std::string name;    // "matmul", "matmul backward", "Linear", "train.step"; primitives: "gemm"
  std::string kind;    // "op" or "primitive"
  std::string device;  // "cpu" or "cuda" (an op: the device of the primitives it ran; "cpu" if none)
  int64_t calls = 0;
  // Inclusive time, ms: host steady clock for CPU rows; for CUDA primitives the time between their
  // events on the stream, and for an op on CUDA from its first primitive's start to its last one's end.
  double total_ms = 0;
  double self_ms = 0;   // total_ms less that of the rows nested directly inside it (same clock)
  double host_ms = 0;   // host time in it (equals total_ms on the CPU; launch cost on CUDA)
  double mean_us = 0;   // total_ms / calls, in microseconds
  double share = 0;     // total_ms / the step total (see Options::step_range), 0..1 (may exceed 1 for the step's parents)
  int64_t bytes_allocated = 0;  // bytes requested from the backend inside it (nested calls included)
  int64_t allocations = 0;      // how many allocations those were
  int64_t peak_bytes = 0;       // the most bytes live on its device while it ran (all tensors, not only its own)
};

// One recorded interval (a range or a primitive call) of the trace.
struct Event {
  std::string name;
  std::string kind;  // "op" or "primitive"
  int thread = 0;    // 0, 1, ...: the order in which threads first recorded something
  int parent = -1;   // index of the enclosing event on the same thread, -1 at the top
  double begin_us = 0, end_us = 0;  // host steady clock, from the profiler's start
  // On CUDA: the interval on the device (from the profiler's start, aligned to its first event);
  // device_begin_us < 0 when there is none (CPU work, or an op with no CUDA primitive inside).
  double device_begin_us = -1, device_end_us = -1;
  int device_index = -1;  // the CUDA device of device_begin/end_us
  int64_t bytes_allocated = 0, allocations = 0, peak_bytes = 0;
};

class EMBER_API Report {
 public:
  // Rows sorted by total time, longest first.
  const std::vector<Row>& rows() const { return rows_; }
  const std::vector<Event>& events() const { return events_; }
  // The step total (ms) of the % column and the number of steps it covers (0: wall time used).
  double step_ms() const { return step_ms_; }
  int64_t steps() const { return steps_; }
  double wall_ms() const { return wall_ms_; }
  // The table: name, kind, device, calls, total ms, self ms, mean us, % of step, bytes allocated,
  // peak; the `max_rows` longest (0: all).
  std::string table(size_t max_rows = 0) const;
  // Chrome trace JSON: complete ("X") events, one track per host thread (process "ember host") and
  // one per CUDA device's compute stream (process "cuda:N"), ranges nested on each.
  std::string chrome_trace() const;
  // Writes chrome_trace() to `path`; throws ember::Error naming the file when it cannot.
  void write_chrome_trace(const std::string& path) const;

 private:
  friend class Session;
  std::vector<Row> rows_;
  std::vector<Event> events_;
  double step_ms_ = 0, wall_ms_ = 0;
  int64_t steps_ = 0;
};

// A profiling session; at most one at a time in a process. Move-only; the destructor stops it.
class EMBER_API Session {
 public:
  Session(Session&& other) noexcept;
  Session& operator=(Session&&) = delete;
  Session(const Session&) = delete;
  ~Session();
  // Stops recording (waits once for a CUDA device's queued events) and builds the report. Ranges
  // still open are closed at this instant. Calling it again does nothing.
  void stop();
  bool active() const { return active_; }
  // The report of a stopped session; throws ember::Error before stop().
  const Report& report() const;

 private:
  friend EMBER_API Session start(const Options& options);
  explicit Session(const Options& options);
  Options options_;
  bool active_ = false;
  bool stopped_ = false;
  Report report_;
};

// Starts profiling (see the top of this file): wraps whatever backend is installed for the CPU (and
// CUDA), so another decorator keeps working inside it. Throws ember::Error when a session is already
// active.
EMBER_API Session start(const Options& options = {});

}  // namespace ember::profiler
