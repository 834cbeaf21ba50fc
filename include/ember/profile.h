// ember::profile: named ranges on a profiler's timeline (NVTX), so Nsight Systems shows ember's ops,
// backward nodes, optimizer steps and a program's own training structure.
#pragma once
#include "ember/export.h"

namespace ember::profile {

// A range named `name` for the lifetime of the object, in the NVTX domain "ember" when libember was
// built with CUDA (Nsight Systems shows it under that domain, CPU and GPU ops alike; with no
// profiler attached a range costs a few nanoseconds); without CUDA only the listener sees it.
// ember opens one around every op's forward (the op's name: "matmul", "cross_entropy"), every
// backward node ("matmul backward"), every module call (its type: "Linear"), Optimizer::step
// ("optimizer.step") and DataLoader::next ("data.next"); programs add their own (ember-mnist:
// "train.step", "evaluate"). Ranges nest; each thread has its own stack.
class EMBER_API Range {
 public:
  explicit Range(const char* name);
  ~Range();
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;
};

// For tests and custom tooling: called on the opening thread with the name when a range opens and
// with nullptr when it closes. nullptr (the default) removes it. Not for use while ranges are open.
using Listener = void (*)(const char* name);
EMBER_API void set_listener(Listener listener);

}  // namespace ember::profile
