// CPU threading: how many threads the CPU backend's libraries (OpenBLAS, oneDNN) use.
#pragma once
#include "ember/export.h"

namespace ember {

// Sets the number of threads the CPU backend uses (>= 1): OpenBLAS's for GEMMs, OpenMP's for
// oneDNN's convolutions. OpenMP's count is per calling thread: call it from the thread that runs
// the ops.
EMBER_API void set_num_threads(int threads);
EMBER_API int get_num_threads();

}  // namespace ember
