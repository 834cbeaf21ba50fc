// ember::profiler (include/ember/profiler.h): a ForwardingBackend installed around the CPU (and
// CUDA) backend for the session times every primitive and counts its allocations; profile::Range's
// hook records every op range; stop() turns the records into the table and the Chrome trace.
#include "ember/profiler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>

#include "cpp/backend/backend.h"
#include "cpp/backend/forwarding_backend.h"
#include "cpp/core/device_timeline.h"
#include "cpp/core/profile_hooks.h"
#include "ember/cuda.h"
#include "ember/error.h"
#include "ember/parallel.h"

namespace ember::profiler {
namespace {

using Clock = std::chrono::steady_clock;

// One range or primitive call as recorded; times in ns from the session's start.
struct Rec {
  std::string name;
  bool primitive = false;
  bool cuda = false;  // a primitive of the CUDA backend
  int thread = 0;
  int parent = -1;
  int64_t t0 = 0, t1 = -1;
  int32_t ev0 = -1, ev1 = -1;  // DeviceTimeline events around a CUDA primitive
  int device = -1;
  int64_t bytes = 0, allocs = 0, peak = 0;
};

struct ThreadState {
  uint64_t session = 0;  // the session `thread` and `stack` belong to
  int thread = 0;
  std::vector<int> stack;  // open records, innermost last
};
thread_local ThreadState t_state;

// Primitives that queue no device work: timed on the host only, also on CUDA.
bool host_only(Primitive p) {
  return p == Primitive::allocate || p == Primitive::deallocate || p == Primitive::synchronize ||
         p == Primitive::make_host_reader;
}

// The one recorder of the process; a session turns it on and off. Calls that arrive when it is off
// (a data loader thread still running after stop()) pass straight through.
class Recorder {
 public:
  std::atomic<bool> on{false};

  void begin(std::unique_ptr<DeviceTimeline> timeline) {
    std::lock_guard<std::mutex> lock(mu_);
    ++session_;
    recs_.clear();
    next_thread_ = 0;
    timeline_ = std::move(timeline);
    start_ = Clock::now();
    // The ranges already open on this thread (the step or epoch the session starts in) open here.
    const profile::detail::OpenRanges& open = profile::detail::open_ranges();
    ThreadState& t = thread_locked();
    // Beyond the names kept, placeholders, so that every close still pops its own record.
    for (int i = 0; i < open.depth; ++i)
      push_locked(t, i < profile::detail::kMaxOpen ? open.names[i] : "(range)", false, false);
    on.store(true, std::memory_order_release);
  }

  // Ends the session: closes what is open, reads the device events; returns the records with each
  // one's device interval in ms from the device's first event (-1: none) and the wall time in ns.
  std::deque<Rec> end(std::vector<double>* device_ms, int64_t* wall_ns, std::vector<int64_t>* first_event_host_ns) {
    std::unique_ptr<DeviceTimeline> timeline;
    std::deque<Rec> recs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      on.store(false, std::memory_order_release);
      *wall_ns = now_ns();
      for (Rec& r : recs_)
        if (r.t1 < 0) r.t1 = *wall_ns;
      recs = std::move(recs_);
      recs_.clear();
      timeline = std::move(timeline_);
      ++session_;  // stacks of the old session are dropped at their thread's next record
    }
    device_ms->clear();
    first_event_host_ns->clear();
    if (timeline) {
      *device_ms = timeline->elapsed_ms();
      // The host time at which each device's first event was recorded: the device's 0 on the trace.
      for (const Rec& r : recs)
        if (r.ev0 >= 0) {
          if (static_cast<int>(first_event_host_ns->size()) <= r.device) first_event_host_ns->resize(r.device + 1, -1);
          if ((*first_event_host_ns)[r.device] < 0) (*first_event_host_ns)[r.device] = r.t0;
        }
    }
    return recs;
  }

  void range(const char* name) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!on.load(std::memory_order_relaxed)) return;
    ThreadState& t = thread_locked();
    if (name) {
      push_locked(t, name, false, false);
    } else if (!t.stack.empty()) {  // empty: a range opened before the session on another thread
      recs_[t.stack.back()].t1 = now_ns();
      t.stack.pop_back();
    }
  }

  void primitive(Primitive p, bool cuda, const PrimitiveCall& call) {
    uint64_t session = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!on.load(std::memory_order_relaxed)) {
        session = 0;
      } else {
        session = session_;
        ThreadState& t = thread_locked();
        const int i = push_locked(t, primitive_name(p), true, cuda);
        if (cuda && timeline_ && !host_only(p)) recs_[i].ev0 = static_cast<int32_t>(timeline_->record(&recs_[i].device));
      }
    }
    if (session == 0) return call();
    try {
      call();
    } catch (...) {
      close_primitive(session, cuda, p);
      throw;
    }
    close_primitive(session, cuda, p);
  }

  // An allocation of `nbytes` on the device; `live` is the device's bytes in live tensors after it.
  void allocated(size_t nbytes, int64_t live) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!on.load(std::memory_order_relaxed)) return;
    ThreadState& t = thread_locked();
    for (int i : t.stack) {
      Rec& r = recs_[i];
      r.bytes += static_cast<int64_t>(nbytes);
      r.allocs += 1;
      r.peak = std::max(r.peak, live);
    }
  }

 private:
  int64_t now_ns() const { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count(); }

  ThreadState& thread_locked() {
    ThreadState& t = t_state;
    if (t.session != session_) {
      t.session = session_;
      t.thread = next_thread_++;
      t.stack.clear();
    }
    return t;
  }

  int push_locked(ThreadState& t, const char* name, bool primitive, bool cuda) {
    Rec r;
    r.name = name;
    r.primitive = primitive;
    r.cuda = cuda;
    r.thread = t.thread;
    r.parent = t.stack.empty() ? -1 : t.stack.back();
    r.t0 = now_ns();
    recs_.push_back(std::move(r));
    const int i = static_cast<int>(recs_.size() - 1);
    t.stack.push_back(i);
    return i;
  }

  void close_primitive(uint64_t session, bool cuda, Primitive p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (session != session_ || !on.load(std::memory_order_relaxed)) return;
    ThreadState& t = thread_locked();
    if (t.stack.empty()) return;
    Rec& r = recs_[t.stack.back()];
    if (cuda && timeline_ && !host_only(p) && r.ev0 >= 0) {
      int device = 0;
      r.ev1 = static_cast<int32_t>(timeline_->record(&device));
    }
    r.t1 = now_ns();
    t.stack.pop_back();
  }

  std::mutex mu_;
  uint64_t session_ = 1;
  std::deque<Rec> recs_;  // a deque: records stay where they are as more are added
  int next_thread_ = 0;
  std::unique_ptr<DeviceTimeline> timeline_;
  Clock::time_point start_;
};

Recorder& recorder() {
  static Recorder* r = new Recorder;  // never destroyed: wrapped backends may call it during exit
  return *r;
}

void range_hook(const char* name) { recorder().range(name); }

// The decorator the session installs. A tensor keeps a pointer to the backend that allocated it, so
// wrappers are never destroyed: one per wrapped backend, reused by later sessions, forwarding
// without recording while no session runs.
class ProfilingBackend final : public ForwardingBackend {
 public:
  ProfilingBackend(Backend& inner, DeviceType type) : ForwardingBackend(inner), type_(type) {}

  void around(Primitive p, const PrimitiveCall& call) override {
    Recorder& r = recorder();
    if (!r.on.load(std::memory_order_relaxed)) return call();
    r.primitive(p, type_ == DeviceType::CUDA, call);
  }

  void* allocate(size_t nbytes, Device device) override {
    void* p = ForwardingBackend::allocate(nbytes, device);
    Recorder& r = recorder();
    if (r.on.load(std::memory_order_relaxed)) {
      const size_t live =
          device.is_cpu() ? cpu_memory_stats().allocated : device_allocated_bytes(device.index);
      r.allocated(nbytes, static_cast<int64_t>(live));
    }
    return p;
  }

 private:
  DeviceType type_;
};

ProfilingBackend* wrapper_for(Backend& inner, DeviceType type) {
  static std::mutex mu;
  static auto* wrappers = new std::map<std::pair<Backend*, DeviceType>, ProfilingBackend*>;
  std::lock_guard<std::mutex> lock(mu);
  ProfilingBackend*& w = (*wrappers)[{&inner, type}];
  if (!w) w = new ProfilingBackend(inner, type);
  return w;
}

std::atomic<bool> g_session_active{false};

// What the session replaced, to put back at stop().
struct Installed {
  bool cpu = false, cuda = false;
  Backend* cpu_previous = nullptr;
  Backend* cuda_previous = nullptr;
};
Installed g_installed;

// ---- the report ----

std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

Session start(const Options& options) { return Session(options); }

Session::Session(const Options& options) : options_(options) {
  bool expected = false;
  if (!g_session_active.compare_exchange_strong(expected, true))
    throw Error("profiler::start: a profiling session is already active in this process; stop() it (or let it go "
                "out of scope) before starting another");
  Installed inst;
  try {
    const bool with_cuda = options.cuda && cuda::is_available();
    std::unique_ptr<DeviceTimeline> timeline = with_cuda ? make_device_timeline() : nullptr;
    ProfilingBackend* cpu = wrapper_for(backend_for(Device::cpu()), DeviceType::CPU);
    ProfilingBackend* gpu = with_cuda ? wrapper_for(backend_for(Device::cuda(current_device_index())), DeviceType::CUDA)
                                      : nullptr;
    if (options.capture_range) device_capture_start();
    inst.cpu_previous = set_backend(DeviceType::CPU, cpu);
    inst.cpu = true;
    if (gpu) {
      inst.cuda_previous = set_backend(DeviceType::CUDA, gpu);
      inst.cuda = true;
    }
    g_installed = inst;
    recorder().begin(std::move(timeline));
  } catch (...) {
    if (inst.cpu) set_backend(DeviceType::CPU, inst.cpu_previous);
    if (inst.cuda) set_backend(DeviceType::CUDA, inst.cuda_previous);
    g_session_active.store(false);
    throw;
  }
  profile::detail::set_profiler_hook(&range_hook);
  active_ = true;
}

Session::Session(Session&& other) noexcept
    : options_(std::move(other.options_)),
      active_(std::exchange(other.active_, false)),
      stopped_(std::exchange(other.stopped_, true)),
      report_(std::move(other.report_)) {}

Session::~Session() {
  if (!active_) return;
  try {
    stop();
  } catch (...) {  // a destructor must not throw; stop() explicitly to see the error
  }
}

const Report& Session::report() const {
  if (!stopped_ || active_)
    throw Error("profiler::Session::report(): the session is still recording; call stop() first");
  return report_;
}

void Session::stop() {
  if (!active_) return;
  active_ = false;
  stopped_ = true;
  if (options_.capture_range) device_capture_stop();
  profile::detail::set_profiler_hook(nullptr);
  set_backend(DeviceType::CPU, g_installed.cpu_previous);
  if (g_installed.cuda) set_backend(DeviceType::CUDA, g_installed.cuda_previous);
  g_installed = {};
  std::vector<double> device_ms;
  std::vector<int64_t> first_host_ns;
  int64_t wall_ns = 0;
  std::deque<Rec> recs;
  try {
    recs = recorder().end(&device_ms, &wall_ns, &first_host_ns);
  } catch (...) {
    g_session_active.store(false);
    throw;
  }
  g_session_active.store(false);

  // Events, with device intervals: a CUDA primitive's from its events, a range's the hull of its
  // children's (children come after their parent in the records, so one backward pass suffices).
  const size_t n = recs.size();
  std::vector<Event>& ev = report_.events_;
  ev.assign(n, Event{});
  for (size_t i = 0; i < n; ++i) {
    const Rec& r = recs[i];
    Event& e = ev[i];
    e.name = r.name;
    e.kind = r.primitive ? "primitive" : "op";
    e.thread = r.thread;
    e.parent = r.parent;
    e.begin_us = static_cast<double>(r.t0) / 1e3;
    e.end_us = static_cast<double>(r.t1) / 1e3;
    e.bytes_allocated = r.bytes;
    e.allocations = r.allocs;
    e.peak_bytes = r.peak;
    if (r.ev0 >= 0 && r.ev1 >= 0 && static_cast<size_t>(r.ev1) < device_ms.size()) {
      const double zero_us = static_cast<double>(first_host_ns[r.device]) / 1e3;
      e.device_index = r.device;
      e.device_begin_us = zero_us + device_ms[r.ev0] * 1e3;
      e.device_end_us = zero_us + device_ms[r.ev1] * 1e3;
    }
  }
  for (size_t k = n; k-- > 0;) {
    const Event& e = ev[k];
    if (e.device_begin_us < 0 || e.parent < 0) continue;
    Event& p = ev[e.parent];
    if (p.device_begin_us < 0) {
      p.device_begin_us = e.device_begin_us;
      p.device_end_us = e.device_end_us;
      p.device_index = e.device_index;
    } else {
      p.device_begin_us = std::min(p.device_begin_us, e.device_begin_us);
      p.device_end_us = std::max(p.device_end_us, e.device_end_us);
    }
  }

  // Rows by (name, kind, device).
  auto duration_ms = [&](const Event& e) {
    return e.device_begin_us >= 0 ? (e.device_end_us - e.device_begin_us) / 1e3 : (e.end_us - e.begin_us) / 1e3;
  };
  std::vector<double> child_ms(n, 0.0);
  for (size_t i = 0; i < n; ++i)
    if (ev[i].parent >= 0) child_ms[ev[i].parent] += duration_ms(ev[i]);
  std::map<std::tuple<std::string, std::string, std::string>, Row> rows;
  double step_ms = 0;
  int64_t steps = 0;
  for (size_t i = 0; i < n; ++i) {
    const Event& e = ev[i];
    const std::string device = e.device_begin_us >= 0 ? "cuda" : "cpu";
    Row& row = rows[{e.name, e.kind, device}];
    row.name = e.name;
    row.kind = e.kind;
    row.device = device;
    const double ms = duration_ms(e);
    row.calls += 1;
    row.total_ms += ms;
    row.self_ms += std::max(0.0, ms - child_ms[i]);
    row.host_ms += (e.end_us - e.begin_us) / 1e3;
    row.bytes_allocated += e.bytes_allocated;
    row.allocations += e.allocations;
    row.peak_bytes = std::max(row.peak_bytes, e.peak_bytes);
    if (!recs[i].primitive && e.name == options_.step_range) {
      step_ms += ms;
      ++steps;
    }
  }
  report_.wall_ms_ = static_cast<double>(wall_ns) / 1e6;
  report_.steps_ = steps;
  report_.step_ms_ = steps > 0 ? step_ms : report_.wall_ms_;
  report_.rows_.clear();
  for (auto& [key, row] : rows) {
    row.mean_us = row.calls ? row.total_ms * 1e3 / static_cast<double>(row.calls) : 0;
    row.share = report_.step_ms_ > 0 ? row.total_ms / report_.step_ms_ : 0;
    report_.rows_.push_back(row);
  }
  std::stable_sort(report_.rows_.begin(), report_.rows_.end(),
                   [](const Row& a, const Row& b) { return a.total_ms > b.total_ms; });
}

std::string Report::table(size_t max_rows) const {
  std::string out;
  char line[512];
  if (steps_ > 0)
    std::snprintf(line, sizeof line, "profile: %.3f ms wall, %lld step(s) of %.3f ms on average (%% of step: of their total)\n",
                  wall_ms_, static_cast<long long>(steps_), step_ms_ / static_cast<double>(steps_));
  else
    std::snprintf(line, sizeof line, "profile: %.3f ms wall (%% of step: of the wall time; no step range recorded)\n",
                  wall_ms_);
  out += line;
  std::snprintf(line, sizeof line, "%-34s %-9s %-4s %8s %11s %11s %11s %8s %11s %10s %10s\n", "name", "kind", "dev",
                "calls", "total ms", "self ms", "mean us", "% step", "allocs", "allocated", "peak");
  out += line;
  size_t shown = 0;
  for (const Row& r : rows_) {
    if (max_rows && shown++ >= max_rows) break;
    std::string name = r.name.size() > 34 ? r.name.substr(0, 31) + "..." : r.name;
    std::snprintf(line, sizeof line, "%-34s %-9s %-4s %8lld %11.3f %11.3f %11.2f %7.1f%% %11lld %10s %10s\n",
                  name.c_str(), r.kind.c_str(), r.device.c_str(), static_cast<long long>(r.calls), r.total_ms,
                  r.self_ms, r.mean_us, 100.0 * r.share, static_cast<long long>(r.allocations),
                  format_bytes(r.bytes_allocated).c_str(), format_bytes(r.peak_bytes).c_str());
    out += line;
  }
  return out;
}

std::string Report::chrome_trace() const {
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  bool first = true;
  char buf[256];
  auto emit = [&](const std::string& s) {
    if (!first) out += ",\n";
    first = false;
    out += s;
  };
  // Tracks: process 1 holds one thread per host thread; process 2 + d holds cuda:d's compute stream.
  emit("{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"ember host\"}}");
  int threads = 0;
  std::vector<bool> devices;
  for (const Event& e : events_) {
    threads = std::max(threads, e.thread + 1);
    if (e.device_index >= 0) {
      if (static_cast<int>(devices.size()) <= e.device_index) devices.resize(e.device_index + 1, false);
      devices[e.device_index] = true;
    }
  }
  for (int t = 0; t < threads; ++t) {
    std::snprintf(buf, sizeof buf,
                  "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":\"%s %d\"}}", t + 1,
                  t == 0 ? "main thread" : "thread", t);
    emit(buf);
  }
  for (size_t d = 0; d < devices.size(); ++d) {
    if (!devices[d]) continue;
    std::snprintf(buf, sizeof buf,
                  "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%zu,\"tid\":0,\"args\":{\"name\":\"cuda:%zu\"}}",
                  d + 2, d);
    emit(buf);
    std::snprintf(buf, sizeof buf,
                  "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%zu,\"tid\":1,\"args\":{\"name\":\"compute stream\"}}",
                  d + 2);
    emit(buf);
  }
  for (const Event& e : events_) {
    const std::string name = json_escape(e.name);
    std::snprintf(buf, sizeof buf, "\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%d,",
                  e.kind.c_str(), e.begin_us, e.end_us - e.begin_us, e.thread + 1);
    std::string s = "{\"name\":\"" + name + buf;
    std::snprintf(buf, sizeof buf, "\"args\":{\"bytes_allocated\":%lld,\"allocations\":%lld,\"peak_bytes\":%lld}}",
                  static_cast<long long>(e.bytes_allocated), static_cast<long long>(e.allocations),
                  static_cast<long long>(e.peak_bytes));
    emit(s + buf);
    if (e.device_begin_us >= 0) {
      std::snprintf(buf, sizeof buf, "\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":1}",
                    e.kind.c_str(), e.device_begin_us, e.device_end_us - e.device_begin_us, e.device_index + 2);
      emit("{\"name\":\"" + name + buf);
    }
  }
  out += "\n]}\n";
  return out;
}

void Report::write_chrome_trace(const std::string& path) const {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f)
    throw Error(detail::str_cat("profiler: cannot open ", path, " to write the Chrome trace; check that its folder ",
                                "exists and is writable"));
  const std::string s = chrome_trace();
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
  f.close();
  if (!f)
    throw Error(detail::str_cat("profiler: writing the Chrome trace to ", path, " failed (", s.size(),
                                " bytes); check the free space"));
}

}  // namespace ember::profiler
