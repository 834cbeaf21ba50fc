// Debugging switches for tests and bug hunts.
#pragma once
#include "ember/export.h"

namespace ember::debug {

// When on, every new allocation (CPU and CUDA) is filled with 0xFF bytes, a NaN in every float
// dtype, so an element that a kernel forgets to write shows up as NaN. Off by default (it costs a
// memset per allocation).
EMBER_API void set_poison_allocations(bool enabled);
EMBER_API bool poison_allocations();

}  // namespace ember::debug
