// What ember::profiler needs from profile::Range (cpp/core/profile.cpp): a second listener of its
// own beside the public one, and the names of the ranges open on a thread, so that a session started
// inside a step or an epoch still shows them around what it records.
#pragma once

namespace ember::profile::detail {

// Called like profile::Listener (name on open, nullptr on close) on the range's thread; nullptr removes it.
using Hook = void (*)(const char* name);
void set_profiler_hook(Hook hook);

// The ranges open on the calling thread, outermost first: the first min(depth, kMaxOpen) names
// (each valid while its range is open).
inline constexpr int kMaxOpen = 16;
struct OpenRanges {
  const char* names[kMaxOpen];
  int depth = 0;
};
const OpenRanges& open_ranges();

}  // namespace ember::profile::detail
