// How many backward passes have started (all threads): autocast's cast cache (cpp/ops/autocast.cpp)
// drops casts made before a backward, whose nodes that backward has released.
#pragma once
#include <cstdint>

namespace ember::autograd {

uint64_t backward_runs();

}  // namespace ember::autograd
