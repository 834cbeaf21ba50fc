// ember-mnist --profile / --profile-steps / --trace (see profiling.h and docs/profiling.md).
#include "profiling.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace mnist {
namespace {

int64_t parse_step(const std::string& text, const std::string& whole) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || *end != '\0' || v < 1)
    throw ember::Error("--profile-steps " + whole + ": expected FIRST:LAST, two step numbers counted from 1 across "
                       "the run with FIRST <= LAST (e.g. 20:40)");
  return v;
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

}  // namespace

RunProfiler::RunProfiler(const Config& cfg, ember::Device device)
    : cfg_(cfg), device_(device), enabled_(cfg.profile || !cfg.profile_steps.empty() || !cfg.trace_path.empty()) {
  if (!cfg.profile_steps.empty()) {
    const std::string& s = cfg.profile_steps;
    const size_t colon = s.find(':');
    if (colon == std::string::npos) parse_step("", s);
    first_ = parse_step(s.substr(0, colon), s);
    last_ = parse_step(s.substr(colon + 1), s);
    if (first_ > last_) parse_step("", s);
  }
  // --trace must be writable before the run is spent (the file is written again at the end).
  if (!cfg.trace_path.empty() && !std::ofstream(cfg.trace_path, std::ios::trunc))
    throw ember::Error("--trace " + cfg.trace_path + ": cannot create the file; check that its folder exists and is "
                       "writable");
}

void RunProfiler::before(int64_t step) {
  if (!enabled_ || done_ || session_ || step < first_ || step > last_) return;
  ember::profiler::Options o;
  // --profile-steps: cudaProfilerStart/Stop around them, for nsys --capture-range=cudaProfilerApi.
  o.capture_range = !cfg_.profile_steps.empty();
  session_.emplace(ember::profiler::start(o));
}

void RunProfiler::after(int64_t step) {
  if (session_ && session_->active() && step >= last_) {
    session_->stop();
    done_ = true;
  }
}

void RunProfiler::finish() {
  if (session_) {
    session_->stop();
    const ember::profiler::Report& r = session_->report();
    std::printf("\nprofile of steps %lld to %lld (ember::profiler; times inclusive, sorted by total):\n",
                static_cast<long long>(first_),
                static_cast<long long>(last_ == INT64_MAX ? first_ - 1 + r.steps() : last_));
    std::fputs(r.table(40).c_str(), stdout);
    if (!cfg_.trace_path.empty()) {
      r.write_chrome_trace(cfg_.trace_path);
      std::printf("trace: %s (open in https://ui.perfetto.dev or chrome://tracing)\n", cfg_.trace_path.c_str());
    }
  } else if (enabled_) {
    std::printf("\nprofile: no step in --profile-steps %s ran (the run has fewer steps)\n", cfg_.profile_steps.c_str());
  }
  if (cfg_.quiet) return;
  const ember::CpuMemoryStats host = ember::cpu_memory_stats();
  std::printf("peak memory: host %.1f MiB (ember's CPU allocator, %llu allocations)", mib(host.peak_allocated),
              static_cast<unsigned long long>(host.num_allocs));
  if (!device_.is_cpu()) {
    const ember::cuda::MemoryStats dev = ember::cuda::memory_stats(device_.index);
    std::printf(", %s %.1f MiB allocated (%.1f MiB reserved by the pool now)", device_.str().c_str(),
                mib(dev.peak_allocated), mib(dev.reserved));
  }
  std::printf("\n");
}

}  // namespace mnist
